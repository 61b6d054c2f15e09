"""Best-of-N plots: max@k and pass@k against k (log2 axis), runs overlaid with interval bands (PNG).

matplotlib with the Agg backend (no display needed). One figure, two panels side by side; each run is a
line with markers at its ks and a translucent band between the bootstrap bounds. k values where a run has
no prompt with N >= k are left out of its line.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from maxk.evaluation.metrics import METRICS, Curves


def plot_curves(runs: list[Curves], path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write a two-panel PNG (max@k | pass@k vs k) for one or more runs; returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    if not runs:
        raise ValueError("plot_curves needs at least one run")
    all_ks = sorted({k for r in runs for k in r.ks})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True)
    markers = "osD^vP*X"
    for ax, m in zip(axes, METRICS):
        for i, r in enumerate(runs):
            c = r.overall[m]
            ks = np.array(c.ks, dtype=float)
            mean, lo, hi = (np.array(v, dtype=float) for v in (c.mean, c.lo, c.hi))
            ok = ~np.isnan(mean)
            label = r.label or f"run {i + 1}"
            line = ax.plot(ks[ok], mean[ok], marker=markers[i % len(markers)], ms=5, lw=1.8, label=label)[0]
            ax.fill_between(ks[ok], lo[ok], hi[ok], color=line.get_color(), alpha=0.18, lw=0)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(all_ks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(k) for k in all_ks])
        if len(all_ks) == 1:
            ax.set_xlim(all_ks[0] / 1.5, all_ks[0] * 1.5)
        ax.set_xlabel("k (samples per prompt, log2 scale)")
        ax.set_ylabel(m)
        ax.set_title(
            f"{m} (mean over prompts, {round(runs[0].confidence * 100)}% bootstrap band)", fontsize=10
        )
        ax.grid(True, which="major", alpha=0.35)
        ylo, yhi = _ylim(runs, m)
        ax.set_ylim(ylo, yhi)
        ax.legend(loc="best", fontsize=9, framealpha=0.85)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ylim(runs: list[Curves], m: str) -> tuple[float, float]:
    """Fit the data with a margin, at least 0.1 tall; a bit beyond [0, 1] so lines at 0 or 1 show."""
    vals = [v for r in runs for v in (*r.overall[m].lo, *r.overall[m].hi) if not math.isnan(v)]
    if not vals:
        return -0.02, 1.02
    lo, hi = min(vals), max(vals)
    pad = max(0.08 * (hi - lo), 0.02)
    lo, hi = lo - pad, hi + pad
    if hi - lo < 0.1:
        mid = (lo + hi) / 2
        lo, hi = mid - 0.05, mid + 0.05
    if min(vals) >= 0.0 and lo < -0.02:
        lo, hi = -0.02, max(hi, 0.08)
    if max(vals) <= 1.0 and hi > 1.02:
        lo, hi = min(lo, 0.92), 1.02
    return lo, hi
