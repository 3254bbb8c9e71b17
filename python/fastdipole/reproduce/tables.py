"""The report's tables: numbers aggregated from the runs' ``test_metrics.json`` and their Markdown.

``*_data`` functions return plain numbers (tests compare them with the runs' files); ``render_*``
functions turn them into Markdown. Means and standard deviations (sample std, ddof = 1) are over
seeds; "change vs none" is computed from the means: 100 * (none - x) / none, positive = better.
"""

from __future__ import annotations

import math

import numpy as np

from .claims import PAPER_MAE_MULLIKEN, PAPER_MAE_NONE, improvement_percent
from .plan import CONFIGS, RunSpec, l1_label

NAN = float("nan")

#: Paper values of the Mulliken point-charge baseline on QM9 (e*Angstrom; Debye = x 4.80320).
PAPER_BASELINE = {"mae_e_angstrom": 0.1149, "rmse_e_angstrom": 0.1432, "mean_relative_error_percent": 30.75}


def mean_std(values) -> tuple[float, float, int]:
    """(mean, sample std or nan for one value, count) of the finite values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return NAN, NAN, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else NAN, len(v)


def fmt(x: float, digits: int = 4) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def fmt_ms(stat: tuple[float, float, int], digits: int = 4, scale: float = 1.0) -> str:
    mean, std, n = stat
    if n == 0:
        return "—"
    if n == 1 or not math.isfinite(std):
        return fmt(mean * scale, digits)
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def fmt_pct(x: float, digits: int = 1) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:+.{digits}f} %"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main_run_name(config: str, seed: int) -> str:
    return f"{config}-seed{seed}"


def _by_config(results: dict[str, dict], seeds, key: str) -> dict[str, list[float]]:
    out = {}
    for config in CONFIGS:
        out[config] = [results[main_run_name(config, s)].get(key) for s in seeds if main_run_name(config, s) in results]
    return out


# ---- Table 1: charges ----------------------------------------------------------------------------------

T1_KEYS = ("charge_rmse_e", "charge_mae_e", "sign_flip_fraction", "dipole_direction_flip_fraction")


def table1_data(results: dict[str, dict], seeds) -> dict:
    """Per config: (mean, std, n) of charge RMSE / MAE vs Mulliken (e) and flip fractions; change vs none (%)."""
    data = {c: {k: mean_std(v) for k, v in ((k, _by_config(results, seeds, k)[c]) for k in T1_KEYS)} for c in CONFIGS}
    for c in CONFIGS:
        for k in ("charge_rmse_e", "charge_mae_e"):
            data[c][f"{k}_change_percent"] = improvement_percent(data["none"][k][0], data[c][k][0])
    return data


def render_table1(data: dict) -> str:
    rows = []
    for c in CONFIGS:
        d = data[c]
        if d["charge_mae_e"][2] == 0:
            continue
        rows.append([
            _config_label(c), fmt_ms(d["charge_rmse_e"]), fmt_ms(d["charge_mae_e"]),
            "—" if c == "none"
            else f"{fmt_pct(d['charge_rmse_e_change_percent'])} / {fmt_pct(d['charge_mae_e_change_percent'])}",
            fmt_ms(d["sign_flip_fraction"], 1, 100), fmt_ms(d["dipole_direction_flip_fraction"], 1, 100),
            str(d["charge_mae_e"][2]),
        ])
    return markdown_table(
        ["training charges", "charge RMSE vs Mulliken (e)", "charge MAE vs Mulliken (e)",
         "change vs none (RMSE / MAE)", "sign-flipped atoms (%)", "dipole direction flipped (% molecules)", "seeds"],
        rows)


# ---- Table 2: dipoles ----------------------------------------------------------------------------------

T2_KEYS = ("dipole_mae_e_angstrom", "dipole_rmse_e_angstrom", "dipole_mae_debye", "dipole_rmse_debye",
           "dipole_mean_relative_error_percent", "dipole_abs_error_p99_e_angstrom", "dipole_abs_error_max_e_angstrom",
           "dipole_abs_error_p99_debye", "dipole_abs_error_max_debye")


def table2_data(results: dict[str, dict], seeds) -> dict:
    """Per config: (mean, std, n) of the dipole-magnitude metrics; MAE / RMSE change vs none (%)."""
    data = {c: {k: mean_std(_by_config(results, seeds, k)[c]) for k in T2_KEYS} for c in CONFIGS}
    for c in CONFIGS:
        for k in ("dipole_mae_e_angstrom", "dipole_rmse_e_angstrom"):
            data[c][f"{k}_change_percent"] = improvement_percent(data["none"][k][0], data[c][k][0])
    return data


def render_table2(data: dict) -> str:
    rows = []
    for c in CONFIGS:
        d = data[c]
        if d["dipole_mae_e_angstrom"][2] == 0:
            continue
        rows.append([
            _config_label(c),
            fmt_ms(d["dipole_mae_e_angstrom"]), fmt_ms(d["dipole_rmse_e_angstrom"]),
            fmt_ms(d["dipole_mae_debye"]), fmt_ms(d["dipole_rmse_debye"]),
            "—" if c == "none" else fmt_pct(d["dipole_mae_e_angstrom_change_percent"]),
            "—" if c == "none" else fmt_pct(d["dipole_rmse_e_angstrom_change_percent"]),
            fmt_ms(d["dipole_abs_error_p99_e_angstrom"], 3), fmt_ms(d["dipole_abs_error_max_e_angstrom"], 3),
            fmt_ms(d["dipole_mean_relative_error_percent"], 1), str(d["dipole_mae_e_angstrom"][2]),
        ])
    paper_change = improvement_percent(PAPER_MAE_NONE, PAPER_MAE_MULLIKEN)
    rows.append(["paper, dipoles only", fmt(PAPER_MAE_NONE), "", "", "", "—", "", "", "", "", ""])
    rows.append(["paper, Mulliken charges", fmt(PAPER_MAE_MULLIKEN), "", "", "", fmt_pct(paper_change),
                 "", "", "", "", ""])
    return markdown_table(
        ["training charges", "MAE (e*A)", "RMSE (e*A)", "MAE (D)", "RMSE (D)", "MAE change vs none",
         "RMSE change vs none", "99th pct. abs. error (e*A)", "max abs. error (e*A)", "mean rel. error (%)", "seeds"],
        rows)


# ---- Table 3: Mulliken point-charge baseline ---------------------------------------------------------------


def render_table3(test_baseline: dict, full_baseline: dict | None, test_label: str, full_label: str) -> str:
    from ..units import DEBYE_PER_E_ANGSTROM

    rows = [[test_label, fmt(test_baseline["mae_e_angstrom"]), fmt(test_baseline["rmse_e_angstrom"]),
             fmt(test_baseline["mae_debye"]), fmt(test_baseline["rmse_debye"]),
             fmt(test_baseline["mean_relative_error_percent"], 2), f"{test_baseline['n_molecules']:,}"]]
    if full_baseline is not None:
        rows.append([full_label, fmt(full_baseline["mae_e_angstrom"]), fmt(full_baseline["rmse_e_angstrom"]),
                     fmt(full_baseline["mae_debye"]), fmt(full_baseline["rmse_debye"]),
                     fmt(full_baseline["mean_relative_error_percent"], 2), f"{full_baseline['n_molecules']:,}"])
    pb = PAPER_BASELINE
    rows.append(["paper (QM9)", fmt(pb["mae_e_angstrom"]), fmt(pb["rmse_e_angstrom"]),
                 fmt(pb["mae_e_angstrom"] * DEBYE_PER_E_ANGSTROM), fmt(pb["rmse_e_angstrom"] * DEBYE_PER_E_ANGSTROM),
                 fmt(pb["mean_relative_error_percent"], 2), ""])
    return markdown_table(["molecules", "MAE (e*A)", "RMSE (e*A)", "MAE (D)", "RMSE (D)", "mean rel. error (%)", "n"],
                          rows)


# ---- per seed ------------------------------------------------------------------------------------------


def per_seed_data(results: dict[str, dict], seeds, key: str = "dipole_mae_e_angstrom") -> dict[int, dict[str, float]]:
    """``{seed: {config: value}}`` of one metric over the main runs (missing runs left out)."""
    out = {}
    for s in seeds:
        row = {c: results[main_run_name(c, s)][key] for c in CONFIGS if main_run_name(c, s) in results}
        if row:
            out[int(s)] = row
    return out


def render_per_seed(results: dict[str, dict], seeds) -> str:
    mae = per_seed_data(results, seeds)
    rows = []
    for s, v in mae.items():
        none = v.get("none", NAN)
        row = [str(s)]
        for c in CONFIGS:
            row.append(fmt(v.get(c, NAN)))
            if c != "none":
                row.append(fmt_pct(improvement_percent(none, v.get(c, NAN))))
        held = v.get("mulliken", NAN) < none if "mulliken" in v and "none" in v else None
        row.append("—" if held is None else ("yes" if held else "no"))
        epochs = [str(results[main_run_name(c, s)]["epochs_completed"]) if main_run_name(c, s) in results else "—"
                  for c in CONFIGS]
        row.append(" / ".join(epochs))
        rows.append(row)
    return markdown_table(
        ["seed", "none MAE (e*A)", "mulliken MAE (e*A)", "mulliken vs none", "average MAE (e*A)", "average vs none",
         "mulliken better?", "epochs (none / mulliken / average)"], rows)


# ---- extra studies -------------------------------------------------------------------------------------


def sweep_data(results: dict[str, dict], l1_values, seed: int) -> list[dict]:
    """One row per l1 (l2 fixed at 0.96): the run used and its test metrics (l1 = 0 is the none run)."""
    rows = []
    for l1 in l1_values:
        if l1 == 0:
            name = main_run_name("none", seed)
        elif l1 == 0.04:
            name = main_run_name("mulliken", seed)
        else:
            name = f"mulliken-l1_{l1_label(l1)}-seed{seed}"
        m = results.get(name)
        rows.append({"l1": float(l1), "run": name, "metrics": m})
    return rows


def render_sweep(rows: list[dict]) -> str:
    base = next((r["metrics"]["dipole_mae_e_angstrom"] for r in rows if r["l1"] == 0 and r["metrics"]), NAN)
    out = []
    for r in rows:
        m = r["metrics"]
        if m is None:
            label = f"{r['l1']:g}" + (" (paper)" if r["l1"] == 0.04 else "")
            out.append([label, r["run"], "not run", "", "", "", "", ""])
            continue
        out.append([
            f"{r['l1']:g}" + (" (paper)" if r["l1"] == 0.04 else ""), r["run"],
            fmt(m["dipole_mae_e_angstrom"]), fmt(m["dipole_rmse_e_angstrom"]),
            "—" if r["l1"] == 0 else fmt_pct(improvement_percent(base, m["dipole_mae_e_angstrom"])),
            fmt(m["charge_mae_e"]), fmt(100 * m["sign_flip_fraction"], 1), str(m["epochs_completed"]),
        ])
    return markdown_table(["l1", "run", "MAE (e*A)", "RMSE (e*A)", "MAE change vs l1 = 0", "charge MAE vs Mulliken (e)",
                           "sign-flipped atoms (%)", "epochs"], out)


def size_data(results: dict[str, dict], sizes, main_n: int, seed: int) -> list[dict]:
    rows = []
    for n in sizes:
        names = {c: (main_run_name(c, seed) if n == main_n else f"{c}-n{n}-seed{seed}") for c in ("none", "mulliken")}
        rows.append({"n_train": int(n), "runs": names, "metrics": {c: results.get(v) for c, v in names.items()}})
    return rows


def render_size(rows: list[dict]) -> str:
    out = []
    for r in rows:
        m = r["metrics"]
        none = m["none"]["dipole_mae_e_angstrom"] if m["none"] else NAN
        mull = m["mulliken"]["dipole_mae_e_angstrom"] if m["mulliken"] else NAN
        epochs = " / ".join(str(m[c]["epochs_completed"]) if m[c] else "—" for c in ("none", "mulliken"))
        out.append([f"{r['n_train']:,}", fmt(none), fmt(mull), fmt_pct(improvement_percent(none, mull)), epochs])
    return markdown_table(["training molecules", "none MAE (e*A)", "mulliken MAE (e*A)", "mulliken vs none",
                           "epochs (none / mulliken)"], out)


def render_runs(results: dict[str, dict], specs: list[RunSpec]) -> str:
    """Every run: studies, budget use and test MAE."""
    rows = []
    for spec in specs:
        m = results.get(spec.name)
        if m is None:
            rows.append([spec.name, ", ".join(spec.studies), spec.charges, _weights(spec), "not run",
                         "", "", "", "", ""])
            continue
        sizes = m.get("split_sizes", {})
        rows.append([
            spec.name, ", ".join(spec.studies), spec.charges, _weights(spec),
            f"{m['epochs_completed']} (best {m['best_epoch']})", m["stop_reason"], f"{m['train_seconds'] / 60:.1f}",
            f"{sizes.get('train', '?')} / {sizes.get('valid', '?')}", fmt(m["dipole_mae_e_angstrom"]),
            fmt(m["charge_mae_e"]),
        ])
    return markdown_table(["run", "studies", "charges", "l1 / l2", "epochs", "stopped by", "train min",
                           "train / valid molecules", "test MAE (e*A)", "charge MAE (e)"], rows)


def _weights(spec: RunSpec) -> str:
    """l1 / l2 as trained: the charge mode none has no charge term."""
    l1 = "—" if spec.charges == "none" else f"{spec.l1:g}"
    warm = f" (+{spec.warmup_epochs} charge-only epochs)" if spec.warmup_epochs else ""
    return f"{l1} / {spec.l2:g}{warm}"


def _config_label(c: str) -> str:
    return {"none": "none (dipoles only)", "mulliken": "Mulliken charges", "average": "per-element average charges"}[c]
