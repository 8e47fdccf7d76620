r"""Analytic queues of the open-arrival delay model (DESIGN §3.2).

Model m receives Poisson arrivals of rate λ (requests/s) and serves them first-in first-out on its
GPU share. Without batching one image takes the deterministic time t and the model is an M/D/1
queue with load ρ = λt. With static-shape batching a compiled graph runs batch b in S seconds
however full it is; the model is then the bulk-service queue M/D^(1,b)/1 with load ρ = λS/b. Where a
request asks for several images (X of them, :class:`~genedge.optimizer.model.ImagesPerRequest`), served one
image at a time, an unbatched model is the M^X/D/1 queue: Poisson requests, λ counting images, ρ = λt.
Each queue is stable iff ρ < 1.

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

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from genedge.optimizer.model._images import ImagesPerRequest
from genedge.optimizer.model._queue_laws import (
    QUANTILE_RTOL,
    TAIL_TOL,
    Queues,
    empty_after_batch,
    inner_roots,
    solve_increasing,
)

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


def md1_mean_response(rate: npt.ArrayLike, service_s: npt.ArrayLike, images: ImagesPerRequest | None = None) -> Array:
    r"""Mean response of an image in the M/D/1 queue: E[T] = t + ρ t / (2(1 − ρ)); ``inf`` where ρ ≥ 1.

    With ``images`` (requests of X images, each image served alone, λ counting images, ρ = λt) the
    M^X/D/1 queue: a request's first image waits the workload V, E[V] = ρ t E[X²] / (2 E[X] (1 − ρ))
    (Pollaczek–Khinchine for requests of work X t), and a random image has (E[X²]/E[X] − 1)/2 images of
    its own request before it:

    .. math::

        E[T] = t + \frac{\rho t\,E[X^2]}{2E[X](1-\rho)} + \frac{t}{2}\Big(\frac{E[X^2]}{E[X]} - 1\Big).
    """
    rate, service, _ = _inputs(rate, service_s, None)
    if images is None or images.single:
        return (service + md1_mean_wait(rate, service))[()]
    ratio = images.second_moment / images.mean
    own = service * (ratio - 1) / 2
    return (service + own + md1_mean_wait(rate, service) * ratio)[()]


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
        roots = inner_roots(c, b)
        idle = empty_after_batch(c, b, roots)
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
    queues = Queues(_load(rate, service, 1.0).ravel(), service.ravel(), None, wait_units=(x / service).ravel())
    return queues.wait_cdf(x.ravel()).reshape(x.shape)[()]


def md1_response_cdf(
    x: npt.ArrayLike, rate: npt.ArrayLike, service_s: npt.ArrayLike, images: ImagesPerRequest | None = None
) -> Array:
    """P(T ≤ x) = P(W ≤ x − t) of the M/D/1 queue (0 for x < t, 0 where ρ ≥ 1); see :func:`md1_wait_cdf`.

    With ``images`` the law of a random image of the M^X/D/1 queue (requests of X images, λ counting
    images): Σ_i P(X ≥ i)/E[X] · P(V ≤ x − i t), V the workload a request finds, by Franx's positive sum
    over the images in system (exact to the same tolerance; see ``_BatchArrivalLaw``).
    """
    x = np.asarray(x, dtype=float)
    rate, service, _ = _inputs(rate, service_s, None)
    x, rate, service = np.broadcast_arrays(x, rate, service)
    queues = Queues(
        _load(rate, service, 1.0).ravel(),
        service.ravel(),
        None,
        wait_units=(x / service - 1).ravel(),
        images=_image_law(images),
    )
    return queues.response_cdf(x.ravel()).reshape(x.shape)[()]


def md1_response_quantile(
    q: npt.ArrayLike, rate: npt.ArrayLike, service_s: npt.ArrayLike, images: ImagesPerRequest | None = None
) -> Array:
    """The q-quantile min{x : P(T ≤ x) ≥ q} of the M/D/1 response time.

    Root finding on the exact CDF (:func:`md1_wait_cdf`): bisection over whole service times, then
    ITP inside one, where the CDF is smooth, to a relative width of :data:`QUANTILE_RTOL` (≈ 10
    CDF evaluations there). t where q ≤ 1 − ρ (no wait); ``inf`` where ρ ≥ 1, where q = 1, and
    where q lies within the truncated tail mass (≤ :data:`TAIL_TOL`) of 1.

    Args:
        q: probability in [0, 1].
        rate: arrival rate λ (requests/s), ≥ 0.
        service_s: deterministic service time t (s), > 0.
        images: images per request (:func:`md1_response_cdf`); None for one.
    """
    q = _probabilities(q)
    rate, service, _ = _inputs(rate, service_s, None)
    q, rate, service = np.broadcast_arrays(q, rate, service)
    queues = Queues(_load(rate, service, 1.0).ravel(), service.ravel(), None, images=_image_law(images))
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
    queues = Queues(_load(rate, service, batch).ravel(), service.ravel(), batch.ravel())
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
    queues = Queues(_load(rate, service, batch).ravel(), service.ravel(), batch.ravel())
    return queues.response_quantile(q.ravel()).reshape(q.shape)[()]


def mixture_response_cdf(
    x: npt.ArrayLike,
    rates: npt.ArrayLike,
    service_s: npt.ArrayLike,
    max_batch: npt.ArrayLike | None = None,
    images: ImagesPerRequest | None = None,
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
        images: images per request, each served alone (M^X/D/1, see :func:`md1_response_cdf`; rates count
            images); None for one. Not with ``max_batch``.

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
    queues = Queues(
        _load(rate, service, 1.0 if batch is None else batch).ravel(),
        service.ravel(),
        None if batch is None else batch.ravel(),
        images=_image_law(images),
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
    images: ImagesPerRequest | None = None,
) -> Array:
    """The q-quantile min{x : F(x) ≥ q} of :func:`mixture_response_cdf`.

    The answer lies between the smallest and the largest per-model q-quantile (at the smaller
    every F_m < q, at the larger every F_m ≥ q); monotone bisection on x narrows that bracket to
    a relative width of :data:`QUANTILE_RTOL` (ITP steps, see :func:`solve_increasing`). ``inf``
    where a model with weight (λ_m > 0 by default) is unstable
    (its requests wait without bound) or q = 1; NaN where the weights sum to 0.

    Args:
        q: probability in [0, 1]; broadcasts against the leading axes of ``rates``.
        rates, service_s, max_batch: as in :func:`mixture_response_cdf`.
        weights: how the requests asked about spread over the models, shape of ``rates`` (e.g. one
            category's rate on each model, whose queues all categories share); default the rates.
        images: as in :func:`mixture_response_cdf`.
    """
    rate, service, batch, weight = _mixture_inputs(rates, service_s, max_batch, weights)
    q = _probabilities(q)
    shape = np.broadcast_shapes(q.shape, rate.shape[:-1])
    n_models = rate.shape[-1]
    full = (*shape, n_models)
    rate, service, weight = (np.broadcast_to(a, full).reshape(-1, n_models) for a in (rate, service, weight))
    batch = None if batch is None else np.broadcast_to(batch, full).reshape(-1, n_models)
    load = _load(rate, service, 1.0 if batch is None else batch)
    queues = Queues(load.ravel(), service.ravel(), None if batch is None else batch.ravel(), images=_image_law(images))
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
            out[rest] = solve_increasing(
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


def _image_law(images: ImagesPerRequest | None) -> Array | None:
    """P(X = k) for the queue laws, or None for one image per request."""
    return None if images is None or images.single else images.array()


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
