"""One huge molecule: inference and one training step at 1k / 10k / 100k atoms, time per atom and peak memory.

The system is a cube of H/C/N/O atoms on a jittered 2.15 Angstrom lattice (about 0.1 atoms per cubic Angstrom,
the density of organic matter with its hydrogens: ~115 neighbours within the 6.5 Angstrom cutoff, against ~17
in QM9), with charges summing to 0. Each size runs in its own process, so the peak RSS is that size's. Linear
scaling shows as a constant time per pair (pairs per atom grow with the size: the cube's surface atoms have
fewer neighbours). Both inference and the training step are timed after one warm-up call. Model: the default HIP-NN (60 features, 20
sensitivities, 2 interactions, 3 atom layers), float32, the compiled CPU kernels. Example:

    OMP_NUM_THREADS=1 python benchmarks/huge_molecules.py --sizes 1000 10000 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, pin_threads, table  # noqa: E402

SPACING_ANGSTROM = 2.15


def huge_molecule(n_atoms: int, seed: int = 0):
    """Z (n,), R (n, 3) Angstrom, charges (n,) e summing to 0: a jittered cubic lattice of H/C/N/O."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(n_atoms ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n_atoms]
    R = SPACING_ANGSTROM * grid + rng.uniform(-0.3, 0.3, (n_atoms, 3))
    Z = np.array([1, 6, 7, 8])[rng.integers(0, 4, n_atoms)]
    q = rng.normal(0, 0.2, n_atoms)
    return Z, R, q - q.mean()


def run_size(n_atoms: int, repeats: int) -> dict:
    import torch

    from fastdipole.data.batching import Batch
    from fastdipole.nn import DipoleModel
    from fastdipole.ops import neighbor_pairs
    from fastdipole.train.loss import batch_loss
    from fastdipole.train.optim import make_optimizer

    pin_threads(1)
    Z, R, q = huge_molecule(n_atoms)
    Zt, Rt = torch.from_numpy(Z), torch.from_numpy(R).float()
    offsets = torch.tensor([0, n_atoms])
    torch.manual_seed(0)
    model = DipoleModel.from_config(species=[1, 6, 7, 8])
    model.hipnn.memory_budget_bytes = 16 << 30  # measure, do not refuse
    pairs = neighbor_pairs(Rt, offsets, model.hipnn.dist_hard_max)
    n_pairs = int(pairs.first.shape[0])
    with torch.no_grad():
        model.eval()
        model(Zt, Rt, offsets)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            out = model(Zt, Rt, offsets)
        infer = (time.perf_counter() - t0) / repeats
    rss_infer = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model.train()
    opt = make_optimizer(model.parameters(), 1e-3)
    mu = torch.tensor([float(out.magnitude[0]) * 4.80320 + 0.1])
    batch = Batch(Zt, Rt, offsets, mu, torch.from_numpy(q).float(), torch.tensor([0]))

    def train_step():
        opt.zero_grad(set_to_none=True)
        terms = batch_loss(model(Zt, Rt, offsets), batch, "mulliken", 0.3, 0.96, 1.0)
        terms.total.backward()
        opt.step()

    train_step()  # warm-up: the first step also allocates (page-faults) the backward's buffers and Adam's state
    t0 = time.perf_counter()
    for _ in range(repeats):
        train_step()
    step = (time.perf_counter() - t0) / repeats
    return {"atoms": n_atoms, "pairs": n_pairs, "pairs_per_atom": n_pairs / n_atoms,
            "inference_s": infer, "inference_us_per_atom": 1e6 * infer / n_atoms,
            "train_step_s": step, "train_step_us_per_atom": 1e6 * step / n_atoms,
            "train_step_ns_per_pair": 1e9 * step / n_pairs,
            "peak_rss_inference_mib": rss_infer,
            "peak_rss_train_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_size(args.worker, args.repeats)))
        return
    header("one huge molecule: inference and a training step (default HIP-NN, float32, 1 thread)")
    rows = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--worker", str(n), "--repeats", str(args.repeats)]
        rows.append(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]))
    table(rows)
    first, last = rows[0], rows[-1]
    print(f"{last['atoms'] // first['atoms']}x the atoms: inference {last['inference_s'] / first['inference_s']:.1f}x "
          f"the time, training step {last['train_step_s'] / first['train_step_s']:.1f}x "
          f"(pairs {last['pairs'] / first['pairs']:.1f}x)")


if __name__ == "__main__":
    main()
