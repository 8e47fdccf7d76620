"""The window model's counting: requests done by a time, randomly routed loads, and delay quantiles.

In one window the i-th request on model m completes at ⌈i/b_m⌉·S_m, so every delay is a multiple of a
call time: a quantile is found by bisection on the delay and snapped to the completion time it brackets.
Randomly routed loads N_m = Σ_c Binomial(n_c, p_cm) are counted over their exact distribution.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from scipy.special import gammaln, xlog1py, xlogy

from genedge.optimizer.model import _queueing as queueing
from genedge.optimizer.model._delay import deployed_mask

__all__ = [
    "DELAY_RTOL",
    "WHOLE_REQUEST_TOL",
    "binomial_sum",
    "bisect_delay",
    "done_by",
    "snap_to_completion",
    "window_delay_quantile",
]

# Expected loads within this of a whole number count as that whole number of requests.
WHOLE_REQUEST_TOL = 1e-9
# Relative round-off allowed when a delay is compared with a multiple of a call time.
DELAY_RTOL = 1e-12
# Relative distance below the bisection's end within which a request's delay is the quantile.
_SNAP_RTOL = 1e-9
# Bisection of a window's quantile stops after this many halvings, or when the bracket is as narrow relative to
# its upper end as a queue's quantile search leaves it (queueing.QUANTILE_RTOL); the result is then snapped
# to the completion time it brackets.
_BISECTIONS = 200
# A load pmf keeps values of N_m down to this probability (the rest is below float resolution).
_PMF_FLOOR = 1e-16
# Load distributions kept per process.
_DISTRIBUTION_CACHE = 4096


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
    whole = np.floor(n + WHOLE_REQUEST_TOL)
    partial = n - whole  # weight of request number whole + 1

    def served_by(d: float) -> float:
        done = np.floor(d / t * (1 + DELAY_RTOL)) * b
        return float(np.minimum(done, whole).sum() + np.where(done > whole, partial, 0.0).sum())

    target = q * float(n.sum()) - WHOLE_REQUEST_TOL
    hi = float((t * np.ceil(np.ceil(n - WHOLE_REQUEST_TOL) / b)).max())
    return snap_to_completion(bisect_delay(lambda d: served_by(d) >= target, 0.0, hi), t)


def snap_to_completion(d: float, call_s: np.ndarray) -> float:
    """The completion time just at or below ``d``: the bisection ends a hair above the quantile."""
    candidates = np.ceil(d / call_s * (1 - DELAY_RTOL)) * call_s
    return float(candidates[candidates >= d * (1 - _SNAP_RTOL)].min())


def done_by(call_s: np.ndarray, batch: int, d: float) -> np.ndarray:
    """Requests a model has completed by time ``d`` in a window, for each call time (0 where it has none)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(call_s), np.floor(d / call_s * (1 + DELAY_RTOL)) * batch, 0.0)


@functools.lru_cache(maxsize=_DISTRIBUTION_CACHE)
def binomial_sum(counts: tuple[int, ...], chances: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The values and pmf of Σ_c Binomial(n_c, p_c), read-only (cached: a plan's figures and a planner's
    search ask for the same loads many times)."""
    pmf = np.ones(1)
    for n, p in zip(counts, chances):
        if p > 0:
            pmf = np.convolve(pmf, _binomial_pmf(n, p))
    pmf = np.clip(pmf, 0.0, None)
    keep = pmf > _PMF_FLOOR * pmf.max()
    values, pmf = np.flatnonzero(keep).astype(float), pmf[keep] / pmf[keep].sum()
    values.setflags(write=False)
    pmf.setflags(write=False)
    return values, pmf


def _binomial_pmf(n: int, p: float) -> np.ndarray:
    """P(K = k) for K ~ Binomial(n, p), k = 0..n (scipy.special only: scipy.stats costs seconds to import)."""
    k = np.arange(n + 1)
    log = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1) + xlogy(k, p) + xlog1py(n - k, -p)
    return np.exp(log)


def bisect_delay(reached: Callable[[float], bool], lo: float, hi: float) -> float:
    """The smallest d in (lo, hi] with ``reached(d)``, to a relative width of :data:`queueing.QUANTILE_RTOL`."""
    for _ in range(_BISECTIONS):
        if hi - lo <= queueing.QUANTILE_RTOL * hi:
            break
        mid = (lo + hi) / 2
        if reached(mid):
            hi = mid
        else:
            lo = mid
    return hi
