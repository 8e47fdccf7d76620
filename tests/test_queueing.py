"""Tests of genedge.optimizer.model._queueing: the M/D/1, M/G/1, bulk-service and window delay models.

Exact values come from Erlang's formula evaluated in high-precision decimal arithmetic; the
distributions are also checked against seeded simulations of the queues, with tolerances of a
few batch-means standard errors.
"""

from __future__ import annotations

import bisect
import math
import pickle
from decimal import Decimal, localcontext

import numpy as np
import pytest

from genedge.optimizer.model import _queueing as q

LOADS = (0.3, 0.5, 0.8, 0.95, 0.99)
# Batch means: a long run is cut into this many consecutive batches; their spread gives the
# standard error of an estimate even though successive customers' waits are correlated.
SIM_BATCHES = 40
# Estimates must fall within this many standard errors (two-sided, ~6e-5 for a normal estimate).
SIM_SIGMAS = 4.0


def erlang_wait_cdf(x: float, rho: float) -> float:
    """Erlang's P(W ≤ x) for M/D/1 with t = 1, λ = ρ, summed exactly enough in decimal arithmetic.

    P(W ≤ x) = (1 − ρ) Σ_{k ≤ x} [ρ(k − x)]^k / k! · e^{ρ(x − k)}. The terms alternate in sign with
    magnitudes up to about e^{2ρx}, so the working precision is 2ρx/ln 10 digits plus 40 spare;
    x and ρ enter as the exact values of the floats.
    """
    with localcontext() as ctx:
        ctx.prec = int(2 * rho * x / math.log(10)) + 40
        lam, xd = Decimal(rho), Decimal(x)
        grow, shrink = (lam * xd).exp(), (-lam).exp()  # e^{ρ(x − k)} = e^{ρx} (e^{−ρ})^k
        total = Decimal(0)
        for k in range(math.floor(x) + 1):
            power = (lam * (k - xd)) ** k if k else Decimal(1)  # Decimal refuses 0**0
            total += power / math.factorial(k) * grow
            grow *= shrink
        return float((1 - lam) * total)


def erlang_wait_cdf_float(x: float, rho: float) -> float:
    """The same formula in float64: what this module must not do."""
    return (1 - rho) * sum(
        (rho * (k - x)) ** k / math.factorial(k) * math.exp(-rho * (k - x)) for k in range(math.floor(x) + 1)
    )


def test_md1_textbook_values():
    # ρ = 0.5, t = 1: E[W] = ρt/(2(1−ρ)) = 0.5, P(W = 0) = 1 − ρ.
    assert q.md1_mean_wait(0.5, 1.0) == pytest.approx(0.5, rel=1e-15)
    assert q.md1_mean_response(0.5, 1.0) == pytest.approx(1.5, rel=1e-15)
    assert q.md1_wait_cdf(0.0, 0.5, 1.0) == pytest.approx(0.5, abs=1e-15)
    assert q.md1_wait_cdf(-1e-9, 0.5, 1.0) == 0.0
    # Erlang at x < t has one term: P(W ≤ x) = (1 − ρ) e^{λx}.
    assert q.md1_wait_cdf(0.4, 0.5, 1.0) == pytest.approx(0.5 * math.exp(0.2), rel=1e-14)
    # Units: the law scales with t.
    assert q.md1_wait_cdf(0.8, 0.25, 2.0) == pytest.approx(0.5 * math.exp(0.2), rel=1e-14)
    assert q.md1_response_cdf(2.0 + 0.8, 0.25, 2.0) == pytest.approx(0.5 * math.exp(0.2), rel=1e-14)
    assert q.md1_response_cdf(1.999, 0.25, 2.0) == 0.0


