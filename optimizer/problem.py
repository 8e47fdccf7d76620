"""The planning problem: models, a workload of prompt categories, and an edge budget.

A :class:`Problem` is the planner's view of a calibration table plus a workload:
plain numpy arrays, validated once, so every planner reads the same numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import ndtr

from genedge.optimizer.workload import Workload

if TYPE_CHECKING:
    from genedge.calibrate.table import CalibrationTable

__all__ = ["Problem"]

logger = logging.getLogger(__name__)

_GIB = 2**30


@dataclass(frozen=True, eq=False)
class Problem:
    """One planning instance in array form (DESIGN §3).

    Index conventions: ``c`` over categories, ``m`` over models, ``k`` over a
    model's step grid.

    Attributes:
        models: model keys (length M).
        categories: category names (length C).
        counts: requests per category n_c, shape (C,).
        steps: per model, its step grid (sorted, unique, positive ints).
        quality_mean: per model, μ[c, k] CLIPScore means, shape (C, K_m).
        quality_std: per model, σ[c, k], shape (C, K_m).
        service_s: per model, seconds per image at full share o_m + τ_m·s for each grid step, shape (K_m,).
        default_step_index: per model, the index of its default steps in its grid.
        memory_bytes: peak memory per model, shape (M,).
        budget: compute budget R in GPU units (1.0 = one whole GPU).
        weight: w, CLIPScore points per second of mean delay.
        device_memory_bytes: memory G available to the models, or None for no limit.
        table_sha256: hash of the calibration table the problem was built from, if any.
        workload_sha256: hash of the workload, if built from one.
        min_clipscore: quality floor θ (points): each category's requests must score below
            it with probability at most ``max_shortfall`` (a chance constraint), or None.
        max_shortfall: ε, the largest allowed P(score < θ) per category, in (0, 1).
        left_out: model key → peak memory (bytes) of the models left out of the problem because
            each alone needs more than ``device_memory_bytes`` (see :meth:`from_table`).
    """

    models: tuple[str, ...]
    categories: tuple[str, ...]
    counts: np.ndarray
    steps: tuple[np.ndarray, ...]
    quality_mean: tuple[np.ndarray, ...]
    quality_std: tuple[np.ndarray, ...]
    service_s: tuple[np.ndarray, ...]
    default_step_index: tuple[int, ...]
    memory_bytes: np.ndarray
    budget: float
    weight: float
    device_memory_bytes: int | None = None
    table_sha256: str | None = None
    workload_sha256: str | None = None
    min_clipscore: float | None = None
    max_shortfall: float = 0.05
    left_out: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m, c = len(self.models), len(self.categories)
        if m == 0:
            raise ValueError("Expected at least one model, but got none")
        if not (math.isfinite(self.budget) and self.budget > 0):
            raise ValueError(f"Expected a compute budget > 0 (GPU units), but got {self.budget}")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"Expected a delay weight w >= 0 (points per second), but got {self.weight}")
        if self.min_clipscore is not None and not math.isfinite(self.min_clipscore):
            raise ValueError(f"Expected a finite CLIPScore floor, but got {self.min_clipscore}")
        if not 0 < self.max_shortfall < 1:
            raise ValueError(f"Expected a shortfall probability in (0, 1), but got {self.max_shortfall}")
        if self.counts.shape != (c,) or not np.isfinite(self.counts).all() or (self.counts <= 0).any():
            # A category without requests has no routing to plan: leave it out of the problem.
            raise ValueError(f"Expected {c} positive, finite request counts, but got {self.counts}")
        for i, key in enumerate(self.models):
            grid = self.steps[i]
            if grid.size == 0:
                raise ValueError(f"model {key!r}: expected a non-empty step grid, but got []")
            if (np.diff(grid) <= 0).any() or grid[0] <= 0:
                raise ValueError(f"model {key!r}: expected positive, increasing, unique steps, but got {grid.tolist()}")
            shape = (c, grid.size)
            if self.quality_mean[i].shape != shape or self.quality_std[i].shape != shape:
                raise ValueError(f"model {key!r}: expected quality arrays of shape {shape}")
            if not np.isfinite(self.quality_mean[i]).all():
                raise ValueError(f"model {key!r}: expected finite quality means")
            if not (np.isfinite(self.quality_std[i]).all() and (self.quality_std[i] > 0).all()):
                raise ValueError(f"model {key!r}: expected finite quality stds > 0")
            if self.service_s[i].shape != (grid.size,) or not (self.service_s[i] > 0).all():
                raise ValueError(f"model {key!r}: expected a positive service time per grid step")
            if not 0 <= self.default_step_index[i] < grid.size:
                raise ValueError(f"model {key!r}: default step index out of its grid")
        if self.device_memory_bytes is not None:
            too_big = [k for k, b in zip(self.models, self.memory_bytes) if b > self.device_memory_bytes]
            if too_big:
                raise ValueError(
                    f"models {too_big} need more memory than the device's {self.device_memory_bytes / _GIB:.2f} GiB; "
                    f"leave them out of the problem (Problem.from_table does)"
                )
        both = sorted(set(self.left_out) & set(self.models))
        if both:
            raise ValueError(f"Expected left-out models to be out of the problem, but {both} are in its models")
        fit = [k for k, b in self.left_out.items() if self.device_memory_bytes is None or b <= self.device_memory_bytes]
        if fit:
            raise ValueError(f"Expected left-out models to need more than the device memory, but {fit} fit in it")

    @classmethod
    def from_table(
        cls,
        table: CalibrationTable,
        workload: Workload,
        *,
        budget: float = 1.0,
        weight: float = 0.05,
        models: Sequence[str] | None = None,
        device_memory_bytes: int | None = None,
        table_sha256: str | None = None,
        min_clipscore: float | None = None,
        max_shortfall: float = 0.05,
    ) -> Problem:
        """Build a problem from a calibration table and a workload.

        Args:
            table: the calibration table.
            workload: requests per category; every category must be one of the table's.
            budget: compute budget R in GPU units.
            weight: w, CLIPScore points per second of mean delay.
            models: restrict to these model keys (default: all of the table's).
            device_memory_bytes: memory available to the models (default: the table device's memory).
                A model that needs more than this on its own is left out of the problem and
                recorded in :attr:`left_out`; every planner then plans on the models that fit.
            table_sha256: hash of the table file, recorded in plans.
            min_clipscore: quality floor θ, or None for none.
            max_shortfall: ε, the allowed P(score < θ) per category.

        Raises:
            ValueError: unknown categories or model keys (the message lists the known ones), or
                no model fits in device memory (the message names each model's need).
        """
        unknown = sorted(set(workload.counts) - set(table.categories))
        if unknown:
            raise ValueError(
                f"workload categories {unknown} are not in the table; expected a subset of {list(table.categories)}"
            )
        keys = tuple(models) if models is not None else tuple(table.models)
        missing = [k for k in keys if k not in table.models]
        if missing:
            raise ValueError(f"models {missing} are not in the table; available: {list(table.models)}")
        memory = table.device_memory_bytes if device_memory_bytes is None else device_memory_bytes
        peaks = {k: float(table.models[k].memory.peak_bytes) for k in keys}
        left_out = {k: b for k, b in peaks.items() if memory is not None and b > memory}
        if keys and len(left_out) == len(keys):
            needs = ", ".join(f"{k} needs {b / _GIB:.2f} GiB" for k, b in left_out.items())
            raise ValueError(f"No model fits in the {memory / _GIB:.2f} GiB of device memory: {needs}")
        if left_out:
            logger.info("left out of the problem, too big for %.2f GiB: %s", memory / _GIB, sorted(left_out))
        keys = tuple(k for k in keys if k not in left_out)
        categories = tuple(c for c in table.categories if workload.counts.get(c, 0) > 0)
        steps, means, stds, service, defaults = [], [], [], [], []
        for key in keys:
            model = table.models[key]
            grid = np.asarray(model.steps, dtype=int)
            cells = [[model.quality_at(c, int(s)) for s in grid] for c in categories]
            arr = np.asarray(cells, dtype=float)  # (C, K, 2)
            steps.append(grid)
            means.append(arr[..., 0])
            stds.append(arr[..., 1])
            service.append(model.latency.overhead_s + model.latency.per_step_s * grid.astype(float))
            defaults.append(int(np.searchsorted(grid, model.default_steps)))
        return cls(
            models=keys,
            categories=categories,
            counts=np.array([float(workload.counts[c]) for c in categories]),
            steps=tuple(steps),
            quality_mean=tuple(means),
            quality_std=tuple(stds),
            service_s=tuple(service),
            default_step_index=tuple(defaults),
            memory_bytes=np.array([peaks[k] for k in keys], dtype=float),
            budget=float(budget),
            weight=float(weight),
            device_memory_bytes=memory,
            table_sha256=table_sha256,
            workload_sha256=workload.sha256(),
            min_clipscore=min_clipscore,
            max_shortfall=max_shortfall,
            left_out=left_out,
        )

    def left_out_reasons(self) -> dict[str, str]:
        """model key → why it was left out, e.g. ``{"sdxl": "needs 13.04 GiB, limit 10.00 GiB"}``."""
        return {
            k: f"needs {b / _GIB:.2f} GiB, limit {self.device_memory_bytes / _GIB:.2f} GiB"
            for k, b in self.left_out.items()
        }

    @property
    def n_requests(self) -> float:
        """Total requests N = Σ_c n_c."""
        return float(self.counts.sum())

    @property
    def grid_sizes(self) -> tuple[int, ...]:
        """Number of step choices per model."""
        return tuple(g.size for g in self.steps)

    def mean_at(self, step_index: Sequence[int]) -> np.ndarray:
        """μ[c, m] at the given step index per model, shape (C, M)."""
        return np.stack([q[:, k] for q, k in zip(self.quality_mean, step_index)], axis=1)

    def std_at(self, step_index: Sequence[int]) -> np.ndarray:
        """σ[c, m] at the given step index per model, shape (C, M)."""
        return np.stack([q[:, k] for q, k in zip(self.quality_std, step_index)], axis=1)

    def shortfall_at(self, step_index: Sequence[int]) -> np.ndarray | None:
        """F[c, m] = P(score < θ) = Φ((θ − μ)/σ) at the given steps, shape (C, M); None without a floor."""
        if self.min_clipscore is None:
            return None
        return ndtr((self.min_clipscore - self.mean_at(step_index)) / self.std_at(step_index))

    def unreachable_floor_error(self) -> ValueError:
        """The error planners raise when no plan meets the quality floor."""
        return ValueError(
            f"No plan keeps P(CLIPScore < {self.min_clipscore:g}) <= {self.max_shortfall:g} for every "
            f"category, even at each model's most steps; lower the floor or allow a larger shortfall"
        )

    def service_at(self, step_index: Sequence[int]) -> np.ndarray:
        """Seconds per image at full share, o_m + τ_m·s_m, shape (M,)."""
        return np.array([t[k] for t, k in zip(self.service_s, step_index)])

    def deployable_sets(self, limit: int = 4096) -> list[np.ndarray]:
        """Maximal sets of models that fit in device memory together, as boolean masks.

        With no memory limit, or when every model fits at once, that is the one
        set of all models. Otherwise the maximal feasible subsets are enumerated
        (at most ``limit`` subsets are examined, largest first).

        Raises:
            ValueError: more than ``limit`` subsets would need examining.
        """
        everything = np.ones(len(self.models), dtype=bool)
        if self.fits_in_memory(everything):
            return [everything]
        m = len(self.models)
        if 2**m > limit:
            raise ValueError(
                f"Expected at most {limit} model subsets to check against device memory, "
                f"but {m} models give {2**m}; restrict the models (--models)"
            )
        masks = ((np.arange(1, 2**m)[:, None] >> np.arange(m)) & 1).astype(bool)
        masks = masks[np.argsort(-masks.sum(axis=1), kind="stable")]
        maximal: list[np.ndarray] = []
        for mask in masks:
            if self.fits_in_memory(mask) and not any((mask <= big).all() for big in maximal):
                maximal.append(mask)
        return maximal

    def fits_in_memory(self, in_use: np.ndarray) -> bool:
        """Whether the models flagged in ``in_use`` fit in device memory together."""
        if self.device_memory_bytes is None:
            return True
        return float(self.memory_bytes[in_use].sum()) <= self.device_memory_bytes
