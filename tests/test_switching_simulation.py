"""The simulation of a service that switches plans: one plan throughout is the fixed-plan simulation request by
request, a switch changes the service of the requests that start after it, and every request is served or
rejected, never lost."""

from __future__ import annotations

import numpy as np
import pytest

from genedge.optimizer.model import Arrivals, poisson_arrivals
from genedge.optimizer.simulation import ServedPlan, simulate_arrivals, simulate_switching

CATEGORIES = {"Basic": 0.3, "Detail": 0.5, "Complex": 0.2}


def _plan(service_s, shares, steps, routing=None, queue_bound=None) -> ServedPlan:
    routing = [[0.5, 0.5, 0.0], [0.2, 0.6, 0.2], [0.0, 0.0, 1.0]] if routing is None else routing
    bound = None if queue_bound is None else np.array(queue_bound)
    return ServedPlan(np.array(routing, dtype=float), np.array(service_s), np.array(shares), np.array(steps), bound)


def _arrivals(n: int = 4000, seed: int = 1) -> Arrivals:
    return poisson_arrivals(CATEGORIES, n_requests=n, rng=seed)


def test_one_plan_throughout_is_the_fixed_plan_simulation_request_by_request():
    arrivals = _arrivals()
    plan = _plan([1.5, 2.0, 4.0], [0.3, 0.4, 0.3], [10, 20, 30])
    switching = simulate_switching(arrivals, [plan], [(0.0, 0)])
    fixed = simulate_arrivals(arrivals, plan.routing, plan.service_s)
    assert not switching.rejected.any()
    assert (switching.model == fixed.model).all() and (switching.plan == 0).all()
    assert (switching.service_s == fixed.service_s).all()
    np.testing.assert_allclose(switching.response_s, fixed.response_s, rtol=1e-12, atol=1e-9)
    assert (switching.steps == np.array([10, 20, 30])[fixed.model]).all()
    # a second plan that is never in force changes nothing
    other = _plan([1.0, 1.0, 1.0], [0.3, 0.4, 0.3], [5, 5, 5])
    again = simulate_switching(arrivals, [plan, other], [(0.0, 0)])
    assert (again.response_s == switching.response_s).all()


def test_a_switch_changes_the_service_of_the_requests_that_start_after_it():
    arrivals = _arrivals()
    switch_at = float(arrivals.times_s[len(arrivals) // 2])
    before = _plan([1.5, 2.0, 4.0], [0.3, 0.4, 0.3], [10, 20, 30])
    # the same steps on other shares: the same calls on the whole device, divided by the new shares
    after = _plan([1.5 * 0.3 / 0.5, 2.0 * 0.4 / 0.3, 4.0 * 0.3 / 0.2], [0.5, 0.3, 0.2], [10, 20, 30])
    records = simulate_switching(arrivals, [before, after], [(0.0, 0), (switch_at, 1)])
    alone = simulate_switching(arrivals, [before], [(0.0, 0)])
    start = records.arrival_s + records.wait_s
    late = start >= switch_at
    expected = np.where(late, after.service_s[records.model], before.service_s[records.model])
    np.testing.assert_allclose(records.service_s, expected, rtol=1e-12)
    assert (records.plan == (records.arrival_s >= switch_at)).all()
    first = records.arrival_s < switch_at
    early = first & (alone.arrival_s + alone.wait_s + alone.service_s <= switch_at)
    assert early.any() and (records.response_s[early] == alone.response_s[early]).all()
    assert (records.service_s[late] != alone.service_s[late]).any()


def test_requests_keep_the_steps_of_the_plan_they_arrived_under():
    arrivals = Arrivals(np.array([0.0, 0.1, 0.2, 5.0]), np.zeros(4, dtype=np.int64), ("all",), 6.0)
    slow = ServedPlan(np.array([[1.0]]), np.array([2.0]), np.array([1.0]), np.array([40]))
    fast = ServedPlan(np.array([[1.0]]), np.array([1.0]), np.array([1.0]), np.array([20]))
    records = simulate_switching(arrivals, [slow, fast], [(0.0, 0), (1.0, 1)])
    assert records.steps.tolist() == [40, 40, 40, 20]
    assert records.service_s.tolist() == [2.0, 2.0, 2.0, 1.0]  # the queued ones keep their 40 steps' call


def test_a_model_the_new_plan_leaves_out_finishes_its_queue_at_its_last_share():
    arrivals = Arrivals(np.array([0.0, 0.0, 0.0, 0.5]), np.array([0, 0, 0, 0]), ("all",), 10.0)
    both = ServedPlan(np.array([[1.0, 0.0]]), np.array([2.0, np.inf]), np.array([0.5, 0.0]), np.array([10, 0]))
    other = ServedPlan(np.array([[0.0, 1.0]]), np.array([np.inf, 1.0]), np.array([0.0, 1.0]), np.array([0, 20]))
    records = simulate_switching(arrivals, [both, other], [(0.0, 0), (0.5, 1)])
    assert records.model.tolist() == [0, 0, 0, 1]
    assert records.response_s.tolist() == [2.0, 4.0, 6.0, 1.0]


def test_every_request_is_served_or_rejected_and_no_model_holds_more_than_its_bound():
    arrivals = _arrivals(n=6000, seed=3)
    switch_at = float(arrivals.times_s[2000])
    calm = _plan([1.5, 2.0, 4.0], [0.3, 0.4, 0.3], [10, 20, 30], queue_bound=[2, 3, 1])
    tight = _plan([3.0, 4.0, 8.0], [0.3, 0.4, 0.3], [20, 40, 50], queue_bound=[1, 1, 1])
    records = simulate_switching(arrivals, [calm, tight], [(0.0, 0), (switch_at, 1)])
    served, rejected = records.served.sum(), records.rejected.sum()
    assert rejected > 0 and served + rejected == len(arrivals)
    assert (
        np.isnan(records.response_s[records.rejected]).all() and np.isfinite(records.response_s[records.served]).all()
    )
    bound = np.array([calm.queue_bound, tight.queue_bound])[records.plan, records.model]
    for i in np.flatnonzero(records.served)[::50]:
        on_model = records.served & (records.model == records.model[i]) & (records.arrival_s <= records.arrival_s[i])
        held = np.sum(records.arrival_s[on_model] + records.response_s[on_model] > records.arrival_s[i]) - 1
        assert held < bound[i]
    # attainment counts rejections as misses
    assert records.slo_attainment(1e9) == pytest.approx(served / len(arrivals))


def test_a_timeline_that_does_not_start_at_zero_or_names_no_plan_is_refused():
    plan = _plan([1.5, 2.0, 4.0], [0.3, 0.4, 0.3], [10, 20, 30])
    arrivals = _arrivals(n=10)
    with pytest.raises(ValueError, match="start times from 0"):
        simulate_switching(arrivals, [plan], [(1.0, 0)])
    with pytest.raises(ValueError, match="plan indices"):
        simulate_switching(arrivals, [plan], [(0.0, 0), (2.0, 1)])
    with pytest.raises(ValueError, match="does not deploy"):
        _plan([1.5, 2.0, np.inf], [0.5, 0.5, 0.0], [10, 20, 0])
