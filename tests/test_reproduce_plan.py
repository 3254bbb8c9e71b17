"""Planning of reproduce runs (arms, studies, shared runs) and the presets' fixed budgets."""

from __future__ import annotations

import pytest

from fastdipole.reproduce.plan import MAIN_ARMS, RECIPE_CANDIDATES, RunSpec, plan_runs, pool_sizes
from fastdipole.reproduce.presets import PRESETS, STUDIES, get_preset
from fastdipole.reproduce.runner import RunEnv, train_config
from fastdipole.train import TrainConfig
from fastdipole.train.config import RECIPE_L1


def test_main_runs_cover_every_arm_and_seed():
    specs = plan_runs(get_preset("cpu"), [0, 1, 2, 3, 4], only=["main"])
    assert [s.name for s in specs] == [f"{a}-seed{s}" for s in range(5) for a in MAIN_ARMS]
    assert {(s.l2, s.epochs, s.n_train) for s in specs} == {(0.96, 40, 10_000)}
    l1 = {s.arm: s.l1 for s in specs}
    assert l1["paper"] == l1["paper-neutral"] == 0.04 and l1["recipe"] == l1["average"] == RECIPE_L1
    assert all("l1" not in dict(s.settings) for s in specs)


def test_studies_share_identical_runs():
    preset = get_preset("cpu")
    specs = {s.name: s for s in plan_runs(preset, [3, 4], only=STUDIES, qmugs=True)}
    # l1 = 0 (l2 fixed) is the dipole-only run and l1 = RECIPE_L1 the recipe run: trained once, used thrice.
    assert set(specs["dipole-only-seed3"].studies) == {"main", "sweep", "size"}
    assert set(specs["recipe-seed3"].studies) == {"main", "sweep", "size"}
    assert "recipe-l1_0-seed3" not in specs and f"recipe-l1_{RECIPE_L1:g}-seed3" not in specs
    assert specs["recipe-l1_0.04-seed3"].l1 == 0.04 and specs["recipe-l1_0.04-seed3"].l2 == 0.96
    assert specs["recipe-n2500-seed3"].epochs == preset.epochs  # a fixed epoch count at every size
    assert all(s.seed == 3 for s in specs.values() if s.studies in (("sweep",), ("size",)))  # extra_seeds = 1
    search = [s for s in specs.values() if "recipes" in s.studies]
    assert len(search) == 2 * len(RECIPE_CANDIDATES)
    assert {s.epochs for s in search} == {preset.recipe_epochs} and {s.n_train for s in search} == {5_000}
    assert {n for n in specs if n.startswith("qmugs")} == {f"qmugs-{a}-seed{s}" for a in ("dipole-only", "recipe")
                                                            for s in (3, 4)}
    assert pool_sizes(list(specs.values())) == [2_500, 5_000, 10_000, 25_000]


def test_unknown_studies_are_refused():
    with pytest.raises(ValueError, match="unknown studies"):
        plan_runs(get_preset("smoke"), [0], only=["tables"])
    with pytest.raises(ValueError, match="at least one seed"):
        plan_runs(get_preset("smoke"), [])


def test_spec_round_trips_and_builds_its_train_config(tmp_path):
    spec = plan_runs(get_preset("cpu"), [0], only=["recipes"])[0]
    assert RunSpec.from_dict(spec.to_dict()) == spec
    env = RunEnv(out_dir=str(tmp_path), preset=get_preset("cpu").to_dict(), species=[1, 6, 7, 8, 9],
                 pools={"qm9:5000": "pool.h5"}, tests={"qm9": "test.h5"}, n_train={"qm9:5000": 5000},
                 n_valid={"qm9:5000": 1000})
    config = train_config(spec, env)
    assert config.loss == "paper" and config.charge_constraint == "none"  # the first candidate: the paper's
    assert config.epochs == 20 and config.patience > config.epochs and config.min_lr == 0.0  # fixed epochs
    assert config.train_fraction == pytest.approx(5 / 6)


def test_search_candidates_spell_out_every_recipe_field():
    """A later change of TrainConfig's defaults must not change what a finished search run was."""
    fields = {"charges", "loss", "charge_constraint", "charge_init", "direction_weight", "direction_epochs",
              "direction_form"}
    for name, settings in RECIPE_CANDIDATES.items():
        assert set(settings) - {"l1"} == fields, name
        TrainConfig(**settings)  # valid settings
    specs = {s.arm: s for s in plan_runs(get_preset("cpu"), [0], only=["recipes"])}
    assert specs["means-only-batch-hinge-l1_0.3"].l1 == 0.3 and specs["paper"].l1 == 0.04
    assert "l1" not in dict(specs["means-only-batch-hinge-l1_0.3"].settings)


def test_presets_are_ordered_by_size_and_have_fixed_budgets():
    smoke, cpu, paper = PRESETS["smoke"], PRESETS["cpu"], PRESETS["paper"]
    assert smoke.n_train < 1000 and smoke.epochs == 2 and smoke.n_features == 8
    assert cpu.n_train == 10_000 and cpu.n_features == 60 and cpu.jobs == 2 and len(cpu.seeds) >= 5
    assert paper.n_train == 110_000 and paper.n_valid == 10_000 and paper.n_test is None and paper.n_features == 128
    assert cpu.l1_sweep == (0.0, 0.01, 0.04, 0.1, 0.3)
    assert not hasattr(cpu, "max_minutes")  # no wall-clock budgets
