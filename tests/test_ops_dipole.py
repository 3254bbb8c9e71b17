"""torch.ops.fastdipole.segmented_dipole (+ its backward op) against the pure-PyTorch reference."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

import fastdipole.ops as fops
from fastdipole.ops import reference

pytestmark = pytest.mark.skipif(not fops.extension_available(), reason=f"extension not built: {fops.extension_error()}")


def ops():
    import fastdipole.ops.ops  # noqa: F401  (fake impls + autograd)
    return torch.ops.fastdipole


def random_batch(seed: int, sizes, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    n = int(sum(sizes))
    q = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)
    R = (torch.randn((n, 3), generator=gen, dtype=torch.float64) * 3).to(dtype)
    offsets = torch.tensor([0, *np.cumsum(sizes).tolist()], dtype=torch.int64)
    return q, R, offsets


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_forward_and_backward_match_reference(dtype, tol):
    q, R, offsets = random_batch(0, [3, 0, 1, 17, 40, 2], dtype)
    grad_mu = torch.randn((offsets.numel() - 1, 3), dtype=torch.float64).to(dtype)
    results = []
    for fn in (ops().segmented_dipole, reference.segmented_dipole):
        leaves = [q.clone().requires_grad_(True), R.clone().requires_grad_(True)]
        mu = fn(leaves[0], leaves[1], offsets)
        results.append((mu.detach(), *torch.autograd.grad(mu, leaves, grad_mu)))
    for a, b in zip(*results):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    assert not results[0][0][1].any()  # the empty molecule has a zero dipole


def test_gradcheck_and_gradgradcheck():
    q, R, offsets = random_batch(1, [4, 1, 3])
    fn = lambda q, R: ops().segmented_dipole(q, R, offsets)  # noqa: E731
    inputs = (q.requires_grad_(True), R.requires_grad_(True))
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_zero_molecules_and_atoms():
    mu = ops().segmented_dipole(torch.zeros(0), torch.zeros((0, 3)), torch.tensor([0]))
    assert mu.shape == (0, 3)
    mu = ops().segmented_dipole(torch.zeros(0), torch.zeros((0, 3)), torch.tensor([0, 0]))
    assert mu.shape == (1, 3) and not mu.any()


def test_deterministic_with_two_threads():
    q, R, offsets = random_batch(2, [18] * 3000, torch.float32)
    one = ops().segmented_dipole(q, R, offsets)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert torch.equal(one, ops().segmented_dipole(q, R, offsets))
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(one, reference.segmented_dipole(q, R, offsets))  # same summation order as index_add


def test_real_qm9_mulliken_dipoles(qm9_h5_path):
    """Mulliken-charge dipoles (e*A) of 300 QM9 molecules equal the reference's."""
    with h5py.File(qm9_h5_path, "r") as f:
        offsets = torch.from_numpy(f["offsets"][:301].astype(np.int64))
        n = int(offsets[-1])
        R = torch.from_numpy(f["R"][:n])
        q = torch.from_numpy(f["q_mulliken"][:n])
    got = fops.segmented_dipole(q, R, offsets, backend="compiled")
    torch.testing.assert_close(got, fops.segmented_dipole(q, R, offsets, backend="reference"), rtol=1e-5, atol=1e-5)
    assert got.abs().max() > 0.01


def test_bad_inputs_raise_clear_errors():
    q, R, offsets = random_batch(3, [2, 3])
    op = ops().segmented_dipole
    with pytest.raises(RuntimeError, match="q must have shape"):
        op(q[:-1], R, offsets)
    with pytest.raises(RuntimeError, match="dtype"):
        op(q.float(), R, offsets)
    with pytest.raises(RuntimeError, match="must equal the number of"):
        op(q, R, torch.tensor([0, 2, 4]))
    with pytest.raises(RuntimeError, match="grad_mu"):
        ops().segmented_dipole_backward(torch.zeros((3, 3), dtype=torch.float64), q, R, offsets)


def test_opcheck():
    q, R, offsets = random_batch(4, [2, 5, 0, 1])
    torch.library.opcheck(ops().segmented_dipole.default, (q.requires_grad_(True), R.requires_grad_(True), offsets))
    grad_mu = torch.randn((4, 3), dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(ops().segmented_dipole_backward.default, (grad_mu, q.detach().requires_grad_(True), R.detach().requires_grad_(True), offsets))
