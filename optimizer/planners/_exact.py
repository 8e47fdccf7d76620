"""Exact search: the best plan over routing, steps and shares, with a certificate.

Every step vector is enumerated. For each, the price-directed relaxation gives
an upper bound on the utility of *any* routing at those steps (see
:func:`~genedge.optimizer.planners.price_directed_assignment`), and its
routing, polished on the exact utility, gives a feasible plan. Step vectors are
visited best bound first and the search stops when no remaining bound beats the
best plan found (branch and bound). The step vectors whose relaxed bound still
exceeds that plan are then bounded again with the exact delay
(:func:`~genedge.optimizer.planners._assignment.vertex_bound`), so the result is
certified: the optimum lies in ``[result.utility, result.upper_bound]``, and
where the best plan routes whole categories the two coincide.

It enumerates Π_m K_m step vectors, so it is meant for the paper's scale
(a few models); :data:`MAX_STEP_VECTORS` guards against the rest.

A callback may stop the branch and bound early: the certificate is still computed
over every step vector, so the stopped result's ``upper_bound`` still holds.

Under the other delay models and objectives (open arrivals, random routing, an SLO,
batching) the search enumerates step vectors × batch sizes, scores each one's routings
exactly (:func:`~genedge.optimizer.planners._assignment.best_scored_routing`, then
:func:`~genedge.optimizer.planners._assignment.polish_scored`) and bounds it with
:func:`scored_upper_bound`, the smaller of two relaxations that hold for any routing and
shares: the vertex bound with each request's delay cut to its own service time (the window
model keeps its FIFO order; open arrivals lose their queueing waits), and a linear program over
the routing that keeps the SLO and the queues' capacity as necessary conditions but drops the
delay. Where the waits or the SLO's shape matter, the bound is loose, and the result says so in
``bound_note``.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from genedge.optimizer.model import INFEASIBLE, Problem, optimal_shares, score_plan
from genedge.optimizer.planners._assignment import (
    best_scored_routing,
    frontier_candidates,
    polish_requests,
    polish_scored,
    polish_starts,
    price_directed_assignment,
    relaxed_optimum,
    vertex_bound,
)
from genedge.optimizer.planners._result import Callback, PlanResult, PlanState, PlanStatus, make_result, timed

__all__ = ["exact_search", "scored_upper_bound", "utility_upper_bound", "MAX_STEP_VECTORS"]

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
        callback: called with a :class:`~genedge.optimizer.planners.PlanState` after each step vector
            whose routing is polished (``best_state``: the best step indices); returning True stops
            the search with the best plan so far.
        max_step_vectors: refuse problems with more step vectors than this.

    Returns:
        A :class:`PlanResult` with ``upper_bound`` set; ``nit`` counts the step vectors
        whose routing was polished.

    Raises:
        ValueError: the problem has more than ``max_step_vectors`` step vectors.
    """
    _check_size(problem, max_step_vectors)
    if not problem.is_classic:
        return _exact_scored(problem, callback)
    candidates = _relaxed_candidates(problem)
    best, visited, evaluations, status = _branch_and_bound(problem, candidates, callback)
    upper = _certified_bound(problem, candidates, best[0])
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
        nfev=len(candidates) + evaluations,
        upper_bound=upper,
    )
    # The search's utility and the system model's may differ in the last bits; the bound covers both.
    return dataclasses.replace(result, upper_bound=max(upper, result.utility))


def _check_size(problem: Problem, max_step_vectors: int) -> None:
    """Refuse a problem with more step vectors (× batch sizes) than ``max_step_vectors``."""
    count = int(np.prod(problem.grid_sizes, dtype=float) * np.prod(problem.batch_grid_sizes, dtype=float))
    if count > max_step_vectors:
        raise ValueError(
            f"Expected at most {max_step_vectors} step vectors for exact search, but the problem has "
            f"{count} ({len(problem.models)} models); use propose() at this scale"
        )


