"""Streaming training on a QMugs-scale file: peak memory and molecules per second, streamed vs in memory.

Writes a synthetic file in the fastdipole layout (default 1,000,000 molecules of 20-100 atoms, H/C/N/O on a
jittered 1.45 Angstrom lattice so no two atoms are closer than ~1 Angstrom, charges summing to 0, |mu| their point
dipole), then, each in its own process so peak RSS is its own:

* ``stream``: the check pass over the whole file that training makes first (``check_s``, part of ``setup_s``),
  then ``--steps`` training steps (Adam, the recipe's loss) over the whole big file through
  :class:`~fastdipole.data.streaming.StreamingBatchLoader` (chunks of ``--chunk`` molecules, shuffled by chunks:
  the steps draw molecules from random chunks all over the file);
* ``memory``: the same steps through the in-memory :class:`~fastdipole.data.BatchLoader` on a file that fits
  (the first ``--fit`` molecules of the same generator).

Prints peak RSS (MiB), molecules per second, and how many of the file's 100 equal slices (percentiles of
the molecule index) the steps trained on. Model: HIP-NN with ``--features``
features, 1 interaction layer (small, so the data path shows). Example:

    OMP_NUM_THREADS=1 python benchmarks/streaming.py --out /tmp/stream_bench
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

ELEMENTS = np.array([1, 6, 7, 8], dtype=np.int8)


def write_synthetic(path: Path, n_molecules: int, seed: int = 0, block: int = 50_000) -> None:
    """A synthetic file in the fastdipole layout (see module doc), written block by block (bounded memory)."""
    import h5py

    rng = np.random.default_rng(seed)
    counts = rng.integers(20, 101, n_molecules)
    offsets = np.zeros(n_molecules + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    n_atoms = int(offsets[-1])
    lattice = 1.45 * np.stack(np.meshgrid(*[np.arange(5)] * 3, indexing="ij"), -1).reshape(-1, 3)  # 125 sites
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        Z = f.create_dataset("Z", (n_atoms,), np.int8, chunks=(1 << 16,))
        R = f.create_dataset("R", (n_atoms, 3), np.float32, chunks=(1 << 16, 3))
        q = f.create_dataset("q_mulliken", (n_atoms,), np.float32, chunks=(1 << 16,))
        R.attrs["units"], q.attrs["units"] = "Angstrom", "e"
        Z.attrs["per"] = R.attrs["per"] = q.attrs["per"] = "atom"
        mu = np.zeros(n_molecules, np.float32)
        for m0 in range(0, n_molecules, block):
            m1 = min(m0 + block, n_molecules)
            c = counts[m0:m1]
            sites = np.concatenate([rng.permutation(125)[:k] for k in c])
            pos = lattice[sites] + rng.uniform(-0.2, 0.2, (len(sites), 3))
            charge = rng.normal(0, 0.2, len(sites))
            starts = np.concatenate([[0], np.cumsum(c)[:-1]])
            charge -= np.repeat(np.add.reduceat(charge, starts) / c, c)  # each molecule neutral
            dip = np.add.reduceat(charge[:, None] * pos, starts, axis=0)
            mu[m0:m1] = np.linalg.norm(dip, axis=1) * 4.80320
            a0, a1 = offsets[m0], offsets[m1]
            Z[a0:a1] = ELEMENTS[rng.integers(0, 4, len(sites))]
            R[a0:a1] = pos.astype(np.float32)
            q[a0:a1] = charge.astype(np.float32)
        f.create_dataset("offsets", data=offsets)
        f.create_dataset("n_atoms", data=counts.astype(np.int16)).attrs["per"] = "molecule"
        d = f.create_dataset("mu", data=mu)
        d.attrs["units"], d.attrs["per"] = "Debye", "molecule"
        f.attrs["layout"] = "fastdipole-1"
        f.attrs["description"] = "synthetic QMugs-scale benchmark file (benchmarks/streaming.py)"
    tmp.replace(path)


def run_steps(path: str, mode: str, steps: int, batch: int, chunk: int, features: int) -> dict:
    """``steps`` training steps reading ``path`` in ``mode``; returns timing and peak RSS of this process."""
    import torch

    from fastdipole.data import BatchLoader, load_h5
    from fastdipole.data.streaming import H5Stream, StreamingBatchLoader
    from fastdipole.nn import DipoleModel
    from fastdipole.train.loss import batch_loss
    from fastdipole.train.optim import make_optimizer

    pin_threads(1)
    t0 = time.perf_counter()
    if mode == "stream":
        data = H5Stream(path, chunk_molecules=chunk)
        data.species = [1, 6, 7, 8]
        t_check = time.perf_counter()
        data.check()  # the pass `fastdipole train` makes over a streamed file before its first step
        check_s = time.perf_counter() - t_check
        loader = StreamingBatchLoader(data, None, batch, shuffle=True, seed=0, window_chunks=4)
    else:
        data = load_h5(path)  # loads and checks the whole file
        check_s = float("nan")
        loader = BatchLoader(data, None, batch, shuffle=True, seed=0)
    setup_s = time.perf_counter() - t0
    torch.manual_seed(0)
    model = DipoleModel.from_config(species=[1, 6, 7, 8], n_features=features, n_sensitivities=16,
                                    n_interaction_layers=1, n_atom_layers=2)
    opt = make_optimizer(model.parameters(), 1e-3)
    done, molecules, seen = 0, 0, np.zeros(100, dtype=bool)
    t0 = time.perf_counter()
    while done < steps:
        for b in loader:
            opt.zero_grad(set_to_none=True)
            out = model(b.Z, b.R, b.offsets, None)
            batch_loss(out, b, "mulliken", 0.3, 0.96, 1.0).total.backward()
            opt.step()
            done += 1
            molecules += b.n_molecules
            seen[b.index.numpy() * 100 // data.n_molecules] = True
            if done == steps:
                break
    seconds = time.perf_counter() - t0
    return {"mode": mode, "molecules_in_file": data.n_molecules, "steps": steps, "setup_s": setup_s, "check_s": check_s,
            "train_s": seconds, "molecules_per_s": molecules / seconds,
            "file_percentiles_trained_on": int(seen.sum()),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/fastdipole_stream_bench"))
    ap.add_argument("--molecules", type=int, default=1_000_000)
    ap.add_argument("--fit", type=int, default=100_000, help="molecules of the in-memory comparison file")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=256, help="molecules per chunk (small: steps from all over the file)")
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--worker", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_steps(args.worker[0], args.worker[1], args.steps, args.batch, args.chunk, args.features)))
        return
    header("streaming training vs in-memory training (peak RSS, molecules/s)")
    args.out.mkdir(parents=True, exist_ok=True)
    big, fit = args.out / f"synthetic_{args.molecules}.h5", args.out / f"synthetic_{args.fit}.h5"
    for path, n in ((big, args.molecules), (fit, args.fit)):
        if not path.exists():
            t0 = time.perf_counter()
            write_synthetic(path, n)
            print(f"wrote {path} ({n:,} molecules, {path.stat().st_size / 2**20:,.0f} MiB) in "
                  f"{time.perf_counter() - t0:.0f} s")
    rows = []
    for path, mode in ((big, "stream"), (fit, "stream"), (fit, "memory")):
        cmd = [sys.executable, __file__, "--worker", str(path), mode, "--steps", str(args.steps), "--batch",
               str(args.batch), "--chunk", str(args.chunk), "--features", str(args.features)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
    print(f"steps {args.steps} x batch {args.batch}, chunks of {args.chunk} molecules, windows of 4 chunks, "
          f"HIP-NN {args.features} features / 1 interaction, 1 thread")
    table(rows)
    mem = next(r for r in rows if r["mode"] == "memory")
    for r in rows:
        if r["mode"] == "stream":
            print(f"stream on {r['molecules_in_file']:,} molecules: {r['molecules_per_s'] / mem['molecules_per_s']:.2f}x "
                  f"the in-memory molecules/s, peak RSS {r['peak_rss_mib']:.0f} MiB "
                  f"(in memory on {mem['molecules_in_file']:,}: {mem['peak_rss_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
