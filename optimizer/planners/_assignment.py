r"""Model assignment rules: which model serves which prompt category, with what probability.

* :func:`probabilistic_assignment` — the rule of Gao et al. (arXiv 2409.09072):
  from each category's fitted CLIPScore Gaussians, route a category-c request to
  model m with the probability that m's score is the highest,

  .. math:: p_{cm} = \int \phi\!\left(\tfrac{x-\mu_{mc}}{\sigma_{mc}}\right)\tfrac{1}{\sigma_{mc}}
            \prod_{j \ne m} \Phi\!\left(\tfrac{x-\mu_{jc}}{\sigma_{jc}}\right) dx,

  so categories where a cheap model scores nearly as well share their load with
  it, and categories where one model clearly wins go to that model.
* :func:`direct_assignment` — each category to the model with the highest mean.
* :func:`uniform_assignment` — each request to a uniformly random model.
* :func:`price_directed_assignment` — genedge's rule: the routing that maximizes
  utility for fixed steps, solved exactly on a convex relaxation of the delay.
* :func:`polish_requests` — a local search on the exact (unrelaxed) utility.
* :func:`frontier_routings` — every whole-category routing that the price dual can choose:
  the candidates from which delay models without a closed form pick.
* :func:`polish_scored` — the same local search on any plan value (open arrivals, SLOs, batching).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from scipy.special import log_ndtr

from genedge.optimizer.model import (
    INFEASIBLE,
    Problem,
    deployed_mask,
    score_plan,
    unconstrained_utility,
    utility_with_optimal_shares,
)

__all__ = [
    "probabilistic_assignment",
    "direct_assignment",
    "uniform_assignment",
    "price_directed_assignment",
    "vertex_bound",
    "relaxed_optimum",
    "polish_requests",
    "frontier_routings",
    "best_scored_routing",
    "frontier_candidates",
    "one_model_routings",
    "polish_starts",
    "polish_scored",
]

# Quadrature for P(best): points over [min μ − 8σ, max μ + 8σ]; the integrand is smooth,
# so this grid puts the error far below the 1e-6 that routing probabilities are reported to.
_QUADRATURE_POINTS = 2001
_TAIL_SIGMAS = 8.0
# Line search of polish_requests: a coarse grid over the movable amount, then a fine one around its best.
_POLISH_GRID = 33
_POLISH_PASSES = 4
# Bisections of the walk from a feasible routing towards a better one that misses the SLO, and how
# many of those (best bound first) are walked at one step vector.
_REPAIR_BISECTIONS = 10
_REPAIRED = 4
# A polish move is taken only if it raises the utility by more than this, relative to it.
_IMPROVEMENT_RTOL = 1e-12
# Relative slack on a category's quality-floor budget ε·n_c, for the round-off of summed moves.
_SHORTFALL_RTOL = 1e-9
_SQRT_2PI = np.sqrt(2 * np.pi)


def probabilistic_assignment(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """P(model m gives the highest CLIPScore) per category, the paper's routing.

    Args:
        mean: μ[c, m], shape (C, M).
        std: σ[c, m] > 0, shape (C, M).

    Returns:
        p[c, m], rows summing to 1.
    """
    lo = (mean - _TAIL_SIGMAS * std).min(axis=1, keepdims=True)
    hi = (mean + _TAIL_SIGMAS * std).max(axis=1, keepdims=True)
    x = lo + (hi - lo) * np.linspace(0.0, 1.0, _QUADRATURE_POINTS)[None, :]  # (C, X)
    z = (x[:, :, None] - mean[:, None, :]) / std[:, None, :]  # (C, X, M)
    log_cdf = log_ndtr(z)
    others = log_cdf.sum(axis=2, keepdims=True) - log_cdf
    integrand = np.exp(-(z**2) / 2) / (_SQRT_2PI * std[:, None, :]) * np.exp(others)
    p = np.trapezoid(integrand, x[:, :, None], axis=1)
    return p / p.sum(axis=1, keepdims=True)


def direct_assignment(mean: np.ndarray) -> np.ndarray:
    """Each category entirely to the model with the highest mean score."""
    p = np.zeros_like(mean)
    p[np.arange(mean.shape[0]), mean.argmax(axis=1)] = 1.0
    return p


def uniform_assignment(n_categories: int, n_models: int) -> np.ndarray:
    """Each request to one of the models uniformly at random."""
    return np.full((n_categories, n_models), 1.0 / n_models)


def price_directed_assignment(
    problem: Problem,
    mean: np.ndarray,
    full_share_s: np.ndarray,
    allowed: np.ndarray,
    shortfall: np.ndarray | None = None,
) -> tuple[np.ndarray | None, float]:
    r"""Utility-maximizing request routing for fixed steps, on a relaxation of the delay.

    With optimal shares the total delay is (Σ_m a_m √(N_m(N_m+1)))² / R with
    a_m = √((o_m + τ_m s_m)/2). Replacing √(N_m(N_m+1)) by its lower bound N_m
    gives a concave problem in the requests x[c, m],

    .. math:: \max_x\; \sum_{c,m} x_{cm}\mu_{cm} - \lambda \Bigl(\sum_m a_m N_m\Bigr)^2,
              \qquad \lambda = \frac{w}{R},

    optionally subject to a quality floor per category,
    Σ_m x_cm F_cm ≤ ε n_c with F_cm = P(score < θ) (DESIGN §3.2's chance constraint).
    Its dual, min over a delay price ν ≥ 0 of
    ν²/(4λ) + Σ_c n_c max_k (μ_ck − ν a_ck), is one-dimensional and piecewise
    quadratic, where k runs over the vertices of each category's feasible routings:
    the single models, and with a floor also the two-model mixes that meet it
    exactly. It is solved exactly by walking the price breakpoints: each category
    takes the vertex with the best quality minus priced delay, and at most the
    categories tied at the optimal price are split.

    Because √(N(N+1)) ≥ N, the returned relaxed value is an upper bound on the
    utility (times N) of every routing at these steps; the routing itself is
    feasible and is evaluated exactly by the caller.

    Args:
        problem: the problem (n, R, w, and ε = ``problem.max_shortfall``).
        mean: μ[c, m] at the chosen steps, shape (C, M).
        full_share_s: o_m + τ_m s_m, shape (M,).
        allowed: models that may receive requests, shape (M,) bool.
        shortfall: F[c, m] = P(score < θ) at these steps, or None for no floor.

    Returns:
        (x, bound): requests x[c, m] (rows summing to n_c) and the relaxed utility,
        an upper bound on U for any routing over the allowed models at these
        steps; ``(None, -inf)`` when some category cannot meet the floor.
    """
    a = np.sqrt(full_share_s / 2)
    value, cost, mix = _routing_vertices(mean, a, allowed, shortfall, problem.max_shortfall)
    if not np.isfinite(value).any(axis=1).all():
        return None, -np.inf
    weights = _solve_price_dual(value, cost, problem.counts, problem.weight / problem.budget)
    x = problem.counts[:, None] * np.einsum("ck,ckm->cm", weights, mix)
    lam = problem.weight / problem.budget
    bound = ((x * mean).sum() - lam * ((a * x.sum(axis=0)).sum()) ** 2) / problem.n_requests
    return x, float(bound)


def vertex_bound(
    problem: Problem,
    mean: np.ndarray,
    full_share_s: np.ndarray,
    allowed: np.ndarray,
    shortfall: np.ndarray | None = None,
    max_vertices: int = 20_000,
    *,
    delay_root: Callable[[np.ndarray], np.ndarray] | None = None,
) -> float | None:
    r"""An upper bound on the utility of every routing at fixed steps that keeps the exact delay.

        With h(x) = Σ_m a_m √(N_m(N_m+1)), the utility times N is Q(x) − λ h(x)², and
        −λh² = min_ν (ν²/(4λ) − ν h) for h ≥ 0. For a fixed price ν, Q − ν h is convex
        in the routing (h is concave), so its maximum over the routing polytope sits
        at a vertex: a choice of one vertex of :func:`price_directed_assignment`'s
        per-category set for every category. Hence

        .. math:: N U \le \min_{
    u \ge 0} \Bigl[rac{
    u^2}{4\lambda} + \max_j (Q_j -
    u h_j)\Bigr]

        over the joint vertices j, solved exactly like the price dual. It is exact
        whenever the best routing is a vertex (whole categories on single models, or
        the floor's two-model mixes) and complements the relaxed bound elsewhere.

        The same holds for any concave h = Σ_m a_m g(N_m) with g concave: ``delay_root`` gives
        g (default √(N(N+1)), the window's FIFO delay with a_m = √((o_m + τ_m s_m)/2)); callers
        with another delay lower bound pass its a_m as ``full_share_s`` scaled to match.

        Returns:
            The bound on U, or None where the joint vertices outnumber ``max_vertices``.
    """
    root = (lambda n: np.sqrt(n * (n + 1))) if delay_root is None else delay_root
    a = np.sqrt(full_share_s / 2)
    value, _, mix = _routing_vertices(mean, a, allowed, shortfall, problem.max_shortfall)
    options = [np.flatnonzero(np.isfinite(row)) for row in value]
    if any(o.size == 0 for o in options):
        return -np.inf
    if np.prod([o.size for o in options], dtype=float) > max_vertices:
        return None
    choice = np.array(list(itertools.product(*options)))  # (J, C): one vertex per category
    requests = problem.counts[None, :, None] * mix[np.arange(mean.shape[0])[None, :], choice]  # (J, C, M)
    loads = requests.sum(axis=1)
    quality = (requests * mean[None]).sum(axis=(1, 2))
    delay_root = (a * root(loads)).sum(axis=1)
    lam = problem.weight / problem.budget
    if lam == 0:
        return float(quality.max() / problem.n_requests)
    # Only vertices on the (high quality, low delay) frontier can attain the max: sorted by
    # quality, best first, a vertex is on it when its delay is below every better vertex's.
    order = np.lexsort((delay_root, -quality))
    quality, delay_root = quality[order], delay_root[order]
    frontier = delay_root < np.minimum.accumulate(np.concatenate([[np.inf], delay_root[:-1]]))
    quality, delay_root = quality[frontier], delay_root[frontier]
    return relaxed_optimum(quality[None, :], delay_root[None, :], np.ones(1), lam) / problem.n_requests


def relaxed_optimum(value: np.ndarray, cost: np.ndarray, counts: np.ndarray, lam: float) -> float:
    r"""The optimum of max Σ_c n_c Σ_k w_ck value_ck − λ (Σ_c n_c Σ_k w_ck cost_ck)² over weight rows on the simplex.

    This is the relaxed planning problem every price dual here solves: ``value`` is each
    vertex's quality (points), ``cost`` its delay coefficient, shapes (C, K).
    """
    weights = _solve_price_dual(value, cost, counts, lam)
    load = counts[:, None] * weights
    return float((load * value).sum() - lam * (load * cost).sum() ** 2)


def _routing_vertices(
    mean: np.ndarray, a: np.ndarray, allowed: np.ndarray, shortfall: np.ndarray | None, max_shortfall: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices of each category's feasible routings: quality, delay cost and model mix.

    Returns (value, cost, mix) of shapes (C, K), (C, K), (C, K, M); a vertex that
    does not exist for a category has value −inf.
    """
    c, m = mean.shape
    eye = np.broadcast_to(np.eye(m), (c, m, m))
    if shortfall is None:
        return np.where(allowed[None, :], mean, -np.inf), np.broadcast_to(a, (c, m)), eye
    single = np.where(allowed[None, :] & (shortfall <= max_shortfall), mean, -np.inf)
    i, j = np.triu_indices(m, k=1)
    keep = allowed[i] & allowed[j]
    i, j = i[keep], j[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = (max_shortfall - shortfall[:, i]) / (shortfall[:, j] - shortfall[:, i])  # weight on j
    # A mix is a vertex only when the floor binds between one model above it and one below.
    exists = (theta > 0) & (theta < 1)
    theta = np.where(exists, theta, 0.0)
    pair_value = np.where(exists, (1 - theta) * mean[:, i] + theta * mean[:, j], -np.inf)
    pair_cost = (1 - theta) * a[i] + theta * a[j]
    pair_mix = (1 - theta)[:, :, None] * np.eye(m)[i][None] + theta[:, :, None] * np.eye(m)[j][None]
    return (
        np.concatenate([single, pair_value], axis=1),
        np.concatenate([np.broadcast_to(a, (c, m)), pair_cost], axis=1),
        np.concatenate([eye, pair_mix], axis=1),
    )


def _price_segments(value: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The delay prices ν ≥ 0 where some category's best vertex changes (breakpoints t, from 0), and one
    price inside each segment between them (the last one past the final breakpoint)."""
    i, j = np.triu_indices(value.shape[1], k=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossings = (value[:, i] - value[:, j]) / (cost[:, i] - cost[:, j])
    crossings = crossings[np.isfinite(crossings) & (crossings > 0)]
    t = np.unique(np.concatenate([[0.0], crossings]))
    return t, np.append((t[:-1] + t[1:]) / 2, t[-1] + 1.0)


def _solve_price_dual(value: np.ndarray, cost: np.ndarray, n: np.ndarray, lam: float) -> np.ndarray:
    """Solve the one-dimensional price dual; return each category's weights over its vertices, shape (C, K)."""
    categories = np.arange(value.shape[0])
    weights = np.zeros_like(value)
    if lam == 0:
        weights[categories, value.argmax(axis=1)] = 1.0
        return weights
    # A vertex that another beats on quality and delay cost never wins at any price ν ≥ 0:
    # dropping it leaves the solution unchanged and shrinks the breakpoints to walk.
    better = value[:, None, :] >= value[:, :, None]
    cheaper = cost[:, None, :] <= cost[:, :, None]
    strictly = (value[:, None, :] > value[:, :, None]) | (cost[:, None, :] < cost[:, :, None])
    value = np.where((better & cheaper & strictly).any(axis=2), -np.inf, value)
    t, probes = _price_segments(value, cost)
    choice = (value[None, :, :] - probes[:, None, None] * cost[None, :, :]).argmax(axis=2)  # (segments, C)
    slope = (n[None, :] * cost[categories[None, :], choice]).sum(axis=1)  # S = Σ_c n_c cost of its choice
    right = np.append(t[1:], np.inf)
    k = int(np.argmax(right / (2 * lam) - slope >= 0))  # first segment whose right end has h(ν) ≥ 0
    weights[categories, choice[k]] = 1.0
    if t[k] / (2 * lam) > slope[k] and k > 0:
        # The optimal price sits on breakpoint t[k]: move tied categories towards the
        # previous segment's (slower, better) vertices until Σ cost·n reaches ν*/(2λ).
        need = t[k] / (2 * lam) - slope[k]
        for c in np.flatnonzero(choice[k] != choice[k - 1]):
            old, new = choice[k, c], choice[k - 1, c]
            gain = n[c] * (cost[c, new] - cost[c, old])
            if need <= 0 or gain <= 0:
                continue
            theta = min(1.0, need / gain)
            weights[c, old] -= theta
            weights[c, new] += theta
            need -= theta * gain
    return weights


def polish_requests(
    problem: Problem,
    requests: np.ndarray,
    mean: np.ndarray,
    full_share_s: np.ndarray,
    allowed: np.ndarray,
    shortfall: np.ndarray | None = None,
) -> tuple[np.ndarray, float, int]:
    """Improve a routing on the exact utility.

    Two kinds of move, repeated until neither helps:

    * pairwise: for each category and ordered pair of models in use (i, j), the
      amount of category-c requests moved from i to j, searched on a coarse grid
      and then a fine one around its best;
    * retire: close one model and re-route its requests by
      :func:`price_directed_assignment` over the others. At small loads a model
      with few requests costs more delay than its quality is worth, and no single
      pairwise move can empty a model that serves several categories.

    With a quality floor (``shortfall`` = F[c, m] = P(score < θ)), moves that would
    break Σ_m x_cm F_cm ≤ ε n_c are not taken.

    Returns:
        (requests, utility, evaluations).
    """
    x = requests.copy()
    best = float(utility_with_optimal_shares(problem, x, full_share_s, mean))
    nfev = 1
    while True:
        x, best, evaluations = _pairwise_moves(problem, x, best, mean, full_share_s, shortfall)
        nfev += evaluations
        retired = None
        in_use = deployed_mask(x.sum(axis=0))
        for i in np.flatnonzero(in_use):
            remaining = allowed & in_use
            remaining[i] = False
            if not remaining.any():
                continue
            candidate, _ = price_directed_assignment(problem, mean, full_share_s, remaining, shortfall)
            if candidate is None:
                continue
            u = float(utility_with_optimal_shares(problem, candidate, full_share_s, mean))
            nfev += 1
            if u > best + _IMPROVEMENT_RTOL * max(1.0, abs(best)):
                best, retired = u, candidate
        if retired is None:
            return x, best, nfev
        x = retired


def _pairwise_moves(
    problem: Problem,
    x: np.ndarray,
    best: float,
    mean: np.ndarray,
    full_share_s: np.ndarray,
    shortfall: np.ndarray | None,
) -> tuple[np.ndarray, float, int]:
    """Pairwise request moves between models in use (see :func:`polish_requests`)."""
    nfev = 0
    fractions = np.linspace(0.0, 1.0, _POLISH_GRID)
    for _ in range(_POLISH_PASSES):
        improved = False
        cols = np.flatnonzero(deployed_mask(x.sum(axis=0)))
        for c in range(x.shape[0]):
            for i in cols:
                for j in cols:
                    if i == j or x[c, i] <= 0:
                        continue
                    lo, hi = 0.0, x[c, i]
                    for _refine in range(2):
                        amounts = lo + (hi - lo) * fractions
                        batch = np.repeat(x[None], amounts.size, axis=0)
                        batch[:, c, i] -= amounts
                        batch[:, c, j] += amounts
                        u = utility_with_optimal_shares(problem, batch, full_share_s, mean)
                        if shortfall is not None:
                            risk = (batch[:, c, :] * shortfall[c]).sum(axis=1)
                            u = np.where(
                                risk <= problem.max_shortfall * problem.counts[c] * (1 + _SHORTFALL_RTOL), u, -np.inf
                            )
                        nfev += amounts.size
                        b = int(u.argmax())
                        step = (hi - lo) / (_POLISH_GRID - 1)
                        lo, hi = max(0.0, amounts[b] - step), min(x[c, i], amounts[b] + step)
                    if u[b] > best + _IMPROVEMENT_RTOL * max(1.0, abs(best)):
                        best = float(u[b])
                        x = np.maximum(batch[b], 0.0)
                        improved = True
        if not improved:
            break
    return x, best, nfev


def frontier_routings(
    problem: Problem,
    mean: np.ndarray,
    full_share_s: np.ndarray,
    allowed: np.ndarray,
    shortfall: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Every routing the price dual of :func:`price_directed_assignment` picks at some delay price.

    Walking the price ν from 0 (each category on its best model) upwards, each category moves
    to faster models as delay grows dearer; each segment between breakpoints is one routing of
    whole categories (or of the floor's two-model mixes). Where the delay has no closed form
    (open arrivals, an SLO, batching) these are the candidates a planner scores exactly.

    Returns:
        Requests x[c, m] per routing, from the best quality to the least delay.
    """
    a = np.sqrt(full_share_s / 2)
    value, cost, mix = _routing_vertices(mean, a, allowed, shortfall, problem.max_shortfall)
    if not np.isfinite(value).any(axis=1).all():
        return []
    _t, probes = _price_segments(value, cost)
    probes = np.concatenate([[0.0], probes])
    # Ties at ν = 0 go to the cheaper vertex, as any positive price would.
    scores = value[None, :, :] - probes[:, None, None] * cost[None, :, :] - 1e-12 * cost[None, :, :]
    choices = np.unique(scores.argmax(axis=2), axis=0)
    categories = np.arange(value.shape[0])
    return [problem.counts[:, None] * mix[categories, choice] for choice in choices]


def frontier_candidates(
    problem: Problem,
    steps: tuple[int, ...],
    allowed: np.ndarray,
    floor: np.ndarray | None,
    batch_index: tuple[int, ...] | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """The routings a planner scores at these steps, each with an upper bound on its value.

    The routings are :func:`frontier_routings`, the price-directed one and, as the window model's
    search weighs them too, every request on one allowed model that meets the floor alone (under an
    SLO or a light load that can beat any split, and the price walk need not pass it). Each one's
    bound is its utility at the delay-optimal shares ignoring the SLO
    (:func:`~genedge.optimizer.model.unconstrained_utility`), which no shares can beat.
    """
    value, full = problem.value_at(steps), problem.service_at(steps)
    candidates = frontier_routings(problem, value, full, allowed, floor)
    x, _bound = price_directed_assignment(problem, value, full, allowed, floor)
    for routing in ([] if x is None else [x]) + one_model_routings(problem, allowed, floor):
        if not any(np.allclose(routing, other) for other in candidates):
            candidates.append(routing)
    bounds = np.array([unconstrained_utility(problem, requests, steps, batch_index) for requests in candidates])
    return candidates, bounds


def one_model_routings(problem: Problem, allowed: np.ndarray, floor: np.ndarray | None) -> list[np.ndarray]:
    """Every request on one allowed model, for each model that meets the quality floor alone."""
    models = np.flatnonzero(allowed)
    if floor is not None:
        models = models[(floor[:, models] <= problem.max_shortfall).all(axis=0)]
    routings = []
    for m in models:
        x = np.zeros((problem.counts.size, allowed.size))
        x[:, m] = problem.counts
        routings.append(x)
    return routings


def best_scored_routing(
    problem: Problem,
    steps: tuple[int, ...],
    allowed: np.ndarray,
    floor: np.ndarray | None,
    batch_index: tuple[int, ...] | None = None,
    candidates: tuple[list[np.ndarray], np.ndarray] | None = None,
) -> tuple[float, np.ndarray | None]:
    """The best of :func:`frontier_candidates` at these steps, by the exact objective.

    Candidates are scored best bound first, and the search stops once no bound beats the best
    feasible value (without an SLO the bound is the value, so one scoring suffices).

    Returns:
        (value, requests x[c, m]) by :func:`~genedge.optimizer.model.score_plan`; (−inf, None)
        where no routing meets the quality floor.
    """
    routings, bounds = (
        frontier_candidates(problem, steps, allowed, floor, batch_index) if candidates is None else (candidates)
    )
    best: tuple[float, np.ndarray | None] = (-np.inf, None)
    missed = []  # candidates that could beat the best but miss the SLO or a queue's stability
    for k in np.argsort(-bounds, kind="stable"):
        if best[0] > INFEASIBLE and bounds[k] <= best[0]:
            break
        scored = score_plan(problem, routings[k], steps, batch_index=batch_index).value
        if scored > best[0]:
            best = (scored, routings[k])
        if scored <= INFEASIBLE:
            missed.append(k)
    if best[0] <= INFEASIBLE:
        return best
    # A binding SLO puts the best plan between whole categories: walk from the best feasible routing
    # towards each better one that misses, to the last point that still meets the SLO.
    anchor = best[1]
    for k in missed[:_REPAIRED]:
        if bounds[k] <= best[0]:
            continue
        found = _repair(problem, steps, batch_index, anchor, routings[k])
        if found is not None and found[0] > best[0]:
            best = found
    return best


def _repair(
    problem: Problem,
    steps: tuple[int, ...],
    batch_index: tuple[int, ...] | None,
    feasible: np.ndarray,
    missing: np.ndarray,
) -> tuple[float, np.ndarray] | None:
    """The routing on the segment from ``feasible`` to ``missing`` farthest along that is still feasible."""
    lo, hi, found = 0.0, 1.0, None
    for _ in range(_REPAIR_BISECTIONS):
        mid = (lo + hi) / 2
        x = (1 - mid) * feasible + mid * missing
        value = score_plan(problem, x, steps, batch_index=batch_index).value
        if value > INFEASIBLE:
            lo, found = mid, (value, x)
        else:
            hi = mid
    return found


def polish_starts(
    value: float, requests: np.ndarray, candidates: tuple[list[np.ndarray], np.ndarray]
) -> list[np.ndarray]:
    """Where to start :func:`polish_scored` at one step vector: the best routing found, and, where an SLO
    held it back, the candidate with the highest bound.

    A whole-category routing that misses the SLO can be one partial move from a plan better than any
    whole-category routing that meets it; polishing only the feasible one never reaches it.
    """
    routings, bounds = candidates
    leader = int(np.argmax(bounds))
    if bounds[leader] > value and routings[leader] is not requests:
        return [requests, routings[leader]]
    return [requests]


def polish_scored(
    problem: Problem,
    requests: np.ndarray,
    value: Callable[[np.ndarray], float],
    shortfall: np.ndarray | None = None,
    *,
    allowed: np.ndarray | None = None,
    grid: int = 9,
    refinements: int = 2,
    passes: int = 2,
) -> tuple[np.ndarray, float, int]:
    """Improve a routing by pairwise request moves, on any plan value.

    The moves of :func:`polish_requests` (a coarse grid over the amount moved, then ``refinements − 1``
    finer ones around its best), scored one by one with ``value(x)``: for delay models whose shares have no
    closed form. Requests move from a model in use to any allowed model (default: all), so a
    routing that overloads one model can spill onto an idle one. Moves that break a quality floor
    are not taken.

    Returns:
        (requests, value, evaluations).
    """
    x = requests.copy()
    best = value(x)
    nfev = 1
    fractions = np.linspace(0.0, 1.0, grid)
    for _ in range(passes):
        improved = False
        sources = np.flatnonzero(deployed_mask(x.sum(axis=0)))
        targets = np.arange(x.shape[1]) if allowed is None else np.flatnonzero(allowed)
        for c in range(x.shape[0]):
            for i in sources:
                for j in targets:
                    top, top_x, evaluations = _best_move(
                        problem, x, c, i, j, best, value, shortfall, fractions, refinements
                    )
                    nfev += evaluations
                    if top_x is not None and top > best + _IMPROVEMENT_RTOL * max(1.0, abs(best)):
                        best, x, improved = top, top_x, True
        if not improved:
            break
    return x, best, nfev


def _best_move(
    problem: Problem,
    x: np.ndarray,
    c: int,
    i: int,
    j: int,
    best: float,
    value: Callable[[np.ndarray], float],
    shortfall: np.ndarray | None,
    fractions: np.ndarray,
    refinements: int,
) -> tuple[float, np.ndarray | None, int]:
    """The best amount of category ``c``'s requests to move from model ``i`` to model ``j`` (:func:`polish_scored`):
    (its value, the routing after it, or None where no move beats ``best``; the evaluations it took)."""
    if i == j or x[c, i] <= 0:
        return best, None, 0
    grid = fractions.size
    nfev = 0
    lo, hi = 0.0, x[c, i]
    top, top_x = best, None
    for _refine in range(refinements):
        step = (hi - lo) / (grid - 1)
        for amount in lo + (hi - lo) * fractions[1:]:
            trial = x.copy()
            trial[c, i] -= amount
            trial[c, j] += amount
            trial = np.maximum(trial, 0.0)
            if shortfall is not None and (trial[c] * shortfall[c]).sum() > (
                problem.max_shortfall * problem.counts[c] * (1 + _SHORTFALL_RTOL)
            ):
                continue
            v = value(trial)
            nfev += 1
            if v > top:
                top, top_x, center = v, trial, amount
        if top_x is None:
            break
        lo, hi = max(0.0, center - step), min(x[c, i], center + step)
    return top, top_x, nfev
