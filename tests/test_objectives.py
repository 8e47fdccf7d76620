"""The planner's objectives on tiny problems, against brute force over every decision.

Each problem has two models, two categories and two steps per model, so a brute force can try every
step vector and batch size, a grid of routings and a grid of shares, and judge each plan with
:func:`genedge.optimizer.model.evaluate`, the one definition of a plan's figures. The brute force
only ever keeps a feasible plan, so its best is a lower bound on the optimum: a planner must reach
it (up to its own share grids), and a certificate must never fall below it.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest

from genedge.optimizer.model import Problem, Slo, deployed_mask, evaluate
from genedge.optimizer.model import _queueing as queueing
from genedge.optimizer.planners import METHODS, exact_search, make_result, propose
from genedge.optimizer.simulation import simulate_plan

_GRID = np.array([10, 20])
# Seconds per image at full share, o + τ·s: "fast" is cheap and worse on "hard", "slow" is good at both.
_FAST_S = 0.1 + 0.02 * _GRID
_SLOW_S = 0.2 + 0.06 * _GRID
# A batch of two takes 1.3 single calls: 0.65 of a call per image.
_BATCH_2 = 1.3


def _problem(
    *,
    arrivals: str = "window",
    counts: tuple[float, float] = (6.0, 4.0),
    weight: float = 0.05,
    slo: Slo | None = None,
    energy_price: float = 0.0,
    realization: str = "deterministic",
    batching: bool = False,
    budget: float = 1.0,
) -> Problem:
    """Two models ("fast", "slow") × two categories ("easy", "hard"), steps 10 and 20."""
    batch = {}
    if batching:
        batch = {
            "batch_sizes": (np.array([1, 2]), np.array([1, 2])),
            "batch_service_s": (np.stack([_FAST_S, _BATCH_2 * _FAST_S]), np.stack([_SLOW_S, _BATCH_2 * _SLOW_S])),
        }
    return Problem(
        models=("fast", "slow"),
        categories=("easy", "hard"),
        counts=np.array(counts, dtype=float),
        steps=(_GRID, _GRID),
        quality_mean=(np.array([[28.0, 30.0], [25.0, 27.0]]), np.array([[29.0, 31.0], [29.0, 31.5]])),
        quality_std=(np.full((2, 2), 3.0), np.full((2, 2), 3.0)),
        service_s=(_FAST_S, _SLOW_S),
        default_step_index=(1, 1),
        memory_bytes=np.array([4e9, 8e9]),
        budget=budget,
        weight=weight,
        arrivals=arrivals,
        realization=realization,
        slo=slo,
        energy_price=energy_price,
        # Joules per image at full share: the slow model costs about three times the fast one.
        energy_j=(50 + 5.0 * _GRID, 120 + 15.0 * _GRID),
        **batch,
    )


_OPEN = {"arrivals": "open", "counts": (0.6, 0.4)}
#: Objective → the problem's settings.
CASES = {
    "window-energy": {"energy_price": 0.005},
    "window-slo": {"slo": Slo(6.0, 0.9)},
    "window-slo-category": {"slo": Slo(6.0, 0.9, "category")},
    "open": _OPEN,
    "open-slo": {**_OPEN, "slo": Slo(4.0, 0.95)},
    "open-slo-category": {**_OPEN, "slo": Slo(4.0, 0.95, "category")},
    "quality-slo": {"weight": 0.0, "slo": Slo(6.0, 0.9)},
    "window-random": {"realization": "random"},
    "window-batch": {"batching": True},
    "window-batch-slo": {"batching": True, "slo": Slo(4.0, 0.8)},
    "open-batch": {"arrivals": "open", "counts": (1.0, 0.6), "batching": True},
}


def _case(name: str) -> Problem:
    return _problem(**CASES[name])


# ---------------------------------------------------------------------------------------------
# Reference figures, derived here from DESIGN §3 and §3.2 without the planner's code


def _md1_response_cdf(x: float, rate: float, call: float) -> float:
    """P(T ≤ x) of an M/D/1 queue by Erlang's formula, P(W ≤ w) = (1 − ρ) Σ_{k ≤ w/t} [λ(kt − w)]^k / k! e^{−λ(kt − w)}
    with w = x − t (accurate to ~1e-9 for the w/t ≤ 15 used here)."""
    wait = x - call
    if wait < 0:
        return 0.0
    rho = rate * call
    total = sum(
        (rate * (k * call - wait)) ** k / math.factorial(k) * math.exp(-rate * (k * call - wait))
        for k in range(math.floor(wait / call * (1 + 1e-12)) + 1)
    )
    return (1 - rho) * total


def _binomial_pmf(n: int, q: float) -> np.ndarray:
    return np.array([math.comb(n, k) * q**k * (1 - q) ** (n - k) for k in range(n + 1)])


def _window_delays(load: int, call: float, batch: int) -> np.ndarray:
    """Delays of ``load`` requests served FIFO in batches of up to ``batch``: ⌈i/b⌉·S, i = 1..load."""
    return np.array([math.ceil(i / batch) * call for i in range(1, load + 1)])


def _random_window(problem: Problem, routing: np.ndarray, call: np.ndarray, size: np.ndarray) -> tuple:
    """Two models under random routing, by enumerating how many of each category's requests go to
    model 0 (the rest to model 1): (summed delay per model, requests within the SLO per model, per category)."""
    counts = np.round(problem.counts).astype(int)
    slo = math.inf if problem.slo is None else problem.slo.seconds * (1 + 1e-12)
    mass, served, within = np.zeros(2), np.zeros(2), np.zeros(len(counts))
    pmfs = [_binomial_pmf(n, q) for n, q in zip(counts, routing[:, 0])]
    for first in itertools.product(*(range(n + 1) for n in counts)):
        weight = math.prod(pmf[k] for pmf, k in zip(pmfs, first))
        if weight == 0:  # also every way of routing to a model that gets no requests (its call time is inf)
            continue
        on = (np.array(first), counts - np.array(first))
        for m in range(2):
            load = int(on[m].sum())
            if load == 0:
                continue
            delays = _window_delays(load, call[m], int(size[m]))
            hit = float((delays <= slo).sum())
            mass[m] += weight * delays.sum()
            served[m] += weight * hit
            # In a random arrival order every request on m is within the SLO with chance hit / load.
            within += weight * on[m] * hit / load
    return mass, served, within


def _fifo_window_model(load: float, call: float, size: int, slo) -> tuple[float, float]:
    """Delay mass and requests within the SLO of one model's FIFO window of ``load`` requests."""
    # ⌊N⌋ whole requests, then one weighing the fraction N − ⌊N⌋.
    whole = math.floor(load + 1e-9)
    weight = np.array([1.0] * whole + [load - whole])
    delays = _window_delays(whole + 1, call, size)
    # Without batching the mean is the paper's t·N(N + 1)/2, smooth in a fractional N.
    mass = float(weight @ delays) if size > 1 else call * load * (load + 1) / 2
    served = 0.0 if slo is None else float(weight @ (delays <= slo.seconds * (1 + 1e-12)))
    return mass, served