def test_md1_mean_matches_pollaczek_khinchine_with_zero_spread():
    rate = np.array([0.0, 0.1, 1.0, 3.0, 9.9])
    service = np.array([0.5, 0.5, 0.5, 0.3, 0.1])
    np.testing.assert_allclose(q.md1_mean_response(rate, service), q.mg1_mean_response(rate, service, 0.0), rtol=1e-14)
    # Exponential service (std = mean) is M/M/1: E[T] = 1/(μ − λ).
    assert q.mg1_mean_response(0.5, 1.0, 1.0) == pytest.approx(2.0, rel=1e-14)
    # More spread, longer mean response.
    assert q.mg1_mean_response(1.0, 0.5, 0.2) > q.md1_mean_response(1.0, 0.5)


def test_means_broadcast_and_mark_instability():
    out = q.md1_mean_response([[0.5], [1.0], [2.0]], [0.5, 1.0])
    assert out.shape == (3, 2)
    assert np.isinf(out[1, 1]) and np.isinf(out[2, 0]) and np.isinf(out[2, 1])
    assert np.isfinite(out[0]).all()
    # A model with no traffic and no share: no wait, and the (infinite) service time itself.
    assert q.md1_mean_wait(0.0, np.inf) == 0.0
    assert np.isinf(q.md1_mean_response(0.0, np.inf))
    assert q.md1_response_cdf(5.0, 0.0, np.inf) == 0.0
    assert np.isinf(q.mg1_mean_response(2.0, 0.5, 0.1))
    assert np.isinf(q.bulk_mean_response(8.0, 1.0, 4))


@pytest.mark.parametrize("rho", LOADS)
def test_md1_wait_cdf_matches_erlang_in_high_precision(rho):
    top = float(q.md1_response_quantile(0.9999, rho, 1.0)) - 1.0  # the 0.9999 quantile of W
    xs = np.unique(np.concatenate([np.linspace(0.0, top, 9), [0.5, 1.0, 1.25, 2.0, 3.0 + 2**-20], [top]]))
    exact = np.array([erlang_wait_cdf(float(x), rho) for x in xs])
    np.testing.assert_allclose(q.md1_wait_cdf(xs, rho, 1.0), exact, rtol=0, atol=1e-10)
    assert exact[-1] == pytest.approx(0.9999, abs=1e-10)


def test_float_erlang_formula_fails_where_the_stable_sum_does_not():
    rho, x = 0.95, 90.0  # near the 0.9999 quantile of W
    exact = erlang_wait_cdf(x, rho)
    naive = erlang_wait_cdf_float(x, rho)
    assert not (abs(naive - exact) < 1e-3)  # cancellation: no correct digit left (or not finite)
    assert abs(q.md1_wait_cdf(x, rho, 1.0) - exact) < 1e-12


def test_md1_quantile_inverts_the_cdf():
    rho = np.array([0.1, 0.5, 0.9, 0.99])
    service = np.array([0.2, 1.0, 0.05, 3.0])
    rate = rho / service
    for prob in (0.3, 0.95, 0.99, 0.9999):
        x = q.md1_response_quantile(prob, rate, service)
        at = q.md1_response_cdf(x, rate, service)
        below = q.md1_response_cdf(x * (1 - 1e-9), rate, service)
        wait = prob > 1 - rho  # inside the atom at t the quantile is t itself
        assert (at >= prob - 1e-12).all()
        assert (below[wait] < prob).all()
        np.testing.assert_array_equal(x[~wait], service[~wait])
    assert np.isinf(q.md1_response_quantile(1.0, 0.5, 1.0))
    assert q.md1_response_quantile(0.0, 0.5, 1.0) == 1.0


