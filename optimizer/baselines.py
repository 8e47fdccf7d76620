"""The paper's baselines, each replacing one component of its method (Gao et al., §V).

* Direct-assignment: each category to the model with the highest mean score; steps and shares annealed.
* Random-assignment: each request to a uniformly random model; steps and shares annealed.
* Equal-allocation: the paper's routing, each model's default steps, equal shares.
* Optimal-step: the paper's routing, every step vector tried, optimal shares — the bound the
  paper's annealing should approach.
* Paper: the method itself, probabilistic routing then annealing over steps and shares.

The paper's routing is computed once, at each model's default steps, before
steps are searched, as the paper assigns models on arrival and then adapts steps
and resources.
"""

from __future__ import annotations

import itertools

import numpy as np

from genedge.optimizer.anneal import DEFAULT_MAXITER, anneal
from genedge.optimizer.assignment import direct_assignment, probabilistic_assignment, uniform_assignment
from genedge.optimizer.problem import Problem
from genedge.optimizer.result import PlanResult, make_result
from genedge.optimizer.system import optimal_shares

__all__ = ["paper_routing", "paper_method", "direct", "random_assignment", "equal_allocation", "optimal_step"]


def paper_routing(problem: Problem) -> np.ndarray:
    """The paper's probabilistic routing, at each model's default steps."""
    steps = problem.default_step_index
    return probabilistic_assignment(problem.mean_at(steps), problem.std_at(steps))


def paper_method(problem: Problem, *, rng: int | np.random.Generator | None = None,
                 maxiter: int = DEFAULT_MAXITER) -> PlanResult:
    """Gao et al.: probabilistic routing, then annealing over steps and shares."""
    return anneal(problem, paper_routing(problem), rng=rng, maxiter=maxiter, method="paper")


def direct(problem: Problem, *, rng: int | np.random.Generator | None = None,
           maxiter: int = DEFAULT_MAXITER) -> PlanResult:
    """Direct-assignment: categories to their best-mean model, then annealing."""
    routing = direct_assignment(problem.mean_at(problem.default_step_index))
    return anneal(problem, routing, rng=rng, maxiter=maxiter, method="direct-assignment")


def random_assignment(problem: Problem, *, rng: int | np.random.Generator | None = None,
                      maxiter: int = DEFAULT_MAXITER) -> PlanResult:
    """Random-assignment: every request to a uniformly random model, then annealing."""
    routing = uniform_assignment(len(problem.categories), len(problem.models))
    return anneal(problem, routing, rng=rng, maxiter=maxiter, method="random-assignment")


def equal_allocation(problem: Problem) -> PlanResult:
    """Equal-allocation: the paper's routing, default steps, equal shares among models in use."""
    routing = paper_routing(problem)
    used = problem.counts @ routing > 1e-12
    shares = np.where(used, problem.budget / used.sum(), 0.0)
    return make_result(problem, "equal-allocation", routing, problem.default_step_index, shares, status=3, nfev=1)


def optimal_step(problem: Problem) -> PlanResult:
    """Optimal-step: the paper's routing, exhaustive steps, closed-form optimal shares."""
    routing = paper_routing(problem)
    requests = problem.counts[:, None] * routing
    loads = requests.sum(axis=0)
    # Per model, the utility contribution of each grid step depends only on that step,
    # except through the shared delay (Σ √K_m)²: evaluate every step vector at once.
    quality = [requests[:, i] @ problem.quality_mean[i] for i in range(len(problem.models))]
    root_k = [np.sqrt(problem.service_s[i] * loads[i] * (loads[i] + 1) / 2) for i in range(len(problem.models))]
    grids = np.array(list(itertools.product(*(range(k) for k in problem.grid_sizes))))
    total_quality = sum(quality[i][grids[:, i]] for i in range(len(problem.models)))
    delay_total = sum(root_k[i][grids[:, i]] for i in range(len(problem.models))) ** 2 / problem.budget
    u = (total_quality - problem.weight * delay_total) / problem.n_requests
    steps = tuple(grids[int(u.argmax())])
    shares = optimal_shares(problem.service_at(steps), loads, problem.budget)
    return make_result(problem, "optimal-step", routing, steps, shares, nit=len(grids), nfev=len(grids))
