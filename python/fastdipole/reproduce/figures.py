"""The report's figures (PNG): parity plots of test predictions, learning curves, sign flips, study curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..evaluation.plots import _pyplot, parity_plot
from ..train import read_history
from ..units import DEBYE_PER_E_ANGSTROM
from .plan import CONFIGS, RunSpec
from .runner import load_test_predictions
from .tracking import read_signflip

COLORS = {"none": "tab:gray", "mulliken": "tab:blue", "average": "tab:orange"}
SEED_STYLES = ("-", "--", ":", "-.")


def charge_parity(run_dir, path, title: str) -> Path:
    """Predicted vs Mulliken charges of the test atoms (hexbin density, log colour scale, y = x)."""
    p = load_test_predictions(run_dir)
    return parity_plot(p["charges_label_e"], p["charges_pred_e"], path, quantity="atomic charge", units="e",
                       title=title)


def dipole_parity(run_dir, path, title: str) -> Path:
    """Predicted vs label dipole magnitudes of the test molecules, e*Angstrom."""
    p = load_test_predictions(run_dir)
    return parity_plot(p["mu_label_debye"] / DEBYE_PER_E_ANGSTROM, p["mu_pred_debye"] / DEBYE_PER_E_ANGSTROM, path,
                       quantity="dipole magnitude |mu|", units="e*A", title=title)


def _style(spec: RunSpec, seeds: list[int]) -> dict:
    i = seeds.index(spec.seed) if spec.seed in seeds else 0
    return {"color": COLORS.get(spec.charges, "black"), "ls": SEED_STYLES[i % len(SEED_STYLES)]}


def learning_curves(out_dir, specs: list[RunSpec], seeds: list[int], path) -> Path | None:
    """Validation dipole MAE (e*A) per epoch: main runs (left), extra-study runs (right)."""
    plt = _pyplot()
    main = [s for s in specs if "main" in s.studies]
    extra = [s for s in specs if "main" not in s.studies and s.dataset == "qm9"]
    panels = [(main, "main runs (colour: charges, line: seed)")] + ([(extra, "extra studies (seed %d)" % seeds[0])]
                                                                      if extra else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), dpi=110, squeeze=False)
    drew = False
    cmap = plt.get_cmap("tab10")
    for ax, (group, title) in zip(axes[0], panels):
        for k, spec in enumerate(group):
            hist = read_history(Path(out_dir) / "runs" / spec.name)
            if not hist:
                continue
            x = [r["epoch"] for r in hist]
            y = [r["valid_dipole_mae_e_angstrom"] for r in hist]
            style = _style(spec, seeds) if group is main else {"color": cmap(k % 10), "ls": "-"}
            ax.plot(x, y, lw=1.2, label=spec.name, **style)
            drew = True
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation |mu| MAE (e*A)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        if ax.lines:
            ax.legend(fontsize=7, ncol=2 if len(ax.lines) > 6 else 1)
    if not drew:
        plt.close(fig)
        return None
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def sign_flip_curves(out_dir, specs: list[RunSpec], seeds: list[int], path) -> Path | None:
    """Share of validation atoms whose predicted charge has the wrong sign vs Mulliken, per epoch."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for spec in specs:
        rows = read_signflip(Path(out_dir) / "runs" / spec.name)
        if not rows or spec.dataset != "qm9":
            continue
        style = _style(spec, seeds)
        if spec.warmup_epochs:
            style = {"color": "tab:green", "ls": "-"}
        elif "main" not in spec.studies:
            continue  # sweep / size runs would clutter the figure
        ax.plot([r["epoch"] for r in rows], [100 * r["sign_flip_fraction"] for r in rows], lw=1.2, label=spec.name,
                **style)
    if not ax.lines:
        plt.close(fig)
        return None
    ax.axhline(50, color="k", lw=0.6, ls=":")
    ax.set_ylim(-2, 102)
    ax.set_xlabel("epoch")
    ax.set_ylabel("sign-flipped validation atoms (%)")
    ax.set_title("charges with the opposite sign to Mulliken", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(ax.lines) > 6 else 1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def sweep_plot(rows: list[dict], path) -> Path | None:
    """Test MAE (e*A) against the charge weight l1 (l2 fixed)."""
    pts = [(r["l1"], r["metrics"]["dipole_mae_e_angstrom"]) for r in rows if r["metrics"]]
    if len(pts) < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.4, 4.0), dpi=110)
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    xs = np.where(x > 0, x, min(x[x > 0].min() / 4, 1e-3) if (x > 0).any() else 1e-3)  # l1 = 0 drawn left of the rest
    ax.plot(xs, y, "o-", color="tab:blue")
    for xi, xv, yi in zip(xs, x, y):
        ax.annotate(f"l1={xv:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("charge weight l1 (log scale; l1 = 0 at the far left), l2 = 0.96")
    ax.set_ylabel("test |mu| MAE (e*A)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def size_plot(rows: list[dict], path) -> Path | None:
    """Test MAE (e*A) against the number of training molecules, none vs mulliken (log-log)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.4, 4.0), dpi=110)
    for c in ("none", "mulliken"):
        pts = [(r["n_train"], r["metrics"][c]["dipole_mae_e_angstrom"]) for r in rows if r["metrics"][c]]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=COLORS[c], label=c)
    if not ax.lines:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training molecules")
    ax.set_ylabel("test |mu| MAE (e*A)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def main_figures(out_dir, fig_dir, specs: list[RunSpec], seeds: list[int], results: dict) -> dict[str, Path]:
    """Parity plots of the first seed's main runs (charges: none, mulliken; dipoles: all configs)."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    seed = seeds[0]
    for c in CONFIGS:
        name = f"{c}-seed{seed}"
        if name not in results:
            continue
        run_dir = Path(out_dir) / "runs" / name
        if c in ("none", "mulliken"):
            out[f"charges_{c}"] = charge_parity(run_dir, fig_dir / f"charges_{c}.png",
                                                f"test atoms, label = Mulliken; trained with charges={c} (seed {seed})")
        out[f"dipoles_{c}"] = dipole_parity(run_dir, fig_dir / f"dipoles_{c}.png",
                                            f"test dipoles, trained with charges={c} (seed {seed})")
    return out
