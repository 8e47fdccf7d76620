"""Plan comparison: plan one workload on two problems (e.g. two calibration tables) and list what changes.

The comparison of the tables themselves lives in :mod:`genedge.calibrate.compare`; this
module compares the plans they lead to, so a notebook gets what ``genedge compare`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass

from genedge.optimizer.model import Problem
from genedge.optimizer.planners import METHODS, PROPOSED, PlanResult, check_methods

__all__ = ["DECISION_TOLERANCE", "PlanChange", "PlanComparison", "compare_plans", "plan_changes"]

#: Routing probabilities and shares (GPU units) that move by less than this are reported as unchanged.
DECISION_TOLERANCE = 0.01


@dataclass(frozen=True)
class PlanChange:
    """One plan decision that differs between two plans.

    Attributes:
        decision: ``"routing"``, ``"steps"`` or ``"share"``.
        subject: ``"category -> model"`` for routing, the model key otherwise.
        old, new: the decision in each plan: a probability, a step count or a share in GPU
            units. A model absent from a plan has probability 0 and share 0 there; steps are
            None where the plan does not deploy the model.
    """

    decision: str
    subject: str
    old: float | None
    new: float | None


@dataclass(frozen=True)
class PlanComparison:
    """Two plans for the same workload and options, and the decisions that differ.

    Attributes:
        old, new: the plans made on each problem.
        changes: the decisions that differ (:func:`plan_changes`).
    """

    old: PlanResult
    new: PlanResult
    changes: tuple[PlanChange, ...]


def plan_changes(old: PlanResult, new: PlanResult, *, tolerance: float = DECISION_TOLERANCE) -> list[PlanChange]:
    """The routing, steps, share and batch-size decisions that differ between two plans.

    Args:
        old, new: plans for the same workload (their models may differ).
        tolerance: routing probabilities and shares closer than this count as equal.

    Returns:
        Routing changes by category, then steps, share and batch changes by model. Steps are
        compared for every model that either plan deploys (a model deployed in one plan only
        shows as steps against None).
    """
    changes = []
    old_routing, new_routing = old.plan.routing, new.plan.routing
    for category in dict.fromkeys([*old_routing, *new_routing]):
        a, b = old_routing.get(category, {}), new_routing.get(category, {})
        for model in dict.fromkeys([*a, *b]):
            pa, pb = a.get(model, 0.0), b.get(model, 0.0)
            if abs(pa - pb) >= tolerance:
                changes.append(PlanChange("routing", f"{category} -> {model}", pa, pb))
    old_steps, new_steps = _deployed_steps(old), _deployed_steps(new)
    models = list(dict.fromkeys([*old.plan.models, *new.plan.models]))
    for model in models:
        sa, sb = old_steps.get(model), new_steps.get(model)
        if sa != sb:
            changes.append(PlanChange("steps", model, sa, sb))
    old_shares, new_shares = old.plan.shares, new.plan.shares
    for model in models:
        ra, rb = old_shares.get(model, 0.0), new_shares.get(model, 0.0)
        if abs(ra - rb) >= tolerance:
            changes.append(PlanChange("share", model, ra, rb))
    old_batch, new_batch = _deployed(old, old.plan.max_batch), _deployed(new, new.plan.max_batch)
    for model in models:
        ba, bb = old_batch.get(model), new_batch.get(model)
        if ba is not None and bb is not None and ba != bb:
            changes.append(PlanChange("batch", model, ba, bb))
    return changes


def _deployed(result: PlanResult, values: dict[str, int]) -> dict[str, int]:
    """``values`` of the models a plan deploys."""
    return {m: v for m, v, used in zip(result.plan.models, values.values(), result.deployed) if used}


def _deployed_steps(result: PlanResult) -> dict[str, int]:
    """model key → steps, for the models the plan deploys."""
    return {m: s for m, s, used in zip(result.plan.models, result.plan.steps_per_model, result.deployed) if used}


def compare_plans(
    old: Problem,
    new: Problem,
    *,
    method: str = PROPOSED,
    rng: int | None = None,
    tolerance: float = DECISION_TOLERANCE,
) -> PlanComparison:
    """Plan on two problems that share the workload and options, and list the decisions that differ.

    Build both problems with the same options, e.g.
    ``Problem.from_table(old_table, workload, budget=1.0, weight=0.05)`` and the same for the new table.

    Args:
        old, new: the problems; they may differ in their models, calibration and device memory
            (each table's own device, unless both are built with the same limit).
        method: the planner to use, a key of :data:`~genedge.optimizer.planners.METHODS`.
        rng: the seed each plan's planner gets (the same for both, so they differ by their inputs only);
            None seeds each from the OS.
        tolerance: see :func:`plan_changes`.

    Raises:
        ValueError: an unknown method, or problems whose workload or options differ (the message
            names the first difference).

    Example:
        >>> from genedge.testing import synthetic_problem
        >>> problem = synthetic_problem(2, 2, 20, rng=0)
        >>> compare_plans(problem, problem, rng=0).changes
        ()
    """
    check_methods([method])
    _check_same_options(old, new)
    planner = METHODS[method]
    old_result, new_result = planner(old, rng=rng), planner(new, rng=rng)
    return PlanComparison(old_result, new_result, tuple(plan_changes(old_result, new_result, tolerance=tolerance)))


def _check_same_options(old: Problem, new: Problem) -> None:
    """Raise unless the two problems plan the same workload under the same budget, weight and floor."""
    fields = {
        "categories": lambda p: p.categories,
        "request counts": lambda p: p.counts.tolist(),
        "budget": lambda p: p.budget,
        "weight": lambda p: p.weight,
        "quality floor": lambda p: p.min_clipscore,
        "allowed shortfall": lambda p: p.max_shortfall,
    }
    for name, get in fields.items():
        a, b = get(old), get(new)
        if a != b:
            raise ValueError(
                f"Expected two problems with the same workload and options, but they differ in {name}: {a} vs {b}"
            )
