"""REPORT.md of a reproduce: verdict and targets, the recipe search, the paired comparison of the arms, per-seed
rows, baselines, extra studies, the QMugs-style section, figures and the exact settings.

Every number and every sentence about the outcome is generated from the runs' files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..data.elements import SYMBOLS
from ..train.config import RECIPE_L1
from ..units import DEBYE_PER_E_ANGSTROM
from . import stats
from . import tables as T
from .plan import ARM_DESCRIPTIONS, MAIN_ARMS, RunSpec

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
    main_config: dict | None = None  # config.json of one recipe run (exact settings)


def _img(figs: dict, key: str, out_dir: Path, alt: str) -> str:
    p = figs.get(key)
    return f"![{alt}]({Path(p).relative_to(out_dir).as_posix()})" if p else f"*({alt}: not available)*"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def verdict_text(res: dict, seeds) -> str:
    """The claim, measured: the recipe and the paper's exact loss against dipole-only training, paired by seed."""
    out = []
    for arm, what in (("recipe", "fastdipole's recipe (Mulliken charges)"), ("paper", "the paper's exact loss")):
        p = T.paired_data(res, seeds, arm, "dipole-only")
        if not p.seeds:
            continue
        lo, hi = p.interval
        sure = hi < 0 if math.isfinite(hi) else False
        worse = lo > 0 if math.isfinite(lo) else False
        judgement = ("lower than dipole-only, and the bootstrap interval excludes 0" if sure else
                     "higher than dipole-only, and the bootstrap interval excludes 0" if worse else
                     "not distinguishable from dipole-only (the bootstrap interval includes 0)")
        out.append(f"- **{what}**: test |mu| MAE {judgement}. Median paired difference "
                   f"{p.median_difference:+.4f} e*A (95 % interval [{lo:+.4f}, {hi:+.4f}]), median relative change "
                   f"{p.median_relative_change:+.1f} % (positive = better), lower in {p.n_a_lower} of {len(p.seeds)} "
                   "seeds.")
    agree = {arm: T.per_seed(res, seeds, arm, "direction_agreement") for arm in MAIN_ARMS}
    flipped = {arm: sum(1 for v in a.values() if v < 0.5) for arm, a in agree.items() if a}
    if flipped:
        out.append("- **Sign basin** (seeds whose test dipoles mostly point against the Mulliken point dipole, "
                   "direction agreement < 50 %): " + ", ".join(f"{arm} {n} of {len(agree[arm])}"
                                                               for arm, n in flipped.items()) + ".")
    paper = 100 * (T.PAPER_MAE_NONE - T.PAPER_MAE_MULLIKEN) / T.PAPER_MAE_NONE
    out.append(f"- The paper reports {T.PAPER_MAE_NONE:.4f} -> {T.PAPER_MAE_MULLIKEN:.4f} e*A ({paper:.1f} % lower) "
               f"and a charge MAE of {T.PAPER_CHARGE_MAE} e vs Mulliken after a much longer training on 110,000 "
               "molecules (its unit label says Debye; its own baseline is in e*A).")
    return "\n".join(out)


