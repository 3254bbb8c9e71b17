"""The Mulliken point-charge dipole baseline (library and `fastdipole baseline mulliken`), and element mean charges."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from fastdipole.cli import main
from fastdipole.data import (
    average_charge_labels,
    bundled_sample_path,
    element_mean_charges,
    load_h5,
    make_split,
    mulliken_point_charge_baseline,
    save_split,
)
from fastdipole.data.baseline import point_charge_dipoles
from fastdipole.errors import DataError
from fastdipole.units import DEBYE_PER_E_ANGSTROM


@pytest.fixture(scope="module")
def full(qm9_h5_path):
    return load_h5(qm9_h5_path)


@pytest.fixture(scope="module")
def sample():
    return load_h5(bundled_sample_path())


def test_full_qm9_baseline_matches_published_numbers(full):
    r = mulliken_point_charge_baseline(full)
    assert r["n_molecules"] == 130_831 and r["n_molecules_relative"] == 130_786
    assert round(r["mae_e_angstrom"], 4) == 0.1149
    assert round(r["rmse_e_angstrom"], 4) == 0.1432
    assert round(r["mae_debye"], 4) == 0.5518
    assert round(r["rmse_debye"], 4) == 0.6876
    assert round(r["mean_relative_error_percent"], 2) == 30.75


def test_full_qm9_element_mean_charges(full):
    means = element_mean_charges(full, np.arange(full.n_molecules))
    published = {1: 0.1293, 6: -0.0684, 7: -0.3014, 8: -0.3233, 9: -0.0657}
    assert sorted(means) == sorted(published)
    for z, value in published.items():
        assert round(means[z], 4) == value, z


def test_point_charge_dipole_matches_explicit_loop(sample):
    vec = point_charge_dipoles(sample)
    for m in (0, 1, 1234, 3999):
        Z, R = sample.molecule(m)
        q = sample.charges[sample.offsets[m] : sample.offsets[m + 1]].astype(np.float64)
        R = R.astype(np.float64)
        expected = sum(qi * (ri - R.mean(axis=0)) for qi, ri in zip(q, R))
        np.testing.assert_allclose(vec[m], expected, atol=1e-10)


def test_baseline_on_subset_equals_baseline_of_subset(sample):
    idx = np.arange(0, 4000, 7)
    a = mulliken_point_charge_baseline(sample, idx)
    b = mulliken_point_charge_baseline(sample.subset(idx))
    assert a == b and a["n_molecules"] == len(idx)
    pred = np.linalg.norm(point_charge_dipoles(sample.subset(idx)), axis=1)
    label = sample.mu_debye[idx] / DEBYE_PER_E_ANGSTROM
    assert a["mae_e_angstrom"] == pytest.approx(np.mean(np.abs(pred - label)))
    assert a["mae_debye"] == pytest.approx(a["mae_e_angstrom"] * DEBYE_PER_E_ANGSTROM)


def test_baseline_needs_charges():
    ds = load_h5(bundled_sample_path(), charges=None, molecules=slice(0, 5))
    with pytest.raises(DataError, match="no per-atom charge array"):
        mulliken_point_charge_baseline(ds)


def test_average_charge_labels_and_unknown_element(sample):
    means = element_mean_charges(sample, np.arange(1000))
    assert 9 in means
    labels = average_charge_labels(sample, means)
    assert labels.dtype == np.float32 and labels.shape == (sample.n_atoms,)
    for z in means:
        np.testing.assert_allclose(labels[sample.Z == z], means[z], rtol=1e-6)
    no_f = {z: v for z, v in means.items() if z != 9}
    first_f = int(sample.molecule_of_atom(np.flatnonzero(sample.Z == 9)[0]))
    with pytest.raises(DataError, match=f"molecule {first_f} has element Z=9"):
        average_charge_labels(sample, no_f)


def test_cli_baseline_full_file(qm9_h5_path):
    result = CliRunner().invoke(main, ["baseline", "mulliken", "--data", str(qm9_h5_path)])
    assert result.exit_code == 0, result.output
    assert "MAE  0.1149 e*A = 0.5518 D" in result.output
    assert "RMSE 0.1432 e*A = 0.6876 D" in result.output
    assert "mean relative error 30.75%" in result.output


def test_cli_baseline_on_split(sample, tmp_path):
    split = make_split(sample.n_molecules, seed=0)
    path = save_split(split, tmp_path / "split.npz")
    data = str(bundled_sample_path())
    result = CliRunner().invoke(main, ["baseline", "mulliken", "--data", data, "--split-file", str(path), "--split", "valid"])
    assert result.exit_code == 0, result.output
    r = mulliken_point_charge_baseline(sample, split["valid"])
    assert f"{r['n_molecules']} molecules" in result.output and r["n_molecules"] == 400
    assert f"MAE  {r['mae_e_angstrom']:.4f} e*A = {r['mae_debye']:.4f} D" in result.output
    bad = CliRunner().invoke(main, ["baseline", "mulliken", "--data", data, "--split-file", str(path), "--split", "holdout"])
    assert bad.exit_code == 2 and "no split named 'holdout'" in bad.output


def test_cli_bad_file_prints_one_error_line(tmp_path):
    path = tmp_path / "bad.h5"
    path.write_text("not hdf5")
    result = CliRunner().invoke(main, ["baseline", "mulliken", "--data", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]


def test_cli_data_info(sample):
    result = CliRunner().invoke(main, ["data", "info", str(bundled_sample_path())])
    assert result.exit_code == 0, result.output
    assert "molecules: 4000" in result.output
    assert f"atoms: {sample.n_atoms}" in result.output
    assert "R " in result.output and "Angstrom" in result.output and "Debye" in result.output
    for el in ("H", "C", "N", "O", "F"):
        assert f"{el} {int((sample.Z == {'H': 1, 'C': 6, 'N': 7, 'O': 8, 'F': 9}[el]).sum())}" in result.output
