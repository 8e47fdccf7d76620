"""Optimizer: system model known answers, closed-form shares, exact search vs brute force, annealing, baselines."""

from __future__ import annotations

import dataclasses
import inspect
import itertools

import numpy as np
import pytest
from scipy.optimize import minimize

from genedge.optimizer import (
    DEPLOYED_MIN_REQUESTS,
    METHODS,
    PlanState,
    PlanStatus,
    anneal,
    direct,
    equal_allocation,
    evaluate,
    exact_search,
    optimal_shares,
    optimal_step,
    paper_method,
    paper_routing,
    price_directed_assignment,
    probabilistic_assignment,
    propose,
    random_assignment,
    run_methods,
)
from genedge.optimizer.model import Problem, utility_with_optimal_shares
from genedge.testing import synthetic_problem


def _tiny_problem(weight: float = 0.05) -> Problem:
    grid = np.array([10, 20, 30])
    return Problem(
        models=("fast", "slow"),
        categories=("easy", "hard"),
        counts=np.array([6.0, 4.0]),
        steps=(grid, grid),
        quality_mean=(
            np.array([[28.0, 30.0, 30.5], [25.0, 27.0, 27.5]]),
            np.array([[29.0, 31.0, 31.6], [29.0, 31.5, 32.0]]),
        ),
        quality_std=(np.full((2, 3), 3.0), np.full((2, 3), 3.0)),
        service_s=(0.1 + 0.02 * grid, 0.2 + 0.06 * grid),
        default_step_index=(2, 2),
        memory_bytes=np.array([4e9, 8e9]),
        budget=1.0,
        weight=weight,
    )


def test_evaluate_known_answer():
    problem = _tiny_problem()
    routing = np.array([[1.0, 0.0], [0.0, 1.0]])  # 6 requests on "fast", 4 on "slow"
    ev = evaluate(problem, routing, (0, 1), np.array([0.5, 0.5]))
    t_fast, t_slow = (0.1 + 0.2) / 0.5, (0.2 + 1.2) / 0.5  # seconds per image on each half GPU
    assert ev.service_s == pytest.approx([t_fast, t_slow])
    assert ev.mean_delay_s == pytest.approx((t_fast * 6 * 7 / 2 + t_slow * 4 * 5 / 2) / 10)
    assert ev.mean_quality == pytest.approx((6 * 28.0 + 4 * 31.5) / 10)
    assert ev.utility == pytest.approx(ev.mean_quality - 0.05 * ev.mean_delay_s)
    # Delays: fast 0.6,1.2,...,3.6; slow 2.8,5.6,8.4,11.2 → the 95th percentile of 10 requests is the largest.
    assert ev.p95_delay_s == pytest.approx(4 * t_slow)


@pytest.mark.parametrize(
    ("routing", "shares", "message"),
    [
        (np.array([[0.5, 0.4], [0.0, 1.0]]), np.array([0.5, 0.5]), "routing rows of non-negative probabilities"),
        (np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0.7, 0.7]), "summing to at most 1.0"),
        (np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1.0, 0.0]), r"models \['slow'\] receive requests but no"),
    ],
)
def test_evaluate_rejects_infeasible_plans(routing, shares, message):
    with pytest.raises(ValueError, match=message):
        evaluate(_tiny_problem(), routing, (0, 0), shares)


def test_problem_validation_happens_before_any_work():
    with pytest.raises(ValueError, match="Expected a compute budget > 0"):
        synthetic_problem(2, 2, 10, budget=0.0)
    with pytest.raises(ValueError, match="Expected a delay weight w >= 0"):
        synthetic_problem(2, 2, 10, weight=-1.0)


