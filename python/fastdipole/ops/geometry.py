"""Index and distance helpers of flat molecule batches (CSR ``offsets``: molecule m owns atoms
``offsets[m]:offsets[m+1]``), used by the models and the references alike. ``molecule_index`` and
``pair_distances`` are pure PyTorch without host synchronisation (CUDA graphs); ``estimate_pairs`` works on the host."""

from __future__ import annotations

import math

import numpy as np
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


def estimate_pairs(R: Tensor, offsets: Tensor, cutoff: float) -> tuple[int, int]:
    """(estimated neighbour pairs within ``cutoff``, sum over molecules of n_m^2), from each molecule's atom count
    and bounding box, on the host: the pair list's size before anything is allocated. A molecule's atoms are
    taken as spread evenly over its box (grown to the cutoff in each direction), so each atom has about
    ``density * 4/3 pi cutoff^3`` neighbours, at most n_m - 1."""
    off = offsets.detach().cpu().numpy().astype(np.int64)
    counts = np.diff(off)
    if counts.sum() == 0:
        return 0, 0
    pos = R.detach().cpu().numpy().astype(np.float64)
    full = counts > 0
    lo = np.minimum.reduceat(pos, off[:-1][full], axis=0)
    hi = np.maximum.reduceat(pos, off[:-1][full], axis=0)
    volume = np.prod(np.maximum(hi - lo, cutoff), axis=1)
    n = counts[full].astype(np.float64)
    neighbours = np.minimum(n - 1, n / volume * (4.0 / 3.0) * math.pi * cutoff**3)
    return int(np.sum(n * neighbours)), int(np.sum(n * n))
