"""Small run of every fastdipole CUDA kernel, sized for compute-sanitizer (memcheck, racecheck, initcheck).

Runs each op forward and backward in float32 and float64 on a few real QM9 molecules (synthetic ones when
the QM9 file is absent) plus a 300-atom cluster that takes the cell-list path, checks the results against
the CPU kernels, then feeds malformed indices (which the CUDA kernels must survive without an out-of-bounds
access). Exits 1 on a wrong result; the sanitizer's own exit code reports memory errors and races.

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 \
        python tools/cuda_smoke.py
(no caching allocator: every tensor is its own cudaMalloc, so memcheck sees out-of-bounds accesses exactly.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from fastdipole.ops import kernels

REPO = Path(__file__).resolve().parents[1]
QM9_H5 = Path(os.environ.get("FASTDIPOLE_QM9_H5", REPO.parent / "shared" / "data" / "qm9" / "qm9_mulliken.h5"))
CUTOFF = 6.5  # Angstrom
CELL_LIST_MIN_ATOMS = 200  # the ~300-atom cluster below takes the cell list, the QM9 molecules brute force

def molecules(n: int) -> tuple[np.ndarray, np.ndarray]:
    """R (Angstrom) and offsets of n real QM9 molecules, or random 18-atom ones without the file."""
    try:
        import h5py

        with h5py.File(QM9_H5, "r") as f:
            off = f["offsets"][: n + 1]
            return f["R"][: off[-1]].astype(np.float64), off.astype(np.int64)
    except (ImportError, OSError):
        rng = np.random.default_rng(0)
        R = rng.normal(scale=1.5, size=(18 * n, 3))
        return R, np.arange(0, 18 * n + 1, 18, dtype=np.int64)


def batch() -> tuple[np.ndarray, np.ndarray]:
    R, off = molecules(24)
    parts, counts = [R], list(np.diff(off))
    side = 3
    big = []
    for m in range(side**3):  # 27 molecules ~7 Angstrom apart as one ~300-atom molecule
        x = R[off[m % 24] : off[m % 24 + 1]]
        big.append(x - x.mean(0) + 7.0 * np.array([m % side, (m // side) % side, m // side**2]))
    big = np.concatenate(big)
    big[3] = np.nan  # a non-finite atom in the cell-list molecule
    parts += [big, R[:0]]
    counts += [len(big), 0]
    return np.concatenate(parts), np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def check(ok: bool, what: str) -> None:
    if not ok:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


def close(a: torch.Tensor, b: torch.Tensor, dtype) -> bool:
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    scale = max(b.nan_to_num(0.0).abs().max().item() if b.numel() else 0.0, 1.0)
    return torch.allclose(a.cpu(), b, rtol=tol, atol=tol * scale, equal_nan=True)  # the NaN atom's dipole


def main() -> int:
    import fastdipole._C as ext
    import fastdipole.ops.ops  # noqa: F401

    check(torch.cuda.is_available(), "no CUDA device")
    check(ext.with_cuda, "fastdipole._C built without CUDA kernels")
    fd = torch.ops.fastdipole
    R_np, off_np = batch()
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        R, off = torch.from_numpy(R_np).to(dtype), torch.from_numpy(off_np)
        Rc, offc = R.cuda(), off.cuda()
        pairs_cpu = fd.neighbor_pairs(R, off, CUTOFF)
        pairs = fd.neighbor_pairs(Rc, offc, CUTOFF, CELL_LIST_MIN_ATOMS)
        for a, b in zip(pairs, pairs_cpu):
            check(torch.equal(a.cpu(), b), f"neighbor_pairs {dtype}")
        first, second, row = pairs_cpu
        r = (R[second] - R[first]).norm(dim=-1)
        # the QM9 shape (several feature chunks) with every kernel choice the CUDA tests run; one feature
        # chunk, a wide row, the block / tiled kernels with one chunk, and many sensitivities with few features
        # (beyond the lanes kernels)
        cases = [(20, 100, kernel) for kernel in kernels.ENVSUM_KERNELS]
        cases += [(20, 32, "auto"), (32, 300, "lanes/lanes"), (20, 32, "block/tiled"), (70, 5, "auto")]
        for S, F, kernel in cases:
            if not kernels.envsum_kernel_runs(kernel, dtype, S, F):  # the lanes backward in float64
                continue
            z = torch.randn((R.shape[0], F), generator=gen, dtype=dtype)
            mu = 1.0 / torch.linspace(1.0 / 5.0, 1.0 / 0.85, S, dtype=dtype)
            sigma = torch.full((S,), 2.0 * S * 0.85, dtype=dtype)
            args = (z, r, first, second, row, mu, sigma)
            env = fd.gaussian_envsum(*[t.cuda() for t in args], CUTOFF, kernel)
            check(close(env, fd.gaussian_envsum(*args, CUTOFF), dtype), f"envsum S={S} F={F} {dtype} [{kernel}]")
            grad_env = torch.randn(env.shape, generator=gen, dtype=dtype)
            got = fd.gaussian_envsum_backward(grad_env.cuda(), *[t.cuda() for t in args], CUTOFF, [True] * 4, kernel)
            want = fd.gaussian_envsum_backward(grad_env, *args, CUTOFF)
            for name, a, b in zip(("grad_z", "grad_r", "grad_mu", "grad_sigma"), got, want):
                check(close(a, b, dtype), f"envsum backward {name} S={S} F={F} {dtype} [{kernel}]")
        q = torch.randn(R.shape[0], generator=gen, dtype=dtype)
        check(close(fd.segmented_dipole(q.cuda(), Rc, offc), fd.segmented_dipole(q, R, off), dtype), "dipole")
        g = torch.randn((off.numel() - 1, 3), generator=gen, dtype=dtype)
        for a, b in zip(fd.segmented_dipole_backward(g.cuda(), q.cuda(), Rc, offc), fd.segmented_dipole_backward(g, q, R, off)):
            check(close(a, b, dtype), "dipole backward")

    # Malformed indices: skipped by the kernels, never read out of bounds.
    z = torch.randn((R.shape[0], 8), dtype=torch.float32).cuda()
    rr = r.float().cuda()
    f2, s2, ro2 = first.clone(), second.clone(), row.clone()
    s2[0], s2[1], f2[2], ro2[5] = 10**9, -3, f2[2] + 1, 10**12
    mu = torch.linspace(1.0, 5.0, 6).cuda()
    for kernel in kernels.ENVSUM_KERNELS:
        env = fd.gaussian_envsum(z, rr, f2.cuda(), s2.cuda(), ro2.cuda(), mu, mu, CUTOFF, kernel)
        fd.gaussian_envsum_backward(torch.ones_like(env), z, rr, f2.cuda(), s2.cuda(), ro2.cuda(), mu, mu, CUTOFF,
                                    [True] * 4, kernel)
    bad = torch.tensor([0, 5, 3, 10**9, -2]).cuda()
    dip = fd.segmented_dipole(z[:, 0].contiguous(), Rc.float(), bad)
    fd.segmented_dipole_backward(torch.ones_like(dip), z[:, 0].contiguous(), Rc.float(), bad)
    torch.cuda.synchronize()
    print(f"ok cuda_smoke: {R.shape[0]} atoms, {first.numel()} pairs, all ops forward+backward, float32+float64")
    return 0


if __name__ == "__main__":
    sys.exit(main())
