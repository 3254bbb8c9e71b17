"""Error metrics of dipole magnitudes (Debye and e*Angstrom) and atomic charges (e)."""

from __future__ import annotations

import numpy as np

from ..units import DEBYE_PER_E_ANGSTROM


def dipole_metrics(pred_debye, label_debye) -> dict:
    """MAE / RMSE of dipole magnitudes in D and e*A, and the mean relative error in percent.

    The relative error is averaged over molecules whose label is > 0 D (QM9 has exactly symmetric
    molecules with mu = 0), like the Mulliken baseline of the data layer.
    """
    pred = np.asarray(pred_debye, dtype=np.float64)
    label = np.asarray(label_debye, dtype=np.float64)
    if pred.shape != label.shape or pred.ndim != 1:
        raise ValueError(f"dipole predictions and labels must both be (n_molecules,), got {pred.shape} and {label.shape}")
    n = len(label)
    if n == 0:
        nan = float("nan")
        return {"n_molecules": 0, "dipole_mae_debye": nan, "dipole_rmse_debye": nan, "dipole_mae_e_angstrom": nan,
                "dipole_rmse_e_angstrom": nan, "dipole_mean_relative_error_percent": nan, "n_molecules_relative": 0}
    err = pred - label
    mae = float(np.mean(np.abs(err)))
    rmse = float(np.sqrt(np.mean(err**2)))
    pos = label > 0
    rel = float(np.mean(np.abs(err[pos]) / label[pos]) * 100.0) if pos.any() else float("nan")
    return {
        "n_molecules": int(n),
        "dipole_mae_debye": mae,
        "dipole_rmse_debye": rmse,
        "dipole_mae_e_angstrom": mae / DEBYE_PER_E_ANGSTROM,
        "dipole_rmse_e_angstrom": rmse / DEBYE_PER_E_ANGSTROM,
        "dipole_mean_relative_error_percent": rel,
        "n_molecules_relative": int(pos.sum()),
    }


def charge_metrics(pred_e, label_e) -> dict:
    """MAE / RMSE (e) of atomic charges over all atoms."""
    pred = np.asarray(pred_e, dtype=np.float64)
    label = np.asarray(label_e, dtype=np.float64)
    if pred.shape != label.shape or pred.ndim != 1:
        raise ValueError(f"charge predictions and labels must both be (n_atoms,), got {pred.shape} and {label.shape}")
    if len(label) == 0:
        return {"n_atoms": 0, "charge_mae_e": float("nan"), "charge_rmse_e": float("nan")}
    err = pred - label
    return {
        "n_atoms": int(len(label)),
        "charge_mae_e": float(np.mean(np.abs(err))),
        "charge_rmse_e": float(np.sqrt(np.mean(err**2))),
    }


def total_charge_metrics(pred_e, offsets) -> dict:
    """Mean |sum of predicted charges| per molecule (e): the model has no neutrality constraint."""
    pred = np.asarray(pred_e, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.int64)
    if len(offsets) < 2:
        return {"total_charge_mean_abs_e": float("nan")}
    sums = np.add.reduceat(pred, offsets[:-1]) if len(pred) else np.zeros(len(offsets) - 1)
    return {"total_charge_mean_abs_e": float(np.mean(np.abs(sums)))}
