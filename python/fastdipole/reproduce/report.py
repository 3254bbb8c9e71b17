"""REPORT.md of a reproduce: verdict, Tables 1-3, figures, extra studies, QMugs-style section, exact settings.

Every number and every sentence about the outcome is generated from the runs' files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..units import DEBYE_PER_E_ANGSTROM
from . import tables as T
from .claims import claim_statement, improvement_percent, verdict
from .plan import CONFIGS, RunSpec
from .tracking import flip_summary, read_signflip

REPORT_FILE = "REPORT.md"


@dataclass
class ReportInputs:
    """What the report is made from (numbers come from ``results``: run name -> test metrics)."""

    out_dir: Path
    preset: dict
    seeds: list[int]
    studies: list[str]
    specs: list[RunSpec]
    results: dict[str, dict]
    data: dict  # source, test / pool files, sizes, species
    baseline_test: dict | None
    baseline_full: dict | None
    figures: dict[str, Path]
    environment: dict
    invocations: list[dict]
    command_line: str
    notes: list[str] = field(default_factory=list)
    qmugs: dict | None = None  # files and baseline of the QMugs-style section, or {"skipped": reason}
    main_config: dict | None = None  # config.json of one main run (exact settings)


def _img(figs: dict, key: str, out_dir: Path, alt: str) -> str:
    p = figs.get(key)
    return f"![{alt}]({Path(p).relative_to(out_dir).as_posix()})" if p else f"*({alt}: not available)*"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def budget_phrase(preset: dict) -> str:
    parts = [f"{preset['n_train']:,} training molecules", f"nf = {preset['n_features']}",
             f"at most {preset['epochs']} epochs"]
    if preset.get("max_minutes"):
        parts.append(f"{preset['max_minutes']:g} min per run")
    return f"this budget ({', '.join(parts)})"


def render(inp: ReportInputs) -> str:
    p, seeds, res, out = inp.preset, inp.seeds, inp.results, Path(inp.out_dir)
    done = [s for s in inp.specs if s.name in res]
    missing = [s.name for s in inp.specs if s.name not in res]
    mae = T.per_seed_data(res, seeds)
    L = []
    L.append(f"# Auxiliary charge loss for dipole models: reproduction (preset `{p['name']}`)\n")
    L.append("Paper's claim: supervising a small share of the loss (l1 = 0.04, l2 = 0.96) with Mulliken charges "
             "makes dipole-magnitude predictions better than training on dipoles alone, and even per-element "
             "average charges help. Loss: `L = l1*(RMSE_q + MAE_q + mean|q_hat|) + l2*(RMSE_mu + MAE_mu)`, "
             "dipole magnitudes in e*A.\n")
    L.append("## Verdict\n")
    L.append(claim_statement(mae, unit="e*A", budget=budget_phrase(p)) + "\n")
    if missing:
        L.append(f"**Incomplete:** {len(missing)} of {len(inp.specs)} planned runs are not finished "
                 f"({', '.join(missing)}). Run the same command again to continue.\n")
    L.append(f"*Setup:* {p['description']}. Test set: {inp.data['n_test']:,} molecules shared by every run; "
             f"seeds {', '.join(map(str, seeds))} (the seed sets the train/validation split of the pool, the "
             "initial weights and the shuffling; all configurations of one seed share the split and the initial "
             "weights). "
             f"Data: `{inp.data['source']}`.\n")

    # ---- Tables 1-3 ----
    L.append("## Table 1: predicted charges vs Mulliken charges (test atoms)\n")
    L.append(T.render_table1(T.table1_data(res, seeds)) + "\n")
    L.append("Mean ± sample standard deviation over seeds. *Change vs none*: 100 * (none - x) / none of the means, "
             "positive = closer to Mulliken. *Sign-flipped atoms*: share of atoms whose predicted charge has the "
             "opposite sign to its Mulliken charge. *Dipole direction flipped*: share of molecules whose predicted "
             "dipole vector points against the Mulliken point-charge dipole (cosine < 0). The dipole-only model "
             "sees only |mu|, so q and -q fit equally well.\n")
    L.append("## Table 2: dipole-magnitude errors (test molecules)\n")
    L.append(T.render_table2(T.table2_data(res, seeds)) + "\n")
    L.append(f"1 e*A = {DEBYE_PER_E_ANGSTROM} D. Best-validation checkpoint of each run. Tail columns: 99th "
             "percentile and maximum of |predicted - label| over the test molecules (mean over seeds). The paper's "
             "numbers (its unit label says Debye, but they are e*A: its own baseline is in e*A) come from a much "
             "longer training on 110,000 molecules.\n")
    L.append("## Table 3: Mulliken point-charge baseline\n")
    if inp.baseline_test:
        L.append(T.render_table3(inp.baseline_test, inp.baseline_full, "this report's test set",
                                 "whole source file") + "\n")
        L.append("mu_pc = |sum_i q_i (R_i - centroid)| with the file's Mulliken charges, compared with the label |mu|. "
                 "No training involved; the trained models should beat it.\n")

    # ---- figures ----
    f = inp.figures
    L.append("## Figures\n")
    L.append(f"Test charges, seed {seeds[0]} (hexagon colour = count, log scale; dashed line y = x):\n")
    L.append(_img(f, "charges_none", out, "predicted vs Mulliken charges, dipole-only training") + " "
             + _img(f, "charges_mulliken", out, "predicted vs Mulliken charges, Mulliken-charge training") + "\n")
    L.append(f"Test dipole magnitudes, seed {seeds[0]}:\n")
    L.append(" ".join(_img(f, f"dipoles_{c}", out, f"predicted vs true |mu|, charges={c}") for c in CONFIGS) + "\n")
    L.append("Learning curves (validation |mu| MAE per epoch, every run):\n")
    L.append(_img(f, "learning_curves", out, "learning curves") + "\n")

    # ---- extra studies ----
    L.append("## Extra studies\n")
    first = seeds[0]
    if "sweep" in inp.studies:
        rows = T.sweep_data(res, p["l1_sweep"], first)
        L.append(f"### Charge weight l1 (seed {first}, l2 fixed at 0.96)\n")
        L.append("l2 stays 0.96 so only the weight of the charge terms changes; l1 = 0 is then exactly the "
                 "dipole-only loss (the `none` run). Same budget for every run.\n")
        L.append(T.render_sweep(rows) + "\n")
        L.append(sweep_sentence(rows) + "\n")
        L.append(_img(f, "sweep", out, "test MAE vs l1") + "\n")
    if "size" in inp.studies:
        rows = T.size_data(res, p["train_sizes"], p["n_train"], first)
        L.append(f"### Training-set size (seed {first})\n")
        L.append(f"Nested training pools, the same {inp.data['n_valid']:,} validation-pool size and test set. "
                 "The epoch cap scales with 1 / size so every run takes about the same number of optimizer steps; "
                 "the time budget per run is the same.\n")
        L.append(T.render_size(rows) + "\n")
        L.append(size_sentence(rows) + "\n")
        L.append(_img(f, "size", out, "test MAE vs training-set size") + "\n")
    L.append(f"### Sign flips over training (seed {first})\n")
    L.append(signflip_section(inp) + "\n")
    L.append(_img(f, "sign_flip", out, "sign-flipped validation atoms per epoch") + "\n")
    L.append("### Per seed\n")
    L.append(T.render_per_seed(res, seeds) + "\n")

    # ---- QMugs-style ----
    L.append("## QMugs-style section (GFN2-xTB labels, not QMugs DFT)\n")
    L.append(qmugs_section(inp) + "\n")

    # ---- settings ----
    L.append("## Exact settings\n")
    L.append(settings_section(inp, done) + "\n")
    L.append("### All runs\n")
    L.append(T.render_runs(res, inp.specs) + "\n")
    L.append("### Files\n")
    L.append(files_section(inp) + "\n")
    if inp.notes:
        L.append("### Notes\n")
        L.extend(f"- {n}" for n in inp.notes)
        L.append("")
    return "\n".join(L).rstrip() + "\n"


# ---- generated sentences -----------------------------------------------------------------------------


def sweep_sentence(rows: list[dict]) -> str:
    pts = [(r["l1"], r["metrics"]["dipole_mae_e_angstrom"]) for r in rows if r["metrics"]]
    if len(pts) < 2:
        return "Not enough finished runs for a conclusion."
    best_l1, best = min(pts, key=lambda t: t[1])
    base = dict(pts).get(0.0)
    paper = dict(pts).get(0.04)
    text = f"Lowest test MAE at l1 = {best_l1:g} ({best:.4f} e*A)"
    if base is not None:
        better = [l1 for l1, v in pts if l1 > 0 and v < base]
        text += (f"; {len(better)} of {len([1 for l1, _ in pts if l1 > 0])} non-zero weights beat dipole-only "
                 f"training ({base:.4f} e*A)")
    if paper is not None and best_l1 != 0.04:
        text += f"; the paper's l1 = 0.04 gave {paper:.4f} e*A ({100 * (paper - best) / best:.1f} % above the best)"
    return text + (". One seed only: differences of a few percent are within seed-to-seed noise "
                   "(see the per-seed table).")


def size_sentence(rows: list[dict]) -> str:
    parts = []
    for r in rows:
        m = r["metrics"]
        if m["none"] and m["mulliken"]:
            pct = improvement_percent(m["none"]["dipole_mae_e_angstrom"], m["mulliken"]["dipole_mae_e_angstrom"])
            parts.append(f"{r['n_train']:,}: {'lower' if pct > 0 else 'higher'} by {abs(pct):.1f} %")
    if not parts:
        return "Not enough finished runs for a conclusion."
    return "Mulliken-charge MAE relative to dipole-only, by training-set size: " + "; ".join(parts) + "."


def signflip_section(inp: ReportInputs) -> str:
    out, res, first = Path(inp.out_dir), inp.results, inp.seeds[0]
    lines = ["Share of the first validation molecules' atoms whose predicted charge has the opposite sign to "
             "Mulliken, after each epoch (`signflip.csv` in each run folder).", ""]
    table = []
    warm = [s for s in inp.specs if s.warmup_epochs and s.seed == first]
    names = [f"{c}-seed{first}" for c in CONFIGS] + [s.name for s in warm]
    summaries = {}
    for name in names:
        rows = read_signflip(out / "runs" / name)
        if not rows or name not in res:
            continue
        s = flip_summary(rows)
        summaries[name] = s
        table.append([name, f"{100 * s['first']:.1f}", f"{100 * s['max']:.1f} (epoch {s['max_epoch']})",
                      f"{100 * s['last']:.1f}", str(s["settled_epoch"]), f"{100 * res[name]['sign_flip_fraction']:.1f}",
                      T.fmt(res[name]["dipole_mae_e_angstrom"])])
    if not table:
        return "No per-epoch sign-flip data yet."
    lines.append(T.markdown_table(["run", "epoch 1 (%)", "max (%)", "last epoch (%)", "sign pattern settled at epoch",
                                   "test, best checkpoint (%)", "test MAE (e*A)"], table))
    lines.append("")
    none = summaries.get(f"none-seed{first}")
    if none:
        early = none["settled_epoch"] <= max(2, none["last_epoch"] // 5)
        lines.append(
            f"Dipole-only run: {100 * none['first']:.1f} % of atoms flipped after epoch 1 and "
            f"{100 * none['last']:.1f} % "
            f"after the last epoch; it stayed on the same side of 50 % from epoch {none['settled_epoch']} of "
            f"{none['last_epoch']} on, so the sign pattern was {'fixed early' if early else 'not fixed early'} "
            f"({'mostly flipped' if none['last'] > 0.5 else 'mostly Mulliken-like'} signs).")
    mull = summaries.get(f"mulliken-seed{first}")
    if mull:
        lines.append(f"Mulliken-charge run: {100 * mull['first']:.1f} % flipped after epoch 1, at most "
                     f"{100 * mull['max']:.1f} % (epoch {mull['max_epoch']}), {100 * mull['last']:.1f} % at the end.")
    for spec in warm:
        w = summaries.get(spec.name)
        if not (w and mull):
            continue
        m_w, m_m = res[spec.name]["dipole_mae_e_angstrom"], res[f"mulliken-seed{first}"]["dipole_mae_e_angstrom"]
        rows = read_signflip(out / "runs" / spec.name)
        at_end = next((r["sign_flip_fraction"] for r in rows if r["epoch"] == spec.warmup_epochs), None)
        after = [r for r in rows if r["epoch"] > spec.warmup_epochs]
        worst = max(after, key=lambda r: r["sign_flip_fraction"]) if after else None
        lines.append(
            f"Charge-only warm-up ({spec.warmup_epochs} epoch{'s' if spec.warmup_epochs != 1 else ''} with l2 = 0, "
            "then the paper's loss): "
            + (f"{100 * at_end:.1f} % flipped atoms at the end of the warm-up; " if at_end is not None else "")
            + (f"once the dipole term was on, up to {100 * worst['sign_flip_fraction']:.1f} % "
               f"(epoch {worst['epoch']}); " if worst else "")
            + f"at most {100 * w['max']:.1f} % over the run (without warm-up {100 * mull['max']:.1f} %), "
            f"{100 * w['last']:.1f} % at the end (without {100 * mull['last']:.1f} %); test MAE {m_w:.4f} vs "
            f"{m_m:.4f} e*A ({improvement_percent(m_m, m_w):+.1f} %, positive = warm-up better).")
    if not warm and "warmup" in inp.studies:
        lines.append("The warm-up study did not run (see notes).")
    return "\n".join(lines)


def qmugs_section(inp: ReportInputs) -> str:
    q = inp.qmugs
    if q is None or q.get("skipped"):
        reason = (q or {}).get("skipped", "no `--qmugs PATH` given")
        return f"Skipped: {reason}."
    res = inp.results
    rows = []
    per_seed = {}
    for s in inp.seeds:
        v = {c: res[f"qmugs-{c}-seed{s}"]["dipole_mae_e_angstrom"] for c in ("none", "mulliken")
             if f"qmugs-{c}-seed{s}" in res}
        if v:
            per_seed[s] = v
            rows.append([str(s), T.fmt(v.get("none", T.NAN)), T.fmt(v.get("mulliken", T.NAN)),
                         T.fmt_pct(improvement_percent(v.get("none", T.NAN), v.get("mulliken", T.NAN)))])
    text = [
        f"Source: `{q['source']}`, converted with `fastdipole data qmugs --level gfn2`. These are "
        "**GFN2-xTB** Mulliken charges and dipoles (the test fixture made with RDKit + tblite), **not QMugs' DFT "
        "labels**; geometries are MMFF-optimised, not QMugs'. "
        f"{q['n_molecules']} molecules; test set: {q['n_test']} conformers of {q['n_test_molecules']} whole molecules; "
        f"pool: {q['n_train'] + q['n_valid']} conformers, about {q['n_train']} for training and {q['n_valid']} for "
        "validation (the trainer splits them by whole molecule, so the counts move by up to one molecule's "
        "conformers). Same model as the QM9 runs, "
        f"up to {inp.preset['qmugs_epochs']} epochs"
        + (f" / {inp.preset['qmugs_max_minutes']:g} min" if inp.preset.get("qmugs_max_minutes") else "") + ".",
        "",
    ]
    if rows:
        text.append(T.markdown_table(["seed", "none MAE (e*A)", "mulliken MAE (e*A)", "mulliken vs none"], rows))
        text.append("")
        v = verdict(per_seed)
        if v["held"] is not None:
            text.append(f"Mulliken (GFN2) charges gave a lower test MAE for {v['n_better']} of {v['n_seeds']} seed(s) "
                        f"(mean change {v['mean_improvement']:+.1f} %, positive = better). With this few molecules "
                        "the numbers test the pipeline; they are not evidence for or against the claim.")
    b = q.get("baseline")
    if b:
        text.append(f"\nGFN2 Mulliken point-charge baseline on the test conformers: MAE {b['mae_e_angstrom']:.4f} e*A "
                    f"({b['mae_debye']:.4f} D), RMSE {b['rmse_e_angstrom']:.4f} e*A. The GFN2 dipole includes "
                    "atomic-dipole terms, so point charges alone cannot reproduce it exactly.")
    return "\n".join(text)


def settings_section(inp: ReportInputs, done: list[RunSpec]) -> str:
    p, env = inp.preset, inp.environment
    total = sum(i.get("wall_seconds", 0.0) for i in inp.invocations)
    train_total = sum(inp.results[s.name].get("train_seconds", 0.0) for s in done)
    lines = [
        f"- Command: `{inp.command_line}`",
        f"- Preset `{p['name']}`: {p['description']}.",
        f"- Data: `{inp.data['source']}` ({inp.data['source_n_molecules']:,} molecules). One shuffle "
        f"(seed {inp.data['subset_seed']}) picks the test set ({inp.data['n_test']:,} molecules, the same for every "
        f"run and seed) and nested training pools of n_train + {inp.data['n_valid']:,} molecules; the trainer splits "
        "a pool into training and validation molecules with the run's seed. Files: `data/` (see "
        "`data/manifest.json`, `data/source_indices.npz`).",
        f"- Split sizes (train / valid / test): {p['n_train']:,} / {inp.data['n_valid']:,} / {inp.data['n_test']:,} "
        f"for the main runs; size study: {', '.join(f'{n:,}' for n in p['train_sizes'])} training molecules.",
        f"- Seeds: {', '.join(map(str, inp.seeds))}. Studies: {', '.join(inp.studies)}.",
        f"- Model: HIP-NN, nf = {p['n_features']}, {p['n_interactions']} interaction layers x {p['n_atom_layers']} "
        f"atom layers, {p['n_sensitivities']} sensitivities; species {inp.data['species']}.",
        f"- Optimisation: Adam lr {p['lr']:g}, batch {p['batch_size']}, ReduceLROnPlateau (x0.5 after "
        f"{p['plateau_patience']} epochs), early stopping after {p['patience']} epochs without a better validation "
        f"MAE, at most {p['epochs']} epochs"
        + (f" and {p['max_minutes']:g} min of training per run" if p.get("max_minutes") else "")
        + "; test metrics use the best-validation checkpoint.",
        f"- Wall time: {_minutes(total)} over {len(inp.invocations)} invocation(s) of `fastdipole reproduce` "
        f"(training {_minutes(train_total)} summed over {len(done)} finished runs, up to "
        f"{max((i.get('jobs', 1) for i in inp.invocations), default=1)} in parallel).",
        f"- Software: fastdipole {env.get('fastdipole')}, torch {env.get('torch')}, numpy {env.get('numpy')}, "
        f"Python {env.get('python')}; compiled kernels: {env.get('kernels')}; git {env.get('git', 'unknown')}.",
        f"- Machine: {env.get('cpu')}, {env.get('cores')} cores, {env.get('memory_gb', '?')} GB RAM, "
        f"{env.get('platform')}; device {env.get('device')}; {env.get('threads_per_run')} thread(s) per run.",
    ]
    if inp.main_config:
        cfg = {k: v for k, v in inp.main_config.items() if k != "run"}
        lines += ["", "TrainConfig of the main Mulliken run (`config.json`; other runs differ only in `charges`, "
                  "`l1`, `seed`, `data`, `epochs` and `charge_warmup_epochs`, as their names say):", "", "```"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in cfg.items()]
        lines.append("```")
    return "\n".join(lines)


def files_section(inp: ReportInputs) -> str:
    example = next((s.name for s in inp.specs if s.name in inp.results and s.dataset == "qm9"), "mulliken-seed0")
    return "\n".join([
        "- `runs/<run>/`: a `fastdipole train` run folder (`config.json`, `split.npz`, `metrics.csv`, checkpoints, "
        "`summary.json`) plus `signflip.csv` (per-epoch sign flips), `test_metrics.json` and "
        "`test_predictions.npz` (test-set predictions behind the tables and figures).",
        "- `logs/<run>.log`: the trainer's output of each run; `reproduce.json`: preset and invocations.",
        "- `data/`: `test.h5` and `pool_n<N>.h5` cut from the source file (`manifest.json`, `source_indices.npz`).",
        f"- Re-score a run: `fastdipole evaluate --model {Path(inp.out_dir).as_posix()}/runs/{example} "
        f"--data {Path(inp.out_dir).as_posix()}/data/test.h5` (the pools hold no test molecules).",
        "- Rebuild this report without training: the same command with `--report-only`.",
    ])


def write_report(inp: ReportInputs) -> Path:
    from ..train.checkpoint import atomic_write_text

    path = Path(inp.out_dir) / REPORT_FILE
    atomic_write_text(render(inp), path)
    return path
