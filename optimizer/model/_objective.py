r"""What a plan is worth under the problem's objective, and the shares that serve it best.

The objective (DESIGN §3.2) is one family:

.. math:: \max\; U = \frac{1}{N}\sum_{c,m} x_{cm}\bigl(\mu_{cm}(s_m) - \kappa E_m(s_m)\bigr) - w\,\bar D
          \quad\text{s.t.}\quad P(D \le \text{SLO}) \ge \alpha \;\text{(overall or per category)},
          \;\rho_m < 1 \;\text{(open arrivals)},

with the paper's utility at κ = 0 and no SLO, "maximum CLIPScore subject to pXX ≤ SLO" at
w = 0 with α = XX/100, and an SLO-attainment chance constraint beside any w. D̄ is the mean
delay of :mod:`~genedge.optimizer.model._delay` under the problem's delay model.

For fixed routing, steps and batch sizes, :func:`plan_shares` chooses the compute shares:

* no SLO, window model: the closed form r_m ∝ √(S_m c_m) (total delay Σ_m S_m c_m / r_m);
* no SLO, open arrivals: the mean delay Σ_m λ_m E[T_m(r_m)] is convex in each r_m, minimized over a
  grid of shares per model by handing out the budget's increments steepest decrease first;
* with an SLO: the shares that minimize delay, the shares that maximize attainment (a dynamic
  program over a grid of shares, exact on the grid though attainment is not concave in a share),
  and blends of the two; the best that meets the SLO, else the one that misses it least.

:func:`score_plan` returns the value a planner maximizes: the utility where the plan is feasible,
and below every feasible value otherwise, growing as the violation shrinks, so a search can walk
out of infeasibility.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genedge.optimizer.model._delay import DelayModel, deployed_mask
from genedge.optimizer.model._problem import Problem
from genedge.optimizer.model._shares import certified_shares

__all__ = ["INFEASIBLE", "Scored", "choose_batches", "plan_shares", "score_plan", "unconstrained_utility"]

#: Every infeasible plan scores at most this; a feasible utility is a few dozen points.
INFEASIBLE = -1e6
# Shares per model on the delay-minimizing grid, spaced quadratically from the stability edge,
# where the mean delay changes fastest.
_DELAY_GRID = 256
# Units of the budget in the attainment dynamic program.
_ATTAINMENT_UNITS = 100
# Blends of the delay-optimal and the attainment-optimal shares tried under an SLO.
_BLENDS = (0.25, 0.5, 0.75)
# Rounds of re-weighting the categories that miss a per-category SLO.
_CATEGORY_ROUNDS = 4
# Share curves kept per process: a plan's search revisits the same loads at many step vectors.
_CURVE_CACHE = 4096


@dataclass(frozen=True)
class Scored:
    """A plan's worth under the objective.

    Attributes:
        value: the utility where feasible; otherwise ``INFEASIBLE · (1 + violation)``.
        utility: quality − w·mean delay − κ·energy (points); −inf when a queue is unstable.
        feasible: stable, and meets the SLO where there is one.
        violation: 0 when feasible; else how far from it (instability counts 1 plus the excess load).
        shares: the compute shares used, shape (M,).
        batch_index: the batch size index per model.
    """

    value: float
    utility: float
    feasible: bool
    violation: float
    shares: np.ndarray
    batch_index: tuple[int, ...]


def choose_batches(problem: Problem, requests: np.ndarray, step_index: Sequence[int]) -> tuple[int, ...]:
    """A batch size per model for a routing and steps: each model's, independently.

    The b minimizing the model's mean delay at a share proportional to its load (among the stable
    ones where its queue can be unstable). In a window that is the b minimizing S_m(b)·c_m(b), its
    total delay per unit share, which with the closed-form shares minimizes the mean delay exactly.
    """
    if problem.batch_sizes is None:
        return problem.base_batch_index
    loads = requests.sum(axis=0)
    base = problem.call_service_at(step_index, problem.base_batch_index)
    share = problem.budget * loads * base / max(float((loads * base).sum()), 1e-300)
    chosen = []
    for m, sizes in enumerate(problem.batch_sizes):
        if not deployed_mask(loads[m]) or sizes.size == 1:
            chosen.append(0)
            continue
        seconds = problem.batch_service_s[m][:, step_index[m]]
        cost = [
            float(problem.delay.model_mean(requests, m, seconds[i] / share[m], int(sizes[i])))
            for i in range(sizes.size)
        ]
        chosen.append(int(np.argmin(cost)))
    return tuple(chosen)


def plan_shares(
    problem: Problem, requests: np.ndarray, step_index: Sequence[int], batch_index: Sequence[int]
) -> np.ndarray:
    """Compute shares for a routing, steps and batch sizes under the problem's objective (module doc)."""
    loads = requests.sum(axis=0)
    used = deployed_mask(loads)
    full = problem.call_service_at(step_index, batch_index)
    batch = problem.max_batch_at(batch_index)
    delay_shares = _delay_shares(problem, requests, full, batch)
    if problem.slo is None:
        return delay_shares
    # The delay-optimal shares are the best there are wherever they meet the SLO.
    best = _score(problem, requests, tuple(step_index), tuple(batch_index), delay_shares)
    if best.feasible:
        return delay_shares
    weights = loads.copy()
    for _round in range(_CATEGORY_ROUNDS if problem.slo.scope == "category" else 1):
        attainment_shares = _attainment_shares(problem, requests, full, batch, weights)
        if not np.isfinite(attainment_shares).all():
            break
        # From the delay-optimal end towards the attainment-optimal one: the first that meets the
        # SLO gives up the least delay; otherwise keep the one that misses it least.
        for t in (*_BLENDS, 1.0):
            shares = (1 - t) * delay_shares + t * attainment_shares
            scored = _score(problem, requests, tuple(step_index), tuple(batch_index), shares)
            if scored.feasible:
                return shares
            if scored.violation < best.violation:
                best = scored
        if problem.slo.scope != "category":
            break
        # Weigh up the categories that miss their SLO, so the next round's shares serve them first.
        call = full / np.where(used, best.shares, 1.0)
        chance = problem.delay.attainment_matrix(requests, call, batch, problem.slo.seconds)
        category = (requests * chance).sum(axis=1) / requests.sum(axis=1)
        missing = np.clip(problem.slo.attainment - category, 0.0, None)
        weights = weights + (requests * (missing / np.maximum(missing.max(), 1e-12))[:, None]).sum(axis=0) * 4
    return best.shares


