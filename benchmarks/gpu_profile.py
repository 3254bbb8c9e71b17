"""Where the GPU time goes: per-kernel CUDA times (torch.profiler) of the envsum forward and backward (each
kernel choice) and of one training step, eager and with CUDA graphs. A diagnostic to direct kernel work, not
a benchmark of record.

    python benchmarks/gpu_profile.py [--qm9 PATH]
    python benchmarks/gpu_profile.py --ncu-target    # each envsum kernel choice once, nothing else: the
                                                     # program Nsight Compute profiles (tools/gpu_session.sh)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu  # noqa: E402  (the benchmark's data and step builders)

from fastdipole.ops import kernels  # noqa: E402


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
                        help="run each envsum kernel choice once (no torch.profiler), for ncu to profile")
    args = parser.parse_args()
    import fastdipole.ops.ops  # noqa: F401

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
    # every envsum kernel choice: the defaults, then each other kernel forced (fastdipole.ops.kernels)
    backward_choices = {"default": "auto", **kernels.BACKWARD_ALTERNATIVES}
    forward_choices = {"default": "auto", **kernels.FORWARD_ALTERNATIVES}

    def backward(kernel):
        return lambda: fd.gaussian_envsum_backward(g, z, r, first, second, row, mu, sigma, gpu.CUTOFF, [True] * 4,
                                                   kernel)

    def forward(kernel):
        return lambda: fd.gaussian_envsum(z, r, first, second, row, mu, sigma, gpu.CUTOFF, kernel)

    if args.ncu_target:
        for op, choices in ((backward, backward_choices), (forward, forward_choices)):
            for kernel in choices.values():
                op(kernel)()  # once: ncu replays each kernel with caches flushed, so a warm-up run adds nothing
        torch.cuda.synchronize()
        print(f"ncu target: {R.shape[0]} atoms, {first.numel()} pairs, S={S} F={F}, float32")
        return 0
    problem = f"{R.shape[0]} atoms, {first.numel()} pairs, S={S} F={F}"
    for label, kernel in backward_choices.items():
        show(f"gaussian_envsum_backward [{label}], {problem}", backward(kernel))
    for label, kernel in forward_choices.items():
        show(f"gaussian_envsum forward [{label}], {problem}", forward(kernel))

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
