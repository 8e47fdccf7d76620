"""Figures of a calibration and the records behind it (matplotlib, PNG and SVG).

- ``scores_<model>`` (the key with characters outside ``[A-Za-z0-9._-]`` as ``-``): per category, the
  CLIPScore histogram at the model's default
  steps with the fitted Normal density (the kind of figure Gao et al. open with);
- ``quality_vs_steps``: per category, each model's cell means ± std and its curve;
- ``latency_vs_steps``: per-image total seconds and each model's fitted line (for a model profiled
  at several batch sizes, each batch size's calls and line: seconds per call);
- ``energy_vs_steps``: per-image joules and each model's energy line (only where energy was measured);
- ``memory_ladder``: the four GPU memory rungs and the host peaks (process RSS, system memory) of
  each model (absent = not measurable), the bar ``peak_bytes`` is marked with its kind.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from genedge.calibrate.records import ProfileRuns
from genedge.contract.files import write_figure
from genedge.contract.runs import MEMORY_RUNGS
from genedge.contract.table import HOST_MEMORY_FIELDS, CalibrationTable, ModelCalibration

__all__ = ["FIGURE_FORMATS", "write_figures"]

logger = logging.getLogger(__name__)

FIGURE_FORMATS = ("png", "svg")
_CURVE_POINTS = 100
_HIST_BINS = 15


def write_figures(table: CalibrationTable, runs: ProfileRuns, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw the calibration figures into ``out_dir``.

    Args:
        table: the table fitted from ``runs``.
        runs: the records behind it (the histograms and scatter need every image).
        out_dir: directory to write into (created).

    Returns:
        The written files, PNG and SVG of each figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    written: list[Path] = []
    # A fixed hash salt and no date keep the SVGs identical across re-runs.
    with plt.rc_context({"svg.hashsalt": "genedge", "figure.dpi": 100}):
        figures = {f"scores_{_file_stem(key)}": _score_histograms(plt, table, runs, key) for key in table.models}
        figures["quality_vs_steps"] = _quality_vs_steps(plt, table)
        figures["latency_vs_steps"] = _line_vs_steps(
            plt, table, runs, column="total_s", line=_latency_line, quantity="latency", unit_name="seconds", unit="s"
        )
        if any(model.energy is not None for model in table.models.values()):
            figures["energy_vs_steps"] = _line_vs_steps(
                plt, table, runs, column="energy_j", line=_energy_line, quantity="energy", unit_name="joules", unit="J"
            )
        figures["memory_ladder"] = _memory_ladder(plt, table)
        for name, fig in figures.items():
            for fmt in FIGURE_FORMATS:
                path = out / f"{name}.{fmt}"
                written.append(write_figure(fig, path, metadata={"Date": None} if fmt == "svg" else None))
            plt.close(fig)
    logger.info("Wrote %d figure files to %s.", len(written), out)
    return written


def _file_stem(key: str) -> str:
    # Model keys such as "replica:tiny" or "org/name@rev" hold characters a file name must not.
    return re.sub(r"[^A-Za-z0-9._-]+", "-", key)


def _grid(plt: Any, count: int, title: str) -> tuple[Any, list[Any]]:
    cols = min(count, 2)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    fig.suptitle(title)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def _replica_note(table: CalibrationTable, keys: list[str]) -> str:
    replicas = [k for k in keys if table.models[k].is_replica]
    return f"\n(replicas {', '.join(replicas)}: scores are not image quality)" if replicas else ""


def _score_histograms(plt: Any, table: CalibrationTable, runs: ProfileRuns, key: str) -> Any:
    from scipy import stats

    model = table.models[key]
    steps = model.default_steps
    scored = runs.scored
    fig, axes = _grid(
        plt,
        len(table.categories),
        f"{key}: CLIPScore at {steps} steps with the fitted Normal{_replica_note(table, [key])}",
    )
    for ax, category in zip(axes, table.categories):
        scores = scored.loc[
            (scored["model_key"] == key) & (scored["category"] == category) & (scored["steps"] == steps), "clip_score"
        ].to_numpy()
        cell = model.quality[category][steps]
        ax.hist(scores, bins=_HIST_BINS, density=True, alpha=0.5)
        x = np.linspace(cell.mean - 4 * cell.std, cell.mean + 4 * cell.std, _CURVE_POINTS)
        ax.plot(x, stats.norm.pdf(x, cell.mean, cell.std))
        gof = "n/a" if cell.gof is None else f"{cell.gof:.2f}"
        ax.set_title(f"{category}: N({cell.mean:.2f}, {cell.std:.2f}²), n={cell.n}, gof p={gof}", fontsize=9)
        ax.set_xlabel("CLIPScore")
        ax.set_ylabel("density")
    fig.tight_layout()
    return fig


def _quality_vs_steps(plt: Any, table: CalibrationTable) -> Any:
    fig, axes = _grid(
        plt,
        len(table.categories),
        "CLIPScore vs steps (dots: cells, mean ± std; lines: what the planner reads: cells, curve between)"
        f"{_replica_note(table, list(table.models))}",
    )
    for ax, category in zip(axes, table.categories):
        for key, model in table.models.items():
            cells = model.quality[category]
            steps = np.array(sorted(cells))
            line = ax.errorbar(
                steps, [cells[s].mean for s in steps], yerr=[cells[s].std for s in steps], fmt="o", capsize=3, label=key
            )
            lo, hi = model.curves[category].valid_steps
            grid = np.linspace(lo, hi, _CURVE_POINTS)
            ax.plot(grid, [model.quality_at(category, float(s))[0] for s in grid], color=line[0].get_color())
        ax.set_title(category, fontsize=9)
        ax.set_xlabel("denoising steps")
        ax.set_ylabel("CLIPScore")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _line_vs_steps(
    plt: Any,
    table: CalibrationTable,
    runs: ProfileRuns,
    *,
    column: str,
    line: Callable[[ModelCalibration], list[tuple[int | None, float, float, float | None, str]]],
    quantity: str,
    unit_name: str,
    unit: str,
) -> Any:
    """Each model's measured ``column`` per image against steps, with its fitted line.

    ``line(model)`` gives the model's lines as ``(batch_size, overhead, per_step, r2, source)``, none for a
    model without one; a batch size (not None) draws only the records of that batch size.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    ok = runs.ok
    per_call = False
    for key, model in table.models.items():
        for batch, overhead, per_step, r2, source in line(model):
            rows = ok[(ok["model_key"] == key) & ok[column].notna()]
            if batch is not None:
                rows = rows[rows["batch_size"] == batch]
                per_call = per_call or column == "total_s"
            dots = ax.plot(rows["steps"], rows[column], ".", alpha=0.3)
            steps = np.array([min(model.steps), max(model.steps)])
            ax.plot(
                steps,
                overhead + per_step * steps,
                color=dots[0].get_color(),
                label=f"{key}{'' if batch is None else f' batch {batch}'}: {overhead:.3g} {unit} + "
                f"{per_step:.3g} {unit}/step" + (f" (R²={r2:.3f})" if r2 is not None else f" ({source})"),
            )
    ax.set_xlabel("denoising steps")
    ax.set_ylabel(f"{unit_name} per {'pipeline call' if per_call else 'image'} (full device)")
    ax.set_title(f"{quantity.capitalize()} vs steps on {table.device.get('name')}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _latency_line(model: ModelCalibration) -> list[tuple[int | None, float, float, float | None, str]]:
    if model.batch_latency:
        return [(b, lat.overhead_s, lat.per_step_s, lat.r2, lat.source) for b, lat in model.batch_latency.items()]
    lat = model.latency
    return [(None, lat.overhead_s, lat.per_step_s, lat.r2, lat.source)]


def _energy_line(model: ModelCalibration) -> list[tuple[int | None, float, float, float | None, str]]:
    energy = model.energy
    if energy is None:
        return []
    # With several batch sizes the energy line is the base batch size's (per image).
    batch = model.base_batch_size if model.batch_latency else None
    return [(batch, energy.overhead_j, energy.per_step_j, energy.r2, energy.source)]


def _memory_ladder(plt: Any, table: CalibrationTable) -> Any:
    fig, ax = plt.subplots(figsize=(7, 4))
    keys = list(table.models)
    bars_of = (*MEMORY_RUNGS, *HOST_MEMORY_FIELDS)
    width = 0.8 / len(bars_of)
    for i, rung in enumerate(bars_of):
        values = [getattr(table.models[k].memory, rung) for k in keys]
        positions = np.arange(len(keys)) + (i - (len(bars_of) - 1) / 2) * width
        bars = ax.bar(
            positions, [0 if v is None else v / 2**30 for v in values], width, label=rung.removesuffix("_bytes")
        )
        for bar, value in zip(bars, values):
            if value is None:
                ax.annotate("n/a", (bar.get_x() + bar.get_width() / 2, 0), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(np.arange(len(keys)), [f"{k}\npeak: {table.models[k].memory.kind}" for k in keys])
    ax.set_ylabel("peak GiB")
    ax.set_title("Memory ladder and host peaks (n/a = not measurable)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
