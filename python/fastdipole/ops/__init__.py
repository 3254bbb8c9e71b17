"""fastdipole ops: one public function per op (:mod:`fastdipole.ops.ops`), each running the compiled C++/CUDA
kernel or its pure-PyTorch reference (:mod:`fastdipole.ops.reference`) as ``backend`` says
(``"auto"``, ``"compiled"``, ``"reference"``), and the batch helpers of :mod:`fastdipole.ops.geometry`.
:mod:`fastdipole.ops.kernels` shows which CUDA kernels an op runs (the plan) and lists the choices tests force.
"""

from . import reference
from ._loader import extension_available, extension_error
from .geometry import estimate_pairs, molecule_index, pair_distances
from .ops import BACKENDS, Pairs, gaussian_envsum, neighbor_pairs, resolve_backend, segmented_dipole

__all__ = [
    "BACKENDS",
    "Pairs",
    "extension_available",
    "estimate_pairs",
    "extension_error",
    "gaussian_envsum",
    "molecule_index",
    "neighbor_pairs",
    "pair_distances",
    "reference",
    "resolve_backend",
    "segmented_dipole",
]
