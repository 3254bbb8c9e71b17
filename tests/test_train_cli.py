"""`fastdipole train` / `fastdipole evaluate` through click: help, a tiny end-to-end run, clean errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import TINY_TRAIN, qm9_slice
from fastdipole.cli import main
from fastdipole.data import load_h5, load_split, save_h5
from fastdipole.evaluation import evaluate
from fastdipole.train import load_model, read_history

TINY = [*TINY_TRAIN, "--batch-size", "64"]


@pytest.fixture(scope="module")
def small_h5(qm9_h5_path, tmp_path_factory):
    return qm9_slice(qm9_h5_path, tmp_path_factory.mktemp("data"), "qm9_250.h5", slice(5000, 5250))


@pytest.mark.parametrize("name", ["train", "evaluate"])
def test_help(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "--" in result.output


def test_train_then_evaluate_end_to_end(small_h5, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(main, ["train", "--data", str(small_h5), "--out", str(run), "--epochs", "2",
                                  "--charges", "average", *TINY])
    assert result.exit_code == 0, result.output
    assert "valid |mu| MAE" in result.output and " D (" in result.output and "e*A" in result.output
    assert [r["epoch"] for r in read_history(run)] == [1, 2]
    assert (run / "charge_means.json").is_file()

    result = runner.invoke(main, ["evaluate", "--model", str(run), "--data", str(small_h5), "--split", "test"])
    assert result.exit_code == 0, result.output
    out = run / "eval_test"
    for name in ("metrics.json", "dipole_parity.png", "charge_parity.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    test_idx = load_split(run / "split.npz")["test"]
    assert metrics["n_molecules"] == len(test_idx) == 25 and metrics["split"] == "test"
    # Numbers in the file are those of the Python API on the same molecules, and are printed with units.
    expected = evaluate(load_model(run), load_h5(small_h5), test_idx).metrics
    for key in ("dipole_mae_debye", "dipole_rmse_e_angstrom", "charge_mae_e", "dipole_mean_relative_error_percent"):
        assert metrics[key] == pytest.approx(expected[key], rel=1e-6), key
    assert f"{metrics['dipole_mae_debye']:.4f}" in result.output
    assert "(D)" in result.output and "(e*A)" in result.output and "(e)" in result.output

    # Other data than the run's: every molecule of it, into its own folder.
    other = tmp_path / "other.h5"
    save_h5(load_h5(small_h5, molecules=slice(0, 40)), other)
    result = runner.invoke(main, ["evaluate", "--model", str(run), "--data", str(other), "--which", "last"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "eval_other_all" / "metrics.json").read_text())
    assert metrics["n_molecules"] == 40 and metrics["checkpoint"] == "last"


def test_progress_bar_only_on_a_terminal_unless_asked(small_h5, tmp_path):
    # CliRunner's stderr is not a terminal: by default no bar (a log file would get a line per refresh), the
    # per-epoch lines still come; --progress forces the bar.
    args = ["train", "--data", str(small_h5), "--epochs", "1", *[a for a in TINY if a != "--no-progress"]]
    quiet = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "quiet")])
    assert quiet.exit_code == 0, quiet.output
    assert "valid |mu| MAE" in quiet.output and "batch/s" not in quiet.output and "%|" not in quiet.output
    shown = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "shown"), "--progress"])
    assert shown.exit_code == 0, shown.output
    assert "%|" in shown.output


def test_resume_via_cli_keeps_saved_settings(small_h5, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    args = ["train", "--data", str(small_h5), "--out", str(run), "--charges", "none", *TINY]
    assert runner.invoke(main, [*args, "--epochs", "1"]).exit_code == 0
    again = runner.invoke(main, [*args, "--epochs", "1"])
    assert again.exit_code == 2 and "error:" in again.output and "--resume" in again.output
    # --resume with only --out/--epochs: charges=none etc. come from the run's config.json
    result = runner.invoke(main, ["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in read_history(run)] == [1, 2]
    assert json.loads((run / "config.json").read_text())["charges"] == "none"
    bad = runner.invoke(main, ["train", "--out", str(run), "--resume", "--lr", "0.1"])
    assert bad.exit_code == 2 and "cannot change" in bad.output


def test_bad_data_gives_one_line_error_and_exit_code_2(small_h5, tmp_path):
    ds = load_h5(small_h5)
    ds.R = ds.R.copy()
    ds.R[ds.offsets[17] + 2, 1] = np.nan  # molecule 17, atom 2
    bad = save_h5(ds, tmp_path / "bad.h5")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(bad), "--out", str(run), *TINY])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "bad.h5" in lines[0] and "'R'" in lines[0] and "molecule 17" in lines[0]
    assert not run.exists()  # nothing written before the data is checked

    missing = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "nope.h5"), "--out", str(run), *TINY])
    assert missing.exit_code == 2 and missing.output.startswith("error: ") and "not found" in missing.output


def test_charge_warmup_flag_reaches_the_config(small_h5, tmp_path):
    runner = CliRunner()
    run = tmp_path / "warm"
    result = runner.invoke(main, ["train", "--data", str(small_h5), "--out", str(run), "--epochs", "2",
                                  "--charge-warmup-epochs", "1", *TINY])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["charge_warmup_epochs"] == 1
    refused = runner.invoke(main, ["train", "--data", str(small_h5), "--out", str(tmp_path / "x"),
                                   "--charges", "none", "--charge-warmup-epochs", "1", *TINY])
    assert refused.exit_code == 2 and "charge_warmup_epochs" in refused.output


def test_loss_paper_is_the_papers_loss_exactly(small_h5, tmp_path):
    runner = CliRunner()
    run = tmp_path / "paper"
    result = runner.invoke(main, ["train", "--data", str(small_h5), "--out", str(run), "--epochs", "1",
                                  "--loss", "paper", *TINY])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert (config["loss"], config["charge_constraint"], config["charge_init"], config["direction_weight"]) == (
        "paper", "none", "random", 0.0)
    clash = runner.invoke(main, ["train", "--data", str(small_h5), "--out", str(tmp_path / "x"), "--loss", "paper",
                                 "--charge-constraint", "uniform", *TINY])
    assert clash.exit_code == 2 and "--loss paper" in clash.output and "--charge-constraint uniform" in clash.output
    assert not (tmp_path / "x").exists()