def score_plan(
    problem: Problem,
    requests: np.ndarray,
    step_index: Sequence[int],
    *,
    batch_index: Sequence[int] | None = None,
    shares: np.ndarray | None = None,
    certify: bool = False,
) -> Scored:
    """Score a routing (as expected requests x[c, m]) at the given steps.

    Args:
        problem: the problem.
        requests: x[c, m], rows summing to n_c, shape (C, M).
        step_index: index into each model's step grid.
        batch_index: index into each model's batch sizes (default: :func:`choose_batches`).
        shares: compute shares (default: :func:`plan_shares`).
        certify: refine :func:`plan_shares`' shares to within
            :data:`~genedge.optimizer.model._shares.SHARE_TOL` points of the best ones
            (:func:`~genedge.optimizer.model._shares.certified_shares`): for the plan a planner returns.
    """
    step_index = tuple(int(k) for k in step_index)
    batch_index = choose_batches(problem, requests, step_index) if batch_index is None else tuple(batch_index)
    if shares is None:
        shares = plan_shares(problem, requests, step_index, batch_index)
        if certify:
            return _certified(problem, requests, step_index, batch_index, shares)
    return _score(problem, requests, step_index, batch_index, np.asarray(shares, dtype=float))


def _certified(
    problem: Problem, requests: np.ndarray, step_index: tuple[int, ...], batch_index: tuple[int, ...], quick: np.ndarray
) -> Scored:
    """The score at the certified shares, or at the quick ones where the certified search found nothing better."""
    full = problem.call_service_at(step_index, batch_index)
    batch = problem.max_batch_at(batch_index)
    delay = _delay_shares(problem, requests, full, batch)
    found = certified_shares(problem, requests, full, batch, start=quick, delay=delay)
    fast = _score(problem, requests, step_index, batch_index, quick)
    refined = _score(problem, requests, step_index, batch_index, found.shares)
    return refined if refined.value >= fast.value else fast


