r"""Compute shares to a stated tolerance: the delay-optimal ones, and the best ones under an SLO.

A planner's search ranks many routings with the quick share rules of
:mod:`~genedge.optimizer.model._objective` (a grid of shares per model, a dynamic program over
budget units). The plan it returns gets its shares from here, within :data:`SHARE_TOL` points of
utility of the best shares for its routing, steps and batch sizes, and the search proves it:

* **Delay-optimal shares** minimize the delay mass F(r) = Σ_m f_m(r_m) over Σ_m r_m = R, each f_m
  convex and decreasing (λ_m E[T_m] of a queue, c_m S_m / r_m in a window). Each round hands out
  the budget, steepest decrease first, over a grid of each model's bracket (the optimum of the
  piecewise-linear interpolation), then narrows the brackets around that point. It stops when
  the subgradient bound certifies it: for g_m ∈ ∂f_m(r_m), bracketed by chords on either side,

  .. math:: F(r) - F^* \le \bigl(\max_m g_m - \min_m g_m\bigr)\,\bigl(R - \textstyle\sum_m e_m\bigr),

  with e_m the least share a model can hold (its stability edge λ_m S_m / b_m under open arrivals).
* **Under an SLO**, where the delay-optimal shares miss it, branch and bound over the shares:
  boxes of the first M − 1 deployed models' shares (the last takes the rest). Every f_m decreases
  and every model's chance P(delay ≤ SLO) increases with its share, so a box's upper corner gives
  a lower bound on its delay mass and an upper bound on its attainment; a box is dropped when it
  cannot meet the SLO or cannot beat the best feasible shares found (its centre is tried) by more
  than the tolerance, else split along its widest side. When no box is left, the best shares
  found are within the tolerance of the optimum, or no shares meet the SLO. Without a delay
  weight every feasible share vector is optimal, and the search stops at the first.

Both searches are capped (:data:`_ROUNDS`, :data:`_MAX_BOXES`); a search that reaches its cap keeps
the better of its start and what it found, and says it is not certified.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genedge.optimizer.model._delay import deployed_mask
from genedge.optimizer.model._problem import Problem

__all__ = ["SHARE_TOL", "ShareSearch", "certified_shares"]

#: The shares a plan is returned with are within this many points of utility of the best shares for its routing,
#: steps and batch sizes (certified by the search: :class:`ShareSearch`).
SHARE_TOL = 1e-6
# Grid points per model in each round of the delay-optimal search, and the rounds allowed.
_POINTS = 33
_ROUNDS = 12
# A round's bracket keeps this many grid cells on either side of the point it found.
_BRACKET_CELLS = 2
# Chords that bracket a subgradient span this fraction of the budget.
_CHORD = 1e-7
# Boxes the SLO search may evaluate before it gives up its certificate.
_MAX_BOXES = 60_000


@dataclass(frozen=True)
class ShareSearch:
    """Shares found to a tolerance.

    Attributes:
        shares: the compute shares, shape (M,) (0 for models without requests).
        certified: the search proved ``gap`` (False where it reached its cap).
        gap: a proven bound on the utility (points) better shares could add; inf where not certified.
        feasible: the shares meet the SLO (always True without one).
    """

    shares: np.ndarray
    certified: bool
    gap: float
    feasible: bool


class _Curves:
    """Each deployed model's delay mass and SLO chance as functions of its share (vectorized over shares)."""

    def __init__(self, problem: Problem, requests: np.ndarray, full: np.ndarray, batch: np.ndarray) -> None:
        self.problem, self.requests, self.full, self.batch = problem, requests, full, batch
        loads = requests.sum(axis=0)
        self.idx = np.flatnonzero(deployed_mask(loads))
        self.loads = loads[self.idx]
        self.total = float(loads.sum())
        edge = loads * full / batch if problem.delay.steady_state else np.zeros(loads.shape)
        self.edge = edge[self.idx]

    def mass(self, i: int, shares: np.ndarray) -> np.ndarray:
        """Delay mass λ_m E[T_m] (or a window's summed delay) of the i-th deployed model; inf at or below its edge."""
        m = int(self.idx[i])
        shares = np.asarray(shares, dtype=float)
        out = np.full(shares.shape, np.inf)
        live = shares > self.edge[i]
        if live.any():
            mean = self.problem.delay.model_mean(self.requests, m, self.full[m] / shares[live], int(self.batch[m]))
            out[live] = self.loads[i] * np.asarray(mean, dtype=float)
        return out

    def within(self, i: int, shares: np.ndarray) -> np.ndarray:
        """P(delay ≤ SLO) of a request on the i-th deployed model; 0 at or below its edge."""
        m = int(self.idx[i])
        shares = np.asarray(shares, dtype=float)
        out = np.zeros(shares.shape)
        live = shares > self.edge[i]
        if live.any():
            slo = self.problem.slo.seconds
            out[live] = self.problem.delay.model_within(
                self.requests, m, self.full[m] / shares[live], int(self.batch[m]), slo
            )
        return out

    def mass_tolerance(self) -> float:
        """The delay mass worth :data:`SHARE_TOL` points of utility (inf without a delay weight)."""
        weight = self.problem.weight
        return SHARE_TOL * self.total / weight if weight > 0 else np.inf