def _open_model(load: float, call: float, size: int, slo) -> tuple[float, float]:
    """Delay mass and requests within the SLO (per second) of one stable M/D/1 (or bulk-service) queue."""
    rho = load * call / size
    if size == 1:
        mean = call + rho * call / (2 * (1 - rho))
    else:
        mean = float(queueing.bulk_mean_response(load, call, size))
    if slo is None:
        return load * mean, 0.0
    assert size == 1, "reference attainment under batching is not derived here"
    return load * mean, load * _md1_response_cdf(slo.seconds, load, call)


def reference(problem: Problem, routing, steps, shares, batch=None) -> dict:
    """Mean delay, SLO attainment (overall, per category), energy and utility of a plan, request by request.

    Window: model m's requests complete at ⌈i/b_m⌉·S_m/r_m, i = 1..N_m; deterministic routing takes
    N_m = Σ_c p_cm n_c (a fractional last request counting with its fraction; the mean without batching
    is the paper's smooth t·N(N + 1)/2), random routing averages
    over every way the requests can be routed (two models), each category's requests on a model in a
    random place in its queue. Open: each model an M/D/1 queue (b_m = 1; the bulk-service mean
    for b_m > 1 comes from :mod:`genedge.optimizer.model._queueing`).
    """
    routing = np.asarray(routing, dtype=float)
    batch = problem.base_batch_index if batch is None else tuple(batch)
    x = problem.counts[:, None] * routing
    loads = x.sum(axis=0)
    used = deployed_mask(loads)
    total = problem.n_requests
    full = problem.call_service_at(steps, batch)
    size = problem.max_batch_at(batch)
    slo = problem.slo
    mass, served = np.zeros(2), np.zeros(2)
    within = None  # requests within the SLO per category, where not Σ_m p_cm · A_m
    stable = True
    if problem.arrivals == "window" and problem.realization == "random":
        calls = np.where(used, full / np.where(used, shares, 1.0), np.inf)
        mass, served, within = _random_window(problem, routing, calls, size)
    for m in np.flatnonzero(used):
        call = full[m] / shares[m]
        if problem.arrivals == "open":
            if loads[m] * call / size[m] >= 1:
                stable = False
                continue
            mass[m], served[m] = _open_model(loads[m], call, int(size[m]), slo)
        elif problem.realization == "deterministic":
            mass[m], served[m] = _fifo_window_model(loads[m], call, int(size[m]), slo)
    quality = float((x * problem.mean_at(steps)).sum()) / total
    energy = float(loads @ problem.energy_at(steps)) / total
    out = {"stable": stable, "quality": quality, "energy": energy}
    if not stable:
        return {**out, "delay": math.inf, "utility": -math.inf, "feasible": False}
    delay = float(mass.sum()) / total
    utility = quality - problem.weight * delay - problem.energy_price * energy
    out.update(delay=delay, utility=utility, feasible=True)
    if slo is not None:
        per_model = np.where(used, served / np.where(used, loads, 1.0), 1.0)
        out["attainment"] = float(served.sum()) / total
        out["category_attainment"] = ((x * per_model).sum(axis=1) if within is None else within) / problem.counts
        attained = [out["attainment"]] if slo.scope == "overall" else out["category_attainment"]
        out["feasible"] = bool(min(attained) >= slo.attainment - 1e-9)
    return out


