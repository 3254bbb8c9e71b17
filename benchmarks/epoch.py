"""Wall time of one full QM9 training epoch (standard split: 110,000 training molecules, batch 128).

Forward + backward + Adam over every training batch with the paper loss (Mulliken charges), one thread
unless ``--threads`` says otherwise,
data loading included, validation excluded. Reports seconds per epoch and ms per step.

    OMP_NUM_THREADS=1 python benchmarks/epoch.py [--features 60 128] [--max-steps N] [--threads 2]

``--max-steps`` times only the first N steps and extrapolates to the full epoch (marked as such).
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import QM9_H5, header, pin_threads, table

from fastdipole import ops
from fastdipole.data import BatchLoader, load_h5, make_split
from fastdipole.nn import DipoleModel
from fastdipole.train import make_optimizer
from fastdipole.train.loss import paper_loss
from fastdipole.units import DEBYE_PER_E_ANGSTROM


def run_epoch(dataset, indices, nf, batch_size, max_steps, backend):
    torch.manual_seed(0)
    model = DipoleModel.from_config(n_features=nf, backend=backend)
    opt = make_optimizer(model.parameters(), lr=1e-3)  # what `fastdipole train` uses
    loader = BatchLoader(dataset, indices, batch_size, shuffle=True, seed=0)
    n_total = len(loader)
    steps = 0
    t0 = time.perf_counter()
    for batch in loader:
        opt.zero_grad(set_to_none=True)
        out = model(batch.Z, batch.R, batch.offsets)
        terms = paper_loss(out.charges, batch.charges, out.magnitude, batch.mu_debye / DEBYE_PER_E_ANGSTROM)
        terms.total.backward()
        opt.step()
        steps += 1
        if max_steps and steps >= max_steps:
            break
    elapsed = time.perf_counter() - t0
    return elapsed * n_total / steps, 1e3 * elapsed / steps, steps, n_total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, nargs="+", default=[60, 128])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--max-steps", type=int, default=0, help="time only N steps and extrapolate (0 = full)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both cores of this box: 2)")
    args = parser.parse_args()
    pin_threads(args.threads)
    header(f"One full QM9 training epoch ({args.threads} thread(s))")
    dataset = load_h5(QM9_H5)
    split = make_split(dataset.n_molecules, protocol="qm9", seed=0)
    backend = ops.resolve_backend("auto")
    rows = []
    for nf in args.features:
        seconds, ms_step, steps, n_total = run_epoch(dataset, split["train"], nf, args.batch, args.max_steps, backend)
        rows.append(
            {
                "nf": nf,
                "backend": backend,
                "train molecules": len(split["train"]),
                "steps timed": f"{steps}/{n_total}",
                "ms/step": ms_step,
                "s/epoch": seconds,
                "extrapolated": steps < n_total,
            }
        )
        print(rows[-1], flush=True)
    print()
    table(rows)


if __name__ == "__main__":
    main()
