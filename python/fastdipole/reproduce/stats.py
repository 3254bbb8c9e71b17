"""Summary statistics of the report, each defined once here and used under this one name everywhere.

- *median*: the median over seeds of a per-seed value;
- *mean*: the arithmetic mean over seeds;
- *paired difference* of arm A vs arm B for a seed: ``value(A) - value(B)`` of the two runs of that seed
  (same split, same initial weights); for an error, negative = A better;
- *relative paired change*: ``100 * (value(B) - value(A)) / value(B)`` per seed, percent, positive = A better;
- *bootstrap 95 % interval* of the median paired difference: the 2.5th and 97.5th percentiles of the median
  over ``BOOTSTRAP_RESAMPLES`` resamples of the seeds with replacement (``numpy.random.default_rng(BOOTSTRAP_SEED)``).
  With 5 seeds it is coarse (the resampled medians take few distinct values): it says whether the sign of the
  difference survives resampling the seeds, not more.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 12


def finite(values) -> np.ndarray:
    return np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)


def median(values) -> float:
    v = finite(values)
    return float(np.median(v)) if len(v) else float("nan")


def mean(values) -> float:
    v = finite(values)
    return float(np.mean(v)) if len(v) else float("nan")


def bootstrap_interval(values, statistic=np.median, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile 95 % interval of ``statistic`` over resamples of ``values`` (nan for fewer than 2 values)."""
    v = finite(values)
    if len(v) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = v[rng.integers(0, len(v), size=(resamples, len(v)))]
    stats = statistic(draws, axis=1)
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


class Paired(NamedTuple):
    """Arm A vs arm B over the seeds that have both."""

    seeds: list[int]
    differences: list[float]  #: value(A) - value(B) per seed
    relative_changes: list[float]  #: 100 * (B - A) / B per seed, percent
    median_difference: float
    interval: tuple[float, float]  #: bootstrap 95 % interval of the median difference
    median_relative_change: float
    n_a_lower: int  #: seeds where A's value is lower than B's


def paired(a: dict[int, float], b: dict[int, float]) -> Paired:
    """Paired comparison of per-seed values ``a`` and ``b`` (``{seed: value}``)."""
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None
                   and math.isfinite(a[s]) and math.isfinite(b[s]))
    diffs = [a[s] - b[s] for s in seeds]
    rel = [100.0 * (b[s] - a[s]) / b[s] if b[s] != 0 else float("nan") for s in seeds]
    return Paired(seeds, diffs, rel, median(diffs), bootstrap_interval(diffs), median(rel),
                  sum(1 for d in diffs if d < 0))
