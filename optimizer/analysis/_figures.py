"""Figures of a sweep, in the manner of the paper's evaluation (matplotlib, PNG and SVG)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genedge.contract.files import write_figure

__all__ = ["plot_sweep", "plot_convergence"]

_PANELS = (("mean_clipscore", "mean CLIPScore"), ("mean_delay_s", "mean delay (s)"), ("utility", "utility U"))


def _save(fig, out: Path, stem: str) -> list[Path]:
    return [write_figure(fig, out / f"{stem}.{fmt}", dpi=130, bbox_inches="tight") for fmt in ("png", "svg")]


def plot_sweep(results: Sequence[Mapping[str, Any]], out: Path) -> list[Path]:
    """Quality, delay and utility versus load for every method; one row of panels per (budget, weight).

    Args:
        results: the sweep's result rows (see :func:`genedge.optimizer.analysis.sweep`).
        out: the folder for ``sweep.png`` and ``sweep.svg``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys((r["budget"], r["weight"]) for r in results))
    fig, axes = plt.subplots(len(settings), 3, figsize=(13, 3.2 * len(settings)), squeeze=False)
    for row, (budget, weight) in enumerate(settings):
        part = [r for r in results if (r["budget"], r["weight"]) == (budget, weight)]
        for col, (field, label) in enumerate(_PANELS):
            ax = axes[row, col]
            for method in dict.fromkeys(r["method"] for r in part):
                group = [r for r in part if r["method"] == method]
                style = "-" if method in ("genedge", "paper") else "--"
                ax.plot(
                    [r["requests"] for r in group], [r[field] for r in group], style, marker="o", ms=3, label=method
                )
            ax.set_xlabel("requests per window")
            ax.set_ylabel(label)
            ax.set_title(f"R = {budget:g} GPU, w = {weight:g} points/s", fontsize=9)
            ax.grid(alpha=0.3)
    axes[0, 2].legend(fontsize=7, loc="best")
    fig.tight_layout()
    paths = _save(fig, out, "sweep")
    plt.close(fig)
    return paths


def plot_convergence(trajectories: dict[str, np.ndarray], out: Path, *, exact: float | None = None) -> list[Path]:
    """Current and best utility per annealing iteration, per method, with the exact optimum if known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, trajectory in trajectories.items():
        (line,) = ax.plot(trajectory[:, 0], trajectory[:, 1], alpha=0.35, lw=0.8)
        ax.plot(trajectory[:, 0], trajectory[:, 2], color=line.get_color(), lw=1.8, label=f"{name} (best so far)")
    if exact is not None:
        ax.axhline(exact, color="k", ls=":", label="exact optimum")
    ax.set_xlabel("annealing iteration")
    ax.set_ylabel("utility U")
    ax.set_title("annealing convergence (thin: current state)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = _save(fig, out, "convergence")
    plt.close(fig)
    return paths
