"""Screening throughput: `fastdipole predict` on a whole .h5 file, end to end (read and check, neighbour list,
model, CSV), molecules per second on 1 thread and on all cores, and where the time of one thread goes.

    OMP_NUM_THREADS=1 python benchmarks/screening.py [--data qm9.h5] [--device cuda]

Default: all of real QM9 (130,831 molecules) with the shipped model (`--model qm9`, nf 60, 2 interactions).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import QM9_H5, header, pin_threads, table  # noqa: E402


def end_to_end(data: Path, threads: int, batch: int, device: str = "cpu") -> float:
    """Seconds of `fastdipole predict DATA --out CSV` with ``threads`` torch threads (process start included)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "fastdipole", "predict", str(data), "--out", f"{tmp}/d.csv",
               "--batch-size", str(batch), "--device", device]
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        return time.perf_counter() - t0


def stages(data: Path, batch: int) -> dict:
    """Seconds per stage on one thread: read + check (chunks), neighbour pairs, the rest of the model, CSV rows."""
    import torch

    from fastdipole import pretrained
    from fastdipole.data import BatchLoader
    from fastdipole.data.streaming import H5Stream
    from fastdipole.evaluation.screening import Screening

    pin_threads(1)
    model = pretrained("qm9")
    stream = H5Stream(data, charges=None, species=model.hipnn.species)
    t0 = time.perf_counter()
    chunks = list(stream.chunks())
    read = time.perf_counter() - t0
    pair_s = model_s = 0.0
    with torch.no_grad():
        for chunk in chunks:
            for b in BatchLoader(chunk, None, batch):
                t0 = time.perf_counter()
                pairs, r = model.hipnn.pairs_and_distances(b.R, b.offsets)
                t1 = time.perf_counter()
                model(b.Z, b.R, b.offsets)
                t2 = time.perf_counter()
                pair_s += t1 - t0
                model_s += (t2 - t1) - (t1 - t0)  # the forward builds its pairs again: count them once
    t0 = time.perf_counter()
    screening = Screening(model, model.hipnn.species, batch_size=batch)
    n = sum(len(block.rows) for block in screening.blocks([data]))
    whole = time.perf_counter() - t0
    return {"molecules": n, "read_and_check_s": read, "neighbour_pairs_s": pair_s, "model_rest_s": model_s,
            "screening_in_process_s": whole, "rows_and_overhead_s": whole - read - pair_s - model_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=QM9_H5)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    ap.add_argument("--device", default="cpu", help="cpu, or cuda for the end-to-end rows on a GPU "
                    "(target there: all of QM9 in under 1 s)")
    args = ap.parse_args()
    pin_threads(1)
    header(f"screening throughput: fastdipole predict on {args.data.name}")
    s = stages(args.data, args.batch)
    n = s["molecules"]
    rows = [{"device": args.device, "threads": t, "seconds": (sec := end_to_end(args.data, t, args.batch, args.device)),
             "molecules_per_s": n / sec} for t in dict.fromkeys(args.threads)]
    table(rows)
    print(f"one thread, in process, {n:,} molecules (seconds):")
    table([{k: v for k, v in s.items()}])


if __name__ == "__main__":
    main()
