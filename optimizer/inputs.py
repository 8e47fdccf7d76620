"""The problem ``genedge plan`` plans, and its bootstrap's size, from plain options: one call each from a notebook.

:func:`genedge.optimizer.model.workload_from_options` builds the workload; :func:`problem_from_options`
turns it, a calibration table and the planning options into a :class:`~genedge.optimizer.model.Problem`;
:func:`bootstrap_size` decides how many bootstrap samples assess the plan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genedge.optimizer.model import ONE_IMAGE, OPEN, WINDOW, ImagesPerRequest, Problem, Slo, Workload

if TYPE_CHECKING:
    from genedge.contract.table import CalibrationTable

__all__ = [
    "DEFAULT_PERCENTILE",
    "BootstrapSize",
    "bootstrap_size",
    "problem_from_options",
    "slo_from_options",
    "window_and_open_problems",
]

#: The percentile of delay an SLO holds when none is given (p95).
DEFAULT_PERCENTILE = 95.0

_GIB = 2**30


def slo_from_options(
    seconds: float | None,
    *,
    percentile: float | None = None,
    attainment: float | None = None,
    scope: str = "overall",
) -> Slo | None:
    """The latency SLO of ``genedge plan --slo SECONDS [--percentile P | --attainment A] --slo-scope S``.

    Args:
        seconds: the SLO in seconds, or None for none.
        percentile: the percentile of delay held within it (default :data:`DEFAULT_PERCENTILE`).
        attainment: instead of ``percentile``, the smallest fraction of requests within it.
        scope: ``"overall"`` or ``"category"``.

    Raises:
        ValueError: ``percentile`` or ``attainment`` without ``seconds``, or a percentile outside (0, 100).

    Example:
        >>> slo_from_options(20).describe()
        'p95 <= 20 s (overall)'
    """
    if seconds is None:
        if percentile is not None or attainment is not None:
            raise ValueError("--percentile and --attainment need --slo SECONDS")
        return None
    if attainment is None:
        percentile = DEFAULT_PERCENTILE if percentile is None else percentile
        if not 0 < percentile < 100:
            raise ValueError(f"--percentile: expected a percentile in (0, 100), e.g. 95, but got {percentile:g}")
        attainment = percentile / 100
    return Slo(seconds=seconds, attainment=attainment, scope=scope)


def problem_from_options(
    table: CalibrationTable,
    workload: Workload,
    *,
    budget: float = 1.0,
    weight: float = 0.05,
    models: Sequence[str] | None = None,
    memory_gib: float | None = None,
    table_sha256: str | None = None,
    min_clipscore: float | None = None,
    max_shortfall: float = 0.05,
    arrivals: str | None = None,
    routing: str = "deterministic",
    slo: Slo | None = None,
    objective: str = "utility",
    energy_price: float = 0.0,
    batching: bool = False,
    images: ImagesPerRequest = ONE_IMAGE,
) -> Problem:
    """The problem ``genedge plan`` makes of a table, a workload and its options.

    Args:
        table: the calibration table.
        workload: e.g. :func:`~genedge.optimizer.model.workload_from_options`' result.
        budget: compute budget R in GPU units.
        weight: w, CLIPScore points per second of mean delay.
        models: the model keys to plan with (default: the table's).
        memory_gib: GPU memory for the models in GiB (default: the table device's).
        table_sha256: the table file's hash, recorded in plans.
        min_clipscore: quality floor θ, or None.
        max_shortfall: ε, the largest allowed P(CLIPScore < θ) per category.
        arrivals: the delay model; None: ``"open"`` for a workload of rates, else ``"window"``.
        routing: how routing probabilities are realized (``"deterministic"`` or ``"random"``).
        slo: a latency SLO (see :func:`slo_from_options`), or None.
        objective: ``"utility"``, or ``"quality"``: the highest mean CLIPScore under ``slo`` (w = 0).
        energy_price: CLIPScore points one Joule per image is worth.
        batching: let planners choose a batch size per model among the table's batch lines.
        images: how many images one request asks for (the workload counts images).

    Raises:
        ValueError: ``objective="quality"`` without an SLO, or what
            :meth:`~genedge.optimizer.model.Problem.from_table` refuses.

    Example:
        >>> from genedge.contract.table_file import load_table
        >>> from genedge.data import resolve_table
        >>> from genedge.optimizer.model import workload_from_options
        >>> table = load_table(resolve_table("galaxy-s24"))
        >>> workload = workload_from_options(table.categories, rate=0.2)
        >>> problem = problem_from_options(table, workload, slo=slo_from_options(20))
        >>> problem.arrivals
        'open'
    """
    if objective == "quality":
        if slo is None:
            raise ValueError("--objective quality maximizes CLIPScore subject to an SLO: give --slo SECONDS")
        weight = 0.0
    if arrivals is None:
        arrivals = (OPEN if workload.per_second else WINDOW).name
    return Problem.from_table(
        table,
        workload,
        budget=budget,
        weight=weight,
        models=models,
        device_memory_bytes=None if memory_gib is None else int(memory_gib * _GIB),
        table_sha256=table_sha256,
        min_clipscore=min_clipscore,
        max_shortfall=max_shortfall,
        arrivals=arrivals,
        realization=routing,
        slo=slo,
        energy_price=energy_price,
        batching=batching,
        images=images,
    )


def window_and_open_problems(
    table: CalibrationTable, demand: Workload, window_s: float, **options: Any
) -> tuple[Problem, Problem]:
    """One demand planned under both delay models: N requests per window of ``window_s`` seconds ≡ the rate N / T.

    Args:
        table: the calibration table.
        demand: requests per window (they become rates N / T), or rates (e.g. a trace's; categories at
            rate 0 are dropped, and the window holds N = rate × T requests, at least one).
        window_s: T, the window's length in seconds.
        **options: :func:`problem_from_options`' keywords, except ``arrivals``.

    Returns:
        The window model's problem and the open-arrival one.

    Raises:
        ValueError: a window that is not > 0 seconds, or what :func:`problem_from_options` refuses.
    """
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"Expected a window length > 0 seconds, but got {window_s}")
    if demand.per_second:
        rates = {c: r for c, r in demand.counts.items() if r > 0}
        counts = Workload.from_mix(rates, max(1, round(sum(rates.values()) * window_s)))
        per_second = Workload.from_rates(rates)
    else:
        counts, per_second = demand, demand.as_rates(window_s)
    window = problem_from_options(table, counts, arrivals=WINDOW.name, **options)
    return window, problem_from_options(table, per_second, arrivals=OPEN.name, **options)


@dataclass(frozen=True)
class BootstrapSize:
    """How many parametric bootstrap samples assess a plan, and why none where that is the default.

    Attributes:
        samples: the sample count (0: no assessment).
        skipped_because: why the default skips it (each sample would be re-planned with the exact
            planner, e.g. ``"open arrivals"``); None where samples were asked for or are computed.
    """

    samples: int
    skipped_because: str | None = None


def bootstrap_size(problem: Problem, samples: int | None = None, *, robust: bool = False) -> BootstrapSize:
    """The bootstrap size ``genedge plan`` uses: ``samples`` if given, else as many as are fast.

    By default :data:`~genedge.optimizer.analysis.DEFAULT_SAMPLES` where each sample's optimum has
    the vectorized whole-category search (the window model without SLO, quality floor or batching),
    else 0, since each sample would be re-planned with the exact planner, unless ``robust`` plans are
    asked for, which need the samples.

    Args:
        problem: the planned problem.
        samples: the samples asked for: 0 to skip, or at least 2; None for the default.
        robust: whether robust plans are made from the samples (they need at least 2).

    Raises:
        ValueError: ``samples`` of 1, negative, or under 2 with ``robust``.
    """
    from genedge.optimizer.analysis import DEFAULT_SAMPLES, whole_category_search_obstacle

    if samples is not None:
        if samples == 1 or samples < 0 or (robust and samples < 2):
            raise ValueError(f"--samples: expected 0 (skip) or at least 2 bootstrap samples, but got {samples}")
        return BootstrapSize(samples)
    obstacle = whole_category_search_obstacle(problem)
    if obstacle is None or robust:
        return BootstrapSize(DEFAULT_SAMPLES)
    return BootstrapSize(0, obstacle)
