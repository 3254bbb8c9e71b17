"""Distributed training as a user runs it: `torchrun --nproc-per-node 2 -m fastdipole train` on CPU (gloo).

* Two processes with batch b take the same steps as one process with batch 2b: parameters equal to float32
  tolerance (with the recipe's neutral-charge projection, only the model's outputs: biases that shift every
  atom's charge alike get exactly zero gradient there, and Adam turns the float noise of that zero into
  lr-sized steps that change no prediction).
* A killed rank stops the run with one clear line naming the checkpoint and the resume command; resuming with
  --resume, or torchrun restarting the workers (--max-restarts 1), ends with the very weights of an
  uninterrupted two-process run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fastdipole.data import BatchLoader, load_h5
from fastdipole.data.batching import shard_order
from fastdipole.evaluation.accumulate import MetricAccumulator
from fastdipole.evaluation.evaluate import accumulate, metrics_from_predictions, predict
from fastdipole.train import load_checkpoint, read_history
from fastdipole.train.run_folder import load_model

from conftest import TINY_TRAIN, qm9_slice

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


@pytest.fixture(scope="module")
def data(qm9_h5_path, tmp_path_factory):
    # 192 training molecules: even
    return qm9_slice(qm9_h5_path, tmp_path_factory.mktemp("ddp"), "qm9_240.h5", slice(3000, 3240))


def _train(data, out, batch_size, *extra, processes=1, restarts=None):
    args = ["-m", "fastdipole", "train", "--data", str(data), "--out", str(out), "--batch-size", str(batch_size),
            *TINY_TRAIN, *extra]
    if processes > 1:
        # torchrun's static rendezvous on a free local port (tests may run side by side)
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                    "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
        if restarts is not None:
            launcher += ["--max-restarts", str(restarts)]
        return [*launcher, *args]
    return [sys.executable, *args]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args, timeout=180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def _weights(run: Path) -> dict:
    return load_checkpoint(run / "checkpoint_last.pt")["model"]


def _outputs(run: Path, dataset):
    """Predicted charges (e) and dipoles (e*A) of the run's last checkpoint on ``dataset``."""
    pred = predict(load_model(run, which="last"), dataset, batch_size=512)
    return pred.charges_pred, pred.dipole_pred_e_angstrom


@pytest.mark.parametrize("constraint", ["none", "uniform"])
def test_two_processes_take_the_steps_of_one_with_twice_the_batch(data, tmp_path, constraint):
    common = ["--epochs", "2", "--charge-constraint", constraint]
    two = _run(_train(data, tmp_path / "two", 8, *common, processes=2))
    assert two.returncode == 0, two.stderr[-3000:]
    assert "distributed: 2 processes (gloo), 8 molecules per process and step (16 per step)" in two.stdout + two.stderr
    one = _run(_train(data, tmp_path / "one", 16, *common))
    assert one.returncode == 0, one.stderr[-3000:]

    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    if constraint == "none":
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-5, msg=name)
    dataset = load_h5(data)
    for x, y in zip(_outputs(tmp_path / "one", dataset), _outputs(tmp_path / "two", dataset)):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-5)
    # the same validation metrics on both (gathered over the ranks), epoch by epoch
    h1, h2 = read_history(tmp_path / "one"), read_history(tmp_path / "two")
    assert [r["epoch"] for r in h2] == [1, 2]
    for r1, r2 in zip(h1, h2):
        assert r2["valid_dipole_mae_debye"] == pytest.approx(r1["valid_dipole_mae_debye"], rel=1e-4)
    # only rank 0 wrote: one set of run files, no stray temporary files
    assert not list((tmp_path / "two").glob("*.tmp"))


