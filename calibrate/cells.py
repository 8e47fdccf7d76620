"""A table's quality cells refitted from per-image scores, and ground truths to draw scores from.

Adaptive profiling and its checks refit a table's cells as images arrive; ground truths (known
Normal parameters, or a population of real per-prompt CLIPScores resampled) stand in for a GPU
where the answer must be known.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from genedge.calibrate.fit import MEASURED_QUALITY_REF, MEASURED_QUALITY_SOURCE, fit_quality
from genedge.calibrate.pairing import Cell, paired_cells
from genedge.contract.table import CalibrationTable, PairedCells

__all__ = ["Cell", "NormalTruth", "PopulationTruth", "table_with_scores"]


def table_with_scores(
    table: CalibrationTable,
    scores: Mapping[Cell, np.ndarray],
    images: Mapping[Cell, Sequence[Hashable]] | None = None,
) -> CalibrationTable:
    """``table`` with each cell in ``scores`` replaced by the Normal fit of its scores (source measured).

    Args:
        images: which image each score is, per cell (e.g. (prompt id, seed)); cells that share images
            are paired (:func:`~genedge.calibrate.pairing.paired_cells`). Without them the refitted
            cells pair with none (the table's other pairings stay).

    Raises:
        KeyError: a cell of a model, category or step count the table does not have.
        ValueError: a cell with fewer than two scores.
    """
    models = dict(table.models)
    for (key, category, steps), values in scores.items():
        model = models[key]
        if category not in model.quality or steps not in model.steps:
            raise KeyError(f"cell {(key, category, steps)}: not a category and grid step of model {key!r}")
        quality = {c: dict(cells) for c, cells in model.quality.items()}
        quality[category][steps] = fit_quality(values).cell()
        models[key] = dataclasses.replace(model, quality=quality)
    sources = {**table.sources, MEASURED_QUALITY_REF: MEASURED_QUALITY_SOURCE}
    if images is None:
        paired = _without(table.paired, set(scores))
    else:
        paired = paired_cells({cell: dict(zip(images[cell], values)) for cell, values in scores.items()})
    return dataclasses.replace(table, models=models, sources=sources, paired=paired)


def _without(paired: tuple[PairedCells, ...], cells: set[Cell]) -> tuple[PairedCells, ...]:
    """The pairings among the cells not in ``cells``."""
    out = []
    for group in paired:
        keep = [i for i, (key, steps) in enumerate(group.cells) if (key, group.category, steps) not in cells]
        if len(keep) >= 2:
            out.append(group.among(keep))
    return tuple(out)


@dataclass(frozen=True)
class NormalTruth:
    """Scores of each cell ~ Normal(mean, std²) with known parameters."""

    mean: Mapping[Cell, float]
    std: Mapping[Cell, float]

    def draw(self, cell: Cell, images: int, rng: np.random.Generator) -> np.ndarray:
        """``images`` scores of ``cell``."""
        return rng.normal(self.mean[cell], self.std[cell], images)

    def cell_mean(self, cell: Cell) -> float:
        """The cell's true mean."""
        return self.mean[cell]


@dataclass(frozen=True)
class PopulationTruth:
    """Scores of each cell resampled (with replacement) from a population of real per-prompt scores.

    The truth of a cell is its population's mean: a profile that measured every prompt would find it.
    """

    population: Mapping[Cell, np.ndarray]

    def draw(self, cell: Cell, images: int, rng: np.random.Generator) -> np.ndarray:
        """``images`` scores of ``cell``, drawn with replacement from its population."""
        return rng.choice(self.population[cell], images, replace=True)

    def cell_mean(self, cell: Cell) -> float:
        """The cell's population mean."""
        return float(np.mean(self.population[cell]))
