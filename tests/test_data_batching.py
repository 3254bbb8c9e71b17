"""BatchLoader: flat unpadded batches of whole molecules, per-epoch reshuffling, charge overrides."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastdipole.data import Batch, BatchLoader, average_charge_labels, bundled_sample_path, element_mean_charges, load_h5


@pytest.fixture(scope="module")
def sample():
    return load_h5(bundled_sample_path())


@pytest.fixture(scope="module")
def indices():
    return np.sort(np.random.default_rng(3).choice(4000, size=1234, replace=False))


def collect(loader):
    return [b for b in loader]


def test_each_index_exactly_once_with_right_atoms(sample, indices):
    loader = BatchLoader(sample, indices, batch_size=100, shuffle=True, seed=5)
    batches = collect(loader)
    assert len(batches) == len(loader) == 13
    seen = torch.cat([b.index for b in batches]).numpy()
    assert sorted(seen.tolist()) == indices.tolist()
    for b in batches[:3] + batches[-1:]:
        assert isinstance(b, Batch)
        assert b.offsets[0] == 0 and b.offsets[-1] == len(b.Z) == len(b.R) == len(b.charges)
        assert b.Z.dtype == torch.int64 and b.offsets.dtype == torch.int64 and b.index.dtype == torch.int64
        assert b.R.dtype == torch.float32 and b.mu_debye.shape == (b.n_molecules,)
        for k, m in enumerate(b.index.tolist()):
            s, e = b.offsets[k].item(), b.offsets[k + 1].item()
            z, r = sample.molecule(m)
            np.testing.assert_array_equal(b.Z[s:e].numpy(), z)
            np.testing.assert_array_equal(b.R[s:e].numpy(), r)
            s0, e0 = sample.offsets[m], sample.offsets[m + 1]
            np.testing.assert_array_equal(b.charges[s:e].numpy(), sample.charges[s0:e0])
            assert b.mu_debye[k].item() == sample.mu_debye[m]
    assert batches[-1].n_molecules == 34


def test_no_shuffle_keeps_given_order(sample):
    order = np.array([9, 4, 4000 - 1, 0, 17])
    batches = collect(BatchLoader(sample, order, batch_size=2))
    assert [b.index.tolist() for b in batches] == [[9, 4], [3999, 0], [17]]


def test_reshuffle_by_epoch_reproducible_by_seed(sample, indices):
    a = BatchLoader(sample, indices, batch_size=64, shuffle=True, seed=11)
    epoch0 = torch.cat([b.index for b in a]).numpy()
    epoch1 = torch.cat([b.index for b in a]).numpy()
    assert not np.array_equal(epoch0, epoch1) and not np.array_equal(epoch0, indices)
    assert sorted(epoch0) == sorted(epoch1)
    b = BatchLoader(sample, indices, batch_size=64, shuffle=True, seed=11)
    np.testing.assert_array_equal(torch.cat([x.index for x in b]).numpy(), epoch0)
    b.set_epoch(1)
    np.testing.assert_array_equal(torch.cat([x.index for x in b]).numpy(), epoch1)
    c = BatchLoader(sample, indices, batch_size=64, shuffle=True, seed=12)
    assert not np.array_equal(torch.cat([x.index for x in c]).numpy(), epoch0)


def test_drop_last_and_len(sample, indices):
    loader = BatchLoader(sample, indices, batch_size=100, drop_last=True)
    batches = collect(loader)
    assert len(loader) == len(batches) == 12
    assert all(b.n_molecules == 100 for b in batches)


def test_dtype_float64(sample):
    b = next(iter(BatchLoader(sample, np.arange(10), batch_size=10, dtype=torch.float64)))
    assert b.R.dtype == torch.float64 and b.mu_debye.dtype == torch.float64 and b.charges.dtype == torch.float64
    np.testing.assert_array_equal(b.R.numpy(), sample.R[: sample.offsets[10]].astype(np.float64))


def test_charges_override_average_mode(sample, indices):
    means = element_mean_charges(sample, indices)
    labels = average_charge_labels(sample, means)
    loader = BatchLoader(sample, indices, batch_size=50, charges=labels)
    b = next(iter(loader))
    expected = np.array([means[int(z)] for z in b.Z], dtype=np.float32)
    np.testing.assert_array_equal(b.charges.numpy(), expected)
    assert not np.allclose(b.charges.numpy(), sample.charges[: len(expected)])


def test_no_charges_gives_none(sample):
    ds = load_h5(bundled_sample_path(), charges=None, molecules=slice(0, 30))
    b = next(iter(BatchLoader(ds, None, batch_size=8)))
    assert b.charges is None and b.n_molecules == 8


def test_out_of_range_indices_rejected(sample):
    from fastdipole.errors import DataError

    with pytest.raises(DataError, match="out of range"):
        BatchLoader(sample, [0, 4000], batch_size=4)
    with pytest.raises(DataError, match="charge labels must have shape"):
        BatchLoader(sample, [0], batch_size=4, charges=np.zeros(5))
