"""Helpers shared by the benchmark scripts: real QM9 batches, timing, table printing."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
QM9_H5 = Path(os.environ.get("FASTDIPOLE_QM9_H5", REPO.parent / "shared" / "data" / "qm9" / "qm9_mulliken.h5"))


def pin_threads(n: int = 1) -> None:
    """One thread unless measuring threading: this 2-core box is shared and noisy."""
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("NUMBA_NUM_THREADS", str(n))  # numba's pool next to torch's triples step times
    torch.set_num_threads(n)


def qm9_batch(n_molecules: int, seed: int = 0, dtype=torch.float32, path: Path = QM9_H5):
    """``n_molecules`` random real QM9 molecules: Z, R (Angstrom), offsets, |mu| (Debye), Mulliken q (e)."""
    with h5py.File(path, "r") as f:
        offsets = f["offsets"][:]
        pick = np.sort(np.random.default_rng(seed).choice(len(offsets) - 1, n_molecules, replace=False))
        Z, R, q, counts = [], [], [], []
        for m in pick:
            a, b = offsets[m], offsets[m + 1]
            Z.append(f["Z"][a:b]), R.append(f["R"][a:b]), q.append(f["q_mulliken"][a:b]), counts.append(b - a)
        mu = f["mu"][:][pick]
    off = np.concatenate([[0], np.cumsum(counts)])
    return (
        torch.from_numpy(np.concatenate(Z).astype(np.int64)),
        torch.from_numpy(np.concatenate(R)).to(dtype),
        torch.from_numpy(off.astype(np.int64)),
        torch.from_numpy(mu).to(dtype),
        torch.from_numpy(np.concatenate(q)).to(dtype),
    )


def median_ms(fn, repeats: int = 20, warmup: int = 3, budget_s: float | None = None, min_runs: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds.

    With ``budget_s``, stops early once that many seconds are spent (after at least ``min_runs`` runs).
    """
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    for k in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if budget_s is not None and k + 1 >= min_runs and time.perf_counter() - start > budget_s:
            break
    return 1e3 * statistics.median(times)


def header(title: str) -> None:
    print(f"# {title}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"date: {time.strftime('%Y-%m-%d %H:%M')}, machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    try:
        print(f"load average: {os.getloadavg()}")
    except OSError:
        pass
    print()


def table(rows: list[dict]) -> None:
    """Print rows (dicts with the same keys) as a markdown table."""
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    print()
