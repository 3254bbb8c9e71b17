"""The compiled ops inside torch.compile(fullgraph=True) and TorchScript, on real QM9 molecules."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

import fastdipole.ops as fops
from fastdipole.ops import reference

pytestmark = [
    pytest.mark.skipif(not fops.extension_available(), reason=f"extension not built: {fops.extension_error()}"),
    # torch >= 2.14 deprecates TorchScript (torch.jit.script warns); it stays tested while supported
    pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.jit"),
]

CUTOFF = 6.5  # Angstrom


@pytest.fixture(scope="module")
def qm9_batch(qm9_h5_path):
    with h5py.File(qm9_h5_path, "r") as f:
        offsets = torch.from_numpy(f["offsets"][:41].astype(np.int64))
        n = int(offsets[-1])
        R = torch.from_numpy(f["R"][:n]).double()
        q = torch.from_numpy(f["q_mulliken"][:n]).double()
    return R, q, offsets


def toy_dipoles(
    R: torch.Tensor, offsets: torch.Tensor, z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, cutoff: float = 6.5
) -> torch.Tensor:
    """Pairs -> distances -> environment -> 'charges' -> dipoles (e*A): every op in one graph."""
    pf, ps, ro = torch.ops.fastdipole.neighbor_pairs(R, offsets, cutoff)
    r = torch.linalg.vector_norm(R[ps] - R[pf], dim=-1)
    env = torch.ops.fastdipole.gaussian_envsum(z, r, pf, ps, ro, mu, sigma, cutoff)
    q = env.sum(dim=(1, 2))
    return torch.ops.fastdipole.segmented_dipole(q, R, offsets)


def inputs(R):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn((R.shape[0], 4), generator=gen, dtype=R.dtype)
    mu = 1.0 / torch.linspace(1.0 / 5.0, 1.0 / 0.85, 6, dtype=R.dtype)
    sigma = torch.full((6,), 2.0 * 6 * 0.85, dtype=R.dtype)
    return z, mu, sigma


def eager_reference(R, offsets, z, mu, sigma):
    pf, ps, ro = reference.neighbor_pairs(R, offsets, CUTOFF)
    r = fops.pair_distances(R, pf, ps)
    q = reference.gaussian_envsum(z, r, pf, ps, ro, mu, sigma, CUTOFF).sum(dim=(1, 2))
    return reference.segmented_dipole(q, R, offsets)


def test_torch_compile_fullgraph_forward_and_backward(qm9_batch):
    """About 10-15 s (compilation) on 2 cores."""
    import fastdipole.ops.ops  # noqa: F401  (fake impls + autograd)
    R, _, offsets = qm9_batch
    z, mu, sigma = inputs(R)
    compiled = torch.compile(toy_dipoles, fullgraph=True, dynamic=True)
    leaves = [R.clone().requires_grad_(True), z.clone().requires_grad_(True), sigma.clone().requires_grad_(True)]
    got = compiled(leaves[0], offsets, leaves[1], mu, leaves[2])
    ref_leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    want = eager_reference(ref_leaves[0], offsets, ref_leaves[1], mu, ref_leaves[2])
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)
    g = torch.autograd.grad(got.square().sum(), leaves)
    g_ref = torch.autograd.grad(want.square().sum(), ref_leaves)
    # the kernels drop terms with s <= 1e-10 (hippynn's floor); through the squared dipoles that shows
    # up at ~1e-7 relative in the sigma gradient
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_torchscript(qm9_batch):
    import fastdipole.ops.ops  # noqa: F401  (fake impls + autograd)
    R, q, offsets = qm9_batch
    z, mu, sigma = inputs(R)
    scripted = torch.jit.script(toy_dipoles)
    torch.testing.assert_close(scripted(R, offsets, z, mu, sigma), eager_reference(R, offsets, z, mu, sigma), rtol=1e-8, atol=1e-8)


def test_torch_compile_passes_the_kernel_choices_through(qm9_batch):
    """The CUDA kernel override arguments (str kernel, int cell_list_min_atoms) trace as constants, and autograd
    hands kernel to the backward op (the CPU ops check and ignore them)."""
    import fastdipole.ops.ops  # noqa: F401  (fake impls + autograd)
    R, _, offsets = qm9_batch
    z, mu, sigma = inputs(R)

    def dipoles(R, offsets, z, mu, sigma):
        pairs = fops.neighbor_pairs(R, offsets, CUTOFF, backend="compiled", cell_list_min_atoms=5)
        r = fops.pair_distances(R, pairs.first, pairs.second)
        env = fops.gaussian_envsum(z, r, pairs, mu, sigma, CUTOFF, backend="compiled", kernel="block/tiled")
        return fops.segmented_dipole(env.sum(dim=(1, 2)), R, offsets, backend="compiled")

    compiled = torch.compile(dipoles, fullgraph=True, dynamic=True)
    leaves = [R.clone().requires_grad_(True), z.clone().requires_grad_(True)]
    got = compiled(leaves[0], offsets, leaves[1], mu, sigma)
    ref_leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    want = dipoles(ref_leaves[0], offsets, ref_leaves[1], mu, sigma)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    for a, b in zip(torch.autograd.grad(got.square().sum(), leaves),
                    torch.autograd.grad(want.square().sum(), ref_leaves)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)
