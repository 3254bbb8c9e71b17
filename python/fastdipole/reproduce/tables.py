"""The report's tables: numbers gathered from the runs' ``test_metrics.json`` and their Markdown.

``*_data`` functions return plain numbers (tests compare them with the runs' files); ``render_*`` functions
turn them into Markdown. Summary statistics (median, mean, paired difference, bootstrap interval) are the
ones defined in :mod:`fastdipole.reproduce.stats`.
"""

from __future__ import annotations

import math

from ..train.config import PAPER_L1, RECIPE_L1
from . import stats
from .plan import MAIN_ARMS, RECIPE_CANDIDATES, SEARCH_BASE, RunSpec, l1_label

NAN = float("nan")

#: The paper's dipole MAE without / with Mulliken charges (e*Angstrom; its unit label says Debye) and its
#: charge MAE vs Mulliken (e).
PAPER_MAE_NONE = 0.0130
PAPER_MAE_MULLIKEN = 0.0098
PAPER_CHARGE_MAE = 0.036

#: Paper values of the Mulliken point-charge baseline on QM9 (e*Angstrom; Debye = x 4.80320).
PAPER_BASELINE = {"mae_e_angstrom": 0.1149, "rmse_e_angstrom": 0.1432, "mean_relative_error_percent": 30.75}

#: Targets of the charge study (issue "Charges that mean something"), checked in every seed.
TARGET_AGREEMENT = 0.95
TARGET_TOTAL_CHARGE_E = 1e-5
TARGET_CHARGE_MAE_E = 0.06

#: Per-run metrics shown per seed (key, header, digits, scale).
RUN_COLUMNS = (
    ("dipole_mae_e_angstrom", "dipole MAE (e*A)", 4, 1.0),
    ("dipole_rmse_e_angstrom", "dipole RMSE (e*A)", 4, 1.0),
    ("direction_agreement", "direction agreement (%)", 1, 100.0),
    ("charge_mae_e", "charge MAE (e)", 4, 1.0),
    ("charge_mae_centred_e", "centred charge MAE (e)", 4, 1.0),
    ("charge_pearson_r", "charge Pearson r", 3, 1.0),
    ("total_charge_mean_abs_e", "mean abs. total charge (e)", None, 1.0),
)


def fmt(x, digits: int | None = 4) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.2e}" if digits is None else f"{x:.{digits}f}"


def fmt_pct(x: float, digits: int = 1) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:+.{digits}f} %"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main_run_name(arm: str, seed: int) -> str:
    return f"{arm}-seed{seed}"


def per_seed(results: dict[str, dict], seeds, arm: str, key: str, name=main_run_name) -> dict[int, float]:
    """``{seed: value of key}`` over the finished runs of ``arm``."""
    out = {}
    for s in seeds:
        m = results.get(name(arm, s))
        if m is not None and m.get(key) is not None:
            out[int(s)] = float(m[key])
    return out


# ---- main comparison -----------------------------------------------------------------------------------


def render_main_per_seed(results: dict[str, dict], seeds) -> str:
    """One row per (arm, seed) with every RUN_COLUMNS metric, then the median and mean rows of each arm."""
    rows = []
    for arm in MAIN_ARMS:
        values = {key: per_seed(results, seeds, arm, key) for key, *_ in RUN_COLUMNS}
        if not values["dipole_mae_e_angstrom"]:
            continue
        for s in seeds:
            if s in values["dipole_mae_e_angstrom"]:
                rows.append([arm, str(s)] + [fmt(scale * values[k][s] if s in values[k] else None, d)
                                             for k, _, d, scale in RUN_COLUMNS])
        for label, fn in (("median", stats.median), ("mean", stats.mean)):
            rows.append([f"**{arm}**", label] + [fmt(scale * fn(values[k].values()), d) for k, _, d, scale in RUN_COLUMNS])
    return markdown_table(["arm", "seed"] + [h for _, h, _, _ in RUN_COLUMNS], rows)