def render(inp: ReportInputs) -> str:
    p, seeds, res, out = inp.preset, inp.seeds, inp.results, Path(inp.out_dir)
    done = [s for s in inp.specs if s.name in res]
    missing = [s.name for s in inp.specs if s.name not in res]
    f = inp.figures
    L = [f"# Does an auxiliary charge loss make dipole models better, and their charges physical? (preset `{p['name']}`)\n"]
    L.append("Paper's claim: supervising a small share of the loss (l1 = 0.04, l2 = 0.96) with Mulliken charges "
             "makes dipole-magnitude predictions better than training on dipoles alone, and even per-element "
             "average charges help. Paper's loss: `L = l1*(RMSE_q + MAE_q + mean|q_hat|) + l2*(RMSE_mu + MAE_mu)`, "
             "dipole magnitudes in e*A. |mu| is the same for q and -q, so the charge term alone must choose the "
             "sign of the charges.\n")
    L.append(f"*Setup:* {p['description']}. Every run trains a fixed number of epochs (never stopped by elapsed "
             f"time or by early stopping); test metrics use the best-validation checkpoint. Test set: {inp.data['n_test']:,} "
             f"molecules shared by every run. Seeds {', '.join(map(str, seeds))}: all arms of one seed share the "
             "train/validation split, the shuffling and the initial weights (arms that start the charge head at "
             "per-element mean charges differ in that one layer). Data: "
             f"`{inp.data['source']}`.\n")
    if missing:
        L.append(f"**Incomplete:** {len(missing)} of {len(inp.specs)} planned runs are not finished "
                 f"({', '.join(missing)}). Run the same command again to continue.\n")
    L.append("## Verdict\n")
    L.append(verdict_text(res, seeds) + "\n")
    L.append("### Targets of the recipe (every seed)\n")
    L.append(T.render_targets(T.targets_data(res, seeds)) + "\n")
    L.append("## Statistics used\n")
    L.append(stats.__doc__.split("\n\n", 1)[1].strip() + "\n")

    if "recipes" in inp.studies:
        rseeds = seeds[: max(1, p["recipe_seeds"])]
        L.append(f"## Recipe search ({p['recipe_n_train']:,} training molecules, {p['recipe_epochs']} epochs, "
                 f"seeds {', '.join(map(str, rseeds))})\n")
        L.append("Each candidate on Mulliken labels with l2 = 0.96 and l1 = 0.04 unless its name says otherwise; "
                 "scored on the same test set. "
                 "*neutral*: charges projected to sum to the molecule's total charge; *means*: level-0 charge "
                 "readout started at the training split's mean Mulliken charge per element (*means-only*: higher "
                 "levels' readouts started at 0); *batch hinge*: `relu(0.5 - mean cos(mu, mu_Mulliken))` over the "
                 "batch; *molecule hinge*: `mean relu(-cos)` (*-5ep*: first 5 epochs only). Direction agreement: "
                 "share of test molecules whose predicted dipole points with the Mulliken point-charge dipole "
                 "(cos > 0).\n")
        L.append(T.render_recipe_search(T.recipe_search_data(res, rseeds), rseeds) + "\n")

    L.append("## Arms of the main comparison\n")
    L.append("\n".join(f"- `{arm}`: {ARM_DESCRIPTIONS[arm]}" for arm in MAIN_ARMS) + "\n")
    L.append("## Paired differences of the test |mu| MAE\n")
    L.append(T.render_paired(res, seeds) + "\n")
    L.append("## Per seed (test set)\n")
    L.append(T.render_main_per_seed(res, seeds) + "\n")
    L.append("*direction agreement*: share of test molecules whose predicted dipole vector has cos > 0 with the "
             "Mulliken point-charge dipole (molecules whose Mulliken dipole is below 1e-3 e*A are left out). "
             "*centred charge MAE*: charge MAE after removing each molecule's mean charge from the predictions and "
             "the labels (blind to a per-molecule offset). *mean abs. total charge*: mean over molecules of "
             "|sum_i q_i| (all test molecules are neutral). Dipole-only runs are scored against Mulliken too, though "
             "they never saw charges. 1 e*A = " f"{DEBYE_PER_E_ANGSTROM} D.\n")
    L.append("### Charge MAE vs Mulliken per element (median over seeds)\n")
    species = inp.data["species"]
    L.append(T.render_by_element(res, seeds, species, {z: SYMBOLS[z] for z in species}) + "\n")
    if inp.baseline_test:
        L.append("## Mulliken point-charge baseline\n")
        L.append(T.render_baseline(inp.baseline_test, inp.baseline_full, "this report's test set",
                                   "whole source file") + "\n")
        L.append("mu_pc = |sum_i q_i (R_i - centroid)| with the file's Mulliken charges, compared with the label |mu|. "
                 "No training involved; the trained models should beat it.\n")

    L.append("## Figures\n")
    L.append(f"Test charges vs Mulliken, seed {seeds[0]} (hexagon colour = count, log scale; dashed line y = x):\n")
    L.append(" ".join(_img(f, f"charges_{arm}", out, f"predicted vs Mulliken charges, {arm}") for arm in MAIN_ARMS)
             + "\n")
    L.append(f"Test dipole magnitudes, seed {seeds[0]}:\n")
    L.append(" ".join(_img(f, f"dipoles_{arm}", out, f"predicted vs true |mu|, {arm}") for arm in MAIN_ARMS) + "\n")
    L.append("Validation |mu| MAE and direction agreement per epoch (every main run):\n")
    L.append(_img(f, "learning_curves", out, "learning curves") + " "
             + _img(f, "direction_curves", out, "direction agreement per epoch") + "\n")

    extra = seeds[: max(1, p["extra_seeds"])]
    if "sweep" in inp.studies:
        L.append(f"## Charge weight l1 of the recipe (l2 fixed at 0.96; seeds {', '.join(map(str, extra))})\n")
        L.append(f"The recipe with other charge weights: l1 = 0 is the dipole-only run, l1 = {RECIPE_L1:g} the recipe "
                 "run, l1 = 0.04 the paper's weight; every run has the same fixed number of epochs.\n")
        L.append(T.render_sweep(T.sweep_data(res, p["l1_sweep"], extra)) + "\n")
        L.append(_img(f, "sweep", out, "test MAE vs l1") + "\n")
    if "size" in inp.studies:
        L.append(f"## Training-set size (seeds {', '.join(map(str, extra))})\n")
        L.append(f"Nested training pools, the same validation-pool size and test set, {p['epochs']} epochs each "
                 "(smaller pools: fewer optimizer steps).\n")
        L.append(T.render_size(T.size_data(res, p["train_sizes"], p["n_train"], extra)) + "\n")
        L.append(_img(f, "size", out, "test MAE vs training-set size") + "\n")
    if "qmugs" in inp.studies:
        L.append("## QMugs-style section (GFN2-xTB labels, not QMugs DFT)\n")
        L.append(qmugs_section(inp) + "\n")
    if inp.notes:
        L.append("## Notes\n")
        L.append("\n".join(f"- {n}" for n in inp.notes) + "\n")
    L.append("## Every run\n")
    L.append(T.render_runs(res, inp.specs) + "\n")
    L.append("## Exact settings\n")
    L.append(settings_section(inp, done) + "\n")
    L.append("## Files\n")
    L.append(files_section(inp) + "\n")
    return "\n".join(L)


