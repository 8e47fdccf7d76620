r"""The delay models (the :class:`~genedge.optimizer.model._delay.DelayModel` interface, DESIGN §3, §3.2)
and which one serves each arrival model and routing realization.

* :class:`WindowFifo` (``window``, deterministic routing): the N_m requests on model m are served
  FIFO in batches of up to b_m, so the i-th completes at ⌈i/b_m⌉·S_m (b = 1: i·S_m, the paper's model).
* :class:`WindowRandom` (``window``, random routing): N_m = Σ_c Binomial(n_c, p_cm) varies from window
  to window; every figure is the expectation over its exact distribution (for b = 1 the mean gains
  Σ_c n_c p_cm (1 − p_cm) / 2 · S_m, the variance of the load).
* :class:`OpenQueue` (``open``): model m sees Poisson arrivals of rate λ_m = Σ_c x_cm and is an M/D/1
  queue (b = 1) or the bulk-service queue of :mod:`~genedge.optimizer.model._queueing` (b > 1), stable only
  if ρ_m = λ_m S_m / b_m < 1. Random routing splits a Poisson stream into Poisson streams, so the
  figures are exact; smooth weighted round robin makes a split category's stream more regular than
  Poisson, so for split categories they are conservative (the discrete-event check measures by how
  much). Requests of several images (:class:`~genedge.optimizer.model.ImagesPerRequest`, each image served
  alone, the demand counted in images) make an unbatched model the M^X/D/1 queue, exact as well.

This is the one module that tells the models apart. Another model (e.g. arrivals that are not Poisson)
is one more subclass, registered for its arrival model and realization in :data:`_MODELS`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from genedge.optimizer.model import _queueing as queueing
from genedge.optimizer.model._delay import (
    OPEN,
    REALIZATIONS,
    WINDOW,
    DelayModel,
    arrival_model,
    deployed_mask,
    fifo_delay_coefficient,
    utilization,
)
from genedge.optimizer.model._images import ONE_IMAGE, ImagesPerRequest
from genedge.optimizer.model._window_counts import (
    DELAY_RTOL,
    WHOLE_REQUEST_TOL,
    binomial_sum,
    bisect_delay,
    done_by,
    snap_to_completion,
    window_delay_quantile,
)

__all__ = ["OpenQueue", "WindowFifo", "WindowRandom", "delay_model", "delay_model_class"]


class WindowFifo(DelayModel):
    """One window of requests, routed deterministically: model m serves its N_m requests FIFO (module doc)."""

    arrivals = WINDOW
    description = "one window, first in first out"
    steady_state = False

    def share_coefficient(self, requests: np.ndarray, max_batch: np.ndarray) -> np.ndarray:
        """c_m = E[Σ_{i ≤ N_m} ⌈i/b_m⌉]: total window delay on model m is c_m · S_m, shape (M,).

        Deterministic routing takes N_m at its expected value: N(N + 1)/2 for b = 1, the paper's formula
        (smooth in N, as every planner's closed form takes it); for b > 1 the last, partial request
        counts with its fraction. Random routing averages over N_m's (whole) distribution.
        """
        return np.array([self._coefficient(requests, m, int(max_batch[m])) for m in range(len(max_batch))])

    def mass(self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray) -> np.ndarray:
        used = deployed_mask(requests.sum(axis=0))
        coefficient = self.share_coefficient(requests, max_batch)
        return np.where(used, coefficient * np.where(used, call_s, 0.0), 0.0)

    def model_mean(
        self, requests: np.ndarray, model: int, call_s: np.ndarray | float, batch: int
    ) -> np.ndarray | float:
        load = float(requests[:, model].sum())
        return self._coefficient(requests, model, batch) * call_s / load

    def model_within(
        self, requests: np.ndarray, model: int, call_s: np.ndarray | float, batch: int, d: float
    ) -> np.ndarray:
        return self._served(requests, model, call_s, batch, d) / requests[:, model].sum()

    def model_attainment(
        self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, slo_s: float
    ) -> np.ndarray:
        loads = requests.sum(axis=0)
        used = deployed_mask(loads)
        served = self._window_served(requests, call_s, max_batch, slo_s)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(used, served / np.where(used, loads, 1.0), 1.0)

    def quantile(self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, q: float) -> float:
        return window_delay_quantile(call_s, requests.sum(axis=0), q, max_batch)

    def vertex_delay(
        self, full_share_s: np.ndarray, max_batch: np.ndarray
    ) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray] | None]:
        """Each request waits at least its FIFO position: Σ_{i≤N} ⌈i/b⌉ ≥ N(N+1)/(2b), so a_m = √(S_m/(2 b_m))."""
        return full_share_s / max_batch, None

    def _coefficient(self, requests: np.ndarray, model: int, batch: int) -> float:
        """c_m of one model at batch size ``batch`` (see :meth:`share_coefficient`)."""
        load = float(requests[:, model].sum())
        if not deployed_mask(load):
            return 0.0
        if batch == 1:  # the paper's D_m = t_m (N_m + 1) / 2, smooth in expected loads as the planners take it
            return float(fifo_delay_coefficient(1.0, load))
        return float(queueing.window_batch_delay_sum(load, 1.0, batch))

    def _served(self, requests: np.ndarray, model: int, call_s: np.ndarray | float, batch: int, d: float) -> np.ndarray:
        """Expected requests on ``model`` whose window delay is at most ``d``, for each call time in ``call_s``."""
        call_s = np.asarray(call_s, dtype=float)
        load = float(requests[:, model].sum())
        if not deployed_mask(load):
            return np.zeros(call_s.shape)
        done = done_by(call_s, batch, d)
        whole = np.floor(load + WHOLE_REQUEST_TOL)
        partial = max(load - whole, 0.0)  # weight of request number whole + 1
        return np.minimum(done, whole) + np.where(done > whole, partial, 0.0)

    def _largest_load(self, requests: np.ndarray, model: int) -> float:
        """The most requests ``model`` can have in a window."""
        return float(np.ceil(requests[:, model].sum() - WHOLE_REQUEST_TOL))

    def _window_served(self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, d: float) -> np.ndarray:
        """Expected requests per model whose window delay is at most ``d``, shape (M,)."""
        return np.array(
            [float(self._served(requests, m, call_s[m], int(max_batch[m]), d)) for m in range(requests.shape[1])]
        )

    def _group_quantile(
        self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, weights: np.ndarray, q: float
    ) -> float:
        # The delays are multiples of the call times: the quantile is the first completion at which the
        # group's expected share served reaches q.
        models = np.flatnonzero(weights > 0)
        share = weights[models] / weights[models].sum()
        calls = call_s[models]
        hi = max(float(call_s[m] * np.ceil(self._largest_load(requests, m) / max_batch[m])) for m in models)

        def reached(d: float) -> bool:
            within = [float(self.model_within(requests, m, call_s[m], int(max_batch[m]), d)) for m in models]
            return float(share @ np.array(within)) >= q - WHOLE_REQUEST_TOL / weights.sum()

        return snap_to_completion(bisect_delay(reached, 0.0, hi), calls)


class WindowRandom(WindowFifo):
    """One window of requests, each routed by an independent draw: N_m varies (module doc); it takes whole
    request counts only."""

    bound_notes = (None, "the bound ignores the variance of randomly routed loads")
    chance_per_model = False

    @classmethod
    def check_demand(cls, counts: np.ndarray) -> None:
        counts = np.asarray(counts, dtype=float)
        if not np.allclose(counts, np.round(counts)):
            raise ValueError(f"Expected whole request counts for random routing, but got {counts.tolist()}")

    @property
    def beyond_paper(self) -> tuple[str, ...]:
        return ("random routing",)

    def attainment_matrix(
        self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, slo_s: float
    ) -> np.ndarray:
        """P(delay ≤ ``slo_s``) of a category-c request routed to model m, shape (C, M).

        A category-c request on m finds there the others drawn independently: N_m = 1 + K with
        K = Σ_{c'} Binomial(n_{c'} − [c' = c], p_{c'm}), and its chance is E[min(1 + K, k) / (1 + K)]
        with k = b_m ⌊SLO / S_m⌋ requests served in time.
        """
        out = super().attainment_matrix(requests, call_s, max_batch, slo_s)
        counts = np.round(self.counts).astype(int)
        for m in np.flatnonzero(deployed_mask(requests.sum(axis=0))):
            done = np.floor(slo_s / call_s[m] * (1 + DELAY_RTOL)) * max_batch[m]
            for c in np.flatnonzero(requests[:, m] > 0):
                others = counts.copy()
                others[c] -= 1
                values, pmf = self._load_distribution(requests, m, counts=others)
                out[c, m] = float(pmf @ (np.minimum(1 + values, done) / (1 + values)))
        return out

    def quantile(self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, q: float) -> float:
        """Found by bisection on the delay d of Σ_m (requests on m with delay ≤ d) ≥ q·N, so its cost
        does not grow with the number of requests."""
        loads = requests.sum(axis=0)
        used = deployed_mask(loads)
        if not used.any():
            return 0.0
        total = float(loads.sum())
        # The delays are multiples of the call times, so the quantile is the first completion at
        # which the expected number served reaches q·N.
        largest = np.array([self._largest_load(requests, m) if used[m] else 0.0 for m in range(used.size)])
        hi = float((call_s[used] * np.ceil(largest[used] / max_batch[used])).max())
        d = bisect_delay(
            lambda d: float(self._window_served(requests, call_s, max_batch, d).sum()) >= q * total - WHOLE_REQUEST_TOL,
            0.0,
            hi,
        )
        return snap_to_completion(d, call_s[used])

    def _coefficient(self, requests: np.ndarray, model: int, batch: int) -> float:
        if not deployed_mask(float(requests[:, model].sum())):
            return 0.0
        values, pmf = self._load_distribution(requests, model)
        return float(pmf @ queueing.window_batch_delay_sum(values, np.ones_like(values), batch))

    def _served(self, requests: np.ndarray, model: int, call_s: np.ndarray | float, batch: int, d: float) -> np.ndarray:
        call_s = np.asarray(call_s, dtype=float)
        if not deployed_mask(float(requests[:, model].sum())):
            return np.zeros(call_s.shape)
        done = done_by(call_s, batch, d)
        values, pmf = self._load_distribution(requests, model)
        return (np.minimum(values[:, None], np.atleast_1d(done)[None, :]).T @ pmf).reshape(done.shape)

    def _largest_load(self, requests: np.ndarray, model: int) -> float:
        return float(self._load_distribution(requests, model)[0].max())

    def _load_distribution(
        self, requests: np.ndarray, model: int, counts: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The values and pmf of N_m = Σ_c Binomial(n_c, p_cm) (``counts`` replaces n_c)."""
        counts = np.round(self.counts).astype(int) if counts is None else counts
        chances = np.clip(requests[:, model] / self.counts, 0.0, 1.0)
        return binomial_sum(tuple(int(n) for n in counts), tuple(float(p) for p in chances))


