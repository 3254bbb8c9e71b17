"""Crash safety, shown on real runs: a SIGKILLed training resumes to the very weights of an uninterrupted one,
Ctrl-C saves and prints the resume command, and a failing write (full disk) is one clear error that leaves the
previous checkpoint intact. tools/crash_trial.py repeats the kill-and-resume cycle at random moments."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fastdipole.cli import main
from fastdipole.data import load_h5, save_h5
from fastdipole.errors import WriteError
from fastdipole.train import TrainConfig, load_checkpoint, read_history, train

SETTINGS = ["--n-features", "8", "--n-sensitivities", "6", "--n-interactions", "1", "--n-atom-layers", "1",
            "--batch-size", "32", "--threads", "1", "--device", "cpu", "--no-progress", "--seed", "5"]
EPOCHS = "25"


@pytest.fixture(scope="module")
def data(qm9_h5_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("crash") / "qm9_200.h5"
    save_h5(load_h5(qm9_h5_path, molecules=slice(9000, 9200)), path)
    return path


def _cli(data, out, *extra) -> list[str]:
    return [sys.executable, "-m", "fastdipole", "train", "--data", str(data), "--out", str(out), "--epochs", EPOCHS,
            *SETTINGS, *extra]


def _start(args) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # SIGINT back to its default, in case the test runner's shell ignores it (background jobs do)
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_epoch(proc: subprocess.Popen, run: Path, epoch: int, timeout: float = 240.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        rows = read_history(run) if (run / "metrics.csv").exists() else []
        if rows and rows[-1]["epoch"] >= epoch:
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    raise AssertionError(f"no epoch {epoch} within {timeout} s")


def _weights(run: Path) -> dict:
    return load_checkpoint(run / "checkpoint_last.pt")["model"]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("crash_ref") / "run"
    done = subprocess.run(_cli(data, run), env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return run


def test_sigkill_then_resume_gives_the_uninterrupted_weights(data, reference, tmp_path):
    run = tmp_path / "run"
    proc = _start(_cli(data, run))
    _wait_for_epoch(proc, run, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    resumed = subprocess.run(_cli(data, run, "--resume"), env={**os.environ, "OMP_NUM_THREADS": "1"},
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert not list(run.glob("*.tmp")), "a temporary file of the killed write survived the resume"
    want, got = _weights(reference), _weights(run)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    epochs = [row["epoch"] for row in read_history(run)]
    assert epochs == list(range(1, int(EPOCHS) + 1))  # each epoch once


def test_ctrl_c_saves_and_prints_the_resume_command(data, tmp_path):
    run = tmp_path / "run"
    proc = _start(_cli(data, run))
    _wait_for_epoch(proc, run, 1)
    t0 = time.time()  # metrics.csv is written just before the checkpoint: wait for the checkpoint too
    while load_checkpoint(run / "checkpoint_last.pt")["epoch"] < 1 and time.time() - t0 < 60:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert f"Resume with: fastdipole train --out {run} --resume" in output
    assert load_checkpoint(run / "checkpoint_last.pt")["epoch"] >= 1


def test_a_full_disk_is_one_error_and_keeps_the_last_checkpoint(data, tmp_path, monkeypatch):
    import fastdipole.atomic as atomic

    run = tmp_path / "run"
    config = TrainConfig(data=str(data), out=str(run), n_features=8, n_sensitivities=6, n_interactions=1,
                         n_atom_layers=1, epochs=4, batch_size=32, threads=1, device="cpu")
    real_replace = os.replace

    def full_disk_after_epoch_1(row):
        if row["epoch"] == 1:
            def replace(src, dst):
                if Path(dst).name == "checkpoint_last.pt":
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real_replace(src, dst)
            monkeypatch.setattr(atomic.os, "replace", replace)

    with pytest.raises(WriteError, match="checkpoint_last.pt: cannot write \\(No space left on device\\); the "
                                         "previous version is intact"):
        train(config, progress=False, log=lambda _m: None, on_epoch=full_disk_after_epoch_1)
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert load_checkpoint(run / "checkpoint_last.pt")["epoch"] == 1  # the last good one
    assert not list(run.glob("*.tmp"))
    # Through the CLI the same failure is one line and exit code 2.
    monkeypatch.setattr(atomic.os, "replace", lambda src, dst: (_ for _ in ()).throw(
        OSError(errno.EROFS, "Read-only file system")))
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(tmp_path / "ro"), *SETTINGS[:-2]])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "cannot write (Read-only file system)" in result.stderr


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_killed_before_its_first_checkpoint_starts_again(data, reference, tmp_path, resume):
    """Killed while setting up: config.json and split.npz written, no checkpoint yet (what tools/crash_trial.py hit)."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "split.npz"):
        (run / name).write_bytes((reference / name).read_bytes())
    (run / "checkpoint_last.pt.tmp").write_bytes(b"half a checkpoint")
    done = subprocess.run(_cli(data, run, *(["--resume"] if resume else [])),
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    want, got = _weights(reference), _weights(run)
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert not list(run.glob("*.tmp"))