def unconstrained_utility(
    problem: Problem, requests: np.ndarray, step_index: Sequence[int], batch_index: Sequence[int] | None = None
) -> float:
    """The utility at the delay-optimal shares, ignoring the SLO: an upper bound on :func:`score_plan`'s
    value for this routing (−inf where no shares keep every queue stable)."""
    step_index = tuple(int(k) for k in step_index)
    batch_index = choose_batches(problem, requests, step_index) if batch_index is None else tuple(batch_index)
    full = problem.call_service_at(step_index, batch_index)
    shares = _delay_shares(problem, requests, full, problem.max_batch_at(batch_index))
    return _score(problem, requests, step_index, batch_index, shares, slo=False).utility


def _score(
    problem: Problem,
    requests: np.ndarray,
    step_index: tuple[int, ...],
    batch_index: tuple[int, ...],
    shares: np.ndarray,
    *,
    slo: bool = True,
) -> Scored:
    loads = requests.sum(axis=0)
    used = deployed_mask(loads)
    total = float(loads.sum())
    violation = 0.0
    if (used & (shares <= 0)).any():
        return Scored(INFEASIBLE * 2, -np.inf, False, 1.0, shares, batch_index)
    full = problem.call_service_at(step_index, batch_index)
    batch = problem.max_batch_at(batch_index)
    call = np.where(used, full / np.where(used, shares, 1.0), np.inf)
    value_term = float((requests * problem.value_at(step_index)).sum()) / total
    mass = problem.delay.mass(requests, call, batch)
    rho = problem.delay.utilization(loads, call, batch)
    if rho is not None:
        excess = np.clip(rho[used] - 1 + 1e-12, 0.0, None)
        if (excess > 0).any():
            violation += 1.0 + float(excess.sum())
    utility = value_term - problem.weight * float(mass.sum()) / total if violation == 0 else -np.inf
    if slo and problem.slo is not None and violation == 0:
        chance = problem.delay.attainment_matrix(requests, call, batch, problem.slo.seconds)
        if problem.slo.scope == "overall":
            attained = np.array([float((requests * chance).sum()) / total])
        else:
            attained = (requests * chance).sum(axis=1) / requests.sum(axis=1)
        violation += float(np.clip(problem.slo.attainment - attained, 0.0, None).sum())
    feasible = violation == 0
    value = utility if feasible else INFEASIBLE * (1 + violation)
    return Scored(value, utility, feasible, violation, shares, batch_index)