@pytest.mark.parametrize("seed", range(8))
def test_closed_form_shares_beat_numerical_optimization(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 7))
    full = rng.uniform(0.2, 6.0, m)
    loads = rng.uniform(1, 80, m)
    budget = float(rng.uniform(0.3, 2.0))
    k = full * loads * (loads + 1) / 2

    def total_delay(r):
        return float((k / r).sum())

    closed = optimal_shares(full, loads, budget)
    numeric = minimize(
        total_delay,
        np.full(m, budget / m),
        method="SLSQP",
        bounds=[(1e-6, budget)] * m,
        constraints=[{"type": "eq", "fun": lambda r: r.sum() - budget}],
    )
    assert closed.sum() == pytest.approx(budget)
    assert total_delay(closed) <= total_delay(numeric.x) * (1 + 1e-9)
    assert total_delay(closed) == pytest.approx(np.sqrt(k).sum() ** 2 / budget)


def _brute_force(problem: Problem, resolution: int) -> float:
    """Best utility over every step vector and a grid of routings (two models), optimal shares.

    With a quality floor, routings that break it are left out.
    """
    fractions = np.linspace(0, 1, resolution + 1)
    grids = np.meshgrid(*[fractions] * len(problem.categories), indexing="ij")
    splits = np.stack(grids, axis=-1).reshape(-1, len(problem.categories))  # share on model 0
    routing = np.stack([splits, 1 - splits], axis=-1)
    best = -np.inf
    for steps in itertools.product(*(range(k) for k in problem.grid_sizes)):
        u = utility_with_optimal_shares(
            problem, routing * problem.counts[None, :, None], problem.service_at(steps), problem.mean_at(steps)
        )
        if problem.min_clipscore is not None:
            risk = (routing * problem.shortfall_at(steps)[None]).sum(axis=2)
            u = np.where((risk <= problem.max_shortfall).all(axis=1), u, -np.inf)
        best = max(best, float(u.max()))
    return best


@pytest.mark.parametrize("weight", [0.0, 0.02, 0.05, 0.2, 1.0])
def test_exact_search_equals_brute_force(weight):
    problem = _tiny_problem(weight)
    result = exact_search(problem)
    brute = _brute_force(problem, resolution=200)
    assert result.utility >= brute - 1e-9
    assert result.utility == pytest.approx(brute, abs=2e-3)
    assert result.upper_bound >= result.utility - 1e-12


@pytest.mark.parametrize("seed", range(6))
def test_relaxation_bounds_every_routing(seed):
    problem = synthetic_problem(3, 4, 30, weight=0.1, rng=seed)
    steps = (1, 3, 5)
    mean, full = problem.mean_at(steps), problem.service_at(steps)
    _, bound = price_directed_assignment(problem, mean, full, np.ones(3, dtype=bool))
    routings = np.random.default_rng(seed).dirichlet(np.ones(3), size=(500, 4))
    u = utility_with_optimal_shares(problem, routings * problem.counts[None, :, None], full, mean)
    assert (u <= bound + 1e-9).all()


def test_seeded_annealing_is_reproducible():
    problem = synthetic_problem(3, 4, 60, rng=3)
    routing = paper_routing(problem)
    first, second = anneal(problem, routing, rng=7), anneal(problem, routing, rng=7)
    assert first.plan.steps_per_model == second.plan.steps_per_model
    np.testing.assert_array_equal(first.plan.share_vector, second.plan.share_vector)
    np.testing.assert_array_equal(first.trajectory, second.trajectory)
    assert first.seed == 7
    a, b = propose(problem, rng=11), propose(problem, rng=11)
    np.testing.assert_array_equal(a.plan.routing_matrix, b.plan.routing_matrix)
    assert a.utility == b.utility


def test_callback_stops_annealing_and_says_so():
    problem = synthetic_problem(3, 4, 60, rng=3)
    seen = []
    result = anneal(problem, paper_routing(problem), rng=0, callback=lambda state: seen.append(state) or len(seen) == 5)
    assert result.nit == 5 and not result.success
    assert result.message == "Callback function requested to stop early by returning True"