def _relaxed_candidates(problem: Problem) -> list[tuple[float, tuple[int, ...], np.ndarray, np.ndarray]]:
    """(relaxed bound, steps, its routing in requests, deployable set) of every step vector and set with a
    routing that meets the floor, best bound first."""
    candidates = []
    for allowed in problem.deployable_sets():
        for steps in itertools.product(*(range(k) for k in problem.grid_sizes)):
            mean, full = problem.value_at(steps), problem.service_at(steps)
            x, bound = price_directed_assignment(problem, mean, full, allowed, problem.shortfall_at(steps))
            if x is not None:
                candidates.append((bound, steps, x, allowed))
    if not candidates:
        raise problem.unreachable_floor_error()
    candidates.sort(key=lambda item: -item[0])
    return candidates


def _branch_and_bound(
    problem: Problem,
    candidates: list[tuple[float, tuple[int, ...], np.ndarray, np.ndarray]],
    callback: Callback | None,
) -> tuple[tuple[float, tuple[int, ...], np.ndarray], int, int, PlanStatus]:
    """Polish the candidates' routings, best bound first, until no bound beats the best plan: the best
    (utility, steps, routing in requests), the candidates polished, their utility evaluations and the status."""
    best = None
    evaluations = 0
    visited = 0
    status = PlanStatus.SUCCESS
    for bound, steps, x, allowed in candidates:
        if best is not None and bound <= best[0]:
            break
        mean, full = problem.value_at(steps), problem.service_at(steps)
        x, u, used = polish_requests(problem, x, mean, full, allowed, problem.shortfall_at(steps))
        evaluations += used
        visited += 1
        if best is None or u > best[0]:
            best = (u, steps, x)
        if callback is not None and callback(
            PlanState(iteration=visited, value=u, best_value=best[0], best_state=best[1])
        ):
            status = PlanStatus.CALLBACK_STOP
            break
    return best, visited, evaluations, status


def _certified_bound(
    problem: Problem, candidates: list[tuple[float, tuple[int, ...], np.ndarray, np.ndarray]], best: float
) -> float:
    """The certificate: the best utility found, raised to each candidate's bound that could beat it, made
    tighter with the exact delay (:func:`~genedge.optimizer.planners._assignment.vertex_bound`)."""
    upper = best
    for bound, steps, _, allowed in candidates:  # best relaxed bound first: stop once none can raise `upper`
        if bound <= upper:
            break
        exact_delay = vertex_bound(
            problem, problem.value_at(steps), problem.service_at(steps), allowed, problem.shortfall_at(steps)
        )
        upper = max(upper, bound if exact_delay is None else min(bound, exact_delay))
    return upper


def utility_upper_bound(problem: Problem) -> float:
    r"""A proven upper bound on the utility of any plan, cheap at any scale.

    Relaxes the price-directed bound further by letting each (category, model)
    pair pick its own steps, which decouples the models:

    .. math:: U \le \frac{1}{N} \min_{\nu \ge 0} \Bigl[\frac{\nu^2}{4\lambda}
              + \sum_c n_c \max_{m, s} \bigl(\mu_{mc}(s) - \nu a_m(s)\bigr)\Bigr],
              \qquad a_m(s) = \sqrt{(o_m + \tau_m s)/2}, \quad \lambda = w / R.

    The minimization is solved exactly (:func:`~genedge.optimizer.planners._assignment.relaxed_optimum`).
    Where :func:`exact_search` cannot enumerate the step vectors, this still says how
    far a plan can be from the optimum.
    It ignores a quality floor, so it also bounds plans that must meet one. Each request's delay is
    at least its own service time under every delay model, and √(N(N+1)) ≥ N, so it bounds the
    window model's plans under any realization and batch size; under open arrivals it is a bound
    of the same form with the queueing waits left out.
    """
    lam = problem.weight / problem.budget
    best = -np.inf
    for allowed in problem.deployable_sets():
        # Every (model, steps) pair is a vertex open to every category: one price dual decides them all.
        value = np.concatenate([problem.value_grid(m) for m in np.flatnonzero(allowed)], axis=1)  # (C, Σ K)
        cost = np.concatenate([np.sqrt(problem.service_s[m] / 2) for m in np.flatnonzero(allowed)])
        cost = np.broadcast_to(cost, value.shape)
        best = max(best, relaxed_optimum(value, cost, problem.counts, lam))
    return best / problem.n_requests


