"""The total-charge constraint of DipoleModel, on real QM9 molecules: charges sum to each molecule's total
charge, the dipole of a neutral molecule does not depend on the origin, and the paper's head stays unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastdipole.data import BatchLoader, element_mean_charges, load_h5
from fastdipole.nn import DipoleModel, project_total_charge


@pytest.fixture(scope="module")
def dataset(qm9_h5_path):
    return load_h5(qm9_h5_path, molecules=slice(2000, 2100))


def _model(constraint="uniform", origin="centroid", seed=0):
    torch.manual_seed(seed)
    return DipoleModel.from_config(species=[1, 6, 7, 8, 9], n_features=16, n_sensitivities=8, n_interaction_layers=2,
                                   n_atom_layers=1, charge_constraint=constraint, dipole_origin=origin).double()


def _batch(dataset, n=64):
    return next(iter(BatchLoader(dataset, np.arange(n), batch_size=n, dtype=torch.float64)))


def _sums(q, offsets):
    mol = torch.repeat_interleave(torch.arange(len(offsets) - 1), offsets.diff())
    return torch.zeros(len(offsets) - 1, dtype=q.dtype).index_add(0, mol, q.detach())


def test_charges_sum_to_zero_and_to_a_given_total_charge(dataset):
    model = _model()
    batch = _batch(dataset)
    out = model(batch.Z, batch.R, batch.offsets)
    assert float(_sums(out.charges, batch.offsets).abs().max()) < 1e-12
    total = torch.tensor([(-1.0) ** m for m in range(batch.n_molecules)], dtype=torch.float64)  # +1 / -1 ions
    ions = model(batch.Z, batch.R, batch.offsets, total)
    torch.testing.assert_close(_sums(ions.charges, batch.offsets), total, atol=1e-12, rtol=0)
    # the unconstrained head (the paper's) gives charges that do not sum to 0
    raw = _model("none")(batch.Z, batch.R, batch.offsets)
    assert float(_sums(raw.charges, batch.offsets).abs().mean()) > 1e-3


def test_projection_is_the_even_shift_of_the_raw_head(dataset):
    batch = _batch(dataset)
    raw = _model("none")(batch.Z, batch.R, batch.offsets).charges  # same seed: same weights
    constrained = _model("uniform")(batch.Z, batch.R, batch.offsets).charges
    counts = batch.offsets.diff()
    shift = torch.repeat_interleave(_sums(raw, batch.offsets) / counts, counts)
    torch.testing.assert_close(constrained, raw - shift.to(raw.dtype))
    torch.testing.assert_close(project_total_charge(constrained, batch.offsets), constrained)  # idempotent


def test_neutral_dipole_does_not_depend_on_the_origin(dataset):
    batch = _batch(dataset)
    shift = torch.tensor([13.0, -7.5, 2.25], dtype=torch.float64)
    for origin in ("centroid", "absolute"):
        model = _model(origin=origin)
        a = model(batch.Z, batch.R, batch.offsets).dipole
        b = model(batch.Z, batch.R + shift, batch.offsets).dipole
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    # without the constraint, absolute coordinates make the dipole depend on the origin
    raw = _model("none", "absolute")
    assert float((raw(batch.Z, batch.R, batch.offsets).dipole
                  - raw(batch.Z, batch.R + shift, batch.offsets).dipole).detach().abs().max()) > 1e-3


def test_an_empty_molecule_stays_empty_and_gradients_flow(dataset):
    batch = _batch(dataset, 3)
    offsets = torch.cat([batch.offsets[:2], batch.offsets[1:2], batch.offsets[2:]])  # molecule 1 has no atoms
    R = batch.R.clone().requires_grad_(True)
    out = _model()(batch.Z, R, offsets)
    assert out.dipole.shape == (4, 3) and float(out.dipole[1].detach().abs().sum()) == 0.0
    out.magnitude.sum().backward()
    assert torch.isfinite(R.grad).all() and float(R.grad.abs().sum()) > 0


def test_element_charges_set_the_level0_readout(dataset):
    model = _model()
    means = element_mean_charges(dataset)
    model.charges.set_element_charges(model.hipnn.species, means)
    w = model.charges.layers[0].weight.detach()[0]
    assert w.tolist() == pytest.approx([means.get(z, 0.0) for z in model.hipnn.species])
    assert means[1] > 0 > means[8]  # Mulliken: H positive, O negative
    with pytest.raises(ValueError, match="species columns"):
        model.charges.set_element_charges([1, 6], means)
