"""The pure-PyTorch reference ops against independent numpy / hippynn computations, with gradchecks."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from fastdipole.ops import reference


def _brute_force_pairs(R: np.ndarray, offsets: np.ndarray, cutoff: float):
    pairs = []
    for m in range(len(offsets) - 1):
        for i in range(offsets[m], offsets[m + 1]):
            for j in range(offsets[m], offsets[m + 1]):
                if i != j and np.linalg.norm(R[j] - R[i]) < cutoff:
                    pairs.append((i, j))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


@pytest.fixture(scope="module")
def qm9_batch(qm9_h5_path):
    with h5py.File(qm9_h5_path, "r") as f:
        off = f["offsets"][200:231]
        R = f["R"][off[0] : off[-1]].astype(np.float64)
    return torch.from_numpy(R), torch.from_numpy(off - off[0])


@pytest.mark.parametrize("cutoff", [1.5, 3.0, 6.5])
def test_neighbor_pairs_match_brute_force_on_qm9(qm9_batch, cutoff):
    R, off = qm9_batch
    first, second, row = reference.neighbor_pairs(R, off, cutoff)
    expected = _brute_force_pairs(R.numpy(), off.numpy(), cutoff)
    np.testing.assert_array_equal(torch.stack([first, second], 1).numpy(), expected)
    np.testing.assert_array_equal(row.numpy(), np.searchsorted(expected[:, 0], np.arange(len(R) + 1)))


def test_neighbor_pairs_edge_cases():
    R = torch.tensor([[0.0, 0, 0], [10.0, 0, 0], [0.5, 0, 0]])
    # molecule 0: one atom; molecule 1: two atoms 9.5 A apart (no pair); molecule 2: empty
    first, second, row = reference.neighbor_pairs(R, torch.tensor([0, 1, 3, 3]), 6.5)
    assert first.numel() == 0 and second.numel() == 0
    assert row.tolist() == [0, 0, 0, 0]
    first, second, row = reference.neighbor_pairs(R.new_zeros((0, 3)), torch.tensor([0]), 6.5)
    assert first.numel() == 0 and row.tolist() == [0]


def test_sensitivities_match_hippynn_module():
    hip = pytest.importorskip("hippynn.layers.hiplayers.sensitivity")
    module = hip.InverseSensitivityModule(20, 0.85, 5.0, 6.5).double()
    with torch.no_grad():
        module.mu.mul_(1 + 0.2 * torch.rand_like(module.mu))
        module.sigma.mul_(1 + 0.2 * torch.rand_like(module.sigma))
    r = torch.linspace(0.7, 7.0, 300, dtype=torch.float64)
    expected = module(r, warn_low_distances=False)
    torch.testing.assert_close(reference.sensitivities(r, module.mu, module.sigma, 6.5), expected, rtol=1e-12, atol=0)
    assert (reference.sensitivities(r[r > 6.5], module.mu, module.sigma, 6.5) == 0).all()


def test_envsum_matches_explicit_loop_and_gradcheck(qm9_batch):
    R, off = qm9_batch
    first, second, row = reference.neighbor_pairs(R, off, 6.5)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(len(R), 4, dtype=torch.float64, generator=g)
    sens = torch.rand(len(first), 3, dtype=torch.float64, generator=g)
    env = reference.envsum(sens, z, first, second)
    loop = torch.zeros_like(env)
    for p in range(len(first)):
        loop[first[p]] += sens[p][:, None] * z[second[p]][None, :]
    torch.testing.assert_close(env, loop)
    # gradcheck on a small slice: pairs of the first 3 molecules
    n = int(off[3])
    keep = first < n
    zs, ss = z[:n].clone().requires_grad_(), sens[keep].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda s, x: reference.envsum(s, x, first[keep], second[keep]), (ss, zs))


def test_gaussian_envsum_gradcheck_in_r_mu_sigma():
    g = torch.Generator().manual_seed(1)
    R = torch.rand(7, 3, dtype=torch.float64, generator=g) * 4
    off = torch.tensor([0, 4, 7])
    first, second, row = reference.neighbor_pairs(R, off, 6.5)
    r = (R[second] - R[first]).norm(dim=-1).requires_grad_()
    z = torch.randn(7, 3, dtype=torch.float64, generator=g, requires_grad=True)
    mu = torch.tensor([1.0, 1.7, 3.0], dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([3.0, 5.0, 2.0], dtype=torch.float64, requires_grad=True)

    def fn(z, r, mu, sigma):
        return reference.gaussian_envsum(z, r, first, second, row, mu, sigma, 6.5)

    assert torch.autograd.gradcheck(fn, (z, r, mu, sigma))
    assert torch.autograd.gradgradcheck(fn, (z, r, mu, sigma))


def test_segmented_dipole_values_and_gradcheck():
    g = torch.Generator().manual_seed(2)
    R = torch.randn(9, 3, dtype=torch.float64, generator=g, requires_grad=True)
    q = torch.randn(9, dtype=torch.float64, generator=g, requires_grad=True)
    off = torch.tensor([0, 1, 1, 5, 9])  # single atom, empty, two normal molecules
    mu = reference.segmented_dipole(q, R, off)
    assert mu.shape == (4, 3)
    torch.testing.assert_close(mu[1], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(mu[2], (q[1:5, None] * R[1:5]).sum(0))
    assert torch.autograd.gradcheck(lambda q, R: reference.segmented_dipole(q, R, off), (q, R))
