"""The data files of a reproduce: one fixed test set and nested training pools, cut from the source file.

The source molecules are shuffled once (``numpy.random.default_rng(SUBSET_SEED)``): the first
``n_test`` form the test set shared by every run and seed; the training pool for ``n_train``
molecules is the next ``n_train + n_valid`` (so pools of different sizes are nested). The trainer
splits a pool into ``n_train`` training and ``n_valid`` validation molecules with the run's seed:
all configurations of one seed see the same split, and every run is scored on the same test set.

Files live in ``<out>/data/`` with ``manifest.json`` (sizes, source) and ``source_indices.npz``
(which source molecules each file holds), so reruns reuse them and refuse mismatched ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_json
from ..data import MoleculeDataset, load_h5, save_h5
from ..errors import DataError, FastDipoleError

#: Seed of the one shuffle that picks the test set and the pools (fixed: the same for every seed).
SUBSET_SEED = 20_240_411
CHARGE_ARRAY = "q_mulliken"
MANIFEST = "manifest.json"
INDICES = "source_indices.npz"


class ReproduceError(FastDipoleError):
    """The reproduce folder cannot be used as asked (made from other data or settings, ...)."""


@dataclass
class DataFiles:
    """Paths of the prepared files and what they hold."""

    data_dir: Path
    test: Path
    pools: dict[int, Path]  # n_train -> pool file (n_train + n_valid molecules)
    n_valid: int
    n_test: int
    species: list[int]  # elements of the whole source file (so a rare element in the test set is known)
    source: str
    source_n_molecules: int

    def pool(self, n_train: int) -> Path:
        return self.pools[n_train]


def _manifest_key(source: Path, n_molecules: int, n_valid: int, n_test: int) -> dict:
    return {"source": str(source), "source_n_molecules": int(n_molecules), "subset_seed": SUBSET_SEED,
            "n_valid": int(n_valid), "n_test": int(n_test), "charge_array": CHARGE_ARRAY}


def prepare_qm9_files(source, data_dir, n_train_sizes, n_valid: int, n_test: int | None,
                      log=print) -> DataFiles:
    """Write (or reuse) ``test.h5`` and ``pool_n<S>.h5`` for each training size ``S`` in ``data_dir``.

    ``n_test=None`` takes every molecule the largest pool does not need.
    """
    source = Path(source).expanduser().resolve()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    full = load_h5(source, charges=CHARGE_ARRAY, check=True)
    M = full.n_molecules
    biggest = max(n_train_sizes)
    if n_test is None:
        n_test = M - biggest - n_valid
    need = biggest + n_valid + n_test
    if n_test <= 0 or need > M:
        raise DataError(f"{source}: has {M} molecules but the preset needs {biggest} train + {n_valid} valid "
                        f"+ {max(n_test, 0)} test = {need}; use a smaller preset or a bigger file")

    key = _manifest_key(source, M, n_valid, n_test)
    manifest_path = data_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"files": {}}
    old_key = {k: manifest.get(k) for k in key}
    if manifest_path.exists() and old_key != key:
        diffs = ", ".join(f"{k}: {old_key[k]!r} -> {key[k]!r}" for k in key if old_key[k] != key[k])
        raise ReproduceError(f"{data_dir}: data files were made with other settings ({diffs}); choose another --out")

    perm = np.random.default_rng(SUBSET_SEED).permutation(M)
    selections = {"test": np.sort(perm[:n_test])}
    pool_order = perm[n_test:]
    for n in sorted(set(n_train_sizes)):
        selections[f"pool_n{n}"] = np.sort(pool_order[: n + n_valid])

    files = dict(manifest.get("files", {}))
    for name, idx in selections.items():
        path = data_dir / f"{name}.h5"
        entry = {"file": path.name, "n_molecules": int(len(idx)), "first_molecules": idx[:5].tolist()}
        if path.exists() and files.get(name) == entry:
            continue
        log(f"writing {path} ({len(idx):,} molecules of {source.name})")
        subset = full.subset(idx)
        save_h5(subset, path, charges_name=CHARGE_ARRAY, attrs={
            "description": f"fastdipole reproduce: {name} cut from {source.name}",
            "reproduce_source": str(source),
            "reproduce_subset_seed": SUBSET_SEED,
        })
        files[name] = entry
    _save_indices(data_dir, selections)
    atomic_write_json({**key, "files": files}, manifest_path)
    return DataFiles(
        data_dir=data_dir,
        test=data_dir / "test.h5",
        pools={n: data_dir / f"pool_n{n}.h5" for n in sorted(set(n_train_sizes))},
        n_valid=int(n_valid),
        n_test=int(n_test),
        species=sorted(int(z) for z in np.unique(full.Z)),
        source=str(source),
        source_n_molecules=M,
    )


def _save_indices(data_dir: Path, selections: dict[str, np.ndarray]) -> None:
    from ..data import save_split  # atomic .npz of int64 arrays

    path = data_dir / INDICES
    old = {}
    if path.exists():
        with np.load(path) as f:
            old = {k: f[k] for k in f.files}
    save_split({**old, **selections}, path)


def load_source_subset(path, charges: str | None = CHARGE_ARRAY) -> MoleculeDataset:
    """Load a prepared file (already validated when it was written)."""
    return load_h5(path, charges=charges, check=False)
