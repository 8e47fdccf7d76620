"""The registry of planning methods, so every caller compares the same set the same way."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from genedge.optimizer.baselines import direct, equal_allocation, optimal_step, paper_method, random_assignment
from genedge.optimizer.exact import exact_search
from genedge.optimizer.problem import Problem
from genedge.optimizer.propose import propose
from genedge.optimizer.result import PlanResult

__all__ = ["METHODS", "PROPOSED", "run_methods"]

PROPOSED = "genedge"

# name → planner(problem, seed); planners that use no randomness ignore the seed.
METHODS: dict[str, Callable[[Problem, int], PlanResult]] = {
    "genedge": lambda problem, rng: propose(problem, rng=rng),
    "paper": lambda problem, rng: paper_method(problem, rng=rng),
    "direct-assignment": lambda problem, rng: direct(problem, rng=rng),
    "random-assignment": lambda problem, rng: random_assignment(problem, rng=rng),
    "equal-allocation": lambda problem, rng: equal_allocation(problem),
    "optimal-step": lambda problem, rng: optimal_step(problem),
    "exact": lambda problem, rng: exact_search(problem),
}


def run_methods(problem: Problem, names: Sequence[str] | None = None, *, seed: int = 0) -> dict[str, PlanResult]:
    """Run planners on one problem, each with its own generator seeded from ``seed``.

    Returns:
        name → result, with the wall time of each planner in ``result.extra["plan_time_s"]``.

    Raises:
        ValueError: an unknown method name (the message lists the known ones).
    """
    names = list(METHODS) if names is None else list(names)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; available: {list(METHODS)}")
    results = {}
    for name in names:
        start = time.perf_counter()
        result = METHODS[name](problem, seed)
        result.extra["plan_time_s"] = time.perf_counter() - start
        results[name] = result
    return results
