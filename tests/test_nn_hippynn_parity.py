"""fastdipole's HIP-NN computes the same function as hippynn 0.1.3 (float64, real QM9 molecules)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

hippynn = pytest.importorskip("hippynn")
from hippynn.layers.targets import HCharge  # noqa: E402
from hippynn.networks.hipnn import Hipnn  # noqa: E402

from fastdipole import ops  # noqa: E402
from fastdipole.nn import DipoleModel  # noqa: E402

SETTINGS = dict(n_sensitivities=20, dist_soft_min=0.85, dist_soft_max=5.0, dist_hard_max=6.5, n_atom_layers=3)


def _qm9_slice(path, start, count):
    with h5py.File(path, "r") as f:
        off = f["offsets"][start : start + count + 1]
        Z = f["Z"][off[0] : off[-1]].astype(np.int64)
        R = f["R"][off[0] : off[-1]].astype(np.float64)
    return torch.from_numpy(Z), torch.from_numpy(R), torch.from_numpy(off - off[0])


def _hippynn_modules(n_features, seed):
    torch.manual_seed(seed)
    net = Hipnn(n_features=n_features, n_interaction_layers=2, possible_species=[0, 1, 6, 7, 8, 9], **SETTINGS)
    head = HCharge(net.feature_sizes)
    # Random, non-default sensitivity parameters so mu/sigma mistakes cannot hide behind the init.
    with torch.no_grad():
        for layer in net.interaction_layers:
            layer.sensitivity.mu.mul_(1 + 0.1 * torch.rand_like(layer.sensitivity.mu))
            layer.sensitivity.sigma.mul_(1 + 0.1 * torch.rand_like(layer.sensitivity.sigma))
    return net.double(), head.double()


def _hippynn_forward(net, head, model, Z, R, off):
    """Run hippynn's modules on our one-hot features and pairs (its own padded pipeline is a graph API)."""
    z0 = model.hipnn.one_hot(Z).double()
    pairs = ops.reference.neighbor_pairs(R, off, 6.5)
    r = (R[pairs[1]] - R[pairs[0]]).norm(dim=-1)
    q = head(net(z0, pairs[0], pairs[1], r))[0].squeeze(-1)
    mol = ops.molecule_index(off, R.shape[0])
    dip = torch.zeros(off.numel() - 1, 3, dtype=R.dtype).index_add(0, mol, q[:, None] * R)
    return q, dip


@pytest.mark.parametrize("n_features,seed,start", [(60, 0, 0), (128, 1, 5000)])
def test_same_charges_and_dipoles_as_hippynn(qm9_h5_path, n_features, seed, start):
    Z, R, off = _qm9_slice(qm9_h5_path, start, 40)
    net, head = _hippynn_modules(n_features, seed)
    for backend in ("reference", "auto"):
        model = DipoleModel.from_hippynn(net, head, dipole_origin="absolute", backend=backend)
        assert next(model.parameters()).dtype == torch.float64
        ours = model(Z, R, off)
        q_ref, dip_ref = _hippynn_forward(net, head, model, Z, R, off)
        torch.testing.assert_close(ours.charges, q_ref, rtol=1e-10, atol=1e-12)
        # Dipole components can cancel to ~0: compare relative to the batch's dipole scale.
        scale = float(dip_ref.detach().abs().max())
        torch.testing.assert_close(ours.dipole, dip_ref, rtol=1e-10, atol=1e-10 * scale)
        torch.testing.assert_close(ours.magnitude, dip_ref.norm(dim=-1), rtol=1e-10, atol=1e-10 * scale)


def test_state_dict_keys_and_shapes_match_hippynn():
    net, head = _hippynn_modules(60, 0)
    model = DipoleModel.from_hippynn(net, head)
    ours = {k: v.shape for k, v in model.hipnn.state_dict().items()}
    theirs = {k: v.shape for k, v in net.state_dict().items()}
    assert ours == theirs
    assert {k: v.shape for k, v in model.charges.state_dict().items()} == {
        k: v.shape for k, v in head.state_dict().items()
    }
    # And back: hippynn accepts our fresh model's weights.
    fresh = DipoleModel.from_config(n_features=60).double()
    net.load_state_dict(fresh.hipnn.state_dict())


def test_initialisation_statistics_match_hippynn():
    """Same init scheme: sensitivities identical, xavier-normal weight scales close."""
    net, _ = _hippynn_modules(128, 3)
    torch.manual_seed(3)
    net = Hipnn(n_features=128, n_interaction_layers=2, possible_species=[0, 1, 6, 7, 8, 9], **SETTINGS)
    model = DipoleModel.from_config(n_features=128)
    ours, theirs = model.hipnn.state_dict(), net.state_dict()
    for key in theirs:
        if key.endswith(("mu", "sigma")):
            torch.testing.assert_close(ours[key], theirs[key].float())
        elif key.endswith("int_weights") or key.endswith("base_layer.weight"):
            assert ours[key].std() == pytest.approx(float(theirs[key].std()), rel=0.1), key


def test_centroid_origin_equals_absolute_on_centred_molecules(qm9_h5_path):
    Z, R, off = _qm9_slice(qm9_h5_path, 100, 10)
    net, head = _hippynn_modules(60, 2)
    absolute = DipoleModel.from_hippynn(net, head, dipole_origin="absolute", backend="reference")
    centroid = DipoleModel.from_hippynn(net, head, dipole_origin="centroid", backend="reference")
    mol = ops.molecule_index(off, R.shape[0])
    centres = torch.zeros(off.numel() - 1, 3, dtype=R.dtype).index_add(0, mol, R) / (off[1:] - off[:-1])[:, None]
    R_centred = R - centres[mol]
    torch.testing.assert_close(centroid(Z, R, off).dipole, absolute(Z, R_centred, off).dipole)
    # ... and the centroid model is translation invariant while the absolute one is not.
    shift = torch.tensor([3.0, -2.0, 1.5], dtype=R.dtype)
    torch.testing.assert_close(centroid(Z, R + shift, off).dipole, centroid(Z, R, off).dipole)
    assert not torch.allclose(absolute(Z, R + shift, off).dipole, absolute(Z, R, off).dipole)
