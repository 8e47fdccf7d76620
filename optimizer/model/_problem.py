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

from genedge.optimizer.model._delay import OPEN, DelayModel
from genedge.optimizer.model._delay_models import delay_model, delay_model_class
from genedge.optimizer.model._images import ONE_IMAGE, ImagesPerRequest
from genedge.optimizer.model._workload import Workload

if TYPE_CHECKING:
    from genedge.contract.table import CalibrationTable, ModelCalibration

__all__ = [
    "SLO_SCOPES",
    "Problem",
    "Slo",
]

logger = logging.getLogger(__name__)

_GIB = 2**30

#: Where a latency SLO applies: to all requests together, or to each category's requests.
SLO_SCOPES = ("overall", "category")


@dataclass(frozen=True)
class Slo:
    """A latency objective: at least ``attainment`` of requests respond within ``seconds``.

    P(T ≤ seconds) ≥ α is the same constraint as "the α-quantile of T is at most seconds"
    (p95 ≤ SLO is attainment 0.95), so one object states both.

    Attributes:
        seconds: the response-time target (s).
        attainment: α, the smallest allowed fraction of requests within ``seconds``, in (0, 1).
        scope: ``overall`` (all requests together) or ``category`` (each category on its own).
    """

    seconds: float
    attainment: float
    scope: str = "overall"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"Expected an SLO of seconds > 0, but got {self.seconds}")
        if not 0 < self.attainment < 1:
            raise ValueError(f"Expected an SLO attainment in (0, 1), e.g. 0.95 for p95, but got {self.attainment}")
        if self.scope not in SLO_SCOPES:
            raise ValueError(f"Expected an SLO scope among {list(SLO_SCOPES)}, but got {self.scope!r}")

    def describe(self) -> str:
        """E.g. ``"p95 <= 12 s (overall)"``."""
        return f"p{100 * self.attainment:g} <= {self.seconds:g} s ({self.scope})"


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
        arrivals: the delay model, one of :data:`~genedge.optimizer.model.ARRIVAL_MODELS`. Under
            ``window`` ``counts`` are requests per planning window; under ``open`` they are arrival rates λ_c
            (requests/s).
        realization: how routing is realized, one of :data:`~genedge.optimizer.model._delay.REALIZATIONS`.
        slo: a latency objective the plan must meet, or None.
        energy_price: κ, CLIPScore points per Joule: the utility subtracts κ × mean energy per image.
        energy_j: per model, Joules per image at full device share for each grid step, shape (K_m,),
            or None where the table carries no energy.
        batch_sizes: per model, the batch sizes b it may run (sorted, the first is its base batch),
            or None for batch 1 only.
        batch_service_s: per model, seconds per call of b images at full share, shape (B_m, K_m),
            aligned with ``batch_sizes``; None with it.
        service_std_s: per model, the standard deviation of one image's latency at full share (s),
            for the M/G/1 mean beside the M/D/1 one, or None.
        images: how many images one request asks for (open arrivals: a request's images queue together;
            ``counts`` count images). One image by default.
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
    arrivals: str = "window"
    realization: str = "deterministic"
    slo: Slo | None = None
    energy_price: float = 0.0
    energy_j: tuple[np.ndarray, ...] | None = None
    batch_sizes: tuple[np.ndarray, ...] | None = None
    batch_service_s: tuple[np.ndarray, ...] | None = None
    service_std_s: np.ndarray | None = None
    images: ImagesPerRequest = ONE_IMAGE

    def __post_init__(self) -> None:
        # The delay model refuses an unknown arrival model or realization, and a demand it cannot take.
        steady_state = delay_model(self.arrivals, self.realization, self.counts, self.images).steady_state
        self._check_energy()
        self._check_batching()
        if steady_state:
            self._check_capacity()
        self._check_scalars()
        for i in range(len(self.models)):
            self._check_model_grids(i)
        self._check_memory()

    def _check_scalars(self) -> None:
        """Validate the models' count, budget, delay weight, quality floor and request counts."""
        c = len(self.categories)
        if not self.models:
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

    def _check_model_grids(self, i: int) -> None:
        """Validate model ``i``'s step grid and the quality and service arrays over it."""
        key, grid = self.models[i], self.steps[i]
        if grid.size == 0:
            raise ValueError(f"model {key!r}: expected a non-empty step grid, but got []")
        if (np.diff(grid) <= 0).any() or grid[0] <= 0:
            raise ValueError(f"model {key!r}: expected positive, increasing, unique steps, but got {grid.tolist()}")
        shape = (len(self.categories), grid.size)
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

    def _check_memory(self) -> None:
        """Validate that the models fit in device memory and the left-out ones do not."""
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

    def _check_energy(self) -> None:
        """Validate the energy price and the energy per image."""
        if not (math.isfinite(self.energy_price) and self.energy_price >= 0):
            raise ValueError(f"Expected an energy price >= 0 (points per J), but got {self.energy_price}")
        if self.energy_price > 0 and self.energy_j is None:
            raise ValueError(
                "An energy price needs energy per image for every model, but the table carries none; "
                "profile on a device with an energy meter (NVML or tegrastats) or leave the price at 0"
            )
        if self.energy_j is not None:
            for key, grid, joules in zip(self.models, self.steps, self.energy_j):
                if joules.shape != grid.shape or not (np.isfinite(joules).all() and (joules > 0).all()):
                    raise ValueError(f"model {key!r}: expected a positive energy per image for each grid step")

    def _check_batching(self) -> None:
        """Validate the batch sizes, their call times and the latency spreads."""
        if (self.batch_sizes is None) != (self.batch_service_s is None):
            raise ValueError("Expected batch sizes and batch service times together")
        if self.batch_sizes is not None:
            for key, grid, sizes, seconds in zip(self.models, self.steps, self.batch_sizes, self.batch_service_s):
                if sizes.size == 0 or sizes[0] < 1 or (np.diff(sizes) <= 0).any():
                    raise ValueError(f"model {key!r}: expected increasing batch sizes >= 1, but got {sizes.tolist()}")
                if seconds.shape != (sizes.size, grid.size) or not (seconds > 0).all():
                    raise ValueError(f"model {key!r}: expected a positive call time per batch size and grid step")
            if self.arrivals == OPEN.name and not self.images.single and any((b > 1).any() for b in self.batch_sizes):
                raise ValueError(
                    f"Expected batching off with requests of {self.images.describe()}: a bulk-service queue fed "
                    "by requests of several images is not modelled"
                )
        if self.service_std_s is not None and (
            self.service_std_s.shape != (len(self.models),) or (self.service_std_s < 0).any()
        ):
            raise ValueError("Expected one latency standard deviation >= 0 per model")

    def _check_capacity(self) -> None:
        """Refuse rates that no plan can serve with every queue stable (ρ_m < 1 for each deployed model)."""
        fastest, where, per_image = self._fastest_per_image()
        load = self.n_requests * per_image / self.budget
        if load >= 1:
            raise ValueError(
                f"No plan can keep every queue stable: even with every request on the fastest model, {fastest!r} "
                f"at {where} ({per_image:.3g} s per image on the whole device), {self.n_requests:.4g} requests/s "
                f"load it to ρ = {load:.2f} >= 1; lower the rate below {self.max_stable_rate:.4g} requests/s, "
                f"or raise the budget"
            )

    def _fastest_per_image(self) -> tuple[str, str, float]:
        """(model key, its steps and batch, seconds per image at full device) of the fastest way to serve an image.

        Every plan needs Σ_m λ_m S_m / b_m < Σ_m r_m ≤ R; the least any plan needs is every request on
        the fastest model, steps and batch size per image.
        """
        fastest, per_image, where = "", np.inf, ""
        for i, key in enumerate(self.models):
            calls = self.service_s[i][None, :] if self.batch_sizes is None else self.batch_service_s[i]
            sizes = np.ones(1) if self.batch_sizes is None else self.batch_sizes[i].astype(float)
            seconds = calls / sizes[:, None]
            b, k = np.unravel_index(int(np.argmin(seconds)), seconds.shape)
            if seconds[b, k] < per_image:
                fastest, per_image = key, float(seconds[b, k])
                where = f"{int(self.steps[i][k])} steps" + (f", batch {int(sizes[b])}" if sizes[b] > 1 else "")
        return fastest, where, per_image

    @property
    def max_stable_rate(self) -> float:
        """The total arrival rate (requests/s) from which on no plan keeps every queue stable under open arrivals:
        the budget over the fastest model's fastest seconds per image (at its fewest steps and best batch)."""
        return self.budget / self._fastest_per_image()[2]

    @property
    def delay(self) -> DelayModel:
        """The delay model of :attr:`arrivals` and :attr:`realization` (:mod:`~genedge.optimizer.model._delay_models`).

        Built on each use (a class lookup; the demand was checked once, when the problem was made), so
        that the problem's fields stay all it holds.
        """
        return delay_model_class(self.arrivals, self.realization)(self.counts, self.realization, self.images)

    @property
    def demand_unit(self) -> str:
        """What ``counts`` measure: ``"requests"`` per window, or ``"requests/s"`` under open arrivals."""
        return self.delay.arrivals.demand_unit

    @property
    def batch_grid_sizes(self) -> tuple[int, ...]:
        """Number of batch-size choices per model (1 without batching)."""
        if self.batch_sizes is None:
            return tuple(1 for _ in self.models)
        return tuple(b.size for b in self.batch_sizes)

    @property
    def base_batch_index(self) -> tuple[int, ...]:
        """Each model's base batch (its first batch size): the plan of a method that does not batch."""
        return tuple(0 for _ in self.models)

    @property
    def is_classic(self) -> bool:
        """Whether the paper's closed forms decide the shares: a window of requests routed
        deterministically, no SLO and no batching (an energy price folds into the quality term)."""
        return not self.delay.beyond_paper and self.slo is None and self.batch_sizes is None

    def max_batch_at(self, batch_index: Sequence[int]) -> np.ndarray:
        """b_m at the given batch index per model, shape (M,) ints."""
        if self.batch_sizes is None:
            return np.ones(len(self.models), dtype=int)
        return np.array([int(b[k]) for b, k in zip(self.batch_sizes, batch_index)])

    def call_service_at(self, step_index: Sequence[int], batch_index: Sequence[int]) -> np.ndarray:
        """Seconds per call (a batch of b_m images) at full share, shape (M,)."""
        if self.batch_sizes is None:
            return self.service_at(step_index)
        return np.array([t[b, k] for t, b, k in zip(self.batch_service_s, batch_index, step_index)])

    def energy_at(self, step_index: Sequence[int]) -> np.ndarray | None:
        """Joules per image per model at the given steps, shape (M,); None without energy."""
        if self.energy_j is None:
            return None
        return np.array([e[k] for e, k in zip(self.energy_j, step_index)])

    def value_at(self, step_index: Sequence[int]) -> np.ndarray:
        """What a request is worth before delay, μ[c, m] − κ·E_m (points), shape (C, M).

        The energy term depends on the steps alone, so it folds into the quality term and every
        planner that maximizes quality minus delay maximizes the utility with energy too.
        """
        return np.stack([self.value_grid(m)[:, k] for m, k in enumerate(step_index)], axis=1)

    def value_grid(self, model: int) -> np.ndarray:
        """μ[c, k] − κ·E(k) of one model over its grid, shape (C, K_m)."""
        value = self.quality_mean[model]
        if self.energy_price > 0:
            value = value - self.energy_price * self.energy_j[model][None, :]
        return value

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
        arrivals: str = "window",
        realization: str = "deterministic",
        slo: Slo | None = None,
        energy_price: float = 0.0,
        batching: bool = False,
        images: ImagesPerRequest = ONE_IMAGE,
    ) -> Problem:
        """Build a problem from a calibration table and a workload.

        Args:
            table: the calibration table.
            workload: requests per category, each one of the table's; with a composition, each scores as its mix.
            budget: compute budget R in GPU units.
            weight: w, CLIPScore points per second of mean delay.
            models: restrict to these model keys (default: all of the table's).
            device_memory_bytes: memory available to the models (default: the table device's memory); a model
                that needs more alone is left out (:attr:`left_out`), and every planner plans on the others.
            table_sha256: hash of the table file, recorded in plans.
            min_clipscore: quality floor θ, or None for none.
            max_shortfall: ε, the allowed P(score < θ) per category.
            arrivals: the delay model (:data:`~genedge.optimizer.model.ARRIVAL_MODELS`); ``open`` needs rates.
            realization: how routing is realized (:data:`~genedge.optimizer.model._delay.REALIZATIONS`).
            slo: a latency objective, or None.
            energy_price: κ in points per Joule; > 0 needs energy lines for every model.
            batching: let planners choose a batch size per model among the table's batch lines (a
                no-op where every model has one).
            images: images per request (:attr:`images`); the workload counts images.

        Raises:
            ValueError: unknown categories or model keys (the message lists the known ones), no model fits in
                device memory (the message names each model's need), or batching with several images.
        """
        _check_demand_kind(workload, arrivals, realization, batching, images)
        _check_categories(table, workload)
        keys, peaks, left_out, memory = _models_that_fit(table, models, device_memory_bytes)
        categories = tuple(c for c in table.categories if workload.counts.get(c, 0) > 0)
        steps, means, stds, service, defaults = _model_grids(table, keys, categories, workload)
        energy = _energy_grids(table, keys, steps, energy_price)
        batch_sizes, batch_service = _batch_grids(table, keys, steps) if batching else (None, None)
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
            arrivals=arrivals,
            realization=realization,
            slo=slo,
            energy_price=float(energy_price),
            energy_j=energy,
            batch_sizes=batch_sizes,
            batch_service_s=batch_service,
            service_std_s=_latency_spreads(table, keys),
            images=images,
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


