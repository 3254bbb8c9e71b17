"""Training on dipole vectors (`--dipole-target vector`) on the GFN2-xTB QMugs-style fixture (tests/fixtures/qmugs):
the loss compares vectors, training runs through the CLI with ions' total charges, evaluate reports vector errors,
and files without vectors are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import TINY_TRAIN
from fastdipole.cli import main
from fastdipole.data import BatchLoader, load_h5
from fastdipole.nn import DipoleModel
from fastdipole.train import batch_loss
from fastdipole.units import DEBYE_PER_E_ANGSTROM

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "qmugs"
TINY = [*TINY_TRAIN, "--batch-size", "16"]


@pytest.fixture(scope="module")
def gfn2_h5(tmp_path_factory):
    pytest.importorskip("rdkit")
    out = tmp_path_factory.mktemp("vector") / "gfn2.h5"
    result = CliRunner().invoke(main, ["data", "qmugs", str(FIXTURE), "--level", "gfn2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_vector_loss_is_the_norm_of_the_vector_error(gfn2_h5):
    data = load_h5(gfn2_h5)
    torch.manual_seed(0)
    model = DipoleModel.from_config(species=sorted(set(data.Z.tolist())), n_features=8, n_sensitivities=6,
                                    n_interaction_layers=1, n_atom_layers=1).double()
    batch = next(iter(BatchLoader(data, np.arange(20), batch_size=20, dtype=torch.float64)))
    out = model(batch.Z, batch.R, batch.offsets, batch.total_charge)
    terms = batch_loss(out, batch, "none", 0.04, 0.96, dipole_target="vector")
    err = np.linalg.norm(out.dipole.detach().numpy() - data.mu_vec_debye[:20] / DEBYE_PER_E_ANGSTROM, axis=1)
    assert float(terms.dipole_mae.detach()) == pytest.approx(err.mean(), rel=1e-6)
    assert float(terms.dipole_rmse.detach()) == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-6)
    magnitude = batch_loss(out, batch, "none", 0.04, 0.96)
    assert float(magnitude.dipole_mae.detach()) < float(terms.dipole_mae.detach())  # |a| - |b| <= |a - b|


def test_training_on_vectors_through_the_cli(gfn2_h5, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(gfn2_h5), "--out", str(run), "--epochs", "3",
                                       "--dipole-target", "vector", "--train", "0.6", "--valid", "0.2", *TINY])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["dipole_target"] == "vector"
    evaluated = CliRunner().invoke(main, ["evaluate", "--model", str(run), "--split", "all"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((run / "eval_all" / "metrics.json").read_text())
    assert metrics["dipole_vector_mae_e_angstrom"] >= metrics["dipole_mae_e_angstrom"] > 0
    assert metrics["total_charge_max_abs_e"] < 1e-5  # the fixture's cations and anions keep their charges


def test_vector_target_needs_vectors(qm9_h5_path, tmp_path):
    from fastdipole.data import save_h5

    data = tmp_path / "qm9.h5"
    save_h5(load_h5(qm9_h5_path, molecules=slice(0, 50)), data)
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(tmp_path / "r"),
                                       "--dipole-target", "vector", *TINY])
    assert result.exit_code == 2 and "needs dipole vectors (array 'mu_vec')" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