def _lindley_waits(rho: float, n: int, seed: int) -> np.ndarray:
    """M/D/1 waits (t = 1) by the Lindley recursion W' = max(W + 1 − A, 0), as a running minimum."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(1.0 - rng.exponential(1.0 / rho, n))
    return np.concatenate([[0.0], walk[:-1] - np.minimum.accumulate(np.minimum(walk[:-1], 0.0))])


def _batch_means(samples: np.ndarray, statistic) -> tuple[float, float]:
    """Estimate on the whole run and its batch-means standard error."""
    batches = np.array([statistic(part) for part in np.array_split(samples, SIM_BATCHES)])
    return float(statistic(samples)), float(batches.std(ddof=1) / math.sqrt(SIM_BATCHES))


def _assert_fraction(samples: np.ndarray, x: float, model: float) -> None:
    """The share of samples ≤ x is the model's P(T ≤ x) within SIM_SIGMAS standard errors.

    The error is the larger of the batch-means one and the independent-samples one
    √(F(1 − F)/n), a floor for positively correlated waits (and for batches that all read 1).
    """
    frac, se = _batch_means(samples, lambda r: np.mean(r <= x))
    floor = math.sqrt(model * (1 - model) / samples.size)
    assert abs(frac - model) <= SIM_SIGMAS * max(se, floor) + 1e-12, (x, frac, model, se)


@pytest.mark.parametrize("rho", [0.5, 0.8, 0.95])
def test_md1_law_matches_a_lindley_simulation(rho):
    response = 1.0 + _lindley_waits(rho, 1_000_000, seed=11)[20_000:]
    for prob in (0.5, 0.95, 0.99):
        x = float(q.md1_response_quantile(prob, rho, 1.0))
        _assert_fraction(response, x, float(q.md1_response_cdf(x, rho, 1.0)))
        if prob > 1 - rho:  # a sample quantile estimates x only where the law has a density
            est, se = _batch_means(response, lambda r, p=prob: np.quantile(r, p))
            assert abs(est - x) <= SIM_SIGMAS * se
    for x in (1.0, 1.5, 3.0, 10.0):
        _assert_fraction(response, x, float(q.md1_response_cdf(x, rho, 1.0)))
    mean, se = _batch_means(response, np.mean)
    assert abs(mean - q.md1_mean_response(rho, 1.0)) <= SIM_SIGMAS * se


@pytest.mark.parametrize("rho", LOADS)
def test_bulk_with_batch_one_is_md1(rho):
    xs = np.linspace(0.0, float(q.md1_response_quantile(0.9999, rho, 1.0)) + 1.0, 301)
    np.testing.assert_allclose(q.bulk_response_cdf(xs, rho, 1.0, 1), q.md1_response_cdf(xs, rho, 1.0), atol=1e-10)
    assert q.bulk_mean_response(rho, 1.0, 1) == pytest.approx(q.md1_mean_response(rho, 1.0), rel=1e-12)
    probs = np.array([0.5, 0.95, 0.99, 0.9999])
    np.testing.assert_allclose(
        q.bulk_response_quantile(probs, rho, 1.0, 1), q.md1_response_quantile(probs, rho, 1.0), rtol=1e-9
    )


@pytest.mark.parametrize(("b", "rho"), [(2, 0.5), (3, 0.9), (8, 0.3), (8, 0.95)])
def test_bulk_mean_is_the_integral_of_its_distribution(b, rho):
    # The closed-form mean (roots and Little's law) against ∫(1 − F_W), F_W from the FFT law and
    # PASTA: two independent routes. Gauss–Legendre on each service time, where F_W is smooth.
    rate, service = rho * b / 2.0, 2.0
    cells = int(float(q.bulk_response_quantile(1 - 1e-15, rate, service, b)) / service) + 2
    nodes, weights = np.polynomial.legendre.leggauss(24)
    x = (np.arange(cells)[:, None] + (nodes[None, :] + 1) / 2) * service
    survival = 1 - q.bulk_response_cdf(x + service, rate, service, b)
    mean_wait = float(np.sum(survival * weights[None, :]) * service / 2)
    assert service + mean_wait == pytest.approx(q.bulk_mean_response(rate, service, b), rel=1e-9)


def _bulk_waits(rate: float, service: float, b: int, n: int, seed: int) -> np.ndarray:
    """Waits under the batching rule: a free server takes min(k, b) waiting requests, or the next arrival."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, n))
    times = arrivals.tolist()
    start = np.empty(n)
    free, i = 0.0, 0
    while i < n:
        begin = max(free, times[i])
        size = min(bisect.bisect_right(times, begin, i) - i, b)
        start[i : i + size] = begin
        free, i = begin + service, i + size
    return start - arrivals


