"""Evaluation API: batched predictions equal one big forward pass; metrics and plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastdipole.data import load_h5
from fastdipole.evaluation import charge_metrics, dipole_metrics, evaluate, parity_plot, save_evaluation
from fastdipole.nn import DipoleModel


@pytest.fixture(scope="module")
def dataset(qm9_h5_path):
    return load_h5(qm9_h5_path, molecules=slice(7000, 7200))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    return DipoleModel.from_config(species=[1, 6, 7, 8, 9], n_features=8, n_sensitivities=6,
                                   n_interaction_layers=1, n_atom_layers=1)


def test_batched_predictions_match_one_forward_pass(dataset, model):
    idx = np.array([150, 3, 77, 42, 199, 0, 120])
    result = evaluate(model, dataset, idx, batch_size=3)
    pred = result.predictions
    sub = dataset.subset(idx)
    with torch.no_grad():
        out = model(torch.from_numpy(sub.Z), torch.from_numpy(sub.R), torch.from_numpy(sub.offsets))
    np.testing.assert_array_equal(pred.index, idx)
    np.testing.assert_allclose(pred.mu_pred_debye, out.magnitude.numpy() * 4.80320, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred.charges_pred, out.charges.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pred.atom_offsets, sub.offsets)
    np.testing.assert_array_equal(pred.mu_label_debye, sub.mu_debye.astype(np.float64))
    np.testing.assert_array_equal(pred.charges_label, sub.charges.astype(np.float64))
    err = pred.mu_pred_debye - pred.mu_label_debye
    assert result.metrics["dipole_mae_debye"] == pytest.approx(np.abs(err).mean())
    assert result.metrics["n_molecules"] == 7 and result.metrics["n_atoms"] == len(sub.Z)
    assert model.training  # evaluate restores the caller's mode


def test_metrics_by_hand():
    m = dipole_metrics([1.0, 2.0, 0.5], [1.5, 2.0, 0.0])
    assert m["dipole_mae_debye"] == pytest.approx(1.0 / 3)
    assert m["dipole_rmse_debye"] == pytest.approx(np.sqrt(0.5 / 3))
    assert m["dipole_mae_e_angstrom"] == pytest.approx(1.0 / 3 / 4.80320)
    assert m["dipole_mean_relative_error_percent"] == pytest.approx(100 * (0.5 / 1.5 + 0) / 2)  # mu = 0 skipped
    assert m["n_molecules_relative"] == 2
    c = charge_metrics([0.1, -0.2], [0.0, 0.0])
    assert c["charge_mae_e"] == pytest.approx(0.15) and c["charge_rmse_e"] == pytest.approx(np.sqrt(0.025))
    with pytest.raises(ValueError):
        dipole_metrics(np.zeros(3), np.zeros((3, 1)))


def test_without_charge_labels(qm9_h5_path, model, tmp_path):
    ds = load_h5(qm9_h5_path, charges=None, molecules=slice(7000, 7050))
    result = evaluate(model, ds, batch_size=16)
    assert result.predictions.charges_label is None and result.metrics["charge_mae_e"] is None
    paths = save_evaluation(result, tmp_path, title="no labels")
    assert set(paths) == {"metrics", "dipole_parity"} and not (tmp_path / "charge_parity.png").exists()
    assert json.loads((tmp_path / "metrics.json").read_text())["n_molecules"] == 50


def test_parity_plot_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    label = rng.gamma(2.0, 1.5, 5000)
    path = parity_plot(label, label + rng.normal(0, 0.3, 5000), tmp_path / "p.png", quantity="|mu|", units="D")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


# ---- metrics that measure the charges, not artefacts -----------------------------------------------------


def test_direction_agreement_tells_q_from_minus_q(dataset):
    """Real Mulliken charges: their own point dipole agrees everywhere, the negated charges nowhere."""
    from fastdipole.data import point_charge_dipoles
    from fastdipole.evaluation.metrics import MIN_DIRECTION_E_ANGSTROM, direction_agreement

    mull = point_charge_dipoles(dataset)
    keep = np.linalg.norm(mull, axis=1) >= MIN_DIRECTION_E_ANGSTROM
    assert direction_agreement(mull, mull)["direction_agreement"] == 1.0
    assert direction_agreement(-mull, mull)["direction_agreement"] == 0.0
    half = mull.copy()
    half[::2] *= -1
    got = direction_agreement(half, mull)
    assert got["direction_agreement"] == pytest.approx(np.mean((np.arange(len(mull)) % 2 == 1)[keep]))
    assert got["n_molecules_direction"] == int(keep.sum())
    assert direction_agreement(np.zeros_like(mull), mull)["direction_agreement"] == 0.0  # no prediction, no agreement


def test_centred_charge_mae_ignores_a_per_molecule_offset(dataset):
    from fastdipole.evaluation.metrics import centred_charge_mae, charge_metrics_by_element, total_charge_metrics

    q = dataset.charges.astype(np.float64)
    counts = np.diff(dataset.offsets)
    offset = np.repeat(np.linspace(-0.3, 0.3, len(counts)), counts)
    assert centred_charge_mae(q + offset, q, dataset.offsets) == pytest.approx(0.0, abs=1e-12)
    assert charge_metrics(q + offset, q)["charge_mae_e"] > 0.05  # the raw MAE sees the offset
    assert centred_charge_mae(-q, q, dataset.offsets) > 0.1  # ... and the centred one sees a sign flip
    sums = total_charge_metrics(q + offset, dataset.offsets)
    given = np.add.reduceat(q + offset, dataset.offsets[:-1])  # per-molecule sums by another route
    assert sums["total_charge_max_abs_e"] == pytest.approx(np.abs(given).max())
    assert sums["total_charge_mean_abs_e"] == pytest.approx(np.abs(given).mean())
    # against a given total charge, the excess is what counts
    assert total_charge_metrics(q + offset, dataset.offsets, given)["total_charge_max_abs_e"] < 1e-9
    by_element = charge_metrics_by_element(q + 0.01, q, dataset.Z)
    assert set(by_element) == {str(z) for z in np.unique(dataset.Z)}
    assert all(v["charge_mae_e"] == pytest.approx(0.01) for v in by_element.values())


def test_evaluate_reports_the_charge_metrics(dataset, model):
    m = evaluate(model, dataset, np.arange(50)).metrics
    for key in ("charge_mae_centred_e", "direction_agreement", "direction_cos_median", "charge_pearson_r",
                "total_charge_mean_abs_e", "total_charge_max_abs_e", "charge_by_element"):
        assert key in m, key
    assert m["total_charge_max_abs_e"] < 1e-5  # the default model is neutral
    assert 0.0 <= m["direction_agreement"] <= 1.0 and -1.0 <= m["charge_pearson_r"] <= 1.0


def _molecules(pred, lo, hi):
    """Molecules lo:hi of Predictions ``pred``."""
    a, b = pred.atom_offsets[lo], pred.atom_offsets[hi]
    per_atom = {"charges_pred", "charges_label", "Z"}
    fields = {}
    for name, value in pred._asdict().items():
        if name == "atom_offsets":
            fields[name] = value[lo:hi + 1] - a
        elif value is None:
            fields[name] = None
        else:
            fields[name] = value[a:b] if name in per_atom else value[lo:hi]
    return type(pred)(**fields)


def test_block_by_block_metrics_equal_the_reference_definitions(dataset, model):
    """The accumulator behind every evaluation (metrics_from_predictions, streamed evaluation) against the plain
    definitions in fastdipole.evaluation.metrics, with the predictions fed in uneven blocks."""
    from fastdipole.evaluation.accumulate import MetricAccumulator
    from fastdipole.evaluation.evaluate import predict
    from fastdipole.evaluation.metrics import centred_charge_mae, charge_metrics_by_element, pearson_r, \
        total_charge_metrics

    whole = predict(model, dataset)
    acc = MetricAccumulator(sample_atoms=1000, expected_atoms=len(whole.charges_pred), seed=3)
    for lo, hi in ((0, 7), (7, 120), (120, 121), (121, 200)):
        acc.add(_molecules(whole, lo, hi))
    got = acc.metrics()
    ref = charge_metrics(whole.charges_pred, whole.charges_label)
    for key in ("charge_mae_e", "charge_rmse_e", "n_atoms"):
        assert got[key] == pytest.approx(ref[key], rel=1e-12), key
    assert got["charge_pearson_r"] == pytest.approx(pearson_r(whole.charges_pred, whole.charges_label), abs=1e-9)
    assert got["charge_mae_centred_e"] == pytest.approx(
        centred_charge_mae(whole.charges_pred, whole.charges_label, whole.atom_offsets), rel=1e-12)
    by_element = charge_metrics_by_element(whole.charges_pred, whole.charges_label, whole.Z)
    assert got["charge_by_element"].keys() == by_element.keys()
    for z, v in by_element.items():
        assert got["charge_by_element"][z]["charge_mae_e"] == pytest.approx(v["charge_mae_e"], rel=1e-12)
    tc = total_charge_metrics(whole.charges_pred, whole.atom_offsets, whole.total_charge)
    assert got["total_charge_max_abs_e"] == pytest.approx(tc["total_charge_max_abs_e"], rel=1e-9, abs=1e-15)
    assert got["dipole_mae_debye"] == pytest.approx(evaluate(model, dataset).metrics["dipole_mae_debye"], rel=1e-12)
    _, _, (labels, preds) = acc.plot_points()
    assert 500 < len(labels) < 1600 and len(labels) == len(preds)  # the sample, not every atom
