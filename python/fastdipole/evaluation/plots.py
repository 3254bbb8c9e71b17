"""Parity plots (prediction vs label), density-coloured on a log scale, written as PNG (Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def parity_plot(label, pred, path, *, quantity: str, units: str, title: str | None = None, gridsize: int | None = None) -> Path:
    """Hexbin parity plot of ``pred`` against ``label`` with a y = x line; returns the PNG path.

    Hexagon colours count points on a log scale, so the dense centre and the sparse outliers both
    show. ``quantity`` / ``units`` label the axes (e.g. "dipole magnitude", "D").
    """
    plt = _pyplot()
    label = np.asarray(label, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    mae = float(np.mean(np.abs(pred - label))) if len(label) else float("nan")
    lo = float(min(label.min(), pred.min())) if len(label) else 0.0
    hi = float(max(label.max(), pred.max())) if len(label) else 1.0
    pad = 0.03 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad

    if gridsize is None:  # coarser hexagons for few points, so the colour still shows density
        gridsize = int(np.clip(0.6 * np.sqrt(len(label)), 20, 90))
    fig, ax = plt.subplots(figsize=(5.6, 4.8), dpi=120)
    if len(label):
        hb = ax.hexbin(label, pred, gridsize=gridsize, bins="log", cmap="viridis", mincnt=1,
                       extent=(lo, hi, lo, hi))
        fig.colorbar(hb, ax=ax, label="count (log scale)")
    ax.plot([lo, hi], [lo, hi], color="crimson", lw=1.0, ls="--", label="y = x")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(f"label {quantity} ({units})")
    ax.set_ylabel(f"predicted {quantity} ({units})")
    head = f"{title}\n" if title else ""
    ax.set_title(f"{head}MAE {mae:.4g} {units}, n = {len(label):,}", fontsize=10)
    ax.legend(loc="lower right", framealpha=0.85)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    try:
        return atomic_write(path, lambda fh: fig.savefig(fh, format="png"))
    finally:
        _pyplot().close(fig)