def _served_quality(model: ModelCalibration, shares: Mapping[str, float], steps: int) -> tuple[float, float]:
    """CLIPScore mean and std of requests served as one category that are truly a mixture of categories
    (``shares``: true category → share): μ = Σ w_t μ_t, σ² = Σ w_t (σ_t² + μ_t²) − μ²."""
    if len(shares) == 1:  # a pure category: its own cell, exactly
        return model.quality_at(next(iter(shares)), steps)
    cells = [(w, *model.quality_at(t, steps)) for t, w in shares.items()]
    mean = sum(w * mu for w, mu, _ in cells)
    second = sum(w * (sd * sd + mu * mu) for w, mu, sd in cells)
    return mean, math.sqrt(max(second - mean * mean, 0.0))


def _check_demand_kind(
    workload: Workload, arrivals: str, realization: str, batching: bool, images: ImagesPerRequest
) -> None:
    """Refuse a workload of counts under open arrivals, one of rates under the window model, and batching with
    requests of several images (that queue is not modelled)."""
    per_second = delay_model_class(arrivals, realization).arrivals.per_second
    if per_second and not workload.per_second:
        raise ValueError(
            "Open arrivals need a workload of rates (requests/s): give rates or a trace, or the length "
            "of the planning window to turn its counts into rates"
        )
    if workload.per_second and not per_second:
        raise ValueError("The window model needs requests per window, but the workload gives rates (requests/s)")
    if batching and not images.single:
        raise ValueError(
            f"Expected batching off with requests of {images.describe()}: a bulk-service queue fed by requests "
            "of several images is not modelled (drop --batching or --images-per-request)"
        )


