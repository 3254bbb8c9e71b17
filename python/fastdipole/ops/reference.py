"""Pure-PyTorch reference implementations of every fastdipole op.

They are the ground truth the C++/CUDA kernels are tested against, and the ``backend="reference"`` path of
:mod:`fastdipole.ops`. They favour clarity over speed but stay vectorised. Each takes the arguments of its
``torch.ops.fastdipole`` schema: flat (unpadded) batches described by CSR ``offsets`` (molecule m owns atoms
``offsets[m]:offsets[m+1]``).

Units: positions and distances in Angstrom, charges in e, dipoles in e*Angstrom.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .geometry import molecule_index


def neighbor_pairs(R: Tensor, offsets: Tensor, cutoff: float) -> tuple[Tensor, Tensor, Tensor]:
    """All ordered pairs (i, j), i != j, of the same molecule with |R_j - R_i| < cutoff.

    Returns ``(pair_first, pair_second, row_offsets)``: int64 pair indices sorted by the
    receiving atom ``pair_first`` and then by ``pair_second``; ``row_offsets`` (n_atoms + 1,)
    is the CSR of pairs per receiving atom (pairs of atom i are ``row_offsets[i]:row_offsets[i+1]``).
    Tests every pair of atoms of each molecule: O(sum of n_m^2) time and memory, fine for small molecules.
    Written without host reads of tensor values (no ``.item()``, ``max()`` or ``if`` on data), so
    ``torch.export`` can trace it with any number of atoms and pairs.
    """
    n_atoms = R.shape[0]
    R = R.detach()
    arange = torch.arange(n_atoms, device=R.device)
    mol = molecule_index(offsets, n_atoms)
    per_atom = (offsets[1:] - offsets[:-1])[mol]  # candidate partners of each atom: its molecule's atoms
    block_start = torch.cumsum(per_atom, 0) - per_atom
    first = torch.repeat_interleave(arange, per_atom)  # atom i, once per atom of its molecule, ascending
    local = torch.arange(first.shape[0], device=R.device) - block_start[first]
    second = offsets[mol[first]] + local  # ... paired with that molecule's atoms in ascending order
    diff = R[second] - R[first]
    keep = (first != second) & ((diff * diff).sum(-1) < cutoff * cutoff)  # NaN positions pair with nothing
    first, second = first[keep], second[keep]
    row_counts = torch.zeros(n_atoms, dtype=torch.long, device=R.device).index_add(0, first, torch.ones_like(first))
    row_offsets = torch.cat([row_counts.new_zeros(1), torch.cumsum(row_counts, 0)])
    return first, second, row_offsets


def sensitivities(r: Tensor, mu: Tensor, sigma: Tensor, cutoff: float) -> Tensor:
    """Inverse-distance Gaussian sensitivities with the cos^2 cutoff, shape (n_pairs, n_sens).

    ``s_v(r) = exp(-0.5 * sigma_v^2 * (1/r - 1/mu_v)^2) * cos^2(pi r / (2 cutoff))`` for r < cutoff,
    0 beyond. ``mu`` and ``sigma`` have shape (n_sens,) or (1, n_sens) (hippynn's shape).
    """
    mu = mu.reshape(1, -1)
    sigma = sigma.reshape(1, -1)
    r = r.reshape(-1, 1)
    gauss = torch.exp(-0.5 * sigma**2 * (1.0 / r - 1.0 / mu) ** 2)
    cut = torch.cos(math.pi * r / (2.0 * cutoff)) ** 2 * (r <= cutoff).to(r.dtype)
    return gauss * cut


def envsum(sens: Tensor, z: Tensor, pair_first: Tensor, pair_second: Tensor) -> Tensor:
    """Environment sum ``env[i, v, f] = sum_{p: first(p)=i} sens[p, v] * z[second(p), f]``.

    Shape (n_atoms, n_sens, n_features); differentiable in ``sens`` and ``z`` by autograd.
    """
    n_atoms = z.shape[0]
    terms = sens[:, :, None] * z[pair_second][:, None, :]
    env = z.new_zeros((n_atoms, sens.shape[1], z.shape[1]))
    return env.index_add(0, pair_first, terms)


def gaussian_envsum(
    z: Tensor,
    r: Tensor,
    pair_first: Tensor,
    pair_second: Tensor,
    row_offsets: Tensor,
    mu: Tensor,
    sigma: Tensor,
    cutoff: float,
) -> Tensor:
    """Sensitivities and envsum in one call: the interaction's environment tensor (N, S, F).

    Same signature as the fused kernel op; ``row_offsets`` is unused here (kept for parity).
    """
    del row_offsets
    return envsum(sensitivities(r, mu, sigma, cutoff), z, pair_first, pair_second)


def segmented_dipole(q: Tensor, R: Tensor, offsets: Tensor) -> Tensor:
    """Dipole vectors ``mu[m] = sum_{i in m} q_i R_i`` (e*Angstrom), shape (n_molecules, 3).

    Absolute coordinates, as hippynn does: origin-dependent if a molecule's charges do not sum to 0.
    """
    n_mol = offsets.numel() - 1
    mol = molecule_index(offsets, R.shape[0])
    out = R.new_zeros((n_mol, 3))
    return out.index_add(0, mol, q.reshape(-1, 1) * R)
