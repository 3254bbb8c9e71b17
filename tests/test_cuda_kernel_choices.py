"""The plan that chooses the CUDA kernels (csrc/cuda/kernel_plan.h, through fastdipole.ops.kernels), and its
override as op arguments. No GPU needed: the plan is plain C++ in every build; the CPU ops check the
arguments' syntax and ignore them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastdipole.ops as fops
from fastdipole.ops import kernels, reference

pytestmark = pytest.mark.skipif(not fops.extension_available(), reason=f"extension not built: {fops.extension_error()}")

REPO = Path(__file__).resolve().parents[1]
F32, F64 = torch.float32, torch.float64


@pytest.mark.parametrize("dtype", [F32, F64])
def test_auto_takes_the_lanes_kernels_for_at_most_32_sensitivities_and_16_features(dtype):
    plan = kernels.envsum_plan(dtype, 20, 128)
    assert plan.forward == "lanes"
    assert plan.backward == ("lanes" if dtype == F32 else "tiled")  # the lanes backward: float32 only
    assert plan.lanes_slots == 20 and plan.block_group == 0
    for n_sens, n_features in ((20, 15), (20, 5), (5, 1)):  # few features (the one-hot layer)
        plan = kernels.envsum_plan(dtype, n_sens, n_features)
        assert (plan.forward, plan.backward) == ("block", "tiled"), (n_sens, n_features)
        assert plan.lanes_slots == 0
    for n_sens in (33, 64, 256):  # beyond the lanes kernels' registers
        plan = kernels.envsum_plan(dtype, n_sens, 128)
        assert (plan.forward, plan.backward) == ("block", "tiled"), n_sens
    plan = kernels.envsum_plan(dtype, 32, 16)  # both limits included
    assert plan.forward == "lanes" and plan.backward == ("lanes" if dtype == F32 else "tiled")


def test_lanes_widths_follow_the_problem():
    # sensitivity slots: the smallest of 8, 16, 20, 24, 32 that holds n_sens
    for n_sens, slots in ((1, 8), (8, 8), (9, 16), (16, 16), (17, 20), (20, 20), (21, 24), (24, 24), (25, 32),
                          (32, 32)):
        assert kernels.envsum_plan(F32, n_sens, 128).lanes_slots == slots, n_sens
    # float32 columns: forward up to 4 (F > 64), backward and featsum up to 2 (F > 32); float64: 1
    for n_features, fwd, bwd in ((16, 1, 1), (32, 1, 1), (33, 2, 2), (64, 2, 2), (65, 4, 2), (600, 4, 2)):
        plan = kernels.envsum_plan(F32, 20, n_features)
        assert (plan.forward_columns, plan.backward_columns, plan.featsum_columns) == (fwd, bwd, bwd), n_features
        plan = kernels.envsum_plan(F64, 20, n_features)
        assert (plan.forward_columns, plan.backward_columns, plan.featsum_columns) == (1, 0, 1), n_features


def test_block_forward_groups_shrink_while_the_tasks_fill_fewer_than_128_threads():
    assert kernels.envsum_plan(F32, 64, 128).block_group == 32  # 128 features x 2 groups
    assert kernels.envsum_plan(F32, 256, 37).block_group == 32
    assert kernels.envsum_plan(F32, 20, 60, "block/auto").block_group == 8  # 60 x 1, 60 x 2 < 128; 60 x 3
    assert kernels.envsum_plan(F32, 20, 5).block_group == 4  # the smallest group
    assert kernels.envsum_plan(F32, 3, 1).block_group == 4


@pytest.mark.parametrize("kernel", kernels.ENVSUM_KERNELS[1:])
@pytest.mark.parametrize("n_features", [1, 5, 128])
def test_forced_kernels_are_honoured_where_they_can_run(kernel, n_features):
    forward, backward = kernel.split("/")
    plan = kernels.envsum_plan(F32, 20, n_features, kernel)
    assert (plan.forward, plan.backward) == (forward, backward)
    half = kernels.envsum_plan(F32, 20, n_features, f"{forward}/auto")
    assert half.forward == forward and half.backward == kernels.envsum_plan(F32, 20, n_features).backward
    assert kernels.envsum_plan(F64, 64, n_features, "block/tiled")[:2] == ("block", "tiled")


def test_impossible_choices_are_refused_with_the_reason():
    with pytest.raises(kernels.KernelChoiceError, match="float32 only"):
        kernels.envsum_plan(F64, 20, 128, "auto/lanes")
    with pytest.raises(kernels.KernelChoiceError, match="n_sens <= 32, got 33"):
        kernels.envsum_plan(F32, 33, 128, "lanes/auto")
    with pytest.raises(kernels.KernelChoiceError, match="lanes backward needs n_sens <= 32"):
        kernels.envsum_plan(F32, 64, 128, "block/lanes")
    with pytest.raises(kernels.KernelChoiceError, match="at most 256 sensitivities"):
        kernels.envsum_plan(F32, 257, 128)
    assert kernels.envsum_kernel_runs("lanes/lanes", F32, 32, 1)
    assert not kernels.envsum_kernel_runs("lanes/lanes", F64, 20, 128)
    assert kernels.envsum_kernel_runs("lanes/tiled", F64, 20, 1)  # what the checks force in float64
    for bad in ("lanes", "warp/auto", "lanes/segments", "auto/", "", "lanes/lanes/x"):
        with pytest.raises(ValueError, match="kernel choice must be"):
            kernels.envsum_plan(F32, 20, 128, bad)


def test_every_forceable_kernel_is_in_the_checked_choices():
    assert kernels.ENVSUM_KERNELS[0] == "auto"
    # both forward kernels are forced by runnable choices in both dtypes, both backward kernels in float32 (the
    # lanes backward is float32 only)
    for dtype, backward_kernels in ((F32, {"lanes", "tiled"}), (F64, {"tiled"})):
        runnable = [k for k in kernels.ENVSUM_KERNELS[1:] if kernels.envsum_kernel_runs(k, dtype, 20, 5)]
        assert {k.split("/")[0] for k in runnable} == {"lanes", "block"}, dtype
        assert {k.split("/")[1] for k in runnable} == backward_kernels, dtype
    for kernel in [*kernels.FORWARD_ALTERNATIVES.values(), *kernels.BACKWARD_ALTERNATIVES.values()]:
        kernels.envsum_plan(F32, 20, 128, kernel)  # a valid choice


def test_no_kernel_is_chosen_from_the_environment():
    found = subprocess.run(["grep", "-rn", "getenv", str(REPO / "csrc")], capture_output=True, text=True).stdout
    assert found == "", found


# ---- the op arguments on the CPU: checked, then ignored --------------------------------------------------
def _problem():
    g = torch.Generator().manual_seed(0)
    R = torch.randn((12, 3), generator=g, dtype=F64) * 1.5
    offsets = torch.tensor([0, 5, 12])
    pf, ps, ro = reference.neighbor_pairs(R, offsets, 6.5)
    r = (R[ps] - R[pf]).norm(dim=-1)
    z = torch.randn((12, 4), generator=g, dtype=F64)
    mu = 1.0 / torch.linspace(1.0 / 5.0, 1.0 / 0.85, 6, dtype=F64)
    sigma = torch.full((6,), 2.0 * 6 * 0.85, dtype=F64)
    return R, offsets, (z, r, pf, ps, ro, mu, sigma, 6.5)


def test_cpu_ops_accept_and_ignore_kernel_choices():
    import fastdipole.ops.ops  # noqa: F401  (autograd)

    fd = torch.ops.fastdipole
    R, offsets, args = _problem()
    want = fd.gaussian_envsum(*args)
    grad_env = torch.ones_like(want)
    want_grads = fd.gaussian_envsum_backward(grad_env, *args)
    for kernel in (*kernels.ENVSUM_KERNELS, "auto/tiled"):  # even lanes/lanes in float64: the CPU has no lanes
        assert torch.equal(fd.gaussian_envsum(*args, kernel), want)
        grads = fd.gaussian_envsum_backward(grad_env, *args, [True] * 4, kernel)
        assert all(torch.equal(a, b) for a, b in zip(grads, want_grads))
    pairs = fd.neighbor_pairs(R, offsets, 6.5)
    assert kernels.default_cell_list_min_atoms() == 2048
    for min_atoms in (1, 7, 10**9):
        assert all(torch.equal(a, b) for a, b in zip(fd.neighbor_pairs(R, offsets, 6.5, min_atoms), pairs))


def test_cpu_ops_reject_malformed_choices():
    fd = torch.ops.fastdipole
    R, offsets, args = _problem()
    with pytest.raises(RuntimeError, match=r'fastdipole.gaussian_envsum: kernel choice must be .*got "warp"'):
        fd.gaussian_envsum(*args, "warp")
    with pytest.raises(RuntimeError, match="fastdipole.gaussian_envsum_backward: kernel choice must be"):
        fd.gaussian_envsum_backward(torch.ones((12, 6, 4), dtype=F64), *args, [True] * 4, "lanes/segments")
    with pytest.raises(RuntimeError, match="cell_list_min_atoms must be at least 1"):
        fd.neighbor_pairs(R, offsets, 6.5, 0)


class _RecordOps(TorchDispatchMode):
    """Records the fastdipole ops dispatched inside it, with their arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "fastdipole":
            self.calls.append((func.__name__, args))
        return func(*args, **(kwargs or {}))