def _latency_spreads(table: CalibrationTable, keys: Sequence[str]) -> np.ndarray | None:
    """Each model's per-image latency spread (s), or None where some model's line has none."""
    spreads = [table.models[k].latency.residual_std_s for k in keys]
    return None if any(v is None for v in spreads) else np.array(spreads, dtype=float)


def _check_categories(table: CalibrationTable, workload: Workload) -> None:
    """Refuse a workload category (served or true) that the table lacks."""
    true_categories = {t for c in workload.counts for t in workload.true_shares(c)}
    unknown = sorted((set(workload.counts) | true_categories) - set(table.categories))
    if unknown:
        raise ValueError(
            f"workload categories {unknown} are not in the table; expected a subset of {list(table.categories)}"
        )


def _models_that_fit(
    table: CalibrationTable, models: Sequence[str] | None, device_memory_bytes: int | None
) -> tuple[tuple[str, ...], dict[str, float], dict[str, float], int | None]:
    """The problem's model keys, every chosen model's peak memory, the ones left out as too big for the
    device memory (key → peak bytes), and that memory (the table device's by default)."""
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
    return tuple(k for k in keys if k not in left_out), peaks, left_out, memory


def _model_grids(
    table: CalibrationTable, keys: Sequence[str], categories: Sequence[str], workload: Workload
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray], list[int]]:
    """Per model: its step grid, the served categories' CLIPScore means and stds over it (C, K), the
    service time per image over it and its default step's index."""
    steps, means, stds, service, defaults = [], [], [], [], []
    for key in keys:
        model = table.models[key]
        grid = np.asarray(model.steps, dtype=int)
        cells = [[_served_quality(model, workload.true_shares(c), int(s)) for s in grid] for c in categories]
        arr = np.asarray(cells, dtype=float)  # (C, K, 2)
        steps.append(grid)
        means.append(arr[..., 0])
        stds.append(arr[..., 1])
        service.append(model.latency.overhead_s + model.latency.per_step_s * grid.astype(float))
        defaults.append(int(np.searchsorted(grid, model.default_steps)))
    return steps, means, stds, service, defaults


