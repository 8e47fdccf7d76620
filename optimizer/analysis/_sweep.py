"""Sweep load, budget and weight; run every method at each point and check the plans by simulation."""

from __future__ import annotations

import csv
import io
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genedge.contract.files import write_text_atomic
from genedge.optimizer.model import Problem, Workload
from genedge.optimizer.planners import METHODS, PROPOSED, PlanResult, relative_change, run_methods
from genedge.optimizer.simulation import simulate_plan

__all__ = ["sweep", "write_csv", "COMPARED_BELOW", "BOUNDS", "SIMULATED"]

# Methods the proposed plan should beat, and the bounds it should come within 0.5 % of.
COMPARED_BELOW = ("direct-assignment", "random-assignment", "equal-allocation")
BOUNDS = ("optimal-step", "exact")
# Plans checked by the discrete-event simulation: the proposed one, and the paper's, whose
# probabilistic routing splits every category, so its delays vary from window to window.
SIMULATED = (PROPOSED, "paper")


def sweep(
    make_problem: Callable[[Workload, float, float], Problem],
    workload: Workload,
    loads: Sequence[int],
    budgets: Sequence[float],
    weights: Sequence[float],
    *,
    methods: Sequence[str] | None = None,
    rng: int | np.random.Generator | None = 0,
    replications: int = 200,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the methods on every (budget, weight, load) point.

    Args:
        make_problem: builds a problem from (workload, budget, weight).
        workload: the category mix; scaled to each load.
        loads, budgets, weights: the grid.
        methods: planners to run (default: all).
        rng: seed or generator of every randomized planner and of the simulation.
        replications: simulated windows per point for each plan's check.
        progress: called with (points done, points in all).

    Returns:
        (results, checks) as lists of rows (dicts): one row per point and method with the
        predicted figures; one row per point with the proposed plan's gaps to the others
        and the discrete-event checks of the plans in :data:`SIMULATED`. Plain rows keep the
        sweep free of pandas; ``pandas.DataFrame(rows)`` turns either into a frame.
    """
    names = list(METHODS) if methods is None else list(methods)
    rows, checks = [], []
    grid = list(itertools.product(budgets, weights, loads))
    for done, (budget, weight, load) in enumerate(grid, start=1):
        problem = make_problem(workload.scaled(int(load)), budget, weight)
        results = run_methods(problem, names, rng=rng)
        point = {"budget": budget, "weight": weight, "requests": int(problem.n_requests)}
        rows += [{**point, "method": name, **_predicted(r)} for name, r in results.items()]
        if PROPOSED in results:
            checks.append({**point, **_gaps(results), **_simulated(problem, results, replications, rng)})
        if progress is not None:
            progress(done, len(grid))
    return rows, checks


def _predicted(result: PlanResult) -> dict[str, Any]:
    """A plan's predicted figures, as a sweep row's columns."""
    return {
        "mean_clipscore": result.mean_quality,
        "mean_delay_s": result.mean_delay_s,
        "p95_delay_s": result.p95_delay_s,
        "utility": result.utility,
        "plan_time_s": result.plan_time_s,
        "upper_bound": result.upper_bound,
    }


def _gaps(results: Mapping[str, PlanResult]) -> dict[str, Any]:
    """The proposed plan's utility and its gaps (%) to the other methods, the exact search's certified gap
    and the paper's gap to the optimal step choice, where those methods ran."""
    proposed = results[PROPOSED]
    row = {"proposed_utility": proposed.utility}
    for name in COMPARED_BELOW + BOUNDS + ("paper",):
        if name in results:
            other = results[name].utility
            row[f"gain_vs_{name}_pct"] = 100 * relative_change(proposed.utility, other)
    if "exact" in results:
        row["exact_certified_gap_pct"] = 100 * results["exact"].certified_gap
    if "paper" in results and "optimal-step" in results:
        bound = results["optimal-step"].utility
        row["paper_gap_to_optimal_step_pct"] = 100 * relative_change(bound, results["paper"].utility)
    return row


def _simulated(
    problem: Problem,
    results: Mapping[str, PlanResult],
    replications: int,
    rng: int | np.random.Generator | None,
) -> dict[str, Any]:
    """The discrete-event checks of the plans in :data:`SIMULATED` that ran, as a check row's columns."""
    row = {}
    for name in SIMULATED:
        if name not in results:
            continue
        check = simulate_plan(problem, results[name], replications=replications, rng=rng)
        row.update(
            {
                f"{name}_sim_quality": check.mean_quality,
                f"{name}_sim_quality_se": check.mean_quality_se,
                f"{name}_predicted_quality": check.predicted_quality,
                f"{name}_quality_z": check.quality_z,
                f"{name}_sim_delay_s": check.mean_delay_s,
                f"{name}_sim_delay_se_s": check.mean_delay_se_s,
                f"{name}_predicted_delay_s": check.predicted_delay_s,
                f"{name}_plan_delay_s": check.plan_delay_s,
                f"{name}_delay_z": check.delay_z,
            }
        )
    return row


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write rows as a CSV file atomically: a header of every key in first-seen order, None as empty."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    return write_text_atomic(path, buffer.getvalue())