def test_paper_routing_is_probability_of_best_score():
    mean = np.array([[30.0, 31.0, 29.0]])
    std = np.array([[3.0, 2.0, 4.0]])
    samples = np.random.default_rng(0).normal(mean, std, size=(400_000, 1, 3))
    empirical = np.bincount(samples[:, 0].argmax(axis=1), minlength=3) / samples.shape[0]
    np.testing.assert_allclose(probabilistic_assignment(mean, std)[0], empirical, atol=3e-3)


def test_baselines_behave_as_defined():
    problem = synthetic_problem(3, 4, 80, rng=5)
    defaults = problem.default_step_index
    best_model = problem.mean_at(defaults).argmax(axis=1)
    d = direct(problem, rng=0)
    np.testing.assert_array_equal(d.plan.routing_matrix.argmax(axis=1), best_model)
    assert set(np.unique(d.plan.routing_matrix)) <= {0.0, 1.0}
    r = random_assignment(problem, rng=0)
    np.testing.assert_allclose(r.plan.routing_matrix, 1 / 3)
    e = equal_allocation(problem)
    assert e.plan.step_index == defaults
    used = e.deployed
    np.testing.assert_allclose(e.plan.share_vector[used], problem.budget / used.sum())
    paper = paper_method(problem, rng=0)
    np.testing.assert_allclose(paper.plan.routing_matrix, paper_routing(problem))
    bound = optimal_step(problem)
    np.testing.assert_allclose(bound.plan.routing_matrix, paper.plan.routing_matrix)
    assert bound.utility >= paper.utility - 1e-9  # exhaustive steps with optimal shares bound the annealing
    assert bound.utility - paper.utility <= 0.005 * abs(bound.utility)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_proposed_beats_baselines_and_matches_exact(seed):
    for weight, load in [(0.0, 40), (0.02, 120), (0.1, 10), (0.2, 200)]:
        problem = synthetic_problem(3, 4, load, weight=weight, rng=seed)
        results = run_methods(
            problem, ["genedge", "direct-assignment", "random-assignment", "equal-allocation", "exact"], rng=0
        )
        proposed, exact = results["genedge"].utility, results["exact"]
        for name in ("direct-assignment", "random-assignment", "equal-allocation"):
            assert proposed >= results[name].utility - 1e-9, (weight, load, name)
        assert exact.utility - proposed <= 0.005 * abs(exact.utility)
        assert exact.upper_bound >= exact.utility - 1e-9


@pytest.mark.parametrize("seed", range(4))
def test_vertex_bound_bounds_every_routing_and_is_attained_by_whole_categories(seed):
    from genedge.optimizer.planners._assignment import vertex_bound

    problem = synthetic_problem(3, 3, 12, weight=0.3, rng=seed)
    steps = (2, 3, 4)
    mean, full = problem.mean_at(steps), problem.service_at(steps)
    bound = vertex_bound(problem, mean, full, np.ones(3, dtype=bool))
    routings = np.random.default_rng(seed).dirichlet(np.ones(3) * 0.5, size=(2000, 3))
    u = utility_with_optimal_shares(problem, routings * problem.counts[None, :, None], full, mean)
    assert (u <= bound + 1e-9).all()
    whole = np.eye(3)[np.array(list(itertools.product(range(3), repeat=3)))] * problem.counts[None, :, None]
    best_whole = utility_with_optimal_shares(problem, whole, full, mean).max()
    assert bound >= best_whole - 1e-9
    assert vertex_bound(problem, mean, full, np.ones(3, dtype=bool), max_vertices=10) is None


def test_exact_search_refuses_large_problems():
    with pytest.raises(ValueError, match="Expected at most 200000 step vectors for exact search"):
        exact_search(synthetic_problem(16, 11, 5000, rng=0))


