"""Checks for input that is well-formed but physically absurd (on top of :func:`~fastdipole.data.validate`, which
refuses malformed input). Each failing check raises a one-line DataError naming the source, the array and the
molecule; ``fastdipole train --allow-unphysical`` (``TrainConfig.physical_checks=False``) goes on anyway.

Bounds (documented in the README's "bad input" section):

- a coordinate beyond ``MAX_COORDINATE_ANGSTROM`` (1e4 Angstrom, the largest a PDB file can hold): a unit
  mistake (bohr, pm, nm scaled wrongly) or garbage;
- a molecule wider than ``MAX_MOLECULE_WIDTH_ANGSTROM`` (1,000 Angstrom, the diagonal of its bounding box): no
  single molecule of a dipole data set is that large;
- label charges whose sum differs from the molecule's total charge (0 unless a ``total_charge`` array says
  otherwise) by more than ``CHARGE_SUM_TOLERANCE_E`` (0.01 e; QM9's Mulliken charges sum to 0 within 6e-6 e);
- a dipole magnitude larger than any point charges could give: ``MAX_ATOM_CHARGE_E`` (2 e) on every atom at the
  molecule's largest distance from its centroid, plus ``DIPOLE_SLACK_DEBYE`` (0.1 D) of label noise.

:func:`molecules_without_pairs` finds the molecules with no pair of atoms inside the cutoff (single atoms, or
atoms further apart than the cutoff): the model sees them as isolated atoms. That is worth a warning, not an
error.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..units import DEBYE_PER_E_ANGSTROM
from .dataset import MoleculeDataset

MAX_COORDINATE_ANGSTROM = 1e4
MAX_MOLECULE_WIDTH_ANGSTROM = 1e3
CHARGE_SUM_TOLERANCE_E = 0.01
MAX_ATOM_CHARGE_E = 2.0
DIPOLE_SLACK_DEBYE = 0.1


def _per_molecule(values: np.ndarray, offsets: np.ndarray, ufunc) -> np.ndarray:
    """ufunc.reduceat over each molecule's atoms (molecules must have atoms: validate checks that)."""
    return ufunc.reduceat(values, offsets[:-1], axis=0)


def check_physics(dataset: MoleculeDataset) -> None:
    """Raise DataError for the first physically absurd molecule (module doc); run after ``validate``."""
    src, off, R = dataset.source, dataset.offsets, dataset.R.astype(np.float64)
    if dataset.n_atoms == 0:
        return
    far = np.flatnonzero(np.abs(R).max(axis=1) > MAX_COORDINATE_ANGSTROM)
    if len(far):
        m = dataset.molecule_of_atom(far[0])
        raise DataError(f"{src}: array 'R': molecule {m + dataset.first_molecule} has a coordinate of {np.abs(R[far[0]]).max():.3g} Angstrom "
                        f"(atom {far[0] + dataset.first_atom}), beyond {MAX_COORDINATE_ANGSTROM:g}: are the positions in Angstrom?")
    width = np.linalg.norm(_per_molecule(R, off, np.maximum) - _per_molecule(R, off, np.minimum), axis=1)
    wide = np.flatnonzero(width > MAX_MOLECULE_WIDTH_ANGSTROM)
    if len(wide):
        raise DataError(f"{src}: array 'R': molecule {wide[0] + dataset.first_molecule} is {width[wide[0]]:.3g} Angstrom wide, more than "
                        f"{MAX_MOLECULE_WIDTH_ANGSTROM:g}: are the positions in Angstrom, one molecule per entry?")
    if dataset.charges is not None:
        excess = _per_molecule(dataset.charges.astype(np.float64), off, np.add) - dataset.total_charge
        bad = np.flatnonzero(np.abs(excess) > CHARGE_SUM_TOLERANCE_E)
        if len(bad):
            m = bad[0]
            raise DataError(f"{src}: array 'charges': molecule {m + dataset.first_molecule}'s charges sum to "
                            f"{excess[m] + dataset.total_charge[m]:+.4f} e but its total charge is "
                            f"{dataset.total_charge[m]:+g} e (tolerance {CHARGE_SUM_TOLERANCE_E} e; "
                            "a 'total_charge' array gives ions their charge)")
    counts = np.diff(off)
    centroid = _per_molecule(R, off, np.add) / counts[:, None]
    radius = np.sqrt(_per_molecule(((R - np.repeat(centroid, counts, axis=0)) ** 2).sum(1), off, np.maximum))
    bound = MAX_ATOM_CHARGE_E * counts * radius * DEBYE_PER_E_ANGSTROM + DIPOLE_SLACK_DEBYE
    big = np.flatnonzero(dataset.mu_debye > bound)
    if len(big):
        m = big[0]
        raise DataError(f"{src}: array 'mu': molecule {m + dataset.first_molecule} has |mu| = {dataset.mu_debye[m]:.4g} D, more than "
                        f"{bound[m]:.3g} D, the most {counts[m]} atoms within {radius[m]:.3g} Angstrom of their "
                        f"centroid can give with {MAX_ATOM_CHARGE_E:g} e each: is mu in Debye?")


def molecules_without_pairs(dataset: MoleculeDataset, cutoff: float) -> np.ndarray:
    """Indices of the molecules whose atoms have no neighbour closer than ``cutoff`` (Angstrom)."""
    from .dataset import minimum_pair_distances

    return np.flatnonzero(minimum_pair_distances(dataset) >= cutoff)
