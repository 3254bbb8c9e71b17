"""The report's verdict is generated from the numbers: both outcomes, mixed seeds, missing runs."""

from __future__ import annotations

import math

import pytest

from fastdipole.reproduce.claims import claim_statement, improvement_percent, verdict
from fastdipole.reproduce.tables import mean_std, per_seed_data, table2_data


def test_improvement_percent_sign_and_value():
    assert improvement_percent(0.0130, 0.0098) == pytest.approx(24.615, abs=1e-3)
    assert improvement_percent(0.01, 0.012) == pytest.approx(-20.0)
    assert math.isnan(improvement_percent(0.0, 0.1))


def test_claim_held_for_every_seed():
    per_seed = {0: {"none": 0.020, "mulliken": 0.015, "average": 0.018},
                1: {"none": 0.022, "mulliken": 0.019, "average": 0.021},
                2: {"none": 0.021, "mulliken": 0.018, "average": 0.020}}
    v = verdict(per_seed)
    assert v["held"] is True and v["n_better"] == 3 and v["n_seeds"] == 3
    assert v["improvements"][0] == pytest.approx(25.0)
    text = claim_statement(per_seed)
    assert text.startswith("**The claim held at this budget.**")
    assert "for all 3 seeds" in text
    assert "seed 0: 25.0 % lower" in text
    assert "they helped at this budget too" in text


def test_claim_did_not_hold_when_one_seed_is_worse():
    per_seed = {0: {"none": 0.020, "mulliken": 0.015}, 1: {"none": 0.020, "mulliken": 0.021}}
    v = verdict(per_seed)
    assert v["held"] is False and v["n_better"] == 1
    text = claim_statement(per_seed)
    assert text.startswith("**The claim did not hold at this budget.**")
    assert "for 1 of 2 seeds" in text
    assert "seed 1: 5.0 % higher" in text
    assert "Per-element" not in text  # no average-charge runs given


def test_claim_did_not_hold_when_all_worse_and_average_never_helps():
    per_seed = {0: {"none": 0.010, "mulliken": 0.012, "average": 0.011}}
    text = claim_statement(per_seed, budget="a 2-epoch budget")
    assert text.startswith("**The claim did not hold at a 2-epoch budget.**")
    assert "for the one seed run" in text
    assert "they did not help at this budget" in text


def test_equal_errors_do_not_count_as_better():
    v = verdict({0: {"none": 0.01, "mulliken": 0.01}})
    assert v["held"] is False and v["n_better"] == 0


def test_no_complete_seed_gives_no_verdict():
    assert verdict({0: {"none": 0.01}})["held"] is None
    assert claim_statement({0: {"mulliken": 0.01}}).startswith("**No verdict")


def test_tables_aggregate_over_seeds():
    results = {f"{c}-seed{s}": {"dipole_mae_e_angstrom": v} for (c, s), v in {
        ("none", 0): 0.02, ("none", 1): 0.04, ("mulliken", 0): 0.01, ("mulliken", 1): 0.03}.items()}
    data = table2_data(results, [0, 1])
    mean, std, n = data["none"]["dipole_mae_e_angstrom"]
    assert (mean, n) == (pytest.approx(0.03), 2) and std == pytest.approx(math.sqrt(2) * 0.01)
    assert data["mulliken"]["dipole_mae_e_angstrom_change_percent"] == pytest.approx(100 * (0.03 - 0.02) / 0.03)
    assert data["average"]["dipole_mae_e_angstrom"][2] == 0
    assert per_seed_data(results, [0, 1]) == {0: {"none": 0.02, "mulliken": 0.01}, 1: {"none": 0.04, "mulliken": 0.03}}
    assert math.isnan(mean_std([float("nan"), None])[0])
