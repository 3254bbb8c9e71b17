"""fastdipole ops: one entry point per op, dispatching to the C++/CUDA kernels or the references.

Backend choice, per call (``backend=``) or globally (env ``FASTDIPOLE_KERNELS``):
  * ``"auto"`` (default): the compiled ``torch.ops.fastdipole`` kernels when the extension is built,
    else the pure-PyTorch references;
  * ``"kernels"``: the compiled kernels (error if the extension is missing);
  * ``"reference"``: the pure-PyTorch references in :mod:`fastdipole.ops.reference`.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from torch import Tensor

from . import reference
from ._loader import extension_available, extension_error

_BACKENDS = ("auto", "kernels", "reference")


class Pairs(NamedTuple):
    """Directed neighbour pairs sorted by receiving atom, with their CSR row offsets (all int64)."""

    first: Tensor
    second: Tensor
    row_offsets: Tensor


def resolve_backend(backend: str | None = None) -> str:
    """'kernels' or 'reference' for an explicit argument, the env variable, or auto-detection."""
    choice = backend or os.environ.get("FASTDIPOLE_KERNELS", "auto")
    if choice not in _BACKENDS:
        raise ValueError(f"unknown fastdipole kernel backend {choice!r}; choose one of {_BACKENDS}")
    if choice == "auto":
        return "kernels" if extension_available() else "reference"
    if choice == "kernels" and not extension_available():
        raise RuntimeError(f"fastdipole kernels requested but the C++ extension is not available: {extension_error()}")
    return choice


def _kernels():
    from . import _custom  # registers fake impls and autograd on first use

    return _custom


def neighbor_pairs(R: Tensor, offsets: Tensor, cutoff: float, backend: str | None = None) -> Pairs:
    """Directed pairs (i, j), i != j, same molecule, ``|R_j - R_i| < cutoff`` (Angstrom)."""
    if resolve_backend(backend) == "kernels":
        return Pairs(*_kernels().neighbor_pairs(R, offsets, float(cutoff)))
    return Pairs(*reference.neighbor_pairs(R, offsets, float(cutoff)))


def gaussian_envsum(
    z: Tensor,
    r: Tensor,
    pairs: Pairs,
    mu: Tensor,
    sigma: Tensor,
    cutoff: float,
    backend: str | None = None,
) -> Tensor:
    """Environment tensor (N, S, F) of the HIP-NN interaction, sensitivities computed from ``r``."""
    mu = mu.reshape(-1)
    sigma = sigma.reshape(-1)
    fn = _kernels().gaussian_envsum if resolve_backend(backend) == "kernels" else reference.gaussian_envsum
    return fn(z, r, pairs.first, pairs.second, pairs.row_offsets, mu, sigma, float(cutoff))


def segmented_dipole(q: Tensor, R: Tensor, offsets: Tensor, backend: str | None = None) -> Tensor:
    """Dipole vectors (n_molecules, 3) in e*Angstrom: ``mu[m] = sum_{i in m} q_i R_i``."""
    q = q.reshape(-1)
    if resolve_backend(backend) == "kernels":
        return _kernels().segmented_dipole(q, R, offsets)
    return reference.segmented_dipole(q, R, offsets)


__all__ = [
    "Pairs",
    "resolve_backend",
    "neighbor_pairs",
    "gaussian_envsum",
    "segmented_dipole",
    "extension_available",
    "reference",
]
