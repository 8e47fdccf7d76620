"""One result type for every planner, so methods compare on equal footing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from genedge.optimizer.problem import Problem
from genedge.optimizer.system import evaluate

__all__ = ["Plan", "PlanResult", "STATUS_MESSAGES", "make_result"]

# Status code → message, shared by every planner (scipy.optimize style).
STATUS_MESSAGES = {
    0: "Optimization terminated successfully",
    2: "Callback function requested to stop early by returning True",
    3: "Closed-form plan: nothing to search",
}


@dataclass(frozen=True)
class Plan:
    """The decisions of a plan.

    Attributes:
        models: model keys, in problem order.
        categories: category names, in problem order.
        routing_matrix: p[c, m], probability that a category-c request goes to model m, shape (C, M).
        step_index: index into each model's step grid.
        steps_per_model: denoising steps per model.
        share_vector: compute share per model in GPU units (Σ ≤ budget).
    """

    models: tuple[str, ...]
    categories: tuple[str, ...]
    routing_matrix: np.ndarray
    step_index: tuple[int, ...]
    steps_per_model: tuple[int, ...]
    share_vector: np.ndarray

    @property
    def routing(self) -> dict[str, dict[str, float]]:
        """category → model key → probability."""
        return {
            c: {m: float(self.routing_matrix[i, j]) for j, m in enumerate(self.models)}
            for i, c in enumerate(self.categories)
        }

    @property
    def steps(self) -> dict[str, int]:
        """model key → denoising steps."""
        return dict(zip(self.models, self.steps_per_model))

    @property
    def shares(self) -> dict[str, float]:
        """model key → compute share (GPU units)."""
        return {m: float(r) for m, r in zip(self.models, self.share_vector)}


@dataclass(frozen=True)
class PlanResult:
    """What every planner returns.

    Attributes:
        method: planner name, e.g. ``"genedge"``, ``"paper"``, ``"direct-assignment"``.
        plan: the decisions.
        mean_quality: predicted mean CLIPScore per request (points).
        mean_delay_s: predicted mean response delay (s).
        p95_delay_s: predicted 95th-percentile delay (s).
        utility: U = mean_quality − w · mean_delay_s (points).
        success: whether the planner finished normally.
        status: code into :data:`STATUS_MESSAGES`.
        message: why it stopped.
        nit: iterations.
        nfev: objective evaluations.
        seed: the seed the planner's generator came from, or None if it used no randomness.
        loads: expected requests per model, shape (M,).
        trajectory: (iteration, current utility, best utility, temperature) rows for annealers.
        upper_bound: a proven upper bound on the utility of any plan, where the planner certifies one.
        shortfall: P(score < θ) per category, shape (C,), where the problem has a quality floor.
    """

    method: str
    plan: Plan
    mean_quality: float
    mean_delay_s: float
    p95_delay_s: float
    utility: float
    success: bool
    status: int
    message: str
    nit: int
    nfev: int
    seed: int | None
    loads: np.ndarray
    trajectory: np.ndarray | None = None
    upper_bound: float | None = None
    shortfall: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def certified_gap(self) -> float | None:
        """(upper_bound − utility) / |upper_bound|, where a bound exists."""
        if self.upper_bound is None:
            return None
        return (self.upper_bound - self.utility) / max(abs(self.upper_bound), 1e-12)


def make_result(
    problem: Problem,
    method: str,
    routing: np.ndarray,
    step_index: tuple[int, ...] | list[int],
    shares: np.ndarray,
    *,
    status: int = 0,
    nit: int = 0,
    nfev: int = 0,
    seed: int | None = None,
    trajectory: np.ndarray | None = None,
    upper_bound: float | None = None,
    **extra: Any,
) -> PlanResult:
    """Evaluate a plan with the system model and wrap it in a :class:`PlanResult`."""
    step_index = tuple(int(k) for k in step_index)
    ev = evaluate(problem, routing, step_index, shares)
    plan = Plan(
        models=problem.models,
        categories=problem.categories,
        routing_matrix=np.asarray(routing, dtype=float),
        step_index=step_index,
        steps_per_model=tuple(int(g[k]) for g, k in zip(problem.steps, step_index)),
        share_vector=np.asarray(shares, dtype=float),
    )
    return PlanResult(
        method=method,
        plan=plan,
        mean_quality=ev.mean_quality,
        mean_delay_s=ev.mean_delay_s,
        p95_delay_s=ev.p95_delay_s,
        utility=ev.utility,
        success=status in (0, 3),
        status=status,
        message=STATUS_MESSAGES[status],
        nit=nit,
        nfev=nfev,
        seed=seed,
        loads=ev.loads,
        trajectory=trajectory,
        upper_bound=upper_bound,
        shortfall=ev.shortfall,
        extra=dict(extra),
    )
