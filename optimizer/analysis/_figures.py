"""Figures of a sweep, in the manner of the paper's evaluation, and of a plan schedule (matplotlib, PNG and SVG)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genedge.contract.files import write_figure

if TYPE_CHECKING:
    from genedge.optimizer.schedule_file import PlanSchedule

__all__ = ["plot_sweep", "plot_convergence", "plot_schedule"]

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


def plot_schedule(schedule: PlanSchedule, out: Path) -> list[Path]:
    """A plan schedule's utility and p95 delay versus the total arrival rate, each band shaded.

    Bands alternate in shade and are numbered from 1 as the command prints them; a band whose plan misses
    the SLO is hatched. The p95 panel draws the SLO where one was planned for, and both panels the rate from
    which on no plan keeps every queue stable, where it lies within the planned rates.

    Args:
        schedule: the schedule (:func:`genedge.optimizer.analysis.plan_schedule`).
        out: the folder for ``schedule.png`` and ``schedule.svg``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    planned = [p for p in schedule.points if p.band is not None]
    rates = [p.rate for p in planned]
    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for ax, field, label in ((axes[0], "utility", "utility U"), (axes[1], "p95_delay_s", "p95 delay (s)")):
        _shade_bands(ax, schedule)
        ax.plot(rates, [getattr(p, field) for p in planned], "-", marker="o", ms=3, color="C0")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if schedule.max_stable_rate <= schedule.points[-1].rate:
            ax.axvspan(
                schedule.max_stable_rate, schedule.points[-1].rate, color="C3", alpha=0.08, lw=0, label="no plan stable"
            )
    slo = schedule.bands[0].plan.inputs.slo
    if slo is not None:
        axes[1].axhline(slo.seconds, color="C3", ls="--", label=f"SLO {slo.describe()}")
    axes[1].set_xlabel("total arrival rate (requests/s)")
    axes[0].set_title(f"a plan for every rate ({schedule.method}, seed {schedule.seed}); shaded: bands", fontsize=9)
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    paths = _save(fig, out, "schedule")
    plt.close(fig)
    return paths


def _shade_bands(ax, schedule: PlanSchedule) -> None:
    """Shade each band from halfway to its lower neighbour's rate to halfway to its upper one's."""
    rates = [p.rate for p in schedule.points]
    for index, band in enumerate(schedule.bands):
        first = rates.index(band.low_rate)
        last = rates.index(band.high_rate)
        left = band.low_rate if first == 0 else (rates[first - 1] + band.low_rate) / 2
        right = band.high_rate if last == len(rates) - 1 else (band.high_rate + rates[last + 1]) / 2
        ax.axvspan(
            left,
            right,
            color="0.85" if index % 2 == 0 else "0.93",
            hatch=None if band.feasible else "//",
            lw=0,
            zorder=0,
        )
        ax.text(
            (left + right) / 2,
            0.98,
            str(index + 1),
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="top",
            fontsize=7,
        )
