"""The paper's baselines, each replacing one component of its method (Gao et al., §V).

* Direct-assignment: each category to the model with the highest mean score; steps and shares annealed.
* Random-assignment: each request to a uniformly random model; steps and shares annealed.
* Equal-allocation: the paper's routing, each model's default steps, equal shares.
* Optimal-step: the paper's routing, every step vector tried, optimal shares — the bound the
  paper's annealing should approach.
* Paper: the method itself, probabilistic routing then annealing over steps and shares.

The paper's routing is computed once, at each model's default steps, before
steps are searched, as the paper assigns models on arrival and then adapts steps
and resources. Where the models do not all fit in device memory together, each
method plans on every set of models that fits (:meth:`Problem.deployable_sets`)
and keeps its best plan, as an operator would.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import numpy as np

from genedge.optimizer.model import Problem, deployed_mask, fifo_delay_coefficient, optimal_shares, score_plan
from genedge.optimizer.planners._anneal import DEFAULT_MAXITER, anneal
from genedge.optimizer.planners._assignment import direct_assignment, probabilistic_assignment, uniform_assignment
from genedge.optimizer.planners._result import Callback, PlanResult, PlanStatus, make_result, timed

__all__ = ["paper_routing", "paper_method", "direct", "random_assignment", "equal_allocation", "optimal_step"]


def _on_allowed(
    rule: Callable[[np.ndarray, np.ndarray], np.ndarray], problem: Problem, allowed: np.ndarray
) -> np.ndarray:
    """Apply a routing rule to the allowed models' columns; the others get no requests."""
    steps = problem.default_step_index
    cols = np.flatnonzero(allowed)
    routing = np.zeros((len(problem.categories), len(problem.models)))
    routing[:, cols] = rule(problem.mean_at(steps)[:, cols], problem.std_at(steps)[:, cols])
    return routing


def _best_over_deployable_sets(problem: Problem, plan: Callable[[np.ndarray], PlanResult]) -> PlanResult:
    """The best of ``plan`` over every set of models that fits, with the counts of all of them.

    A callback stop in one set ends the search: the best plan so far is returned with that status.
    """
    best, nit, nfev, status = None, 0, 0, PlanStatus.SUCCESS
    for allowed in problem.deployable_sets():
        result = plan(allowed)
        nit, nfev = nit + result.nit, nfev + result.nfev
        if best is None or (result.feasible, result.utility) > (best.feasible, best.utility):
            best = result
        if result.status == PlanStatus.CALLBACK_STOP:
            status = result.status
            break
    if status != PlanStatus.CALLBACK_STOP:
        status = best.status
    return dataclasses.replace(best, nit=nit, nfev=nfev, status=status)


def paper_routing(problem: Problem, allowed: np.ndarray | None = None) -> np.ndarray:
    """The paper's probabilistic routing over the allowed models (default: all), at default steps."""
    allowed = np.ones(len(problem.models), dtype=bool) if allowed is None else allowed
    return _on_allowed(probabilistic_assignment, problem, allowed)


def _annealed(
    problem: Problem,
    method: str,
    routing: Callable[[np.ndarray], np.ndarray],
    *,
    rng: int | np.random.Generator | None,
    callback: Callback | None,
    maxiter: int,
) -> PlanResult:
    """Anneal steps and shares for the routing ``routing(allowed)`` of every set of models that fits."""
    return _best_over_deployable_sets(
        problem,
        lambda allowed: anneal(problem, routing(allowed), rng=rng, callback=callback, maxiter=maxiter, method=method),
    )


@timed
def paper_method(
    problem: Problem,
    *,
    rng: int | np.random.Generator | None = None,
    callback: Callback | None = None,
    maxiter: int = DEFAULT_MAXITER,
) -> PlanResult:
    """Gao et al.: probabilistic routing, then annealing over steps and shares.

    Args:
        problem: the planning problem.
        rng: a seed or generator for the annealing; when None a new generator is seeded from the OS.
        callback: called with an :class:`~genedge.optimizer.planners.AnnealState` after each annealing
            iteration; returning True stops the search.
        maxiter: annealing iterations per set of models that fits in memory.
    """
    return _annealed(
        problem, "paper", lambda allowed: paper_routing(problem, allowed), rng=rng, callback=callback, maxiter=maxiter
    )