# ---------------------------------------------------------------------------------------------
# Brute force


def _share_vectors(problem: Problem, routing: np.ndarray, first: np.ndarray) -> list[np.ndarray]:
    """Share vectors to try: the budget split (r, R − r) for r in ``first`` when both models serve
    requests, else all of it on the one that does (more share never hurts a plan)."""
    used = deployed_mask(problem.counts @ routing)
    if used.all():
        return [np.array([r, problem.budget - r]) for r in first]
    return [np.where(used, problem.budget, 0.0)]


def _scan(problem: Problem, plans, keep: list, top: int) -> None:
    """Score ``plans`` (steps, batch, routing, shares) with :func:`reference`; keep the ``top`` best feasible."""
    for steps, batch, routing, shares in plans:
        ref = reference(problem, routing, steps, shares, batch)
        if ref["feasible"]:
            keep.append((ref["utility"], steps, batch, routing, shares))
    keep.sort(key=lambda item: -item[0])
    del keep[top:]


@functools.cache
def brute_force(name: str, p_step: float = 0.125, r_step: float = 0.025, refine: int = 5, top: int = 5) -> dict:
    """The best feasible plan over every step vector and batch size, routings p ∈ {0, p_step, …, 1} per
    category and shares r ∈ {r_step, …, R − r_step}, refined around the best on grids ``refine`` times
    finer (one coarse step either side), as judged by :func:`evaluate`.

    :func:`reference` ranks the grid (it agrees with ``evaluate`` to round-off, see
    ``test_reference_figures_equal_evaluate``); ``evaluate`` then judges the ``top`` best, and the best
    it finds feasible is the answer.
    """
    problem = _case(name)
    budget = problem.budget
    fractions = np.linspace(0.0, 1.0, round(1 / p_step) + 1)
    coarse = budget * np.arange(1, round(1 / r_step)) * r_step
    keep: list = []
    for steps in itertools.product(*(range(k) for k in problem.grid_sizes)):
        for batch in itertools.product(*(range(k) for k in problem.batch_grid_sizes)):
            plans = (
                (steps, batch, routing, shares)
                for a, b in itertools.product(fractions, fractions)
                for routing in [np.array([[a, 1 - a], [b, 1 - b]])]
                for shares in _share_vectors(problem, routing, coarse)
            )
            _scan(problem, plans, keep, top)
    coarse_best = keep[0][0] if keep else -math.inf

    def around(x: float, step: float, lo: float, hi: float) -> np.ndarray:
        return np.unique(np.clip(x + step * np.linspace(-1, 1, 2 * refine + 1), lo, hi))

    edge = budget * r_step / refine
    for _, steps, batch, routing, shares in list(keep[:2]):
        near = around(shares[0], budget * r_step, edge, budget - edge)
        plans = (
            (steps, batch, fine, r)
            for a in around(routing[0, 0], p_step, 0.0, 1.0)
            for b in around(routing[1, 0], p_step, 0.0, 1.0)
            for fine in [np.array([[a, 1 - a], [b, 1 - b]])]
            for r in _share_vectors(problem, fine, near)
        )
        _scan(problem, plans, keep, top)
    for _, steps, batch, routing, shares in keep:
        ev = evaluate(problem, routing, steps, shares, batch)
        if ev.feasible:
            return {
                "utility": ev.utility,
                "coarse_utility": coarse_best,
                "steps": steps,
                "batch": batch,
                "routing": routing,
                "shares": shares,
            }
    return {"utility": -math.inf, "coarse_utility": coarse_best}


