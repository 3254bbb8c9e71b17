"""Shared pytest fixtures: where the real QM9 file is, and single-threaded torch for stable timings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_QM9_H5 = REPO.parent / "shared" / "data" / "qm9" / "qm9_mulliken.h5"

torch.set_num_threads(1)

#: `fastdipole train` options of a tiny, fast model on one CPU thread (tests add --batch-size / --epochs as needed).
TINY_TRAIN = ["--n-features", "8", "--n-sensitivities", "6", "--n-interactions", "1", "--n-atom-layers", "1",
              "--threads", "1", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="session")
def qm9_h5_path() -> Path:
    """Path of the real QM9 HDF5 file (env FASTDIPOLE_QM9_H5 overrides); skips when absent."""
    path = Path(os.environ.get("FASTDIPOLE_QM9_H5", DEFAULT_QM9_H5))
    if not path.exists():
        pytest.skip(f"real QM9 file not found at {path} (set FASTDIPOLE_QM9_H5)")
    return path


def qm9_slice(qm9_h5_path: Path, folder: Path, name: str, molecules: slice) -> Path:
    """Molecules ``molecules`` of the real QM9 file saved as ``folder / name``: a small real-data file for tests."""
    from fastdipole.data import load_h5, save_h5

    path = folder / name
    save_h5(load_h5(qm9_h5_path, molecules=molecules), path)
    return path


@pytest.fixture(scope="session")
def tiny_run(qm9_h5_path, tmp_path_factory):
    """(run folder, data file): a tiny model (nf 8, 2 epochs) trained on 300 real QM9 molecules (H, C, N, O),
    shared by the tests that need any trained model (predict, ASE, export)."""
    from fastdipole.data import load_h5, save_h5
    from fastdipole.train import TrainConfig, train

    tmp = tmp_path_factory.mktemp("tiny_run")
    data = tmp / "qm9_300.h5"
    save_h5(load_h5(qm9_h5_path, molecules=slice(3000, 3300)), data)
    config = TrainConfig(data=str(data), out=str(tmp / "run"), n_features=8, n_sensitivities=6, n_interactions=1,
                         n_atom_layers=1, epochs=2, batch_size=64, eval_batch_size=128, threads=1, device="cpu")
    return train(config, progress=False, log=lambda _msg: None), data