def paired_data(results: dict[str, dict], seeds, arm: str, base: str,
                key: str = "dipole_mae_e_angstrom") -> stats.Paired:
    return stats.paired(per_seed(results, seeds, arm, key), per_seed(results, seeds, base, key))


#: Pairs of arms the report compares (A vs B), on the test |mu| MAE.
COMPARISONS = (("recipe", "dipole-only"), ("paper", "dipole-only"), ("paper-neutral", "dipole-only"),
               ("average", "dipole-only"), ("recipe", "paper"), ("paper-neutral", "paper"), ("average", "recipe"))


def render_paired(results: dict[str, dict], seeds) -> str:
    rows = []
    for a, b in COMPARISONS:
        p = paired_data(results, seeds, a, b)
        if not p.seeds:
            continue
        lo, hi = p.interval
        rows.append([f"{a} vs {b}", ", ".join(f"{d:+.4f}" for d in p.differences), f"{p.median_difference:+.4f}",
                     f"[{lo:+.4f}, {hi:+.4f}]" if math.isfinite(lo) else "—", fmt_pct(p.median_relative_change),
                     f"{p.n_a_lower} of {len(p.seeds)}"])
    return markdown_table(["A vs B", "paired differences A - B per seed (e*A)", "median (e*A)",
                           "bootstrap 95 % interval of the median (e*A)", "median relative change",
                           "seeds where A is lower"], rows)


def render_by_element(results: dict[str, dict], seeds, species, symbols: dict[int, str]) -> str:
    """Median over seeds of each arm's charge MAE vs Mulliken per element (e)."""
    rows = []
    for arm in MAIN_ARMS:
        runs = [results.get(main_run_name(arm, s)) for s in seeds]
        runs = [m for m in runs if m is not None and m.get("charge_by_element")]
        if not runs:
            continue
        rows.append([arm] + [fmt(stats.median(m["charge_by_element"].get(str(z), {}).get("charge_mae_e")
                                              for m in runs)) for z in species])
    return markdown_table(["arm"] + [f"{symbols.get(z, z)} charge MAE (e)" for z in species], rows)


def targets_data(results: dict[str, dict], seeds, arm: str = "recipe") -> dict:
    """Each target of the charge study for ``arm``: per-seed values and whether every seed meets it."""
    agree = per_seed(results, seeds, arm, "direction_agreement")
    total = per_seed(results, seeds, arm, "total_charge_max_abs_e")
    charge = per_seed(results, seeds, arm, "charge_mae_e")
    vs_dipole = paired_data(results, seeds, arm, "dipole-only")
    return {
        "agreement": (agree, bool(agree) and all(v >= TARGET_AGREEMENT for v in agree.values())),
        "total_charge": (total, bool(total) and all(v < TARGET_TOTAL_CHARGE_E for v in total.values())),
        "charge_mae": (charge, bool(charge) and all(v <= TARGET_CHARGE_MAE_E for v in charge.values())),
        "not_worse": (dict(zip(vs_dipole.seeds, vs_dipole.differences)),
                      bool(vs_dipole.seeds) and all(d <= 0 for d in vs_dipole.differences)),
        "better_median": (vs_dipole, bool(vs_dipole.seeds) and math.isfinite(vs_dipole.interval[1])
                          and vs_dipole.interval[1] < 0),
    }