def test_memory_limit_restricts_models_in_use():
    problem = _tiny_problem(0.0)
    limited = Problem(**{**problem.__dict__, "device_memory_bytes": int(9e9)})  # both models need 12e9
    result = propose(limited, rng=0)
    assert result.deployed.sum() == 1
    with pytest.raises(ValueError, match="do not fit"):
        evaluate(limited, np.full((2, 2), 0.5), (0, 0), np.array([0.5, 0.5]))


@pytest.mark.parametrize("seed", range(4))
def test_decoupled_bound_is_above_the_exact_certificate(seed):
    from genedge.optimizer.planners import utility_upper_bound

    problem = synthetic_problem(3, 4, 50, weight=0.05, rng=seed)
    exact = exact_search(problem)
    assert utility_upper_bound(problem) >= exact.upper_bound - 1e-9 >= exact.utility - 1e-9


def _shortfall_ok(problem: Problem, routing: np.ndarray, steps) -> bool:
    risk = (routing * problem.shortfall_at(steps)).sum(axis=1)
    return bool((risk <= problem.max_shortfall + 1e-9).all())


@pytest.mark.slow
def test_quality_floor_exact_equals_constrained_brute_force():
    base = _tiny_problem(1.0)  # at this weight the unconstrained optimum breaks the floor
    problem = Problem(**{**base.__dict__, "min_clipscore": 27.5, "max_shortfall": 0.2})
    result = exact_search(problem)
    assert _shortfall_ok(problem, result.plan.routing_matrix, result.plan.step_index)
    assert (result.shortfall <= 0.2 + 1e-9).all()
    best = _brute_force(problem, resolution=1000)  # fine: the optimum sits on the floor's boundary
    unconstrained = exact_search(base).utility
    assert best < unconstrained - 1e-3, "the floor must bind in this instance for the test to mean anything"
    assert result.utility >= best - 1e-9
    assert result.utility == pytest.approx(best, abs=1e-3)
    assert result.upper_bound >= result.utility - 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_proposed_plan_meets_the_quality_floor(seed):
    base = synthetic_problem(3, 4, 60, weight=0.1, rng=seed)
    top = base.grid_sizes[0] - 1
    # Feasible by construction: each category's best model at the most steps stays 1.2 σ above the floor.
    floor = float((base.mean_at((top,) * 3) - 1.2 * base.std_at((top,) * 3)).max(axis=1).min())
    problem = Problem(**{**base.__dict__, "min_clipscore": floor, "max_shortfall": 0.2})
    result = propose(problem, rng=0)
    assert _shortfall_ok(problem, result.plan.routing_matrix, result.plan.step_index)
    assert result.utility <= propose(base, rng=0).utility + 1e-9
    assert exact_search(problem).utility - result.utility <= 0.005 * abs(result.utility)


def test_unreachable_floor_is_a_clear_error():
    problem = Problem(**{**_tiny_problem().__dict__, "min_clipscore": 45.0, "max_shortfall": 0.01})
    for planner in (lambda: propose(problem, rng=0), lambda: exact_search(problem)):
        with pytest.raises(ValueError, match=r"No plan keeps P\(CLIPScore < 45\) <= 0.01 for every category"):
            planner()


def _reference_quantile(service, loads, q, batch=None):
    """Sort every request's delay (the last, partial request of a model weighted by its fraction)."""
    delays, weights = [], []
    batch = np.ones(len(service), dtype=int) if batch is None else batch
    for t, n, b in zip(service, loads, batch):
        if n <= 0:
            continue
        k = np.arange(1, int(np.ceil(n - 1e-9)) + 1, dtype=float)
        w = np.ones_like(k)
        w[-1] = n - (k.size - 1)
        delays.append(np.ceil(k / b) * t)
        weights.append(w)
    d, w = np.concatenate(delays), np.concatenate(weights)
    order = np.argsort(d, kind="stable")
    cumulative = np.cumsum(w[order])
    return float(d[order][np.searchsorted(cumulative, q * cumulative[-1] - 1e-9)])


