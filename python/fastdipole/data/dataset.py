"""`MoleculeDataset`: many molecules stored flat (CSR layout), plus the checks that keep bad data out.

Atoms of all molecules are concatenated; molecule ``m`` owns atoms ``offsets[m]:offsets[m+1]``.
Units: positions in Angstrom, charges in e, dipoles in Debye (as stored in the HDF5 files).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError

#: Two atoms of one molecule closer than this (Angstrom) are treated as a data error.
MIN_ATOM_DISTANCE_ANGSTROM = 0.1

#: Largest atomic number accepted at all (species lists narrow it further).
MAX_ATOMIC_NUMBER = 118

# Upper bound on the number of float32 entries of one (molecules, n, n, 3) difference block in the
# coincident-atom check; keeps its memory near 50 MB whatever the molecule sizes.
_PAIR_BLOCK_ENTRIES = 12_000_000
# Molecules larger than this find their closest atoms with a k-d tree instead of all pairs.
_KDTREE_MIN_ATOMS = 2_000


#: Optional per-molecule array of total charges (e); molecules are neutral when a file has none.
TOTAL_CHARGE_KEY = "total_charge"


@dataclass
class MoleculeDataset:
    """Molecules in flat CSR layout (numpy arrays).

    Attributes:
        Z: int64 (N,) atomic numbers.
        R: float32 (N, 3) positions, Angstrom.
        offsets: int64 (M+1,); molecule m is atoms ``offsets[m]:offsets[m+1]``.
        mu_debye: float32 (M,) dipole moment magnitudes, Debye.
        charges: float32 (N,) per-atom charge labels, e (or None).
        mu_vec_debye: float32 (M, 3) dipole vectors, Debye (or None).
        source: where the data came from (file path), used in error messages.
        extra: other per-molecule arrays (e.g. ``gdb_id``), each of length M.
        first_molecule, first_atom: the file indices of molecule 0 and atom 0 (0 unless a chunk).
    """

    Z: np.ndarray
    R: np.ndarray
    offsets: np.ndarray
    mu_debye: np.ndarray
    charges: np.ndarray | None = None
    mu_vec_debye: np.ndarray | None = None
    source: str = "<memory>"
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    #: Index in ``source`` of molecule 0 and of atom 0 (a chunk of a file read piece by piece): error messages
    #: name molecules and atoms by their index in the file.
    first_molecule: int = 0
    first_atom: int = 0

    @property
    def n_molecules(self) -> int:
        return int(len(self.offsets) - 1)

    @property
    def n_atoms(self) -> int:
        return int(len(self.Z))

    @property
    def total_charge(self) -> np.ndarray:
        """float32 (M,) total charge of each molecule, e: the file's per-molecule ``total_charge`` array when
        present (QMugs files have one), else 0 (neutral molecules)."""
        values = self.extra.get(TOTAL_CHARGE_KEY)
        if values is None:
            return np.zeros(self.n_molecules, dtype=np.float32)
        return np.asarray(values, dtype=np.float32)

    @property
    def n_atoms_per_molecule(self) -> np.ndarray:
        """int64 (M,) number of atoms of each molecule."""
        return np.diff(self.offsets)

    def molecule(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(Z, R [Angstrom]) of molecule ``i``."""
        m = int(np.arange(self.n_molecules)[i])  # same negative-index rules as numpy
        start, stop = self.offsets[m], self.offsets[m + 1]
        return self.Z[start:stop], self.R[start:stop]

    def molecule_of_atom(self, atom_index) -> np.ndarray | int:
        """Index of the molecule that owns each given atom index."""
        return np.searchsorted(self.offsets, atom_index, side="right") - 1

    def subset(self, indices) -> "MoleculeDataset":
        """Molecules ``indices`` (int array, slice or boolean mask), in the given order, as a new dataset."""
        try:
            idx = np.arange(self.n_molecules, dtype=np.int64)[indices]
        except IndexError as err:
            raise DataError(f"{self.source}: bad molecule selection for {self.n_molecules} molecules ({err})") from None
        idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        atom_idx, offsets = atom_indices(self.offsets, idx)
        return MoleculeDataset(
            Z=self.Z[atom_idx],
            R=self.R[atom_idx],
            offsets=offsets,
            mu_debye=self.mu_debye[idx],
            charges=None if self.charges is None else self.charges[atom_idx],
            mu_vec_debye=None if self.mu_vec_debye is None else self.mu_vec_debye[idx],
            source=self.source,
            extra={k: v[idx] for k, v in self.extra.items()},
        )

    def __repr__(self) -> str:
        return (
            f"MoleculeDataset({self.n_molecules} molecules, {self.n_atoms} atoms, "
            f"charges={'yes' if self.charges is not None else 'no'}, source={self.source!r})"
        )