def render_targets(t: dict) -> str:
    def seeds_text(values: dict, scale=1.0, digits=3, sci=False) -> str:
        return ", ".join(f"{s}: {v * scale:.2e}" if sci else f"{s}: {v * scale:.{digits}f}" for s, v in values.items())

    p = t["better_median"][0]
    rows = [
        [f"dipole direction agrees with the Mulliken point dipole for >= {100 * TARGET_AGREEMENT:.0f} % of test "
         "molecules", seeds_text(t["agreement"][0], 100, 1) + " (%)", _yes(t["agreement"][1])],
        [f"largest absolute total charge of a test molecule < {TARGET_TOTAL_CHARGE_E:g} e",
         seeds_text(t["total_charge"][0], sci=True) + " (e)", _yes(t["total_charge"][1])],
        [f"charge MAE vs Mulliken <= {TARGET_CHARGE_MAE_E} e", seeds_text(t["charge_mae"][0], digits=4) + " (e)",
         _yes(t["charge_mae"][1])],
        ["dipole MAE not worse than dipole-only in any seed (paired difference <= 0)",
         seeds_text(t["not_worse"][0], digits=4) + " (e*A)", _yes(t["not_worse"][1])],
        ["median dipole MAE better than dipole-only, bootstrap 95 % interval below 0",
         f"median {p.median_difference:+.4f} e*A, interval [{p.interval[0]:+.4f}, {p.interval[1]:+.4f}]"
         if p.seeds else "—", _yes(t["better_median"][1])],
    ]
    return markdown_table(["target (every seed)", "per seed", "met"], rows)


def _yes(ok: bool) -> str:
    return "**yes**" if ok else "**no**"


# ---- recipe search -------------------------------------------------------------------------------------


def search_run_name(arm: str, seed: int) -> str:
    return f"search-{arm}-seed{seed}"


def recipe_search_data(results: dict[str, dict], seeds) -> list[dict]:
    """Per candidate: per-seed direction agreement and |mu| MAE, their minimum / median, median charge MAE."""
    rows = []
    for arm, settings in RECIPE_CANDIDATES.items():
        agree = per_seed(results, seeds, arm, "direction_agreement", search_run_name)
        mae = per_seed(results, seeds, arm, "dipole_mae_e_angstrom", search_run_name)
        if not mae:
            continue
        charge = per_seed(results, seeds, arm, "charge_mae_e", search_run_name)
        rows.append({"arm": arm, "settings": settings, "agreement": agree, "mae": mae, "charge_mae": charge,
                     "min_agreement": min(agree.values()) if agree else NAN,
                     "median_mae": stats.median(mae.values()), "median_charge_mae": stats.median(charge.values())})
    return rows


def render_recipe_search(rows: list[dict], seeds) -> str:
    out = []
    for r in rows:
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items() if SEARCH_BASE.get(k) != v) or "—"
        out.append([r["arm"], settings,
                    " / ".join(fmt(100 * r["agreement"][s], 0) if s in r["agreement"] else "—" for s in seeds),
                    " / ".join(fmt(r["mae"].get(s), 4) for s in seeds), fmt(r["median_mae"]),
                    fmt(r["median_charge_mae"])])
    return markdown_table(["candidate", "settings that differ from `neutral`", "direction agreement (%) per seed",
                           "dipole MAE (e*A) per seed", "median dipole MAE (e*A)", "median charge MAE (e)"], out)


# ---- Mulliken point-charge baseline ----------------------------------------------------------------------


def render_baseline(test_baseline: dict, full_baseline: dict | None, test_label: str, full_label: str) -> str:
    from ..units import DEBYE_PER_E_ANGSTROM

    def row(label, b):
        return [label, fmt(b["mae_e_angstrom"]), fmt(b["rmse_e_angstrom"]), fmt(b["mae_debye"]), fmt(b["rmse_debye"]),
                fmt(b["mean_relative_error_percent"], 2), f"{b['n_molecules']:,}"]

    rows = [row(test_label, test_baseline)]
    if full_baseline is not None:
        rows.append(row(full_label, full_baseline))
    pb = PAPER_BASELINE
    rows.append(["paper (QM9)", fmt(pb["mae_e_angstrom"]), fmt(pb["rmse_e_angstrom"]),
                 fmt(pb["mae_e_angstrom"] * DEBYE_PER_E_ANGSTROM), fmt(pb["rmse_e_angstrom"] * DEBYE_PER_E_ANGSTROM),
                 fmt(pb["mean_relative_error_percent"], 2), ""])
    return markdown_table(["molecules", "MAE (e*A)", "RMSE (e*A)", "MAE (D)", "RMSE (D)", "mean rel. error (%)", "n"],
                          rows)


