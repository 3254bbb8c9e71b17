"""The run folder of a training, in one place: its file names, reading its settings back and loading its model.

A run folder (``fastdipole train --out RUN``) holds ``config.json`` (the :class:`TrainConfig` plus run
metadata under ``"run"``), ``split.npz``, ``charge_means.json`` (average mode), ``metrics.csv``,
``checkpoint_last.pt``, ``checkpoint_best.pt`` and, once training ended, ``summary.json``. Every file is written
atomically (:mod:`fastdipole.atomic`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import FastDipoleError
from .config import LEGACY_SETTINGS, TrainConfig

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.npz"
CHARGE_MEANS_FILE = "charge_means.json"
METRICS_FILE = "metrics.csv"
LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"
SUMMARY_FILE = "summary.json"
#: Every file the trainer writes into a run folder.
RUN_FILES = (CONFIG_FILE, SPLIT_FILE, CHARGE_MEANS_FILE, METRICS_FILE, LAST, BEST, SUMMARY_FILE)
CHECKPOINTS = {"best": BEST, "last": LAST}

#: Settings that may change when a run is resumed (they do not change the function being trained).
RESUMABLE_FIELDS = ("epochs", "max_minutes", "device", "threads", "backend", "cuda_graphs", "eval_batch_size", "out",
                    "physical_checks")


class RunFolderError(FastDipoleError):
    """The run folder cannot be used as asked (not empty without --resume, nothing to resume, ...)."""


def default_run_dir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def read_config(run_dir) -> tuple[TrainConfig, dict]:
    """The run's :class:`TrainConfig` and the whole ``config.json`` (with run metadata)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise RunFolderError(f"{run_dir}: no {CONFIG_FILE} (not a fastdipole run folder)")
    raw = json.loads(path.read_text())
    values = {**LEGACY_SETTINGS, **raw}  # a field missing from an older file: the value that run was trained with
    if "kernels" in raw and "backend" not in raw:  # the backend's name before it was unified
        values["backend"] = {"kernels": "compiled"}.get(raw["kernels"], raw["kernels"])
    return TrainConfig.from_dict(values), raw


def checkpoint_path(run_dir, which: str = "best") -> Path:
    """``checkpoint_best.pt`` or ``checkpoint_last.pt`` of the run; an error naming the run if it is missing."""
    if which not in CHECKPOINTS:
        raise ValueError(f"which must be one of {tuple(CHECKPOINTS)}, got {which!r}")
    path = Path(run_dir) / CHECKPOINTS[which]
    if not path.exists():
        raise RunFolderError(f"{run_dir}: no {path.name} (the run has not finished an epoch)")
    return path


def load_model(run_dir, which: str = "best", device="cpu", backend: str = "auto"):
    """The trained :class:`~fastdipole.nn.DipoleModel` of a run (``which``: ``best`` or ``last``), in eval mode."""
    from ..device import resolve_device
    from ..nn import DipoleModel
    from .checkpoint import load_checkpoint

    config, _ = read_config(run_dir)
    state = load_checkpoint(checkpoint_path(run_dir, which))
    model = DipoleModel.from_config(backend=backend, **config.model_kwargs())
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval()
