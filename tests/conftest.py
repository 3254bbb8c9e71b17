"""Shared pytest fixtures: where the real QM9 file is, and single-threaded torch for stable timings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_QM9_H5 = REPO.parent / "shared" / "data" / "qm9" / "qm9_mulliken.h5"

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def qm9_h5_path() -> Path:
    """Path of the real QM9 HDF5 file (env FASTDIPOLE_QM9_H5 overrides); skips when absent."""
    path = Path(os.environ.get("FASTDIPOLE_QM9_H5", DEFAULT_QM9_H5))
    if not path.exists():
        pytest.skip(f"real QM9 file not found at {path} (set FASTDIPOLE_QM9_H5)")
    return path
