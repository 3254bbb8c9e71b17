"""make_split / save_split / load_split."""

from __future__ import annotations

import numpy as np
import pytest

from fastdipole.data import load_split, make_split, save_split
from fastdipole.errors import DataError


def check_partition(split, n, complete=True):
    parts = [split["train"], split["valid"], split["test"]]
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)  # sorted, no repeats
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx)
    if complete:
        np.testing.assert_array_equal(np.sort(allidx), np.arange(n))


def test_fractions():
    split = make_split(1000, train=0.8, valid=0.1, seed=0)
    assert [len(split[k]) for k in ("train", "valid", "test")] == [800, 100, 100]
    check_partition(split, 1000)


def test_counts_and_explicit_test():
    split = make_split(1000, train=300, valid=50, test=20, seed=4)
    assert [len(split[k]) for k in ("train", "valid", "test")] == [300, 50, 20]
    check_partition(split, 1000, complete=False)


def test_seed_reproducible_and_random():
    a, b, c = make_split(500, seed=1), make_split(500, seed=1), make_split(500, seed=2)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["test"], c["test"])
    assert not np.array_equal(a["train"], np.arange(400))  # a permutation, not the first 80%


def test_qm9_protocol():
    split = make_split(130_831, protocol="qm9", seed=0)
    assert [len(split[k]) for k in ("train", "valid", "test")] == [110_000, 10_000, 10_831]
    check_partition(split, 130_831)
    with pytest.raises(DataError, match="more than 120000 molecules"):
        make_split(4000, protocol="qm9")


@pytest.mark.parametrize("kw", [dict(train=0.9, valid=0.2), dict(train=900, valid=50, test=100), dict(train=1.5)])
def test_too_large_sizes(kw):
    with pytest.raises(DataError):
        make_split(1000, **kw)


def test_unknown_protocol():
    with pytest.raises(DataError, match="unknown split protocol"):
        make_split(10, protocol="scaffold")


def test_save_load_round_trip(tmp_path):
    split = make_split(200, seed=3)
    path = save_split(split, tmp_path / "split.npz")
    assert path.exists() and not (tmp_path / "split.npz.tmp").exists()
    back = load_split(path)
    assert set(back) == {"train", "valid", "test"}
    for k in split:
        np.testing.assert_array_equal(back[k], split[k])


def test_load_bad_split_files(tmp_path):
    with pytest.raises(DataError, match="split file not found"):
        load_split(tmp_path / "none.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_split(junk)