@pytest.mark.slow
@pytest.mark.parametrize("b", [2, 4])
@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_bulk_law_matches_a_simulation_of_the_batching_rule(b, rho):
    service = 0.5
    rate = rho * b / service
    response = service + _bulk_waits(rate, service, b, 400_000, seed=b * 10 + int(rho * 10))[10_000:]
    mean, se = _batch_means(response, np.mean)
    assert abs(mean - q.bulk_mean_response(rate, service, b)) <= SIM_SIGMAS * se
    for x in service * np.array([1.0, 1.2, 1.7, 2.5, 4.0]):
        _assert_fraction(response, float(x), float(q.bulk_response_cdf(x, rate, service, b)))
    for prob in (0.5, 0.95, 0.99):
        x = float(q.bulk_response_quantile(prob, rate, service, b))
        _assert_fraction(response, x, float(q.bulk_response_cdf(x, rate, service, b)))


def test_bulk_batching_shortens_the_queue_and_vectorizes():
    service = np.linspace(0.05, 3.5, 200)  # ρ = 2 S / 8 up to 0.875
    batched = q.bulk_response_cdf(3.0, 2.0, service, 8)
    assert batched.shape == (200,)
    single = np.array([q.bulk_response_cdf(3.0, 2.0, s, 8) for s in service[::37]])
    np.testing.assert_allclose(batched[::37], single, atol=1e-13)
    # Four images in the time of one: more capacity, shorter responses.
    assert q.bulk_mean_response(1.0, 0.5, 4) < q.md1_mean_response(1.0, 0.5)
    x = np.linspace(0, 20, 201)
    cdf = q.bulk_response_cdf(x, 3.0, 1.0, 4)
    assert (np.diff(cdf) >= -1e-15).all() and cdf[-1] == pytest.approx(1.0, abs=1e-12)
    assert cdf[x < 1.0].max() == 0.0


def test_unstable_queues_give_inf_zero_or_the_error():
    assert q.md1_wait_cdf(5.0, 1.0, 1.0) == 0.0
    assert q.md1_response_cdf(1e9, 2.0, 1.0) == 0.0
    assert np.isinf(q.md1_response_quantile(0.5, 1.2, 1.0))
    assert q.bulk_response_cdf(1e9, 4.0, 1.0, 4) == 0.0
    assert np.isinf(q.bulk_response_quantile(0.5, 4.0, 1.0, 4))
    assert np.isfinite(q.bulk_response_quantile(0.5, 3.9, 1.0, 4))
    with pytest.raises(q.UnstableQueueError) as caught:
        q.check_stable(["sd15", "sd21"], [1.0, 3.1], [0.2, 0.4])
    err = caught.value
    assert isinstance(err, ValueError)
    assert err.model == "sd21" and err.utilization == pytest.approx(1.24)
    assert "'sd21'" in str(err) and "1.24" in str(err) and "3.1/s" in str(err) and "0.40 s" in str(err)
    assert pickle.loads(pickle.dumps(err)).args == err.args
    with pytest.raises(q.UnstableQueueError, match="batch 4"):
        q.check_stable(["a"], [9.0], [0.5], max_batch=[4])
    q.check_stable(["a", "b"], [9.0, 0.0], [0.5, np.inf], max_batch=[8, 1])  # 0.56 and unused: stable
    assert "the queue" in str(q.UnstableQueueError(None, 1.5))


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="arrival rates"):
        q.md1_mean_wait(-1.0, 1.0)
    with pytest.raises(ValueError, match="service times"):
        q.md1_wait_cdf(1.0, 0.5, 0.0)
    with pytest.raises(ValueError, match="batch sizes"):
        q.bulk_mean_response(1.0, 1.0, 2.5)
    with pytest.raises(ValueError, match="probabilities"):
        q.md1_response_quantile(1.5, 0.5, 1.0)


