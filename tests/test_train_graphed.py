"""The padded training step behind ``--cuda-graphs`` computes the plain step's loss and gradients (real QM9).

On the CPU the padded computation runs eagerly (``capture=False``); tests/test_cuda_model.py replays it from
CUDA graphs on a GPU.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fastdipole.data import BatchLoader, load_h5, point_charge_dipoles
from fastdipole.nn import DipoleModel
from fastdipole.train.graphed import GraphedTrainStep, PadSteps, round_up
from fastdipole.train.loss import batch_loss, paper_loss, weighted_paper_loss


@pytest.fixture(scope="module")
def qm9_300(qm9_h5_path):
    return load_h5(qm9_h5_path, molecules=slice(5000, 5300))


def model64(dipole_origin="centroid", seed=0):
    torch.manual_seed(seed)
    return DipoleModel.from_config(n_features=16, n_interaction_layers=2, n_atom_layers=2, n_sensitivities=8,
                                   backend="compiled", dipole_origin=dipole_origin).double()


def plain_step(model, batch, charge_mode, l1, l2, direction_weight=0.0, direction_form="batch",
               dipole_target="magnitude"):
    model.zero_grad(set_to_none=True)
    out = model(batch.Z, batch.R, batch.offsets, batch.total_charge)
    terms = batch_loss(out, batch, charge_mode, l1, l2, direction_weight, direction_form, dipole_target)
    terms.total.backward()
    return terms, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("charge_mode,dipole_origin,l2,direction_weight,direction_form,ions,target", [
    ("mulliken", "centroid", 0.96, 0.0, "batch", False, "magnitude"),
    ("none", "absolute", 0.96, 0.0, "batch", False, "magnitude"),
    ("mulliken", "centroid", 0.0, 0.0, "batch", False, "magnitude"),
    ("mulliken", "centroid", 0.96, 1.0, "batch", True, "magnitude"),
    ("mulliken", "centroid", 0.96, 1.0, "molecule", False, "magnitude"),
    ("mulliken", "centroid", 0.96, 0.0, "batch", False, "vector")])
def test_padded_step_equals_plain_step(qm9_300, charge_mode, dipole_origin, l2, direction_weight, direction_form,
                                       ions, target):
    data = qm9_300
    if target == "vector":  # QM9 has no dipole vectors: the Mulliken point dipoles stand in for labels
        data = dataclasses.replace(data, mu_vec_debye=(4.8032 * point_charge_dipoles(data)).astype(np.float32))
    if ions:  # some molecules with a total charge: the graphed step must project to the same sums
        total = np.zeros(data.n_molecules, dtype=np.int16)
        total[::5] = -1
        data = dataclasses.replace(data, extra={**data.extra, "total_charge": total})
    loader = BatchLoader(data, torch.arange(300).numpy(), batch_size=100, shuffle=False, dtype=torch.float64)
    model = model64(dipole_origin)
    # Small steps so the three batches land in different buckets and the pair padding spans many pad atoms.
    step = GraphedTrainStep(model, charge_mode, steps=PadSteps(atoms=64, pairs=512, molecules=8), capture=False,
                            direction_form=direction_form, dipole_target=target)
    for batch in loader:
        assert (batch.total_charge is not None) == ions
        want_terms, want_grads = plain_step(model, batch, charge_mode, 0.04, l2, direction_weight, direction_form,
                                            target)
        model.zero_grad(set_to_none=True)
        got_terms = step(batch, 0.04, l2, direction_weight)
        for name, got, want in zip(want_terms._fields, got_terms, want_terms):
            if want is None:
                assert got is None, name
            else:
                torch.testing.assert_close(got, want.detach(), rtol=1e-10, atol=1e-12, msg=name)
        assert (got_terms.direction is not None) == (direction_weight > 0 and charge_mode != "none")
        for (name, p), want in zip(model.named_parameters(), want_grads):
            torch.testing.assert_close(p.grad, want, rtol=1e-9, atol=1e-12, msg=name)


def test_padding_sizes_and_pad_pairs(qm9_300):
    """Buckets are multiples of the steps with room for the padding; pad pairs stay inside the pad atoms."""
    loader = BatchLoader(qm9_300, torch.arange(37).numpy(), batch_size=37, shuffle=False, dtype=torch.float64)
    batch = next(iter(loader))
    model = model64()
    steps = PadSteps(atoms=128, pairs=1024, molecules=16)
    step = GraphedTrainStep(model, "mulliken", steps=steps, min_pad_atoms=10, capture=False)
    step(batch, 0.04, 0.96)
    (n_pad_atoms, n_pad_mol), atoms = next(iter(step._atoms.items()))
    (_, n_pad_pairs), pairs = next(iter(step._pairs.items()))
    n_atoms = batch.Z.shape[0]
    assert n_pad_atoms == round_up(n_atoms + 10, 128) and n_pad_mol == 48 and n_pad_pairs % 1024 == 0
    assert atoms.offsets[37] == n_atoms and bool((atoms.offsets[38:] == n_pad_atoms).all())
    n_real = int(torch.searchsorted(pairs.first, torch.tensor(n_atoms)))
    pad_first, pad_second = pairs.first[n_real:], pairs.second[n_real:]
    assert bool((pad_first >= n_atoms).all()) and bool((pad_second >= n_atoms).all())
    assert bool((pad_first != pad_second).all())
    d = (atoms.R[pad_second] - atoms.R[pad_first]).norm(dim=-1)
    assert bool((d > model.hipnn.dist_hard_max).all())  # pad pairs have zero sensitivity
    # the pad atoms fall into closed groups of 2 or 3 (no pair leaves a group), like molecules: count the pairs
    # crossing each atom boundary as the CUDA segment backward does
    crossings = torch.zeros(n_pad_atoms + 1, dtype=torch.long)
    lo, hi = torch.minimum(pairs.first, pairs.second), torch.maximum(pairs.first, pairs.second)
    crossings.index_add_(0, lo, torch.ones_like(lo)).index_add_(0, hi, -torch.ones_like(hi))
    in_front = torch.cumsum(crossings, 0) - crossings  # pairs crossing the boundary in front of each atom
    starts = torch.nonzero(in_front[:n_pad_atoms] == 0).flatten().tolist() + [n_pad_atoms]
    pad_groups = [b - a for a, b in zip(starts, starts[1:]) if a >= n_atoms]
    assert sum(pad_groups) == n_pad_atoms - n_atoms and max(pad_groups) <= 3 and min(pad_groups) >= 2
    rows = pairs.row_offsets
    assert rows[-1] == n_pad_pairs and bool((rows[1:] >= rows[:-1]).all())
    assert int((rows[n_atoms + 1 :] - rows[n_atoms:-1]).max()) <= -(-(n_pad_pairs - n_real) // (n_pad_atoms - n_atoms))
    assert float(atoms.atom_w.sum()) == pytest.approx(1.0) and float(atoms.atom_w[n_atoms:].abs().sum()) == 0.0
    assert float(atoms.mol_w.sum()) == pytest.approx(1.0) and float(atoms.mol_w[37:].abs().sum()) == 0.0


def test_weighted_loss_is_the_paper_loss_on_real_entries():
    g = torch.Generator().manual_seed(1)
    q, q_lab = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    m, m_lab = torch.rand(7, generator=g, dtype=torch.float64), torch.rand(7, generator=g, dtype=torch.float64)
    pad = lambda x, n: torch.cat([x, 5.0 * torch.ones(n, dtype=x.dtype)])  # noqa: E731  (junk on the padding)
    w_atom = pad(torch.full((50,), 1 / 50, dtype=torch.float64), 14) * torch.cat([torch.ones(50), torch.zeros(14)])
    w_mol = pad(torch.full((7,), 1 / 7, dtype=torch.float64), 9) * torch.cat([torch.ones(7), torch.zeros(9)])
    want = paper_loss(q, q_lab, m, m_lab, 0.04, 0.96)
    got = weighted_paper_loss(pad(q, 14), pad(q_lab, 14) * 0, pad(m, 9), pad(m_lab, 9), w_atom, w_mol, 0.04, 0.96)
    got_labels = weighted_paper_loss(pad(q, 14), torch.cat([q_lab, torch.zeros(14, dtype=torch.float64)]), pad(m, 9),
                                     pad(m_lab, 9), w_atom, w_mol, 0.04, 0.96)
    for name, a, b in zip(want._fields, got_labels, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14, msg=name)
    assert not torch.allclose(got.charge_mae, want.charge_mae)  # the labels do matter (the test can fail)


@pytest.mark.parametrize("flag", ["--cuda-graphs", None])
def test_cuda_graphs_flag_on_cpu_trains_without_graphs(qm9_h5_path, tmp_path, flag):
    """Asked for on a CPU: a note, then eager training. Not asked (the default: on for CUDA devices only): no note."""
    from click.testing import CliRunner

    from fastdipole.cli import main
    from fastdipole.data import save_h5
    from fastdipole.train import read_history

    data = tmp_path / "qm9_120.h5"
    save_h5(load_h5(qm9_h5_path, molecules=slice(5000, 5120)), data)
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1",
                                       "--n-features", "8", "--n-sensitivities", "4", "--n-interactions", "1",
                                       "--n-atom-layers", "1", "--device", "cpu", "--threads", "1", "--no-progress",
                                       *([flag] if flag else [])])
    assert result.exit_code == 0, result.output
    assert ("--cuda-graphs needs a CUDA device" in result.output) == (flag is not None)
    assert "replay from CUDA graphs" not in result.output
    assert [r["epoch"] for r in read_history(tmp_path / "run")] == [1]


def test_gradients_come_in_the_parameters_layout_and_adam_steps(qm9_300):
    """autograd.grad hands int_weights' gradient back transposed; the step must give each parameter a gradient
    with its own strides (fused Adam on CUDA refuses anything else: the bug a GPU run found)."""
    from fastdipole.train.optim import make_optimizer

    loader = BatchLoader(qm9_300, torch.arange(100).numpy(), batch_size=50, shuffle=False)
    model = DipoleModel.from_config(n_features=16, n_interaction_layers=2, backend="compiled")
    opt = make_optimizer(model.parameters(), 1e-3)
    step = GraphedTrainStep(model, "mulliken", capture=False)
    before = [p.detach().clone() for p in model.parameters()]
    for batch in loader:
        opt.zero_grad(set_to_none=True)
        step(batch, 0.04, 0.96)
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.stride() == p.stride(), name
        opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_same_step_check_catches_a_wrong_gradient(qm9_300):
    from fastdipole.train.graphed import _Graph, _same_step

    loader = BatchLoader(qm9_300, torch.arange(60).numpy(), batch_size=60, shuffle=False, dtype=torch.float64)
    model = model64()
    step = GraphedTrainStep(model, "mulliken", capture=False)
    batch = next(iter(loader))
    a = _Graph(None, step(batch, 0.04, 0.96), tuple(p.grad.clone() for p in model.parameters()))
    b = _Graph(None, step(batch, 0.04, 0.96), tuple(p.grad.clone() for p in model.parameters()))
    assert _same_step(a, b)
    wrong = list(b.grads)
    wrong[3] = wrong[3] * 1.01
    assert not _same_step(a, _Graph(None, b.terms, tuple(wrong)))
    assert not _same_step(a, _Graph(None, b.terms._replace(total=b.terms.total + 1e-2), b.grads))