def test_delay_quantile_matches_sorting_every_request():
    from genedge.optimizer.model._window_counts import window_delay_quantile

    rng = np.random.default_rng(0)
    for trial in range(500):
        m = int(rng.integers(1, 5))
        service = rng.uniform(0.1, 5, m)
        loads = np.where(rng.random(m) < 0.2, 0.0, rng.uniform(0.3, 40, m))
        batch = rng.integers(1, 5, m) if trial % 3 == 0 else None
        if trial % 2:
            loads = np.round(loads)
        if loads.sum() == 0:
            continue
        for q in (0.5, 0.95):
            expected = _reference_quantile(service, loads, q, batch)
            assert window_delay_quantile(service, loads, q, batch) == pytest.approx(expected)
    # Its cost does not grow with the requests: a billion is answered at once.
    assert window_delay_quantile(np.array([1.0, 2.0]), np.array([1e9, 5e8]), 0.95) == pytest.approx(9.5e8)


def test_evaluate_rejects_nan_routing_and_problems_reject_empty_categories():
    problem = _tiny_problem()
    with pytest.raises(ValueError, match="routing rows of non-negative probabilities"):
        evaluate(problem, np.array([[np.nan, 1.0], [0.0, 1.0]]), (0, 0), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="positive, finite request counts"):
        Problem(**{**problem.__dict__, "counts": np.array([6.0, 0.0])})


def test_baselines_plan_within_device_memory():
    problem = Problem(**{**_tiny_problem(0.05).__dict__, "device_memory_bytes": int(9e9)})
    for planner in (paper_method, direct, random_assignment, equal_allocation, optimal_step, exact_search):
        assert planner(problem, rng=0).deployed.sum() == 1


def _multistart(problem: Problem, starts: int, rng: np.random.Generator) -> float:
    """Best utility from local searches over routing (softmax-parametrized) for every step vector."""
    c, m = len(problem.categories), len(problem.models)
    best = -np.inf
    for steps in itertools.product(*(range(k) for k in problem.grid_sizes)):
        mean, full = problem.mean_at(steps), problem.service_at(steps)

        def negative(z, full=full, mean=mean):
            p = np.exp(z.reshape(c, m) - z.reshape(c, m).max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            return -float(utility_with_optimal_shares(problem, p * problem.counts[:, None], full, mean))

        for corner in range(m):  # whole categories on one model, which a softmax reaches only in the limit
            x = np.zeros((c, m))
            x[:, corner] = problem.counts
            best = max(best, float(utility_with_optimal_shares(problem, x, full, mean)))
        for _ in range(starts):
            found = minimize(
                negative,
                rng.normal(0, 2, c * m),
                method="Nelder-Mead",
                options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-10},
            )
            best = max(best, -found.fun)
    return best


@pytest.mark.slow
@pytest.mark.parametrize("requests", [10, 25])
def test_proposed_matches_an_independent_search_at_small_loads(requests):
    # Where the relaxation's bound alone is loosest in the sweep: half a GPU, w = 0.1, 10 or 25 requests.
    from genedge import data
    from genedge.calibrate import load_table
    from genedge.optimizer import Workload

    table = load_table(data.path("tables", "reference-a100.json"))
    mix = {"Basic": 272, "Detail": 544, "Imagination": 150, "Complex": 113}
    full = Problem.from_table(table, Workload.from_mix(mix, requests), budget=0.5, weight=0.1)
    # Every step vector times many starts is slow: search the grid's even steps only, where the plan sits.
    keep = [np.array([0, 2, 4, 6])] * 3
    problem = Problem(
        **{
            **full.__dict__,
            "steps": tuple(g[k] for g, k in zip(full.steps, keep)),
            "quality_mean": tuple(q[:, k] for q, k in zip(full.quality_mean, keep)),
            "quality_std": tuple(q[:, k] for q, k in zip(full.quality_std, keep)),
            "service_s": tuple(t[k] for t, k in zip(full.service_s, keep)),
            "energy_j": tuple(e[k] for e, k in zip(full.energy_j, keep)),
            "default_step_index": (3, 3, 3),
        }
    )
    proposed = propose(problem, rng=0).utility
    assert proposed >= _multistart(problem, starts=2, rng=np.random.default_rng(0)) - 1e-6


