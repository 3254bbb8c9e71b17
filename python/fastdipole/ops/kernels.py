"""Which CUDA kernels run: the plan of ``csrc/cuda/kernel_plan.h``, as Python sees it.

Users need nothing here: every op picks its kernels from the problem (dtype, n_sens, n_features), and the
defaults are the fastest kernels measured. Tests and benchmarks force others through op arguments, never the
environment: ``gaussian_envsum(..., kernel="block/tiled")`` (``"<forward>/<backward>"``, either half may be
``auto``) and ``neighbor_pairs(..., cell_list_min_atoms=1)``. A forced kernel that cannot run a problem (the
lanes kernels for more than 32 sensitivities, the lanes backward in float64) is refused with the reason, never
swapped for another one. :func:`envsum_plan` asks the C++ plan function itself (``fastdipole._C``), so tests
here and on a GPU agree with the launchers by construction.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._loader import extension_available, extension_error

AUTO = "auto"

#: The envsum kernel choices the correctness checks run (CUDA tests, the CPU emulator of the CUDA kernels,
#: tools/cuda_smoke.py): the default, then every kernel forced: the lanes kernels also where ``auto`` picks
#: others (fewer than 16 features), the lanes forward also in float64 (where the lanes backward is refused),
#: the block forward and the tiled backward where ``auto`` picks lanes.
ENVSUM_KERNELS: tuple[str, ...] = (AUTO, "lanes/lanes", "lanes/tiled", "block/tiled")

#: Alternatives the GPU benchmarks time beside the default, by row label: forward and backward kernel choices.
FORWARD_ALTERNATIVES: dict[str, str] = {"block": "block/auto"}
BACKWARD_ALTERNATIVES: dict[str, str] = {"tiled": "auto/tiled"}


class KernelChoiceError(ValueError):
    """A forced kernel that cannot run the problem (the message says why)."""


class EnvsumPlan(NamedTuple):
    """The envsum kernels of one problem, with the compile-time widths the launchers instantiate (0: not run)."""

    forward: str  # "lanes" | "block"
    backward: str  # "lanes" | "tiled"
    lanes_slots: int  # register slots per lane for the sensitivities (8, 16, 20, 24, 32)
    forward_columns: int  # lanes forward: 32-feature columns per lane (1, 2, 4)
    backward_columns: int  # lanes backward: 32-feature columns per lane (1, 2)
    block_group: int  # block forward: sensitivities per thread (4, 8, 16, 32)
    featsum_columns: int  # featsum pass: 32-feature columns per lane (1, 2)


def _ext():
    if not extension_available():
        raise RuntimeError(f"fastdipole's C++ extension is not available: {extension_error()}")
    from .. import _C

    return _C


def envsum_plan(dtype: torch.dtype, n_sens: int, n_features: int, kernel: str = AUTO) -> EnvsumPlan:
    """The CUDA envsum kernels for a problem (float32 or float64), ``kernel`` honoured.

    Raises KernelChoiceError when the forced kernel cannot run it, ValueError for an unknown ``kernel``."""
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the envsum kernels take float32 or float64, got {dtype}")
    plan = _ext().envsum_plan(torch.finfo(dtype).bits // 8, int(n_sens), int(n_features), kernel)
    if plan["error"]:
        raise KernelChoiceError(f"kernel={kernel!r} cannot run n_sens={n_sens}, n_features={n_features}, {dtype}: "
                                f"{plan['error']}")
    return EnvsumPlan(**{name: plan[name] for name in EnvsumPlan._fields})


def envsum_kernel_runs(kernel: str, dtype: torch.dtype, n_sens: int, n_features: int) -> bool:
    """Whether ``kernel`` can run this problem (False: the ops refuse it)."""
    try:
        envsum_plan(dtype, n_sens, n_features, kernel)
    except KernelChoiceError:
        return False
    return True


def default_cell_list_min_atoms() -> int:
    """Molecules of at least this many atoms take the CUDA neighbour list's cell list (the op's default)."""
    return int(_ext().default_cell_list_min_atoms)
