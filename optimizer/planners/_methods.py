"""The registry of planning methods, so every caller compares the same set the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from genedge.optimizer.model import Problem
from genedge.optimizer.planners._baselines import (
    direct,
    equal_allocation,
    optimal_step,
    paper_method,
    random_assignment,
)
from genedge.optimizer.planners._exact import exact_search
from genedge.optimizer.planners._propose import propose
from genedge.optimizer.planners._result import Callback, PlanResult

__all__ = ["METHODS", "PROPOSED", "Planner", "check_methods", "run_methods"]

PROPOSED = "genedge"

#: Every planner is called as ``planner(problem, *, rng=None, callback=None) -> PlanResult``.
Planner = Callable[..., PlanResult]

#: name → planner. Planners that use no randomness accept ``rng`` and ignore it.
METHODS: dict[str, Planner] = {
    "genedge": propose,
    "paper": paper_method,
    "direct-assignment": direct,
    "random-assignment": random_assignment,
    "equal-allocation": equal_allocation,
    "optimal-step": optimal_step,
    "exact": exact_search,
}


def check_methods(names: Sequence[str]) -> None:
    """Raise for names that are not in :data:`METHODS`.

    Raises:
        ValueError: an unknown method name (the message lists the known ones).
    """
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; available: {list(METHODS)}")


def run_methods(
    problem: Problem,
    names: Sequence[str] | None = None,
    *,
    rng: int | np.random.Generator | None = 0,
    callback: Callback | None = None,
) -> dict[str, PlanResult]:
    """Run planners on one problem, each with its own generator seeded from ``rng``.

    Args:
        problem: the planning problem.
        names: methods to run, in order (default: all of :data:`METHODS`).
        rng: seed or generator, given to every planner.
        callback: given to every planner (see each planner for when it calls it).

    Returns:
        name → result; each result carries the planner's wall time in ``plan_time_s``.

    Raises:
        ValueError: an unknown method name (the message lists the known ones).
    """
    names = list(METHODS) if names is None else list(names)
    check_methods(names)
    return {name: METHODS[name](problem, rng=rng, callback=callback) for name in names}