# ---------------------------------------------------------------------------------------------
# The reference figures are evaluate's (so the brute force judges as evaluate does)

# An extra setting the cross-check covers beyond the brute-force cases: an SLO under random routing.
_CROSS_CHECK = {
    **CASES,
    "window-random-slo": {"realization": "random", "slo": Slo(6.0, 0.9)},
}
_SLOW_CROSS_CHECK = {"open-batch", "window-random", "window-random-slo"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_CROSS_CHECK else n for n in _CROSS_CHECK]
)
def test_reference_figures_equal_evaluate(name):
    problem = _problem(**_CROSS_CHECK[name])
    rng = np.random.default_rng(7)
    stable = 0
    for _ in range(12):
        a, b = rng.choice(np.linspace(0.0, 1.0, 9), 2)
        routing = np.array([[a, 1 - a], [b, 1 - b]])
        steps = tuple(int(k) for k in rng.integers(0, 2, 2))
        batch = tuple(int(rng.integers(0, k)) for k in problem.batch_grid_sizes)
        first = float(rng.uniform(0.1, 0.9))
        shares = _share_vectors(problem, routing, [first])[0]
        ev = evaluate(problem, routing, steps, shares, batch)
        ref = reference(problem, routing, steps, shares, batch)
        assert ev.stable == ref["stable"]
        assert ev.feasible == ref["feasible"]
        assert ev.mean_quality == pytest.approx(ref["quality"], rel=1e-12)
        assert ev.mean_energy_j == pytest.approx(ref["energy"], rel=1e-12)
        if not ref["stable"]:
            assert ev.utility == -math.inf
            continue
        stable += 1
        assert ev.mean_delay_s == pytest.approx(ref["delay"], rel=1e-9)
        assert ev.utility == pytest.approx(ref["utility"], rel=1e-12, abs=1e-9)
        if problem.slo is not None:
            assert ev.attainment == pytest.approx(ref["attainment"], abs=1e-9)
            if problem.realization == "deterministic":  # random: see the test below
                np.testing.assert_allclose(ev.category_attainment, ref["category_attainment"], atol=1e-9)
    assert stable >= 3  # the draws exercise the figures, not just the instability path


# ---------------------------------------------------------------------------------------------
# (a) the planners reach the brute force; (b) the certificate is never below it

# The planners' shares are certified to within SHARE_TOL points of the best for their routing; their routings
# are polished by moves whose amounts end on a grid (1/32 of what the source model holds), which the brute
# force's finer routing grid can beat: by 3.0e-4 points on "window-slo-category". Every shortfall seen beyond
# that is over 0.08 points.
_PLANNER_TOL = 5e-4


