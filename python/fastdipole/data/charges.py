"""Per-element mean charges: the labels of the "average" charge mode (each atom gets its element's mean)."""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .dataset import MoleculeDataset, atom_indices


def element_mean_charges(dataset: MoleculeDataset, indices=None) -> dict[int, float]:
    """Mean label charge (e) of each element over the atoms of molecules ``indices`` (default: all)."""
    if dataset.charges is None:
        raise DataError(f"{dataset.source}: no per-atom charge array loaded, cannot average charges per element")
    if indices is None:
        Z, q = dataset.Z, dataset.charges
    else:
        atoms, _ = atom_indices(dataset.offsets, np.asarray(indices, dtype=np.int64))
        Z, q = dataset.Z[atoms], dataset.charges[atoms]
    if len(Z) == 0:
        raise DataError(f"{dataset.source}: no atoms in the selected molecules, cannot average charges")
    counts = np.bincount(Z)
    sums = np.bincount(Z, weights=q.astype(np.float64))
    return {int(z): float(sums[z] / counts[z]) for z in np.flatnonzero(counts)}


def average_charge_labels(dataset: MoleculeDataset, means: dict[int, float]) -> np.ndarray:
    """float32 (N,) charges where every atom carries ``means[its element]`` (e)."""
    table = np.full(max(int(dataset.Z.max(initial=0)), max(means, default=0)) + 1, np.nan)
    for z, value in means.items():
        table[int(z)] = value
    labels = table[dataset.Z]
    missing = np.flatnonzero(np.isnan(labels))
    if len(missing):
        m = dataset.molecule_of_atom(missing[0])
        raise DataError(
            f"{dataset.source}: array 'Z': molecule {m + dataset.first_molecule} has element "
            f"Z={dataset.Z[missing[0]]} "
            f"with no mean charge (known elements: {sorted(means)})"
        )
    return labels.astype(np.float32)