def atom_indices(offsets: np.ndarray, molecules: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Atom indices of ``molecules`` (concatenated, in order) and their new local CSR offsets.

    Vectorised: one ``np.repeat`` instead of a Python loop, so it is cheap enough to run per batch.
    """
    starts = offsets[molecules]
    counts = offsets[molecules + 1] - starts
    new_offsets = np.zeros(len(molecules) + 1, dtype=np.int64)
    np.cumsum(counts, out=new_offsets[1:])
    # atom k of the output belongs to output molecule j: source atom = starts[j] + (k - new_offsets[j])
    shift = np.repeat(starts - new_offsets[:-1], counts)
    return np.arange(new_offsets[-1], dtype=np.int64) + shift, new_offsets


# ----------------------------------------------------------------------------------------------------
# Validation: every check raises a one-line DataError naming the source, the array and the molecule.


def validate(dataset: MoleculeDataset, species=None) -> None:
    """Raise DataError on malformed data; ``species`` (iterable of atomic numbers) restricts elements.

    Checks: array shapes and lengths, CSR offsets, empty molecules, atomic numbers, NaN/inf values,
    and coincident atoms (two atoms of a molecule closer than 0.1 Angstrom).
    """
    src = dataset.source
    check_shapes(dataset)
    n_mol = dataset.n_molecules

    counts = dataset.n_atoms_per_molecule
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise DataError(f"{src}: array 'offsets': molecule {empty[0] + dataset.first_molecule} has no atoms ({len(empty)} empty molecules)")

    Z = dataset.Z
    bad = np.flatnonzero((Z < 1) | (Z > MAX_ATOMIC_NUMBER))
    if len(bad):
        m = dataset.molecule_of_atom(bad[0])
        raise DataError(f"{src}: array 'Z': molecule {m + dataset.first_molecule} has invalid atomic number {Z[bad[0]]} (atom {bad[0] + dataset.first_atom})")
    if species is not None:
        check_species(dataset, species)

    _check_finite(dataset.R, "R", dataset, per_atom=True)
    if dataset.charges is not None:
        _check_finite(dataset.charges, "charges", dataset, per_atom=True)
    _check_finite(dataset.mu_debye, "mu", dataset, per_atom=False)
    if dataset.mu_vec_debye is not None:
        _check_finite(dataset.mu_vec_debye, "mu_vec", dataset, per_atom=False)
    neg = np.flatnonzero(dataset.mu_debye < 0)
    if len(neg):
        raise DataError(f"{src}: array 'mu': molecule {neg[0] + dataset.first_molecule} has a negative dipole magnitude {dataset.mu_debye[neg[0]]} D")
    assert n_mol == len(dataset.mu_debye)

    check_coincident_atoms(dataset)


def check_shapes(dataset: MoleculeDataset) -> None:
    """Shapes, lengths and CSR offsets agree (cheap; no per-atom scan beyond the offsets)."""
    src = dataset.source
    off = np.asarray(dataset.offsets)
    if off.ndim != 1 or len(off) < 1:
        raise DataError(f"{src}: array 'offsets' must be 1-D with M+1 >= 1 entries, got shape {off.shape}")
    if off[0] != 0:
        raise DataError(f"{src}: array 'offsets' must start at 0, got offsets[0] = {off[0]}")
    dec = np.flatnonzero(np.diff(off) < 0)
    if len(dec):
        raise DataError(
            f"{src}: array 'offsets' decreases at molecule {dec[0]} "
            f"(offsets[{dec[0]}] = {off[dec[0]]} > offsets[{dec[0] + 1}] = {off[dec[0] + 1]})"
        )
    n_atoms, n_mol = len(dataset.Z), len(off) - 1
    if dataset.Z.ndim != 1:
        raise DataError(f"{src}: array 'Z' must be 1-D, got shape {dataset.Z.shape}")
    if off[-1] != n_atoms:
        raise DataError(
            f"{src}: array 'offsets' ends at {off[-1]} but array 'Z' has {n_atoms} atoms "
            f"(last molecule {n_mol - 1})"
        )
    if dataset.R.ndim != 2 or dataset.R.shape[1] != 3:
        raise DataError(f"{src}: array 'R' must have shape (n_atoms, 3), got {dataset.R.shape}")
    per_atom = {"R": dataset.R, "charges": dataset.charges}
    for name, arr in per_atom.items():
        if arr is not None and len(arr) != n_atoms:
            raise DataError(f"{src}: array '{name}' has {len(arr)} entries but array 'Z' has {n_atoms} atoms")
    if dataset.charges is not None and dataset.charges.ndim != 1:
        raise DataError(f"{src}: array 'charges' must be 1-D, got shape {dataset.charges.shape}")
    per_mol = {"mu": dataset.mu_debye, "mu_vec": dataset.mu_vec_debye, **dataset.extra}
    for name, arr in per_mol.items():
        if arr is not None and len(arr) != n_mol:
            raise DataError(f"{src}: array '{name}' has {len(arr)} entries but array 'offsets' describes {n_mol} molecules")
    if dataset.mu_debye.ndim != 1:
        raise DataError(f"{src}: array 'mu' must be 1-D, got shape {dataset.mu_debye.shape}")
    if dataset.mu_vec_debye is not None and (dataset.mu_vec_debye.ndim != 2 or dataset.mu_vec_debye.shape[1] != 3):
        raise DataError(f"{src}: array 'mu_vec' must have shape (n_molecules, 3), got {dataset.mu_vec_debye.shape}")


def check_species(dataset: MoleculeDataset, species) -> None:
    """Raise DataError naming the first molecule holding an element not in ``species`` (atomic numbers)."""
    allowed = np.zeros(max(int(np.max(dataset.Z, initial=0)), max(species, default=0)) + 1, dtype=bool)
    allowed[np.asarray(list(species), dtype=np.int64)] = True
    Z = dataset.Z
    bad = np.flatnonzero(~allowed[np.clip(Z, 0, None)] | (Z < 0))
    if len(bad):
        m = dataset.molecule_of_atom(bad[0])
        raise DataError(
            f"{dataset.source}: array 'Z': molecule {m + dataset.first_molecule} contains element Z={Z[bad[0]]} (atom {bad[0] + dataset.first_atom}), "
            f"not among the allowed species {sorted(int(s) for s in species)}"
        )


def _check_finite(arr: np.ndarray, name: str, dataset: MoleculeDataset, per_atom: bool) -> None:
    ok = np.isfinite(arr)
    if ok.all():
        return
    flat = ok.reshape(len(arr), -1).all(axis=1)
    first = int(np.flatnonzero(~flat)[0])
    if per_atom:
        m = dataset.molecule_of_atom(first)
        raise DataError(f"{dataset.source}: array '{name}': molecule {m + dataset.first_molecule} has a NaN or infinite value (atom {first + dataset.first_atom})")
    raise DataError(f"{dataset.source}: array '{name}': molecule {first + dataset.first_molecule} has a NaN or infinite value")


def minimum_pair_distances(dataset: MoleculeDataset, with_pairs: bool = False):
    """Distance (Angstrom) between the two closest atoms of each molecule, (M,) float64 (inf for one atom); with
    ``with_pairs`` also the two atoms' local indices, (M, 2) int64 (-1 for one atom).

    Molecules of one size form dense (k, n, n) blocks, cut so memory stays near 50 MB; molecules of more than
    ``_KDTREE_MIN_ATOMS`` atoms go through a k-d tree (time and memory linear in atoms)."""
    counts = dataset.n_atoms_per_molecule
    starts = dataset.offsets[:-1]
    R = dataset.R
    best = np.full(len(counts), np.inf)
    pairs = np.full((len(counts), 2), -1, dtype=np.int64)
    for n in np.unique(counts):
        if n < 2:
            continue
        mols = np.flatnonzero(counts == n)
        if n > _KDTREE_MIN_ATOMS:
            from scipy.spatial import cKDTree

            for m in mols:
                pos = R[starts[m] : starts[m] + n].astype(np.float64)
                dist, nearest = cKDTree(pos).query(pos, k=2)
                i = int(np.argmin(dist[:, 1]))
                best[m], pairs[m] = dist[i, 1], sorted((i, int(nearest[i, 1])))
            continue
        iu, ju = np.triu_indices(n, k=1)
        block = max(1, _PAIR_BLOCK_ENTRIES // (n * n * 3))
        for b in range(0, len(mols), block):
            sel = mols[b : b + block]
            pos = R[starts[sel][:, None] + np.arange(n)]  # (k, n, 3)
            diff = pos[:, iu, :] - pos[:, ju, :]  # (k, pairs, 3)
            d2 = np.einsum("kpc,kpc->kp", diff, diff)
            p = np.argmin(d2, axis=1)
            best[sel] = np.sqrt(d2[np.arange(len(sel)), p])
            pairs[sel, 0], pairs[sel, 1] = iu[p], ju[p]
    return (best, pairs) if with_pairs else best


def molecules_with_close_atoms(dataset: MoleculeDataset, min_distance: float) -> np.ndarray:
    """Indices (ascending) of the molecules with two atoms closer than ``min_distance`` Angstrom.

    With the compiled kernels this is the neighbour-list op at a cutoff of ``min_distance`` (linear in atoms;
    all of QM9 in 0.11 s against 1.05 s for comparing all pairs in numpy), else :func:`minimum_pair_distances`."""
    from ..ops import extension_available

    if not extension_available():  # the reference op holds all pairs in memory: use the blocked numpy path
        return np.flatnonzero(minimum_pair_distances(dataset) < min_distance)
    import torch

    from ..ops import neighbor_pairs

    pairs = neighbor_pairs(torch.from_numpy(np.ascontiguousarray(dataset.R, dtype=np.float32)),
                           torch.from_numpy(dataset.offsets.astype(np.int64)), float(min_distance))
    first = pairs.first.numpy()
    return np.unique(np.searchsorted(dataset.offsets, first, side="right") - 1)


def check_coincident_atoms(dataset: MoleculeDataset, min_distance: float = MIN_ATOM_DISTANCE_ANGSTROM) -> None:
    """Raise DataError if two atoms of one molecule are closer than ``min_distance`` Angstrom."""
    close = molecules_with_close_atoms(dataset, min_distance)
    if not len(close):
        return
    # The closest pair of the flagged molecules only, for the message.
    atoms, offsets = atom_indices(dataset.offsets, close)
    flagged = MoleculeDataset(Z=dataset.Z[atoms], R=dataset.R[atoms], offsets=offsets,
                              mu_debye=dataset.mu_debye[close], source=dataset.source)
    dist, pairs = minimum_pair_distances(flagged, with_pairs=True)
    k = int(np.argmax(dist < min_distance)) if np.any(dist < min_distance) else 0  # (float32 rounding at the edge)
    m, i, j, d = int(close[k]), int(pairs[k, 0]), int(pairs[k, 1]), float(dist[k])
    raise DataError(
        f"{dataset.source}: array 'R': molecule {m + dataset.first_molecule} has coincident atoms {i} and {j} "
        f"({d:.4f} Angstrom apart, minimum {min_distance} Angstrom)"
    )
