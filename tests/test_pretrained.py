"""The QM9 model shipped with the package: it loads by name, refuses other elements by name, and its test
metrics (metrics.json, quoted in the README) hold on QM9's test split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import fastdipole
from conftest import REPO
from fastdipole.cli import main
from fastdipole.data import load_h5, make_split
from fastdipole.evaluation import evaluate
from fastdipole.pretrained import pretrained_dir
from fastdipole.train import read_config

METRICS = json.loads((pretrained_dir("qm9") / "metrics.json").read_text())


def test_shipped_files_are_small_and_load():
    size = sum(p.stat().st_size for p in pretrained_dir("qm9").iterdir())
    assert size < 2_000_000
    model = fastdipole.pretrained("qm9")
    assert model.hipnn.species == [1, 6, 7, 8, 9] and model.charge_constraint == "uniform"
    assert read_config(pretrained_dir("qm9"))[0].loss == "fastdipole"


def test_metrics_hold_on_the_test_split(qm9_h5_path):
    """All 10,831 test molecules (a few seconds): a slice would not do, the RMSE rests on a few outliers."""
    config, _ = read_config(pretrained_dir("qm9"))
    dataset = load_h5(qm9_h5_path)
    test = make_split(dataset.n_molecules, protocol="qm9", seed=config.seed)["test"]
    m = evaluate(fastdipole.pretrained("qm9"), dataset, test).metrics
    for key in ("dipole_mae_e_angstrom", "dipole_rmse_e_angstrom", "charge_mae_e", "direction_agreement"):
        assert m[key] == pytest.approx(METRICS[key], rel=1e-4), key
    assert m["total_charge_max_abs_e"] < 1e-5


def test_readme_quotes_the_metrics():
    readme = (REPO / "README.md").read_text()
    for key in ("dipole_mae_e_angstrom", "dipole_mae_debye", "charge_mae_e"):
        assert f"{METRICS[key]:.4f}" in readme, key


def test_predict_defaults_to_it_and_refuses_other_elements(tmp_path):
    pytest.importorskip("rdkit")
    out = tmp_path / "d.csv"
    result = CliRunner().invoke(main, ["predict", "--smiles", "O", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("qm9 (the model shipped with fastdipole)")
    refused = CliRunner().invoke(main, ["predict", "--smiles", "ClCCl"])
    assert refused.exit_code == 2 and "element Cl is not one of the model's elements (H, C, N, O, F)" in refused.output
    mu = float(np.loadtxt(out, delimiter=",", skiprows=1, usecols=3))
    assert 1.2 < mu < 2.6  # water: 1.85 D measured (an MMFF geometry here, not QM9's B3LYP one)
