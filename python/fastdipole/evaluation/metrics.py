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


def dipole_vector_metrics(pred_e_angstrom, label_debye) -> dict:
    """MAE / RMSE over molecules of the vector error |mu_pred - mu_label| (D and e*A); labels in Debye."""
    pred = np.asarray(pred_e_angstrom, np.float64).reshape(-1, 3) * DEBYE_PER_E_ANGSTROM
    label = np.asarray(label_debye, np.float64).reshape(-1, 3)
    if pred.shape != label.shape:
        raise ValueError(f"dipole vectors must have equal shapes, got {pred.shape} and {label.shape}")
    if len(label) == 0:
        return {"dipole_vector_mae_debye": float("nan"), "dipole_vector_rmse_debye": float("nan"),
                "dipole_vector_mae_e_angstrom": float("nan"), "dipole_vector_rmse_e_angstrom": float("nan")}
    err = np.linalg.norm(pred - label, axis=1)
    mae, rmse = float(err.mean()), float(np.sqrt(np.mean(err**2)))
    return {"dipole_vector_mae_debye": mae, "dipole_vector_rmse_debye": rmse,
            "dipole_vector_mae_e_angstrom": mae / DEBYE_PER_E_ANGSTROM,
            "dipole_vector_rmse_e_angstrom": rmse / DEBYE_PER_E_ANGSTROM}


def charge_metrics(pred_e, label_e) -> dict:
    """MAE / RMSE (e) of atomic charges over all atoms."""
    pred = np.asarray(pred_e, dtype=np.float64)
    label = np.asarray(label_e, dtype=np.float64)
    if pred.shape != label.shape or pred.ndim != 1:
        raise ValueError(f"charge predictions and labels must both be (n_atoms,), got {pred.shape} and {label.shape}")
    if len(label) == 0:
        return {"n_atoms": 0, "charge_mae_e": float("nan"), "charge_rmse_e": float("nan"),
                "charge_pearson_r": float("nan")}
    err = pred - label
    return {
        "n_atoms": int(len(label)),
        "charge_mae_e": float(np.mean(np.abs(err))),
        "charge_rmse_e": float(np.sqrt(np.mean(err**2))),
        "charge_pearson_r": pearson_r(pred, label),
    }


def pearson_r(x, y) -> float:
    """Pearson correlation of two 1-D arrays (nan when either is constant or shorter than 2)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def charge_metrics_by_element(pred_e, label_e, Z) -> dict[str, dict]:
    """``charge_metrics`` per element, keyed by atomic number (a string, for JSON)."""
    pred, label, Z = np.asarray(pred_e, np.float64), np.asarray(label_e, np.float64), np.asarray(Z)
    return {str(int(z)): charge_metrics(pred[Z == z], label[Z == z]) for z in np.unique(Z)}


def _molecule_sums(values, offsets) -> np.ndarray:
    values, offsets = np.asarray(values, np.float64), np.asarray(offsets, np.int64)
    counts = np.diff(offsets)
    return np.bincount(np.repeat(np.arange(len(counts)), counts), weights=values, minlength=len(counts))


def centred_charge_mae(pred_e, label_e, offsets) -> float:
    """MAE (e) after removing each molecule's mean charge from the predictions and from the labels.

    A per-molecule offset of the charges changes neither |mu| about the centroid nor this metric, so it tells
    how well the charge *pattern* matches, whatever the total charge does."""
    pred, label, offsets = np.asarray(pred_e, np.float64), np.asarray(label_e, np.float64), np.asarray(offsets)
    if len(pred) == 0:
        return float("nan")
    counts = np.diff(offsets)
    shift = np.repeat((_molecule_sums(pred, offsets) - _molecule_sums(label, offsets)) / np.maximum(counts, 1), counts)
    return float(np.mean(np.abs(pred - label - shift)))


def total_charge_metrics(pred_e, offsets, total_charge_e=None) -> dict:
    """Mean and max over molecules of |sum of predicted charges - total charge| (e; total charge 0 unless given)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    if len(offsets) < 2:
        return {"total_charge_mean_abs_e": float("nan"), "total_charge_max_abs_e": float("nan")}
    excess = _molecule_sums(pred_e, offsets)
    if total_charge_e is not None:
        excess = excess - np.asarray(total_charge_e, np.float64)
    return {"total_charge_mean_abs_e": float(np.mean(np.abs(excess))),
            "total_charge_max_abs_e": float(np.max(np.abs(excess)))}


#: Molecules whose label point-charge dipole is below this (e*Angstrom) have no direction to agree with.
MIN_DIRECTION_E_ANGSTROM = 1e-3


def direction_agreement(pred_dipole_e_angstrom, label_dipole_e_angstrom) -> dict:
    """Share of molecules whose predicted dipole vector points with the label charges' point dipole.

    ``direction_agreement``: fraction with cos(mu_pred, mu_label_charges) > 0 among the molecules whose label
    point dipole is at least ``MIN_DIRECTION_E_ANGSTROM`` (a zero prediction does not agree). A model in the
    sign-flipped basin (q -> -q) scores near 0, a right-signed one near 1; dipole-only models are either.
    ``direction_cos_median``: median of that cosine."""
    pred = np.asarray(pred_dipole_e_angstrom, np.float64).reshape(-1, 3)
    label = np.asarray(label_dipole_e_angstrom, np.float64).reshape(-1, 3)
    if pred.shape != label.shape:
        raise ValueError(f"dipole vectors must have equal shapes, got {pred.shape} and {label.shape}")
    n_label = np.linalg.norm(label, axis=1)
    keep = n_label >= MIN_DIRECTION_E_ANGSTROM
    if not keep.any():
        return {"direction_agreement": float("nan"), "direction_cos_median": float("nan"), "n_molecules_direction": 0}
    n_pred = np.linalg.norm(pred[keep], axis=1)
    cos = np.einsum("ij,ij->i", pred[keep], label[keep]) / np.maximum(n_pred * n_label[keep], 1e-300)
    return {"direction_agreement": float(np.mean(cos > 0)), "direction_cos_median": float(np.median(cos)),
            "n_molecules_direction": int(keep.sum())}


def error_tail(pred_debye, label_debye) -> dict:
    """99th percentile and maximum of |error| of dipole magnitudes, in D and e*Angstrom."""
    err = np.abs(np.asarray(pred_debye, dtype=np.float64) - np.asarray(label_debye, dtype=np.float64))
    if len(err) == 0:
        nan = float("nan")
        return {"dipole_abs_error_p99_debye": nan, "dipole_abs_error_max_debye": nan,
                "dipole_abs_error_p99_e_angstrom": nan, "dipole_abs_error_max_e_angstrom": nan}
    p99, mx = float(np.percentile(err, 99)), float(err.max())
    return {
        "dipole_abs_error_p99_debye": p99,
        "dipole_abs_error_max_debye": mx,
        "dipole_abs_error_p99_e_angstrom": p99 / DEBYE_PER_E_ANGSTROM,
        "dipole_abs_error_max_e_angstrom": mx / DEBYE_PER_E_ANGSTROM,
    }
