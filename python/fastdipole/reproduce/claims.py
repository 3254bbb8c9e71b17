"""The report's plain statement of whether the paper's claim held, generated from the measured numbers.

Claim: training with the auxiliary Mulliken-charge loss (l1 = 0.04) gives a lower dipole-magnitude
MAE than training on dipoles alone. It *held* when the with-charge test MAE is below the dipole-only
one for every seed; otherwise it did not hold at this budget.
"""

from __future__ import annotations

import math

#: The paper's dipole MAE without / with Mulliken charges (e*Angstrom; its unit label says Debye).
PAPER_MAE_NONE = 0.0130
PAPER_MAE_MULLIKEN = 0.0098


def improvement_percent(baseline: float, value: float) -> float:
    """How much lower ``value`` is than ``baseline``, in percent of ``baseline`` (negative: worse)."""
    if baseline == 0 or not math.isfinite(baseline) or not math.isfinite(value):
        return float("nan")
    return 100.0 * (baseline - value) / baseline


def verdict(per_seed: dict[int, dict[str, float]], config: str = "mulliken", baseline: str = "none") -> dict:
    """Compare ``config`` with ``baseline`` seed by seed.

    ``per_seed``: ``{seed: {"none": mae, "mulliken": mae, ...}}`` (any consistent unit). Seeds lacking
    either value are ignored. Returns ``held`` (True / False, None without any complete seed),
    ``n_seeds``, ``n_better``, ``improvements`` ({seed: percent}), ``mean_improvement``,
    ``min_improvement``, ``max_improvement``, ``mean_baseline`` and ``mean_config``.
    """
    pairs = {s: (v[baseline], v[config]) for s, v in sorted(per_seed.items())
             if v.get(baseline) is not None and v.get(config) is not None}
    if not pairs:
        return {"held": None, "n_seeds": 0, "n_better": 0, "improvements": {}}
    imps = {s: improvement_percent(b, c) for s, (b, c) in pairs.items()}
    n_better = sum(1 for b, c in pairs.values() if c < b)
    vals = list(imps.values())
    return {
        "held": n_better == len(pairs),
        "n_seeds": len(pairs),
        "n_better": n_better,
        "improvements": imps,
        "mean_improvement": sum(vals) / len(vals),
        "min_improvement": min(vals),
        "max_improvement": max(vals),
        "mean_baseline": sum(b for b, _ in pairs.values()) / len(pairs),
        "mean_config": sum(c for _, c in pairs.values()) / len(pairs),
    }


def _seeds_phrase(v: dict) -> str:
    n, k = v["n_seeds"], v["n_better"]
    if n == 1:
        return "for the one seed run"
    if k == n:
        return f"for all {n} seeds"
    return f"for {k} of {n} seeds"


def _change(pct: float) -> str:
    return f"{pct:.1f} % lower" if pct >= 0 else f"{-pct:.1f} % higher"


def claim_statement(per_seed: dict[int, dict[str, float]], unit: str = "e*A", budget: str = "this budget") -> str:
    """Markdown paragraph: did Mulliken (and per-element average) charges beat dipole-only training?"""
    v = verdict(per_seed, "mulliken")
    if v["held"] is None:
        return "**No verdict:** no seed has both a dipole-only and a Mulliken-charge run finished yet."
    per = ", ".join(f"seed {s}: {_change(p)}" for s, p in v["improvements"].items())
    head = ("**The claim held at " + budget + ".**" if v["held"] else "**The claim did not hold at " + budget + ".**")
    text = (
        f"{head} With Mulliken charges in the loss (l1 = 0.04) the test dipole MAE was lower than with "
        f"dipoles alone {_seeds_phrase(v)} ({per}); on average {v['mean_baseline']:.4f} -> "
        f"{v['mean_config']:.4f} {unit}, {_change(v['mean_improvement'])}."
    )
    if v["n_seeds"] > 1:
        text += f" Range over seeds: {v['min_improvement']:.1f} % to {v['max_improvement']:.1f} % (positive = better)."
    paper = improvement_percent(PAPER_MAE_NONE, PAPER_MAE_MULLIKEN)
    text += f" The paper reports {PAPER_MAE_NONE:.4f} -> {PAPER_MAE_MULLIKEN:.4f} e*A ({paper:.1f} % lower)."
    a = verdict(per_seed, "average")
    if a["held"] is not None:
        text += (
            f" Per-element average charges: MAE lower than dipole-only {_seeds_phrase(a)} "
            f"(mean {_change(a['mean_improvement'])}), so "
            + ("they helped at this budget too." if a["held"]
               else "they did not help at this budget." if a["n_better"] == 0
               else "they did not help for every seed at this budget.")
        )
    return text
