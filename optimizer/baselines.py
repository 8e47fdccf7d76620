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

import itertools
from collections.abc import Callable

import numpy as np

from genedge.optimizer.anneal import DEFAULT_MAXITER, anneal
from genedge.optimizer.assignment import direct_assignment, probabilistic_assignment, uniform_assignment
from genedge.optimizer.problem import Problem
from genedge.optimizer.result import PlanResult, make_result
from genedge.optimizer.system import fifo_delay_coefficient, optimal_shares

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
    return max((plan(allowed) for allowed in problem.deployable_sets()), key=lambda result: result.utility)


def paper_routing(problem: Problem, allowed: np.ndarray | None = None) -> np.ndarray:
    """The paper's probabilistic routing over the allowed models (default: all), at default steps."""
    allowed = np.ones(len(problem.models), dtype=bool) if allowed is None else allowed
    return _on_allowed(probabilistic_assignment, problem, allowed)


def paper_method(
    problem: Problem, *, rng: int | np.random.Generator | None = None, maxiter: int = DEFAULT_MAXITER
) -> PlanResult:
    """Gao et al.: probabilistic routing, then annealing over steps and shares."""
    return _best_over_deployable_sets(
        problem,
        lambda allowed: anneal(problem, paper_routing(problem, allowed), rng=rng, maxiter=maxiter, method="paper"),
    )


def direct(
    problem: Problem, *, rng: int | np.random.Generator | None = None, maxiter: int = DEFAULT_MAXITER
) -> PlanResult:
    """Direct-assignment: categories to their best-mean model, then annealing."""
    return _best_over_deployable_sets(
        problem,
        lambda allowed: anneal(
            problem,
            _on_allowed(lambda mean, std: direct_assignment(mean), problem, allowed),
            rng=rng,
            maxiter=maxiter,
            method="direct-assignment",
        ),
    )


def random_assignment(
    problem: Problem, *, rng: int | np.random.Generator | None = None, maxiter: int = DEFAULT_MAXITER
) -> PlanResult:
    """Random-assignment: every request to a uniformly random model, then annealing."""
    return _best_over_deployable_sets(
        problem,
        lambda allowed: anneal(
            problem,
            _on_allowed(lambda mean, std: uniform_assignment(*mean.shape), problem, allowed),
            rng=rng,
            maxiter=maxiter,
            method="random-assignment",
        ),
    )


def equal_allocation(problem: Problem) -> PlanResult:
    """Equal-allocation: the paper's routing, default steps, equal shares among models in use."""
    return _best_over_deployable_sets(problem, lambda allowed: _equal_allocation(problem, allowed))


def _equal_allocation(problem: Problem, allowed: np.ndarray) -> PlanResult:
    routing = paper_routing(problem, allowed)
    used = problem.counts @ routing > 1e-12
    shares = np.where(used, problem.budget / used.sum(), 0.0)
    return make_result(problem, "equal-allocation", routing, problem.default_step_index, shares, status=3, nfev=1)


def optimal_step(problem: Problem) -> PlanResult:
    """Optimal-step: the paper's routing, exhaustive steps, closed-form optimal shares."""
    return _best_over_deployable_sets(problem, lambda allowed: _optimal_step(problem, allowed))


def _optimal_step(problem: Problem, allowed: np.ndarray) -> PlanResult:
    routing = paper_routing(problem, allowed)
    requests = problem.counts[:, None] * routing
    loads = requests.sum(axis=0)
    models = range(len(problem.models))
    # The shared delay term (Σ √K_m)² couples the models: evaluate every step vector at once.
    quality = [requests[:, i] @ problem.quality_mean[i] for i in models]
    root_k = [np.sqrt(fifo_delay_coefficient(problem.service_s[i], loads[i])) for i in models]
    grids = np.array(list(itertools.product(*(range(k) for k in problem.grid_sizes))))
    total_quality = sum(quality[i][grids[:, i]] for i in models)
    delay_total = sum(root_k[i][grids[:, i]] for i in models) ** 2 / problem.budget
    u = (total_quality - problem.weight * delay_total) / problem.n_requests
    steps = tuple(grids[int(u.argmax())])
    shares = optimal_shares(problem.service_at(steps), loads, problem.budget)
    return make_result(problem, "optimal-step", routing, steps, shares, nit=len(grids), nfev=len(grids))
