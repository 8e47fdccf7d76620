"""One result type for every planner, so methods compare on equal footing."""

from __future__ import annotations

import dataclasses
import enum
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from genedge.optimizer.model import Evaluation, Problem, deployed_mask, evaluate

__all__ = [
    "Callback",
    "Plan",
    "PlanResult",
    "PlanState",
    "PlanStatus",
    "make_result",
    "relative_change",
    "timed",
]

# A relative change against a reference this close to 0 is taken against this instead.
_TINY_REFERENCE = 1e-12


class PlanStatus(enum.IntEnum):
    """Why a planner stopped (scipy.optimize's codes where they mean the same).

    ``SUCCESS`` and ``CLOSED_FORM`` are successes; ``CALLBACK_STOP`` returns the best
    plan found before the callback asked to stop.
    """

    SUCCESS = 0
    CALLBACK_STOP = 2
    CLOSED_FORM = 3

    @property
    def message(self) -> str:
        """The human-readable reason."""
        return _STATUS_MESSAGES[self]

    @property
    def success(self) -> bool:
        """Whether the planner finished normally."""
        return self is not PlanStatus.CALLBACK_STOP


_STATUS_MESSAGES = {
    PlanStatus.SUCCESS: "Optimization terminated successfully",
    PlanStatus.CALLBACK_STOP: "Callback function requested to stop early by returning True",
    PlanStatus.CLOSED_FORM: "Closed-form plan: nothing to search",
}


@dataclass(frozen=True)
class PlanState:
    """What a planner's callback sees after each iteration.

    Attributes:
        iteration: iterations done, from 1 (annealers count afresh for each set of models that fits in memory).
        value: utility of the current candidate (points).
        best_value: best utility so far (points).
        best_state: the planner's best state so far (annealers: step indices, with shares for the
            paper's annealing; exact search: the step indices).
    """

    iteration: int
    value: float
    best_value: float
    best_state: Any


#: ``callback(state) -> bool | None``: returning True stops the planner, which returns its best plan so
#: far with status :attr:`PlanStatus.CALLBACK_STOP`.
Callback = Callable[[PlanState], bool | None]


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
        batch_index: index into each model's batch sizes.
        batch_per_model: the largest batch b_m each model runs (1: no batching).
    """

    models: tuple[str, ...]
    categories: tuple[str, ...]
    routing_matrix: np.ndarray
    step_index: tuple[int, ...]
    steps_per_model: tuple[int, ...]
    share_vector: np.ndarray
    batch_index: tuple[int, ...] = ()
    batch_per_model: tuple[int, ...] = ()

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

    @property
    def max_batch(self) -> dict[str, int]:
        """model key → largest batch size it runs."""
        return dict(zip(self.models, self.batch_per_model))


@dataclass(frozen=True, kw_only=True)
class PlanResult(Evaluation):
    """What every planner returns: its plan, the plan's predicted figures (every field of
    :class:`~genedge.optimizer.model.Evaluation`: mean_quality, mean_delay_s, p95/p99, utility, loads,
    service_s, shortfall, attainment, energy, utilization, stable, feasible, max_batch, mg1 mean) and how
    the planner got there.

    Attributes:
        method: planner name, e.g. ``"genedge"``, ``"paper"``, ``"direct-assignment"``.
        plan: the decisions.
        status: why the planner stopped; :attr:`success` and :attr:`message` follow from it.
        nit: iterations (exact search: step vectors whose routing was polished; genedge where it
            enumerates step vectors: step vectors valued).
        nfev: objective evaluations.
        seed: the seed the planner's generator came from, or None if it used no randomness.
        trajectory: (iteration, current utility, best utility, temperature) rows for annealers; where
            genedge enumerates step vectors, one row per step vector valued, at temperature 0.
        upper_bound: a proven upper bound on the utility of any plan, where the planner certifies one.
        plan_time_s: wall time the planner took (s); every planner sets it, a result built with
            :func:`make_result` alone has None.
        bound_note: what ``upper_bound`` leaves out, where it is not tight by construction.
    """

    method: str
    plan: Plan
    status: PlanStatus
    nit: int
    nfev: int
    seed: int | None
    trajectory: np.ndarray | None = None
    upper_bound: float | None = None
    plan_time_s: float | None = None
    bound_note: str | None = None

    @property
    def success(self) -> bool:
        """Whether the planner finished normally (see :class:`PlanStatus`)."""
        return self.status.success

    @property
    def message(self) -> str:
        """Why the planner stopped."""
        return self.status.message

    @property
    def deployed(self) -> np.ndarray:
        """Which models the plan deploys, shape (M,) bool (:func:`~genedge.optimizer.model.deployed_mask`)."""
        return deployed_mask(self.loads)

    @property
    def certified_gap(self) -> float | None:
        """(upper_bound − utility) / |upper_bound|, where a bound exists (inf for an infeasible plan)."""
        if self.upper_bound is None:
            return None
        if not self.feasible:
            return np.inf
        return (self.upper_bound - self.utility) / max(abs(self.upper_bound), _TINY_REFERENCE)


def relative_change(value: float, reference: float) -> float:
    """(value − reference) / |reference|, the fraction by which ``value`` differs from ``reference``."""
    return (value - reference) / max(abs(reference), _TINY_REFERENCE)


def make_result(
    problem: Problem,
    method: str,
    routing: np.ndarray,
    step_index: tuple[int, ...] | list[int],
    shares: np.ndarray,
    *,
    status: PlanStatus = PlanStatus.SUCCESS,
    nit: int = 0,
    nfev: int = 0,
    seed: int | None = None,
    trajectory: np.ndarray | None = None,
    upper_bound: float | None = None,
    batch_index: tuple[int, ...] | list[int] | None = None,
    bound_note: str | None = None,
) -> PlanResult:
    """Evaluate a plan with the system model and wrap it in a :class:`PlanResult`."""
    step_index = tuple(int(k) for k in step_index)
    batch_index = problem.base_batch_index if batch_index is None else tuple(int(b) for b in batch_index)
    ev = evaluate(problem, routing, step_index, shares, batch_index)
    plan = Plan(
        models=problem.models,
        categories=problem.categories,
        routing_matrix=np.asarray(routing, dtype=float),
        step_index=step_index,
        steps_per_model=tuple(int(g[k]) for g, k in zip(problem.steps, step_index)),
        share_vector=np.asarray(shares, dtype=float),
        batch_index=batch_index,
        batch_per_model=tuple(int(b) for b in ev.max_batch),
    )
    return PlanResult(
        **{f.name: getattr(ev, f.name) for f in dataclasses.fields(Evaluation)},
        method=method,
        plan=plan,
        status=PlanStatus(status),
        nit=nit,
        nfev=nfev,
        seed=seed,
        trajectory=trajectory,
        upper_bound=upper_bound,
        bound_note=bound_note,
    )


_PlannerT = TypeVar("_PlannerT", bound=Callable[..., PlanResult])


def timed(planner: _PlannerT) -> _PlannerT:
    """Decorate a planner so that its result carries the wall time it took in ``plan_time_s``."""

    @functools.wraps(planner)
    def run(*args: Any, **kwargs: Any) -> PlanResult:
        start = time.perf_counter()
        result = planner(*args, **kwargs)
        return dataclasses.replace(result, plan_time_s=time.perf_counter() - start)

    return run  # type: ignore[return-value]
