"""Exact search: the best plan over routing, steps and shares, with a certificate.

Every step vector is enumerated. For each, the price-directed relaxation gives
an upper bound on the utility of *any* routing at those steps (see
:func:`~genedge.optimizer.assignment.price_directed_assignment`), and its
routing, polished on the exact utility, gives a feasible plan. Step vectors are
visited best bound first and the search stops when no remaining bound beats the
best plan found (branch and bound). The step vectors whose relaxed bound still
exceeds that plan are then bounded again with the exact delay
(:func:`~genedge.optimizer.assignment.vertex_bound`), so the result is
certified: the optimum lies in ``[result.utility, result.upper_bound]``, and
where the best plan routes whole categories the two coincide.

It enumerates Π_m K_m step vectors, so it is meant for the paper's scale
(a few models); :data:`MAX_STEP_VECTORS` guards against the rest.

A callback may stop the branch and bound early: the certificate is still computed
over every step vector, so the stopped result's ``upper_bound`` still holds.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from genedge.optimizer.assignment import polish_requests, price_directed_assignment, relaxed_optimum, vertex_bound
from genedge.optimizer.problem import Problem
from genedge.optimizer.result import Callback, PlanResult, PlanState, PlanStatus, make_result, timed
from genedge.optimizer.system import optimal_shares

__all__ = ["exact_search", "utility_upper_bound", "MAX_STEP_VECTORS"]

MAX_STEP_VECTORS = 200_000


@timed
def exact_search(
    problem: Problem,
    *,
    rng: int | np.random.Generator | None = None,
    callback: Callback | None = None,
    max_step_vectors: int = MAX_STEP_VECTORS,
) -> PlanResult:
    """Find the utility-maximizing plan over routing, steps and shares, certified by an upper bound.

    Args:
        problem: the planning problem.
        rng: ignored: the search uses no randomness (accepted so every planner is called the same way).
        callback: called with a :class:`~genedge.optimizer.result.PlanState` after each step vector
            whose routing is polished (``best_state``: the best step indices); returning True stops
            the search with the best plan so far.
        max_step_vectors: refuse problems with more step vectors than this.

    Returns:
        A :class:`PlanResult` with ``upper_bound`` set; ``nit`` counts the step vectors
        whose routing was polished.

    Raises:
        ValueError: the problem has more than ``max_step_vectors`` step vectors.
    """
    count = int(np.prod(problem.grid_sizes, dtype=float))
    if count > max_step_vectors:
        raise ValueError(
            f"Expected at most {max_step_vectors} step vectors for exact search, but the problem has "
            f"{count} ({len(problem.models)} models); use propose() at this scale"
        )
    candidates = []
    for allowed in problem.deployable_sets():
        for steps in itertools.product(*(range(k) for k in problem.grid_sizes)):
            mean, full = problem.mean_at(steps), problem.service_at(steps)
            x, bound = price_directed_assignment(problem, mean, full, allowed, problem.shortfall_at(steps))
            if x is not None:
                candidates.append((bound, steps, x, allowed))
    if not candidates:
        raise problem.unreachable_floor_error()
    candidates.sort(key=lambda item: -item[0])
    best = None
    nfev = len(candidates)
    visited = 0
    status = PlanStatus.SUCCESS
    for bound, steps, x, allowed in candidates:
        if best is not None and bound <= best[0]:
            break
        mean, full = problem.mean_at(steps), problem.service_at(steps)
        x, u, evaluations = polish_requests(problem, x, mean, full, allowed, problem.shortfall_at(steps))
        nfev += evaluations
        visited += 1
        if best is None or u > best[0]:
            best = (u, steps, x)
        if callback is not None and callback(
            PlanState(iteration=visited, value=u, best_value=best[0], best_state=best[1])
        ):
            status = PlanStatus.CALLBACK_STOP
            break
    upper = best[0]
    for bound, steps, _, allowed in candidates:  # best relaxed bound first: stop once none can raise `upper`
        if bound <= upper:
            break
        exact_delay = vertex_bound(
            problem, problem.mean_at(steps), problem.service_at(steps), allowed, problem.shortfall_at(steps)
        )
        upper = max(upper, bound if exact_delay is None else min(bound, exact_delay))
    _, steps, x = best
    shares = optimal_shares(problem.service_at(steps), x.sum(axis=0), problem.budget)
    result = make_result(
        problem,
        "exact",
        x / problem.counts[:, None],
        steps,
        shares,
        status=status,
        nit=visited,
        nfev=nfev,
        upper_bound=upper,
    )
    # The search's utility and the system model's may differ in the last bits; the bound covers both.
    return dataclasses.replace(result, upper_bound=max(upper, result.utility))


def utility_upper_bound(problem: Problem) -> float:
    r"""A proven upper bound on the utility of any plan, cheap at any scale.

    Relaxes the price-directed bound further by letting each (category, model)
    pair pick its own steps, which decouples the models:

    .. math:: U \le \frac{1}{N} \min_{\nu \ge 0} \Bigl[\frac{\nu^2}{4\lambda}
              + \sum_c n_c \max_{m, s} \bigl(\mu_{mc}(s) - \nu a_m(s)\bigr)\Bigr],
              \qquad a_m(s) = \sqrt{(o_m + \tau_m s)/2}, \quad \lambda = w / R.

    The minimization is solved exactly (:func:`~genedge.optimizer.assignment.relaxed_optimum`).
    Where :func:`exact_search` cannot enumerate the step vectors, this still says how
    far a plan can be from the optimum.
    It ignores a quality floor, so it also bounds plans that must meet one.
    """
    lam = problem.weight / problem.budget
    best = -np.inf
    for allowed in problem.deployable_sets():
        # Every (model, steps) pair is a vertex open to every category: one price dual decides them all.
        value = np.concatenate([problem.quality_mean[m] for m in np.flatnonzero(allowed)], axis=1)  # (C, Σ K)
        cost = np.concatenate([np.sqrt(problem.service_s[m] / 2) for m in np.flatnonzero(allowed)])
        cost = np.broadcast_to(cost, value.shape)
        best = max(best, relaxed_optimum(value, cost, problem.counts, lam))
    return best / problem.n_requests
