"""CUDA kernels of every fastdipole op against the CPU kernels and the PyTorch reference, on real QM9 slices.

Skipped only when ``torch.cuda.is_available()`` is False; with a GPU present, a build without the CUDA kernels
fails here (it does not skip). Checked per op, float32 and float64:
  * neighbor_pairs: bit-identical to the CPU op, through the brute-force path, the cell-list path, and a mix
    (the op argument ``cell_list_min_atoms`` moves the threshold), edge cases, offset errors;
  * gaussian_envsum forward/backward: close to the CPU op for many (n_sens, n_features) shapes, including the
    small-F (one-hot) layer, large S and F beyond one thread block, with every kernel choice of
    ``fastdipole.ops.kernels.ENVSUM_KERNELS`` (a forced kernel that cannot run a shape must be refused);
    gradcheck and reference autograd;
  * segmented_dipole forward/backward: close to the CPU op;
  * determinism: repeated forward and backward runs, also on a side stream, give identical bits;
  * malformed indices never crash (the kernels bounds-check instead of validating, launchers.h).
"""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest
import torch

from fastdipole.ops import kernels

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

CUTOFF = 6.5  # Angstrom, hippynn's dist_hard_max for QM9
DEV = "cuda"


@pytest.fixture(scope="module")
def fd():
    """torch.ops.fastdipole with the autograd registrations loaded (fails, not skips, without a build)."""
    import fastdipole._C as ext  # noqa: F401
    import fastdipole.ops.ops  # noqa: F401  (register_autograd / register_fake)

    assert ext.with_cuda, "fastdipole._C was built without the CUDA kernels"
    return torch.ops.fastdipole


@pytest.fixture(scope="module")
def qm9(qm9_h5_path):
    """A contiguous real QM9 slice: R (float64 numpy, Angstrom), Mulliken q (e), CSR offsets."""
    with h5py.File(qm9_h5_path, "r") as f:
        off = f["offsets"][5000:5401]  # 400 molecules
        R = f["R"][off[0] : off[-1]].astype(np.float64)
        q = f["q_mulliken"][off[0] : off[-1]].astype(np.float64)
    return R, q, (off - off[0]).astype(np.int64)


def first_molecules(qm9, n):
    R, q, off = qm9
    return R[: off[n]], q[: off[n]], off[: n + 1]


