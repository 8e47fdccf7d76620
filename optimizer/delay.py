r"""Response times of a plan under each delay model (DESIGN §3, §3.2).

Every function here takes the plan as expected requests x[c, m] (per window, or per second under
open arrivals), the seconds S_m one call takes on model m's share (a batch of up to b_m images;
``inf`` where a model is not deployed) and b_m; the arrival model and routing realization come
from the problem.

* ``window``, deterministic routing: the N_m requests on model m are served FIFO in batches of
  up to b_m, so the i-th completes at ⌈i/b_m⌉·S_m (b = 1: i·S_m, the paper's model).
* ``window``, random routing: N_m = Σ_c Binomial(n_c, p_cm) varies from window to window; every
  figure is the expectation over its exact distribution (for b = 1 the mean gains
  Σ_c n_c p_cm (1 − p_cm) / 2 · S_m, the variance of the load).
* ``open``: model m sees Poisson arrivals of rate λ_m = Σ_c x_cm and is an M/D/1 queue (b = 1)
  or the bulk-service queue of :mod:`~genedge.optimizer.queueing` (b > 1), stable only if
  ρ_m = λ_m S_m / b_m < 1. Random routing splits a Poisson stream into Poisson streams, so the
  figures are exact; smooth weighted round robin makes a split category's stream more regular
  than Poisson, so for split categories they are conservative (the discrete-event check
  measures by how much).

In the window model a delay is the time from the window's start to the request's image; under
open arrivals it is the response time (wait plus service).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln, xlog1py, xlogy

from genedge.optimizer import queueing
from genedge.optimizer.problem import Problem, deployed_mask

__all__ = [
    "DelayFigures",
    "delay_figures",
    "delay_mass",
    "delay_quantile",
    "fifo_delay_coefficient",
    "attainment_matrix",
    "model_attainment",
    "model_served_within",
    "model_window_coefficient",
    "utilization",
    "window_delay_coefficient",
    "window_delay_quantile",
]

# Expected loads within this of a whole number count as that whole number of requests.
_WHOLE_REQUEST_TOL = 1e-9
# Relative round-off allowed when a delay is compared with a multiple of a call time.
_DELAY_RTOL = 1e-12
# Relative distance below the bisection's end within which a request's delay is the quantile.
_SNAP_RTOL = 1e-9
# Bisection of a quantile stops when the bracket is this narrow relative to its upper end.
_QUANTILE_RTOL = 1e-13
_BISECTIONS = 200
# A load pmf keeps values of N_m down to this probability (the rest is below float resolution).
_PMF_FLOOR = 1e-16


@dataclass(frozen=True)
class DelayFigures:
    """What a plan's requests wait, under the problem's delay model.

    Attributes:
        mean_s: mean delay per request (s); inf when some deployed queue is unstable.
        p95_s / p99_s: 95th / 99th percentile of the delay (s); inf when unstable.
        attainment: P(delay ≤ SLO) over all requests, where the problem has an SLO.
        category_attainment: P(delay ≤ SLO) per category, shape (C,), where it has one.
        utilization: ρ_m = λ_m S_m / b_m per model under open arrivals, shape (M,); else None.
        stable: whether every deployed queue is stable (always True for a window).
        mg1_mean_s: the Pollaczek–Khinchine (M/G/1) mean delay from the table's per-image latency
            spread, beside the M/D/1 one, under open arrivals without batching where the table has
            the spread; else None.
    """

    mean_s: float
    p95_s: float
    p99_s: float
    attainment: float | None
    category_attainment: np.ndarray | None
    utilization: np.ndarray | None
    stable: bool
    mg1_mean_s: float | None = None


def utilization(loads: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray) -> np.ndarray:
    """ρ_m = λ_m S_m / b_m (0 where a model has no load)."""
    with np.errstate(invalid="ignore"):
        return np.where(deployed_mask(loads), loads * call_s / max_batch, 0.0)


def fifo_delay_coefficient(full_share_s: np.ndarray | float, loads: np.ndarray | float) -> np.ndarray:
    """K_m = (o_m + τ_m s_m) · N_m (N_m + 1) / 2: total FIFO delay on model m is K_m / r_m (s · GPU)."""
    return full_share_s * loads * (loads + 1) / 2


def window_delay_coefficient(problem: Problem, requests: np.ndarray, max_batch: np.ndarray) -> np.ndarray:
    """c_m with total window delay on model m = c_m · S_m: E[Σ_{i ≤ N_m} ⌈i/b_m⌉], shape (M,).

    Deterministic routing takes N_m at its expected value: N(N + 1)/2 for b = 1, the paper's formula
    (smooth in N, as every planner's closed form takes it); for b > 1 the last, partial request
    counts with its fraction. Random routing averages over N_m's (whole) distribution.
    """
    return np.array([model_window_coefficient(problem, requests, m, int(max_batch[m])) for m in range(len(max_batch))])


def model_window_coefficient(problem: Problem, requests: np.ndarray, model: int, batch: int) -> float:
    """c_m of one model at batch size ``batch`` (see :func:`window_delay_coefficient`)."""
    load = float(requests[:, model].sum())
    if not deployed_mask(load):
        return 0.0
    if problem.realization == "deterministic":
        if batch == 1:  # the paper's D_m = t_m (N_m + 1) / 2, smooth in expected loads as the planners take it
            return float(fifo_delay_coefficient(1.0, load))
        return float(queueing.window_batch_delay_sum(load, 1.0, batch))
    values, pmf = _load_distribution(problem, requests, model)
    return float(pmf @ queueing.window_batch_delay_sum(values, np.ones_like(values), batch))


def model_served_within(
    problem: Problem, requests: np.ndarray, model: int, call_s: np.ndarray | float, batch: int, d: float
) -> np.ndarray:
    """Expected requests on ``model`` whose window delay is at most ``d``, for each call time in ``call_s``."""
    call_s = np.asarray(call_s, dtype=float)
    load = float(requests[:, model].sum())
    if not deployed_mask(load):
        return np.zeros(call_s.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        done = np.where(np.isfinite(call_s), np.floor(d / call_s * (1 + _DELAY_RTOL)) * batch, 0.0)
    if problem.realization == "deterministic":
        whole = np.floor(load + _WHOLE_REQUEST_TOL)
        partial = max(load - whole, 0.0)  # weight of request number whole + 1
        return np.minimum(done, whole) + np.where(done > whole, partial, 0.0)
    values, pmf = _load_distribution(problem, requests, model)
    return (np.minimum(values[:, None], np.atleast_1d(done)[None, :]).T @ pmf).reshape(done.shape)


def delay_mass(problem: Problem, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray) -> np.ndarray:
    """Per model, the summed delay of its requests: mean delay = Σ_m mass_m / N, shape (M,).

    Window: c_m·S_m seconds per window. Open: λ_m·E[T_m] (request-seconds per second); inf for
    an unstable queue.
    """
    loads = requests.sum(axis=0)
    used = deployed_mask(loads)
    if problem.arrivals == "window":
        coefficient = window_delay_coefficient(problem, requests, max_batch)
        return np.where(used, coefficient * np.where(used, call_s, 0.0), 0.0)
    mean = _open_mean_response(loads, call_s, max_batch)
    return np.where(used, loads * mean, 0.0)


def model_attainment(
    problem: Problem, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, slo_s: float
) -> np.ndarray:
    """P(delay ≤ ``slo_s``) of a request on each model, shape (M,) (1 where a model has no load)."""
    loads = requests.sum(axis=0)
    used = deployed_mask(loads)
    if problem.arrivals == "open":
        cdf = _open_response_cdf(slo_s, loads, call_s, max_batch)
        return np.where(used, cdf, 1.0)
    served = _window_served(problem, requests, call_s, max_batch, slo_s)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(used, served / np.where(used, loads, 1.0), 1.0)


def attainment_matrix(
    problem: Problem, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, slo_s: float
) -> np.ndarray:
    """P(delay ≤ ``slo_s``) of a category-c request routed to model m, shape (C, M).

    Every request on a model shares its queue, so the chance is the model's alone — except in a
    window under random routing, where a category-c request on m finds there the others drawn
    independently: N_m = 1 + K with K = Σ_{c'} Binomial(n_{c'} − [c' = c], p_{c'm}), and its
    chance is E[min(1 + K, k) / (1 + K)] with k = b_m ⌊SLO / S_m⌋ requests served in time. (Weighted
    by the requests, these give back :func:`model_attainment`.)
    """
    per_model = model_attainment(problem, requests, call_s, max_batch, slo_s)
    out = np.broadcast_to(per_model, requests.shape).copy()
    if problem.arrivals != "window" or problem.realization != "random":
        return out
    counts = np.round(problem.counts).astype(int)
    for m in np.flatnonzero(deployed_mask(requests.sum(axis=0))):
        done = np.floor(slo_s / call_s[m] * (1 + _DELAY_RTOL)) * max_batch[m]
        for c in np.flatnonzero(requests[:, m] > 0):
            others = counts.copy()
            others[c] -= 1
            values, pmf = _load_distribution(problem, requests, m, counts=others)
            out[c, m] = float(pmf @ (np.minimum(1 + values, done) / (1 + values)))
    return out


def delay_quantile(
    problem: Problem, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, q: float
) -> float:
    """The q-quantile of the delay over all requests (s); inf when a deployed queue is unstable.

    Found by bisection on the delay d of Σ_m (requests on m with delay ≤ d) ≥ q·N, so its cost
    does not grow with the number of requests.
    """
    loads = requests.sum(axis=0)
    used = deployed_mask(loads)
    if not used.any():
        return 0.0
    if problem.arrivals == "window" and problem.realization == "deterministic":
        return window_delay_quantile(call_s, loads, q, max_batch)
    total = float(loads.sum())
    if problem.arrivals == "open":
        if not _stable(loads, call_s, max_batch):
            return np.inf
        batch = None if (max_batch[used] == 1).all() else max_batch[used]
        return float(queueing.mixture_response_quantile(q, loads[used], call_s[used], batch))
    # A window under random routing: the delays are multiples of the call times, so the
    # quantile is the first completion at which the expected number served reaches q·N.
    largest = np.array(
        [_load_distribution(problem, requests, m)[0].max() if used[m] else 0.0 for m in range(used.size)]
    )
    hi = float((call_s[used] * np.ceil(largest[used] / max_batch[used])).max())
    d = _bisect(
        lambda d: (
            float(_window_served(problem, requests, call_s, max_batch, d).sum()) >= q * total - _WHOLE_REQUEST_TOL
        ),
        0.0,
        hi,
    )
    return _snap(d, call_s[used])


def window_delay_quantile(
    call_s: np.ndarray, loads: np.ndarray, q: float, max_batch: np.ndarray | None = None
) -> float:
    """The q-quantile of the delays when model m serves N_m requests FIFO in batches of up to b_m.

    The i-th request on model m completes at ⌈i/b_m⌉·S_m. Expected loads need not be whole
    numbers: the last, partial request of a model counts with its fraction. The quantile is found
    by bisection on the delay, so its cost does not grow with the number of requests.
    """
    used = deployed_mask(loads)
    t, n = call_s[used], loads[used]
    b = np.ones(t.size, dtype=int) if max_batch is None else np.asarray(max_batch)[used]
    if t.size == 0:
        return 0.0
    whole = np.floor(n + _WHOLE_REQUEST_TOL)
    partial = n - whole  # weight of request number whole + 1

    def served_by(d: float) -> float:
        done = np.floor(d / t * (1 + _DELAY_RTOL)) * b
        return float(np.minimum(done, whole).sum() + np.where(done > whole, partial, 0.0).sum())

    target = q * float(n.sum()) - _WHOLE_REQUEST_TOL
    hi = float((t * np.ceil(np.ceil(n - _WHOLE_REQUEST_TOL) / b)).max())
    return _snap(_bisect(lambda d: served_by(d) >= target, 0.0, hi), t)


def _snap(d: float, call_s: np.ndarray) -> float:
    """The completion time just at or below ``d``: the bisection ends a hair above the quantile."""
    candidates = np.ceil(d / call_s * (1 - _DELAY_RTOL)) * call_s
    return float(candidates[candidates >= d * (1 - _SNAP_RTOL)].min())


def delay_figures(
    problem: Problem,
    requests: np.ndarray,
    call_s: np.ndarray,
    max_batch: np.ndarray,
    *,
    spread_s: np.ndarray | None = None,
) -> DelayFigures:
    """Mean, p95, p99 and SLO attainment of a plan's delays (see :class:`DelayFigures`).

    Args:
        spread_s: standard deviation of one image's service time on each model's share (s), for
            the M/G/1 mean beside the M/D/1 one; None to leave it out.
    """
    loads = requests.sum(axis=0)
    total = float(loads.sum())
    rho = utilization(loads, call_s, max_batch) if problem.arrivals == "open" else None
    stable = problem.arrivals == "window" or _stable(loads, call_s, max_batch)
    mass = delay_mass(problem, requests, call_s, max_batch)
    attainment = category = None
    if problem.slo is not None:  # an unstable queue's requests never meet it; the others may
        chance = attainment_matrix(problem, requests, call_s, max_batch, problem.slo.seconds)
        attainment = float((requests * chance).sum() / total)
        category = (requests * chance).sum(axis=1) / requests.sum(axis=1)
    mg1 = None
    if problem.arrivals == "open" and spread_s is not None and (max_batch == 1).all() and stable:
        used = deployed_mask(loads)
        response = queueing.mg1_mean_response(loads[used], call_s[used], spread_s[used])
        mg1 = float((loads[used] * response).sum() / total)
    return DelayFigures(
        mean_s=float(mass.sum() / total) if stable else np.inf,
        p95_s=delay_quantile(problem, requests, call_s, max_batch, 0.95),
        p99_s=delay_quantile(problem, requests, call_s, max_batch, 0.99),
        attainment=attainment,
        category_attainment=category,
        utilization=rho,
        stable=bool(stable),
        mg1_mean_s=mg1,
    )


def _stable(loads: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray) -> bool:
    used = deployed_mask(loads)
    return bool((utilization(loads, call_s, max_batch)[used] < 1).all())


def _open_mean_response(loads: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray) -> np.ndarray:
    """E[T_m] per model: M/D/1 for b = 1, the bulk-service queue for b > 1 (inf if unstable)."""
    out = np.full(loads.shape, np.inf)
    used = deployed_mask(loads) & np.isfinite(call_s)
    single = used & (max_batch == 1)
    out[single] = queueing.md1_mean_response(loads[single], call_s[single])
    for m in np.flatnonzero(used & (max_batch > 1)):
        out[m] = float(queueing.bulk_mean_response(loads[m], call_s[m], int(max_batch[m])))
    out[~used] = 0.0
    return out


def _open_response_cdf(x: float, loads: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray) -> np.ndarray:
    """P(T_m ≤ x) per model (0 for an unstable queue)."""
    out = np.zeros(np.shape(loads))
    single = max_batch == 1
    out[single] = queueing.md1_response_cdf(x, loads[single], call_s[single])
    for m in np.flatnonzero(~single):
        out[m] = float(queueing.bulk_response_cdf(x, loads[m], call_s[m], int(max_batch[m])))
    return out


def _window_served(
    problem: Problem, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, d: float
) -> np.ndarray:
    """Expected requests per model whose window delay is at most ``d``, shape (M,)."""
    return np.array(
        [
            float(model_served_within(problem, requests, m, call_s[m], int(max_batch[m]), d))
            for m in range(requests.shape[1])
        ]
    )


def _load_distribution(
    problem: Problem, requests: np.ndarray, model: int, counts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The values and pmf of N_m = Σ_c Binomial(n_c, p_cm) under random routing (``counts`` replaces n_c)."""
    pmf = np.ones(1)
    counts = np.round(problem.counts).astype(int) if counts is None else counts
    for c, n in enumerate(counts):
        p = float(np.clip(requests[c, model] / problem.counts[c], 0.0, 1.0))
        if p > 0:
            pmf = np.convolve(pmf, _binomial_pmf(n, p))
    pmf = np.clip(pmf, 0.0, None)
    keep = pmf > _PMF_FLOOR * pmf.max()
    return np.flatnonzero(keep).astype(float), pmf[keep] / pmf[keep].sum()


def _binomial_pmf(n: int, p: float) -> np.ndarray:
    """P(K = k) for K ~ Binomial(n, p), k = 0..n (scipy.special only: scipy.stats costs seconds to import)."""
    k = np.arange(n + 1)
    log = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1) + xlogy(k, p) + xlog1py(n - k, -p)
    return np.exp(log)


def _bisect(reached, lo: float, hi: float) -> float:
    """The smallest d in (lo, hi] with ``reached(d)``, to a relative width of :data:`_QUANTILE_RTOL`."""
    for _ in range(_BISECTIONS):
        if hi - lo <= _QUANTILE_RTOL * hi:
            break
        mid = (lo + hi) / 2
        if reached(mid):
            hi = mid
        else:
            lo = mid
    return hi
