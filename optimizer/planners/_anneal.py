r"""Simulated annealing over denoising steps and compute shares (Gao et al., arXiv 2409.09072).

:func:`metropolis` is the engine: a seeded Metropolis search with geometric
cooling over any state, maximizing a value. :func:`anneal` is the paper's
planner on top of it: for a fixed routing, it searches steps per model and
compute shares per model.

Notes:
    Acceptance (maximization): a neighbour with value change Δ is accepted with
    probability min(1, exp(Δ / T)).

    Cooling: T_i = T_0 · α^i with α = (T_final / T_0)^(1 / maxiter), so the
    temperature falls by ``FINAL_TEMPERATURE_RATIO`` over the run. T_0 is set so
    that the average worsening among ``TEMPERATURE_PROBES`` random neighbours of
    the start is accepted with probability ``INITIAL_ACCEPTANCE``.

    Neighbours of the paper's planner: with probability ``STEP_MOVE_PROBABILITY``
    one model's steps move to an adjacent grid value; otherwise a slice of
    ``SHARE_QUANTUM`` · R moves from one model in use to another.

References:
    S. Gao, P. Yang, Y. Kong, F. Lyu, N. Zhang, "Joint Model Assignment and
    Resource Allocation for Cost-Effective Mobile Generative Services",
    arXiv:2409.09072, 2024.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from genedge.optimizer.model import Problem, deployed_mask, fifo_delay_coefficient, score_plan
from genedge.optimizer.planners._result import PlanResult, PlanState, PlanStatus, make_result, timed

__all__ = ["AnnealState", "metropolis", "anneal", "adjacent_step", "seed_of"]

State = TypeVar("State", bound=Hashable)

INITIAL_ACCEPTANCE = 0.8
FINAL_TEMPERATURE_RATIO = 1e-4
TEMPERATURE_PROBES = 32
STEP_MOVE_PROBABILITY = 0.5
SHARE_QUANTUM = 0.01
DEFAULT_MAXITER = 3000


def seed_of(rng: int | np.random.Generator | None) -> int | None:
    """The integer seed a planner was given, recorded in its result (None for a generator or OS entropy)."""
    return int(rng) if isinstance(rng, (int, np.integer)) else None


def adjacent_step(steps: tuple[int, ...], model: int, grid_size: int, g: np.random.Generator) -> tuple[int, ...]:
    """Move one model's step index to a random adjacent grid value, reflecting at the ends of its grid."""
    k = steps[model] + (1 if g.random() < 0.5 else -1)
    if not 0 <= k < grid_size:
        k = 2 * steps[model] - k
    k = min(max(k, 0), grid_size - 1)
    return (*steps[:model], k, *steps[model + 1 :])


@dataclass(frozen=True)
class AnnealState(PlanState):
    """What an annealer's callback sees after each iteration: a :class:`PlanState` and the temperature.

    Attributes:
        temperature: the temperature after this iteration's cooling.
    """

    temperature: float


@dataclass(frozen=True)
class MetropolisResult:
    """Outcome of :func:`metropolis`: best state and value, counts, trajectory and status."""

    best_state: Any
    best_value: float
    nit: int
    nfev: int
    trajectory: np.ndarray
    status: PlanStatus


