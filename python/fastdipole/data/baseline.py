"""The Mulliken point-charge dipole baseline: how well the label charges alone reproduce |mu|.

mu_pc = |sum_i q_i (R_i - centroid)| (e*Angstrom), compared with the label |mu| (Debye / 4.80320).
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..units import DEBYE_PER_E_ANGSTROM
from .dataset import MoleculeDataset


def point_charge_dipoles(dataset: MoleculeDataset) -> np.ndarray:
    """float64 (M, 3) point-charge dipole vectors, e*Angstrom, about each molecule's centroid."""
    if dataset.charges is None:
        raise DataError(f"{dataset.source}: no per-atom charge array loaded, cannot compute point-charge dipoles")
    counts = dataset.n_atoms_per_molecule
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise DataError(f"{dataset.source}: array 'offsets': molecule {empty[0]} has no atoms")
    if dataset.n_molecules == 0:
        return np.zeros((0, 3))
    starts = dataset.offsets[:-1]
    R = dataset.R.astype(np.float64)
    q = dataset.charges.astype(np.float64)
    centroid = np.add.reduceat(R, starts, axis=0) / counts[:, None]
    # sum q (R - c) = sum q R - (sum q) c: no per-atom centroid broadcast needed
    return np.add.reduceat(q[:, None] * R, starts, axis=0) - np.add.reduceat(q, starts)[:, None] * centroid


def mulliken_point_charge_baseline(dataset: MoleculeDataset, indices=None) -> dict:
    """Errors of the point-charge dipole magnitude against the label |mu|.

    Returns ``mae_e_angstrom``, ``rmse_e_angstrom``, ``mae_debye``, ``rmse_debye``,
    ``mean_relative_error_percent`` (over molecules with mu > 0) and ``n_molecules``.
    """
    if indices is not None:
        dataset = dataset.subset(indices)
    if dataset.n_molecules == 0:
        raise DataError(f"{dataset.source}: no molecules selected for the point-charge baseline")
    # Same error definitions as model evaluation (imported here: evaluation itself imports the data layer).
    from ..evaluation.metrics import dipole_metrics

    pred_debye = np.linalg.norm(point_charge_dipoles(dataset), axis=1) * DEBYE_PER_E_ANGSTROM
    m = dipole_metrics(pred_debye, dataset.mu_debye)
    return {
        "mae_e_angstrom": m["dipole_mae_e_angstrom"],
        "rmse_e_angstrom": m["dipole_rmse_e_angstrom"],
        "mae_debye": m["dipole_mae_debye"],
        "rmse_debye": m["dipole_rmse_debye"],
        "mean_relative_error_percent": m["dipole_mean_relative_error_percent"],
        "n_molecules": m["n_molecules"],
        "n_molecules_relative": m["n_molecules_relative"],
    }