def test_public_functions_pass_the_choice_to_forward_and_backward():
    R, offsets, (z, r, pf, ps, ro, mu, sigma, cutoff) = _problem()
    with _RecordOps() as seen:
        pairs = fops.neighbor_pairs(R, offsets, cutoff, backend="compiled", cell_list_min_atoms=3)
        leaves = [t.clone().requires_grad_(True) for t in (z, r, mu, sigma)]
        env = fops.gaussian_envsum(leaves[0], leaves[1], pairs, leaves[2], leaves[3], cutoff, backend="compiled",
                                   kernel="block/tiled")
        env.square().sum().backward()
    names = [name for name, _ in seen.calls]
    assert names == ["neighbor_pairs.default", "gaussian_envsum.default", "gaussian_envsum_backward.default"], names
    assert seen.calls[0][1][-1] == 3
    assert seen.calls[1][1][-1] == "block/tiled" and seen.calls[2][1][-1] == "block/tiled"  # the backward's too
    ref = [t.clone().requires_grad_(True) for t in (z, r, mu, sigma)]
    want = fops.gaussian_envsum(ref[0], ref[1], pairs, ref[2], ref[3], cutoff, backend="compiled")
    want.square().sum().backward()
    assert torch.equal(env, want)
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(leaves, ref))


def test_opcheck_with_kernel_choices():
    import fastdipole.ops.ops  # noqa: F401  (fakes + autograd)

    fd = torch.ops.fastdipole
    R, offsets, (z, r, pf, ps, ro, mu, sigma, cutoff) = _problem()
    torch.library.opcheck(fd.neighbor_pairs.default, (R, offsets, cutoff, 3))
    args = (z.requires_grad_(True), r.requires_grad_(True), pf, ps, ro, mu.requires_grad_(True),
            sigma.requires_grad_(True), cutoff, "lanes/tiled")
    torch.library.opcheck(fd.gaussian_envsum.default, args)
    grad_env = torch.randn((z.shape[0], 6, 4), dtype=F64)
    back = (grad_env, *(a.detach() if isinstance(a, torch.Tensor) else a for a in args[:8]), [True, False, True, True],
            "block/lanes")
    torch.library.opcheck(fd.gaussian_envsum_backward.default, back)
