"""Where one fastdipole training step spends its time: torch.profiler table, self CPU time per op.

    OMP_NUM_THREADS=1 python benchmarks/profile_step.py [--features 60] [--steps 5]
"""

from __future__ import annotations

import argparse

from torch.profiler import ProfilerActivity, profile

from _common import pin_threads, qm9_batch
from train_step import fastdipole_step

from fastdipole.units import DEBYE_PER_E_ANGSTROM


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=60)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    pin_threads(1)
    Z, R, off, mu_debye, q = qm9_batch(128)
    step = fastdipole_step(args.features, Z, R, off, mu_debye / DEBYE_PER_E_ANGSTROM, q, "compiled")
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(f"{args.steps} steps, nf={args.features}; divide the times by {args.steps} for one step")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
