"""A plan for every rate: plan each total arrival rate of a list on one table, and band the plans by decision.

Each rate is planned cold, as ``genedge plan --rate R --seed S`` plans it: the same problem (built by the
caller's ``make_problem``), the same planner and the same seed, so a schedule's plan at a rate is exactly
that command's. Nothing is carried from one rate to the next but the capacity: no plan keeps every queue
stable from :attr:`~genedge.optimizer.model.Problem.max_stable_rate` on (it depends on the table and budget
alone), so rates from there on are recorded as unservable without building a problem. A planner may still
return a plan with an unstable queue below it (a baseline that ignores load); such a rate has no band either.

Neighbouring rates whose plans make the same :class:`~genedge.optimizer.schedule_file.Decisions` (which
models serve each category, their steps and largest batch) form a band; shares and routing fractions may
differ within it and are kept per rate. A band's plan is the one made at its highest rate.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np

from genedge.contract.bounds import MAX_RATE_PER_S, MAX_SCHEDULE_RATES, MIN_RATE_PER_S
from genedge.optimizer.model import Arrivals, Problem, evaluate
from genedge.optimizer.plan_file import plan_from_dict, plan_to_dict
from genedge.optimizer.planners import METHODS, PROPOSED, PlanResult, check_methods
from genedge.optimizer.schedule_file import (
    Decisions,
    PlanSchedule,
    band_to_dict,
    plan_schedule_from_dict,
    rate_point_to_dict,
    schedule_to_dict,
)

__all__ = ["plan_schedule", "rate_grid", "trace_rate_range"]

# A plan beats another at a rate by more than this (points), not by rounding.
_BETTER_BY = 1e-9


def rate_grid(low: float, high: float, count: int) -> list[float]:
    """``count`` evenly spaced total rates from ``low`` to ``high`` (requests/s), both included.

    Raises:
        ValueError: rates outside [MIN_RATE_PER_S, MAX_RATE_PER_S], ``low`` above ``high``, a count below 1 or
            above :data:`MAX_SCHEDULE_RATES`, or ``count`` 1 for two different ends.

    Example:
        >>> rate_grid(0.1, 0.5, 5)
        [0.1, 0.2, 0.3, 0.4, 0.5]
    """
    for name, value in (("low", low), ("high", high)):
        if not (math.isfinite(value) and MIN_RATE_PER_S <= value <= MAX_RATE_PER_S):
            raise ValueError(
                f"Expected a {name} rate in [{MIN_RATE_PER_S:g}, {MAX_RATE_PER_S:g}] requests/s, but got {value:g}"
            )
    if low > high:
        raise ValueError(f"Expected the low rate at most the high rate, but got {low:g} > {high:g}")
    if not 1 <= count <= MAX_SCHEDULE_RATES or (count == 1 and low != high):
        raise ValueError(
            f"Expected a count of rates in [2, {MAX_SCHEDULE_RATES}] (1 where both ends are equal), but got {count}"
        )
    # Rounded to 12 significant digits, so that 0.05:2:40 gives 0.1, not 0.09999999999999999.
    return [float(f"{rate:.12g}") for rate in np.linspace(low, high, count)]


def trace_rate_range(arrivals: Arrivals, window_s: float) -> tuple[float, float]:
    """The lowest and highest total rate of a trace's whole windows of ``window_s`` seconds (requests/s).

    Windows without a request are left out: no rate of 0 is planned.

    Raises:
        ValueError: a window longer than the trace (:meth:`~genedge.optimizer.model.Arrivals.window_rates`).
    """
    rates = arrivals.window_rates(window_s)
    busy = rates[rates > 0]
    if busy.size == 0:
        raise ValueError(f"Expected a window of {window_s:g} s with a request in it, but every one is empty")
    return float(busy.min()), float(busy.max())


def plan_schedule(
    make_problem: Callable[[float], Problem],
    rates: Sequence[float],
    *,
    method: str = PROPOSED,
    seed: int = 0,
    jobs: int = 1,
    inputs: Mapping[str, Any] | None = None,
    plan_inputs: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PlanSchedule:
    """Plan every rate and band the plans (see the module's description).

    Args:
        make_problem: the problem at a total rate (requests/s), under open arrivals; it raises where no plan
            keeps every queue stable (:class:`~genedge.optimizer.model.Problem` does).
        rates: the total rates, distinct (any order; planned ascending).
        method: the planner, a key of :data:`~genedge.optimizer.planners.METHODS`.
        seed: the seed of every rate's planner (the same for each, so each rate's plan is the one a single
            plan at that rate with this seed gives; a generator would be drawn from differently per rate).
        jobs: rates planned at once, each in a process of its own (1: one after another, in this process);
            the plans are the same either way.
        inputs: what the schedule was made for, written as the schedule's ``inputs`` with the category ``mix``.
        plan_inputs: written into each band's plan document's ``inputs`` (see
            :func:`~genedge.optimizer.plan_file.plan_inputs`).
        progress: called with (rates planned, rates to plan) as each rate is planned; rates from the capacity
            on are not planned.

    Raises:
        ValueError: an unknown method, rates that are not distinct, finite and > 0, more than
            :data:`~genedge.contract.bounds.MAX_SCHEDULE_RATES` of them, ``jobs`` below 1, a problem not under
            open arrivals, or (from ``make_problem``) a lowest rate no plan can serve.

    Example:
        >>> from genedge.contract.table_file import load_table
        >>> from genedge.data import resolve_table
        >>> from genedge.optimizer.inputs import problem_from_options
        >>> from genedge.optimizer.model import workload_from_options
        >>> table = load_table(resolve_table("galaxy-s24"))
        >>> def problem_at(rate):
        ...     return problem_from_options(table, workload_from_options(table.categories, rate=rate))
        >>> schedule = plan_schedule(problem_at, [0.3, 0.7])
        >>> [point.band for point in schedule.points], round(schedule.max_stable_rate, 4)
        ([0, None], 0.5952)
    """
    check_methods([method])
    ordered = _checked_rates(rates)
    if jobs < 1:
        raise ValueError(f"Expected at least 1 job, but got {jobs}")
    first = make_problem(ordered[0])
    if not first.delay.steady_state:
        raise ValueError(f"Expected a problem of arrival rates (open arrivals), but got the {first.arrivals} model")
    capacity = first.max_stable_rate
    servable = [rate for rate in ordered if rate < capacity]
    problems = [first, *(make_problem(rate) for rate in servable[1:])]
    results = _plan_each(METHODS[method], problems, seed, jobs, progress)
    checks = _higher_plan_utilities(problems, results)
    planned = [
        *zip(servable, problems, results, checks),
        *((rate, None, None, None) for rate in ordered[len(servable) :]),
    ]
    total = first.n_requests
    mix = {category: float(n / total) for category, n in zip(first.categories, first.counts)}
    document = _document(planned, method, seed, capacity, {**dict(inputs or {}), "mix": mix}, plan_inputs)
    return plan_schedule_from_dict(document, "the planned schedule")


def _plan_each(
    planner: Callable[..., PlanResult],
    problems: Sequence[Problem],
    seed: int,
    jobs: int,
    progress: Callable[[int, int], None] | None,
) -> list[PlanResult]:
    """Each problem's plan, in order: one after another, or ``jobs`` at once in processes of their own."""
    results: list[PlanResult | None] = [None] * len(problems)
    if jobs == 1 or len(problems) < 2:
        for i, problem in enumerate(problems):
            results[i] = planner(problem, rng=seed)
            if progress is not None:
                progress(i + 1, len(problems))
    else:
        # Forked workers start with the planner's modules loaded; a fresh interpreter would import them first.
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        with ProcessPoolExecutor(min(jobs, len(problems)), mp_context=context) as pool:
            futures = {pool.submit(planner, problem, rng=seed): i for i, problem in enumerate(problems)}
            for done, future in enumerate(as_completed(futures), start=1):
                results[futures[future]] = future.result()
                if progress is not None:
                    progress(done, len(problems))
    return results


