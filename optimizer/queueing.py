r"""Analytic queues of the open-arrival delay model (DESIGN §3.2).

Model m receives Poisson arrivals of rate λ (requests/s) and serves them first-in first-out on its
GPU share. Without batching one image takes the deterministic time t and the model is an M/D/1
queue with load ρ = λt. With static-shape batching a compiled graph runs batch b in S seconds
however full it is; the model is then the bulk-service queue M/D^(1,b)/1 with load ρ = λS/b.
Either queue is stable iff ρ < 1.

.. math::

    \text{M/D/1:}\quad E[W] = \frac{\rho t}{2(1-\rho)},\qquad E[T] = t + E[W],\qquad
    P(W = 0) = 1 - \rho,

    \text{M/G/1 (Pollaczek–Khinchine):}\quad E[T] = E[S] + \frac{\lambda E[S^2]}{2(1-\rho)},

    \text{window, batches of } b:\quad \sum_{i=1}^{N} \lceil i/b \rceil S.

W is the wait before service starts and T = W + t (or W + S) the response time. The waiting-time
laws are exact: they are computed from the stationary queue length by sums whose terms are all
probabilities (never an alternating sum), so every figure is accurate to ~1e-13 absolute however
close ρ is to 1 (see :func:`md1_wait_cdf` and :func:`bulk_response_cdf`). The one approximation
is a truncation of the queue length where its tail mass falls below :data:`TAIL_TOL`.

Every function broadcasts its array arguments with numpy's rules and returns an array of the
broadcast shape (a numpy float for scalar inputs). An unstable queue gives ``inf`` (means,
quantiles) or 0 (distribution functions) there; :func:`check_stable` raises
:class:`UnstableQueueError` instead for callers who want an exception.

References:
    A. K. Erlang (1909), the M/D/1 waiting-time distribution; C. D. Crommelin (1932).
    G. J. Franx (2001), "A simple solution for the M/D/c waiting time distribution",
    Oper. Res. Lett. 29(5): 221–229.
    N. T. J. Bailey (1954), "On queueing processes with bulk service", J. R. Stat. Soc. B 16: 80–87.
    M. F. Neuts (1967), "A general class of bulk queues with Poisson input", Ann. Math. Stat. 38.
    J. Abate, W. Whitt (1992), "Numerical inversion of probability generating functions",
    Oper. Res. Lett. 12: 245–251.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from scipy.fft import irfft, next_fast_len
from scipy.special import gammaln, lambertw, xlogy

__all__ = [
    "QUANTILE_RTOL",
    "TAIL_TOL",
    "UnstableQueueError",
    "bulk_mean_response",
    "bulk_response_cdf",
    "bulk_response_quantile",
    "check_stable",
    "md1_mean_response",
    "md1_mean_wait",
    "md1_response_cdf",
    "md1_response_quantile",
    "md1_wait_cdf",
    "mg1_mean_response",
    "mixture_response_cdf",
    "mixture_response_quantile",
    "window_batch_delay_sum",
]

#: Queue lengths are truncated where the stationary tail mass beyond them is at most this
#: (a Chernoff bound, see :func:`_states_needed`); it bounds the error of every distribution here.
TAIL_TOL = 1e-16
#: Quantile searches stop when the bracket is this narrow relative to the response time.
QUANTILE_RTOL = 1e-12
# Longest queue-length vector one chain may use. It binds only above ρ ≈ 0.99997, where the
# truncation error P(N ≥ 2^20) then exceeds TAIL_TOL (it is ≈ 1e-9 at ρ = 0.99999).
_MAX_STATES = 2**20
# Shortest FFT used for the bulk queue's queue-length law.
_MIN_FFT = 64
# The Chernoff bound evaluates the generating function at z = exp(θ) with θ at most this, and at
# this fraction of the largest θ where it is finite (closer to the pole gives a larger bound).
_CHERNOFF_MAX_LOG_Z = 5.0
_CHERNOFF_FRACTION = 0.9
# Poisson terms kept for a mean m ≤ b: P(N ≥ b + 10√b + 40) < 1e-40 for every b ≥ 1.
_POISSON_SD = 10.0
_POISSON_PAD = 40
# ITP root finding: truncation constant κ1·(bracket width) and steps allowed beyond bisection's count.
_ITP_KAPPA = 0.2
_ITP_SLACK = 1

Array = npt.NDArray[np.float64]


class UnstableQueueError(ValueError):
    """A queue whose load ρ = λ·S / b is at least 1 has no stationary law: its delay grows without bound.

    Attributes:
        model: name of the model whose queue is unstable, or None.
        utilization: its load ρ.
    """

    def __init__(
        self,
        model: str | None,
        utilization: float,
        *,
        rate: float | None = None,
        service_s: float | None = None,
        max_batch: int = 1,
    ) -> None:
        self.model = model
        self.utilization = float(utilization)
        self.rate = rate
        self.service_s = service_s
        self.max_batch = int(max_batch)
        who = f"model {model!r}" if model is not None else "the queue"
        message = f"{who} cannot be stable: load ρ = {self.utilization:.2f} ≥ 1"
        if rate is not None and service_s is not None:
            unit = "service" if self.max_batch == 1 else "batch service"
            detail = f"arrival rate {rate:.3g}/s × {unit} {_format_seconds(service_s)}"
            if self.max_batch > 1:
                detail += f" ÷ batch {self.max_batch}"
            message += f" ({detail} at its share)"
        message += "; lower the rate, add GPU share or fewer steps"
        if self.max_batch > 1:
            message += ", or batch more"
        super().__init__(message)

    def __reduce__(self):  # keyword-only arguments: rebuild from the fields, so the error pickles
        return (_rebuild_unstable, (self.model, self.utilization, self.rate, self.service_s, self.max_batch))


def _rebuild_unstable(model, utilization, rate, service_s, max_batch) -> UnstableQueueError:
    return UnstableQueueError(model, utilization, rate=rate, service_s=service_s, max_batch=max_batch)


def _format_seconds(seconds: float) -> str:
    return f"{seconds:.2f} s" if abs(seconds) >= 0.1 else f"{seconds:.3g} s"


def check_stable(
    models: Sequence[str],
    rates: npt.ArrayLike,
    service_s: npt.ArrayLike,
    max_batch: npt.ArrayLike | None = None,
) -> None:
    """Raise :class:`UnstableQueueError` for the first model whose load ρ_m = λ_m S_m / b_m is ≥ 1.

    Args:
        models: model names, one per entry of ``rates``.
        rates: arrival rates λ_m (requests/s), shape (M,); a model with rate 0 is always stable.
        service_s: time of one call S_m (s): one image, or one batch where ``max_batch`` is given.
        max_batch: batch sizes b_m (None: 1, the M/D/1 queue).
    """
    rate, service, batch = _inputs(rates, service_s, max_batch)
    rate, service, batch = (np.atleast_1d(a) for a in (rate, service, batch))
    if len(models) != rate.size:
        raise ValueError(f"Expected one model name per rate, but got {len(models)} names and {rate.size} rates")
    load = _load(rate, service, batch)
    for m, name in enumerate(models):
        if not load[m] < 1:
            raise UnstableQueueError(
                name, float(load[m]), rate=float(rate[m]), service_s=float(service[m]), max_batch=int(batch[m])
            )


# --------------------------------------------------------------------------------------------
# Means


def md1_mean_wait(rate: npt.ArrayLike, service_s: npt.ArrayLike) -> Array:
    """Mean wait of the M/D/1 queue: E[W] = ρ t / (2(1 − ρ)), ρ = λt (Pollaczek–Khinchine).

    Args:
        rate: arrival rate λ (requests/s), ≥ 0.
        service_s: deterministic service time t (s), > 0 (``inf`` allowed with rate 0).

    Returns:
        E[W] in seconds; 0 where λ = 0, ``inf`` where ρ ≥ 1.
    """
    rate, service, _ = _inputs(rate, service_s, None)
    load = _load(rate, service, 1.0)
    out = np.full(load.shape, np.inf)
    ok = (load > 0) & (load < 1)
    out[ok] = load[ok] * service[ok] / (2 * (1 - load[ok]))
    out[load == 0] = 0.0
    return out[()]


def md1_mean_response(rate: npt.ArrayLike, service_s: npt.ArrayLike) -> Array:
    """Mean response of the M/D/1 queue: E[T] = t + ρ t / (2(1 − ρ)); ``inf`` where ρ ≥ 1."""
    rate, service, _ = _inputs(rate, service_s, None)
    return (service + md1_mean_wait(rate, service))[()]


def mg1_mean_response(rate: npt.ArrayLike, mean_s: npt.ArrayLike, std_s: npt.ArrayLike) -> Array:
    """Mean response of the M/G/1 queue (Pollaczek–Khinchine): E[T] = E[S] + λ E[S²] / (2(1 − ρ)).

    E[S²] = std² + mean², ρ = λ E[S]. With std = 0 this is :func:`md1_mean_response`.

    Args:
        rate: arrival rate λ (requests/s), ≥ 0.
        mean_s: mean service time E[S] (s), > 0.
        std_s: standard deviation of the service time (s), ≥ 0.

    Returns:
        E[T] in seconds; ``inf`` where ρ ≥ 1.
    """
    rate, mean, _ = _inputs(rate, mean_s, None)
    std = np.asarray(std_s, dtype=float)
    if np.any(np.isnan(std) | (std < 0)):
        raise ValueError(f"Expected service-time standard deviations ≥ 0, but got {std_s!r}")
    rate, mean, std = np.broadcast_arrays(rate, mean, std)
    load = _load(rate, mean, 1.0)
    out = np.full(load.shape, np.inf)
    ok = load < 1
    second = std[ok] ** 2 + mean[ok] ** 2
    wait = np.zeros(second.shape)
    busy = rate[ok] > 0
    wait[busy] = rate[ok][busy] * second[busy] / (2 * (1 - load[ok][busy]))
    out[ok] = mean[ok] + wait
    return out[()]


def bulk_mean_response(rate: npt.ArrayLike, batch_service_s: npt.ArrayLike, max_batch: npt.ArrayLike) -> Array:
    r"""Mean response of the bulk-service queue M/D^(1,b)/1 (batches of up to b, each taking S).

    With μ = λS, ρ = μ/b and z_1 … z_{b−1} the roots of z^b = e^{μ(z−1)} inside the unit disk
    (Bailey 1954), the queue Y left waiting when a batch starts has

    .. math::

        E[Y] = \sum_r \frac{1}{1 - z_r} - \frac{b(b-1) - \mu^2}{2(b - \mu)},\qquad
        \pi_0 = (b - \mu) \prod_r \frac{-z_r}{1 - z_r},

    π_0 the probability that a batch leaves the system empty, so the server is busy a fraction
    μ/(μ + π_0) of the time. At a random moment of a batch, Y plus the Poisson(μτ) arrivals of its
    uniform elapsed fraction τ wait, E[Y] + μ/2 on average; Little's law E[W] = L_q/λ gives

    .. math::

        E[T] = S + S\,\frac{E[Y] + \mu/2}{\mu + \pi_0}.

    For b = 1 this is the M/D/1 mean. Cost: b − 1 Lambert-W evaluations per value.

    Args:
        rate: arrival rate λ (requests/s), ≥ 0.
        batch_service_s: time S of one batch of b (s), however full it is; > 0.
        max_batch: batch size b (whole number ≥ 1).

    Returns:
        E[T] in seconds; ``inf`` where ρ = λS/b ≥ 1.
    """
    rate, service, batch = _inputs(rate, batch_service_s, max_batch)
    load = _load(rate, service, batch)
    out = np.full(load.shape, np.inf)
    zero = load == 0
    out[zero] = service[zero]
    regular = (load > 0) & (load < 1)
    for b in np.unique(batch[regular]).astype(int):
        sel = regular & (batch == b)
        c = load[sel]
        mu = b * c
        roots = _inner_roots(c, b)
        idle = _empty_after_batch(c, b, roots)
        mean_queue = np.sum(1 / (1 - roots), axis=1).real - (b * (b - 1) - mu**2) / (2 * (b - mu))
        out[sel] = service[sel] * (1 + (mean_queue + mu / 2) / (mu + idle))
    return out[()]


# --------------------------------------------------------------------------------------------
# Distributions


def md1_wait_cdf(x: npt.ArrayLike, rate: npt.ArrayLike, service_s: npt.ArrayLike) -> Array:
    r"""Exact waiting-time distribution P(W ≤ x) of the M/D/1 queue, stable for every ρ < 1.

    Erlang's classical formula P(W ≤ x) = (1−ρ) Σ_{k=0}^{⌊x/t⌋} [λ(kt − x)]^k / k! · e^{−λ(kt−x)}
    alternates in sign with terms up to e^{2ρx/t}: in float64 at ρ = 0.9 it is off by 5e-7 at
    x = 20t, 4e-4 at 25t and 0.1 at 30t. This function evaluates the same law as a sum of
    positive terms (Franx 2001, the c = 1 case of his M/D/c result; Crommelin 1932). Write
    x = kt + u with 0 ≤ u < t and look at the system t − u before the tagged arrival: with p_j
    the stationary probability of j in system and A ~ Poisson(λ(t − u)) the arrivals since then,

    .. math::

        P(W \le kt + u) = p_0\,P(A \le k) + \sum_{j=1}^{k+1} p_j\,P(A \le k + 1 - j).

    (At most one service ends in a window of length ≤ t; the tagged customer is served by
    kt + u iff at most k + 1 customers were present or arrived in it, except that an empty
    system followed by k + 1 arrivals is not.) The p_j come from the level-crossing recursion of
    the departure-epoch chain,

    .. math::

        p_0 = 1 - \rho,\qquad
        a_0\,p_{n} = p_0 \bar A_n + \sum_{i=1}^{n-1} p_i \bar A_{n+1-i},\qquad
        \bar A_l = P(\text{Poisson}(\rho) \ge l),

    again with positive terms only: p_n carries a relative error of about 50·n·ε, and the CDF, a
    positive combination of probabilities, an absolute error of ~1e-15 (≤ 1e-13 even with 20 000
    states). The p_j are kept up to the n where P(N ≥ n) ≤ :data:`TAIL_TOL` (n ≈ 22/(1 − ρ)
    near ρ = 1: 430 at ρ = 0.95, 2200 at 0.99). Cost per distinct ρ: O(48·n) for the recursion;
    then O(48) per value of x.

    Args:
        x: waiting time (s).
        rate: arrival rate λ (requests/s), ≥ 0.
        service_s: deterministic service time t (s), > 0.

    Returns:
        P(W ≤ x): 0 for x < 0, an atom 1 − ρ at x = 0, and 0 everywhere where ρ ≥ 1 (an
        unstable queue has no finite waiting law: its wait grows without bound).
    """
    x = np.asarray(x, dtype=float)
    rate, service, _ = _inputs(rate, service_s, None)
    x, rate, service = np.broadcast_arrays(x, rate, service)
    queues = _Queues(_load(rate, service, 1.0).ravel(), service.ravel(), None, wait_units=(x / service).ravel())
    return queues.wait_cdf(x.ravel()).reshape(x.shape)[()]


def md1_response_cdf(x: npt.ArrayLike, rate: npt.ArrayLike, service_s: npt.ArrayLike) -> Array:
    """P(T ≤ x) = P(W ≤ x − t) of the M/D/1 queue (0 for x < t, 0 where ρ ≥ 1); see :func:`md1_wait_cdf`."""
    x = np.asarray(x, dtype=float)
    rate, service, _ = _inputs(rate, service_s, None)
    x, rate, service = np.broadcast_arrays(x, rate, service)
    queues = _Queues(_load(rate, service, 1.0).ravel(), service.ravel(), None, wait_units=(x / service - 1).ravel())
    return queues.response_cdf(x.ravel()).reshape(x.shape)[()]


def md1_response_quantile(q: npt.ArrayLike, rate: npt.ArrayLike, service_s: npt.ArrayLike) -> Array:
    """The q-quantile min{x : P(T ≤ x) ≥ q} of the M/D/1 response time.

    Root finding on the exact CDF (:func:`md1_wait_cdf`): bisection over whole service times, then
    ITP inside one, where the CDF is smooth, to a relative width of :data:`QUANTILE_RTOL` (≈ 10
    CDF evaluations there). t where q ≤ 1 − ρ (no wait); ``inf`` where ρ ≥ 1, where q = 1, and
    where q lies within the truncated tail mass (≤ :data:`TAIL_TOL`) of 1.

    Args:
        q: probability in [0, 1].
        rate: arrival rate λ (requests/s), ≥ 0.
        service_s: deterministic service time t (s), > 0.
    """
    q = _probabilities(q)
    rate, service, _ = _inputs(rate, service_s, None)
    q, rate, service = np.broadcast_arrays(q, rate, service)
    queues = _Queues(_load(rate, service, 1.0).ravel(), service.ravel(), None)
    return queues.response_quantile(q.ravel()).reshape(q.shape)[()]


def bulk_response_cdf(
    x: npt.ArrayLike, rate: npt.ArrayLike, batch_service_s: npt.ArrayLike, max_batch: npt.ArrayLike
) -> Array:
    r"""Exact response-time distribution P(T ≤ x) of the bulk-service queue M/D^(1,b)/1.

    Batching rule (static-shape batching, Neuts' general bulk rule with threshold 1): when the
    server frees and k ≥ 1 requests wait it takes min(k, b) of them (FIFO) into one batch that
    takes S however full; if none waits the next arrival starts a batch at once. Stable iff
    ρ = λS/b < 1. T = W + S.

    *Queue length.* With μ = λS, the number X waiting just after a batch ends satisfies
    X' = max(X − b, 0) + A, A ~ Poisson(μ); let Y = max(X − b, 0) be the number left waiting when
    a batch starts. Its generating function (Bailey 1954) is

    .. math::

        E[z^Y] = \frac{(b - \mu)(z - 1)}{z^b - e^{\mu(z-1)}} \prod_{r=1}^{b-1} \frac{z - z_r}{1 - z_r},

    z_r = −W_0(−ρ ω_r e^{−ρ})/ρ, ω_r = e^{2πir/b}, the roots of z^b = e^{μ(z−1)} inside the unit
    disk. P(Y = y) is read off by an FFT of length L on the unit circle, where |E[z^Y]| ≤ 1: the
    round-off is ~ε·log L absolute per probability, and the aliasing errors (the FFT returns
    Σ_m P(Y = y + mL)) add up to exactly the tail mass P(Y ≥ L) ≤ :data:`TAIL_TOL` (L from a
    Chernoff bound; Abate & Whitt 1992).

    *Tagged arrival* (PASTA). The server is idle a fraction π_0/(μ + π_0) of the time,
    π_0 = P(X = 0); the tagged request then waits 0. Otherwise the batch in service has elapsed
    τS, τ ~ U(0, 1) independent of Y, and J = Y + Poisson(μτ) requests wait ahead; the tagged one
    waits (1 − τ)S + ⌊J/b⌋S. For x = (k + f)S, 0 ≤ f < 1,

    .. math::

        P(W \le x \mid \text{busy}) = \Phi(kb - 1, 1 - f) + \Phi((k+1)b - 1, 1) - \Phi((k+1)b - 1, 1 - f),

        \Phi(m, T) = \int_0^T P(J(\tau) \le m)\,d\tau
                   = T\,P(Y \le m) - \sum_{n \ge 0} R_n(T)\,P(Y = m - n),

    with R_n(T) = E[(Poisson(μT) − n − 1)^+]/μ; only n < b + 10√b + 40 contribute. Every
    quantity is a probability or an integral of one, so the result is accurate to ~1e-13
    absolute. With b = 1 it equals :func:`md1_response_cdf` (the tests check 1e-10).

    Cost: per distinct (ρ, b), b − 1 Lambert-W roots and one real FFT of length L
    (L ≈ 22/(1 − ρ) near ρ = 1, 430 at ρ = 0.95, for any b; at least 64); then O(b + 10√b + 40)
    per value of x. 200 service times at one rate, b = 8, ρ up to 0.95: 4–6 ms on a loaded
    2-core machine (numpy, one thread); their 0.95-quantiles about 20 ms.

    Args:
        x: response time (s).
        rate: arrival rate λ (requests/s), ≥ 0.
        batch_service_s: time S of one batch of b (s), > 0.
        max_batch: batch size b (whole number ≥ 1).

    Returns:
        P(T ≤ x); 0 where ρ ≥ 1 (no finite law).
    """
    x = np.asarray(x, dtype=float)
    rate, service, batch = _inputs(rate, batch_service_s, max_batch)
    x, rate, service, batch = np.broadcast_arrays(x, rate, service, batch)
    queues = _Queues(_load(rate, service, batch).ravel(), service.ravel(), batch.ravel())
    return queues.response_cdf(x.ravel()).reshape(x.shape)[()]


def bulk_response_quantile(
    q: npt.ArrayLike, rate: npt.ArrayLike, batch_service_s: npt.ArrayLike, max_batch: npt.ArrayLike
) -> Array:
    """The q-quantile min{x : P(T ≤ x) ≥ q} of the bulk-service response time.

    Root finding on :func:`bulk_response_cdf` as in :func:`md1_response_quantile`, to a relative
    width of :data:`QUANTILE_RTOL`; S where q is at most the idle probability, ``inf`` where
    ρ ≥ 1 or q = 1.
    """
    q = _probabilities(q)
    rate, service, batch = _inputs(rate, batch_service_s, max_batch)
    q, rate, service, batch = np.broadcast_arrays(q, rate, service, batch)
    queues = _Queues(_load(rate, service, batch).ravel(), service.ravel(), batch.ravel())
    return queues.response_quantile(q.ravel()).reshape(q.shape)[()]


def mixture_response_cdf(
    x: npt.ArrayLike,
    rates: npt.ArrayLike,
    service_s: npt.ArrayLike,
    max_batch: npt.ArrayLike | None = None,
) -> Array:
    r"""Response-time distribution of all requests when model m receives rate λ_m.

    .. math::

        F(x) = \frac{\sum_m \lambda_m F_m(x)}{\sum_m \lambda_m},

    F_m the M/D/1 response CDF (``max_batch`` None) or the bulk-service one (b_m = 1 is M/D/1).

    Args:
        x: response time (s); broadcasts against the leading axes of ``rates``.
        rates: λ_m (requests/s), shape (..., M); the last axis runs over models.
        service_s: S_m (s), broadcastable to ``rates``: one image, or one batch of b_m.
        max_batch: b_m, broadcastable to ``rates``; None for M/D/1 queues.

    Returns:
        F(x), shape broadcast(x, rates[..., 0]). A model with λ_m = 0 carries no weight; an
        unstable one (ρ_m ≥ 1) contributes 0. NaN where Σ λ_m = 0.
    """
    rate, service, batch, weight = _mixture_inputs(rates, service_s, max_batch)
    x = np.asarray(x, dtype=float)
    shape = np.broadcast_shapes(x.shape, rate.shape[:-1])
    n_models = rate.shape[-1]
    full = (*shape, n_models)
    rate, service, weight = (np.broadcast_to(a, full) for a in (rate, service, weight))
    batch = None if batch is None else np.broadcast_to(batch, full)
    queues = _Queues(
        _load(rate, service, 1.0 if batch is None else batch).ravel(),
        service.ravel(),
        None if batch is None else batch.ravel(),
    )
    xs = np.broadcast_to(np.broadcast_to(x, shape)[..., None], full)
    cdf = queues.response_cdf(xs.ravel()).reshape(full)
    return np.sum(weight * cdf, axis=-1)[()]


def mixture_response_quantile(
    q: npt.ArrayLike,
    rates: npt.ArrayLike,
    service_s: npt.ArrayLike,
    max_batch: npt.ArrayLike | None = None,
    *,
    weights: npt.ArrayLike | None = None,
) -> Array:
    """The q-quantile min{x : F(x) ≥ q} of :func:`mixture_response_cdf`.

    The answer lies between the smallest and the largest per-model q-quantile (at the smaller
    every F_m < q, at the larger every F_m ≥ q); monotone bisection on x narrows that bracket to
    a relative width of :data:`QUANTILE_RTOL` (ITP steps, see :func:`_solve_increasing`). ``inf``
    where a model with weight (λ_m > 0 by default) is unstable
    (its requests wait without bound) or q = 1; NaN where the weights sum to 0.

    Args:
        q: probability in [0, 1]; broadcasts against the leading axes of ``rates``.
        rates, service_s, max_batch: as in :func:`mixture_response_cdf`.
        weights: how the requests asked about spread over the models, shape of ``rates`` (e.g. one
            category's rate on each model, whose queues all categories share); default the rates.
    """
    rate, service, batch, weight = _mixture_inputs(rates, service_s, max_batch, weights)
    q = _probabilities(q)
    shape = np.broadcast_shapes(q.shape, rate.shape[:-1])
    n_models = rate.shape[-1]
    full = (*shape, n_models)
    rate, service, weight = (np.broadcast_to(a, full).reshape(-1, n_models) for a in (rate, service, weight))
    batch = None if batch is None else np.broadcast_to(batch, full).reshape(-1, n_models)
    load = _load(rate, service, 1.0 if batch is None else batch)
    queues = _Queues(load.ravel(), service.ravel(), None if batch is None else batch.ravel())
    q_rows = np.broadcast_to(q, shape).ravel()
    active = weight > 0  # the rates where no weights are given
    own = queues.response_quantile(np.repeat(q_rows, n_models)).reshape(-1, n_models)
    lo = np.where(active, own, np.inf).min(axis=1)
    hi = np.where(active, own, -np.inf).max(axis=1)
    blocked = (active & ~(load < 1)).any(axis=1) | (q_rows >= 1)
    live = np.isfinite(lo) & np.isfinite(hi) & ~blocked & (lo < hi)

    def gap(x_rows: Array, rows: np.ndarray) -> Array:
        """F(x) − q for the rows ``rows`` (the other rows' queues are not evaluated)."""
        x_full = np.zeros(load.shape)
        x_full[rows] = x_rows[:, None]
        mask = np.zeros(load.shape, dtype=bool)
        mask[rows] = True
        cdf = queues.response_cdf(x_full.ravel(), mask=mask.ravel()).reshape(load.shape)
        return np.sum(weight[rows] * cdf[rows], axis=1) - q_rows[rows]

    out = np.where(lo == hi, lo, np.nan)
    rows = np.flatnonzero(live)
    if rows.size:
        at_lo = gap(lo[rows], rows)
        done = at_lo >= 0  # the smallest per-model quantile is already enough
        out[rows[done]] = lo[rows[done]]
        rest = rows[~done]
        if rest.size:
            out[rest] = _solve_increasing(
                lambda x, i: gap(x, rest[i]), lo[rest], hi[rest], at_lo[~done], gap(hi[rest], rest), hi[rest]
            )
    out[blocked] = np.inf
    out[~active.any(axis=1)] = np.nan
    return out.reshape(shape)[()]


def window_batch_delay_sum(loads: npt.ArrayLike, batch_service_s: npt.ArrayLike, max_batch: npt.ArrayLike) -> Array:
    r"""Sum of the delays of N requests present at time 0, served FIFO in batches of up to b.

    The i-th request completes at ⌈i/b⌉·S, so for whole N = qb + r (0 ≤ r < b)

    .. math::

        D(N) = S \sum_{i=1}^{N} \lceil i/b \rceil = S\left(b\,\frac{q(q+1)}{2} + r(q+1)\right),

    S·N(N+1)/2 for b = 1. A fractional (expected) load counts ⌊N⌋ whole requests and request
    ⌊N⌋ + 1 with weight N − ⌊N⌋: D(N) = D(⌊N⌋) + (N − ⌊N⌋)·⌈(⌊N⌋+1)/b⌉·S, the linear
    interpolation between whole loads.

    Args:
        loads: N ≥ 0 (requests).
        batch_service_s: time S of one batch (s), ≥ 0.
        max_batch: b (whole number ≥ 1).

    Returns:
        D(N) in request-seconds (0 where N = 0, even if S is ``inf``).
    """
    n = np.asarray(loads, dtype=float)
    service = np.asarray(batch_service_s, dtype=float)
    batch = _batches(max_batch)
    if np.any(~np.isfinite(n) | (n < 0)):
        raise ValueError(f"Expected loads N ≥ 0 (requests), but got {loads!r}")
    if np.any(np.isnan(service) | (service < 0)):
        raise ValueError(f"Expected batch service times ≥ 0 (s), but got {batch_service_s!r}")
    n, service, batch = np.broadcast_arrays(n, service, batch)
    whole = np.floor(n)
    groups, rest = np.divmod(whole, batch)
    count = batch * groups * (groups + 1) / 2 + rest * (groups + 1)
    count = count + (n - whole) * np.ceil((whole + 1) / batch)
    out = np.zeros(count.shape)
    some = count > 0
    out[some] = service[some] * count[some]
    return out[()]


# --------------------------------------------------------------------------------------------
# Inputs


def _inputs(
    rate: npt.ArrayLike, service_s: npt.ArrayLike, max_batch: npt.ArrayLike | None
) -> tuple[Array, Array, Array]:
    """Validated float arrays (rate, service, batch), broadcast to one shape; batch 1 when None."""
    rate = np.asarray(rate, dtype=float)
    service = np.asarray(service_s, dtype=float)
    if np.any(np.isnan(rate) | (rate < 0)):
        raise ValueError(f"Expected arrival rates ≥ 0 (requests/s), but got {_preview(rate)}")
    if np.any(np.isnan(service) | (service <= 0)):
        raise ValueError(f"Expected service times > 0 (s), but got {_preview(service)}")
    batch = np.ones(()) if max_batch is None else _batches(max_batch)
    rate, service, batch = np.broadcast_arrays(rate, service, batch)
    return rate, service, batch


def _batches(max_batch: npt.ArrayLike) -> Array:
    batch = np.asarray(max_batch, dtype=float)
    if np.any(~np.isfinite(batch) | (batch < 1) | (batch != np.round(batch))):
        raise ValueError(f"Expected batch sizes that are whole numbers ≥ 1, but got {_preview(batch)}")
    return batch


def _probabilities(q: npt.ArrayLike) -> Array:
    q = np.asarray(q, dtype=float)
    if np.any(np.isnan(q) | (q < 0) | (q > 1)):
        raise ValueError(f"Expected probabilities in [0, 1], but got {_preview(q)}")
    return q


def _preview(values: np.ndarray) -> str:
    flat = np.ravel(values)
    return np.array2string(flat[:8]) + (" …" if flat.size > 8 else "")


def _load(rate: Array, service: Array, batch: Array | float) -> Array:
    """ρ = λS/b, with ρ = 0 where λ = 0 (also where S is ``inf``: an unused model)."""
    load = np.zeros(np.broadcast_shapes(np.shape(rate), np.shape(service), np.shape(batch)))
    rate, service, batch = np.broadcast_arrays(rate, service, batch)
    busy = rate > 0
    load[busy] = rate[busy] * service[busy] / batch[busy]
    return load


def _mixture_inputs(
    rates: npt.ArrayLike,
    service_s: npt.ArrayLike,
    max_batch: npt.ArrayLike | None,
    weights: npt.ArrayLike | None = None,
) -> tuple[Array, Array, Array | None, Array]:
    rate = np.asarray(rates, dtype=float)
    if rate.ndim == 0:
        raise ValueError("Expected rates with a last axis over models, but got a scalar")
    rate, service, batch = _inputs(rate, service_s, max_batch)
    given = rate if weights is None else np.broadcast_to(np.asarray(weights, dtype=float), rate.shape)
    total = given.sum(axis=-1, keepdims=True)
    weight = np.divide(given, total, out=np.full(rate.shape, np.nan), where=total > 0)
    return rate, service, (None if max_batch is None else batch), weight


# --------------------------------------------------------------------------------------------
# Engines: stationary laws per distinct load, evaluated per element


class _Queues:
    """Flat arrays of queues (load ρ, call time S, batch b or None for M/D/1) and their laws.

    Queues with 0 < ρ < 1 are grouped by b; each group builds one law over its distinct loads,
    so repeated (ρ, b) pairs share the work.
    """

    def __init__(self, load: Array, service: Array, batch: Array | None, wait_units: Array | None = None) -> None:
        """``wait_units``: the waits (in units of S) the caller will ask the M/D/1 CDF about, if known: the
        chains then stop at the states those need instead of at the tail (a CDF at a short SLO needs a
        handful, the tail hundreds)."""
        self.load = load
        self.service = service
        self.regular = (load > 0) & (load < 1)
        self.groups: list[tuple[np.ndarray, _MD1Law | _BulkLaw, np.ndarray]] = []
        reg = np.flatnonzero(self.regular)
        keys = [None] if batch is None else [int(b) for b in np.unique(batch[reg])]
        for b in keys:
            sel = reg if b is None else reg[batch[reg] == b]
            if sel.size == 0:
                continue
            loads, chain = np.unique(load[sel], return_inverse=True)
            law = _MD1Law(loads, _states_for(wait_units, sel)) if b is None else _BulkLaw(loads, b)
            self.groups.append((sel, law, chain.ravel()))

    def wait_cdf_units(self, xs: Array, mask: np.ndarray | None = None) -> Array:
        """P(W ≤ xs·S) per element, xs in units of S (NaN stays NaN); only ``mask``'s queues are evaluated."""
        out = np.zeros(xs.shape)
        zero = self.load == 0
        out[zero] = xs[zero] >= 0
        for sel, law, chain in self.groups:
            if mask is not None:
                keep = mask[sel]
                sel, chain = sel[keep], chain[keep]
            x = xs[sel]
            res = np.where(x == np.inf, 1.0, 0.0)
            inside = (x >= 0) & np.isfinite(x)
            if inside.any():
                res[inside] = law.cdf(chain[inside], x[inside])
            out[sel] = res
        out[np.isnan(xs)] = np.nan
        return out

    def wait_cdf(self, x: Array) -> Array:
        xs = np.where(self.regular, x / np.where(self.regular, self.service, 1.0), x)
        return self.wait_cdf_units(xs)

    def response_cdf(self, x: Array, mask: np.ndarray | None = None) -> Array:
        """P(W + S ≤ x) per element; elements outside ``mask`` (if given) come back 0."""
        zero = self.load == 0
        safe = np.where(self.regular, self.service, 1.0)
        xs = np.where(self.regular, x / safe - 1.0, -1.0)
        out = self.wait_cdf_units(xs, mask)
        out[zero] = x[zero] >= self.service[zero]
        out[np.isnan(x)] = np.nan
        if mask is not None:
            out[~mask] = 0.0
        return out

    def response_quantile(self, q: Array) -> Array:
        out = np.full(q.shape, np.inf)
        zero = self.load == 0
        out[zero] = np.where(q[zero] < 1, self.service[zero], np.inf)
        for sel, law, chain in self.groups:
            out[sel] = self.service[sel] * (1 + _wait_quantile_units(law, chain, q[sel]))
        return out


def _wait_quantile_units(law: _MD1Law | _BulkLaw, chain: np.ndarray, q: Array) -> Array:
    """min{x : P(W ≤ x·S) ≥ q} in units of S.

    The whole multiple of S below the answer is found by bisection over integers (the CDF there
    needs no new Poisson terms), then :func:`_solve_increasing` finishes inside that service time,
    where the CDF is smooth and strictly increasing.
    """
    out = np.zeros(q.shape)
    out[q >= 1] = np.inf
    todo = np.flatnonzero((q > law.p_idle[chain]) & (q < 1))
    if todo.size == 0:
        return out
    c, target = chain[todo], q[todo]
    lo = np.zeros(todo.size, dtype=np.int64)
    hi = law.xs_max[c].astype(np.int64)
    beyond = law.cdf(c, hi.astype(float)) < target  # q within the truncated tail mass of 1
    while (hi - lo > 1).any():
        mid = (lo + hi) // 2
        ok = law.cdf(c, mid.astype(float)) >= target
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid)
    a, z = lo.astype(float), hi.astype(float)
    result = _solve_increasing(
        lambda x, i: law.cdf(c[i], x) - target[i], a, z, law.cdf(c, a) - target, law.cdf(c, z) - target, 1 + a
    )
    result[beyond] = np.inf
    out[todo] = result
    return out


def _solve_increasing(
    gap: Callable[[Array, np.ndarray], Array], a: Array, z: Array, gap_a: Array, gap_z: Array, scale: Array
) -> Array:
    """Per element, the smallest x in (a, z] with gap(x) ≥ 0, for a nondecreasing gap with gap(a) < 0 ≤ gap(z).

    The ITP method (Oliveira & Takahashi 2021, ACM TOMS 47(1):5): a regula-falsi point, truncated
    and projected into a shrinking window around the midpoint, so it converges superlinearly on a
    smooth gap yet never needs more steps than bisection plus one, even across the jumps of a
    mixture's atoms. Stops when z − a ≤ QUANTILE_RTOL·scale and returns z. ``gap(x, i)``
    evaluates the elements ``i``.
    """
    a, z, gap_a, gap_z = (np.array(v, dtype=float) for v in (a, z, gap_a, gap_z))
    eps = QUANTILE_RTOL * np.asarray(scale, dtype=float) / 2
    width = z - a
    most = np.ceil(np.log2(np.maximum(width / (2 * eps), 1.0))) + _ITP_SLACK
    kappa = _ITP_KAPPA / np.where(width > 0, width, 1.0)
    for step in range(int(most.max(initial=0)) + 1):
        idx = np.flatnonzero(z - a > 2 * eps)
        if idx.size == 0:
            break
        lo, hi, g_lo, g_hi = a[idx], z[idx], gap_a[idx], gap_z[idx]
        middle = (lo + hi) / 2
        radius = eps[idx] * 2.0 ** (most[idx] - step) - (hi - lo) / 2
        shift = kappa[idx] * (hi - lo) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            falsi = lo - g_lo * (hi - lo) / (g_hi - g_lo)
        falsi = np.where(np.isfinite(falsi), falsi, middle)
        sign = np.sign(middle - falsi)
        trunc = np.where(shift <= np.abs(middle - falsi), falsi + sign * shift, middle)
        x = np.where(np.abs(trunc - middle) <= radius, trunc, middle - sign * radius)
        g = gap(x, idx)
        up = g >= 0
        # gap(x) = 0 exactly: x is the crossing (gap increases strictly where these are used).
        a[idx] = np.where(g == 0, x, np.where(up, lo, x))
        z[idx] = np.where(up, x, hi)
        gap_a[idx] = np.where(up, g_lo, g)
        gap_z[idx] = np.where(up, g, g_hi)
    return z


def _poisson_pmf(mean: Array, terms: int) -> Array:
    """P(Poisson(mean) = i) for i < terms, shape (len(mean), terms); exact at mean 0."""
    i = np.arange(terms)
    return np.exp(xlogy(i, mean[:, None]) - mean[:, None] - gammaln(i + 1))


def _poisson_terms(max_mean: float) -> int:
    return math.ceil(max_mean + _POISSON_SD * math.sqrt(max_mean) + _POISSON_PAD)


def _inner_roots(c: Array, b: int) -> np.ndarray:
    """Roots z_r (r = 1..b−1) of z^b = e^{bc(z−1)} in the open unit disk, shape (len(c), b−1).

    z = ω e^{c(z−1)} with ω = e^{2πir/b} gives z = −W_0(−c ω e^{−c})/c (principal Lambert W; its
    argument has modulus c e^{−c} < 1/e, inside the principal branch's disk).
    """
    omega = np.exp(2j * np.pi * np.arange(1, b) / b)
    return -lambertw(-(c * np.exp(-c))[:, None] * omega[None, :], k=0) / c[:, None]


def _empty_after_batch(c: Array, b: int, roots: np.ndarray) -> Array:
    """π_0 = P(a batch leaves no one waiting) = (b − μ) Π_r (−z_r)/(1 − z_r), μ = bc."""
    return (b - b * c) * np.prod(-roots / (1 - roots), axis=1).real


def _states_needed(c: Array, b: int, roots: np.ndarray, *, in_system: bool) -> np.ndarray:
    """Smallest n with P(V ≥ n) ≤ TAIL_TOL by Chernoff, P(V ≥ n) ≤ E[z^V] z^{−n} for 1 < z < z_0.

    V is Y (the queue left when a batch starts) or, with ``in_system``, Y + Poisson(μ) (for b = 1
    the M/D/1 number in system). z_0 = −W_{−1}(−c e^{−c})/c is the pole of E[z^Y] (the real root
    > 1 of z^b = e^{μ(z−1)}); z = z_0^0.9, capped at e^5.
    """
    mu = b * c
    big = -lambertw(-c * np.exp(-c), k=-1).real / c
    theta = np.minimum(_CHERNOFF_FRACTION * np.log(big), _CHERNOFF_MAX_LOG_Z)
    # Near ρ = 1 the Lambert-W value of z_0 is coarse: step back until the PGF is finite there.
    for _ in range(60):
        gap = b * theta - mu * np.expm1(theta)
        if (gap > 0).all():
            break
        theta = np.where(gap > 0, theta, theta / 2)
    z = np.exp(theta)
    log_pgf = (
        np.log(b - mu)
        + np.log(np.expm1(theta))
        - mu * np.expm1(theta)
        - np.log(np.expm1(gap))
        + np.sum(np.log(np.abs(z[:, None] - roots)) - np.log(np.abs(1 - roots)), axis=1)
    )
    if in_system:
        log_pgf = log_pgf + mu * np.expm1(theta)
    n = np.ceil((log_pgf - math.log(TAIL_TOL)) / theta) + 1
    return np.clip(np.where(np.isfinite(n), n, _MAX_STATES), 1, _MAX_STATES).astype(np.int64)


def _size_classes(sizes: np.ndarray) -> list[np.ndarray]:
    """Chains grouped by length up to the next power of two: each group shares one padded table,
    so a short chain (light load) costs its own length, not the longest one's."""
    klass = np.ceil(np.log2(np.maximum(sizes, 1))).astype(int)
    return [np.flatnonzero(klass == k) for k in np.unique(klass)]


class _Padded:
    """Per-chain sequences t[row, i] readable at any integer i: 0 below 0; above the last column 0
    (``above='zero'``) or the last value (``above='last'``)."""

    def __init__(self, table: Array, above: str) -> None:
        rows, self.width = table.shape
        right = np.zeros((rows, 1)) if above == "zero" else table[:, -1:]
        self.flat = np.hstack([np.zeros((rows, 1)), table, right]).ravel()

    def __call__(self, rows: np.ndarray, cols: np.ndarray) -> Array:
        rows = rows.reshape(rows.shape + (1,) * (cols.ndim - rows.ndim))
        return self.flat[rows * (self.width + 2) + np.clip(cols, -1, self.width) + 1]


class _ChainLaw:
    """Stationary laws of several queues of one kind, one chain per load, in padded tables.

    Attributes:
        p_idle: P(W = 0) per chain.
        xs_max: a whole wait (in units of S) where the CDF is within TAIL_TOL of 1, per chain.
    """

    p_idle: Array
    xs_max: np.ndarray

    def _place(self, sizes: np.ndarray) -> list[np.ndarray]:
        classes = _size_classes(sizes)
        self.where = np.zeros((sizes.size, 2), dtype=np.int64)  # (table, row in it) per chain
        for k, members in enumerate(classes):
            self.where[members, 0] = k
            self.where[members, 1] = np.arange(members.size)
        return classes

    def cdf(self, chain: np.ndarray, xs: Array) -> Array:
        """P(W ≤ xs·S) for finite xs ≥ 0."""
        out = np.empty(xs.shape)
        for k in range(len(self.tables)):
            sel = np.flatnonzero(self.where[chain, 0] == k) if len(self.tables) > 1 else np.arange(xs.size)
            if sel.size:
                out[sel] = self._class_cdf(k, chain[sel], self.where[chain[sel], 1], xs[sel])
        return out


def _states_for(wait_units: Array | None, members: np.ndarray) -> int | None:
    """The states p_0..p_{k+1} a CDF at waits of at most k + u service times needs, or None for all."""
    if wait_units is None:
        return None
    finite = wait_units[members][np.isfinite(wait_units[members])]
    return int(np.floor(max(float(finite.max()), 0.0))) + 2 if finite.size else 1


class _MD1Law(_ChainLaw):
    """Stationary number in system p_j of M/D/1 queues (one chain per load ρ ∈ (0, 1))."""

    # Poisson(ρ < 1) terms kept: P(A ≥ 48) < 1e-61.
    _TERMS = 48

    def __init__(self, rho: Array, max_states: int | None = None) -> None:
        """``max_states``: keep p_0..p_{max_states} at most (enough for CDFs below that many service times)."""
        self.rho = rho
        self.p_idle = 1 - rho
        sizes = _states_needed(rho, 1, np.zeros((rho.size, 0)), in_system=True)
        if max_states is not None:
            sizes = np.minimum(sizes, max_states)
        self.xs_max = sizes + 1
        arrivals = _poisson_pmf(rho, self._TERMS + 1)
        self.below_full = np.cumsum(arrivals[:, : self._TERMS], axis=1)  # P(A ≤ n) at the full mean ρ
        at_least = np.cumsum(arrivals[:, ::-1], axis=1)[:, ::-1]  # Ā_l = P(A ≥ l)
        self.tables: list[tuple[_Padded, _Padded, Array]] = []
        for members in self._place(sizes):
            width = int(sizes[members].max())
            p = self._chains(rho[members], at_least[members], width)
            # Σ_{j=1}^{m} p_j for m = 0..width.
            tail = np.concatenate([np.zeros((members.size, 1)), np.cumsum(p[:, 1:], axis=1)], axis=1)
            self.tables.append((_Padded(p, "zero"), _Padded(tail, "last"), p[:, 0]))

    @classmethod
    def _chains(cls, rho: Array, at_least: Array, width: int) -> Array:
        """p_0..p_width per chain by the level-crossing recursion of the departure-epoch chain,

        a_0 p_n = p_0 Ā_n + Σ_{l=1}^{n−1} Ā_{l+1} p_{n−l}   (n ≥ 1),

        one step for all chains at a time; every term is nonnegative. (scipy.signal.lfilter would
        run it per chain, but importing scipy.signal loads scipy.stats.)
        """
        taps = cls._TERMS - 1  # Ā_{l+1} for l = 1..47; beyond, Ā < 1e-61
        a0 = np.exp(-rho)
        p0 = 1 - rho
        # Coefficients in window order: the window holds p_{n−47} .. p_{n−1}.
        weights = (at_least[:, 2:] / a0[:, None])[:, ::-1]
        drive = p0[:, None] * at_least[:, 1:] / a0[:, None]  # p_0 Ā_n / a_0, n = 1..48
        buf = np.zeros((rho.size, taps + width + 1))  # p_{−47..0} read as 0: p_0 enters via drive
        for n in range(1, width + 1):
            value = np.einsum("ij,ij->i", buf[:, n : n + taps], weights)
            if n <= drive.shape[1]:
                value += drive[:, n - 1]
            buf[:, taps + n] = value
        p = buf[:, taps:]
        p[:, 0] = p0
        return p

    def _class_cdf(self, k: int, chain: np.ndarray, rows: np.ndarray, xs: Array) -> Array:
        """Franx's positive sum (see :func:`md1_wait_cdf`)."""
        p, tail, p0 = self.tables[k]
        terms = self._TERMS
        n = np.arange(terms)
        whole = np.floor(xs)
        frac = xs - whole
        kk = whole.astype(np.int64)
        if frac.any():
            below = np.cumsum(_poisson_pmf(self.rho[chain] * (1 - frac), terms), axis=1)
        else:  # whole multiples of t: the window is one full service time
            below = self.below_full[chain]
        # Terms j = k + 1 − n with P(A ≤ n) < 1 one by one; those with n ≥ terms (P(A ≤ n) = 1) summed.
        j = kk[:, None] + 1 - n[None, :]
        mixed = np.sum(np.where(n[None, :] <= kk[:, None], below * p(rows, j), 0.0), axis=1)
        plain = tail(rows, np.maximum(kk + 1 - terms, 0))
        empty = p0[rows] * below[np.arange(xs.size), np.minimum(kk, terms - 1)]
        return plain + mixed + empty


class _BulkLaw(_ChainLaw):
    """Queue left at batch starts Y of M/D^(1,b)/1 queues (one chain per load ρ ∈ (0, 1))."""

    def __init__(self, rho: Array, b: int) -> None:
        self.b = b
        self.mu = b * rho
        roots = _inner_roots(rho, b)
        empty = _empty_after_batch(rho, b, roots)
        self.p_idle = empty / (self.mu + empty)
        self.terms = _poisson_terms(b)
        self._log_factorial = gammaln(np.arange(self.terms + 2) + 1)
        sizes = np.maximum(_states_needed(rho, b, roots, in_system=False), _MIN_FFT)
        self.xs_max = -(-sizes // b) + 2
        self.excess_full = self._excess(self.mu, np.ones(rho.size))
        self.tables: list[tuple[_Padded, _Padded]] = []
        for members in self._place(sizes):
            length = next_fast_len(int(sizes[members].max()), real=True)
            pmf = self._queue_pmf(self.mu[members], b, roots[members], length)
            self.tables.append((_Padded(pmf, "zero"), _Padded(np.cumsum(pmf, axis=1), "last")))

    @staticmethod
    def _queue_pmf(mu: Array, b: int, roots: np.ndarray, length: int) -> Array:
        """P(Y = y), y < length, by a real inverse FFT of E[z^Y] on the unit circle.

        z − 1, z^b − 1 and e^{μ(z−1)} − 1 are formed from real expm1/sin/cos (numpy's complex expm1
        and division are several times slower), accurate near z = 1 where the ratio is 0/0.
        """
        theta = -2 * np.pi * np.arange(1, length // 2 + 1) / length
        step = -2 * np.sin(theta / 2) ** 2 + 1j * np.sin(theta)  # z − 1
        power = -2 * np.sin(b * theta / 2) ** 2 + 1j * np.sin(b * theta)  # z^b − 1
        re, im = mu[:, None] * step.real[None, :], mu[:, None] * step.imag[None, :]
        grow = np.expm1(re)
        arrival = grow * np.cos(im) - 2 * np.sin(im / 2) ** 2 + 1j * (1 + grow) * np.sin(im)  # e^{μ(z−1)} − 1
        denom = power[None, :] - arrival
        values = ((b - mu)[:, None] * step[None, :]) * denom.conj() / (denom.real**2 + denom.imag**2)
        z = np.exp(1j * theta)
        scale = 1 / (1 - roots)
        for r in range(roots.shape[1]):
            values *= (z[None, :] - roots[:, r, None]) * scale[:, r, None]
        values = np.concatenate([np.ones((mu.size, 1)), values], axis=1)  # E[z^Y] = 1 at z = 1
        return np.clip(irfft(values, n=length, axis=1), 0.0, None)

    def _excess(self, mu: Array, span: Array) -> Array:
        """R_n(T) = E[(Poisson(μT) − n − 1)^+]/μ for n < terms, shape (len(mu), terms)."""
        mean = (mu * span)[:, None]
        i = np.arange(self.terms + 2)
        pmf = np.exp(xlogy(i, mean) - mean - self._log_factorial)
        at_least = np.cumsum(pmf[:, ::-1], axis=1)[:, ::-1]  # P(N ≥ i)
        excess = np.cumsum(at_least[:, ::-1], axis=1)[:, ::-1]  # Σ_{i' ≥ i} P(N ≥ i')
        return excess[:, 2:] / mu[:, None]

    def _class_cdf(self, k: int, chain: np.ndarray, rows: np.ndarray, xs: Array) -> Array:
        """The busy-server integral Φ of :func:`bulk_response_cdf`, plus the idle atom."""
        pmf, cum = self.tables[k]
        b = self.b
        n = np.arange(self.terms)
        whole = np.floor(xs)
        frac = xs - whole
        span = 1 - frac
        low = whole.astype(np.int64) * b - 1
        high = low + b
        full = self.excess_full[chain]
        part = self._excess(self.mu[chain], span) if frac.any() else full
        phi_low = span * cum(rows, low) - np.sum(part * pmf(rows, low[:, None] - n), axis=1)
        upper = frac * cum(rows, high) - np.sum((full - part) * pmf(rows, high[:, None] - n), axis=1)
        idle = self.p_idle[chain]
        return idle + (1 - idle) * (phi_low + upper)