@pytest.mark.slow
@pytest.mark.parametrize("planner", ["genedge", "exact"])
@pytest.mark.parametrize("name", list(CASES))
def test_planners_reach_the_brute_force(name, planner):
    problem = _case(name)
    best = brute_force(name)
    assert math.isfinite(best["utility"])
    result = propose(problem, rng=0) if planner == "genedge" else exact_search(problem)
    assert result.feasible and result.stable
    assert result.utility >= best["utility"] - _PLANNER_TOL


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_certificate_is_never_below_a_feasible_plan(name):
    result = exact_search(_case(name))
    best = brute_force(name)
    assert result.upper_bound is not None
    assert result.upper_bound >= best["utility"] - 1e-9 * abs(best["utility"])
    assert result.upper_bound >= result.utility - 1e-9 * abs(result.utility)


def test_the_split_plan_a_binding_slo_needs_is_found_and_certified():
    """The smallest witness of a binding SLO's split plan (reached only by polishing the infeasible
    whole-category routing; whole categories alone reach 29.416): 10 requests, p90 ≤ 6 s."""
    problem = _case("window-slo")
    split = evaluate(problem, np.array([[1.0, 0.0], [0.5, 0.5]]), (1, 1), np.array([0.675, 0.325]))
    # fast: 8 requests at 0.5/0.675 s each, all within 6 s; slow: 2 at 1.4/0.325 s, the first within.
    assert split.feasible and split.attainment == pytest.approx(0.9)
    assert split.utility == pytest.approx(29.7 - 0.05 * (0.5 / 0.675 * 36 + 1.4 / 0.325 * 3) / 10)
    exact = exact_search(problem)
    assert exact.upper_bound >= split.utility
    assert propose(problem, rng=0).utility >= split.utility - _PLANNER_TOL
    assert exact.utility >= split.utility - _PLANNER_TOL


# ---------------------------------------------------------------------------------------------
# (c) every method reports evaluate's figures for its plan

_FIGURES = (
    "mean_quality",
    "mean_delay_s",
    "p95_delay_s",
    "p99_delay_s",
    "utility",
    "attainment",
    "mean_energy_j",
    "stable",
    "feasible",
)
_FAST_METHOD_CASES = {"window-energy", "window-slo", "window-batch"}


@pytest.mark.parametrize(
    "name", [n if n in _FAST_METHOD_CASES else pytest.param(n, marks=pytest.mark.slow) for n in CASES]
)
def test_every_method_reports_the_figures_of_its_plan(name):
    problem = _case(name)
    results = {method: planner(problem, rng=0) for method, planner in METHODS.items()}
    bound = results["exact"].upper_bound
    for method, result in results.items():
        plan = result.plan
        assert plan.routing_matrix.shape == (2, 2)
        np.testing.assert_allclose(plan.routing_matrix.sum(axis=1), 1.0, atol=1e-6)
        assert (plan.share_vector >= 0).all() and plan.share_vector.sum() <= problem.budget * (1 + 1e-9)
        assert plan.steps_per_model == tuple(int(g[k]) for g, k in zip(problem.steps, plan.step_index))
        sizes = problem.max_batch_at(plan.batch_index)
        assert plan.batch_per_model == tuple(int(b) for b in sizes)
        ev = evaluate(problem, plan.routing_matrix, plan.step_index, plan.share_vector, plan.batch_index)
        for field in _FIGURES:
            assert getattr(result, field) == getattr(ev, field), (method, field)
        for field in ("loads", "service_s", "category_attainment", "utilization"):
            expected = getattr(ev, field)
            if expected is None:
                assert getattr(result, field) is None, (method, field)
            else:
                np.testing.assert_array_equal(getattr(result, field), expected, err_msg=f"{method} {field}")
        # The reported figures are the reference ones too, not only evaluate's.
        ref = reference(problem, plan.routing_matrix, plan.step_index, plan.share_vector, plan.batch_index)
        assert result.feasible == ref["feasible"], method
        if result.stable:
            assert result.utility == pytest.approx(ref["utility"], abs=1e-9), method
        if result.feasible:
            assert result.utility <= bound + 1e-9 * abs(bound), method
    assert results["exact"].feasible and results["genedge"].feasible


# ---------------------------------------------------------------------------------------------
# Random routing in the window model