def certified_shares(
    problem: Problem,
    requests: np.ndarray,
    full: np.ndarray,
    batch: np.ndarray,
    *,
    start: np.ndarray,
    delay: np.ndarray,
) -> ShareSearch:
    """The best shares for a routing (x[c, m]), call times at full share and batch sizes, to :data:`SHARE_TOL`.

    Args:
        start: shares found by a quicker rule; kept where the search cannot prove better ones.
        delay: the quicker rule's delay-optimal shares (exact where the delay model has a closed form).
    """
    curves = _Curves(problem, requests, full, batch)
    shares = np.zeros(len(full))
    if curves.edge.sum() >= problem.budget:  # proven: no split of the budget keeps every queue stable
        shares[curves.idx] = start[curves.idx]
        return ShareSearch(shares, True, 0.0, False)
    if curves.idx.size == 1:
        shares[curves.idx] = problem.budget
        return ShareSearch(shares, True, 0.0, _meets(curves, np.array([problem.budget])))
    if problem.delay.share_coefficient(requests, batch) is not None:  # the closed form is exact
        optimal, certified, gap = delay[curves.idx], True, 0.0
    else:
        optimal, certified, gap = _delay_optimal(curves, problem.budget, delay[curves.idx])
    if problem.slo is None or _meets(curves, optimal):
        shares[curves.idx] = optimal
        return ShareSearch(shares, certified, gap, True)
    if problem.slo.scope == "category" and not problem.delay.chance_per_model:  # the bounds need one per model
        shares[curves.idx] = start[curves.idx]
        return ShareSearch(shares, False, np.inf, _meets(curves, start[curves.idx]))
    found = _slo_search(curves, problem.budget, start[curves.idx])
    shares[curves.idx] = found.shares
    return ShareSearch(shares, found.certified, found.gap, found.feasible)


def _meets(curves: _Curves, shares: np.ndarray) -> bool:
    """Whether the deployed models' ``shares`` meet the SLO (always, without one)."""
    slo = curves.problem.slo
    if slo is None:
        return True
    chance = np.array([float(curves.within(i, shares[[i]])[0]) for i in range(curves.idx.size)])
    return bool((_attainment(curves, chance[None, :]) >= slo.attainment).all())


def _attainment(curves: _Curves, chance: np.ndarray) -> np.ndarray:
    """Attainment per SLO constraint (overall: one; per category: one per category) of share vectors whose
    deployed models' chances are the rows of ``chance``, shape (points, constraints)."""
    columns = curves.requests[:, curves.idx]
    if curves.problem.slo.scope == "overall":
        return (chance @ columns.sum(axis=0) / curves.total)[:, None]
    return chance @ columns.T / curves.requests.sum(axis=1)


# ----------------------------------------------------------------- delay-optimal shares


def _delay_optimal(curves: _Curves, budget: float, start: np.ndarray) -> tuple[np.ndarray, bool, float]:
    """Shares minimizing Σ f_m (module doc): (shares, certified, gap in points)."""
    n = curves.idx.size
    low = curves.edge.copy()
    high = np.minimum(budget - (curves.edge.sum() - curves.edge), budget)
    shares = start.copy()
    tolerance = curves.mass_tolerance()
    bound = np.inf
    for _round in range(_ROUNDS):
        grid = low[:, None] + (high - low)[:, None] * np.linspace(0.0, 1.0, _POINTS)[None, :]
        # The edge itself is unstable: start a hair inside it.
        grid[:, 0] = np.where(grid[:, 0] <= curves.edge, curves.edge + (grid[:, 1] - grid[:, 0]) * 1e-6, grid[:, 0])
        cost = np.array([curves.mass(i, grid[i]) for i in range(n)])
        found = _hand_out(grid, cost, budget)
        if found is not None:
            shares = found
        bound = _subgradient_gap(curves, shares, budget)
        if bound <= tolerance:
            break
        cell = (high - low) / (_POINTS - 1)
        low = np.maximum(shares - _BRACKET_CELLS * cell, curves.edge)
        high = shares + _BRACKET_CELLS * cell
    weight = curves.problem.weight
    gap = bound * weight / curves.total if np.isfinite(bound) else np.inf
    return shares, bool(bound <= tolerance), float(gap)


