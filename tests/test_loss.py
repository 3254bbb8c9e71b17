"""The paper's loss, term by term, against a hand-computed numpy version on a real QM9 batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastdipole.data import BatchLoader, average_charge_labels, element_mean_charges, load_h5
from fastdipole.nn import DipoleModel
from fastdipole.train import batch_loss, paper_loss

D_PER_EA = 4.80320
L1, L2 = 0.04, 0.96


@pytest.fixture(scope="module")
def dataset(qm9_h5_path):
    return load_h5(qm9_h5_path, molecules=slice(1000, 1200))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DipoleModel.from_config(species=[1, 6, 7, 8, 9], n_features=8, n_sensitivities=6,
                                   n_interaction_layers=1, n_atom_layers=1)


def first_batch(dataset, **kw):
    return next(iter(BatchLoader(dataset, np.arange(64), batch_size=64, **kw)))


def numpy_loss(q_pred, q_label, mag_pred_ea, mu_label_debye, use_charges):
    mag_label = mu_label_debye.astype(np.float64) / D_PER_EA
    mu_err = mag_pred_ea.astype(np.float64) - mag_label
    terms = {"dipole_rmse": np.sqrt(np.mean(mu_err**2)), "dipole_mae": np.mean(np.abs(mu_err))}
    total = L2 * (terms["dipole_rmse"] + terms["dipole_mae"])
    if use_charges:
        q_err = q_pred.astype(np.float64) - q_label.astype(np.float64)
        terms.update(charge_rmse=np.sqrt(np.mean(q_err**2)), charge_mae=np.mean(np.abs(q_err)),
                     charge_abs_mean=np.mean(np.abs(q_pred.astype(np.float64))))
        total += L1 * (terms["charge_rmse"] + terms["charge_mae"] + terms["charge_abs_mean"])
    terms["total"] = total
    return terms


def check_terms(terms, expected, use_charges):
    got = terms.as_floats()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=2e-5, abs=1e-7), name
    if not use_charges:
        assert got["charge_rmse"] is None and got["charge_mae"] is None and got["charge_abs_mean"] is None


def test_mulliken_mode_matches_numpy(dataset, model):
    batch = first_batch(dataset)
    out = model(batch.Z, batch.R, batch.offsets)
    terms = batch_loss(out, batch, "mulliken", L1, L2)
    expected = numpy_loss(out.charges.detach().numpy(), dataset.charges[: batch.offsets[-1]],
                          out.magnitude.detach().numpy(), dataset.mu_debye[:64], True)
    check_terms(terms, expected, True)
    # the charge term really is in the total, with the paper's weights
    no_q = batch_loss(out, batch, "none", L1, L2)
    gap = L1 * (expected["charge_rmse"] + expected["charge_mae"] + expected["charge_abs_mean"])
    assert float((terms.total - no_q.total).detach()) == pytest.approx(gap, rel=1e-5)


def test_none_mode_drops_charge_terms_and_needs_no_labels(qm9_h5_path, model):
    ds = load_h5(qm9_h5_path, charges=None, molecules=slice(1000, 1200))
    batch = first_batch(ds)
    assert batch.charges is None
    out = model(batch.Z, batch.R, batch.offsets)
    terms = batch_loss(out, batch, "none", L1, L2)
    expected = numpy_loss(out.charges.detach().numpy(), None, out.magnitude.detach().numpy(), ds.mu_debye[:64], False)
    check_terms(terms, expected, False)
    with pytest.raises(ValueError, match="needs per-atom charge labels"):
        batch_loss(out, batch, "mulliken", L1, L2)


def test_average_mode_uses_training_split_element_means(dataset, model):
    train_idx = np.arange(100, 200)
    means = element_mean_charges(dataset, train_idx)
    labels = average_charge_labels(dataset, means)
    batch = first_batch(dataset, charges=labels)
    n = int(batch.offsets[-1])
    expected_labels = np.array([means[int(z)] for z in dataset.Z[:n]])
    np.testing.assert_allclose(batch.charges.numpy(), expected_labels, rtol=1e-6)
    # hydrogens are positive, oxygens negative on average (Mulliken)
    assert means[1] > 0 > means[8]
    out = model(batch.Z, batch.R, batch.offsets)
    terms = batch_loss(out, batch, "average", L1, L2)
    expected = numpy_loss(out.charges.detach().numpy(), expected_labels, out.magnitude.detach().numpy(),
                          dataset.mu_debye[:64], True)
    check_terms(terms, expected, True)
    mulliken = batch_loss(out, first_batch(dataset), "mulliken", L1, L2)
    assert float(mulliken.charge_mae.detach()) != pytest.approx(float(terms.charge_mae.detach()), rel=1e-3)


def test_dipole_terms_use_e_angstrom_magnitudes():
    pred = torch.tensor([1.0, 2.0])  # e*A
    label = torch.tensor([1.0, 2.0]) * D_PER_EA  # same magnitudes in Debye
    q = torch.zeros(3)
    batch = type("B", (), {"mu_debye": label, "charges": None})()
    out = type("O", (), {"charges": q, "magnitude": pred})()
    terms = batch_loss(out, batch, "none", L1, L2)
    assert float(terms.total.detach()) == pytest.approx(0.0, abs=1e-6)


def test_shape_mismatch_raises_instead_of_broadcasting():
    q = torch.zeros(5)
    with pytest.raises(ValueError, match="n_molecules"):
        paper_loss(q, q, torch.ones(4), torch.ones(4, 1))
    with pytest.raises(ValueError, match="n_atoms"):
        paper_loss(q, torch.zeros(5, 1), torch.ones(4), torch.ones(4))


def test_gradients_flow_to_all_parameters(dataset, model):
    batch = first_batch(dataset)
    model.zero_grad()
    batch_loss(model(batch.Z, batch.R, batch.offsets), batch, "mulliken").total.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


# ---- the direction term of fastdipole's recipe --------------------------------------------------------


def test_direction_term_is_off_by_default_and_exactly_the_paper_loss(dataset, model):
    batch = first_batch(dataset)
    out = model(batch.Z, batch.R, batch.offsets)
    plain = batch_loss(out, batch, "mulliken", L1, L2)
    assert plain.direction is None
    assert float(batch_loss(out, batch, "mulliken", L1, L2, direction_weight=0.0).total.detach()) == float(
        plain.total.detach())
    # without charge labels there is no label dipole: the term cannot act
    assert batch_loss(out, batch, "none", L1, L2, direction_weight=1.0).direction is None


def _label_dipole(dataset, batch):
    from fastdipole.nn import centroid_point_dipole

    return centroid_point_dipole(batch.charges.double(), batch.R.double(), batch.offsets)


@pytest.mark.parametrize("sign, batch_form, molecule_form", [(1.0, 0.0, 0.0), (-1.0, 1.5, 1.0)])
def test_direction_hinge_values_on_real_mulliken_dipoles(dataset, sign, batch_form, molecule_form):
    """Predicted dipole = +/- the Mulliken point dipole: cos = +/- 1 for every molecule with a direction."""
    batch = first_batch(dataset)
    label = _label_dipole(dataset, batch)
    pred = sign * label
    q = batch.charges.double()
    mag = torch.linalg.vector_norm(pred, dim=-1)
    for form, expected in (("batch", batch_form), ("molecule", molecule_form)):
        terms = paper_loss(q, q, mag, mag, L1, L2, pred_dipole=pred, label_dipole=label, direction_weight=2.0,
                           direction_form=form)
        share = float((torch.linalg.vector_norm(label, dim=-1) >= 1e-3).double().mean())
        want = expected if form == "batch" else expected * share
        assert float(terms.direction) == pytest.approx(want, abs=1e-9), form
        base = paper_loss(q, q, mag, mag, L1, L2)
        assert float(terms.total - base.total) == pytest.approx(2.0 * want, abs=1e-9)


def test_direction_hinge_pushes_a_flipped_model_back(dataset, model):
    """On a model with negated charges the hinge has a gradient; on the same model un-negated it has none."""
    batch = first_batch(dataset)
    out = model(batch.Z, batch.R, batch.offsets)
    label = _label_dipole(dataset, batch).float()
    cos = torch.nn.functional.cosine_similarity(out.dipole, label, dim=-1).mean()
    flipped = out.dipole if float(cos.detach()) < 0.5 else -out.dipole  # a batch-mean cosine below the margin
    flipped = flipped.detach().requires_grad_(True)
    q = batch.charges
    terms = paper_loss(q, q, torch.linalg.vector_norm(flipped, dim=-1), torch.zeros(batch.n_molecules), L1, L2,
                       pred_dipole=flipped, label_dipole=label, direction_weight=1.0)
    (grad,) = torch.autograd.grad(terms.direction, flipped)
    assert float(terms.direction.detach()) > 0 and float(grad.abs().sum()) > 0
    aligned = label.clone().requires_grad_(True)
    terms = paper_loss(q, q, torch.linalg.vector_norm(aligned, dim=-1), torch.zeros(batch.n_molecules), L1, L2,
                       pred_dipole=aligned, label_dipole=label, direction_weight=1.0)
    assert float(terms.direction.detach()) == 0.0