def _exact_scored(problem: Problem, callback: Callback | None) -> PlanResult:
    """Branch and bound over step vectors × batch sizes on the exact objective (module doc).

    Combinations are visited by their vertex bound (cheap); the linear program tightens a bound
    only where it could matter (lazily, once per combination). Each visited combination's best
    frontier routing is scored; the best few are then polished, as genedge does.
    """
    bounds = _ComboBounds(problem)
    found, status = _visit_combos(problem, bounds, callback)
    if not found:
        raise problem.unreachable_floor_error()
    (value, steps, batch, x), evaluations = _polish_found(problem, found)
    scored = score_plan(problem, x, steps, batch_index=batch, certify=True)
    combos = bounds.combos
    feasible_anywhere = any(np.isfinite(bounds.of(i)) for i in range(len(combos)) if combos[i][0] > INFEASIBLE)
    upper = None
    if scored.feasible:
        # The optimum of any combination is at most its bound: the certificate is the largest bound left.
        open_bounds = [bounds.of(i) for i, combo in enumerate(combos) if combo[0] > value]
        upper = max([scored.utility, *open_bounds])
    return make_result(
        problem,
        "exact",
        x / problem.counts[:, None],
        steps,
        scored.shares,
        batch_index=batch,
        status=status,
        nit=len(found),
        nfev=len(combos) + len(found) + evaluations,
        upper_bound=upper,
        bound_note=_bound_note(problem)
        if feasible_anywhere
        else "no plan can meet the SLO and keep every queue stable",
    )


