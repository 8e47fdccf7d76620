"""Plans are exact where the issue of exactness is decidable: shares certified to a tolerance, and no plan of whole
categories (one-model plans among them), steps and shares that a planner misses.

The references here are brute force over fine grids, scored by the system model's own laws (the laws themselves are
checked against Erlang's formula and simulation elsewhere): a planner's plan must be at least as good as the best
grid point, up to :data:`~genedge.optimizer.model._shares.SHARE_TOL`.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from genedge.optimizer.model import Problem, Slo, deployed_mask, evaluate, score_plan
from genedge.optimizer.model._shares import SHARE_TOL, certified_shares
from genedge.optimizer.planners import exact_search, propose
from genedge.optimizer.planners._assignment import frontier_candidates
from genedge.testing import synthetic_problem


def _open_problem(seed: int, *, steps: tuple[int, ...] = (10, 25, 50), models: int | None = None) -> Problem:
    """A small synthetic problem under open arrivals at 30–80 % of the fastest model's capacity, with an SLO
    of 40–80 % of the p95 that genedge's plan has without one (so it binds), at least two fastest calls."""
    gen = np.random.default_rng(seed)
    n_models = int(gen.integers(2, 4)) if models is None else models
    window = synthetic_problem(n_models, int(gen.integers(2, 4)), 100, step_grid=steps, rng=seed)
    fastest = min(float(s.min()) for s in window.service_s)
    rates = window.counts / window.counts.sum() * gen.uniform(0.3, 0.8) * window.budget / fastest
    problem = dataclasses.replace(window, arrivals="open", counts=rates)
    free = propose(problem, rng=0)
    seconds = round(max(free.p95_delay_s * gen.uniform(0.4, 0.8), 2 * fastest), 2)
    scope = "category" if gen.random() < 0.3 else "overall"
    return dataclasses.replace(problem, slo=Slo(float(seconds), 0.95, scope))


def _grid_values(problem: Problem, requests: np.ndarray, steps: tuple[int, ...], units: int) -> tuple:
    """Every split of the budget into ``units`` whole units over the deployed models (each at least one):
    (the share vectors, their utilities, and whether each meets stability and the SLO), by the delay model's
    laws."""
    batch_index = problem.base_batch_index
    loads = requests.sum(axis=0)
    used = np.flatnonzero(deployed_mask(loads))
    full, batch = problem.call_service_at(steps, batch_index), problem.max_batch_at(batch_index)
    grid = problem.budget * np.arange(1, units + 1) / units
    mass, within = [], []
    for m in used:
        mean = np.asarray(problem.delay.model_mean(requests, m, full[m] / grid, int(batch[m])), dtype=float)
        mass.append(np.where(np.isfinite(mean), loads[m] * mean, np.inf))
        if problem.slo is not None:
            chance = problem.delay.model_within(requests, m, full[m] / grid, int(batch[m]), problem.slo.seconds)
            within.append(np.asarray(chance, dtype=float))
    heads = np.array(list(itertools.product(range(units), repeat=used.size - 1)), dtype=int)
    heads = heads.reshape(len(heads), used.size - 1)
    last = units - heads.sum(axis=1) - used.size
    keep = last >= 0
    picks = np.column_stack([heads[keep], last[keep]])  # grid index per deployed model
    total = float(loads.sum())
    delay = sum(mass[i][picks[:, i]] for i in range(used.size))
    utility = float((requests * problem.value_at(steps)).sum()) / total - problem.weight * delay / total
    meets = np.isfinite(delay)
    if problem.slo is not None:
        chance = np.column_stack([within[i][picks[:, i]] for i in range(used.size)])
        if problem.slo.scope == "overall":
            attained = (chance @ loads[used] / total)[:, None]
        else:
            attained = chance @ requests[:, used].T / requests.sum(axis=1)
        meets &= (attained >= problem.slo.attainment).all(axis=1)
    shares = np.zeros((picks.shape[0], loads.size))
    shares[:, used] = grid[picks]
    return shares, utility, meets


def _grid_best(problem: Problem, requests: np.ndarray, steps: tuple[int, ...], units: int) -> float:
    """The best feasible utility over the share grid of :func:`_grid_values`, as the scorer judges it (−inf if none)."""
    shares, utility, meets = _grid_values(problem, requests, steps, units)
    best = -np.inf
    for k in np.argsort(np.where(meets, -utility, np.inf))[:5]:  # the scorer judges the grid's best few
        if meets[k]:
            scored = score_plan(problem, requests, steps, shares=shares[k])
            best = max(best, scored.utility if scored.feasible else -np.inf)
    return best


def _split_plan(problem: Problem, gen: np.random.Generator) -> tuple[Problem, np.ndarray]:
    """Every category split over every model at random, at rates that load the device to 60 % at the fastest
    steps: the problem at those rates and its requests x[c, m]."""
    rows = gen.dirichlet(np.ones(len(problem.models)), size=len(problem.categories))
    full = problem.call_service_at((0,) * len(problem.models), problem.base_batch_index)
    requests = rows * problem.counts[:, None]
    requests *= 0.6 * problem.budget / float((requests.sum(axis=0) * full).sum())
    return dataclasses.replace(problem, counts=requests.sum(axis=1)), requests


