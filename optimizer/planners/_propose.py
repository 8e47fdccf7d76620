"""genedge's planner: price-directed routing, annealed steps, closed-form shares.

For each candidate step vector the routing is solved exactly on a convex
relaxation of the delay (:func:`~genedge.optimizer.planners.price_directed_assignment`)
and the shares in closed form (r_m ∝ √K_m), so only the steps are searched: every
step vector where there are no more of them than annealing iterations, by annealing
otherwise. The best routings found are then polished on the exact utility.

Where the paper fixes the routing from score distributions alone and anneals
steps and shares for it, this planner lets the routing respond to delay: a
category moves to a faster model exactly when the quality it gives up is worth
less than the delay it saves at weight w.

Under delay models without that closed form (open arrivals, random routing, an SLO,
batching) the same search runs on the exact objective of
:mod:`~genedge.optimizer.model._objective`: for each step vector every routing on the
price dual's frontier (:func:`~genedge.optimizer.planners._assignment.frontier_routings`) is
scored with its own batch sizes and shares, and the best step vectors' routings are
polished on that objective.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from genedge.optimizer.model import INFEASIBLE, Problem, optimal_shares, score_plan, utility_with_optimal_shares
from genedge.optimizer.planners._anneal import AnnealState, adjacent_step, metropolis, seed_of
from genedge.optimizer.planners._assignment import (
    best_scored_routing,
    frontier_candidates,
    one_model_routings,
    polish_requests,
    polish_scored,
    polish_starts,
    price_directed_assignment,
)
from genedge.optimizer.planners._result import PlanResult, PlanStatus, make_result, timed

__all__ = ["propose", "ITERATIONS_PER_GRID_STEP", "POLISH_CANDIDATES"]

# Annealing length scales with the size of the step grids: Σ_m K_m iterations times this.
ITERATIONS_PER_GRID_STEP = 40
# How many of the best step vectors seen by the annealing get their routing polished.
POLISH_CANDIDATES = 5
# Beyond this many step vectors, a start that meets the quality floor is not searched for exhaustively.
MAX_START_SEARCH = 200_000
# Under delay models scored without a closed form, this many of the best step vectors are polished.
POLISH_CANDIDATES_SCORED = 2
# Where those step vectors are too many to enumerate, this many of the window model's best are scored,
# with the window holding the arrivals of each of these many seconds in turn until one can be served.
SURROGATE_SCORED = 3
_SURROGATE_HORIZONS = (1.0, 10.0, 100.0)


@timed
def propose(
    problem: Problem,
    *,
    rng: int | np.random.Generator | None = None,
    callback: Callable[[AnnealState], bool | None] | None = None,
    maxiter: int | None = None,
) -> PlanResult:
    """Plan routing, steps and shares jointly (the proposed method).

    Args:
        problem: the planning problem.
        rng: a seed or generator; when None a new generator is seeded from the OS.
        callback: ``callback(AnnealState) -> bool | None`` after each annealing iteration, or each
            step vector valued where they are enumerated; True stops the search, and the best step
            vectors seen so far are polished into the plan.
        maxiter: annealing iterations per deployable model set
            (default ``ITERATIONS_PER_GRID_STEP`` · Σ_m K_m). Where a set's models have no more step
            vectors than this, each is valued once instead, and the plan does not depend on ``rng``.

    Returns:
        A :class:`PlanResult` whose trajectory is the search over steps. Annealing gives one row per
        iteration (iteration, current utility, best utility, temperature); enumerating gives one row
        per step vector valued, the start first and then the rest in lexicographic order
        (index, its utility or −inf where no routing meets the quality floor, best utility, 0), and
        ``nit`` counts them. ``nfev`` adds the exact-utility evaluations of the polish.
    """
    seed = seed_of(rng)
    gen = np.random.default_rng(rng)
    if maxiter is None:
        maxiter = ITERATIONS_PER_GRID_STEP * sum(problem.grid_sizes)
    best: _SetPlan | None = None
    nfev_total = nit_total = 0
    status = PlanStatus.SUCCESS
    for allowed in problem.deployable_sets():
        found = _plan_model_set(problem, allowed, maxiter=maxiter, rng=gen, callback=callback)
        if found is None:
            continue
        nit_total += found.nit
        nfev_total += found.nfev
        if best is None or found.utility > best.utility:
            best = found
        if found.status == PlanStatus.CALLBACK_STOP:  # plan with what has been searched
            status = found.status
            break
    if best is None:
        raise problem.unreachable_floor_error()
    routing = best.requests / problem.counts[:, None]
    if problem.is_classic:
        shares = optimal_shares(problem.service_at(best.steps), best.requests.sum(axis=0), problem.budget)
        batch = None
    else:
        scored = score_plan(problem, best.requests, best.steps, certify=True)
        shares, batch = scored.shares, scored.batch_index
    return make_result(
        problem,
        "genedge",
        routing,
        best.steps,
        shares,
        batch_index=batch,
        status=status,
        nit=nit_total,
        nfev=nfev_total,
        seed=seed,
        trajectory=best.trajectory,
    )


@dataclass(frozen=True)
class _SetPlan:
    """The best plan over one set of models that fits in memory, and what finding it took."""

    utility: float
    steps: tuple[int, ...]
    requests: np.ndarray
    trajectory: np.ndarray
    nit: int
    nfev: int
    status: PlanStatus
    ranked: tuple[tuple[int, ...], ...] = ()


def _plan_model_set(
    problem: Problem,
    allowed: np.ndarray,
    *,
    maxiter: int,
    rng: np.random.Generator,
    callback: Callable[[AnnealState], bool | None] | None,
) -> _SetPlan | None:
    """Search the steps of the allowed models (every step vector where they are no more than ``maxiter``,
    else by annealing), then polish the best routings; None if no step vector is feasible."""
    start = _feasible_start(problem, allowed)
    if start is None:
        return None
    if not problem.is_classic:
        if np.prod(problem.grid_sizes, dtype=float) <= maxiter:
            return _enumerate_scored(problem, allowed, callback)
        return _surrogate_then_scored(problem, allowed, maxiter=maxiter, rng=rng, callback=callback)
    space = _RelaxedSteps(problem, allowed)
    if space.count <= maxiter:
        # Valuing each step vector once costs no more evaluations than annealing, and cannot miss the relaxation's best.
        out = _enumerate_relaxed(space, start, callback)
    else:
        out = metropolis(start, space.utility, space.neighbour, maxiter=maxiter, rng=rng, callback=callback)
    # The relaxation ignores the curvature of √(N(N+1)), which matters at small loads,
    # so the runners-up of the search are polished on the exact utility too.
    ranked = space.ranked()
    best, evaluations = _polish_ranked(problem, allowed, space, ranked[:POLISH_CANDIDATES])
    utility_found, steps, requests = best
    return _SetPlan(
        utility=utility_found,
        steps=steps,
        requests=requests,
        trajectory=out.trajectory,
        nit=out.nit,
        nfev=out.nfev + evaluations,
        status=out.status,
        ranked=tuple(ranked[:SURROGATE_SCORED]),
    )


class _RelaxedSteps:
    """The annealing space of the paper's problem over the allowed models: step vectors, each valued by its
    best routing under the price-directed relaxation (or all requests on one model), remembered."""

    def __init__(self, problem: Problem, allowed: np.ndarray) -> None:
        self.problem = problem
        self.allowed = allowed
        self.sizes = problem.grid_sizes
        self.movable = np.flatnonzero(allowed & (np.array(self.sizes) > 1))
        # The other models' steps leave the utility unchanged: they serve nothing, or have one step choice.
        self.count = int(np.prod([self.sizes[m] for m in self.movable]))
        # steps → (utility, its routing in requests, None where infeasible)
        self.cache: dict[tuple[int, ...], tuple[float, np.ndarray | None]] = {}

    def utility(self, steps: tuple[int, ...]) -> float:
        """The step vector's utility at its best routing with optimal shares; −inf where no routing meets the floor."""
        if steps not in self.cache:
            self.cache[steps] = self._best_routing(steps)
        return self.cache[steps][0]

    def _best_routing(self, steps: tuple[int, ...]) -> tuple[float, np.ndarray | None]:
        problem = self.problem
        mean, full, floor = problem.value_at(steps), problem.service_at(steps), problem.shortfall_at(steps)
        x, _bound = price_directed_assignment(problem, mean, full, self.allowed, floor)
        if x is None:
            return -np.inf, None
        # At small loads serving everything on one model can beat any split,
        # which the relaxation cannot see: weigh those routings too.
        candidates = np.stack([x, *one_model_routings(problem, self.allowed, floor)])
        u = utility_with_optimal_shares(problem, candidates, full, mean)
        b = int(u.argmax())
        return float(u[b]), candidates[b]

    def every(self, start: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
        """Every step vector of the movable models, the others kept at ``start``: ``start`` first, then the
        rest in lexicographic order."""
        yield start
        for moved in itertools.product(*(range(self.sizes[m]) for m in self.movable)):
            steps = list(start)
            for m, k in zip(self.movable, moved):
                steps[m] = k
            if tuple(steps) != start:
                yield tuple(steps)

    def neighbour(self, steps: tuple[int, ...], g: np.random.Generator) -> tuple[int, ...]:
        """An adjacent step of one allowed model with more than one step choice."""
        if self.movable.size == 0:
            return steps
        i = self.movable[g.integers(self.movable.size)]
        return adjacent_step(steps, i, self.sizes[i], g)

    def ranked(self) -> list[tuple[int, ...]]:
        """The feasible step vectors valued so far, best first."""
        feasible = [steps for steps, (u, _) in self.cache.items() if u > -np.inf]
        return sorted(feasible, key=lambda steps: -self.cache[steps][0])


class _Enumeration:
    """The record of a search that values step vectors one by one instead of annealing: one trajectory row
    per step vector (index, its value, best value so far, temperature 0, as nothing is annealed), with the
    callback told of each."""

    def __init__(self, callback: Callable[[AnnealState], bool | None] | None) -> None:
        self.callback = callback
        self.rows: list[tuple[int, float, float, float]] = []
        self.best_value = -np.inf
        self.best_state: tuple[int, ...] | None = None
        self.status = PlanStatus.SUCCESS

    def record(self, steps: tuple[int, ...], value: float) -> bool:
        """Add one step vector's value; True where the callback asks to stop."""
        if value > self.best_value:
            self.best_value, self.best_state = value, steps
        self.rows.append((len(self.rows) + 1, value, self.best_value, 0.0))
        if self.callback is not None and self.callback(
            AnnealState(
                iteration=self.nit,
                value=value,
                best_value=self.best_value,
                best_state=self.best_state,
                temperature=0.0,
            )
        ):
            self.status = PlanStatus.CALLBACK_STOP
        return self.status == PlanStatus.CALLBACK_STOP

    @property
    def nit(self) -> int:
        """Step vectors valued."""
        return len(self.rows)

    @property
    def nfev(self) -> int:
        """Evaluations behind the values recorded: one each."""
        return self.nit

    @property
    def trajectory(self) -> np.ndarray:
        """The rows, shape (nit, 4)."""
        return np.array(self.rows, dtype=float).reshape(-1, 4)


def _enumerate_relaxed(
    space: _RelaxedSteps, start: tuple[int, ...], callback: Callable[[AnnealState], bool | None] | None
) -> _Enumeration:
    """Value every step vector of the space, the feasible start first (so a stopped search still has a
    plan); one utility evaluation each."""
    search = _Enumeration(callback)
    for steps in space.every(start):
        if search.record(steps, space.utility(steps)):
            break
    return search


def _polish_ranked(
    problem: Problem, allowed: np.ndarray, space: _RelaxedSteps, ranked: list[tuple[int, ...]]
) -> tuple[tuple[float, tuple[int, ...], np.ndarray], int]:
    """Polish each ranked step vector's routing on the exact utility: the best (utility, steps, routing in
    requests), and the utility evaluations that took."""
    best: tuple[float, tuple[int, ...], np.ndarray] | None = None
    evaluations = 0
    for steps in ranked:
        mean, full = problem.value_at(steps), problem.service_at(steps)
        x, u, used = polish_requests(problem, space.cache[steps][1], mean, full, allowed, problem.shortfall_at(steps))
        evaluations += used
        if best is None or u > best[0]:
            best = (u, steps, x)
    return best, evaluations


def _surrogate_then_scored(
    problem: Problem,
    allowed: np.ndarray,
    *,
    maxiter: int,
    rng: np.random.Generator,
    callback: Callable[[AnnealState], bool | None] | None,
) -> _SetPlan | None:
    """Where step vectors outnumber the annealing iterations and each costs a share search: anneal on
    the paper's window model of the same demand (closed-form shares, microseconds a step vector) to
    rank step vectors, then score the best-ranked ones on the exact objective.

    The window model orders configurations by the same trade of quality for service time, so its
    best step vectors are where the exact objective's best ones lie; the exact search measures the
    gap where it can enumerate.
    """
    best: tuple[float, tuple[int, ...], np.ndarray, tuple] | None = None
    nfev = nit = 0
    # The window model knows no stability: where its plan overloads a queue, weigh its delay more, as a
    # window holding more of the arrivals would, until a ranked step vector can be served.
    for horizon in _SURROGATE_HORIZONS:
        surrogate = dataclasses.replace(
            problem,
            counts=problem.counts * horizon,
            arrivals="window",
            realization="deterministic",
            slo=None,
            batch_sizes=None,
            batch_service_s=None,
        )
        ranked = _plan_model_set(surrogate, allowed, maxiter=maxiter, rng=rng, callback=callback)
        if ranked is None:
            return None
        nfev, nit = nfev + ranked.nfev, nit + ranked.nit
        for steps in ranked.ranked:
            floor = problem.shortfall_at(steps)
            candidates = frontier_candidates(problem, steps, allowed, floor)
            if not candidates[0]:
                continue
            value, requests = best_scored_routing(problem, steps, allowed, floor, candidates=candidates)
            nfev += len(candidates[0])
            if requests is not None and (best is None or value > best[0]):
                best = (value, steps, requests, candidates)
        if best is not None and best[0] > INFEASIBLE:
            break
    if best is None:
        return None
    # At this scale a pairwise polish costs (models² × categories) share searches: the frontier's
    # routings, and their repairs under an SLO, are the plan.
    value, steps, requests, _candidates = best
    return _SetPlan(
        utility=value,
        steps=steps,
        requests=requests,
        trajectory=ranked.trajectory,
        nit=nit,
        nfev=nfev,
        status=ranked.status,
    )


def _enumerate_scored(
    problem: Problem, allowed: np.ndarray, callback: Callable[[AnnealState], bool | None] | None
) -> _SetPlan | None:
    """Every step vector, best bound first, where there are no more of them than annealing iterations.

    Without a closed form each evaluation costs a share search, so the step vectors are ranked by
    the best unconstrained utility of their routings (an upper bound on what they can score) and
    scored in that order until no bound beats the best plan found.
    """
    entries = []
    for steps in itertools.product(*(range(k) for k in problem.grid_sizes)):
        candidates = frontier_candidates(problem, steps, allowed, problem.shortfall_at(steps))
        if candidates[0]:
            entries.append((float(candidates[1].max()), steps, candidates))
    if not entries:
        return None
    entries.sort(key=lambda entry: -entry[0])
    nfev = sum(len(entry[2][0]) for entry in entries)
    found: list[tuple[float, tuple[int, ...], np.ndarray, tuple]] = []
    search = _Enumeration(callback)
    for bound, steps, candidates in entries:
        if search.best_value > INFEASIBLE and bound <= search.best_value:
            break
        value, requests = best_scored_routing(problem, steps, allowed, None, candidates=candidates)
        found.append((value, steps, requests, candidates))
        if search.record(steps, value):
            break
    nfev += search.nfev
    top: tuple[float, tuple[int, ...], np.ndarray] | None = None
    for value, steps, requests, candidates in sorted(found, key=lambda item: -item[0])[:POLISH_CANDIDATES_SCORED]:
        for start in polish_starts(value, requests, candidates):
            x, u, evaluations = polish_scored(
                problem,
                start,
                lambda x, steps=steps: score_plan(problem, x, steps).value,
                problem.shortfall_at(steps),
                allowed=allowed,
            )
            nfev += evaluations
            if top is None or u > top[0]:
                top = (u, steps, x)
    return _SetPlan(
        utility=top[0],
        steps=top[1],
        requests=top[2],
        trajectory=search.trajectory,
        nit=search.nit,
        nfev=nfev,
        status=search.status,
    )


def _feasible_start(problem: Problem, allowed: np.ndarray) -> tuple[int, ...] | None:
    """A step vector at which every category can meet the quality floor, preferring the defaults.

    A category can meet the floor exactly when some allowed model, at its steps, falls short
    with probability at most ε. Tries the default steps, then each model's steps that cover the
    most categories, then every step vector (up to ``MAX_START_SEARCH``).
    """
    default = tuple(problem.default_step_index)
    if problem.min_clipscore is None:
        return default
    covers = [np.zeros((len(problem.categories), k), dtype=bool) for k in problem.grid_sizes]
    for m in np.flatnonzero(allowed):
        shortfall = ndtr((problem.min_clipscore - problem.quality_mean[m]) / problem.quality_std[m])
        covers[m] = shortfall <= problem.max_shortfall

    def feasible(steps: tuple[int, ...]) -> bool:
        return bool(np.logical_or.reduce([covers[m][:, k] for m, k in enumerate(steps)]).all())

    widest = tuple(int(c.sum(axis=0).argmax()) for c in covers)
    for steps in (default, widest):
        if feasible(steps):
            return steps
    if np.prod(problem.grid_sizes, dtype=float) <= MAX_START_SEARCH:
        return next(filter(feasible, itertools.product(*(range(k) for k in problem.grid_sizes))), None)
    return None