def test_floor_met_only_between_default_and_most_steps_is_still_found():
    # Quality peaks at the middle step: the defaults (fewest) and the most steps both break the floor.
    grid = np.array([10, 25, 40])
    problem = Problem(
        models=("peaked", "flat"),
        categories=("only",),
        counts=np.array([10.0]),
        steps=(grid, grid),
        quality_mean=(np.array([[28.0, 33.0, 29.0]]), np.array([[27.0, 27.5, 28.0]])),
        quality_std=(np.ones((1, 3)), np.ones((1, 3))),
        service_s=(0.1 + 0.02 * grid, 0.1 + 0.01 * grid),
        default_step_index=(0, 0),
        memory_bytes=np.array([1e9, 1e9]),
        budget=1.0,
        weight=0.05,
        min_clipscore=31.0,
        max_shortfall=0.05,
    )
    result = propose(problem, rng=0)
    assert result.plan.steps["peaked"] == 25 and result.loads[0] == pytest.approx(10)
    assert result.utility == pytest.approx(exact_search(problem).utility)


def _bumpy_problem(instance: int) -> Problem:
    """3 models × 4 categories × 5 step choices whose scores are not monotone in steps: each model's mean
    score at each step moves by a draw of σ = 1 point, so the step vectors' utilities have local optima."""
    base = synthetic_problem(3, 4, 60, step_grid=(10, 20, 30, 40, 50), rng=instance)
    bumps = np.random.default_rng(1000 + instance)
    return dataclasses.replace(
        base, quality_mean=tuple(q + bumps.normal(0, 1.0, (1, q.shape[1])) for q in base.quality_mean)
    )


@pytest.mark.parametrize("instance", [2, 13, 14])
def test_few_step_vectors_are_enumerated_so_every_seed_finds_the_optimum(instance):
    # Annealing its 600 iterations over these 125 step vectors missed the optimum at 4 to 8 of these 8 seeds.
    problem = _bumpy_problem(instance)
    exact = exact_search(problem)
    plans = [propose(problem, rng=seed) for seed in range(8)]
    for result in plans:
        assert result.utility == pytest.approx(exact.utility, rel=1e-9)
        assert result.plan.step_index == plans[0].plan.step_index
        np.testing.assert_array_equal(result.plan.routing_matrix, plans[0].plan.routing_matrix)
        np.testing.assert_array_equal(result.trajectory, plans[0].trajectory)
    # One row per step vector: (index, its utility on the relaxation, best so far, temperature 0).
    rows = plans[0].trajectory
    assert plans[0].nit == len(rows) == 5**3
    np.testing.assert_array_equal(rows[:, 0], np.arange(1, 5**3 + 1))
    np.testing.assert_array_equal(rows[:, 2], np.maximum.accumulate(rows[:, 1]))
    assert (rows[:, 3] == 0).all()


def test_more_step_vectors_than_iterations_are_annealed():
    problem = _bumpy_problem(2)
    first, second = (propose(problem, rng=seed, maxiter=100) for seed in (0, 1))
    assert first.nit == second.nit == 100 and (first.trajectory[:, 3] > 0).all()
    assert not np.array_equal(first.trajectory, second.trajectory)


def test_tiny_loads_count_as_unused_everywhere():
    problem = synthetic_problem(2, 2, 10, rng=0)
    routing = np.array([[1.0, 0.0], [1 - 1e-17, 1e-17]])
    steps = problem.default_step_index
    shares = optimal_shares(problem.service_at(steps), problem.counts @ routing, problem.budget)
    ev = evaluate(problem, routing, steps, shares)
    assert np.isfinite(ev.p95_delay_s) and ev.p95_delay_s > 0