def test_random_routing_adds_the_variance_of_the_loads_to_the_window_delay():
    routing = np.array([[0.5, 0.5], [0.25, 0.75]])
    steps, shares = (0, 1), np.array([0.4, 0.6])
    random, planned = _problem(realization="random"), _problem()
    counts = random.counts
    loads = counts @ routing  # N̄ = (4, 6)
    variance = (counts[:, None] * routing * (1 - routing)).sum(axis=0)  # Σ_c n_c p (1 − p) = (2.25, 2.25)
    call = np.array([_FAST_S[0], _SLOW_S[1]]) / shares
    by_formula = float((call * (loads**2 + variance + loads) / 2).sum() / counts.sum())
    at_expected_loads = float((call * loads * (loads + 1) / 2).sum() / counts.sum())
    ev = evaluate(random, routing, steps, shares)
    assert ev.mean_delay_s == pytest.approx(by_formula, rel=1e-12)
    assert evaluate(planned, routing, steps, shares).mean_delay_s == pytest.approx(at_expected_loads, rel=1e-12)
    result = make_result(random, "split", routing, steps, shares)
    check = simulate_plan(random, result, replications=4000, rng=5)
    assert check.predicted_delay_s == pytest.approx(ev.mean_delay_s, rel=1e-12)
    assert check.plan_delay_s == ev.mean_delay_s
    # 4 standard errors: a false alarm about once in 16,000 runs; the variance term (0.35 s) is
    # over ten of them, so the simulation tells the two figures apart.
    assert abs(check.mean_delay_s - ev.mean_delay_s) <= 4 * check.mean_delay_se_s
    assert ev.mean_delay_s - at_expected_loads > 10 * check.mean_delay_se_s