@timed
def direct(
    problem: Problem,
    *,
    rng: int | np.random.Generator | None = None,
    callback: Callback | None = None,
    maxiter: int = DEFAULT_MAXITER,
) -> PlanResult:
    """Direct-assignment: categories to their best-mean model, then annealing.

    Arguments as :func:`paper_method`.
    """
    return _annealed(
        problem,
        "direct-assignment",
        lambda allowed: _on_allowed(lambda mean, std: direct_assignment(mean), problem, allowed),
        rng=rng,
        callback=callback,
        maxiter=maxiter,
    )


@timed
def random_assignment(
    problem: Problem,
    *,
    rng: int | np.random.Generator | None = None,
    callback: Callback | None = None,
    maxiter: int = DEFAULT_MAXITER,
) -> PlanResult:
    """Random-assignment: every request to a uniformly random model, then annealing.

    Arguments as :func:`paper_method`.
    """
    return _annealed(
        problem,
        "random-assignment",
        lambda allowed: _on_allowed(lambda mean, std: uniform_assignment(*mean.shape), problem, allowed),
        rng=rng,
        callback=callback,
        maxiter=maxiter,
    )


@timed
def equal_allocation(
    problem: Problem, *, rng: int | np.random.Generator | None = None, callback: Callback | None = None
) -> PlanResult:
    """Equal-allocation: the paper's routing, default steps, equal shares among the deployed models.

    A closed form: it uses no randomness (``rng`` is ignored) and has no iterations, so it never
    calls ``callback``; both are accepted so that every planner is called the same way.
    """
    return _best_over_deployable_sets(problem, lambda allowed: _equal_allocation(problem, allowed))


def _equal_allocation(problem: Problem, allowed: np.ndarray) -> PlanResult:
    routing = paper_routing(problem, allowed)
    used = deployed_mask(problem.counts @ routing)
    shares = np.where(used, problem.budget / used.sum(), 0.0)
    return make_result(
        problem, "equal-allocation", routing, problem.default_step_index, shares, status=PlanStatus.CLOSED_FORM, nfev=1
    )


@timed
def optimal_step(
    problem: Problem, *, rng: int | np.random.Generator | None = None, callback: Callback | None = None
) -> PlanResult:
    """Optimal-step: the paper's routing, exhaustive steps, closed-form optimal shares.

    Every step vector is evaluated in one vectorized pass, so there is no iteration to report:
    it never calls ``callback``, and it uses no randomness (``rng`` is ignored). Both are
    accepted so that every planner is called the same way.
    """
    return _best_over_deployable_sets(problem, lambda allowed: _optimal_step(problem, allowed))


def _optimal_step(problem: Problem, allowed: np.ndarray) -> PlanResult:
    routing = paper_routing(problem, allowed)
    requests = problem.counts[:, None] * routing
    loads = requests.sum(axis=0)
    if not problem.is_classic:
        return _optimal_step_scored(problem, routing)
    models = range(len(problem.models))
    # The shared delay term (Σ √K_m)² couples the models: evaluate every step vector at once.
    quality = [requests[:, i] @ problem.value_grid(i) for i in models]
    deployed = deployed_mask(loads)
    root_k = [np.sqrt(fifo_delay_coefficient(problem.service_s[i], loads[i])) * deployed[i] for i in models]
    grids = np.array(list(itertools.product(*(range(k) for k in problem.grid_sizes))))
    total_quality = sum(quality[i][grids[:, i]] for i in models)
    delay_total = sum(root_k[i][grids[:, i]] for i in models) ** 2 / problem.budget
    u = (total_quality - problem.weight * delay_total) / problem.n_requests
    steps = tuple(grids[int(u.argmax())])
    shares = optimal_shares(problem.service_at(steps), loads, problem.budget)
    return make_result(problem, "optimal-step", routing, steps, shares, nit=len(grids), nfev=len(grids))


def _optimal_step_scored(problem: Problem, routing: np.ndarray) -> PlanResult:
    """Every step vector scored on the exact objective, each with its best shares (base batch: the
    paper's baselines do not batch)."""
    requests = problem.counts[:, None] * routing
    grids = list(itertools.product(*(range(k) for k in problem.grid_sizes)))
    scored = [score_plan(problem, requests, steps, batch_index=problem.base_batch_index) for steps in grids]
    best = int(np.argmax([s.value for s in scored]))
    return make_result(
        problem, "optimal-step", routing, grids[best], scored[best].shares, nit=len(grids), nfev=len(grids)
    )