def test_every_method_is_a_planner_with_one_signature():
    from genedge.optimizer.planners import PlanResult

    assert METHODS["genedge"] is propose and METHODS["exact"] is exact_search
    for name, planner in METHODS.items():
        params = list(inspect.signature(planner).parameters.values())
        assert params[0].name == "problem" and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, name
        assert [(p.name, p.kind, p.default) for p in params[1:3]] == [
            ("rng", inspect.Parameter.KEYWORD_ONLY, None),
            ("callback", inspect.Parameter.KEYWORD_ONLY, None),
        ], name
        # Anything more is a tuning option: keyword-only, with a default.
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not p.empty for p in params[3:]), name
        assert inspect.signature(planner).return_annotation in (PlanResult, "PlanResult"), name
    problem = synthetic_problem(2, 2, 12, rng=1)
    for name, planner in METHODS.items():
        result = planner(problem, rng=3, callback=None)
        assert result.method == name


@pytest.mark.parametrize("name", ["genedge", "paper", "direct-assignment", "random-assignment", "exact"])
def test_callback_stops_every_searching_planner_and_the_result_says_so(name):
    problem = synthetic_problem(3, 4, 60, rng=3)
    full = METHODS[name](problem, rng=0)
    seen = []
    stop_after = 1 if name == "exact" else 4

    def callback(state):
        seen.append(state)
        return len(seen) == stop_after

    result = METHODS[name](problem, rng=0, callback=callback)
    assert len(seen) == stop_after and all(isinstance(state, PlanState) for state in seen)
    assert [state.iteration for state in seen] == list(range(1, stop_after + 1))
    assert result.status is PlanStatus.CALLBACK_STOP and not result.success
    assert result.message == "Callback function requested to stop early by returning True"
    assert result.nit == stop_after < full.nit
    assert full.status is PlanStatus.SUCCESS and full.success
    if name == "exact":
        # Stopped after one step vector, the certificate still covers every plan.
        assert result.upper_bound >= full.utility - 1e-9 and result.utility <= full.utility + 1e-9


@pytest.mark.parametrize("name", ["equal-allocation", "optimal-step"])
def test_planners_without_iterations_never_call_the_callback(name):
    calls = []
    result = METHODS[name](
        synthetic_problem(3, 4, 60, rng=3), rng=0, callback=lambda state: calls.append(state) or True
    )
    assert calls == [] and result.success


def test_status_is_an_enum_and_success_and_message_follow_from_it():
    assert [(s.name, int(s)) for s in PlanStatus] == [("SUCCESS", 0), ("CALLBACK_STOP", 2), ("CLOSED_FORM", 3)]
    assert [s.success for s in PlanStatus] == [True, False, True]
    problem = synthetic_problem(2, 2, 12, rng=1)
    closed = equal_allocation(problem)
    assert closed.status is PlanStatus.CLOSED_FORM and closed.status == 3 and closed.success
    assert closed.message == "Closed-form plan: nothing to search" == PlanStatus.CLOSED_FORM.message
    searched = propose(problem, rng=0)
    assert searched.status is PlanStatus.SUCCESS and searched.message == "Optimization terminated successfully"


def test_plan_time_is_a_field_every_planner_sets():
    from genedge.optimizer.planners import PlanResult, make_result

    problem = synthetic_problem(2, 2, 12, rng=1)
    for name, result in run_methods(problem, rng=0).items():
        assert isinstance(result.plan_time_s, float) and result.plan_time_s > 0, name
    assert propose(problem, rng=0).plan_time_s > 0  # called directly, not only through run_methods
    routing = np.array([[1.0, 0.0], [0.0, 1.0]])
    bare = make_result(problem, "by hand", routing, (0, 0), np.array([0.5, 0.5]))
    assert bare.plan_time_s is None
    assert "extra" not in {f.name for f in dataclasses.fields(PlanResult)}


