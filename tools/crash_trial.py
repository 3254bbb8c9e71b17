"""Kill a training with SIGKILL at random moments, resume it each time, and check that it ends with exactly the
weights of an uninterrupted run (CPU, 1 thread), no temporary file or unreadable checkpoint, and every epoch once
in metrics.csv.

    python tools/crash_trial.py --data qm9.h5 [--kills 20] [--epochs 30] [--seed 0] [--work /tmp/crash]

Prints one line per kill (when, which epoch the checkpoint held) and a summary; exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from fastdipole.data import load_h5, save_h5
from fastdipole.train import load_checkpoint, read_history

SETTINGS = ["--n-features", "8", "--n-sensitivities", "6", "--n-interactions", "1", "--n-atom-layers", "1",
            "--batch-size", "32", "--threads", "1", "--device", "cpu", "--no-progress", "--seed", "3",
            "--patience", "1000"]  # no early stop: every run trains all its epochs
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def command(data: Path, out: Path, epochs: int, resume: bool) -> list[str]:
    return [sys.executable, "-m", "fastdipole", "train", "--data", str(data), "--out", str(out), "--epochs",
            str(epochs), *SETTINGS, *(["--resume"] if resume else [])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a QM9 .h5 file (the first --molecules are used)")
    parser.add_argument("--molecules", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--work", type=Path, default=Path("/tmp/fastdipole-crash-trial"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    data = save_h5(load_h5(args.data, molecules=slice(0, args.molecules)), args.work / "data.h5")

    t0 = time.perf_counter()
    reference = args.work / "reference"
    subprocess.run(command(data, reference, args.epochs, False), env=ENV, check=True, capture_output=True)
    full_seconds = time.perf_counter() - t0
    print(f"uninterrupted run: {full_seconds:.1f} s for {args.epochs} epochs")

    rng = random.Random(args.seed)
    kills, trials, failures = 0, 0, 0
    while kills < args.kills:  # trials until enough kills: each trains to the end, killed and resumed on the way
        trials += 1
        run = args.work / f"trial{trials}"
        while True:
            proc = subprocess.Popen(command(data, run, args.epochs, (run / "checkpoint_last.pt").exists()), env=ENV,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # from start-up (import, data) to the end of the run, so kills land in every phase, writes included
            time.sleep(rng.uniform(0.2, full_seconds))
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            leftovers = list(run.glob("*.tmp")) if run.exists() else []
            last = run / "checkpoint_last.pt"
            epoch = load_checkpoint(last)["epoch"] if last.exists() else None
            print(f"kill {kills} (trial {trials}): checkpoint at epoch {epoch}, temporary files "
                  f"{[t.name for t in leftovers]} (a resumed run removes them)")
        if proc.returncode != 0:
            print(f"trial {trials}: a resumed run failed with exit code {proc.returncode}")
            failures += 1
            continue
        failures += not check(run, reference, args.epochs, trials)
    print(f"{kills} kills over {trials} trials; {trials - failures} of {trials} trials ended exactly like the "
          "uninterrupted run")
    return 0 if failures == 0 else 1


def check(run: Path, reference: Path, epochs: int, trial: int) -> bool:
    want, got = load_checkpoint(reference / "checkpoint_last.pt")["model"], load_checkpoint(
        run / "checkpoint_last.pt")["model"]
    same = want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    rows = read_history(run)
    once = [row["epoch"] for row in rows] == list(range(1, epochs + 1))
    same_log = [r["valid_dipole_mae_e_angstrom"] for r in rows] == [
        r["valid_dipole_mae_e_angstrom"] for r in read_history(reference)]
    no_tmp = not list(run.glob("*.tmp"))
    best_ok = load_checkpoint(run / "checkpoint_best.pt")["epoch"] >= 1
    print(f"trial {trial}: final weights bitwise equal to the uninterrupted run: {same}; every epoch once in "
          f"metrics.csv: {once}; validation MAEs equal the uninterrupted run's: {same_log}; no temporary file "
          f"left: {no_tmp}; checkpoint_best.pt readable: {best_ok}")
    return same and once and same_log and no_tmp and best_ok


if __name__ == "__main__":
    sys.exit(main())
