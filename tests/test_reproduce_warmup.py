"""The trainer's charge-only warm-up (``charge_warmup_epochs``) used by reproduce's sign-flip study.

Warm-up epochs use l2 = 0 (charge terms only), so they must train exactly like an l2 = 0 run; after
the warm-up the paper's loss takes over; resuming across the boundary is exact.
"""

from __future__ import annotations

import pytest
import torch

from fastdipole.data import bundled_sample_path, load_h5, save_h5
from fastdipole.train import TrainConfig, load_checkpoint, read_history, train


@pytest.fixture(scope="module")
def small_h5(tmp_path_factory):
    path = tmp_path_factory.mktemp("warmup") / "small.h5"
    save_h5(load_h5(bundled_sample_path(), molecules=slice(0, 150)), path)
    return path


def _config(small_h5, out, **changes) -> TrainConfig:
    base = dict(data=str(small_h5), out=str(out), charges="mulliken", seed=3, n_features=8, n_sensitivities=6,
                n_interactions=1, n_atom_layers=1, batch_size=50, epochs=1, threads=1)
    return TrainConfig(**{**base, **changes})


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoint_last.pt")["model"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train(config: TrainConfig, **kw):
    return train(config, progress=False, log=lambda msg: None, **kw)


def test_config_checks_the_warmup():
    with pytest.raises(ValueError, match="needs charge labels"):
        TrainConfig(charges="none", charge_warmup_epochs=1)
    with pytest.raises(ValueError, match=">= 0"):
        TrainConfig(charge_warmup_epochs=-1)
    assert TrainConfig().charge_warmup_epochs == 0
    assert TrainConfig.from_dict({"charges": "average", "charge_warmup_epochs": 2}).charge_warmup_epochs == 2


def test_warmup_epochs_train_charges_only_then_the_paper_loss(small_h5, tmp_path):
    warm = _train(_config(small_h5, tmp_path / "warm", epochs=2, charge_warmup_epochs=1))
    charge_only = _train(_config(small_h5, tmp_path / "l2zero", epochs=1, l2=0.0))
    paper = _train(_config(small_h5, tmp_path / "paper", epochs=1))
    # epoch 1 of the warm-up run == an l2 = 0 run; it differs from an epoch of the paper's loss
    warm1 = _train(_config(small_h5, tmp_path / "warm1", epochs=1, charge_warmup_epochs=1))
    assert _same(_weights(warm1), _weights(charge_only))
    assert not _same(_weights(warm1), _weights(paper))
    # epoch 2 uses the dipole term again: it differs from a second charge-only epoch
    charge_only2 = _train(_config(small_h5, tmp_path / "l2zero2", epochs=2, l2=0.0))
    assert not _same(_weights(warm), _weights(charge_only2))
    hist = read_history(warm)
    assert [r["epoch"] for r in hist] == [1, 2]


def test_resume_across_the_warmup_boundary_is_exact(small_h5, tmp_path):
    straight = _train(_config(small_h5, tmp_path / "straight", epochs=3, charge_warmup_epochs=2))
    part = _train(_config(small_h5, tmp_path / "part", epochs=1, charge_warmup_epochs=2))
    resumed = _train(_config(small_h5, part, epochs=3, charge_warmup_epochs=2), resume=True)
    assert _same(_weights(resumed), _weights(straight))
    assert [r["valid_dipole_mae_e_angstrom"] for r in read_history(resumed)] == pytest.approx(
        [r["valid_dipole_mae_e_angstrom"] for r in read_history(straight)], rel=1e-6)
