"""Routing realizes its fractions; the open-arrival simulation matches M/D/1 and its own batching rule."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from genedge.optimizer.model import (
    Arrivals,
    Router,
    SmoothWeightedRoundRobin,
    mmpp_arrivals,
    poisson_arrivals,
    read_trace,
)
from genedge.optimizer.simulation._des import DEFAULT_WARMUP, simulate_arrivals

# Agreement with a stated value is judged at this many standard errors.
Z = 4.0


def _reference_fifo(arrival: list[float], service: float, batch: int) -> tuple[list[float], list[int]]:
    """Event-by-event FIFO batch server, written for clarity: (start of each request's batch, batch size)."""
    starts, sizes, free, i = [0.0] * len(arrival), [0] * len(arrival), -math.inf, 0
    while i < len(arrival):
        start = max(free, arrival[i])
        members = [j for j in range(i, min(i + batch, len(arrival))) if arrival[j] <= start]
        for j in members:
            starts[j], sizes[j] = start, len(members)
        free, i = start + service, i + len(members)
    return starts, sizes


def _one_queue(arrivals: Arrivals) -> np.ndarray:
    return np.ones((len(arrivals.categories), 1))


# ---------------------------------------------------------------------------------------------- routing


def test_swrr_reproduces_nginx_sequence_and_periods():
    swrr = SmoothWeightedRoundRobin([5, 1, 1])
    assert [swrr.pick() for _ in range(14)] == [0, 0, 1, 0, 2, 0, 0] * 2
    integer = SmoothWeightedRoundRobin([3, 0, 2, 7])
    counts = np.bincount(integer.picks(12 * 5), minlength=4)
    assert counts.tolist() == [15, 0, 10, 35]  # w_i picks per period of W = 12


def test_swrr_every_prefix_stays_within_the_stated_bounds():
    gen = np.random.default_rng(0)
    for case in range(300):
        k = int(gen.integers(2, 9))
        weights = gen.dirichlet(np.full(k, 0.4)) if case % 2 else gen.random(k)
        weights[gen.random(k) < 0.15] = 0.0  # some models unused
        if weights.sum() == 0:
            weights[0] = 1.0
        p = weights / weights.sum()
        active = int((p > 0).sum())
        picks = SmoothWeightedRoundRobin(weights).picks(400)
        counts = np.cumsum(np.eye(k, dtype=int)[picks], axis=0)
        deviation = counts - np.arange(1, 401)[:, None] * p
        assert deviation.max() <= 1 - 1 / active + 1e-9
        assert deviation.min() >= -((active - 1) ** 2) / active - 1e-9
        if active == 2:
            assert np.abs(deviation).max() <= 0.5 + 1e-9
        assert not counts[-1][p == 0].any()


def test_swrr_pick_and_picks_agree():
    one, many = SmoothWeightedRoundRobin([0.2, 0.5, 0.3]), SmoothWeightedRoundRobin([0.2, 0.5, 0.3])
    assert [one.pick() for _ in range(50)] == many.picks(20).tolist() + many.picks(30).tolist()


def test_router_route_equals_route_all():
    matrix = [[0.6, 0.4, 0.0], [0.1, 0.1, 0.8]]
    categories = np.random.default_rng(1).integers(0, 2, 200)
    one, many = Router(matrix), Router(matrix)
    assert [one.route(int(c)) for c in categories] == many.route_all(categories).tolist()


def test_random_router_is_reproducible_and_skips_zero_probabilities():
    matrix = [[0.0, 0.3, 0.7], [1.0, 0.0, 0.0]]
    categories = np.random.default_rng(2).integers(0, 2, 5_000)
    a = Router(matrix, realization="random", rng=5).route_all(categories)
    b = Router(matrix, realization="random", rng=5).route_all(categories)
    assert np.array_equal(a, b)
    assert not (a[categories == 0] == 0).any() and (a[categories == 1] == 0).all()


@pytest.mark.parametrize(
    ("matrix", "kwargs", "match"),
    [
        ([[0.5, 0.4]], {}, "row 0 sums to 0.9"),
        ([[1.5, -0.5]], {}, "finite routing probabilities >= 0"),
        ([1.0], {}, "2-D routing matrix"),
        ([[1.0]], {"realization": "roundrobin"}, "realization in"),
    ],
)
def test_router_refuses_bad_input(matrix, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Router(matrix, **kwargs)


# ---------------------------------------------------------------------------------------------- known answers


def test_single_server_known_answer():
    arrivals = Arrivals(np.array([0.0, 0.5, 3.0]), np.zeros(3, int), ("a",), 3.0)
    records = simulate_arrivals(arrivals, [[1.0]], [1.0])
    assert records.wait_s.tolist() == [0.0, 0.5, 0.0]
    assert records.departure_s.tolist() == [1.0, 2.0, 4.0]
    assert records.batch_size.tolist() == [1, 1, 1]


def test_batch_server_known_answer():
    # free at 0 with one waiting → batch {0}; at 1.0 three wait → {0.1, 0.2}; at 2.0 → {0.3, 1.5}
    arrivals = Arrivals(np.array([0.0, 0.1, 0.2, 0.3, 1.5]), np.zeros(5, int), ("a",), 1.5)
    records = simulate_arrivals(arrivals, [[1.0]], [1.0], max_batch=2)
    assert np.allclose(records.wait_s, [0.0, 0.9, 0.8, 1.7, 0.5])
    assert records.batch_size.tolist() == [1, 2, 2, 2, 2]


@pytest.mark.parametrize("batch", [1, 3])
def test_simulation_equals_an_event_by_event_reference(batch):
    arrivals = poisson_arrivals({"a": 2.0, "b": 1.0}, n_requests=3_000, rng=4)
    matrix = np.array([[0.7, 0.3], [0.0, 1.0]])
    service = np.array([0.3 * batch, 0.5 * batch])
    records = simulate_arrivals(arrivals, matrix, service, max_batch=batch)
    for m in range(2):
        mine = records.model == m
        starts, sizes = _reference_fifo(records.arrival_s[mine].tolist(), float(service[m]), batch)
        assert np.allclose(records.arrival_s[mine] + records.wait_s[mine], starts, rtol=0, atol=1e-9)
        assert records.batch_size[mine].tolist() == sizes


# ---------------------------------------------------------------------------------------------- M/D/1


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_poisson_single_server_matches_md1_mean_response(rho):
    service = 0.2
    arrivals = poisson_arrivals({"a": rho / service}, n_requests=400_000, rng=int(rho * 10))
    stats = simulate_arrivals(arrivals, [[1.0]], [service]).summary().overall
    md1 = service + rho * service / (2 * (1 - rho))
    # batch means over 20 batches of 18,000 requests each, far longer than the queue's memory
    # (a few hundred requests at ρ = 0.8), so the batch means are nearly independent: 4 SE ≈ p < 0.001
    assert abs(stats.mean_response_s - md1) < Z * stats.mean_response_se_s


def test_bursty_arrivals_wait_longer_than_poisson_at_the_same_rate():
    rate, service = 3.5, 0.2  # ρ = 0.7
    poisson = poisson_arrivals({"a": rate}, n_requests=200_000, rng=1)
    bursty = mmpp_arrivals({"a": rate}, burstiness=8.0, n_requests=200_000, rng=1)
    calm = simulate_arrivals(poisson, [[1.0]], [service]).summary().overall
    burst = simulate_arrivals(bursty, [[1.0]], [service]).summary().overall
    gap = burst.mean_wait_s - calm.mean_wait_s
    assert gap > Z * math.hypot(burst.mean_response_se_s, calm.mean_response_se_s)
    assert burst.mean_wait_s > 3 * calm.mean_wait_s  # the M/D/1 figure understates bursts several-fold


# ------------------------------------------------------------------------------------ routing in the simulation


def test_deterministic_routing_realizes_the_fractions_per_category():
    matrix = np.array([[0.5, 0.3, 0.2], [0.0, 0.25, 0.75], [1.0, 0.0, 0.0]])
    arrivals = poisson_arrivals({"a": 3.0, "b": 2.0, "c": 1.0}, n_requests=9_999, rng=3)
    records = simulate_arrivals(arrivals, matrix, [0.1, 0.1, 0.1])
    for c in range(3):
        served = np.bincount(records.model[records.category == c], minlength=3)
        expected = served.sum() * matrix[c]
        active = int((matrix[c] > 0).sum())
        assert np.all(served - expected <= 1 - 1 / active + 1e-9)
        assert np.all(expected - served <= (active - 1) ** 2 / active + 1e-9)
        assert np.all(np.abs(served - expected) < 1)  # these rows and counts: within one request


def test_random_routing_fractions_are_binomial():
    matrix = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    arrivals = poisson_arrivals({"a": 3.0, "b": 2.0}, n_requests=50_000, rng=8)
    records = simulate_arrivals(arrivals, matrix, [0.05, 0.05, 0.05], realization="random", rng=9)
    for c in range(2):
        n = int((records.category == c).sum())
        served = np.bincount(records.model[records.category == c], minlength=3)
        z = (served - n * matrix[c]) / np.sqrt(n * matrix[c] * (1 - matrix[c]))
        assert np.abs(z).max() < Z
    deterministic = simulate_arrivals(arrivals, matrix, [0.05, 0.05, 0.05])
    assert not np.array_equal(records.model, deterministic.model)


# ---------------------------------------------------------------------------------------------- batching


def test_batches_never_exceed_b_and_fill_at_high_load():
    batch, service = 4, 0.4
    arrivals = poisson_arrivals({"a": 0.95 * batch / service}, n_requests=50_000, rng=6)
    records = simulate_arrivals(arrivals, [[1.0]], [service], max_batch=batch)
    assert records.batch_size.max() == batch
    kept = slice(int(DEFAULT_WARMUP * len(records)), None)
    assert np.mean(records.batch_size[kept] == batch) > 0.9
    light = simulate_arrivals(poisson_arrivals({"a": 0.1}, n_requests=2_000, rng=6), [[1.0]], [service], max_batch=4)
    assert np.mean(light.batch_size == 1) > 0.9


def test_records_are_consistent():
    matrix = np.array([[0.6, 0.4, 0.0], [0.2, 0.0, 0.8]])
    arrivals = poisson_arrivals({"a": 2.0, "b": 3.0}, n_requests=20_000, rng=2)
    # a batch's members share one departure, up to rounding of arrival + response
    for batch, slack in ((1, 0.0), (np.array([2, 1, 3]), 1e-9)):
        records = simulate_arrivals(arrivals, matrix, [0.3, 0.5, 0.6], max_batch=batch)
        assert np.allclose(records.response_s, records.wait_s + records.service_s)
        assert (records.wait_s >= 0).all()
        assert np.array_equal(records.arrival_s, arrivals.times_s)
        for m in range(3):
            served = records.model == m
            departures = records.departure_s[served]
            assert (np.diff(departures) >= -slack).all()  # FIFO per model
            assert (records.batch_size[served] <= np.broadcast_to(batch, 3)[m]).all()


def test_summary_leaves_out_the_warm_up_and_reports_attainment():
    arrivals = poisson_arrivals({"a": 2.0, "b": 1.0}, n_requests=10_000, rng=0)
    records = simulate_arrivals(arrivals, [[1.0, 0.0], [0.0, 1.0]], [0.2, 0.4])
    summary = records.summary(slo_s=0.5)
    assert summary.excluded == 1_000 and summary.overall.count == 9_000
    kept = records.response_s[1_000:]
    assert summary.overall.slo_attainment == pytest.approx(np.mean(kept <= 0.5))
    assert summary.overall.p95_response_s == pytest.approx(np.quantile(kept, 0.95))
    assert summary.per_category["b"].count == summary.per_model[1].count
    assert summary.per_model[1].slo_attainment == pytest.approx(np.mean(kept[records.model[1_000:] == 1] <= 0.5))
    assert summary.throughput_per_s == pytest.approx(3.0, rel=0.05)
    assert records.summary(warmup=0.0).overall.count == 10_000
    unused = simulate_arrivals(arrivals, [[1.0, 0.0], [1.0, 0.0]], [0.1, math.inf]).summary()
    assert unused.per_model[1].count == 0 and unused.per_model[1].mean_response_s is None
    assert records.summary().overall.slo_attainment is None


def test_records_as_plain_columns():
    arrivals = poisson_arrivals({"a": 2.0, "b": 1.0}, n_requests=100, rng=0)
    columns = simulate_arrivals(arrivals, [[1.0], [1.0]], [0.1]).to_dict()
    assert set(columns) == {"arrival_s", "category", "model", "wait_s", "service_s", "response_s", "batch_size"}
    assert all(len(v) == 100 for v in columns.values())
    assert set(columns["category"]) <= {"a", "b"}


def test_trace_replay_keeps_the_recorded_times(tmp_path):
    path = tmp_path / "trace.tsv"
    path.write_text("time_s\tcategory\n0.0\tx\n0.05\ty\n0.05\tx\n0.9\ty\n2.5\tx\n", encoding="utf-8")
    arrivals = read_trace(path)
    records = simulate_arrivals(arrivals, [[1.0], [1.0]], [0.5])
    assert records.arrival_s.tolist() == [0.0, 0.05, 0.05, 0.9, 2.5]
    assert np.allclose(records.departure_s, [0.5, 1.0, 1.5, 2.0, 3.0])


@pytest.mark.parametrize(
    ("matrix", "service", "kwargs", "match"),
    [
        ([[0.5, 0.5]], [0.1, math.inf], {}, "no routing to model 1, whose service time is inf"),
        ([[1.0, 0.0]], [0.1], {}, r"service_s of shape \(2,\)"),
        ([[1.0, 0.0]], [0.1, 0.0], {}, "service times > 0"),
        ([[1.0, 0.0]], [0.1, 0.2], {"max_batch": 0}, "whole batch sizes >= 1"),
        ([[1.0], [1.0]], [0.1], {}, "one routing row per category"),
    ],
)
def test_simulation_refuses_bad_input(matrix, service, kwargs, match):
    arrivals = Arrivals(np.array([0.0, 1.0]), np.zeros(2, int), ("a",), 1.0)
    with pytest.raises(ValueError, match=match):
        simulate_arrivals(arrivals, matrix, service, **kwargs)


@pytest.mark.slow
def test_speed_of_a_million_requests():
    arrivals = poisson_arrivals({"a": 3.0, "b": 2.0, "c": 1.0}, n_requests=1_000_000, rng=0)
    matrix = np.array([[0.5, 0.3, 0.2], [0.0, 1.0, 0.0], [0.2, 0.2, 0.6]])
    started = time.perf_counter()
    simulate_arrivals(arrivals, matrix, [0.25, 0.3, 0.6])
    single = time.perf_counter() - started
    started = time.perf_counter()
    simulate_arrivals(arrivals, matrix, [0.5, 0.6, 1.2], max_batch=4)
    batched = time.perf_counter() - started
    assert single < 5 and batched < 5, (single, batched)  # about 0.5 s and 1.2 s on one laptop core