def _energy_grids(
    table: CalibrationTable, keys: Sequence[str], steps: Sequence[np.ndarray], energy_price: float
) -> tuple[np.ndarray, ...] | None:
    """Joules per image over each model's grid; None where some model has no energy line (refused
    under an energy price)."""
    no_energy = [k for k in keys if table.models[k].energy is None]
    if energy_price > 0 and no_energy:
        raise ValueError(
            f"An energy price needs energy per image for every model, but the table has none for {no_energy}; "
            f"profile them where an energy meter is read (NVML, tegrastats) or leave the price at 0"
        )
    if no_energy:
        return None
    return tuple(
        np.array([table.models[k].energy.joules(int(s)) for s in grid], dtype=float) for k, grid in zip(keys, steps)
    )


def _batch_grids(
    table: CalibrationTable, keys: Sequence[str], steps: Sequence[np.ndarray]
) -> tuple[tuple[np.ndarray, ...] | None, tuple[np.ndarray, ...] | None]:
    """Each model's batch sizes and its call seconds per batch size and grid step, (B_m, K_m); (None,
    None) where no model has more than one batch line, for batching is a decision only there."""
    if not any(len(table.models[k].batch_sizes()) > 1 for k in keys):
        return None, None
    batch_sizes = tuple(np.array(table.models[k].batch_sizes(), dtype=int) for k in keys)
    batch_service = tuple(
        np.array([[table.models[k].call_seconds(int(s), int(b)) for s in grid] for b in sizes], dtype=float)
        for k, grid, sizes in zip(keys, steps, batch_sizes)
    )
    return batch_sizes, batch_service