def _rank_process(launcher_pid: int, rank: int) -> int | None:
    """Pid of the worker of rank ``rank`` that torchrun ``launcher_pid`` started (found through /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if f"RANK={rank}".encode() in env and b"TORCHELASTIC_RUN_ID=" in b"\0".join(env) and \
                _descends_from(parent, launcher_pid):
            return int(entry.name)
    return None


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
    return False


def _kill_rank_after_epoch(args, run: Path, epoch: int, rank: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.time()
        while True:
            rows = read_history(run) if (run / "metrics.csv").exists() else []
            if rows and rows[-1]["epoch"] >= epoch:
                break
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() - t0 < 180, "the distributed run made no progress"
            time.sleep(0.05)
        pid = _rank_process(proc.pid, rank)
        assert pid is not None, "rank process not found"
        os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(args, proc.returncode, out, "")


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("ddp_full") / "run"
    result = _run(_train(data, run, 8, *_LONG, processes=2))
    assert result.returncode == 0, result.stderr[-3000:]
    return run


_LONG = ["--epochs", "14", "--patience", "100"]


def test_a_killed_rank_stops_the_run_with_a_clear_error_and_it_resumes(data, tmp_path, uninterrupted):
    run = tmp_path / "run"
    killed = _kill_rank_after_epoch(_train(data, run, 8, *_LONG, processes=2), run, epoch=3)
    assert killed.returncode != 0
    lines = [line for line in killed.stdout.splitlines() if line.startswith("error: rank 0 of 2")]
    assert lines, killed.stdout[-3000:]
    assert "checkpoint_last.pt holds epoch" in lines[0] and "--resume" in lines[0]
    done = load_checkpoint(run / "checkpoint_last.pt")["epoch"]
    assert 3 <= done < 14

    resumed = _run(_train(data, run, 8, *_LONG, "--resume", processes=2))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run} after epoch {done}" in resumed.stdout + resumed.stderr
    assert [r["epoch"] for r in read_history(run)] == list(range(1, 15))
    a, b = _weights(uninterrupted), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed distributed run differs from the uninterrupted one"


def test_torchrun_restarts_resume_from_the_last_checkpoint(data, tmp_path, uninterrupted):
    run = tmp_path / "run"
    result = _kill_rank_after_epoch(_train(data, run, 8, *_LONG, processes=2, restarts=1), run, epoch=3)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "torchrun restarted the workers (restart 1): resuming from the last checkpoint" in result.stdout
    assert [r["epoch"] for r in read_history(run)] == list(range(1, 15))
    a, b = _weights(uninterrupted), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_streamed_distributed_training_checks_the_file_in_shares_and_trains(data, tmp_path):
    run = tmp_path / "run"
    result = _run(_train(data, run, 8, "--epochs", "2", "--data-mode", "stream", "--chunk-molecules", "40",
                         processes=2))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "checked the 240 molecules" in result.stdout and "each of the 2 processes a share" in result.stdout
    assert [r["epoch"] for r in read_history(run)] == [1, 2]


def test_bad_data_in_another_ranks_share_stops_every_rank_before_training(data, tmp_path):
    from fastdipole.data import save_h5

    bad = load_h5(data)
    bad.R[bad.offsets[130] + 2] = np.nan  # chunk 3 of chunks of 40: rank 1's share of the check
    path = tmp_path / "bad.h5"
    save_h5(bad, path)
    run = tmp_path / "run"
    result = _run(_train(path, run, 8, "--epochs", "2", "--data-mode", "stream", "--chunk-molecules", "40",
                         processes=2))
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "molecule 130 has a NaN" in out, out[-3000:]
    assert "another training process failed while setting up" in out
    assert not (run / "metrics.csv").exists() and not (run / "checkpoint_last.pt").exists()


# ---- the pieces, without processes ------------------------------------------------------------------------


def test_shards_partition_each_step_of_the_one_process_order():
    order = np.random.default_rng(0).permutation(103)
    world, b = 3, 4
    shards = [shard_order(order, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1 and sum(len(s) for s in shards) == 102  # 103 cut to 102
    for k in range(len(shards[0]) // b):
        step = np.concatenate([s[k * b:(k + 1) * b] for s in shards])
        assert sorted(step) == sorted(order[k * world * b:(k + 1) * world * b])
    assert np.array_equal(shard_order(order, 0, 1), order)


def test_loader_shards_every_epoch(qm9_h5_path):
    dataset = load_h5(qm9_h5_path, molecules=slice(0, 50))
    loaders = [BatchLoader(dataset, np.arange(50), 6, shuffle=True, seed=3, rank=r, world_size=2) for r in range(2)]
    assert len(loaders[0]) == len(loaders[1]) == 5  # 25 molecules each in batches of 6
    for epoch in range(2):
        seen = [np.concatenate([b.index.numpy() for b in loader]) for loader in loaders]
        assert not set(seen[0]) & set(seen[1]) and len(seen[0]) + len(seen[1]) == 50
    with pytest.raises(ValueError, match="rank"):
        BatchLoader(dataset, np.arange(50), 6, rank=2, world_size=2)


def test_merged_validation_sums_give_the_metrics_of_all(tiny_run):
    """What each rank's validation share adds up to (the trainer merges the ranks' accumulators)."""
    run, data = tiny_run
    dataset = load_h5(data)
    model = load_model(run)
    whole = metrics_from_predictions(predict(model, dataset))
    shares = np.array_split(np.arange(dataset.n_molecules), 3)
    merged = MetricAccumulator.merged([accumulate(model, dataset, share, 64, sample_atoms=0) for share in shares]
                                      + [MetricAccumulator()])  # a rank that saw no molecules
    got = merged.metrics()
    for key in ("dipole_mae_debye", "dipole_rmse_debye", "charge_mae_e", "charge_mae_centred_e", "charge_pearson_r",
                "direction_agreement", "direction_cos_median", "total_charge_max_abs_e", "n_atoms"):
        assert got[key] == pytest.approx(whole[key], rel=1e-6, abs=1e-12), key