def _hand_out(grid: np.ndarray, cost: np.ndarray, budget: float) -> np.ndarray | None:
    """Each model starts at its grid's first point and gets the budget's grid increments, steepest decrease
    first (the optimum of the convex piecewise-linear interpolation); None where the grids cannot hold the
    budget (their lower ends exceed it or their upper ends fall short of it)."""
    room = budget - grid[:, 0].sum()
    width = np.diff(grid, axis=1)
    if room < 0 or room > width.sum() or not np.isfinite(cost[:, 1:]).all():
        return None
    with np.errstate(invalid="ignore"):
        slope = np.diff(cost, axis=1) / width
    slope = np.where(np.isfinite(slope), slope, -np.inf)  # from an infinite first point: take it first
    order = np.argsort(slope, axis=None, kind="stable")
    rows = order // width.shape[1]
    steps = width.ravel()[order]
    taken = np.cumsum(steps) <= room
    shares = grid[:, 0] + np.bincount(rows[taken], weights=steps[taken], minlength=grid.shape[0])
    if not taken.all():  # the next increment, in part
        shares[rows[~taken][0]] += room - steps[taken].sum()
    return shares


def _subgradient_gap(curves: _Curves, shares: np.ndarray, budget: float) -> float:
    """The certified bound of the module doc on F(shares) − F*, from chords either side of each share."""
    h = _CHORD * budget
    left, right = np.empty(shares.size), np.empty(shares.size)
    for i, r in enumerate(shares):
        at = curves.mass(i, np.array([r - h, r, r + h]))
        left[i], right[i] = (at[1] - at[0]) / h, (at[2] - at[1]) / h
    if not (np.isfinite(left).all() and np.isfinite(right).all()):
        return np.inf
    return float(max(right.max() - left.min(), 0.0) * (budget - curves.edge.sum()))


# ----------------------------------------------------------------- shares under an SLO


@dataclass(frozen=True)
class _Found:
    shares: np.ndarray
    certified: bool
    gap: float
    feasible: bool


def _slo_search(curves: _Curves, budget: float, start: np.ndarray) -> _Found:
    """Branch and bound over share boxes (module doc), from the ``start`` shares where they meet the SLO."""
    n = curves.idx.size
    tolerance = curves.mass_tolerance()
    best_shares, best_mass = None, np.inf
    if _meets(curves, start):
        best_shares, best_mass = start.copy(), float(_total_mass(curves, start[None, :])[0])
    low = curves.edge[None, : n - 1].copy()
    high = (budget - (curves.edge.sum() - curves.edge))[None, : n - 1].copy()
    evaluated = 0
    while low.shape[0] and evaluated < _MAX_BOXES:
        evaluated += low.shape[0]
        upper = np.concatenate([high, budget - low.sum(axis=1, keepdims=True)], axis=1)
        centre = (low + high) / 2
        centre = np.concatenate([centre, budget - centre.sum(axis=1, keepdims=True)], axis=1)
        points = np.concatenate([upper, centre])
        chance = np.column_stack([curves.within(i, points[:, i]) for i in range(n)])
        attained = _attainment(curves, chance)
        mass = _total_mass(curves, points)
        k = low.shape[0]
        slo = curves.problem.slo.attainment
        meets = (attained[k:] >= slo).all(axis=1) & np.isfinite(mass[k:])
        if meets.any():
            j = int(np.argmin(np.where(meets, mass[k:], np.inf)))
            if mass[k + j] < best_mass or best_shares is None:
                best_shares, best_mass = centre[j].copy(), float(mass[k + j])
        if best_shares is not None and not np.isfinite(tolerance):
            return _Found(best_shares, True, 0.0, True)  # no delay weight: every feasible share vector is best
        keep = (attained[:k] >= slo).all(axis=1) & (upper[:, -1] > curves.edge[-1])
        keep &= mass[:k] < best_mass - tolerance
        low, high = _split(low[keep], high[keep], budget)
    if low.shape[0]:  # the cap: keep what was found, uncertified
        shares = start if best_shares is None else best_shares
        return _Found(shares, False, np.inf, best_shares is not None)
    if best_shares is None:  # proven: no shares meet the SLO
        return _Found(start, True, 0.0, False)
    return _Found(best_shares, True, SHARE_TOL, True)


def _total_mass(curves: _Curves, points: np.ndarray) -> np.ndarray:
    """Σ_m f_m(r_m) of each row of deployed models' shares."""
    return np.sum([curves.mass(i, points[:, i]) for i in range(points.shape[1])], axis=0)


def _split(low: np.ndarray, high: np.ndarray, budget: float) -> tuple[np.ndarray, np.ndarray]:
    """Each box halved along its widest side."""
    if low.shape[0] == 0:
        return low, high
    side = np.argmax(high - low, axis=1)
    rows = np.arange(low.shape[0])
    middle = (low[rows, side] + high[rows, side]) / 2
    low_b, high_a = low.copy(), high.copy()
    high_a[rows, side] = middle
    low_b[rows, side] = middle
    return np.concatenate([low, low_b]), np.concatenate([high_a, high])
