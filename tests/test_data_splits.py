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


def conformer_groups(n_groups: int, seed: int = 0) -> np.ndarray:
    """One chembl-like label per molecule: n_groups molecules with 1-9 conformers each, in runs."""
    sizes = np.random.default_rng(seed).integers(1, 10, size=n_groups)
    return np.repeat(np.array([f"CHEMBL{g}" for g in range(n_groups)]), sizes)


def test_grouped_split_keeps_each_group_in_one_part():
    groups = conformer_groups(200)
    n = len(groups)
    split = make_split(n, train=0.8, valid=0.1, seed=3, groups=groups)
    check_partition(split, n)
    parts = [set(groups[split[k]]) for k in ("train", "valid", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    # sizes: at least the training molecules asked for, each part off by less than one group (<= 9 conformers)
    n_train, n_valid = int(0.8 * n), int(0.1 * n)
    assert n_train <= len(split["train"]) < n_train + 9
    assert abs(len(split["valid"]) - n_valid) < 9 and len(split["valid"]) > 0 and len(split["test"]) > 0
    # a plain split of the same molecules does put conformers of one molecule into different parts
    plain = make_split(n, train=0.8, valid=0.1, seed=3)
    assert set(groups[plain["train"]]) & set(groups[plain["test"]])


def test_grouped_split_is_seeded_and_checks_its_labels():
    groups = conformer_groups(50)
    a, b = make_split(len(groups), seed=1, groups=groups), make_split(len(groups), seed=1, groups=groups)
    c = make_split(len(groups), seed=2, groups=groups)
    assert all(np.array_equal(a[k], b[k]) for k in a) and not np.array_equal(a["test"], c["test"])
    with pytest.raises(DataError, match="one label per molecule"):
        make_split(len(groups) + 1, groups=groups)
    with pytest.raises(DataError, match="takes no groups"):
        make_split(130_831, protocol="qm9", groups=np.zeros(130_831))


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
