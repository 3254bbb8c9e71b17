"""Metrics the paper's tables need beyond MAE / RMSE: error tails and sign-flipped charge solutions.

A model trained on dipole *magnitudes* only can fit them with charges of either sign (q and -q give
the same |mu|), so its charges may be "sign-flipped" relative to Mulliken. Two measures:

- ``sign_flip_fraction``: share of atoms whose predicted charge has the opposite sign to the label
  (atoms with a label of exactly 0 e are left out);
- ``dipole_direction_flip_fraction``: share of molecules whose predicted dipole vector points
  against the Mulliken point-charge dipole (cosine < 0), both about the centroid.
"""

from __future__ import annotations

import numpy as np

from ..data import MoleculeDataset, point_charge_dipoles
from ..units import DEBYE_PER_E_ANGSTROM

#: Molecules whose Mulliken or predicted point-charge dipole is below this (e*Angstrom) have no
#: meaningful direction and are left out of the direction-flip fraction.
MIN_DIRECTION_E_ANGSTROM = 1e-3


def sign_flip_fraction(pred_e, label_e) -> float:
    """Fraction of atoms with ``pred * label < 0`` among atoms whose label is not 0 e."""
    pred = np.asarray(pred_e, dtype=np.float64)
    label = np.asarray(label_e, dtype=np.float64)
    if pred.shape != label.shape:
        raise ValueError(f"charges must have equal shapes, got {pred.shape} and {label.shape}")
    keep = label != 0
    if not keep.any():
        return float("nan")
    return float(np.mean(pred[keep] * label[keep] < 0))


def sign_flip_by_element(pred_e, label_e, Z) -> dict[str, float]:
    """``sign_flip_fraction`` per element (keys: atomic numbers as strings, for JSON)."""
    Z = np.asarray(Z)
    return {str(int(z)): sign_flip_fraction(np.asarray(pred_e)[Z == z], np.asarray(label_e)[Z == z])
            for z in np.unique(Z)}


def dipole_direction_flip_fraction(dataset: MoleculeDataset, pred_charges_e) -> float:
    """Fraction of molecules whose predicted point-charge dipole points against the label charges' one."""
    mull = point_charge_dipoles(dataset)
    pred = point_charge_dipoles(MoleculeDataset(dataset.Z, dataset.R, dataset.offsets, dataset.mu_debye,
                                                charges=np.asarray(pred_charges_e, dtype=np.float32),
                                                source=dataset.source))
    n_m, n_p = np.linalg.norm(mull, axis=1), np.linalg.norm(pred, axis=1)
    keep = (n_m > MIN_DIRECTION_E_ANGSTROM) & (n_p > MIN_DIRECTION_E_ANGSTROM)
    if not keep.any():
        return float("nan")
    cos = np.einsum("ij,ij->i", mull[keep], pred[keep]) / (n_m[keep] * n_p[keep])
    return float(np.mean(cos < 0))


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
