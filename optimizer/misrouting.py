"""What a prompt router's errors cost a plan.

A router sends a request it predicts as category c to c's models; if the request is truly of
category t it scores as t does there. A workload with a composition (see
:attr:`~genedge.optimizer.Workload.composition`) scores each category as its mixture of true
categories, so a plan made on it already predicts what the service delivers. Three figures place it:

- *perfect*: the plan made for perfect labels, scored with perfect labels (the best any router allows);
- *served*: the plan made for the router's mixture, scored as served (what planning with the
  router's confusion matrix delivers);
- *naive*: the plan made for perfect labels, scored as served (what ignoring the router's errors
  delivers).

perfect − served is the utility lost to misrouting; served − naive what planning with the confusion
matrix gains over ignoring it (≥ 0 up to the planner's own optimality gap).
"""

from __future__ import annotations

from dataclasses import dataclass

from genedge.optimizer.problem import Problem
from genedge.optimizer.result import PlanResult
from genedge.optimizer.system import evaluate

__all__ = ["MisroutingCost", "misrouting_cost"]


@dataclass(frozen=True)
class MisroutingCost:
    """Utility and mean CLIPScore of the three plans in the module docstring (points)."""

    perfect_utility: float
    served_utility: float
    naive_utility: float
    perfect_quality: float
    served_quality: float
    naive_quality: float

    @property
    def loss(self) -> float:
        """Utility lost to misrouting: perfect − served."""
        return self.perfect_utility - self.served_utility

    @property
    def planning_gain(self) -> float:
        """What planning with the confusion matrix gains over ignoring it: served − naive."""
        return self.served_utility - self.naive_utility


def misrouting_cost(
    served: Problem, perfect: Problem, served_result: PlanResult, method: str, seed: int = 0
) -> MisroutingCost:
    """Compare a plan made on a router's mixture with plans made for perfect labels.

    Args:
        served: the problem whose quality is the router's mixture of true categories.
        perfect: the same problem with every request scored as its own category.
        served_result: ``method``'s plan for ``served``.
        method: the planner (see :data:`genedge.optimizer.METHODS`) that plans for ``perfect``.
        seed: the planner's seed.

    Raises:
        ValueError: the problems differ in their models or categories.
    """
    from genedge.optimizer.methods import run_methods

    if served.models != perfect.models or served.categories != perfect.categories:
        raise ValueError("Expected two versions of one problem (same models and categories)")
    perfect_result = run_methods(perfect, [method], seed=seed)[method]
    plan = perfect_result.plan
    naive = evaluate(served, plan.routing_matrix, plan.step_index, plan.share_vector, plan.batch_index or None)
    return MisroutingCost(
        perfect_utility=perfect_result.utility,
        served_utility=served_result.utility,
        naive_utility=naive.utility,
        perfect_quality=perfect_result.mean_quality,
        served_quality=served_result.mean_quality,
        naive_quality=naive.mean_quality,
    )