# ---- extra studies -------------------------------------------------------------------------------------


def sweep_run_name(l1: float, seed: int) -> str:
    if l1 == 0:
        return main_run_name("dipole-only", seed)
    if l1 == RECIPE_L1:
        return main_run_name("recipe", seed)
    return f"recipe-l1_{l1_label(l1)}-seed{seed}"


def sweep_data(results: dict[str, dict], l1_values, seeds) -> list[dict]:
    """One row per (seed, l1) (l2 fixed at 0.96; l1 = 0 is the dipole-only run, RECIPE_L1 the recipe run)."""
    rows = []
    for seed in seeds:
        for l1 in l1_values:
            m = results.get(sweep_run_name(l1, seed))
            rows.append({"seed": int(seed), "l1": float(l1), "run": sweep_run_name(l1, seed), "metrics": m,
                         "mae": m["dipole_mae_e_angstrom"] if m else None})
    return rows


def render_sweep(rows: list[dict]) -> str:
    out = []
    for r in rows:
        m = r["metrics"]
        label = f"{r['l1']:g}" + (" (paper)" if r["l1"] == PAPER_L1 else " (recipe)" if r["l1"] == RECIPE_L1 else "")
        if m is None:
            out.append([str(r["seed"]), label, r["run"], "not run", "", "", ""])
            continue
        out.append([str(r["seed"]), label, r["run"], fmt(m["dipole_mae_e_angstrom"]),
                    fmt(100 * m["direction_agreement"], 1) if m.get("direction_agreement") is not None else "—",
                    fmt(m["charge_mae_e"]), str(m["epochs_completed"])])
    return markdown_table(["seed", "l1", "run", "dipole MAE (e*A)", "direction agreement (%)",
                           "charge MAE vs Mulliken (e)", "epochs"], out)


def size_run_name(arm: str, n: int, main_n: int, seed: int) -> str:
    return main_run_name(arm, seed) if n == main_n else f"{arm}-n{n}-seed{seed}"


def size_data(results: dict[str, dict], sizes, main_n: int, seeds) -> list[dict]:
    rows = []
    for seed in seeds:
        for n in sizes:
            mae = {}
            for arm in ("dipole-only", "recipe"):
                m = results.get(size_run_name(arm, n, main_n, seed))
                mae[arm] = m["dipole_mae_e_angstrom"] if m else None
            rows.append({"seed": int(seed), "n_train": int(n), "mae": mae})
    return rows


def render_size(rows: list[dict]) -> str:
    out = []
    for r in rows:
        base, rec = r["mae"]["dipole-only"], r["mae"]["recipe"]
        change = 100 * (base - rec) / base if base and rec else NAN
        out.append([str(r["seed"]), f"{r['n_train']:,}", fmt(base), fmt(rec), fmt_pct(change)])
    return markdown_table(["seed", "training molecules", "dipole-only MAE (e*A)", "recipe MAE (e*A)",
                           "relative change (positive = recipe better)"], out)


def render_runs(results: dict[str, dict], specs: list[RunSpec]) -> str:
    """Every run: studies, epochs, time and test metrics."""
    rows = []
    for spec in specs:
        m = results.get(spec.name)
        if m is None:
            rows.append([spec.name, ", ".join(spec.studies), spec.arm, f"{spec.l1:g}", "not run", "", "", "", ""])
            continue
        sizes = m.get("split_sizes", {})
        rows.append([spec.name, ", ".join(spec.studies), spec.arm, "—" if spec.charges == "none" else f"{spec.l1:g}",
                     f"{m['epochs_completed']} (best {m['best_epoch']})", f"{m['train_seconds'] / 60:.1f}",
                     f"{sizes.get('train', '?')} / {sizes.get('valid', '?')}", fmt(m["dipole_mae_e_angstrom"]),
                     fmt(m["charge_mae_e"])])
    return markdown_table(["run", "studies", "arm", "l1", "epochs", "train min", "train / valid molecules",
                           "test dipole MAE (e*A)", "charge MAE (e)"], rows)
