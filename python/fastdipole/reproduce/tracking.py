"""Per-epoch sign-flip tracking: after each epoch, how many validation atoms have charges of the wrong sign?

Runs as the trainer's ``on_epoch`` callback. The trainer has just written ``checkpoint_last.pt``;
the tracker loads those weights into its own model copy and predicts a fixed set of validation
molecules (the first ``n_molecules`` of the run's validation split). Rows go to ``signflip.csv``
in the run folder; on resume, rows past the checkpoint are dropped, like the trainer's own log.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..data import MoleculeDataset, load_split
from ..evaluation import charge_metrics, predict
from ..train import load_checkpoint
from ..train.checkpoint import atomic_write_text
from .extra_metrics import sign_flip_fraction

SIGNFLIP_FILE = "signflip.csv"
COLUMNS = ("epoch", "sign_flip_fraction", "charge_mae_e", "charge_rmse_e", "n_atoms")


def read_signflip(run_dir) -> list[dict]:
    """Rows of ``signflip.csv`` (``epoch`` int, other columns float); [] when absent."""
    path = Path(run_dir) / SIGNFLIP_FILE
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    for row in rows:
        row["epoch"] = int(row["epoch"])
        row["n_atoms"] = int(row["n_atoms"])
    return rows


def _write(rows: list[dict], run_dir: Path) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([row[c] if isinstance(row[c], int) else f"{row[c]:.8g}" for c in COLUMNS])
    atomic_write_text(buf.getvalue(), run_dir / SIGNFLIP_FILE)


class SignFlipTracker:
    """``on_epoch`` callback of :func:`fastdipole.train.train` writing ``signflip.csv``.

    ``dataset`` must hold the Mulliken charges as labels (``dataset.charges``). ``model_factory``
    builds an untrained model of the run's architecture (weights come from the checkpoint).
    """

    def __init__(self, run_dir, dataset: MoleculeDataset, n_molecules: int, model_factory, device="cpu",
                 batch_size: int = 512):
        self.run_dir = Path(run_dir)
        self.dataset = dataset
        self.n_molecules = int(n_molecules)
        self.model_factory = model_factory
        self.device = device
        self.batch_size = batch_size
        self._model = None
        self._indices = None
        last = self.run_dir / "checkpoint_last.pt"
        done = load_checkpoint(last)["epoch"] if last.exists() else 0
        self.rows = [row for row in read_signflip(self.run_dir) if row["epoch"] <= done]

    def __call__(self, row: dict) -> None:
        if self.dataset.charges is None:
            return
        if self._indices is None:
            self._indices = load_split(self.run_dir / "split.npz")["valid"][: self.n_molecules]
            self._model = self.model_factory().to(self.device)
        state = load_checkpoint(self.run_dir / "checkpoint_last.pt", map_location=self.device)
        self._model.load_state_dict(state["model"])
        pred = predict(self._model, self.dataset, self._indices, self.batch_size, self.device)
        m = charge_metrics(pred.charges_pred, pred.charges_label)
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]]
        self.rows.append({
            "epoch": int(row["epoch"]),
            "sign_flip_fraction": sign_flip_fraction(pred.charges_pred, pred.charges_label),
            "charge_mae_e": m["charge_mae_e"],
            "charge_rmse_e": m["charge_rmse_e"],
            "n_atoms": int(m["n_atoms"]),
        })
        _write(self.rows, self.run_dir)


def first_epoch_above(rows: list[dict], threshold: float = 0.5) -> int | None:
    """First epoch whose sign-flip fraction exceeds ``threshold`` (None if never)."""
    for row in rows:
        if row["sign_flip_fraction"] > threshold:
            return row["epoch"]
    return None


def flip_summary(rows: list[dict]) -> dict:
    """First / last / max sign-flip fraction over epochs and the epoch where the final sign pattern set in.

    ``settled_epoch``: first epoch from which the fraction stays on the same side of 50 % as at the end.
    """
    if not rows:
        return {}
    f = np.array([r["sign_flip_fraction"] for r in rows])
    epochs = [r["epoch"] for r in rows]
    final_high = f[-1] > 0.5
    side = (f > 0.5) == final_high
    settled = len(side)
    while settled > 0 and side[settled - 1]:
        settled -= 1
    return {
        "first_epoch": epochs[0],
        "first": float(f[0]),
        "last_epoch": epochs[-1],
        "last": float(f[-1]),
        "max": float(f.max()),
        "max_epoch": epochs[int(f.argmax())],
        "settled_epoch": epochs[settled] if settled < len(epochs) else epochs[-1],
    }