def _binding_slo(problem: Problem, requests: np.ndarray, units: int) -> Problem | None:
    """The problem with an overall SLO of 80 % of the p95 at the delay-optimal shares, its attainment halfway
    between what those shares reach and the most any grid point reaches (so it binds and can be met); None
    where the two are too close to tell apart."""
    steps = (0,) * len(problem.models)
    free = dataclasses.replace(problem, slo=None)
    delay_optimal = score_plan(free, requests, steps, certify=True)
    routing = requests / requests.sum(axis=1, keepdims=True)
    seconds = 0.8 * evaluate(free, routing, steps, delay_optimal.shares).p95_delay_s
    probe = dataclasses.replace(problem, slo=Slo(seconds, 1e-9))
    shares, _utility, meets = _grid_values(probe, requests, steps, units)
    low = evaluate(probe, routing, steps, delay_optimal.shares).attainment
    sample = np.flatnonzero(meets)[:: max(1, int(meets.sum()) // 40)]
    high = max(evaluate(probe, routing, steps, shares[k]).attainment for k in sample)
    if high - low < 1e-5:
        return None
    return dataclasses.replace(problem, slo=Slo(seconds, (low + high) / 2))


@pytest.mark.slow
@pytest.mark.parametrize("models", [2, 3])
def test_certified_shares_beat_every_point_of_a_fine_share_grid(models):
    units = 1000 if models == 2 else 100
    steps = (0,) * models
    checked = 0
    for seed in range(3):
        problem = _open_problem(seed, models=models)
        gen = np.random.default_rng(100 + seed)
        for _ in range(2):
            split, requests = _split_plan(problem, gen)
            for candidate in (dataclasses.replace(split, slo=None), _binding_slo(split, requests, units)):
                if candidate is None:
                    continue
                best = _grid_best(candidate, requests, steps, units)
                scored = score_plan(candidate, requests, steps, certify=True)
                assert np.isfinite(best)
                assert scored.feasible
                assert scored.utility >= best - SHARE_TOL
                checked += candidate.slo is not None
    assert checked >= 2  # some draws have an SLO that binds and can be met


def test_the_certificate_is_proven_and_the_quick_shares_are_beaten():
    """A split routing whose quick shares (grids of 256 shares and 100 budget units) leave points behind."""
    problem = _open_problem(15, models=2)
    requests = np.array([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])[: len(problem.categories)] * problem.counts[:, None]
    steps = (1, 1)
    quick = score_plan(problem, requests, steps)
    full = problem.call_service_at(steps, problem.base_batch_index)
    batch = problem.max_batch_at(problem.base_batch_index)
    found = certified_shares(problem, requests, full, batch, start=quick.shares, delay=quick.shares)
    assert found.certified and found.gap <= SHARE_TOL
    refined = score_plan(problem, requests, steps, certify=True)
    assert refined.utility >= quick.utility
    assert refined.utility >= _grid_best(problem, requests, steps, 4000) - SHARE_TOL


def test_shares_that_cannot_meet_the_slo_are_proven_so():
    problem = _open_problem(3, models=2)
    fastest = float(min(s.min() for s in problem.service_s))
    tight = dataclasses.replace(problem, slo=Slo(fastest * 1.5, 0.999))
    requests = np.full((len(problem.categories), 2), 0.5) * problem.counts[:, None]
    steps = (0, 0)
    full = tight.call_service_at(steps, tight.base_batch_index)
    batch = tight.max_batch_at(tight.base_batch_index)
    quick = score_plan(tight, requests, steps)
    found = certified_shares(tight, requests, full, batch, start=quick.shares, delay=quick.shares)
    assert not found.feasible and found.certified
    assert not np.isfinite(_grid_best(tight, requests, steps, 400))


def test_one_model_routings_are_candidates_wherever_they_meet_the_floor():
    problem = _open_problem(0, models=3)
    allowed = np.ones(3, dtype=bool)
    routings, bounds = frontier_candidates(problem, (1, 1, 1), allowed, problem.shortfall_at((1, 1, 1)))
    assert len(routings) == bounds.size
    for m in range(3):
        alone = np.zeros((len(problem.categories), 3))
        alone[:, m] = problem.counts
        assert any(np.allclose(alone, x) for x in routings), m


def _whole_category_best(problem: Problem, units: int) -> float:
    """The best feasible utility over every step vector × every routing of whole categories (one-model ones
    among them) × the share grid."""
    best = -np.inf
    n_models, n_categories = len(problem.models), len(problem.categories)
    for steps in itertools.product(*(range(k) for k in problem.grid_sizes)):
        floor = problem.shortfall_at(steps)
        for assign in itertools.product(range(n_models), repeat=n_categories):
            requests = np.zeros((n_categories, n_models))
            requests[np.arange(n_categories), assign] = problem.counts
            if floor is not None and ((requests * floor).sum(axis=1) > problem.max_shortfall * problem.counts).any():
                continue
            best = max(best, _grid_best(problem, requests, steps, units))
    return best


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_genedge_and_exact_never_lose_to_brute_force_over_whole_categories(seed):
    problem = _open_problem(seed, steps=(10, 25, 50))
    best = _whole_category_best(problem, 400 if len(problem.models) == 2 else 100)
    for result in (propose(problem, rng=0), exact_search(problem)):
        if not np.isfinite(best):
            continue  # no whole-category plan meets the SLO; a split plan may
        assert result.feasible, result.method
        assert result.utility >= best - SHARE_TOL, result.method