def _checked_rates(rates: Sequence[float]) -> list[float]:
    """The rates ascending, after checking them."""
    values = [float(rate) for rate in rates]
    if not 1 <= len(values) <= MAX_SCHEDULE_RATES:
        raise ValueError(f"Expected 1 to {MAX_SCHEDULE_RATES} rates, but got {len(values)}")
    bad = [rate for rate in values if not (math.isfinite(rate) and rate > 0)]
    if bad:
        raise ValueError(f"Expected rates > 0 requests/s, but got {bad[0]:g}")
    ordered = sorted(values)
    repeated = [a for a, b in itertools.pairwise(ordered) if a == b]
    if repeated:
        raise ValueError(f"Expected distinct rates, but {repeated[0]:g} is given twice")
    return ordered


def _higher_plan_utilities(problems: Sequence[Problem], results: Sequence[PlanResult]) -> list[float | None]:
    """Per planned rate, the utility the next planned rate's plan reaches at it, where that beats the rate's own plan
    (and meets the SLO and floor wherever the own plan does); None elsewhere.

    Where it beats it, the planner's plan at that rate is not optimal. The plans stay as planned (each is the one a
    single plan at its rate gives); this only says where.
    """
    found: list[float | None] = []
    for i, (problem, own) in enumerate(zip(problems, results)):
        if i + 1 == len(results) or not own.stable:
            found.append(None)
            continue
        plan = results[i + 1].plan
        other = evaluate(problem, plan.routing_matrix, plan.step_index, plan.share_vector, plan.batch_index)
        better = other.utility > own.utility + _BETTER_BY and (other.feasible or not own.feasible)
        found.append(float(other.utility) if better else None)
    return found


def _document(
    planned: Sequence[tuple[float, Problem | None, PlanResult | None, float | None]],
    method: str,
    seed: int,
    capacity: float,
    inputs: Mapping[str, Any] | None,
    plan_inputs: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The schedule document: each rate's point, and a band for each run of rates with the same decisions."""
    points: list[dict[str, Any]] = []
    bands: list[dict[str, Any]] = []
    current: Decisions | None = None
    low = 0.0
    for rate, problem, result, higher in planned:
        if result is None or not result.stable:
            points.append(rate_point_to_dict(rate, result, None))
            current = None  # a band resumes after the gap as a band of its own
            continue
        document = plan_to_dict(problem, result, inputs=plan_inputs)
        decisions = Decisions.of(plan_from_dict(document, f"the plan at {rate:g} requests/s"))
        if decisions != current:
            current, low = decisions, rate
            bands.append({})
        points.append(rate_point_to_dict(rate, result, len(bands) - 1, higher_plan_utility=higher))
        # A band's plan is the one at its highest rate: each next rate of the band replaces it.
        bands[-1] = band_to_dict(low, rate, document)
    return schedule_to_dict(
        method=method, seed=seed, max_stable_rate=capacity, points=points, bands=bands, inputs=inputs
    )