class _ComboBounds:
    """Every (steps, batch, deployable set) combination with its vertex bound, best first, and its
    :func:`scored_upper_bound`, whose linear program is solved once, on first use."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.combos = []  # (vertex bound, steps, batch, allowed)
        for allowed in problem.deployable_sets():
            for steps in itertools.product(*(range(k) for k in problem.grid_sizes)):
                for batch in itertools.product(*(range(k) for k in problem.batch_grid_sizes)):
                    self.combos.append((_vertex_part(problem, steps, batch, allowed), steps, batch, allowed))
        self.combos.sort(key=lambda item: -item[0])
        self._tight: dict[int, float] = {}

    def of(self, i: int) -> float:
        """Combination ``i``'s bound: the smaller of its vertex bound and its linear program's."""
        if i not in self._tight:
            cheap, steps, batch, allowed = self.combos[i]
            linear = _linear_part(self.problem, steps, batch, allowed)
            self._tight[i] = cheap if linear is None else min(cheap, linear)
        return self._tight[i]


def _visit_combos(problem: Problem, bounds: _ComboBounds, callback: Callback | None) -> tuple[list[tuple], PlanStatus]:
    """Score each combination's best frontier routing, best bound first, until no bound beats the best
    value: (value, steps, batch, allowed, candidates, requests) of each one scored, and the status."""
    found = []
    best = -np.inf
    status = PlanStatus.SUCCESS
    for i, (cheap, steps, batch, allowed) in enumerate(bounds.combos):
        if best > INFEASIBLE and cheap <= best:
            break
        if best > INFEASIBLE and bounds.of(i) <= best:
            continue
        if not np.isfinite(bounds.of(i)) and (best > INFEASIBLE or len(found) >= _INFEASIBLE_VISITS):
            continue  # no routing at these steps can meet the SLO: visited only while nothing is feasible
        floor = problem.shortfall_at(steps)
        candidates = frontier_candidates(problem, steps, allowed, floor, batch)
        value, x = best_scored_routing(problem, steps, allowed, floor, batch, candidates=candidates)
        if x is None:
            continue
        found.append((value, steps, batch, allowed, candidates, x))
        best = max(best, value)
        if callback is not None and callback(
            PlanState(iteration=len(found), value=value, best_value=best, best_state=(steps, batch))
        ):
            status = PlanStatus.CALLBACK_STOP
            break
    return found, status


def _polish_found(problem: Problem, found: list[tuple]) -> tuple[tuple, int]:
    """Polish the :data:`_POLISHED` best combinations found from their starts: the best (value, steps,
    batch, requests), and the objective evaluations that took."""
    top = None
    evaluations = 0
    for found_value, steps, batch, allowed, candidates, best_x in sorted(found, key=lambda item: -item[0])[:_POLISHED]:
        for start in polish_starts(found_value, best_x, candidates):
            x, value, used = polish_scored(
                problem,
                start,
                lambda x, steps=steps, batch=batch: score_plan(problem, x, steps, batch_index=batch).value,
                problem.shortfall_at(steps),
                allowed=allowed,
            )
            evaluations += used
            if top is None or value > top[0]:
                top = (value, steps, batch, x)
    return top, evaluations


# Under the scored objectives the exact search polishes this many of its best combinations.
_POLISHED = 3
# When no plan can be feasible, the search still returns the least infeasible of this many step vectors.
_INFEASIBLE_VISITS = 8


def _bound_note(problem: Problem) -> str | None:
    """What :func:`scored_upper_bound` leaves out for this problem, in words."""
    delay, variation = problem.delay.bound_notes
    slo = None if problem.slo is None else "the SLO enters the bound only through a linear relaxation"
    return "; ".join(note for note in (delay, slo, variation) if note is not None) or None


def scored_upper_bound(problem: Problem, steps: tuple[int, ...], batch: tuple[int, ...], allowed: np.ndarray) -> float:
    r"""An upper bound on the objective of every routing and share vector at these steps and batch sizes.

    The smaller of:

    * the vertex bound (:func:`~genedge.optimizer.planners._assignment.vertex_bound`) with each request's
      delay cut to what it cannot avoid: in the window model its FIFO position, as Σ_{i≤N} ⌈i/b⌉
      ≥ N(N+1)/(2b) (so a_m = √(S_m/(2 b_m)) with g(N) = √(N(N+1))); under open arrivals its own
      batch's service S_m/r_m (a_m = √S_m, g(N) = √N). Random routing only adds variance, so the
      bound holds for it too;
    * a linear program, max Σ x_cm (μ_cm − κE_m) / N over routings x and the requests y_cm ≤ x_cm
      that meet the SLO, subject to: the quality floor; under open arrivals the capacity
      Σ_m λ_m S_m / b_m ≤ R that stability needs; no request meeting the SLO on a model whose
      call takes longer than the SLO on the whole device; in the window model, at most
      b_m·SLO·r_m / S_m requests meeting it on model m (Σ_m r_m ≤ R); and Σ y ≥ α N (per category
      with a per-category SLO). It drops the delay term (≥ 0).

    Returns:
        The bound (points); −inf where no routing can meet the floor, the SLO and stability.
    """
    cheap = _vertex_part(problem, steps, batch, allowed)
    linear = _linear_part(problem, steps, batch, allowed)
    return cheap if linear is None else min(cheap, linear)


def _vertex_part(problem: Problem, steps: tuple[int, ...], batch: tuple[int, ...], allowed: np.ndarray) -> float:
    """The first bound of :func:`scored_upper_bound` (or, where it cannot be enumerated, the decoupled one)."""
    value = problem.value_at(steps)
    full = problem.call_service_at(steps, batch)
    size = problem.max_batch_at(batch).astype(float)
    floor = problem.shortfall_at(steps)
    scaled, root = problem.delay.vertex_delay(full, size)
    vertex = vertex_bound(problem, value, scaled, allowed, floor, delay_root=root)
    if vertex is None:
        return float(problem.counts @ np.where(allowed, value, -np.inf).max(axis=1)) / problem.n_requests
    return vertex


def _linear_part(problem: Problem, steps: tuple[int, ...], batch: tuple[int, ...], allowed: np.ndarray) -> float | None:
    """The second bound of :func:`scored_upper_bound`; None where it adds nothing."""
    return _linear_bound(
        problem,
        problem.value_at(steps),
        problem.call_service_at(steps, batch),
        problem.max_batch_at(batch).astype(float),
        allowed,
        problem.shortfall_at(steps),
    )


def _linear_bound(
    problem: Problem,
    value: np.ndarray,
    full: np.ndarray,
    size: np.ndarray,
    allowed: np.ndarray,
    floor: np.ndarray | None,
) -> float | None:
    """The linear relaxation of :func:`scored_upper_bound`; None where it adds nothing to the vertex bound."""
    queues = problem.delay.steady_state
    if problem.slo is None and not queues:
        return None
    from scipy.optimize import linprog  # only SLOs and open arrivals need it; the paper's problem never does

    c, m = value.shape
    n = problem.counts
    nx = c * m
    use_y = problem.slo is not None
    width = nx * (2 if use_y else 1)
    objective = np.zeros(width)
    objective[:nx] = -np.where(allowed[None, :], value, 0.0).ravel()
    equalities = np.zeros((c, width))
    for k in range(c):
        equalities[k, k * m : (k + 1) * m] = 1.0
    rows, bounds_ub = _floor_and_capacity_rows(problem, full, size, floor, width, queues)
    variable_bounds = [(0.0, None if allowed[j] else 0.0) for _ in range(c) for j in range(m)]
    if use_y:
        reachable = full <= problem.slo.seconds * problem.budget
        variable_bounds += [(0.0, None if allowed[j] and reachable[j] else 0.0) for _ in range(c) for j in range(m)]
        slo_rows, slo_bounds = _slo_rows(problem, full, size, width, queues)
        rows += slo_rows
        bounds_ub += slo_bounds
    solution = linprog(
        objective,
        A_ub=np.array(rows) if rows else None,
        b_ub=np.array(bounds_ub) if rows else None,
        A_eq=equalities,
        b_eq=n,
        bounds=variable_bounds,
        method="highs",
    )
    if solution.status == 2:  # infeasible: no routing meets the floor, the SLO and capacity
        return -np.inf
    if solution.status != 0:
        return None
    # HiGHS solves to a tolerance: lift the bound by it so it stays a bound.
    return float(-solution.fun / n.sum()) + _LP_TOL * max(1.0, abs(float(solution.fun / n.sum())))


def _floor_and_capacity_rows(
    problem: Problem, full: np.ndarray, size: np.ndarray, floor: np.ndarray | None, width: int, queues: bool
) -> tuple[list[np.ndarray], list[float]]:
    """The linear program's ≤ rows over the routing x (C·M, then the SLO's y where ``width`` has room):
    each category's shortfall under the quality floor, then, with steady-state ``queues``, the capacity."""
    n = problem.counts
    c, m = n.size, full.size
    nx = c * m
    rows, bounds_ub = [], []
    if floor is not None:
        for k in range(c):
            row = np.zeros(width)
            row[k * m : (k + 1) * m] = floor[k]
            rows.append(row)
            bounds_ub.append(problem.max_shortfall * n[k])
    if queues:  # stability: Σ_m λ_m S_m / b_m ≤ R
        row = np.zeros(width)
        row[:nx] = np.tile(full / size, c)
        rows.append(row)
        bounds_ub.append(problem.budget)
    return rows, bounds_ub