def metropolis(
    x0: State,
    value: Callable[[State], float],
    neighbour: Callable[[State, np.random.Generator], State],
    *,
    maxiter: int,
    rng: np.random.Generator,
    initial_temp: float | None = None,
    callback: Callable[[AnnealState], bool | None] | None = None,
) -> MetropolisResult:
    """Maximize ``value`` over states by simulated annealing.

    Args:
        x0: the starting state.
        value: utility of a state: finite, or −inf for an infeasible state, which is never accepted.
        neighbour: draws a neighbour of a state with the given generator.
        maxiter: number of iterations (> 0).
        rng: the one generator every random choice comes from.
        initial_temp: T_0; by default set from the start's neighbourhood (see module Notes).
        callback: called as ``callback(AnnealState)`` after each iteration; returning True stops the run.

    Returns:
        The best state seen, its value, iterations, evaluations, the trajectory
        (iteration, value, best value, temperature per row) and a status
        (``SUCCESS``, or ``CALLBACK_STOP`` when the callback stopped the run).

    Raises:
        ValueError: ``maxiter`` ≤ 0, the start is infeasible, or a value is NaN or +inf.
    """
    if maxiter <= 0:
        raise ValueError(f"Expected maxiter > 0, but got {maxiter}")
    checked = _CheckedValue(value)
    current, current_value = x0, checked(x0)
    if current_value == -math.inf:
        raise ValueError(f"Expected a feasible starting state, but {x0!r} is infeasible")
    best, best_value = current, current_value
    if initial_temp is None:
        initial_temp = _initial_temperature(current_value, lambda: checked(neighbour(x0, rng)))
    if not initial_temp > 0:
        raise ValueError(f"Expected an initial temperature > 0, but got {initial_temp}")
    cooling = FINAL_TEMPERATURE_RATIO ** (1.0 / maxiter)
    temperature = initial_temp
    trajectory = np.empty((maxiter, 4))
    status = PlanStatus.SUCCESS
    nit = 0
    for nit in range(1, maxiter + 1):
        candidate = neighbour(current, rng)
        candidate_value = checked(candidate)
        if _accepts(candidate_value - current_value, temperature, rng):
            current, current_value = candidate, candidate_value
            if current_value > best_value:
                best, best_value = current, current_value
        trajectory[nit - 1] = (nit, current_value, best_value, temperature)
        temperature *= cooling
        if callback is not None and callback(
            AnnealState(
                iteration=nit, value=current_value, best_value=best_value, best_state=best, temperature=temperature
            )
        ):
            status = PlanStatus.CALLBACK_STOP
            break
    return MetropolisResult(best, best_value, nit, checked.nfev, trajectory[:nit], status)


class _CheckedValue:
    """A state's value, refused where NaN or +inf, with the evaluations counted."""

    def __init__(self, value: Callable[[Hashable], float]) -> None:
        self.value = value
        self.nfev = 0

    def __call__(self, state: Hashable) -> float:
        self.nfev += 1
        v = self.value(state)
        if math.isnan(v) or v == math.inf:
            raise ValueError(f"Objective returned a non-finite utility {v} for state {state!r}")
        return v


def _accepts(delta: float, temperature: float, rng: np.random.Generator) -> bool:
    """The Metropolis rule: a change of ``delta`` in value is accepted if it does not worsen the value,
    else with probability exp(delta / T)."""
    return delta >= 0 or rng.random() < math.exp(delta / temperature)


def _initial_temperature(start_value: float, probe: Callable[[], float]) -> float:
    """T_0 at which the mean worsening among :data:`TEMPERATURE_PROBES` of the start's neighbours (each
    ``probe()`` a neighbour's value) is accepted with probability :data:`INITIAL_ACCEPTANCE`."""
    drops = [start_value - probe() for _ in range(TEMPERATURE_PROBES)]
    worsening = [d for d in drops if 0 < d < math.inf]
    mean_drop = float(np.mean(worsening)) if worsening else max(abs(start_value), 1.0) * 1e-3
    return -mean_drop / math.log(INITIAL_ACCEPTANCE)


