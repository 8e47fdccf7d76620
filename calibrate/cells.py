"""A table's quality cells refitted from per-image scores, and ground truths to draw scores from.

Adaptive profiling and its checks refit a table's cells as images arrive; ground truths (known
Normal parameters, or a population of real per-prompt CLIPScores resampled) stand in for a GPU
where the answer must be known.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from genedge.calibrate.fit import MEASURED_QUALITY_REF, MEASURED_QUALITY_SOURCE, fit_quality
from genedge.contract.table import CalibrationTable

__all__ = ["Cell", "NormalTruth", "PopulationTruth", "table_with_scores"]

#: A quality cell's address: (model key, category, steps).
Cell = tuple[str, str, int]


def table_with_scores(table: CalibrationTable, scores: Mapping[Cell, np.ndarray]) -> CalibrationTable:
    """``table`` with each cell in ``scores`` replaced by the Normal fit of its scores (source measured).

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
    return dataclasses.replace(table, models=models, sources=sources)


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
