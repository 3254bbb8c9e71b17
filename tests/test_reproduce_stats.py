"""The report's statistics (median, paired differences, bootstrap interval) and its generated verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastdipole.reproduce import stats
from fastdipole.reproduce import tables as T
from fastdipole.reproduce.report import verdict_text


def test_median_and_mean_skip_missing_values():
    assert stats.median([3.0, None, 1.0, float("nan"), 2.0]) == 2.0
    assert stats.mean([1.0, 2.0, None]) == 1.5
    assert math.isnan(stats.median([]))


def test_bootstrap_interval_brackets_the_median_and_is_seeded():
    values = [0.1, 0.2, 0.3, 0.4, 0.5]
    lo, hi = stats.bootstrap_interval(values)
    assert lo <= np.median(values) <= hi and lo >= 0.1 and hi <= 0.5
    assert stats.bootstrap_interval(values) == (lo, hi)  # same seed, same interval
    assert all(math.isnan(x) for x in stats.bootstrap_interval([0.3]))
    # A constant difference has a zero-width interval at that value.
    assert stats.bootstrap_interval([-0.01] * 5) == pytest.approx((-0.01, -0.01))


def test_paired_differences_are_per_seed():
    a = {0: 0.010, 1: 0.020, 2: 0.030, 5: 0.5}
    b = {0: 0.020, 1: 0.025, 2: 0.020}
    p = stats.paired(a, b)
    assert p.seeds == [0, 1, 2]  # seed 5 has no partner
    assert p.differences == pytest.approx([-0.010, -0.005, 0.010])
    assert p.relative_changes == pytest.approx([50.0, 20.0, -50.0])
    assert p.median_difference == pytest.approx(-0.005) and p.n_a_lower == 2


def _results(recipe, dipole, agreement=0.97):
    out = {}
    for s, (r, d) in enumerate(zip(recipe, dipole)):
        out[f"recipe-seed{s}"] = {"dipole_mae_e_angstrom": r, "direction_agreement": agreement,
                                  "total_charge_max_abs_e": 1e-7, "charge_mae_e": 0.05}
        out[f"dipole-only-seed{s}"] = {"dipole_mae_e_angstrom": d, "direction_agreement": 0.5}
    return out


def test_verdict_and_targets_follow_the_numbers():
    seeds = list(range(5))
    better = _results([0.050, 0.052, 0.049, 0.051, 0.050], [0.060, 0.061, 0.058, 0.062, 0.060])
    text = verdict_text(better, seeds)
    assert "lower than dipole-only, and the bootstrap interval excludes 0" in text
    t = T.targets_data(better, seeds)
    assert all(ok for _, ok in t.values())

    mixed = _results([0.050, 0.070, 0.049, 0.071, 0.050], [0.060, 0.061, 0.058, 0.062, 0.060], agreement=0.03)
    text = verdict_text(mixed, seeds)
    assert "not distinguishable from dipole-only" in text
    assert "recipe 5 of 5" in text  # every seed in the flipped basin
    t = T.targets_data(mixed, seeds)
    assert not t["agreement"][1] and not t["not_worse"][1] and not t["better_median"][1]
    assert t["total_charge"][1] and t["charge_mae"][1]