def cluster(qm9, n_molecules, spacing=7.0):
    """One big 'molecule': n real QM9 molecules on a cubic grid `spacing` Angstrom apart (centred)."""
    R, _, off = qm9
    side = int(np.ceil(n_molecules ** (1 / 3)))
    parts = []
    for m in range(n_molecules):
        x = R[off[m] : off[m + 1]]
        shift = spacing * np.array([m % side, (m // side) % side, m // side**2], dtype=np.float64)
        parts.append(x - x.mean(0) + shift)
    return np.concatenate(parts)


def mixed_batch(qm9):
    """Small QM9 molecules, an empty molecule, a 1-atom molecule and one ~2,500-atom cluster."""
    R_small, _, off_small = first_molecules(qm9, 60)
    big = cluster(qm9, 170)
    lone = np.array([[0.5, -0.25, 3.0]])
    R = np.concatenate([R_small, big, lone, R_small[:40]])
    counts = [*np.diff(off_small), 0, len(big), 1, 0, 40]
    assert sum(counts) == len(R)
    return R, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def to(x, dtype, device=DEV):
    return torch.as_tensor(x).to(device=device, dtype=dtype)


def idx(x, device=DEV):
    return torch.as_tensor(x, dtype=torch.int64, device=device)


def assert_pairs_equal(got, want):
    for name, g, w in zip(("pair_first", "pair_second", "row_offsets"), got, want):
        assert g.dtype == torch.int64 and g.device.type == "cuda", name
        assert torch.equal(g.cpu(), w), f"{name} differs from the CPU op"


# ---------------------------------------------------------------------------------------------------------
# neighbor_pairs
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("min_atoms", [None, 1, 1_000_000_000], ids=["default", "all-cell-list", "all-brute"])
def test_neighbor_pairs_match_cpu(fd, qm9, dtype, min_atoms):
    R, off = mixed_batch(qm9)
    want = fd.neighbor_pairs(to(R, dtype, "cpu"), idx(off, "cpu"), CUTOFF)
    # the cluster takes the cell list by default
    assert np.diff(off).max() > kernels.default_cell_list_min_atoms() and want[0].numel() > 50_000
    extra = () if min_atoms is None else (min_atoms,)
    got = fd.neighbor_pairs(to(R, dtype), idx(off), CUTOFF, *extra)
    assert_pairs_equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_neighbor_pairs_small_batch_matches_reference(fd, qm9, dtype):
    from fastdipole.ops import reference

    R, _, off = first_molecules(qm9, 100)
    got = fd.neighbor_pairs(to(R, dtype), idx(off), CUTOFF)
    want = reference.neighbor_pairs(to(R, dtype, "cpu"), idx(off, "cpu"), CUTOFF)
    assert_pairs_equal(got, want)


@pytest.mark.parametrize("min_atoms", [1, 1_000_000_000], ids=["cell-list", "brute"])
def test_neighbor_pairs_edge_cases(fd, qm9, min_atoms):
    big = cluster(qm9, 30)
    big[5] = np.nan  # non-finite atoms get no pairs
    big[9, 1] = np.inf
    # two atoms exactly one cutoff apart (strict r < cutoff: no pair) and two just inside
    extra = np.array([[100.0, 0, 0], [100.0 + CUTOFF, 0, 0], [200.0, 0, 0], [200.0 + CUTOFF - 1e-4, 0, 0]])
    R = np.concatenate([big, extra])
    off = np.array([0, len(big), len(big) + 2, len(R)], dtype=np.int64)
    for dtype in (torch.float32, torch.float64):
        want = fd.neighbor_pairs(to(R, dtype, "cpu"), idx(off, "cpu"), CUTOFF)
        got = fd.neighbor_pairs(to(R, dtype), idx(off), CUTOFF, min_atoms)
        assert_pairs_equal(got, want)
        first = got[0].cpu()
        assert not ((first == 5) | (first == 9)).any()
        counts = (got[2][1:] - got[2][:-1]).cpu()
        n = len(big)
        assert counts[n : n + 4].tolist() == [0, 0, 1, 1]  # exactly one cutoff apart is out, just inside is in
    # no atoms at all, and no molecules at all
    for off0 in ([0], [0, 0, 0]):
        got = fd.neighbor_pairs(torch.zeros((0, 3), device=DEV), idx(off0), CUTOFF, min_atoms)
        assert got[0].numel() == 0 and got[1].numel() == 0 and got[2].tolist() == [0]


def test_neighbor_pairs_rejects_bad_input(fd):
    R = torch.zeros((4, 3), device=DEV)
    with pytest.raises(RuntimeError, match="non-decreasing"):
        fd.neighbor_pairs(R, idx([0, 3, 2, 4]), CUTOFF)
    with pytest.raises(RuntimeError, match=r"offsets\[-1\]"):
        fd.neighbor_pairs(R, idx([0, 2, 3]), CUTOFF)
    with pytest.raises(RuntimeError, match=r"offsets\[0\]"):
        fd.neighbor_pairs(R, idx([1, 4]), CUTOFF)
    with pytest.raises(RuntimeError, match="cutoff"):
        fd.neighbor_pairs(R, idx([0, 4]), -1.0)
    with pytest.raises(RuntimeError, match="CUDA tensor"):
        fd.neighbor_pairs(R, idx([0, 4], "cpu"), CUTOFF)
    with pytest.raises(RuntimeError, match="cell_list_min_atoms must be at least 1"):
        fd.neighbor_pairs(R, idx([0, 4]), CUTOFF, 0)


# ---------------------------------------------------------------------------------------------------------
# gaussian_envsum
# ---------------------------------------------------------------------------------------------------------
def envsum_problem(fd, qm9, n_molecules, S, F, dtype, seed=0):
    """(z, r, first, second, row_offsets, mu, sigma) on CPU, from real QM9 pairs and hippynn-style mu/sigma."""
    R, _, off = first_molecules(qm9, n_molecules)
    R = to(R, dtype, "cpu")
    first, second, row = fd.neighbor_pairs(R, idx(off, "cpu"), CUTOFF)
    r = (R[second] - R[first]).norm(dim=-1)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((R.shape[0], F), generator=g, dtype=dtype)
    mu = 1.0 / torch.linspace(1.0 / 5.0, 1.0 / 0.85, S, dtype=dtype)
    mu = mu * (1 + 0.1 * torch.rand(S, generator=g, dtype=dtype))
    sigma = 2.0 * S * 0.85 * (1 + 0.2 * torch.rand(S, generator=g, dtype=dtype))
    return z, r, first, second, row, mu, sigma


def on_cuda(tensors):
    return [t.to(DEV) for t in tensors]


def close(got, want, dtype, what):
    got = got.cpu()
    scale = want.abs().max().item() if want.numel() else 1.0
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * max(scale, 1.0), msg=lambda m: f"{what}: {m}")


SHAPES = [  # (n_molecules, S, F): the QM9 model, the one-hot first layer, large S and F, odd sizes
    (200, 20, 128),
    (100, 16, 60),
    (100, 32, 33),
    (200, 20, 5),
    (60, 64, 256),
    (40, 3, 1),
    (30, 256, 37),
    (30, 7, 600),
]


def refused(fd, kernel, args):
    """Checks that both envsum ops refuse `kernel` for this problem, with the plan's reason."""
    z, mu = args[0], args[5]
    with pytest.raises(kernels.KernelChoiceError) as reason:
        kernels.envsum_plan(z.dtype, mu.numel(), z.shape[1], kernel)
    why = str(reason.value).split(": ")[-1]
    cuda_args = on_cuda(args)
    with pytest.raises(RuntimeError, match=re.escape(f"cannot run this problem: {why}")):
        fd.gaussian_envsum(*cuda_args, CUTOFF, kernel)
    grad_env = torch.ones((z.shape[0], mu.numel(), z.shape[1]), dtype=z.dtype, device=DEV)
    with pytest.raises(RuntimeError, match=re.escape(f"cannot run this problem: {why}")):
        fd.gaussian_envsum_backward(grad_env, *cuda_args, CUTOFF, [True] * 4, kernel)


@pytest.mark.parametrize("kernel", kernels.ENVSUM_KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"M{m}-S{s}-F{f}" for m, s, f in SHAPES])
def test_gaussian_envsum_forward_and_backward_match_cpu(fd, qm9, dtype, shape, kernel):
    n_mol, S, F = shape
    args = envsum_problem(fd, qm9, n_mol, S, F, dtype)
    if not kernels.envsum_kernel_runs(kernel, dtype, S, F):  # lanes beyond 32 sensitivities or in float64
        refused(fd, kernel, args)
        return
    want_env = fd.gaussian_envsum(*args, CUTOFF)
    got_env = fd.gaussian_envsum(*on_cuda(args), CUTOFF, kernel)
    assert got_env.shape == want_env.shape and got_env.dtype == dtype
    assert want_env.abs().sum() > 0
    close(got_env, want_env, dtype, "env")

    grad_env = torch.randn(want_env.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    want = fd.gaussian_envsum_backward(grad_env, *args, CUTOFF)
    got = fd.gaussian_envsum_backward(grad_env.to(DEV), *on_cuda(args), CUTOFF, [True] * 4, kernel)
    for name, g, w in zip(("grad_z", "grad_r", "grad_mu", "grad_sigma"), got, want):
        assert g.shape == w.shape and g.dtype == dtype, name
        close(g, w, dtype, name)


def test_gaussian_envsum_gradcheck(fd, qm9):
    from fastdipole import ops

    z, r, first, second, row, mu, sigma = on_cuda(envsum_problem(fd, qm9, 3, 4, 3, torch.float64))
    pairs = ops.Pairs(first, second, row)

    def f(z, r, mu, sigma):
        return ops.gaussian_envsum(z, r, pairs, mu, sigma, CUTOFF, backend="compiled")

    inputs = [t.detach().requires_grad_(True) for t in (z, r, mu, sigma)]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_envsum_autograd_matches_reference(fd, qm9, dtype):
    from fastdipole import ops

    z, r, first, second, row, mu, sigma = on_cuda(envsum_problem(fd, qm9, 50, 20, 16, dtype))
    pairs = ops.Pairs(first, second, row)
    weight = torch.randn((z.shape[0], 20, 16), device=DEV, dtype=dtype, generator=torch.Generator(DEV).manual_seed(3))
    grads = {}
    for backend in ("compiled", "reference"):
        leaves = [t.detach().requires_grad_(True) for t in (z, r, mu, sigma)]
        env = ops.gaussian_envsum(leaves[0], leaves[1], pairs, leaves[2], leaves[3], CUTOFF, backend=backend)
        (env * weight).sum().backward()
        grads[backend] = (env.detach(), *[t.grad for t in leaves])
    tol = 1e-4 if dtype == torch.float32 else 1e-6  # the kernels drop s <= 1e-10, the reference does not
    for name, g, w in zip(("env", "z", "r", "mu", "sigma"), grads["compiled"], grads["reference"]):
        scale = max(w.abs().max().item(), 1.0)
        torch.testing.assert_close(g, w, rtol=tol, atol=tol * scale, msg=lambda m: f"{name}: {m}")


def test_gaussian_envsum_rejects_bad_input(fd, qm9):
    z, r, first, second, row, mu, sigma = on_cuda(envsum_problem(fd, qm9, 5, 4, 3, torch.float32))
    with pytest.raises(RuntimeError, match="dtype"):
        fd.gaussian_envsum(z.double(), r, first, second, row, mu, sigma, CUTOFF)
    with pytest.raises(RuntimeError, match="row_offsets"):
        fd.gaussian_envsum(z, r, first, second, row[:-1], mu, sigma, CUTOFF)
    with pytest.raises(RuntimeError, match="CUDA tensor"):
        fd.gaussian_envsum(z, r, first, second, row.cpu(), mu, sigma, CUTOFF)
    big = torch.ones(300, device=DEV)
    with pytest.raises(RuntimeError, match="sensitivities"):
        fd.gaussian_envsum(z, r, first, second, row, big, big, CUTOFF)


@pytest.mark.parametrize("kernel", kernels.ENVSUM_KERNELS)
def test_gaussian_envsum_malformed_indices_are_memory_safe(fd, qm9, kernel):
    """Inconsistent pairs are skipped, never read out of bounds (compute-sanitizer runs this too)."""
    z, r, first, second, row, mu, sigma = on_cuda(envsum_problem(fd, qm9, 5, 4, 3, torch.float32))
    clean = fd.gaussian_envsum(z, r, first, second, row, mu, sigma, CUTOFF, kernel)
    bad_second = second.clone()
    bad_second[0] = 10**9
    bad_second[1] = -5
    bad_first = first.clone()
    bad_first[2] = first[2] + 1
    bad_row = row.clone()
    bad_row[3] = 10**12
    for args in ((bad_first, bad_second, row), (first, second, bad_row)):
        env = fd.gaussian_envsum(z, r, *args, mu, sigma, CUTOFF, kernel)
        grads = fd.gaussian_envsum_backward(torch.ones_like(env), z, r, *args, mu, sigma, CUTOFF, [True] * 4, kernel)
        torch.cuda.synchronize()
        assert env.shape == clean.shape and torch.isfinite(env).all()
        assert all(torch.isfinite(g).all() for g in grads)
    # the skipped pairs (0, 1, 2) only change their own receiving atoms' rows
    env = fd.gaussian_envsum(z, r, bad_first, bad_second, row, mu, sigma, CUTOFF, kernel)
    untouched = torch.ones(z.shape[0], dtype=torch.bool, device=DEV)
    untouched[first[:3]] = False
    assert torch.equal(env[untouched], clean[untouched])


def test_gaussian_envsum_empty(fd):
    e = torch.zeros(0, dtype=torch.int64, device=DEV)
    mu = torch.tensor([1.0, 2.0], device=DEV)
    z = torch.randn((3, 4), device=DEV)
    env = fd.gaussian_envsum(z, z.new_zeros(0), e, e, idx([0, 0, 0, 0]), mu, mu, CUTOFF)
    assert env.shape == (3, 2, 4) and (env == 0).all()
    gz, gr, gmu, gsig = fd.gaussian_envsum_backward(torch.ones_like(env), z, z.new_zeros(0), e, e, idx([0, 0, 0, 0]),
                                                    mu, mu, CUTOFF)
    assert (gz == 0).all() and gr.numel() == 0 and (gmu == 0).all() and (gsig == 0).all()
    env = fd.gaussian_envsum(z.new_zeros((0, 4)), z.new_zeros(0), e, e, idx([0]), mu, mu, CUTOFF)
    assert env.shape == (0, 2, 4)


# ---------------------------------------------------------------------------------------------------------
# segmented_dipole
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_segmented_dipole_matches_cpu(fd, qm9, dtype):
    R, off = mixed_batch(qm9)  # includes empty molecules and a ~2,500-atom one
    q = np.random.default_rng(0).normal(size=len(R)) * 0.3
    args_cpu = (to(q, dtype, "cpu"), to(R, dtype, "cpu"), idx(off, "cpu"))
    args_gpu = on_cuda(args_cpu)
    close(fd.segmented_dipole(*args_gpu), fd.segmented_dipole(*args_cpu), dtype, "dipole")
    grad_mu = torch.randn((len(off) - 1, 3), dtype=dtype, generator=torch.Generator().manual_seed(2))
    want = fd.segmented_dipole_backward(grad_mu, *args_cpu)
    got = fd.segmented_dipole_backward(grad_mu.to(DEV), *args_gpu)
    close(got[0], want[0], dtype, "grad_q")
    close(got[1], want[1], dtype, "grad_R")


def test_segmented_dipole_real_charges_and_autograd(fd, qm9):
    from fastdipole import ops

    R, q, off = first_molecules(qm9, 300)
    Rt = to(R, torch.float64).requires_grad_(True)
    qt = to(q, torch.float64).requires_grad_(True)
    mu = ops.segmented_dipole(qt, Rt, idx(off), backend="compiled")
    ref = ops.segmented_dipole(qt, Rt, idx(off), backend="reference")
    torch.testing.assert_close(mu, ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda a, b: ops.segmented_dipole(a, b, idx(off[:6]), backend="compiled"),
        [qt[: off[5]].detach().requires_grad_(True), Rt[: off[5]].detach().requires_grad_(True)],
    )


def test_segmented_dipole_malformed_offsets_are_memory_safe(fd):
    q = torch.ones(10, device=DEV)
    R = torch.ones((10, 3), device=DEV)
    mu = fd.segmented_dipole(q, R, idx([0, 4, 2, 10**9, -7]))
    gq, gR = fd.segmented_dipole_backward(torch.ones_like(mu), q, R, idx([0, 4, 2, 10**9, -7]))
    torch.cuda.synchronize()
    assert mu.shape == (4, 3) and torch.isfinite(mu).all() and torch.isfinite(gq).all() and torch.isfinite(gR).all()


# ---------------------------------------------------------------------------------------------------------
# determinism (bitwise), also on a non-default stream
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", kernels.ENVSUM_KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_repeated_runs_are_bitwise_identical(fd, qm9, dtype, kernel):
    if not kernels.envsum_kernel_runs(kernel, dtype, 20, 64):
        pytest.skip(f"{kernel} cannot run float64 (refusal: test_gaussian_envsum_forward_and_backward_match_cpu)")
    R, off = mixed_batch(qm9)
    R, off = to(R, dtype), idx(off)

    def run_all():
        first, second, row = fd.neighbor_pairs(R, off, CUTOFF, 1000)  # the cluster takes the cell list
        r = (R[second] - R[first]).norm(dim=-1)
        g = torch.Generator(DEV).manual_seed(7)
        z = torch.randn((R.shape[0], 64), device=DEV, dtype=dtype, generator=g)
        mu = 1.0 / torch.linspace(1.0 / 5.0, 1.0 / 0.85, 20, device=DEV, dtype=dtype)
        sigma = torch.full((20,), 34.0, device=DEV, dtype=dtype)
        env = fd.gaussian_envsum(z, r, first, second, row, mu, sigma, CUTOFF, kernel)
        grad_env = torch.randn(env.shape, device=DEV, dtype=dtype, generator=g)
        grads = fd.gaussian_envsum_backward(grad_env, z, r, first, second, row, mu, sigma, CUTOFF, [True] * 4, kernel)
        q = torch.randn(R.shape[0], device=DEV, dtype=dtype, generator=g)
        dip = fd.segmented_dipole(q, R, off)
        dgrads = fd.segmented_dipole_backward(torch.ones_like(dip), q, R, off)
        return [first, second, row, env, *grads, dip, *dgrads]

    reference_run = [t.clone() for t in run_all()]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    for stream in (None, side, None):
        if stream is None:
            outs = run_all()
        else:
            with torch.cuda.stream(stream):
                outs = run_all()
            torch.cuda.synchronize()
        for k, (a, b) in enumerate(zip(outs, reference_run)):
            assert torch.equal(a, b), f"output {k} differs between identical runs"


# ---------------------------------------------------------------------------------------------------------
# schema / fake / autograd registration consistency on CUDA tensors
# ---------------------------------------------------------------------------------------------------------
def test_opcheck_on_cuda(fd, qm9):
    R, q, off = first_molecules(qm9, 4)
    R, q, off = to(R, torch.float64), to(q, torch.float64), idx(off)
    torch.library.opcheck(fd.neighbor_pairs.default, (R, off, CUTOFF))
    z, r, first, second, row, mu, sigma = on_cuda(envsum_problem(fd, qm9, 3, 4, 3, torch.float64))
    args = (z.requires_grad_(True), r.requires_grad_(True), first, second, row, mu.requires_grad_(True),
            sigma.requires_grad_(True), CUTOFF)
    torch.library.opcheck(fd.gaussian_envsum.default, args)
    torch.library.opcheck(fd.gaussian_envsum.default, (*args, "lanes/tiled"))
    grad_env = torch.randn((z.shape[0], 4, 3), dtype=torch.float64, device=DEV)
    back_args = (grad_env, *(a.detach() if isinstance(a, torch.Tensor) else a for a in args))
    torch.library.opcheck(fd.gaussian_envsum_backward.default, back_args)
    torch.library.opcheck(fd.gaussian_envsum_backward.default, (*back_args, [True] * 4, "block/tiled"))
    torch.library.opcheck(fd.segmented_dipole.default, (q.requires_grad_(True), R.requires_grad_(True), off))
    grad_mu = torch.randn((off.numel() - 1, 3), dtype=torch.float64, device=DEV)
    torch.library.opcheck(fd.segmented_dipole_backward.default,
                          (grad_mu, q.detach().requires_grad_(True), R.detach().requires_grad_(True), off))