def test_random_routing_category_attainment_is_the_expectation():
    problem = _problem(realization="random", slo=Slo(3.0, 0.9, "category"))
    routing = np.array([[0.5, 0.5], [0.9, 0.1]])
    ev = evaluate(problem, routing, (0, 0), np.array([0.5, 0.5]))
    ref = reference(problem, routing, (0, 0), np.array([0.5, 0.5]))
    assert ev.attainment == pytest.approx(ref["attainment"], abs=1e-12)
    # Exact: (0.5093, 0.7150) (a simulation of 200,000 windows gives 0.5096, 0.7147); evaluate: (0.5188, 0.7009).
    np.testing.assert_allclose(ev.category_attainment, ref["category_attainment"], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Stability under open arrivals


def test_rates_no_plan_can_serve_are_refused_naming_the_fastest_model():
    # Everything on "fast" at 10 steps, 0.3 s per image: 4 requests/s load the whole device to 1.2.
    with pytest.raises(ValueError, match=r"'fast' at 10 steps \(0\.3 s per image.*ρ = 1\.20 >= 1.*below 3\.333"):
        _problem(arrivals="open", counts=(3.0, 1.0))
    # Batches of two cost 0.195 s per image: 6 requests/s load it to 1.17.
    with pytest.raises(ValueError, match=r"'fast' at 10 steps, batch 2 \(0\.195 s per image.*ρ = 1\.17 >= 1"):
        _problem(arrivals="open", counts=(4.0, 2.0), batching=True)
    # Servable: just under the capacity, twice the budget, or with batches.
    assert _problem(arrivals="open", counts=(3.0, 0.3)).n_requests == pytest.approx(3.3)
    _problem(arrivals="open", counts=(3.0, 1.0), budget=2.0)
    _problem(arrivals="open", counts=(3.0, 1.0), batching=True)


def test_a_plan_with_an_unstable_queue_has_infinite_delays_and_no_utility():
    problem = _problem(arrivals="open", counts=(0.6, 0.4), slo=Slo(4.0, 0.95))
    routing = np.array([[1.0, 0.0], [0.0, 1.0]])
    shares = np.array([0.5, 0.5])  # "slow" at 20 steps: 0.4/s × 2.8 s = 1.12
    ev = evaluate(problem, routing, (1, 1), shares)
    np.testing.assert_allclose(ev.utilization, [0.6 * 1.0, 0.4 * 2.8])
    assert not ev.stable and not ev.feasible
    assert ev.utility == -math.inf
    assert ev.mean_delay_s == ev.p95_delay_s == ev.p99_delay_s == math.inf
    assert ev.category_attainment[1] == 0.0  # no request of an unstable queue is within any SLO
    assert ev.mean_quality == pytest.approx((0.6 * 30.0 + 0.4 * 31.5) / 1.0)
    result = make_result(problem, "unstable", routing, (1, 1), shares)
    assert not result.stable and result.utility == -math.inf and result.certified_gap is None
    # The same routing at shares that keep both queues below ρ = 1 is stable.
    assert evaluate(problem, routing, (1, 1), np.array([0.35, 0.65])).stable


# ---------------------------------------------------------------------------------------------
# SLO semantics: attainment 0.95 within 10 s is p95 ≤ 10 s

_P95 = Slo(10.0, 0.95)
_SEMANTICS = {
    "window": {"counts": (12.0, 8.0), "slo": _P95},
    "window-random": {"counts": (12.0, 8.0), "slo": _P95, "realization": "random"},
    "open": {"arrivals": "open", "counts": (0.6, 0.4), "slo": _P95, "weight": 0.2},
}


@pytest.mark.parametrize(
    "name",
    ["window", pytest.param("window-random", marks=pytest.mark.slow), pytest.param("open", marks=pytest.mark.slow)],
)
def test_slo_attainment_is_the_p95(name):
    problem = _problem(**_SEMANTICS[name])
    results = [planner(problem, rng=0) for planner in METHODS.values()]
    plans = [(r.plan.routing_matrix, r.plan.step_index, r.plan.share_vector) for r in results]
    rng = np.random.default_rng(3)
    for _ in range(8):
        a, b = rng.uniform(0, 1, 2)
        routing = np.array([[a, 1 - a], [b, 1 - b]])
        plans.append(
            (
                routing,
                tuple(int(k) for k in rng.integers(0, 2, 2)),
                _share_vectors(problem, routing, [rng.uniform(0.2, 0.8)])[0],
            )
        )
    feasible = []
    for routing, steps, shares in plans:
        ev = evaluate(problem, routing, steps, shares)
        if not ev.stable:
            continue
        met = ev.attainment >= 0.95 - 1e-9
        assert ev.feasible == met
        # p95 ≤ 10 s exactly when 95% are within 10 s (the quantile comes from a bisection to ~1e-13).
        if met:
            assert ev.p95_delay_s <= 10.0 * (1 + 1e-9)
        else:
            assert ev.p95_delay_s > 10.0 * (1 - 1e-9)
        feasible.append(ev.feasible)
    assert any(feasible) and not all(feasible)  # both sides of the SLO were checked
    assert results[list(METHODS).index("genedge")].feasible and results[list(METHODS).index("exact")].feasible


# ---------------------------------------------------------------------------------------------
# Energy


def test_energy_enters_the_utility_at_its_price():
    problem = _case("window-energy")
    routing = np.array([[1.0, 0.0], [0.0, 1.0]])
    ev = evaluate(problem, routing, (0, 1), np.array([0.4, 0.6]))
    # 6 images on "fast" at 10 steps (100 J), 4 on "slow" at 20 steps (420 J).
    assert ev.mean_energy_j == pytest.approx((6 * 100.0 + 4 * 420.0) / 10)
    assert ev.utility == pytest.approx(ev.mean_quality - 0.05 * ev.mean_delay_s - 0.005 * ev.mean_energy_j)
    free = evaluate(_problem(), routing, (0, 1), np.array([0.4, 0.6]))
    assert free.utility - ev.utility == pytest.approx(0.005 * ev.mean_energy_j)


_PRICES = (0.0, 0.002, 0.005, 0.01, 0.02, 0.05)


@pytest.mark.parametrize("arrivals", ["window", pytest.param("open", marks=pytest.mark.slow)])
@pytest.mark.parametrize("planner", [propose, exact_search], ids=["genedge", "exact"])
def test_a_higher_energy_price_never_raises_the_energy_of_the_plan(arrivals, planner):
    settings = _OPEN if arrivals == "open" else {}
    energy = [planner(_problem(energy_price=price, **settings), rng=0).mean_energy_j for price in _PRICES]
    # At the optimum, (κ₂ − κ₁)(E₁ − E₂) ≥ 0: the energy cannot rise with the price.
    assert all(later <= earlier + 1e-9 for earlier, later in itertools.pairwise(energy)), energy
    assert energy[0] > 100.0
    assert energy[-1] == pytest.approx(100.0)  # every image on "fast" at 10 steps, the least energy there is
