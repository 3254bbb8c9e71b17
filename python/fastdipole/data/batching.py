"""Mini-batches of whole molecules as flat, unpadded torch tensors.

A batch concatenates the atoms of its molecules; ``offsets`` (local to the batch) says which atoms
belong to which molecule, exactly like the dataset's own CSR layout.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np
import torch

from ..errors import DataError
from .dataset import MoleculeDataset, atom_indices


class Batch(NamedTuple):
    """One mini-batch. Atoms are concatenated over molecules (no padding).

    Z: int64 (n,) atomic numbers. R: (n, 3) positions, Angstrom. offsets: int64 (b+1,) local CSR
    offsets. mu_debye: (b,) dipole magnitudes, Debye. charges: (n,) charge labels, e, or None.
    index: int64 (b,) molecule indices into the dataset. total_charge: (b,) total charge of each molecule,
    e (None: all neutral). mu_vec_debye: (b, 3) dipole vectors, Debye, or None.
    """

    Z: torch.Tensor
    R: torch.Tensor
    offsets: torch.Tensor
    mu_debye: torch.Tensor
    charges: torch.Tensor | None
    index: torch.Tensor
    total_charge: torch.Tensor | None = None
    mu_vec_debye: torch.Tensor | None = None

    @property
    def n_molecules(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def to(self, device) -> "Batch":
        """The same batch on ``device`` (tensors that are None stay None)."""
        return Batch(*(t.to(device, non_blocking=True) if t is not None else None for t in self))


class BatchLoader:
    """Iterate over ``indices`` of ``dataset`` in batches of ``batch_size`` molecules.

    With ``shuffle`` the order is a fresh permutation every epoch, drawn from a numpy Generator
    seeded by ``seed + epoch`` (the epoch counter advances on each ``iter()``; ``set_epoch`` sets it),
    so runs are reproducible and resumable. ``charges`` (float array (N,) over the whole dataset, e)
    replaces the dataset's own charge labels, e.g. per-element average charges. ``rank`` / ``world_size``:
    this process's share of every epoch's order in a distributed run (:func:`shard_order`).
    """

    def __init__(
        self,
        dataset: MoleculeDataset,
        indices=None,
        batch_size: int = 64,
        shuffle: bool = False,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        drop_last: bool = False,
        charges=None,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.indices = (
            np.arange(dataset.n_molecules, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        )
        if self.indices.ndim != 1:
            raise DataError(f"{dataset.source}: molecule indices must be 1-D, got shape {self.indices.shape}")
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= dataset.n_molecules):
            raise DataError(
                f"{dataset.source}: molecule index out of range [0, {dataset.n_molecules}) "
                f"(min {self.indices.min()}, max {self.indices.max()})"
            )
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.dtype = dtype
        self.drop_last = bool(drop_last)
        self.epoch = 0
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
        self.rank, self.world_size = int(rank), int(world_size)

        labels = dataset.charges if charges is None else np.asarray(charges)
        if labels is not None and labels.shape != (dataset.n_atoms,):
            raise DataError(
                f"{dataset.source}: charge labels must have shape ({dataset.n_atoms},), got {labels.shape}"
            )
        # Convert once; each step only gathers rows (index_select on contiguous tensors).
        self._offsets = np.ascontiguousarray(dataset.offsets, dtype=np.int64)
        self._Z = torch.from_numpy(np.ascontiguousarray(dataset.Z, dtype=np.int64))
        self._R = torch.from_numpy(np.ascontiguousarray(dataset.R)).to(dtype)
        self._mu = torch.from_numpy(np.ascontiguousarray(dataset.mu_debye)).to(dtype)
        self._q = None if labels is None else torch.from_numpy(np.ascontiguousarray(labels)).to(dtype)
        self._mu_vec = None if dataset.mu_vec_debye is None else \
            torch.from_numpy(np.ascontiguousarray(dataset.mu_vec_debye)).to(dtype)
        total = dataset.total_charge
        self._total = torch.from_numpy(np.ascontiguousarray(total)).to(dtype) if np.any(total) else None

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch whose permutation the next ``iter()`` uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.indices) // self.world_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """Molecule indices in the order epoch ``epoch`` visits them (this rank's share of them)."""
        if not self.shuffle:
            return shard_order(self.indices, self.rank, self.world_size)
        rng = np.random.default_rng(self.seed + epoch)
        return shard_order(self.indices[rng.permutation(len(self.indices))], self.rank, self.world_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self.order(self.epoch)
        self.epoch += 1
        for b in range(len(self)):
            yield self.collate(order[b * self.batch_size : (b + 1) * self.batch_size])

    def collate(self, molecules: np.ndarray) -> Batch:
        """The batch holding ``molecules`` (dataset indices), in that order."""
        molecules = np.asarray(molecules, dtype=np.int64)
        atoms, offsets = atom_indices(self._offsets, molecules)
        atoms_t = torch.from_numpy(atoms)
        mol_t = torch.from_numpy(molecules)
        return Batch(
            Z=self._Z.index_select(0, atoms_t),
            R=self._R.index_select(0, atoms_t),
            offsets=torch.from_numpy(offsets),
            mu_debye=self._mu.index_select(0, mol_t),
            charges=None if self._q is None else self._q.index_select(0, atoms_t),
            index=mol_t,
            total_charge=None if self._total is None else self._total.index_select(0, mol_t),
            mu_vec_debye=None if self._mu_vec is None else self._mu_vec.index_select(0, mol_t),
        )


def shard_order(order: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s molecules of an epoch ``order`` in a run of ``world_size`` processes: the order cut to a
    multiple of ``world_size``, then every ``world_size``-th molecule from position ``rank`` (as torch's
    ``DistributedSampler``, without its padding). Step k of all ranks together then holds the molecules of step
    k of a one-process run with ``world_size`` times the batch size on the same order."""
    if world_size == 1:
        return order
    usable = len(order) - len(order) % world_size
    return order[rank:usable:world_size]
