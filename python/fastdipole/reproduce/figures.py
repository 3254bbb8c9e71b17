"""The report's figures (PNG): parity plots of test predictions, learning curves, direction agreement per epoch,
and the l1-sweep and training-size curves."""

from __future__ import annotations

from pathlib import Path

from ..evaluation.plots import _pyplot, parity_plot, save_figure
from ..train import read_history
from ..units import DEBYE_PER_E_ANGSTROM
from .plan import MAIN_ARMS, RunSpec
from .runner import load_test_predictions

COLORS = {"dipole-only": "tab:gray", "paper": "tab:red", "paper-neutral": "tab:purple", "recipe": "tab:blue",
          "average": "tab:orange"}
SEED_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)))


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
    return {"color": COLORS.get(spec.arm, "black"), "ls": SEED_STYLES[i % len(SEED_STYLES)]}


def _curves(out_dir, specs: list[RunSpec], seeds: list[int], path, column: str, ylabel: str, title: str,
            scale: float = 1.0, log: bool = False) -> Path | None:
    """One line per main run of ``column`` of its metrics.csv against the epoch."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.6), dpi=110)
    for spec in specs:
        if "main" not in spec.studies:
            continue
        rows = [r for r in read_history(Path(out_dir) / "runs" / spec.name) if r.get(column) is not None]
        if rows:
            ax.plot([r["epoch"] for r in rows], [scale * r[column] for r in rows], lw=1.1, label=spec.name,
                    **_style(spec, seeds))
    if not ax.lines:
        plt.close(fig)
        return None
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    return save_figure(fig, path)


def learning_curves(out_dir, specs, seeds, path) -> Path | None:
    """Validation |mu| MAE (e*A) per epoch of every main run (colour: arm, line style: seed)."""
    return _curves(out_dir, specs, seeds, path, "valid_dipole_mae_e_angstrom", "validation |mu| MAE (e*A)",
                   "main runs (colour: arm, line: seed)", log=True)


def direction_curves(out_dir, specs, seeds, path) -> Path | None:
    """Validation direction agreement (%) per epoch of every main run: when each run settles in its basin."""
    return _curves(out_dir, specs, seeds, path, "valid_direction_agreement",
                   "validation molecules with cos(mu, mu_Mulliken) > 0 (%)",
                   "dipole direction vs the Mulliken point-charge dipole", scale=100.0)


def sweep_plot(rows: list[dict], path) -> Path | None:
    """Test MAE (e*A) against the charge weight l1 (l2 fixed), one line per seed."""
    rows = [r for r in rows if r.get("mae") is not None]
    if len({r["l1"] for r in rows}) < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.4, 4.0), dpi=110)
    positive = [r["l1"] for r in rows if r["l1"] > 0]
    zero_at = min(positive) / 4 if positive else 1e-3  # l1 = 0 drawn left of the rest
    for seed in sorted({r["seed"] for r in rows}):
        pts = sorted((r["l1"], r["mae"]) for r in rows if r["seed"] == seed)
        ax.plot([x if x > 0 else zero_at for x, _ in pts], [y for _, y in pts], "o-", label=f"seed {seed}")
    ax.set_xscale("log")
    ax.set_xlabel("charge weight l1 (log scale; l1 = 0 at the far left), l2 = 0.96")
    ax.set_ylabel("test |mu| MAE (e*A)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def size_plot(rows: list[dict], path) -> Path | None:
    """Test MAE (e*A) against the number of training molecules, dipole-only vs the recipe (log-log)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.4, 4.0), dpi=110)
    for arm in ("dipole-only", "recipe"):
        for seed in sorted({r["seed"] for r in rows}):
            pts = sorted((r["n_train"], r["mae"][arm]) for r in rows if r["seed"] == seed and r["mae"].get(arm))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=COLORS[arm], label=f"{arm}, seed {seed}")
    if not ax.lines:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training molecules")
    ax.set_ylabel("test |mu| MAE (e*A)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def main_figures(out_dir, fig_dir, seeds: list[int], results: dict) -> dict[str, Path]:
    """Charge and dipole parity plots of the first seed's main runs."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    seed = seeds[0]
    for arm in MAIN_ARMS:
        name = f"{arm}-seed{seed}"
        if name not in results:
            continue
        run_dir = Path(out_dir) / "runs" / name
        out[f"charges_{arm}"] = charge_parity(run_dir, fig_dir / f"charges_{arm}.png",
                                              f"test atoms vs Mulliken; arm {arm} (seed {seed})")
        out[f"dipoles_{arm}"] = dipole_parity(run_dir, fig_dir / f"dipoles_{arm}.png",
                                              f"test dipoles; arm {arm} (seed {seed})")
    return out

