"""Where the GPU time goes: per-kernel CUDA times (torch.profiler) of the envsum forward and backward (each
kernel choice) and of one training step, eager and with CUDA graphs. A diagnostic to direct kernel work, not
a benchmark of record.

    python benchmarks/gpu_profile.py [--qm9 PATH]
    python benchmarks/gpu_profile.py --ncu-target    # each envsum kernel choice twice, nothing else: the
                                                     # program Nsight Compute profiles (tools/gpu_session.sh)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu  # noqa: E402  (the benchmark's data and step builders)


def show(title: str, fn, repeats: int = 5, rows: int = 12) -> None:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
    events = prof.key_averages()
    cpu_total = sum(e.self_cpu_time_total for e in events) / repeats / 1e3
    cuda_total = sum(getattr(e, "self_device_time_total", 0.0) for e in events) / repeats / 1e3
    print(f"\n## {title}: per call {cuda_total:.3f} ms of kernels, {cpu_total:.3f} ms of CPU time\n")
    print(events.table(sort_by="self_device_time_total", row_limit=rows, max_name_column_width=70))
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qm9", type=Path, default=gpu.DEFAULT_QM9)
    parser.add_argument("--ncu-target", action="store_true",
                        help="run each envsum kernel choice twice (no torch.profiler), for ncu to profile")
    args = parser.parse_args()
    import fastdipole.ops._custom  # noqa: F401

    fd = torch.ops.fastdipole
    _, R_np, off_np, _, _ = gpu.qm9_batch(args.qm9, 1024, seed=2)
    R = torch.tensor(R_np, dtype=torch.float32, device="cuda")
    off = torch.tensor(off_np, device="cuda")
    first, second, row = fd.neighbor_pairs(R, off, gpu.CUTOFF)
    r = (R[second] - R[first]).norm(dim=-1)
    S, F = 20, 128
    z = torch.randn((R.shape[0], F), device="cuda")
    mu = 1.0 / torch.linspace(1.0 / 5.0, 1.0 / 0.85, S, device="cuda")
    sigma = torch.full((S,), 2.0 * S * 0.85, device="cuda")
    g = torch.randn((R.shape[0], S, F), device="cuda")
    # (FASTDIPOLE_CUDA_ENVSUM_BACKWARD, _FEATSUM, FASTDIPOLE_CUDA_LANES_BACKWARD_COLUMNS, FASTDIPOLE_CUDA_LANES_DS)
    backward_choices = (("lanes", "sorted", "2", "warp-sum"), ("lanes", "atomic", "2", "warp-sum"),
                        ("lanes", "sorted", "4", "warp-sum"), ("lanes", "sorted", "2", "items"),
                        ("lanes", "sorted", "4", "items"), ("lanes", "atomic", "4", "items"),
                        ("tiled", "sorted", "2", "warp-sum"))
    forward_choices = (("lanes", "0"), ("lanes", "1"), ("block", "0"))  # (kernel, FASTDIPOLE_CUDA_LANES_PIPELINE)
    if args.ncu_target:
        for kernel, featsum, columns, ds in backward_choices:
            os.environ.update(FASTDIPOLE_CUDA_ENVSUM_BACKWARD=kernel, FASTDIPOLE_CUDA_ENVSUM_FEATSUM=featsum,
                              FASTDIPOLE_CUDA_LANES_BACKWARD_COLUMNS=columns, FASTDIPOLE_CUDA_LANES_DS=ds)
            for _ in range(2):
                fd.gaussian_envsum_backward(g, z, r, first, second, row, mu, sigma, gpu.CUTOFF)
        for kernel, pipeline in forward_choices:
            os.environ.update(FASTDIPOLE_CUDA_ENVSUM_FORWARD=kernel, FASTDIPOLE_CUDA_LANES_PIPELINE=pipeline)
            for _ in range(2):
                fd.gaussian_envsum(z, r, first, second, row, mu, sigma, gpu.CUTOFF)
        torch.cuda.synchronize()
        print(f"ncu target: {R.shape[0]} atoms, {first.numel()} pairs, S={S} F={F}, float32")
        return 0
    for kernel, featsum, columns, ds in backward_choices:
        os.environ.update(FASTDIPOLE_CUDA_ENVSUM_BACKWARD=kernel, FASTDIPOLE_CUDA_ENVSUM_FEATSUM=featsum,
                          FASTDIPOLE_CUDA_LANES_BACKWARD_COLUMNS=columns, FASTDIPOLE_CUDA_LANES_DS=ds)
        show(f"gaussian_envsum_backward [{kernel}, {featsum} featsum, {columns} columns, {ds} dS], {R.shape[0]} atoms, "
             f"{first.numel()} pairs, S={S} F={F}",
             lambda: fd.gaussian_envsum_backward(g, z, r, first, second, row, mu, sigma, gpu.CUTOFF))
    for name in ("FASTDIPOLE_CUDA_ENVSUM_BACKWARD", "FASTDIPOLE_CUDA_ENVSUM_FEATSUM",
                 "FASTDIPOLE_CUDA_LANES_BACKWARD_COLUMNS", "FASTDIPOLE_CUDA_LANES_DS"):
        os.environ.pop(name)
    for kernel, pipeline in forward_choices:
        os.environ.update(FASTDIPOLE_CUDA_ENVSUM_FORWARD=kernel, FASTDIPOLE_CUDA_LANES_PIPELINE=pipeline)
        show(f"gaussian_envsum forward [{kernel}{', pipelined' if pipeline == '1' else ''}]",
             lambda: fd.gaussian_envsum(z, r, first, second, row, mu, sigma, gpu.CUTOFF))
    os.environ.pop("FASTDIPOLE_CUDA_ENVSUM_FORWARD")
    os.environ.pop("FASTDIPOLE_CUDA_LANES_PIPELINE")

    from fastdipole.units import DEBYE_PER_E_ANGSTROM

    Z_np, R_np, off_np, mu_np, q_np = gpu.qm9_batch(args.qm9, 128, seed=3)
    batch = (torch.tensor(Z_np, device="cuda"), torch.tensor(R_np, dtype=torch.float32, device="cuda"),
             torch.tensor(off_np, device="cuda"),
             torch.tensor(mu_np / DEBYE_PER_E_ANGSTROM, dtype=torch.float32, device="cuda"),
             torch.tensor(q_np, dtype=torch.float32, device="cuda"))
    show("training step nf=128, eager, no input checks", gpu.fastdipole_step(128, batch, "cuda", validate=False))
    show("training step nf=128, CUDA graphs", gpu.fastdipole_graphed_step(128, batch, "cuda"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
