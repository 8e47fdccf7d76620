"""What a prompt router's errors cost a plan.

A router sends a request it predicts as category c to c's models; if the request is truly of
category t it scores as t does there. A workload with a composition (see
:attr:`~genedge.optimizer.Workload.composition`) counts requests by predicted category and scores
each as its mixture of true categories, so a plan made on it already predicts what the service
delivers. Three figures place it, all on the same requests:

- *perfect*: the requests counted by their true category (:meth:`Workload.by_true_category`), planned
  and scored with perfect labels — the best any router allows;
- *served*: the plan made for the router's mixture, scored as served (what planning with the
  router's confusion matrix delivers);
- *naive*: the plan made for perfect labels, deployed behind the router (each predicted category
  routed as the plan routes that true category) and scored as served — what ignoring the router's
  errors delivers.

perfect − served is the utility lost to misrouting: ≥ 0 for optimal plans, since routing by
predicted category is one way of routing by true category with the same loads. served − naive is
what planning with the confusion matrix gains over ignoring it (≥ 0 up to the planners' optimality gaps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genedge.optimizer.model import Problem, evaluate
from genedge.optimizer.planners import PlanResult

__all__ = ["MisroutingCost", "misrouting_cost"]


@dataclass(frozen=True)
class MisroutingCost:
    """Utility and mean CLIPScore of the three plans in the module docstring (points)."""

    perfect_utility: float
    served_utility: float
    naive_utility: float | None
    perfect_quality: float
    served_quality: float
    naive_quality: float | None

    @property
    def loss(self) -> float:
        """Utility lost to misrouting: perfect − served."""
        return self.perfect_utility - self.served_utility

    @property
    def planning_gain(self) -> float | None:
        """What planning with the confusion matrix gains over ignoring it: served − naive (None where the
        perfect-label plan has no routing for a predicted category)."""
        return None if self.naive_utility is None else self.served_utility - self.naive_utility


def misrouting_cost(
    served: Problem, perfect: Problem, served_result: PlanResult, method: str, rng: int | np.random.Generator | None = 0
) -> MisroutingCost:
    """Compare a plan made on a router's mixture with plans made for perfect labels.

    Args:
        served: the problem of requests counted by predicted category, each scoring as its mixture.
        perfect: the problem of the same requests counted and scored by their true category.
        served_result: ``method``'s plan for ``served``.
        method: the planner (see :data:`genedge.optimizer.METHODS`) that plans for ``perfect``.
        rng: the planner's seed or generator.

    Raises:
        ValueError: the problems differ in their models.
    """
    from genedge.optimizer.planners import run_methods

    if served.models != perfect.models:
        raise ValueError("Expected two versions of one problem (the same models)")
    perfect_result = run_methods(perfect, [method], rng=rng)[method]
    plan = perfect_result.plan
    naive = None
    if set(served.categories) <= set(perfect.categories):
        rows = [perfect.categories.index(c) for c in served.categories]
        routing = np.asarray(plan.routing_matrix)[rows]
        naive = evaluate(served, routing, plan.step_index, plan.share_vector, plan.batch_index or None)
    return MisroutingCost(
        perfect_utility=perfect_result.utility,
        served_utility=served_result.utility,
        naive_utility=None if naive is None else naive.utility,
        perfect_quality=perfect_result.mean_quality,
        served_quality=served_result.mean_quality,
        naive_quality=None if naive is None else naive.mean_quality,
    )