def test_one_deployed_threshold_for_the_system_model_the_plan_file_and_the_printed_plan():
    from genedge.cli._common import format_plan
    from genedge.optimizer.plan_file import plan_to_dict
    from genedge.optimizer.planners import make_result

    problem = _tiny_problem()
    steps = (1, 1)
    n_hard = problem.counts[1]
    # Loads on "slow" just below and just above the threshold (the old thresholds, 1e-12 and 1e-9, disagreed here).
    for load, deployed in ((DEPLOYED_MIN_REQUESTS / 10, False), (DEPLOYED_MIN_REQUESTS * 10, True)):
        routing = np.array([[1.0, 0.0], [1 - load / n_hard, load / n_hard]])
        shares = optimal_shares(problem.service_at(steps), problem.counts @ routing, problem.budget)
        result = make_result(problem, "by hand", routing, steps, shares)
        assert result.loads[1] == pytest.approx(load)
        assert result.deployed.tolist() == [True, deployed]
        assert (shares[1] > 0) == deployed  # no share for a model that is not deployed
        document = plan_to_dict(problem, result)
        assert [m["deployed"] for m in document["models"].values()] == [True, deployed]
        header = format_plan(result).splitlines()[1].split()
        assert header == (["category", "fast", "slow"] if deployed else ["category", "fast"])
        assert ("not deployed: slow" in format_plan(result)) == (not deployed)


def _reference_problem(**options):
    from genedge import data
    from genedge.calibrate import load_table
    from genedge.optimizer import Workload

    table = load_table(data.path("tables", "reference-a100.json"))
    mix = {"Basic": 272, "Detail": 544, "Imagination": 150, "Complex": 113}
    return Problem.from_table(table, Workload.from_mix(mix, 40), **options)


def test_models_too_big_for_the_memory_limit_are_left_out_and_every_method_plans_on_the_rest():
    from genedge.optimizer.plan_file import plan_to_dict

    problem = _reference_problem(device_memory_bytes=10 * 2**30)  # sdxl needs 14e9 bytes, 13.04 GiB
    assert problem.models == ("sd15", "sd21")
    assert dict(problem.left_out) == {"sdxl": 14e9}
    assert problem.left_out_reasons() == {"sdxl": "needs 13.04 GiB, limit 10.00 GiB"}
    assert len(problem.deployable_sets()) == 1  # sd15 and sd21 fit together
    results = run_methods(problem, rng=0)
    assert set(results) == set(METHODS)
    for result in results.values():
        assert result.plan.models == ("sd15", "sd21") and result.deployed.any()
    exact = results["exact"]
    assert exact.upper_bound >= results["genedge"].utility - 1e-9
    inputs = plan_to_dict(problem, results["genedge"])["inputs"]
    assert inputs["left_out"] == {"sdxl": {"peak_memory_bytes": 14e9, "reason": "needs 13.04 GiB, limit 10.00 GiB"}}
    assert inputs["models"] == ["sd15", "sd21"]


def test_a_memory_limit_no_model_fits_in_is_one_clear_error():
    with pytest.raises(ValueError) as info:
        _reference_problem(device_memory_bytes=3 * 2**30)
    assert str(info.value) == (
        "No model fits in the 3.00 GiB of device memory: sd15 needs 4.10 GiB, sd21 needs 4.84 GiB, sdxl needs 13.04 GiB"
    )


def test_a_problem_built_by_hand_still_refuses_a_model_bigger_than_the_device():
    base = _tiny_problem()
    with pytest.raises(ValueError, match=r"models \['slow'\] need more memory than the device's 6.52 GiB"):
        Problem(**{**base.__dict__, "device_memory_bytes": int(7e9)})
    with pytest.raises(ValueError, match=r"Expected left-out models to be out of the problem, but \['fast'\]"):
        Problem(**{**base.__dict__, "left_out": {"fast": 4e9}})
