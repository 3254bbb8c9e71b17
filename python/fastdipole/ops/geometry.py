"""Index and distance helpers of flat molecule batches (CSR ``offsets``: molecule m owns atoms
``offsets[m]:offsets[m+1]``), used by the models and the references alike. Pure PyTorch, no host
synchronisation when ``n_atoms`` is given (CUDA graphs)."""

from __future__ import annotations

import torch
from torch import Tensor


def molecule_index(offsets: Tensor, n_atoms: int | None = None) -> Tensor:
    """Molecule id of every atom, shape (n_atoms,), int64."""
    counts = offsets[1:] - offsets[:-1]
    ids = torch.arange(counts.numel(), device=offsets.device)
    return torch.repeat_interleave(ids, counts, output_size=n_atoms)


def pair_distances(R: Tensor, pair_first: Tensor, pair_second: Tensor) -> Tensor:
    """|R[second] - R[first]| per pair (Angstrom), differentiable with respect to R."""
    return (R[pair_second] - R[pair_first]).norm(dim=-1)
