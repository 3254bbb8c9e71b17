"""End-to-end `reproduce` with the smoke preset on real QM9 molecules (the bundled sample).

One module-scoped reproduce is run in three steps, like an interrupted session continued later:
1. ``max_runs=1``: only the first run trains (then the reproduce stops, writing a partial report);
2. the second run is left half-trained (1 of its 2 epochs, no summary), as after a Ctrl-C;
3. the same reproduce again: the first run is skipped, the second resumed, the rest trained.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fastdipole.cli import main
from fastdipole.reproduce import ReproduceOptions, reproduce
from fastdipole.reproduce.datafiles import ReproduceError
from fastdipole.reproduce.plan import MAIN_ARMS
from fastdipole.reproduce.qmugs_data import rdkit_missing
from fastdipole.train import TrainConfig, read_history, train
from fastdipole.units import DEBYE_PER_E_ANGSTROM

FIXTURE_QMUGS = Path(__file__).parent / "fixtures" / "qmugs"
ARMS = tuple(MAIN_ARMS)
SEEDS = [0, 1]
FIRST, SECOND = "dipole-only-seed0", "paper-seed0"  # the plan's first two runs


def _run_files(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(run_dir.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "smoke"
    qmugs = str(FIXTURE_QMUGS) if rdkit_missing() is None else None
    opts = ReproduceOptions(out=str(out), preset="smoke", seeds=SEEDS, qmugs=qmugs, echo=False)
    logs: list[str] = []

    reproduce(dataclasses.replace(opts, max_runs=1), say=logs.append)
    first = out / "runs" / FIRST
    first_files = _run_files(first)
    partial_report = (out / "REPORT.md").read_text()

    # Leave the second run as an interrupted one: 1 of 2 epochs done, checkpoint present, no summary.
    saved = json.loads((first / "config.json").read_text())
    second = out / "runs" / SECOND
    cfg = TrainConfig.from_dict(saved).replace(charges="mulliken", loss="paper", out=str(second), epochs=1)
    train(cfg, progress=False, log=lambda msg: None)
    (second / "summary.json").unlink()
    epoch1_row = read_history(second)[0]

    reproduce(opts, say=logs.append)
    return {"out": out, "opts": opts, "first_files": first_files, "partial_report": partial_report,
            "epoch1_row": epoch1_row, "logs": logs, "qmugs": qmugs}


def _table(text: str, heading: str) -> list[list[str]]:
    """Rows (cells) of the first Markdown table after ``heading``."""
    section = text.split(heading, 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.split("|")[1:-1]])
        elif rows and not line.startswith("|"):
            break
    return rows[1:]  # without the header


def _metrics(out: Path, name: str) -> dict:
    return json.loads((out / "runs" / name / "test_metrics.json").read_text())


def test_report_has_all_sections_and_figures(smoke):
    out = smoke["out"]
    text = (out / "REPORT.md").read_text()
    for heading in ("## Verdict", "### Targets of the recipe", "## Statistics used", "## Recipe search",
                    "## Paired differences", "## Per seed", "### Charge MAE vs Mulliken per element",
                    "## Mulliken point-charge baseline", "## Figures", "## Charge weight l1", "## Training-set size",
                    "## Every run", "## Exact settings"):
        assert heading in text, heading
    assert "not available" not in text and "time budget" not in text.lower()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    names = {Path(p).stem for p in images}
    assert {f"charges_{a}" for a in ARMS} | {f"dipoles_{a}" for a in ARMS} | {
        "learning_curves", "direction_curves", "sweep", "size"} <= names
    for p in images:
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
    assert "torch" in text and "Seeds: 0, 1" in text and "200 / 60 / 100" in text
    if smoke["qmugs"]:
        assert "GFN2-xTB" in text and "not QMugs DFT" in text
        assert _metrics(out, "qmugs-recipe-seed1")["total_charge_max_abs_e"] < 1e-5


def test_tables_match_the_runs_metrics(smoke):
    out = smoke["out"]
    text = (out / "REPORT.md").read_text()
    per_seed = {(r[0], r[1]): r[2:] for r in _table(text, "## Per seed")}
    for arm in ARMS:
        ms = [_metrics(out, f"{arm}-seed{s}") for s in SEEDS]
        for m, s in zip(ms, SEEDS):
            with np.load(out / "runs" / f"{arm}-seed{s}" / "test_predictions.npz") as p:
                mae = np.mean(np.abs(p["mu_pred_debye"].astype(np.float64) - p["mu_label_debye"]))
                assert m["dipole_mae_debye"] == pytest.approx(mae, rel=1e-5)
                assert m["charge_mae_e"] == pytest.approx(np.mean(np.abs(p["charges_pred_e"] - p["charges_label_e"])),
                                                          rel=1e-4)
                cos = np.einsum("ij,ij->i", p["dipole_pred_e_angstrom"], p["dipole_label_charges_e_angstrom"])
                keep = np.linalg.norm(p["dipole_label_charges_e_angstrom"], axis=1) >= 1e-3
                assert m["direction_agreement"] == pytest.approx(np.mean(cos[keep] > 0))
            assert m["dipole_mae_e_angstrom"] == pytest.approx(m["dipole_mae_debye"] / DEBYE_PER_E_ANGSTROM)
            assert m["n_molecules"] == 100  # the shared test set
            assert m["split_sizes"] == {"train": 200, "valid": 60, "test": 0}
            assert m["epochs_completed"] == 2  # the fixed epoch count
            row = per_seed[(arm, str(s))]
            assert row[0] == f"{m['dipole_mae_e_angstrom']:.4f}"
            assert row[2] == f"{100 * m['direction_agreement']:.1f}"
        mae = [m["dipole_mae_e_angstrom"] for m in ms]
        assert per_seed[(f"**{arm}**", "median")][0] == f"{np.median(mae):.4f}"
        assert per_seed[(f"**{arm}**", "mean")][0] == f"{np.mean(mae):.4f}"
        neutral = arm != "paper"
        assert all((m["total_charge_max_abs_e"] < 1e-5) == neutral for m in ms), arm
    paired = {r[0]: r for r in _table(text, "## Paired differences")}
    diffs = [_metrics(out, f"recipe-seed{s}")["dipole_mae_e_angstrom"]
             - _metrics(out, f"dipole-only-seed{s}")["dipole_mae_e_angstrom"] for s in SEEDS]
    assert paired["recipe vs dipole-only"][1] == ", ".join(f"{d:+.4f}" for d in diffs)
    assert paired["recipe vs dipole-only"][2] == f"{np.median(diffs):+.4f}"


def test_search_runs_spell_out_their_settings(smoke):
    out = smoke["out"]
    for name in ("search-paper-seed0", "search-means-batch-hinge-seed0", "search-dipole-only-seed0"):
        config = json.loads((out / "runs" / name / "config.json").read_text())
        assert config["epochs"] == 1 and config["patience"] > 1  # the smoke preset's recipe_epochs, no early stop
    paper = json.loads((out / "runs" / "search-paper-seed0" / "config.json").read_text())
    hinge = json.loads((out / "runs" / "search-means-batch-hinge-seed0" / "config.json").read_text())
    assert (paper["loss"], paper["charge_constraint"]) == ("paper", "none")
    assert (hinge["charge_init"], hinge["direction_weight"], hinge["charge_constraint"]) == (
        "element_means", 1.0, "uniform")


def test_rerun_skips_the_finished_run_and_resumes_the_interrupted_one(smoke):
    out = smoke["out"]
    assert "Incomplete:" in smoke["partial_report"]
    state = json.loads((out / "reproduce.json").read_text())
    first_inv, second_inv = state["invocations"]
    assert first_inv["trained"] == [FIRST]
    assert FIRST not in second_inv["trained"] and SECOND in second_inv["trained"]
    # the finished run's files were not touched by the second invocation
    assert _run_files(out / "runs" / FIRST) == smoke["first_files"]
    # the interrupted run continued from its checkpoint: epoch 1 kept, epoch 2 added
    hist = read_history(out / "runs" / SECOND)
    assert [r["epoch"] for r in hist] == [1, 2]
    assert hist[0] == smoke["epoch1_row"]
    assert "resuming" in (out / "logs" / f"{SECOND}.log").read_text()
    assert "Incomplete:" not in (out / "REPORT.md").read_text()


def test_third_invocation_trains_nothing(smoke):
    out = smoke["out"]
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("checkpoint_*.pt")}
    logs: list[str] = []
    reproduce(smoke["opts"], say=logs.append)
    assert any("0 to run now" in line for line in logs)
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("checkpoint_*.pt")} == before
    assert json.loads((out / "reproduce.json").read_text())["invocations"][-1]["trained"] == []


def test_per_epoch_direction_agreement_is_recorded(smoke):
    out = smoke["out"]
    for arm in ARMS:
        rows = read_history(out / "runs" / f"{arm}-seed1")
        assert [r["epoch"] for r in rows] == [1, 2]
        assert all(0.0 <= r["valid_direction_agreement"] <= 1.0 for r in rows)


def test_other_settings_in_the_same_folder_are_refused(smoke):
    with pytest.raises(ReproduceError, match="other settings"):
        reproduce(dataclasses.replace(smoke["opts"], epochs=3), say=lambda msg: None)


def test_cli_parses_seeds_and_studies(tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["reproduce", "--out", str(out), "--preset", "smoke", "--seeds", "3", "5",
                                       "--only", "main,sweep", "--max-runs", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    inv = json.loads((out / "reproduce.json").read_text())["invocations"][-1]
    assert inv["seeds"] == [3, 5] and inv["studies"] == ["main", "sweep"]
    assert "Incomplete:" in (out / "REPORT.md").read_text()
    bad = CliRunner().invoke(main, ["reproduce", "--out", str(out), "--preset", "smoke", "--seeds", "x"])
    assert bad.exit_code == 2 and "expected integers" in bad.output
    stray = CliRunner().invoke(main, ["reproduce", "--out", str(out), "--preset", "smoke", "7"])
    assert stray.exit_code == 2 and "unexpected arguments" in stray.output
    unknown = CliRunner().invoke(main, ["reproduce", "--out", str(out), "--only", "tables"])
    assert unknown.exit_code == 2 and "unknown tables" in unknown.output


def test_parallel_jobs_give_the_same_runs(smoke, tmp_path):
    """--jobs 2 trains in spawned processes; the seeded runs must match the sequential ones."""
    out = tmp_path / "parallel"
    opts = dataclasses.replace(smoke["opts"], out=str(out), seeds=[0], only=["main"], qmugs=None, jobs=2)
    reproduce(opts, say=lambda msg: None)
    for arm in ARMS:
        par, seq = _metrics(out, f"{arm}-seed0"), _metrics(smoke["out"], f"{arm}-seed0")
        assert par["epochs_completed"] == seq["epochs_completed"] == 2
        assert par["dipole_mae_e_angstrom"] == pytest.approx(seq["dipole_mae_e_angstrom"], rel=1e-3)
        assert par["charge_mae_e"] == pytest.approx(seq["charge_mae_e"], rel=1e-3)
    assert (out / "REPORT.md").exists()