def qmugs_section(inp: ReportInputs) -> str:
    q = inp.qmugs
    if not q or q.get("skipped"):
        return f"Skipped: {q.get('skipped') if q else 'no QMugs data'}."
    res = inp.results
    rows = []
    for s in inp.seeds:
        v = {arm: res[f"qmugs-{arm}-seed{s}"]["dipole_mae_e_angstrom"] for arm in ("dipole-only", "recipe")
             if f"qmugs-{arm}-seed{s}" in res}
        if v:
            base, rec = v.get("dipole-only", T.NAN), v.get("recipe", T.NAN)
            rows.append([str(s), T.fmt(base), T.fmt(rec), T.fmt_pct(100 * (base - rec) / base if base else T.NAN)])
    text = [
        f"Source: `{q['source']}`, converted with `fastdipole data qmugs --level gfn2`. These are "
        "**GFN2-xTB** Mulliken charges and dipoles (the test fixture made with RDKit + tblite), **not QMugs' DFT "
        "labels**; geometries are MMFF-optimised, not QMugs'. "
        f"{q['n_molecules']} molecules; test set: {q['n_test']} conformers of {q['n_test_molecules']} whole molecules; "
        f"pool: {q['n_train'] + q['n_valid']} conformers, about {q['n_train']} for training and {q['n_valid']} for "
        "validation (split by whole molecule). Same model as the QM9 runs, "
        f"{inp.preset['qmugs_epochs']} epochs.",
        "",
    ]
    if rows:
        text.append(T.markdown_table(["seed", "dipole-only MAE (e*A)", "recipe MAE (e*A)",
                                      "relative change (positive = recipe better)"], rows))
        text.append("\nWith this few molecules the numbers test the pipeline; they are not evidence for or against "
                    "the claim.")
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
        f"for the main runs; recipe search: {p['recipe_n_train']:,} training molecules; size study: "
        f"{', '.join(f'{n:,}' for n in p['train_sizes'])}.",
        f"- Seeds: {', '.join(map(str, inp.seeds))}. Studies: {', '.join(inp.studies)}.",
        f"- Model: HIP-NN, nf = {p['n_features']}, {p['n_interactions']} interaction layers x {p['n_atom_layers']} "
        f"atom layers, {p['n_sensitivities']} sensitivities; species {inp.data['species']}.",
        f"- Optimisation: Adam lr {p['lr']:g}, batch {p['batch_size']}, ReduceLROnPlateau (x0.5 after "
        f"{p['plateau_patience']} epochs without a better validation |mu| MAE), exactly {p['epochs']} epochs per "
        f"main / sweep / size run and {p['recipe_epochs']} per recipe-search run (no early stopping); test metrics "
        "use the best-validation checkpoint.",
        f"- Wall time (recorded, not a budget: every run stops at its epoch count): {_minutes(total)} over {len(inp.invocations)} invocation(s) of `fastdipole reproduce` "
        f"(training {_minutes(train_total)} summed over {len(done)} finished runs, up to "
        f"{max((i.get('jobs', 1) for i in inp.invocations), default=1)} in parallel).",
        f"- Software: fastdipole {env.get('fastdipole')}, torch {env.get('torch')}, numpy {env.get('numpy')}, "
        f"Python {env.get('python')}; ops backend: {env.get('backend')}; git {env.get('git', 'unknown')}.",
        f"- Machine: {env.get('cpu')}, {env.get('cores')} cores, {env.get('memory_gb', '?')} GB RAM, "
        f"{env.get('platform')}; device {env.get('device')}; {env.get('threads_per_run')} thread(s) per run.",
    ]
    if inp.main_config:
        cfg = {k: v for k, v in inp.main_config.items() if k != "run"}
        lines += ["", "TrainConfig of the recipe run of the first seed (`config.json`; other runs differ in the "
                  "settings of their arm, `l1`, `seed`, `data` and `epochs`, as their names say):", "", "```"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in cfg.items()]
        lines.append("```")
    return "\n".join(lines)


def files_section(inp: ReportInputs) -> str:
    example = next((s.name for s in inp.specs if s.name in inp.results and s.dataset == "qm9"), "recipe-seed0")
    return "\n".join([
        "- `runs/<run>/`: a `fastdipole train` run folder (`config.json`, `split.npz`, `metrics.csv` with the "
        "per-epoch validation direction agreement, checkpoints, `summary.json`) plus `test_metrics.json` and "
        "`test_predictions.npz` (test-set predictions behind the tables and figures).",
        "- `logs/<run>.log`: the trainer's output of each run; `reproduce.json`: preset and invocations.",
        "- `data/`: `test.h5` and `pool_n<N>.h5` cut from the source file (`manifest.json`, `source_indices.npz`).",
        f"- Re-score a run: `fastdipole evaluate --model {Path(inp.out_dir).as_posix()}/runs/{example} "
        f"--data {Path(inp.out_dir).as_posix()}/data/test.h5` (the pools hold no test molecules).",
        "- Rebuild this report without training: the same command with `--report-only`.",
    ])


def write_report(inp: ReportInputs) -> Path:
    from ..atomic import atomic_write_text

    path = Path(inp.out_dir) / REPORT_FILE
    atomic_write_text(render(inp), path)
    return path
