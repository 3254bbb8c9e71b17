"""Checkpoints of a run: model, optimiser, schedule and RNG states, written atomically (:mod:`fastdipole.atomic`)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write

CHECKPOINT_FORMAT = "fastdipole-checkpoint-1"


# ---- RNG states -------------------------------------------------------------------------------------
# Stored as tensors / plain Python values so checkpoints load with torch.load(weights_only=True).


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- checkpoints -------------------------------------------------------------------------------------


def save_checkpoint(path, *, model, optimizer, scheduler, epoch: int, best_metric: float, best_epoch: int,
                    epochs_without_improvement: int, metrics: dict | None = None) -> Path:
    """Everything needed to continue training exactly after ``epoch`` (completed epochs)."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "best_metric": float(best_metric),
        "best_epoch": int(best_epoch),
        "epochs_without_improvement": int(epochs_without_improvement),
        "metrics": dict(metrics or {}),
        "rng": rng_state(),
    }
    return atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (safe ``weights_only`` loading)."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a fastdipole checkpoint")
    return state
