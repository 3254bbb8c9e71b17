"""The per-epoch metrics log of a run (``metrics.csv``): one row per completed epoch, units in the column names."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..atomic import atomic_write_text
from .run_folder import METRICS_FILE

COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_dipole_rmse_e_angstrom",
    "train_dipole_mae_e_angstrom",
    "train_charge_rmse_e",
    "train_charge_mae_e",
    "train_charge_abs_mean_e",
    "train_direction_hinge",
    "valid_dipole_mae_debye",
    "valid_dipole_rmse_debye",
    "valid_dipole_mae_e_angstrom",
    "valid_dipole_rmse_e_angstrom",
    "valid_charge_mae_e",
    "valid_charge_rmse_e",
    "valid_direction_agreement",
    "valid_total_charge_mean_abs_e",
    "epoch_seconds",
    "elapsed_seconds",
)



def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.8g}"
    return str(value)


def write_history(rows: list[dict], run_dir) -> Path:
    """Rewrite ``metrics.csv`` with ``rows`` (atomic; the file is small)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in COLUMNS])
    return atomic_write_text(buf.getvalue(), Path(run_dir) / METRICS_FILE)


def read_history(run_dir) -> list[dict]:
    """Rows of ``metrics.csv`` as dicts (``epoch`` int, other numbers float, blanks None)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = []
        for raw in csv.DictReader(fh):
            row = {k: (None if v == "" else float(v)) for k, v in raw.items()}
            row["epoch"] = int(row["epoch"])
            rows.append(row)
    return rows