class OpenQueue(DelayModel):
    """Poisson arrivals: each deployed model is an M/D/1 (b = 1) or bulk-service (b > 1) queue (module doc)."""

    arrivals = OPEN
    description = "open arrivals (Poisson, M/D/1 per model)"
    steady_state = True
    bound_notes = ("the bound counts each request's service time but not its queueing wait", None)

    @property
    def beyond_paper(self) -> tuple[str, ...]:
        extra = (("random routing",) if self.realization == "random" else ()) + (
            () if self.images.single else (f"requests of {self.images.describe()}",)
        )
        return ("open arrivals", *extra)

    def utilization(self, loads: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray) -> np.ndarray:
        return utilization(loads, call_s, max_batch)

    def stable(self, loads: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray) -> bool:
        used = deployed_mask(loads)
        return bool((utilization(loads, call_s, max_batch)[used] < 1).all())

    def mass(self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray) -> np.ndarray:
        loads = requests.sum(axis=0)
        used = deployed_mask(loads)
        mean = np.full(loads.shape, np.inf)
        live = used & np.isfinite(call_s)
        single = live & (max_batch == 1)
        mean[single] = self._queue_mean(loads[single], call_s[single], 1)
        for m in np.flatnonzero(live & (max_batch > 1)):
            mean[m] = float(self._queue_mean(loads[m], call_s[m], int(max_batch[m])))
        mean[~live] = 0.0
        return np.where(used, loads * mean, 0.0)

    def model_mean(
        self, requests: np.ndarray, model: int, call_s: np.ndarray | float, batch: int
    ) -> np.ndarray | float:
        return self._queue_mean(float(requests[:, model].sum()), call_s, batch)

    def model_within(
        self, requests: np.ndarray, model: int, call_s: np.ndarray | float, batch: int, d: float
    ) -> np.ndarray:
        return self._queue_cdf(d, float(requests[:, model].sum()), call_s, batch)

    def model_attainment(
        self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, slo_s: float
    ) -> np.ndarray:
        loads = requests.sum(axis=0)
        cdf = np.zeros(np.shape(loads))
        single = max_batch == 1
        cdf[single] = self._queue_cdf(slo_s, loads[single], call_s[single], 1)
        for m in np.flatnonzero(~single):
            cdf[m] = float(self._queue_cdf(slo_s, loads[m], call_s[m], int(max_batch[m])))
        return np.where(deployed_mask(loads), cdf, 1.0)

    def quantile(self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, q: float) -> float:
        loads = requests.sum(axis=0)
        used = deployed_mask(loads)
        if not used.any():
            return 0.0
        if not self.stable(loads, call_s, max_batch):
            return np.inf
        batch = None if (max_batch[used] == 1).all() else max_batch[used]
        return float(queueing.mixture_response_quantile(q, loads[used], call_s[used], batch, images=self.images))

    def mg1_mean(
        self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, spread_s: np.ndarray
    ) -> float | None:
        if not (max_batch == 1).all() or not self.images.single:
            return None
        loads = requests.sum(axis=0)
        used = deployed_mask(loads)
        response = queueing.mg1_mean_response(loads[used], call_s[used], spread_s[used])
        return float((loads[used] * response).sum() / float(loads.sum()))

    def vertex_delay(
        self, full_share_s: np.ndarray, max_batch: np.ndarray
    ) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray] | None]:
        """Each request waits at least its own batch's service S_m / r_m: a_m = √S_m, g(N) = √N."""
        return 2 * full_share_s, np.sqrt

    def _group_quantile(
        self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, weights: np.ndarray, q: float
    ) -> float:
        loads = requests.sum(axis=0)
        models = np.flatnonzero(weights > 0)
        stable = np.array([self.stable(loads[[m]], call_s[[m]], max_batch[[m]]) for m in models], dtype=bool)
        held = float(weights[models[stable]].sum() / weights[models].sum())
        if held < q:  # the overloaded queues' requests, waiting without bound, reach past the quantile
            return np.inf
        # Among the stable queues' requests the quantile is the (q / their share)-quantile.
        live = models[stable]
        target = q if stable.all() else q / held
        batch = None if (max_batch[live] == 1).all() else max_batch[live]
        return float(
            queueing.mixture_response_quantile(
                target, loads[live], call_s[live], batch, weights=weights[live], images=self.images
            )
        )

    def _queue_mean(self, rate: np.ndarray | float, call_s: np.ndarray | float, batch: int) -> np.ndarray:
        """E[T] of an image at ``rate`` (images/s) served in batches of up to ``batch``: M/D/1 (M^X/D/1 with
        requests of several images) at b = 1, the bulk-service queue above; inf if unstable."""
        if batch == 1:
            return queueing.md1_mean_response(rate, call_s, self.images)
        self._check_one_image(batch)
        return queueing.bulk_mean_response(rate, call_s, batch)

    def _queue_cdf(self, x: float, rate: np.ndarray | float, call_s: np.ndarray | float, batch: int) -> np.ndarray:
        """P(T ≤ x) of the queue of :meth:`_queue_mean` (0 where unstable)."""
        if batch == 1:
            return queueing.md1_response_cdf(x, rate, call_s, self.images)
        self._check_one_image(batch)
        return queueing.bulk_response_cdf(x, rate, call_s, batch)

    def _check_one_image(self, batch: int) -> None:
        if not self.images.single:
            raise ValueError(
                f"Expected one image per request with batches of {batch} (a bulk-service queue fed by requests of "
                f"several images is not modelled), but requests ask for {self.images.describe()}"
            )


