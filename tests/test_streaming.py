"""Streaming an HDF5 file chunk by chunk (fastdipole.data.streaming) on real QM9 slices: every molecule once per
epoch, each chunk read once per epoch, the same predictions as the in-memory path, bad molecules named by their
index in the file, and `fastdipole train --data-mode stream` training and resuming exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import TINY_TRAIN, qm9_slice
from fastdipole.cli import main
from fastdipole.data import load_h5, save_h5
from fastdipole.data.streaming import H5Stream, StreamingBatchLoader, choose_data_mode, in_memory_bytes
from fastdipole.errors import DataError
from fastdipole.evaluation.evaluate import metrics_from_predictions, predict
from fastdipole.train import load_checkpoint, read_history


@pytest.fixture(scope="module")
def data(qm9_h5_path, tmp_path_factory):
    return qm9_slice(qm9_h5_path, tmp_path_factory.mktemp("stream"), "qm9_260.h5", slice(5000, 5260))


class CountingStream(H5Stream):
    """The real stream, counting its chunk reads (instrumentation only: every read still goes to the file)."""

    reads: list

    def read(self, lo, hi):
        self.reads.append(lo)
        return super().read(lo, hi)


def test_chunks_hold_the_file(data):
    whole = load_h5(data)
    stream = H5Stream(data, chunk_molecules=37)
    assert stream.n_molecules == whole.n_molecules and stream.n_atoms == whole.n_atoms
    Z = np.concatenate([c.Z for c in stream.chunks()])
    R = np.concatenate([c.R for c in stream.chunks()])
    q = np.concatenate([c.charges for c in stream.chunks()])
    assert np.array_equal(Z, whole.Z) and np.array_equal(R, whole.R) and np.array_equal(q, whole.charges)
    assert stream.elements() == sorted(int(z) for z in np.unique(whole.Z))
    from fastdipole.data import element_mean_charges

    idx = np.arange(0, whole.n_molecules, 3)
    expected = element_mean_charges(whole, idx)
    got = stream.element_mean_charges(idx)
    assert got.keys() == expected.keys() and all(got[z] == pytest.approx(expected[z], abs=1e-12) for z in got)


def test_each_epoch_visits_every_molecule_once_and_reads_each_chunk_once(data):
    stream = CountingStream(data, chunk_molecules=20)
    stream.reads = []
    train = np.arange(0, 260, 2)  # a split: half the molecules
    loader = StreamingBatchLoader(stream, train, batch_size=16, shuffle=True, seed=4, window_chunks=3)
    orders = []
    for epoch in range(2):
        stream.reads.clear()
        seen = np.concatenate([b.index.numpy() for b in loader])
        assert sorted(seen) == sorted(train)
        assert sorted(stream.reads) == list(range(0, 260, 20))  # 13 chunks, each read once
        orders.append(seen)
    assert not np.array_equal(orders[0], orders[1])  # reshuffled
    loader.set_epoch(0)
    assert np.array_equal(np.concatenate([b.index.numpy() for b in loader]), orders[0])  # resumable


def test_batches_carry_the_file_labels(data):
    whole = load_h5(data)
    stream = H5Stream(data, chunk_molecules=25)
    for batch in StreamingBatchLoader(stream, None, batch_size=40, shuffle=True, seed=1):
        idx = batch.index.numpy()
        for k, m in enumerate(idx[:3]):
            Z, R = whole.molecule(m)
            a, b = batch.offsets[k].item(), batch.offsets[k + 1].item()
            assert np.array_equal(batch.Z[a:b].numpy(), Z) and np.array_equal(batch.R[a:b].numpy(), R)
        assert np.array_equal(batch.mu_debye.numpy(), whole.mu_debye[idx])


def test_ranks_read_their_own_windows(data):
    stream = H5Stream(data, chunk_molecules=20)
    loaders = [StreamingBatchLoader(stream, None, 8, shuffle=True, seed=2, rank=r, world_size=2, window_chunks=2)
               for r in range(2)]
    assert len(loaders[0]) == len(loaders[1])  # equal step counts: DDP needs them
    seen = [np.concatenate([b.index.numpy() for b in loader]) for loader in loaders]
    assert len(seen[0]) == len(seen[1]) == 130 and not set(seen[0]) & set(seen[1])
    chunks = [set(s // 20) for s in seen]
    assert len(chunks[0] & chunks[1]) <= 2  # each its own stretch; only the window at the boundary is shared
    for world in (3, 4, 7):  # more ranks than windows: still equal, non-empty shares
        parts = [StreamingBatchLoader(stream, None, 8, shuffle=True, seed=2, rank=r, world_size=world,
                                      window_chunks=4) for r in range(world)]
        sizes = [len(np.concatenate([b.index.numpy() for b in p])) for p in parts]
        assert sizes == [260 // world] * world and len(parts[0]) == -(-(260 // world) // 8)


def test_streamed_predictions_equal_in_memory_ones(tiny_run, data):
    from fastdipole.train.run_folder import load_model

    run, _ = tiny_run
    model = load_model(run)
    a = metrics_from_predictions(predict(model, load_h5(data), batch_size=64))
    b = metrics_from_predictions(predict(model, H5Stream(data, chunk_molecules=30), batch_size=64))
    for key in ("dipole_mae_debye", "dipole_rmse_debye", "charge_mae_e", "direction_agreement", "n_atoms"):
        assert b[key] == pytest.approx(a[key], rel=1e-6), key


def test_a_bad_molecule_in_a_late_chunk_is_named_by_its_file_index(data, tmp_path):
    bad = load_h5(data)
    start = bad.offsets[213]
    bad.R[start + 1] = np.nan
    path = tmp_path / "bad.h5"
    save_h5(bad, path)
    with pytest.raises(DataError) as in_memory:
        load_h5(path)
    stream = H5Stream(path, chunk_molecules=50)
    with pytest.raises(DataError) as streamed:
        list(stream.chunks())
    assert "molecule 213 " in str(streamed.value) and str(streamed.value) == str(in_memory.value)
    result = CliRunner().invoke(main, ["train", "--data", str(path), "--out", str(tmp_path / "run"), "--epochs", "1",
                                       "--data-mode", "stream", "--chunk-molecules", "50", *TINY_TRAIN])
    assert result.exit_code == 2 and "molecule 213 has a NaN" in result.output
    # the whole file is checked before training: the run stops before writing anything
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_the_check_pass_covers_each_ranks_share_and_then_all(data):
    stream = CountingStream(data, chunk_molecules=40)
    stream.reads = []
    ranges = stream.chunk_ranges()  # 7 chunks
    assert stream.check(1, 3) == sum(hi - lo for lo, hi in ranges[1::3])
    assert stream.reads == [lo for lo, _ in ranges[1::3]] and stream._checked == set(ranges[1::3])
    stream.check(1, 3)  # checked chunks are not read again
    assert len(stream.reads) == len(ranges[1::3])
    stream.mark_checked()
    assert stream._checked == set(ranges)
    stream.species = [1, 6]  # other species: every chunk is checked again
    assert stream._checked == set()


def test_auto_mode_streams_only_large_files(data):
    assert choose_data_mode("auto", data) == "memory"
    assert choose_data_mode("stream", data) == "stream"
    whole = load_h5(data)
    assert in_memory_bytes(data) >= whole.n_atoms * 24
    with pytest.raises(ValueError):
        choose_data_mode("disk", data)


def _train(data, out, *extra):
    return CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(out), "--batch-size", "16",
                                     "--data-mode", "stream", "--chunk-molecules", "40", *TINY_TRAIN, *extra])


def test_streamed_training_resumes_exactly(data, tmp_path):
    full = _train(data, tmp_path / "full", "--epochs", "4")
    assert full.exit_code == 0, full.output
    assert "streaming" in full.output and "chunks of 40 molecules" in full.output
    part = _train(data, tmp_path / "part", "--epochs", "2")
    assert part.exit_code == 0, part.output
    rest = _train(data, tmp_path / "part", "--epochs", "4", "--resume")
    assert rest.exit_code == 0, rest.output
    assert [r["epoch"] for r in read_history(tmp_path / "part")] == [1, 2, 3, 4]
    a = load_checkpoint(tmp_path / "full" / "checkpoint_last.pt")["model"]
    b = load_checkpoint(tmp_path / "part" / "checkpoint_last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    import json

    assert json.loads((tmp_path / "full" / "config.json").read_text())["data_mode"] == "stream"


def test_evaluate_streamed_equals_in_memory(tiny_run, data, tmp_path):
    import json

    run, _ = tiny_run
    metrics = {}
    for mode in ("memory", "stream"):
        out = tmp_path / mode
        result = CliRunner().invoke(main, ["evaluate", "--model", str(run), "--data", str(data), "--split", "all",
                                           "--data-mode", mode, "--out", str(out)])
        assert result.exit_code == 0, result.output
        metrics[mode] = json.loads((out / "metrics.json").read_text())
    for key in ("dipole_mae_debye", "dipole_rmse_debye", "charge_mae_e", "charge_pearson_r", "n_molecules"):
        assert metrics["stream"][key] == pytest.approx(metrics["memory"][key], rel=1e-6), key
