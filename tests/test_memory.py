"""A batch whose neighbour pairs would not fit the memory budget is refused before anything is allocated, with the
batch and the estimate named; ordinary QM9 batches pass, and the estimate tracks the real pair count."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from fastdipole.data import load_h5
from fastdipole.errors import ModelInputError
from fastdipole.nn import DipoleModel
from fastdipole.ops import estimate_pairs, neighbor_pairs


def _model(**kw):
    return DipoleModel.from_config(species=[1, 6, 7, 8, 9], n_features=16, n_sensitivities=8, **kw)


def test_a_100k_atom_molecule_over_budget_fails_fast():
    rng = np.random.default_rng(0)
    n = 100_000
    side = (n / 0.1) ** (1 / 3)  # liquid-like density, 0.1 atoms per cubic Angstrom
    R = torch.from_numpy(rng.uniform(0, side, size=(n, 3))).float()
    Z = torch.from_numpy(rng.choice([1, 6, 8], size=n))
    offsets = torch.tensor([0, n])
    model = _model()
    model.hipnn.memory_budget_bytes = 100_000_000  # a small-memory setting: 100 MB
    t0 = time.perf_counter()
    with pytest.raises(ModelInputError, match=r"the batch of 1 molecule\(s\), 100,000 atoms would make about "
                                              r"[\d,]+ neighbour pairs needing about [\d.]+ GB, more than the "
                                              r"memory budget of 0.1 GB"):
        model(Z, R, offsets)
    assert time.perf_counter() - t0 < 5.0  # refused from the estimate, not after building the pair list


def test_qm9_batches_pass_and_the_estimate_is_close(qm9_h5_path):
    data = load_h5(qm9_h5_path, molecules=slice(0, 2000))
    R, offsets = torch.from_numpy(data.R), torch.from_numpy(data.offsets)
    estimate, _ = estimate_pairs(R, offsets, 6.5)
    real = neighbor_pairs(R, offsets, 6.5).first.numel()
    assert 0.5 * real < estimate <= 1.5 * real  # small molecules: almost every pair is within the cutoff
    model = _model()
    model.hipnn.memory_budget_bytes = 10**9
    model(torch.from_numpy(data.Z), R, offsets)  # no error
