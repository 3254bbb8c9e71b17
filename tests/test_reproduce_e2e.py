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
from fastdipole.reproduce.qmugs_data import rdkit_missing
from fastdipole.train import TrainConfig, read_history, train
from fastdipole.units import DEBYE_PER_E_ANGSTROM

FIXTURE_QMUGS = Path(__file__).parent / "fixtures" / "qmugs"
CONFIGS = ("none", "mulliken", "average")
SEEDS = [0, 1]


def _run_files(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(run_dir.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "smoke"
    qmugs = str(FIXTURE_QMUGS) if rdkit_missing() is None else None
    opts = ReproduceOptions(out=str(out), preset="smoke", seeds=SEEDS, qmugs=qmugs, echo=False)
    logs: list[str] = []

    reproduce(dataclasses.replace(opts, max_runs=1), say=logs.append)
    first = out / "runs" / "none-seed0"
    first_files = _run_files(first)
    partial_report = (out / "REPORT.md").read_text()

    # Leave the second run as an interrupted one: 1 of 2 epochs done, checkpoint present, no summary.
    saved = json.loads((first / "config.json").read_text())
    second = out / "runs" / "mulliken-seed0"
    cfg = TrainConfig.from_dict(saved).replace(charges="mulliken", out=str(second), epochs=1,
                                               extra={"reproduce": {"run": "mulliken-seed0"}})
    train(cfg, progress=False, log=lambda msg: None)
    (second / "summary.json").unlink()
    epoch1_row = read_history(second)[0]

    reproduce(opts, say=logs.append)
    return {"out": out, "opts": opts, "first_files": first_files, "partial_report": partial_report,
            "epoch1_row": epoch1_row, "logs": logs, "qmugs": qmugs}


def _table(text: str, heading: str) -> dict[str, list[str]]:
    """Rows of the first Markdown table after ``heading``, keyed by their first cell."""
    section = text.split(heading, 1)[1]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.split("|")[1:-1]]
            rows[cells[0]] = cells[1:]
        elif rows and not line.startswith("|"):
            break
    return rows


def _metrics(out: Path, name: str) -> dict:
    return json.loads((out / "runs" / name / "test_metrics.json").read_text())


def test_report_has_all_tables_and_figures(smoke):
    out = smoke["out"]
    text = (out / "REPORT.md").read_text()
    for heading in ("## Verdict", "## Table 1", "## Table 2", "## Table 3", "## Figures", "### Charge weight l1",
                    "### Training-set size", "### Sign flips over training", "### Per seed", "## QMugs-style section",
                    "## Exact settings"):
        assert heading in text, heading
    assert re.search(r"\*\*The claim (held|did not hold) at this budget", text)
    assert "not available" not in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    names = {Path(p).stem for p in images}
    assert {"charges_none", "charges_mulliken", "dipoles_none", "dipoles_mulliken", "dipoles_average",
            "learning_curves", "sign_flip", "sweep", "size"} <= names
    for p in images:
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
    assert "torch" in text and "Seeds: 0, 1" in text and "200 / 60 / 100" in text
    assert "Charge-only warm-up (1 epoch with l2 = 0" in text  # the smoke preset warms up for 1 epoch
    warm = _metrics(out, "mulliken-warmup1-seed0")
    assert warm["epochs_completed"] == 2 and json.loads(
        (out / "runs" / "mulliken-warmup1-seed0" / "config.json").read_text())["charge_warmup_epochs"] == 1
    if smoke["qmugs"]:
        assert "GFN2-xTB" in text and "not QMugs DFT" in text and "qmugs-mulliken-seed1" in text


def test_tables_match_the_runs_metrics(smoke):
    out = smoke["out"]
    text = (out / "REPORT.md").read_text()
    rows = _table(text, "## Table 2")
    table1 = _table(text, "## Table 1")
    per_seed = _table(text, "### Per seed")
    label = {"none": "none (dipoles only)", "mulliken": "Mulliken charges", "average": "per-element average charges"}
    maes = {}
    for c in CONFIGS:
        ms = [_metrics(out, f"{c}-seed{s}") for s in SEEDS]
        for m, s in zip(ms, SEEDS):
            # metrics.json agrees with the saved predictions
            with np.load(out / "runs" / f"{c}-seed{s}" / "test_predictions.npz") as p:
                mae = np.mean(np.abs(p["mu_pred_debye"].astype(np.float64) - p["mu_label_debye"]))
                assert m["dipole_mae_debye"] == pytest.approx(mae, rel=1e-5)
                assert m["charge_mae_e"] == pytest.approx(np.mean(np.abs(p["charges_pred_e"] - p["charges_label_e"])),
                                                          rel=1e-4)
            assert m["dipole_mae_e_angstrom"] == pytest.approx(m["dipole_mae_debye"] / DEBYE_PER_E_ANGSTROM)
            assert m["n_molecules"] == 100  # the shared test set
            assert m["split_sizes"] == {"train": 200, "valid": 60, "test": 0}
        mae = [m["dipole_mae_e_angstrom"] for m in ms]
        maes[c] = np.mean(mae)
        t2 = rows[label[c]]
        assert t2[0] == f"{np.mean(mae):.4f} ± {np.std(mae, ddof=1):.4f}"
        debye = [m["dipole_mae_debye"] for m in ms]
        assert t2[2] == f"{np.mean(debye):.4f} ± {np.std(debye, ddof=1):.4f}"
        q = [m["charge_mae_e"] for m in ms]
        assert table1[label[c]][1] == f"{np.mean(q):.4f} ± {np.std(q, ddof=1):.4f}"
        flips = [100 * m["sign_flip_fraction"] for m in ms]
        assert table1[label[c]][3] == f"{np.mean(flips):.1f} ± {np.std(flips, ddof=1):.1f}"
        column = {"none": 0, "mulliken": 1, "average": 3}[c]  # seed | none | mulliken | vs none | average | ...
        for s, m in zip(SEEDS, ms):
            assert per_seed[str(s)][column] == f"{m['dipole_mae_e_angstrom']:.4f}"
    change = 100 * (maes["none"] - maes["mulliken"]) / maes["none"]
    assert rows[label["mulliken"]][4] == f"{change:+.1f} %"
    held = all(_metrics(out, f"mulliken-seed{s}")["dipole_mae_e_angstrom"]
               < _metrics(out, f"none-seed{s}")["dipole_mae_e_angstrom"] for s in SEEDS)
    assert ("**The claim held" in text) == held


def test_rerun_skips_the_finished_run_and_resumes_the_interrupted_one(smoke):
    out = smoke["out"]
    assert "Incomplete:" in smoke["partial_report"]
    state = json.loads((out / "reproduce.json").read_text())
    first_inv, second_inv = state["invocations"]
    assert first_inv["trained"] == ["none-seed0"]
    assert "none-seed0" not in second_inv["trained"] and "mulliken-seed0" in second_inv["trained"]
    # the finished run's files were not touched by the second invocation
    assert _run_files(out / "runs" / "none-seed0") == smoke["first_files"]
    # the interrupted run continued from its checkpoint: epoch 1 kept, epoch 2 added
    hist = read_history(out / "runs" / "mulliken-seed0")
    assert [r["epoch"] for r in hist] == [1, 2]
    assert hist[0] == smoke["epoch1_row"]
    assert "resuming" in (out / "logs" / "mulliken-seed0.log").read_text()
    assert "Incomplete:" not in (out / "REPORT.md").read_text()


def test_third_invocation_trains_nothing(smoke):
    out = smoke["out"]
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("checkpoint_*.pt")}
    logs: list[str] = []
    reproduce(smoke["opts"], say=logs.append)
    assert any("0 to run now" in line for line in logs)
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("checkpoint_*.pt")} == before
    assert json.loads((out / "reproduce.json").read_text())["invocations"][-1]["trained"] == []


def test_per_epoch_sign_flips_are_recorded(smoke):
    out = smoke["out"]
    for c in CONFIGS:
        lines = (out / "runs" / f"{c}-seed1" / "signflip.csv").read_text().splitlines()
        assert lines[0].startswith("epoch,sign_flip_fraction")
        assert [int(line.split(",")[0]) for line in lines[1:]] == [1, 2]
        assert all(0.0 <= float(line.split(",")[1]) <= 1.0 for line in lines[1:])


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
    assert "**No verdict" in (out / "REPORT.md").read_text()
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
    for c in CONFIGS:
        par, seq = _metrics(out, f"{c}-seed0"), _metrics(smoke["out"], f"{c}-seed0")
        assert par["epochs_completed"] == seq["epochs_completed"] == 2
        assert par["dipole_mae_e_angstrom"] == pytest.approx(seq["dipole_mae_e_angstrom"], rel=1e-3)
        assert par["charge_mae_e"] == pytest.approx(seq["charge_mae_e"], rel=1e-3)
    assert (out / "REPORT.md").exists()
