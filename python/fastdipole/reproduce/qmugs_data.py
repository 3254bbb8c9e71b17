"""Data of the optional QMugs-style section: SDF files -> HDF5 (GFN2-xTB labels) -> test set and training pool.

The test set holds whole molecules (all conformers of a ChEMBL id), so no conformer of a test molecule
is trained on. Labels are the files' ``GFN2:`` properties (GFN2-xTB Mulliken charges and dipoles), not
QMugs' DFT ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import load_h5, save_h5
from ..errors import DataError

#: Seed of the molecule-level test split of the QMugs-style data (fixed for all seeds).
QMUGS_SPLIT_SEED = 7


@dataclass
class QMugsFiles:
    converted: Path
    test: Path
    pool: Path
    n_train: int
    n_valid: int
    n_test: int
    n_test_molecules: int
    n_molecules: int
    species: list[int]


def rdkit_missing() -> str | None:
    """Why the SDF files cannot be read here (None when RDKit is importable)."""
    import importlib.util

    if importlib.util.find_spec("rdkit") is None:
        return "RDKit is not installed (pip install fastdipole[qmugs])"
    return None


def prepare_qmugs_files(sdf_path, data_dir, test_fraction: float, valid_fraction: float = 0.2,
                        log=print) -> QMugsFiles:
    """Convert ``sdf_path`` at the GFN2 level (once) and cut a molecule-level test set and a pool."""
    from ..data.qmugs import build_from_qmugs

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    converted = data_dir / "qmugs_gfn2.h5"
    if not converted.exists():
        log(f"converting {sdf_path} (GFN2-xTB labels) -> {converted}")
        build_from_qmugs(sdf_path, "gfn2", converted)
    full = load_h5(converted, charges="q_mulliken", check=True)
    ids = np.asarray(full.extra["chembl_id"]).astype(str)
    unique = np.unique(ids)
    if len(unique) < 3:
        raise DataError(f"{converted}: needs at least 3 molecules (ChEMBL ids) for train / valid / test, "
                        f"has {len(unique)}")
    rng = np.random.default_rng(QMUGS_SPLIT_SEED)
    n_test_mol = max(1, int(round(test_fraction * len(unique))))
    test_ids = set(rng.permutation(unique)[:n_test_mol])
    is_test = np.array([i in test_ids for i in ids])
    test_idx, pool_idx = np.flatnonzero(is_test), np.flatnonzero(~is_test)
    n_valid = max(1, int(round(valid_fraction * len(pool_idx))))
    paths = {"test": data_dir / "qmugs_test.h5", "pool": data_dir / "qmugs_pool.h5"}
    for name, idx in (("test", test_idx), ("pool", pool_idx)):
        if not paths[name].exists() or load_h5(paths[name], charges=None, check=False).n_molecules != len(idx):
            save_h5(full.subset(idx), paths[name], attrs={"description": f"QMugs-style {name} set (GFN2-xTB labels)"})
    return QMugsFiles(
        converted=converted,
        test=paths["test"],
        pool=paths["pool"],
        n_train=len(pool_idx) - n_valid,
        n_valid=n_valid,
        n_test=len(test_idx),
        n_test_molecules=n_test_mol,
        n_molecules=len(unique),
        species=sorted(int(z) for z in np.unique(full.Z)),
    )