# Every (arrival model, realization) pair and its delay model. Under open arrivals random splitting keeps
# Poisson streams and round robin is scored as Poisson too (conservative, see the module doc).
_MODELS: dict[tuple[str, str], type[DelayModel]] = {
    ("window", "deterministic"): WindowFifo,
    ("window", "random"): WindowRandom,
    ("open", "deterministic"): OpenQueue,
    ("open", "random"): OpenQueue,
}


def delay_model_class(arrivals: str, realization: str) -> type[DelayModel]:
    """The delay model of an arrival model (:data:`~genedge.optimizer.model._delay.ARRIVAL_MODELS`) and a routing
    realization (:data:`~genedge.optimizer.model._delay.REALIZATIONS`).

    Raises:
        ValueError: an unknown arrival model or realization (the message lists the known ones).
    """
    arrival_model(arrivals)
    if realization not in REALIZATIONS:
        raise ValueError(f"Expected a routing realization among {list(REALIZATIONS)}, but got {realization!r}")
    return _MODELS[(arrivals, realization)]


def delay_model(
    arrivals: str, realization: str, counts: np.ndarray, images: ImagesPerRequest = ONE_IMAGE
) -> DelayModel:
    """The delay model of :func:`delay_model_class` for a demand n_c (``counts``) of requests of ``images``.

    Raises:
        ValueError: an unknown arrival model or realization, or a demand the model cannot take.
    """
    model = delay_model_class(arrivals, realization)
    model.check_demand(counts)
    return model(counts, realization, images)
