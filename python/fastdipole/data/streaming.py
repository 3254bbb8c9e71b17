"""Molecules read from an HDF5 file piece by piece: memory bounded by the chunk and batch sizes, not the file.

:class:`H5Stream` keeps only the per-molecule arrays in memory (offsets, dipoles, ids: 8-40 bytes per
molecule) and reads the per-atom arrays (Z, R, charges) one chunk of ``chunk_molecules`` consecutive molecules at
a time, so every read is one contiguous range of the file. Each chunk is checked as it is read (the checks of
:func:`~fastdipole.data.validate` and, unless switched off, :func:`~fastdipole.data.check_physics`), and a bad
molecule is named by its index in the file. Training checks the whole file first (:meth:`H5Stream.check`, one
read of it), so bad data stops a run before its first step; evaluation checks each chunk as it reads it.

:class:`StreamingBatchLoader` shuffles by chunks: each epoch draws a random order of the chunks (seeded by
``seed + epoch``), groups them into windows of ``window_chunks`` chunks and shuffles the molecules within each
window. A batch then holds molecules of at most two windows, and at most ``2 * window_chunks`` chunks are in
memory at once (at a window boundary). In a distributed run the epoch's order is cut to a multiple of the
world size and each rank takes one contiguous share of it, so it reads its own stretch of windows and all
ranks take the same number of steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import DataError
from .batching import Batch, BatchLoader
from .dataset import MoleculeDataset, atom_indices, check_species, validate
from .h5io import describe_h5, load_h5

#: Molecules per chunk read from the file (QMugs-sized molecules: ~16k x 60 atoms x 17 bytes = 16 MB).
DEFAULT_CHUNK_MOLECULES = 16_384
#: Chunks whose molecules are shuffled together.
DEFAULT_WINDOW_CHUNKS = 4
#: ``data_mode="auto"`` streams a file whose arrays would take more than this in memory (bytes).
STREAM_ABOVE_BYTES = 1 << 30
#: Data modes of training and evaluation: the whole file in memory, streamed, or chosen by size.
DATA_MODES = ("auto", "memory", "stream")


def in_memory_bytes(path) -> int:
    """Bytes the file's arrays would take loaded by :func:`~fastdipole.data.load_h5` (int64 Z, float32 R and
    charges, per-molecule arrays), from the array shapes alone."""
    arrays, _ = describe_h5(path)
    n_atoms = arrays["Z"][0][0] if "Z" in arrays and arrays["Z"][0] else 0
    n_mol = max(arrays["offsets"][0][0] - 1, 0) if "offsets" in arrays and arrays["offsets"][0] else 0
    return int(n_atoms * (8 + 12 + 4) + n_mol * 64)


def choose_data_mode(mode: str, path) -> str:
    """``memory`` or ``stream`` for ``mode`` (one of :data:`DATA_MODES`) and the file ``path``."""
    if mode not in DATA_MODES:
        raise ValueError(f"data mode must be one of {DATA_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    return "stream" if in_memory_bytes(path) > STREAM_ABOVE_BYTES else "memory"


class H5Stream:
    """A fastdipole .h5 file read in chunks of ``chunk_molecules`` consecutive molecules (module doc).

    ``charges``: the per-atom label array to read (e), or None. ``physical_checks``: run
    :func:`~fastdipole.data.check_physics` on every chunk read. ``species``: allowed atomic numbers (checked per
    chunk), or None.
    """

    def __init__(self, path, charges: str | None = "q_mulliken", chunk_molecules: int = DEFAULT_CHUNK_MOLECULES,
                 physical_checks: bool = True, species=None):
        if chunk_molecules < 1:
            raise ValueError(f"chunk_molecules must be >= 1, got {chunk_molecules}")
        self.path = Path(path)
        self.charge_array = charges
        self.chunk_molecules = int(chunk_molecules)
        self.physical_checks = physical_checks
        self._checked: set[tuple[int, int]] = set()  # chunk ranges that passed the checks
        self.species = species
        # load_h5 on one molecule checks the layout (arrays present, units, shapes, sound offsets); the
        # per-molecule arrays then stay in memory and each chunk reads only its atoms' rows.
        import h5py

        head = load_h5(self.path, charges=charges, molecules=slice(0, 1), check=False)
        self._file = h5py.File(self.path, "r")
        f = self._file
        self.offsets = f["offsets"][:].astype(np.int64)
        self.mu_debye = f["mu"][:].astype(np.float32) if "mu" in f else None
        self.mu_vec_debye = f["mu_vec"][:].astype(np.float32) if "mu_vec" in f else None
        self.extra = {k: (np.asarray(f[k].asstr()[:], dtype=object)
                          if h5py.check_string_dtype(f[k].dtype) is not None else f[k][:]) for k in head.extra}
        if self.mu_debye is None:
            self.mu_debye = np.linalg.norm(self.mu_vec_debye.astype(np.float64), axis=1).astype(np.float32)
        if "n_atoms" in f:
            bad = np.flatnonzero(f["n_atoms"][:].astype(np.int64) != np.diff(self.offsets))
            if len(bad):
                raise DataError(f"{self.path}: array 'n_atoms' says molecule {bad[0]} has {f['n_atoms'][bad[0]]} "
                                f"atoms but array 'offsets' gives {np.diff(self.offsets)[bad[0]]}")
        self.has_charges = head.charges is not None
        self.source = str(self.path)

    @property
    def species(self) -> list[int] | None:
        """Allowed atomic numbers, checked in each chunk (None: any)."""
        return self._species

    @species.setter
    def species(self, value) -> None:
        self._species = None if value is None else sorted(int(z) for z in value)
        self._checked.clear()  # chunks checked against other species are checked again

    # ---- what the trainer asks of a dataset -----------------------------------------------------------------

    @property
    def n_molecules(self) -> int:
        return int(len(self.offsets) - 1)

    @property
    def n_atoms(self) -> int:
        return int(self.offsets[-1])

    @property
    def total_charge(self) -> np.ndarray:
        from .dataset import TOTAL_CHARGE_KEY

        values = self.extra.get(TOTAL_CHARGE_KEY)
        return np.zeros(self.n_molecules, np.float32) if values is None else np.asarray(values, np.float32)

    def chunk_ranges(self) -> list[tuple[int, int]]:
        """(first, end) molecule ranges of the chunks, in file order."""
        n, c = self.n_molecules, self.chunk_molecules
        return [(lo, min(lo + c, n)) for lo in range(0, n, c)]

    def read(self, lo: int, hi: int) -> MoleculeDataset:
        """Molecules ``lo:hi`` of the file, checked; error messages name molecules by their file index."""
        a0, a1 = int(self.offsets[lo]), int(self.offsets[hi])
        f = self._file
        try:
            Z = f["Z"][a0:a1].astype(np.int64)
            R = f["R"][a0:a1].astype(np.float32, copy=False)
            q = f[self.charge_array][a0:a1].astype(np.float32, copy=False) if self.has_charges else None
        except (OSError, ValueError, RuntimeError) as err:
            raise DataError(f"{self.path}: molecules {lo}-{hi - 1} could not be read (truncated or corrupt file: "
                            f"{' '.join(str(err).split())})") from None
        chunk = MoleculeDataset(
            Z=Z, R=R, offsets=self.offsets[lo:hi + 1] - a0, mu_debye=self.mu_debye[lo:hi], charges=q,
            mu_vec_debye=None if self.mu_vec_debye is None else self.mu_vec_debye[lo:hi], source=self.source,
            extra={k: v[lo:hi] for k, v in self.extra.items()}, first_molecule=lo, first_atom=a0)
        if (lo, hi) not in self._checked:  # a later epoch reads the same, already checked, bytes
            validate(chunk, self.species)
            if self.physical_checks:
                from .physics import check_physics

                check_physics(chunk)
            self._checked.add((lo, hi))
        return chunk

    def check(self, rank: int = 0, world_size: int = 1) -> int:
        """Read and check every ``world_size``-th chunk from chunk ``rank`` (all of them by default), so that a
        bad molecule or an unreadable range stops a run before it trains rather than in the middle of an
        epoch; returns the number of molecules checked. The checked chunks are not read again for checking.

        In a distributed run every rank checks its share; once all ranks report success,
        :meth:`mark_checked` records the rest as checked too.
        """
        n = 0
        for lo, hi in self.chunk_ranges()[rank::world_size]:
            if (lo, hi) not in self._checked:
                self.read(lo, hi)
            n += hi - lo
        return n

    def mark_checked(self) -> None:
        """Record every chunk as checked (after each rank's :meth:`check` of its share passed)."""
        self._checked.update(self.chunk_ranges())

    def close(self) -> None:
        self._file.close()

    def chunks(self) -> Iterator[MoleculeDataset]:
        """Every chunk of the file in order (each checked as it is read)."""
        for lo, hi in self.chunk_ranges():
            yield self.read(lo, hi)

    def elements(self) -> list[int]:
        """The atomic numbers present in the file (one pass over array Z, chunk by chunk)."""
        import h5py

        seen = np.zeros(256, dtype=bool)
        with h5py.File(self.path, "r") as f:
            Z = f["Z"]
            step = 1 << 22
            for a in range(0, Z.shape[0], step):
                seen[np.clip(Z[a:a + step].astype(np.int64), 0, 255)] = True
        return [int(z) for z in np.flatnonzero(seen)]

    def element_mean_charges(self, indices) -> dict[int, float]:
        """Mean label charge (e) of each element over the atoms of molecules ``indices`` (streamed)."""
        if not self.has_charges:
            raise DataError(f"{self.source}: no per-atom charge array loaded, cannot average charges per element")
        wanted = np.zeros(self.n_molecules, dtype=bool)
        wanted[np.asarray(indices, dtype=np.int64)] = True
        counts, sums = np.zeros(256), np.zeros(256)
        for chunk in self.chunks():
            local = np.flatnonzero(wanted[chunk.first_molecule:chunk.first_molecule + chunk.n_molecules])
            atoms, _ = atom_indices(chunk.offsets, local)
            counts += np.bincount(chunk.Z[atoms], minlength=256)
            sums += np.bincount(chunk.Z[atoms], weights=chunk.charges[atoms].astype(np.float64), minlength=256)
        if counts.sum() == 0:
            raise DataError(f"{self.source}: no atoms in the selected molecules, cannot average charges")
        return {int(z): float(sums[z] / counts[z]) for z in np.flatnonzero(counts)}

    def check_species(self, species) -> None:
        """Raise DataError naming the first molecule with an element not in ``species`` (streamed)."""
        for chunk in self.chunks():
            check_species(chunk, species)

    def __repr__(self) -> str:
        return f"H5Stream({self.n_molecules} molecules in chunks of {self.chunk_molecules}, source={self.source!r})"


class StreamingBatchLoader:
    """Batches of molecules ``indices`` of an :class:`H5Stream`, reading the file chunk by chunk (module doc).

    Same interface as :class:`~fastdipole.data.BatchLoader` (``set_epoch``, ``len``, iteration, ``indices``);
    ``charge_labels`` (a function of a chunk returning its per-atom labels, e) replaces the file's charges.
    Without ``shuffle`` the molecules come in file order (not in the order of ``indices``; each batch's
    ``index`` says which molecules it holds).
    """

    def __init__(self, stream: H5Stream, indices=None, batch_size: int = 64, shuffle: bool = False, seed: int = 0,
                 dtype: torch.dtype = torch.float32, charge_labels: Callable[[MoleculeDataset], np.ndarray] | None = None,
                 rank: int = 0, world_size: int = 1, window_chunks: int = DEFAULT_WINDOW_CHUNKS):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
        self.stream = stream
        self.indices = np.arange(stream.n_molecules, dtype=np.int64) if indices is None else \
            np.asarray(indices, dtype=np.int64)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= stream.n_molecules):
            raise DataError(f"{stream.source}: molecule index out of range [0, {stream.n_molecules})")
        self.batch_size, self.shuffle, self.seed, self.dtype = int(batch_size), bool(shuffle), int(seed), dtype
        self.charge_labels = charge_labels
        self.rank, self.world_size = int(rank), int(world_size)
        self.window_chunks = max(1, int(window_chunks))
        self.epoch = 0
        ranges = stream.chunk_ranges()
        starts = np.array([lo for lo, _ in ranges], dtype=np.int64)
        sorted_idx = np.sort(self.indices)
        chunk_of = np.searchsorted(starts, sorted_idx, side="right") - 1
        bounds = np.searchsorted(chunk_of, np.arange(len(ranges) + 1))
        self._ranges = ranges
        self._members = [sorted_idx[bounds[c]:bounds[c + 1]] for c in range(len(ranges))]  # molecules per chunk

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(molecule indices this rank visits in epoch ``epoch``, the chunk of each), in visiting order."""
        chunks = np.arange(len(self._ranges))
        rng = np.random.default_rng(self.seed + epoch) if self.shuffle else None
        if rng is not None:
            chunks = rng.permutation(chunks)
        windows = [chunks[w:w + self.window_chunks] for w in range(0, len(chunks), self.window_chunks)]
        parts = []
        for window in windows:
            members = np.concatenate([self._members[c] for c in window]) if len(window) else np.zeros(0, np.int64)
            parts.append(members[rng.permutation(len(members))] if rng is not None else members)
        order = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if self.world_size > 1:  # a contiguous share each: every rank reads its own stretch of windows
            share = len(order) // self.world_size
            order = order[self.rank * share:(self.rank + 1) * share]
        starts = np.array([lo for lo, _ in self._ranges], dtype=np.int64)
        return order, np.searchsorted(starts, order, side="right") - 1

    def __len__(self) -> int:
        n = len(self.indices) // self.world_size
        return -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        molecules, chunk_ids = self.order(self.epoch)
        self.epoch += 1
        last_use = {int(c): i for i, c in enumerate(chunk_ids)}  # position of each chunk's last molecule
        loaded: dict[int, tuple[MoleculeDataset, np.ndarray | None]] = {}  # chunk, its charge labels
        for start in range(0, len(molecules), self.batch_size):
            mols, cids = molecules[start:start + self.batch_size], chunk_ids[start:start + self.batch_size]
            for c in np.unique(cids):
                if int(c) not in loaded:
                    chunk = self.stream.read(*self._ranges[int(c)])
                    labels = self.charge_labels(chunk) if self.charge_labels is not None else chunk.charges
                    loaded[int(c)] = chunk, labels
            yield self._collate(mols, cids, loaded)
            end = start + len(mols) - 1
            for c in [c for c in loaded if last_use[c] <= end]:
                del loaded[c]

    def _collate(self, molecules: np.ndarray, chunk_ids: np.ndarray, loaded: dict) -> Batch:
        """The batch of ``molecules`` (file indices), grouped by chunk (the order within a batch is free)."""
        keep = np.argsort(chunk_ids, kind="stable")
        molecules, chunk_ids = molecules[keep], chunk_ids[keep]
        parts = {k: [] for k in ("Z", "R", "q", "mu", "mu_vec", "total", "counts")}
        for c in np.unique(chunk_ids):
            chunk, labels = loaded[int(c)]
            local = molecules[chunk_ids == c] - chunk.first_molecule
            atoms, offsets = atom_indices(chunk.offsets, local)
            parts["Z"].append(chunk.Z[atoms])
            parts["R"].append(chunk.R[atoms])
            if labels is not None:
                parts["q"].append(labels[atoms])
            parts["mu"].append(chunk.mu_debye[local])
            if chunk.mu_vec_debye is not None:
                parts["mu_vec"].append(chunk.mu_vec_debye[local])
            parts["total"].append(chunk.total_charge[local])
            parts["counts"].append(np.diff(offsets))
        counts = np.concatenate(parts["counts"])
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        total = np.concatenate(parts["total"])

        def tensor(key, dtype):
            return torch.from_numpy(np.ascontiguousarray(np.concatenate(parts[key]))).to(dtype) if parts[key] else None

        return Batch(
            Z=tensor("Z", torch.int64),
            R=tensor("R", self.dtype),
            offsets=torch.from_numpy(offsets),
            mu_debye=tensor("mu", self.dtype),
            charges=tensor("q", self.dtype),
            index=torch.from_numpy(molecules.copy()),
            total_charge=torch.from_numpy(total).to(self.dtype) if np.any(total) else None,
            mu_vec_debye=tensor("mu_vec", self.dtype),
        )


def loader_for(dataset, indices=None, batch_size: int = 64, *, shuffle: bool = False, seed: int = 0,
               dtype: torch.dtype = torch.float32, charges=None, rank: int = 0, world_size: int = 1):
    """The batches of molecules ``indices`` of ``dataset``: a :class:`~fastdipole.data.BatchLoader` for a
    :class:`MoleculeDataset` in memory (shuffled molecule by molecule), a :class:`StreamingBatchLoader` for an
    :class:`H5Stream` (shuffled by chunks).

    ``charges`` replaces the file's per-atom charge labels (e): an array over the dataset's atoms in memory, a
    function of a chunk returning its labels for a stream. ``rank`` / ``world_size``: this process's share.
    """
    if isinstance(dataset, H5Stream):
        if charges is not None and not callable(charges):
            raise ValueError("charges for a streamed dataset must be a function of a chunk, not an array")
        return StreamingBatchLoader(dataset, indices, batch_size, shuffle=shuffle, seed=seed, dtype=dtype,
                                    charge_labels=charges, rank=rank, world_size=world_size)
    return BatchLoader(dataset, indices, batch_size, shuffle=shuffle, seed=seed, dtype=dtype, charges=charges,
                       rank=rank, world_size=world_size)
