"""Planning of reproduce runs, presets, and the extra metrics (sign flips, error tails) on real molecules."""

from __future__ import annotations

import numpy as np
import pytest

from fastdipole.data import bundled_sample_path, load_h5
from fastdipole.reproduce.extra_metrics import (
    dipole_direction_flip_fraction,
    error_tail,
    sign_flip_by_element,
    sign_flip_fraction,
)
from fastdipole.reproduce.plan import plan_runs, pool_sizes
from fastdipole.reproduce.presets import PRESETS, STUDIES, get_preset
from fastdipole.reproduce.tracking import flip_summary
from fastdipole.units import DEBYE_PER_E_ANGSTROM


def test_main_runs_cover_every_config_and_seed():
    specs = plan_runs(get_preset("cpu"), [0, 1, 2], only=["main"])
    names = [s.name for s in specs]
    assert names == [f"{c}-seed{s}" for s in (0, 1, 2) for c in ("none", "mulliken", "average")]
    assert {(s.l1, s.l2, s.epochs, s.n_train) for s in specs} == {(0.04, 0.96, 40, 20_000)}


def test_studies_share_identical_runs_and_scale_epochs():
    preset = get_preset("cpu")
    specs = {s.name: s for s in plan_runs(preset, [3, 4], only=STUDIES, qmugs=True, warmup_supported=True)}
    # l1 = 0 (l2 fixed) is the none run and l1 = 0.04 the main mulliken run: trained once, used thrice.
    assert set(specs["none-seed3"].studies) == {"main", "sweep", "size", "warmup"}
    assert set(specs["mulliken-seed3"].studies) == {"main", "sweep", "size", "warmup"}
    assert "mulliken-l1_0-seed3" not in specs and "mulliken-l1_0.04-seed3" not in specs
    assert specs["mulliken-l1_0.3-seed3"].l1 == 0.3 and specs["mulliken-l1_0.3-seed3"].l2 == 0.96
    assert specs["none-n5000-seed3"].epochs == 4 * preset.epochs  # same optimizer steps as 20,000 molecules
    assert specs["mulliken-n50000-seed3"].epochs == round(preset.epochs * 0.4)
    assert specs["mulliken-warmup2-seed3"].warmup_epochs == 2
    assert all(s.seed == 3 for s in specs.values() if "main" not in s.studies and s.dataset == "qm9")  # first seed
    qmugs = {f"qmugs-{c}-seed{s}" for c in ("none", "mulliken") for s in (3, 4)}
    assert {n for n in specs if n.startswith("qmugs")} == qmugs
    assert pool_sizes(list(specs.values())) == [5_000, 20_000, 50_000]
    assert len(specs) == len(set(specs))


def test_plan_without_warmup_support_or_qmugs_leaves_them_out():
    specs = plan_runs(get_preset("smoke"), [0], only=["warmup", "qmugs"], qmugs=False, warmup_supported=False)
    assert specs == []
    with pytest.raises(ValueError, match="unknown studies"):
        plan_runs(get_preset("smoke"), [0], only=["tables"])


def test_presets_are_ordered_by_size():
    smoke, cpu, paper = PRESETS["smoke"], PRESETS["cpu"], PRESETS["paper"]
    assert smoke.n_train < 1000 and smoke.epochs == 2 and smoke.n_features == 8
    assert cpu.n_train == 20_000 and cpu.n_features == 60 and cpu.max_minutes and cpu.jobs == 2
    assert paper.n_train == 110_000 and paper.n_valid == 10_000 and paper.n_test is None and paper.n_features == 128
    assert PRESETS["cpu"].l1_sweep == (0.0, 0.01, 0.04, 0.1, 0.3)


def test_sign_flip_metrics_on_real_charges():
    ds = load_h5(bundled_sample_path(), molecules=slice(0, 200))
    q = ds.charges
    assert sign_flip_fraction(q, q) == 0.0
    assert sign_flip_fraction(-q, q) == 1.0
    half = q.copy()
    half[::2] *= -1
    expected = np.mean((half * q < 0)[q != 0])
    assert sign_flip_fraction(half, q) == pytest.approx(expected)
    by_el = sign_flip_by_element(-q, q, ds.Z)
    assert set(by_el) == {str(z) for z in np.unique(ds.Z)} and all(v == 1.0 for v in by_el.values())
    assert dipole_direction_flip_fraction(ds, q) == 0.0
    assert dipole_direction_flip_fraction(ds, -q) == 1.0
    with pytest.raises(ValueError):
        sign_flip_fraction(q[:-1], q)


def test_error_tail_units():
    label = np.array([1.0, 2.0, 3.0, 4.0])
    pred = label + np.array([0.1, -0.2, 0.0, 1.0])
    tail = error_tail(pred, label)
    assert tail["dipole_abs_error_max_debye"] == pytest.approx(1.0)
    assert tail["dipole_abs_error_max_e_angstrom"] == pytest.approx(1.0 / DEBYE_PER_E_ANGSTROM)
    assert 0.2 < tail["dipole_abs_error_p99_debye"] <= 1.0


def test_flip_summary_finds_when_the_sign_pattern_settled():
    rows = [{"epoch": e, "sign_flip_fraction": f} for e, f in enumerate([0.45, 0.55, 0.48, 0.7, 0.9, 0.92], start=1)]
    s = flip_summary(rows)
    assert s["settled_epoch"] == 4 and s["max_epoch"] == 6 and s["first"] == 0.45 and s["last"] == 0.92
    assert flip_summary([{"epoch": 1, "sign_flip_fraction": 0.1}])["settled_epoch"] == 1
