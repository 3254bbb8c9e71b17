"""Train / validation / test splits of molecule indices, and their storage as .npz files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import DataError

#: The usual QM9 dipole protocol: 110,000 training and 10,000 validation molecules, the rest test.
QM9_TRAIN, QM9_VALID = 110_000, 10_000


def _count(value, n: int, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise DataError(f"split size '{name}' must be a fraction or a count, got {value!r}")
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise DataError(f"split size '{name}' must be >= 0, got {value}")
        return int(value)
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise DataError(f"split fraction '{name}' must be in [0, 1], got {value}")
    return int(np.floor(value * n + 1e-9))

#: Split protocols of make_split (and of TrainConfig.split / `fastdipole train --split`).
SPLIT_PROTOCOLS = ("random", "qm9")
#: The parts of a split, in order.
SPLIT_PARTS = ("train", "valid", "test")


def make_split(n_molecules: int, protocol: str = "random", train=0.8, valid=0.1, test=None, seed: int = 0,
               groups=None) -> dict[str, np.ndarray]:
    """Split ``range(n_molecules)`` into sorted ``train``/``valid``/``test`` index arrays.

    ``train``/``valid``/``test`` are fractions (floats) or counts (ints) of molecules; ``test=None`` takes the
    rest. ``protocol="qm9"`` ignores them and uses 110,000 / 10,000 / rest. The assignment is a random
    permutation from ``numpy.random.default_rng(seed)``.

    ``groups`` (random protocol only): one label per molecule, e.g. QMugs' ``chembl_id``, whose conformers
    must not be split up (a conformer of a test molecule in the training set would leak it). Whole groups are
    then assigned in a random order, each to the part the running molecule count has reached, so the parts
    hold at least the asked-for training molecules and otherwise miss the sizes by less than one group.
    """
    n = int(n_molecules)
    if groups is not None and protocol != "random":
        raise DataError(f"split protocol '{protocol}' takes no groups (only 'random' keeps groups together)")
    if protocol == "qm9":
        if n <= QM9_TRAIN + QM9_VALID:
            raise DataError(
                f"protocol 'qm9' needs more than {QM9_TRAIN + QM9_VALID} molecules "
                f"({QM9_TRAIN} train + {QM9_VALID} valid + a test set); the dataset has {n}"
            )
        n_train, n_valid, n_test = QM9_TRAIN, QM9_VALID, n - QM9_TRAIN - QM9_VALID
    elif protocol == "random":
        n_train, n_valid = _count(train, n, "train"), _count(valid, n, "valid")
        n_test = n - n_train - n_valid if test is None else _count(test, n, "test")
        if n_train + n_valid + n_test > n or n_test < 0:
            raise DataError(
                f"split sizes train={n_train} valid={n_valid} test={max(n_test, 0)} exceed the {n} molecules"
            )
        if n_train == 0:
            raise DataError(f"split gives an empty training set ({n} molecules, train={train!r})")
    else:
        raise DataError(f"unknown split protocol '{protocol}' (choose 'random' or 'qm9')")
    if groups is not None:
        return _grouped_split(n, groups, n_train, n_valid, n_test, seed)
    perm = np.random.default_rng(seed).permutation(n)
    cut1, cut2 = n_train, n_train + n_valid
    return {
        "train": np.sort(perm[:cut1]).astype(np.int64),
        "valid": np.sort(perm[cut1:cut2]).astype(np.int64),
        "test": np.sort(perm[cut2 : cut2 + n_test]).astype(np.int64),
    }


def _grouped_split(n: int, groups, n_train: int, n_valid: int, n_test: int, seed: int) -> dict[str, np.ndarray]:
    """Whole groups in a random order; a group goes to the part that the molecules before it have reached."""
    labels = np.asarray(groups)
    if labels.shape != (n,):
        raise DataError(f"split groups must have one label per molecule ({n}), got shape {labels.shape}")
    _, group_of = np.unique(labels, return_inverse=True)
    sizes = np.bincount(group_of)
    order = np.random.default_rng(seed).permutation(len(sizes))
    before = np.empty(len(sizes), dtype=np.int64)  # molecules of the groups ahead of each group
    before[order] = np.cumsum(sizes[order]) - sizes[order]
    part = np.searchsorted(np.array([n_train, n_train + n_valid, n_train + n_valid + n_test]), before, side="right")
    molecule_part = part[group_of]  # 0 train, 1 valid, 2 test, 3 unused
    return {name: np.flatnonzero(molecule_part == k).astype(np.int64)
            for k, name in enumerate(("train", "valid", "test"))}


def save_split(split: dict[str, np.ndarray], path) -> Path:
    """Write the split to an .npz file atomically (:mod:`fastdipole.atomic`)."""
    # a file object keeps numpy from appending ".npz" to the name
    return atomic_write(path, lambda fh: np.savez(fh, **{k: np.asarray(v, dtype=np.int64) for k, v in split.items()}))


def load_split(path) -> dict[str, np.ndarray]:
    """Read a split written by :func:`save_split` (dict of int64 index arrays)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: split file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            split = {k: np.asarray(data[k], dtype=np.int64) for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz split file ({' '.join(str(err).split())})") from None
    for name, idx in split.items():
        if idx.ndim != 1 or (len(idx) and idx.min() < 0):
            raise DataError(f"{path}: split '{name}' must be a 1-D array of non-negative molecule indices")
    return split


def split_indices(split: dict[str, np.ndarray], name: str, n_molecules: int, source: str = "split") -> np.ndarray:
    """``split[name]``, checked against a dataset of ``n_molecules`` molecules."""
    if name not in split:
        raise DataError(f"{source}: no split named '{name}'; splits present: {', '.join(sorted(split)) or 'none'}")
    idx = split[name]
    if len(idx) and idx.max() >= n_molecules:
        raise DataError(
            f"{source}: split '{name}' refers to molecule {idx.max()} but the dataset has only {n_molecules} molecules"
        )
    return idx