def _delay_shares(problem: Problem, requests: np.ndarray, full: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Shares minimizing the mean delay (module doc); 0 for models without requests."""
    loads = requests.sum(axis=0)
    used = deployed_mask(loads)
    coefficient = problem.delay.share_coefficient(requests, batch)
    if coefficient is not None:  # the delay mass is c_m S_m / r_m: the closed form
        root = np.where(used, np.sqrt(full * coefficient), 0.0)
        return problem.budget * root / root.sum()
    # A queue: per model, a grid of shares above its stability edge λ S / b, and the delay mass on each.
    edge = np.where(used, loads * full / batch, 0.0)
    if edge.sum() >= problem.budget:
        # No split of the budget keeps every queue stable: hand out shares by load, so the
        # scorer reports how far from stable the plan is.
        return problem.budget * edge / edge.sum()
    idx = np.flatnonzero(used)
    spare = problem.budget - edge[idx].sum()  # no model can hold more than its edge plus all the spare
    grid, cost = np.empty((idx.size, _DELAY_GRID)), np.empty((idx.size, _DELAY_GRID))
    for row, m in enumerate(idx):
        column = requests[:, m].tobytes()
        top = float(edge[m] + spare)
        grid[row], cost[row] = _delay_curve(
            problem.delay, column, m, len(problem.models), float(full[m]), int(batch[m]), top
        )
    # The delay mass is convex in each share: hand out the budget in the grid's increments, steepest
    # decrease first (within a model the increments come in order, so each model gets a prefix).
    width = np.diff(grid, axis=1)
    slope = np.diff(cost, axis=1) / width
    order = np.argsort(slope, axis=None, kind="stable")
    rows = order // width.shape[1]
    steps = width.ravel()[order]
    room = problem.budget - grid[:, 0].sum()
    taken = np.cumsum(steps) <= room
    shares = np.zeros(len(problem.models))
    shares[idx] = grid[:, 0] + np.bincount(rows[taken], weights=steps[taken], minlength=idx.size)
    if not taken.all():  # the next increment, in part
        shares[idx[rows[~taken][0]]] += room - steps[taken].sum()
    return shares


def _attainment_shares(
    problem: Problem, requests: np.ndarray, full: np.ndarray, batch: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Shares maximizing Σ_m weight_m · P(delay ≤ SLO on m), by dynamic programming over budget units."""
    loads = requests.sum(axis=0)
    idx = np.flatnonzero(deployed_mask(loads))
    units = np.arange(_ATTAINMENT_UNITS + 1)
    share = problem.budget * units / _ATTAINMENT_UNITS
    gain = np.zeros((idx.size, units.size))
    for row, m in enumerate(idx):
        curve = _attainment_curve(problem, requests[:, m].tobytes(), m, float(full[m]), int(batch[m]))
        gain[row] = weights[m] * curve
        gain[row, 0] = -np.inf  # a model with requests needs a share
    # best[u]: the most weighted attainment of the models so far with u units; choice[row, u]: units of that model.
    best = np.zeros(units.size)
    choice = np.zeros((idx.size, units.size), dtype=int)
    for row in range(idx.size):
        # total[u, v] = best[u − v] + gain[row, v] for v ≤ u.
        shifted = np.full((units.size, units.size), -np.inf)
        for v in units:
            shifted[v:, v] = best[: units.size - v] + gain[row, v]
        choice[row] = np.argmax(shifted, axis=1)
        best = shifted[units, choice[row]]
    shares = np.zeros(len(problem.models))
    left = int(np.argmax(best))
    for row in range(idx.size - 1, -1, -1):
        v = choice[row, left]
        shares[idx[row]] = share[v]
        left -= v
    if not np.isfinite(best.max()) or shares[idx].min() <= 0:
        return np.full(len(problem.models), np.nan)
    return shares * problem.budget / shares.sum()


@functools.lru_cache(maxsize=_CURVE_CACHE)
def _attainment_curve(problem: Problem, column: bytes, model: int, full: float, batch: int) -> np.ndarray:
    """P(delay ≤ SLO) of a request on ``model`` at each share of the dynamic program's grid.

    Cached: it depends on the model's requests per category (``column``, as bytes), its call time at
    full share and its batch size alone, and the planners score the same loads at many step vectors.
    """
    share = problem.budget * np.arange(1, _ATTAINMENT_UNITS + 1) / _ATTAINMENT_UNITS
    out = np.zeros(_ATTAINMENT_UNITS + 1)
    requests = _one_column(column, model, len(problem.models))
    out[1:] = problem.delay.model_within(requests, model, full / share, batch, problem.slo.seconds)
    return out


@functools.lru_cache(maxsize=_CURVE_CACHE)
def _delay_curve(
    delay: DelayModel, column: bytes, model: int, n_models: int, full: float, batch: int, top: float
) -> tuple[np.ndarray, np.ndarray]:
    """Shares from the stability edge λ S / b up to ``top`` and the delay mass λ·E[T] at each.

    Cached across problems (delay models are equal by value): ``column`` is the model's requests per
    category, as bytes.
    """
    requests = _one_column(column, model, n_models)
    load = float(requests[:, model].sum())
    edge = load * full / batch
    grid = edge + (top - edge) * (np.arange(1, _DELAY_GRID + 1) / _DELAY_GRID) ** 2
    return grid, load * delay.model_mean(requests, model, full / grid, batch)


def _one_column(column: bytes, model: int, n_models: int) -> np.ndarray:
    """Requests x[c, m] with ``column`` (bytes of floats) on ``model`` and none elsewhere."""
    values = np.frombuffer(column)
    requests = np.zeros((values.size, n_models))
    requests[:, model] = values
    return requests