def test_mixture_weights_models_by_rate_and_inverts():
    rates = np.array([1.0, 2.0, 0.5])
    service = np.array([0.3, 0.2, 1.0])
    x = np.linspace(0.0, 8.0, 81)
    expected = sum(r * q.md1_response_cdf(x, r, s) for r, s in zip(rates, service)) / rates.sum()
    np.testing.assert_allclose(q.mixture_response_cdf(x, rates, service), expected, atol=1e-15)
    probs = np.array([0.2, 0.5, 0.9, 0.95, 0.99, 0.9999])
    quant = q.mixture_response_quantile(probs, rates, service)
    assert (np.diff(quant) >= 0).all()
    assert (q.mixture_response_cdf(quant, rates, service) >= probs - 1e-12).all()
    assert (q.mixture_response_cdf(quant * (1 - 1e-9), rates, service) < probs).all()
    # One model with traffic: the mixture is that model.
    alone = q.mixture_response_quantile(0.95, [0.0, 2.0, 0.0], service)
    assert alone == pytest.approx(q.md1_response_quantile(0.95, 2.0, 0.2), rel=1e-11)
    # Batching: b = 1 everywhere is the M/D/1 mixture; rows broadcast over the leading axes.
    np.testing.assert_allclose(q.mixture_response_cdf(x, rates, service, max_batch=[1, 1, 1]), expected, atol=1e-10)
    batched = np.array([[1.0, 2.0, 0.5], [1.0, 5.0, 0.0]])
    out = q.mixture_response_quantile(0.95, batched, service, max_batch=[1, 2, 4])
    assert out.shape == (2,)
    for row, value in zip(batched, out):
        assert q.mixture_response_cdf(value, row, service, max_batch=[1, 2, 4]) >= 0.95 - 1e-12
        assert q.mixture_response_cdf(value * (1 - 1e-9), row, service, max_batch=[1, 2, 4]) < 0.95


def test_mixture_with_an_unstable_or_idle_model():
    service = np.array([0.3, 0.5])
    # The second model is overloaded (ρ = 1.5): its third of the requests never count as served.
    cdf = q.mixture_response_cdf([1.0, 1e6], [1.0, 3.0], service)
    assert cdf[1] == pytest.approx(0.25, abs=1e-12)
    assert np.isinf(q.mixture_response_quantile(0.1, [1.0, 3.0], service))
    # An overloaded model without traffic does not matter (ρ = 0 there).
    assert np.isfinite(q.mixture_response_quantile(0.9, [1.0, 0.0], [0.3, np.inf]))
    assert np.isnan(q.mixture_response_cdf(1.0, [0.0, 0.0], service))
    assert np.isnan(q.mixture_response_quantile(0.5, [0.0, 0.0], service))


def test_window_batch_delay_sum():
    n = np.arange(0, 40)
    np.testing.assert_allclose(q.window_batch_delay_sum(n, 0.7, 1), 0.7 * n * (n + 1) / 2, rtol=1e-15)
    for b in (2, 3):
        brute = np.array([sum(math.ceil(i / b) for i in range(1, k + 1)) for k in n], dtype=float)
        np.testing.assert_allclose(q.window_batch_delay_sum(n, 1.5, b), 1.5 * brute, rtol=1e-15)
        # A fractional load interpolates linearly between whole loads (request ⌊N⌋+1 weighted N − ⌊N⌋).
        half = q.window_batch_delay_sum(n[:-1] + 0.25, 1.5, b)
        np.testing.assert_allclose(half, 1.5 * (0.75 * brute[:-1] + 0.25 * brute[1:]), rtol=1e-15)
    grid = q.window_batch_delay_sum([[4.0], [7.5]], [1.0, 2.0], [[1, 4]])
    assert grid.shape == (2, 2)
    assert grid[0, 0] == 10.0 and grid[0, 1] == 2.0 * 4  # b = 4: all four in one batch of 2 s
    assert q.window_batch_delay_sum(0.0, np.inf, 1) == 0.0
    with pytest.raises(ValueError, match="loads"):
        q.window_batch_delay_sum(-1.0, 1.0, 1)
