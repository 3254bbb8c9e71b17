"""The whole model and the training command on a CUDA GPU: same API, same results as on the CPU.

Skipped only when ``torch.cuda.is_available()`` is False (CI has no GPU; a lent GPU machine runs these through
``tools/gpu_session.sh tests``).
"""

from __future__ import annotations

import copy

import pytest
import torch
from click.testing import CliRunner

from fastdipole.cli import main
from fastdipole.data import load_h5, save_h5
from fastdipole.nn import DipoleModel
from fastdipole.train import load_model, read_history
from fastdipole.train.loss import paper_loss
from fastdipole.units import DEBYE_PER_E_ANGSTROM

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]


@pytest.fixture(scope="module")
def qm9_200(qm9_h5_path):
    return load_h5(qm9_h5_path, molecules=slice(5000, 5200))


def model_inputs(data, dtype, device):
    Z = torch.as_tensor(data.Z, dtype=torch.int64, device=device)
    R = torch.as_tensor(data.R, device=device).to(dtype)
    offsets = torch.as_tensor(data.offsets, dtype=torch.int64, device=device)
    return Z, R, offsets


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dipole_model_on_cuda_matches_cpu(qm9_200, dtype):
    """Charges, dipoles and every parameter gradient of the paper loss agree between devices (real QM9)."""
    torch.manual_seed(0)
    cpu_model = DipoleModel.from_config(n_features=32, n_interaction_layers=2, n_atom_layers=2, n_sensitivities=12,
                                        backend="compiled").to(dtype)
    gpu_model = copy.deepcopy(cpu_model).cuda()
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-5)
    q_label = torch.as_tensor(qm9_200.charges, dtype=dtype)
    mu_label = torch.as_tensor(qm9_200.mu_debye, dtype=dtype) / DEBYE_PER_E_ANGSTROM

    outs, grads = [], []
    for model, device in ((cpu_model, "cpu"), (gpu_model, "cuda")):
        out = model(*model_inputs(qm9_200, dtype, device))
        paper_loss(out.charges, q_label.to(device), out.magnitude, mu_label.to(device)).total.backward()
        outs.append(out)
        grads.append({name: p.grad.cpu() for name, p in model.named_parameters()})
    assert outs[1].charges.is_cuda and outs[1].dipole.is_cuda
    torch.testing.assert_close(outs[1].charges.cpu(), outs[0].charges, **tol)
    torch.testing.assert_close(outs[1].dipole.cpu(), outs[0].dipole, **tol)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        scale = max(grads[0][name].abs().max().item(), 1e-3)
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=tol["rtol"] * 10, atol=tol["atol"] * 10 * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_train_on_cuda_then_predict_on_cpu(qm9_h5_path, tmp_path):
    """`fastdipole train --device cuda` runs, its checkpoint loads on the CPU and predicts the same numbers."""
    data_path = tmp_path / "qm9_250.h5"
    save_h5(load_h5(qm9_h5_path, molecules=slice(5000, 5250)), data_path)
    run = tmp_path / "run"
    args = ["train", "--data", str(data_path), "--out", str(run), "--epochs", "2", "--charges", "mulliken",
            "--n-features", "16", "--n-sensitivities", "8", "--n-interactions", "1", "--n-atom-layers", "1",
            "--batch-size", "64", "--threads", "1", "--device", "cuda", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    history = read_history(run)
    assert [r["epoch"] for r in history] == [1, 2]
    values = [v for r in history for k, v in r.items() if k != "epoch" and v is not None]
    assert values and all(torch.isfinite(torch.tensor(v)) for v in values)

    data = load_h5(data_path, molecules=slice(0, 40))
    on_gpu = load_model(run, device="cuda")(*model_inputs(data, torch.float32, "cuda"))
    on_cpu = load_model(run, device="cpu")(*model_inputs(data, torch.float32, "cpu"))
    torch.testing.assert_close(on_gpu.dipole.cpu(), on_cpu.dipole, rtol=1e-4, atol=1e-5)


def test_cuda_graph_step_matches_eager_step(qm9_h5_path):
    """GraphedTrainStep on the GPU: the first batch captures, the next ones replay with their own data, and
    every loss term and gradient equals the eager step's."""
    import numpy as np

    from fastdipole.data import BatchLoader
    from fastdipole.train.graphed import GraphedTrainStep, PadSteps
    from fastdipole.train.loss import batch_loss

    data = load_h5(qm9_h5_path, molecules=slice(5000, 5384))
    loader = BatchLoader(data, np.arange(384), batch_size=128, shuffle=False, dtype=torch.float32)
    torch.manual_seed(0)
    model = DipoleModel.from_config(n_features=32, n_interaction_layers=2, n_atom_layers=2, n_sensitivities=12,
                                    backend="compiled", validate_inputs=False).cuda()
    # One bucket for all three batches: one capture, two replays.
    step = GraphedTrainStep(model, "mulliken", steps=PadSteps(atoms=4096, pairs=65536, molecules=64))
    losses = []
    for batch in loader:
        model.zero_grad(set_to_none=True)
        gpu_batch = batch.to("cuda")
        want = batch_loss(model(gpu_batch.Z, gpu_batch.R, gpu_batch.offsets), gpu_batch, "mulliken", 0.04, 0.96)
        want.total.backward()
        want_grads = [p.grad.clone() for p in model.parameters()]
        # Drop the eager autograd graph: its AccumulateGrad nodes (default stream) would break the capture.
        want = type(want)(*(t.detach() for t in want))
        model.zero_grad(set_to_none=True)
        got = step(batch, 0.04, 0.96)
        for name, a, b in zip(want._fields, got, want):
            torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-6, msg=name)
        for (name, p), g in zip(model.named_parameters(), want_grads):
            scale = max(g.abs().max().item(), 1e-3)
            torch.testing.assert_close(p.grad, g, rtol=1e-3, atol=1e-4 * scale, msg=name)
        losses.append(float(got.total))
    assert step.captures == 1 and step.capture_error is None  # captured once, replayed twice, all checks passed
    assert len(set(losses)) == 3  # each replay saw its own batch


@pytest.mark.filterwarnings("error:fastdipole:RuntimeWarning")  # a fallback to eager steps fails the test
def test_train_with_cuda_graphs_matches_eager_training(qm9_h5_path, tmp_path):
    """`fastdipole train` on a GPU (CUDA graphs by default) follows the eager run (--no-cuda-graphs; same seed,
    data and order) to float rounding."""
    data_path = tmp_path / "qm9_400.h5"
    save_h5(load_h5(qm9_h5_path, molecules=slice(5000, 5400)), data_path)
    histories = []
    for flag in ("--no-cuda-graphs", None):
        run = tmp_path / (flag or "default").strip("-")
        args = ["train", "--data", str(data_path), "--out", str(run), "--epochs", "2", "--charges", "mulliken",
                "--n-features", "16", "--n-sensitivities", "8", "--n-interactions", "2", "--n-atom-layers", "1",
                "--batch-size", "64", "--threads", "1", "--device", "cuda", "--no-progress", *([flag] if flag else [])]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert ("replay from CUDA graphs" in result.output) == (flag is None), result.output
        histories.append(read_history(run))
    eager, graphed = histories
    for key in ("train_loss", "train_dipole_mae_e_angstrom", "valid_dipole_mae_debye"):
        for a, b in zip(eager, graphed):
            assert b[key] == pytest.approx(a[key], rel=2e-3), key
