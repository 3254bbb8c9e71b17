"""Property tests (hypothesis) of every compiled op against its pure-PyTorch reference, float32 and float64: random
batches with empty batches, single atoms, molecules with no pair inside the cutoff and molecules of up to a few
thousand atoms; forward values, gradients, and bitwise-equal reruns.

CI runs the ``ci`` profile (a bounded number of examples); ``pytest --hypothesis-profile=long tests/test_ops_fuzz.py``
runs many more and larger ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastdipole.ops as fops

pytestmark = pytest.mark.skipif(not fops.extension_available(), reason=f"extension not built: {fops.extension_error()}")

settings.register_profile("ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")

CUTOFF = 6.5  # Angstrom
#: Largest molecule drawn (the long profile reaches it more often).
MAX_ATOMS = 2500


@st.composite
def batches(draw):
    """(R float64 (n, 3) Angstrom, offsets int64): molecules on jittered cubic grids (so no two atoms coincide),
    spacing 0.9-9 Angstrom (above the cutoff: molecules without pairs), sizes 1-40 or sometimes up to MAX_ATOMS."""
    n_mol = draw(st.integers(0, 5))
    sizes = [draw(st.one_of(st.integers(1, 40), st.integers(1, MAX_ATOMS))) if k == 0 else draw(st.integers(1, 40))
             for k in range(n_mol)]
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    parts = []
    for n in sizes:
        spacing = draw(st.sampled_from([0.9, 1.5, 3.0, 9.0]))
        side = int(np.ceil(n ** (1 / 3)))
        grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
        jitter = rng.uniform(-0.2, 0.2, size=(n, 3)) * spacing
        parts.append((grid * spacing + jitter + rng.normal(0, 50, size=3))[rng.permutation(n)])
    R = np.concatenate(parts) if parts else np.zeros((0, 3))
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return torch.from_numpy(R), torch.from_numpy(offsets), seed


def _pairs(R, offsets, backend):
    return fops.neighbor_pairs(R, offsets, CUTOFF, backend=backend)


@given(batches(), st.sampled_from([torch.float32, torch.float64]))
def test_neighbor_pairs_equal_the_reference(batch, dtype):
    R, offsets, _ = batch
    R = R.to(dtype)
    got, want = _pairs(R, offsets, "compiled"), _pairs(R, offsets, "reference")
    if dtype == torch.float64:
        for a, b in zip(got, want):
            assert torch.equal(a, b)
    else:  # float32 distances: pairs right at the cutoff may go either way; the rest are the same
        differ = set(zip(got.first.tolist(), got.second.tolist())) ^ set(zip(want.first.tolist(), want.second.tolist()))
        for i, j in differ:
            assert abs(float((R[j].double() - R[i].double()).norm()) - CUTOFF) < 1e-4, (i, j)
    again = _pairs(R, offsets, "compiled")
    assert all(torch.equal(a, b) for a, b in zip(got, again))  # bitwise-equal reruns


@given(batches(), st.sampled_from([torch.float32, torch.float64]), st.integers(1, 24), st.integers(1, 70))
def test_gaussian_envsum_and_its_gradients_equal_the_reference(batch, dtype, n_sens, n_features):
    R, offsets, seed = batch
    # the reference materialises (pairs, sens, features): keep the molecules within the first 600 atoms
    keep = int(np.searchsorted(offsets.numpy(), 600, side="right")) - 1
    offsets = offsets[: keep + 1]
    R = R[: int(offsets[-1])]
    gen = torch.Generator().manual_seed(seed)
    R = R.to(dtype)
    pairs = _pairs(R, offsets, "reference")
    z = torch.randn((R.shape[0], n_features), generator=gen, dtype=torch.float64).to(dtype)
    mu = (1.0 / torch.linspace(1 / 5.0, 1 / 0.85, n_sens, dtype=torch.float64)).to(dtype)
    sigma = torch.full((n_sens,), 2.0 * n_sens * 0.85, dtype=dtype)
    grad_env = torch.randn((R.shape[0], n_sens, n_features), generator=gen, dtype=torch.float64).to(dtype)
    results = {}
    for backend in ("compiled", "reference"):
        leaves = [t.clone().requires_grad_(True) for t in (z, R, mu, sigma)]
        r = fops.pair_distances(leaves[1], pairs.first, pairs.second)
        env = fops.gaussian_envsum(leaves[0], r, pairs, leaves[2], leaves[3], CUTOFF, backend=backend)
        grads = torch.autograd.grad(env, leaves, grad_env, allow_unused=True)
        results[backend] = (env.detach(), *[g if g is not None else torch.zeros_like(t) for g, t in zip(grads, leaves)])
    tol = 2e-4 if dtype == torch.float32 else 1e-7  # the kernels drop terms with s <= 1e-10, the reference keeps them
    for name, a, b in zip(("env", "z", "R", "mu", "sigma"), results["compiled"], results["reference"]):
        scale = max(float(b.abs().max()) if b.numel() else 0.0, 1.0)
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * scale, msg=lambda m: f"{name}: {m}")
    rerun = fops.gaussian_envsum(z, fops.pair_distances(R, pairs.first, pairs.second), pairs, mu, sigma, CUTOFF,
                                 backend="compiled")
    assert torch.equal(rerun, results["compiled"][0])


@given(batches(), st.sampled_from([torch.float32, torch.float64]))
def test_segmented_dipole_and_its_gradients_equal_the_reference(batch, dtype):
    R, offsets, seed = batch
    gen = torch.Generator().manual_seed(seed)
    R = R.to(dtype)
    q = torch.randn(R.shape[0], generator=gen, dtype=torch.float64).to(dtype)
    grad = torch.randn((offsets.numel() - 1, 3), generator=gen, dtype=torch.float64).to(dtype)
    results = {}
    for backend in ("compiled", "reference"):
        q_, R_ = q.clone().requires_grad_(True), R.clone().requires_grad_(True)
        mu = fops.segmented_dipole(q_, R_, offsets, backend=backend)
        gq, gR = torch.autograd.grad(mu, (q_, R_), grad, allow_unused=True)
        results[backend] = (mu.detach(), gq if gq is not None else torch.zeros_like(q),
                            gR if gR is not None else torch.zeros_like(R))
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for a, b in zip(results["compiled"], results["reference"]):
        scale = max(float(b.abs().max()) if b.numel() else 0.0, 1.0)
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * scale)
    assert torch.equal(fops.segmented_dipole(q, R, offsets, backend="compiled"), results["compiled"][0])