def _slo_rows(
    problem: Problem, full: np.ndarray, size: np.ndarray, width: int, queues: bool
) -> tuple[list[np.ndarray], list[float]]:
    """The linear program's ≤ rows over the requests y that meet the SLO (after x): y ≤ x; without
    steady-state ``queues`` (one window), at most b_m·SLO·r_m / S_m of them on model m; and the
    attainment, overall or per category."""
    slo = problem.slo
    n = problem.counts
    c, m = n.size, full.size
    nx = c * m
    rows, bounds_ub = [], []
    for k in range(nx):  # y ≤ x
        row = np.zeros(width)
        row[nx + k], row[k] = 1.0, -1.0
        rows.append(row)
        bounds_ub.append(0.0)
    if not queues:  # one window: at most b_m·SLO·r_m / S_m requests on m finish within the SLO
        row = np.zeros(width)
        row[nx:] = np.tile(full / (size * slo.seconds), c)
        rows.append(row)
        bounds_ub.append(problem.budget)
    if slo.scope == "overall":
        row = np.zeros(width)
        row[nx:] = -1.0
        rows.append(row)
        bounds_ub.append(-slo.attainment * float(n.sum()))
    else:
        for k in range(c):
            row = np.zeros(width)
            row[nx + k * m : nx + (k + 1) * m] = -1.0
            rows.append(row)
            bounds_ub.append(-slo.attainment * n[k])
    return rows, bounds_ub


# Relative tolerance added to a linear-program bound (HiGHS' default optimality tolerance is 1e-7).
_LP_TOL = 1e-6
