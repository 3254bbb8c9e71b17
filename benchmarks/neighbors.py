"""Neighbour-list speed: fastdipole's kernel vs vesin vs a naive batched-cdist torch version.

Cases (cutoff 6.5 Angstrom, full list, i != j):
  * a batch of real QM9 molecules (default 1024, drawn with a fixed seed), one call for all of them;
  * single random molecules at liquid-organic density (0.1 atoms / Angstrom^3) of 200 ... 100,000 atoms.
vesin is timed two ways on the batch: all molecules spread far apart in one non-periodic system, and one
call per molecule. Prints a markdown table (median ms over repeats, ratio ours / anchor) and the scaling
exponent d log(t) / d log(N) over the single-molecule sizes.

    OMP_NUM_THREADS=1 python benchmarks/neighbors.py [--qm9 PATH] [--sizes 200,2000,20000,100000]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from functools import partial

from _common import QM9_H5 as DEFAULT_QM9
from _common import median_ms as _median_ms

# Each case stops after ~20 s so the slow anchors (naive torch at 20k atoms) don't dominate the run.
median_ms = partial(_median_ms, warmup=1, budget_s=20.0, min_runs=3)
DENSITY_PER_A3 = 0.1


def load_qm9_batch(path: Path, n_molecules: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """R (N, 3) float32 Angstrom and CSR offsets of n_molecules QM9 molecules drawn with `seed`."""
    import h5py

    with h5py.File(path, "r") as f:
        offsets = f["offsets"][:]
        ids = np.sort(np.random.default_rng(seed).choice(len(offsets) - 1, size=n_molecules, replace=False))
        R_all = f["R"][:]
    parts = [R_all[offsets[m] : offsets[m + 1]] for m in ids]
    counts = np.array([len(p) for p in parts])
    new_offsets = np.concatenate([[0], np.cumsum(counts)])
    return torch.from_numpy(np.concatenate(parts)), torch.from_numpy(new_offsets.astype(np.int64))


def random_molecule(n_atoms: int, seed: int) -> torch.Tensor:
    """n_atoms uniform in a cube at DENSITY_PER_A3, in random order (float32, Angstrom)."""
    side = (n_atoms / DENSITY_PER_A3) ** (1.0 / 3.0)
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((n_atoms, 3), generator=gen) * side


def ours(R: torch.Tensor, offsets: torch.Tensor, cutoff: float):
    return torch.ops.fastdipole.neighbor_pairs(R, offsets, cutoff)


def naive_torch(R: torch.Tensor, offsets: torch.Tensor, cutoff: float):
    """Padded per-molecule cdist, mask, nonzero (the obvious PyTorch version)."""
    counts = offsets[1:] - offsets[:-1]
    n_mol, n_max = counts.numel(), int(counts.max())
    mol = torch.repeat_interleave(torch.arange(n_mol), counts)
    local = torch.arange(R.shape[0]) - offsets[mol]
    padded = R.new_full((n_mol, n_max, 3), 1e6)  # padding far away from everything
    padded[mol, local] = R
    dist = torch.cdist(padded, padded)
    valid = torch.zeros((n_mol, n_max), dtype=torch.bool)
    valid[mol, local] = True
    mask = (dist < cutoff) & valid[:, :, None] & valid[:, None, :]
    mask.diagonal(dim1=1, dim2=2).fill_(False)
    m, i, j = mask.nonzero(as_tuple=True)
    return offsets[m] + i, offsets[m] + j


def spread_molecules(R: np.ndarray, offsets: np.ndarray, cutoff: float) -> np.ndarray:
    """Molecules translated onto a cubic grid, 2 cutoffs apart beyond their extent (no cross pairs)."""
    n_mol = len(offsets) - 1
    side = int(math.ceil(n_mol ** (1.0 / 3.0)))
    extent = max(float(np.ptp(R[offsets[m] : offsets[m + 1]], axis=0).max()) for m in range(n_mol) if offsets[m + 1] > offsets[m])
    spacing = extent + 2.0 * cutoff
    out = R.astype(np.float64).copy()
    for m in range(n_mol):
        a, b = offsets[m], offsets[m + 1]
        cell = np.array([m % side, (m // side) % side, m // (side * side)], dtype=np.float64)
        out[a:b] += cell * spacing - R[a:b].min(axis=0)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qm9", type=Path, default=Path(os.environ.get("FASTDIPOLE_QM9_H5", DEFAULT_QM9)))
    parser.add_argument("--n-molecules", type=int, default=1024)
    parser.add_argument("--sizes", default="200,2000,20000,100000", help="atoms of the single random molecules")
    parser.add_argument("--cutoff", type=float, default=6.5, help="Angstrom")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-naive-above", type=int, default=20000, help="skip naive torch above this many atoms")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    import fastdipole.ops  # noqa: F401  (loads torch.ops.fastdipole)

    if not fastdipole.ops.extension_available():
        print(f"fastdipole extension not built: {fastdipole.ops.extension_error()}", file=sys.stderr)
        return 1
    try:
        from vesin import NeighborList
    except ImportError:
        NeighborList = None

    cutoff = args.cutoff
    rows: list[tuple[str, int, int, dict[str, float]]] = []

    def vesin_system(points: np.ndarray):
        nl = NeighborList(cutoff=cutoff, full_list=True)
        return lambda: nl.compute(points=points, box=np.zeros((3, 3)), periodic=False, quantities="ij")

    if args.qm9.exists():
        R, offsets = load_qm9_batch(args.qm9, args.n_molecules, args.seed)
        n_pairs = ours(R, offsets, cutoff)[0].numel()
        times = {"ours": median_ms(lambda: ours(R, offsets, cutoff), args.repeats)}
        times["naive torch"] = median_ms(lambda: naive_torch(R, offsets, cutoff), args.repeats)
        if NeighborList is not None:
            spread = spread_molecules(R.numpy(), offsets.numpy(), cutoff)
            fn = vesin_system(spread)
            assert len(fn()[0]) == n_pairs, "vesin and fastdipole disagree on the number of pairs"
            times["vesin (one box)"] = median_ms(fn, args.repeats)
            mols = [R.numpy()[a:b].astype(np.float64) for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
            nl = NeighborList(cutoff=cutoff, full_list=True)
            box = np.zeros((3, 3))
            per_mol = lambda: [nl.compute(points=p, box=box, periodic=False, quantities="ij") for p in mols]  # noqa: E731
            times["vesin (per molecule)"] = median_ms(per_mol, max(3, args.repeats // 3))
        rows.append((f"{args.n_molecules} QM9 molecules", R.shape[0], n_pairs, times))
    else:
        print(f"(QM9 file {args.qm9} not found: batch case skipped)", file=sys.stderr)

    sizes = [int(s) for s in args.sizes.split(",") if s]
    for n in sizes:
        R = random_molecule(n, args.seed)
        offsets = torch.tensor([0, n])
        n_pairs = ours(R, offsets, cutoff)[0].numel()
        reps = args.repeats if n <= 20000 else max(3, args.repeats // 6)
        times = {"ours": median_ms(lambda: ours(R, offsets, cutoff), reps)}
        if NeighborList is not None:
            fn = vesin_system(R.numpy().astype(np.float64))
            times["vesin (one box)"] = median_ms(fn, reps)
        if n <= args.no_naive_above:
            times["naive torch"] = median_ms(lambda: naive_torch(R, offsets, cutoff), max(3, reps // 3))
        rows.append((f"random molecule, {DENSITY_PER_A3} atoms/A^3", n, n_pairs, times))

    methods = ["ours", "vesin (one box)", "vesin (per molecule)", "naive torch"]
    print()
    print("command: OMP_NUM_THREADS=%s python %s" % (os.environ.get("OMP_NUM_THREADS", "?"), " ".join(sys.argv)))
    print(f"torch {torch.__version__}, {args.threads} thread(s), cutoff {cutoff} A, median of up to {args.repeats} runs\n")
    header = "| case | atoms | pairs | " + " | ".join(f"{m} ms" for m in methods) + " | ours / vesin (one box) | ours / naive torch |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, n, n_pairs, times in rows:
        cells = [f"{times[m]:.3f}" if m in times else "-" for m in methods]
        ratio_v = f"{times['ours'] / times['vesin (one box)']:.3f}" if "vesin (one box)" in times else "-"
        ratio_n = f"{times['ours'] / times['naive torch']:.3f}" if "naive torch" in times else "-"
        print(f"| {name} | {n} | {n_pairs} | " + " | ".join(cells) + f" | {ratio_v} | {ratio_n} |")

    single = [(n, p, t) for name, n, p, t in rows if name.startswith("random")]

    def slope(points):
        xs, ys = zip(*points)
        xm, ym = statistics.fmean(xs), statistics.fmean(ys)
        return sum((x - xm) * (y - ym) for x, y in points) / sum((x - xm) ** 2 for x in xs)

    if len(single) >= 2:
        print("\nscaling exponent, least-squares slope of log(time) vs log(atoms) over the single molecules")
        print("(all sizes / sizes >= 2000 atoms, where ours uses its cell list; below that it is brute force):")
        for m in methods:
            pts = [(math.log(n), math.log(t[m])) for n, _, t in single if m in t]
            big = [(math.log(n), math.log(t[m])) for n, _, t in single if m in t and n >= 2000]
            if len(pts) >= 2:
                tail = f", {slope(big):.2f} over {len(big)} sizes >= 2000" if len(big) >= 2 else ""
                print(f"  {m}: {slope(pts):.2f} over {len(pts)} sizes{tail}")
        print("ours, ns per pair: " + ", ".join(f"{n} atoms {t['ours'] * 1e6 / max(p, 1):.1f}" for n, p, t in single))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