@timed
def anneal(
    problem: Problem,
    routing: np.ndarray,
    *,
    maxiter: int = DEFAULT_MAXITER,
    rng: int | np.random.Generator | None = None,
    initial_temp: float | None = None,
    callback: Callable[[AnnealState], bool | None] | None = None,
    x0: tuple[tuple[int, ...], tuple[float, ...]] | None = None,
    method: str = "paper",
) -> PlanResult:
    """The paper's planner: anneal steps and shares for a fixed routing.

    Args:
        problem: the planning problem.
        routing: p[c, m], fixed during the search.
        maxiter: annealing iterations.
        rng: a seed or generator; when None a new generator is seeded from the OS.
        initial_temp: T_0 (default: see module Notes).
        callback: ``callback(AnnealState) -> bool | None``; True stops the run.
        x0: starting (step indices, shares); default: each model's default steps
            and equal shares among the models the routing deploys.
        method: name written into the result.

    Returns:
        A :class:`PlanResult` with the trajectory of the search.
    """
    seed = seed_of(rng)
    gen = np.random.default_rng(rng)
    routing = np.asarray(routing, dtype=float)
    walk = _StepsAndShares(problem, routing)
    if x0 is None:
        x0 = walk.start()
    out = metropolis(
        x0, walk.utility, walk.neighbour, maxiter=maxiter, rng=gen, initial_temp=initial_temp, callback=callback
    )
    steps, shares = out.best_state
    return make_result(
        problem,
        method,
        routing,
        steps,
        np.array(shares),
        status=out.status,
        nit=out.nit,
        nfev=out.nfev,
        seed=seed,
        trajectory=out.trajectory,
    )


class _StepsAndShares:
    """The paper's search space for a fixed routing: states (step indices, shares), their utility and
    their neighbours."""

    def __init__(self, problem: Problem, routing: np.ndarray) -> None:
        self.problem = problem
        self.requests = problem.counts[:, None] * routing
        loads = self.requests.sum(axis=0)
        self.used = np.flatnonzero(deployed_mask(loads))
        m = len(problem.models)
        # Per model and grid step: quality points served, and delay coefficient Σ_k k = N(N+1)/2 times
        # full-share time.
        self.quality = [self.requests[:, i] @ problem.value_grid(i) for i in range(m)]
        self.delay_coeff = [fifo_delay_coefficient(problem.service_s[i], loads[i]) for i in range(m)]
        self.quantum = SHARE_QUANTUM * problem.budget
        self.n = problem.n_requests
        self.scored: dict[tuple[tuple[int, ...], tuple[float, ...]], float] = {}

    def start(self) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """Each model's default steps and equal shares among the models the routing deploys."""
        share = np.zeros(len(self.problem.models))
        share[self.used] = self.problem.budget / self.used.size
        return tuple(self.problem.default_step_index), tuple(share)

    def utility(self, state: tuple[tuple[int, ...], tuple[float, ...]]) -> float:
        """The state's utility: the paper's closed form, or the queueing law's beyond the paper's model."""
        problem = self.problem
        steps, shares = state
        if not problem.is_classic:  # the paper does not batch: each model runs its base batch
            # Share moves come in quanta, so the walk revisits states; each costs a queueing law here.
            key = (steps, tuple(round(r, 12) for r in shares))
            if key not in self.scored:
                self.scored[key] = score_plan(
                    problem, self.requests, steps, batch_index=problem.base_batch_index, shares=shares
                ).value
            return self.scored[key]
        total = 0.0
        for i in self.used:
            total += self.quality[i][steps[i]] - problem.weight * self.delay_coeff[i][steps[i]] / shares[i]
        return total / self.n

    def neighbour(
        self, state: tuple[tuple[int, ...], tuple[float, ...]], g: np.random.Generator
    ) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """A model's adjacent step, or a share quantum moved between two deployed models."""
        steps, shares = state
        used = self.used
        if used.size < 2 or g.random() < STEP_MOVE_PROBABILITY:
            i = used[g.integers(used.size)]
            return adjacent_step(steps, i, self.problem.steps[i].size, g), shares
        i, j = g.choice(used, size=2, replace=False)
        if shares[i] <= self.quantum:  # a model in use keeps a share
            return state
        moved = list(shares)
        moved[i] -= self.quantum
        moved[j] += self.quantum
        return steps, tuple(moved)
