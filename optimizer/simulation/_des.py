r"""Discrete-event simulation of open arrivals: per-request waits and responses of a routed plan.

Requests arrive as an :class:`~genedge.optimizer.model.Arrivals` sequence, are routed to models
with a routing matrix (:class:`~genedge.optimizer.model.Router`), and each model serves its own
first-in first-out queue on its share of the device. The service time of model m, ``service_s[m]``,
is for one batch on that share, so it already includes the share's slowdown.

Batching is static-shape: when model m's server is free and k ≥ 1 requests wait, it takes the
min(k, b_m) oldest into one batch that takes ``service_s[m]`` however full it is; when none waits,
it starts as soon as one arrives (with any that arrive at that same instant). With b_m = 1 this is
the single FIFO server, an M/D/1 queue under Poisson arrivals, whose departures follow

.. math:: D_n = \max(D_{n-1}, a_n) + S = nS + \max_{k \le n}\bigl(a_k - (k-1)S\bigr),

computed at once with a running maximum. For b_m > 1 batches are formed one by one.

The summary drops the earliest ``warmup`` fraction of requests, since the analytic figures it is
compared with are steady-state means and the simulation starts with empty queues.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genedge.optimizer.model import Arrivals, Realization, Router

__all__ = [
    "DEFAULT_WARMUP",
    "SE_BATCHES",
    "GroupStats",
    "RecordSummary",
    "RequestRecords",
    "simulate_arrivals",
]

#: Fraction of the earliest requests a summary leaves out by default (the queues start empty).
DEFAULT_WARMUP = 0.1
#: Contiguous batches (in arrival order) whose means give the standard error of a mean response.
SE_BATCHES = 20
# Per-request columns of RequestRecords, in table order.
_COLUMNS = ("arrival_s", "category", "model", "wait_s", "service_s", "response_s", "batch_size")


@dataclass(frozen=True)
class GroupStats:
    """Response figures of a group of requests; ``None`` where the group has too few requests.

    Attributes:
        count: requests in the group.
        mean_response_s / p50_response_s / p95_response_s / p99_response_s: response time T = W + S (s),
            percentiles by linear interpolation.
        mean_response_se_s: standard error of the mean response by batch means: the group in arrival order is
            cut into :data:`SE_BATCHES` contiguous batches and SE = sd(batch means) / √batches (s); ``None``
            below 2 requests per batch.
        mean_wait_s: mean time in queue W (s).
        slo_attainment: P(T ≤ SLO), the fraction of the group within the SLO; ``None`` without an SLO.
    """

    count: int
    mean_response_s: float | None
    mean_response_se_s: float | None
    p50_response_s: float | None
    p95_response_s: float | None
    p99_response_s: float | None
    mean_wait_s: float | None
    slo_attainment: float | None


@dataclass(frozen=True)
class RecordSummary:
    """Summary of simulated requests after the warm-up.

    Attributes:
        overall: figures over every measured request.
        per_category: category name → figures of its requests.
        per_model: model index → figures of the requests it served (every model, used or not).
        throughput_per_s: measured requests / (last departure − first arrival among them) (requests/s).
        slo_s: the SLO used for attainment (s), or ``None``.
        warmup: the fraction of the earliest requests left out.
        excluded: how many requests the warm-up left out.
    """

    overall: GroupStats
    per_category: dict[str, GroupStats]
    per_model: dict[int, GroupStats]
    throughput_per_s: float | None
    slo_s: float | None
    warmup: float
    excluded: int


def _group_stats(response: np.ndarray, wait: np.ndarray, slo_s: float | None) -> GroupStats:
    if response.size == 0:
        return GroupStats(0, None, None, None, None, None, None, None)
    p50, p95, p99 = np.quantile(response, [0.5, 0.95, 0.99])
    se = None
    if response.size >= 2 * SE_BATCHES:
        means = np.array([part.mean() for part in np.array_split(response, SE_BATCHES)])
        se = float(means.std(ddof=1) / math.sqrt(SE_BATCHES))
    return GroupStats(
        count=int(response.size),
        mean_response_s=float(response.mean()),
        mean_response_se_s=se,
        p50_response_s=float(p50),
        p95_response_s=float(p95),
        p99_response_s=float(p99),
        mean_wait_s=float(wait.mean()),
        slo_attainment=None if slo_s is None else float(np.mean(response <= slo_s)),
    )


@dataclass(frozen=True, eq=False)
class RequestRecords:
    """Per-request outcome of a simulation, in arrival order (every array has one entry per request).

    Attributes:
        arrival_s: arrival time (s).
        category: category index into ``categories``.
        model: index of the model that served it.
        wait_s: time in queue before its batch started, W (s).
        service_s: its batch's service time, S (s).
        response_s: T = W + S (s).
        batch_size: how many requests its batch held.
        categories: category names.
        n_models: number of models (columns of the routing matrix).
    """

    arrival_s: np.ndarray
    category: np.ndarray
    model: np.ndarray
    wait_s: np.ndarray
    service_s: np.ndarray
    response_s: np.ndarray
    batch_size: np.ndarray
    categories: tuple[str, ...]
    n_models: int

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def departure_s(self) -> np.ndarray:
        """Completion time, arrival + response (s)."""
        return self.arrival_s + self.response_s

    def summary(self, slo_s: float | None = None, warmup: float = DEFAULT_WARMUP) -> RecordSummary:
        """Response figures overall, per category and per model, after leaving out a warm-up.

        Args:
            slo_s: a response-time objective (s); attainment is P(T ≤ slo_s).
            warmup: fraction in [0, 1) of the earliest arrivals to leave out (default
                :data:`DEFAULT_WARMUP`): the simulation starts with empty queues, the analytic figures
                are steady-state.

        Raises:
            ValueError: ``warmup`` outside [0, 1), or a negative or non-finite ``slo_s``.
        """
        if not 0 <= warmup < 1:
            raise ValueError(f"Expected a warm-up fraction in [0, 1), but got {warmup}")
        if slo_s is not None and (not math.isfinite(slo_s) or slo_s < 0):
            raise ValueError(f"Expected an SLO >= 0 seconds, but got {slo_s}")
        skip = math.floor(warmup * len(self))
        kept = slice(skip, None)
        response, wait = self.response_s[kept], self.wait_s[kept]
        category, model = self.category[kept], self.model[kept]
        throughput = None
        if response.size:
            span = float((self.arrival_s[kept] + response).max() - self.arrival_s[kept].min())
            throughput = response.size / span if span > 0 else None
        return RecordSummary(
            overall=_group_stats(response, wait, slo_s),
            per_category={
                name: _group_stats(response[category == c], wait[category == c], slo_s)
                for c, name in enumerate(self.categories)
            },
            per_model={m: _group_stats(response[model == m], wait[model == m], slo_s) for m in range(self.n_models)},
            throughput_per_s=throughput,
            slo_s=slo_s,
            warmup=warmup,
            excluded=skip,
        )

    def to_dict(self) -> dict[str, np.ndarray]:
        """Plain columns, one entry per request (``category`` as names), e.g. for
        ``pandas.DataFrame(records.to_dict()).to_parquet(path)``."""
        columns = {name: getattr(self, name) for name in _COLUMNS}
        columns["category"] = np.array(self.categories, dtype=object)[self.category]
        return columns


def _fifo_starts(arrival: np.ndarray, service: float, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Start time of each request's batch and that batch's size, for one model's FIFO queue."""
    n = arrival.size
    if batch == 1:
        offset = service * np.arange(n)
        starts = offset + np.maximum.accumulate(arrival - offset)
        return np.maximum(starts, arrival), np.ones(n, dtype=np.int64)
    times = arrival.tolist()
    batch_starts, sizes = [], []
    free, i = -math.inf, 0
    while i < n:
        start = times[i] if times[i] > free else free
        j = bisect.bisect_right(times, start, i, min(i + batch, n))
        batch_starts.append(start)
        sizes.append(j - i)
        free, i = start + service, j
    size = np.repeat(np.array(sizes, dtype=np.int64), sizes)
    return np.repeat(np.array(batch_starts), sizes), size


def simulate_arrivals(
    arrivals: Arrivals,
    routing_matrix: Sequence[Sequence[float]] | np.ndarray,
    service_s: Sequence[float] | np.ndarray,
    *,
    max_batch: int | Sequence[int] | np.ndarray = 1,
    realization: Realization = "deterministic",
    rng: int | np.random.Generator | None = None,
) -> RequestRecords:
    r"""Route and serve every request of an arrival sequence; return each one's wait and response.

    Args:
        arrivals: the requests (their ``categories`` index the rows of ``routing_matrix``).
        routing_matrix: p[c, m], shape (categories, models), rows summing to 1.
        service_s: seconds per batch of each model on its share, shape (models,); ``math.inf`` marks a
            model that is not deployed (no category may route to it).
        max_batch: largest batch b_m per model (an int for all, or shape (models,)); 1 = no batching.
        realization: ``"deterministic"`` (smooth weighted round robin per category) or ``"random"``
            (independent draws); see :class:`~genedge.optimizer.model.Router`.
        rng: a seed or generator (used by ``"random"`` routing only).

    Returns:
        The per-request records, in arrival order.

    Raises:
        ValueError: shapes that do not match, a service time that is not > 0, a batch size < 1, or a
            positive routing probability to a model with infinite service time.

    Example:
        >>> from genedge.optimizer.model import Arrivals
        >>> requests = Arrivals(np.array([0.0, 0.1, 0.2, 0.3, 1.5]), np.zeros(5, int), ("all",), 1.5)
        >>> records = simulate_arrivals(requests, [[1.0]], [1.0], max_batch=2)
        >>> records.wait_s.round(6).tolist(), records.batch_size.tolist()
        ([0.0, 0.9, 0.8, 1.7, 0.5], [1, 2, 2, 2, 2])
    """
    router = Router(routing_matrix, realization=realization, rng=rng)
    if router.n_categories != len(arrivals.categories):
        raise ValueError(
            f"Expected one routing row per category ({len(arrivals.categories)}: {list(arrivals.categories)}), "
            f"but the routing matrix has {router.n_categories}"
        )
    n_models = router.n_models
    service = np.array(service_s, dtype=float)
    if service.shape != (n_models,):
        raise ValueError(f"Expected service_s of shape ({n_models},), one per model, but got {service.shape}")
    if np.isnan(service).any() or (service <= 0).any():
        raise ValueError(f"Expected service times > 0 (inf for an unused model), but got {service.tolist()}")
    batch = np.broadcast_to(np.asarray(max_batch), (n_models,))
    if not np.issubdtype(batch.dtype, np.integer) or (batch < 1).any():
        raise ValueError(f"Expected whole batch sizes >= 1 per model, but got {np.asarray(max_batch).tolist()}")
    unused = np.isinf(service)
    routed = router.routing_matrix[:, unused] > 0
    if routed.any():
        c, m = np.argwhere(routed)[0]
        model = int(np.flatnonzero(unused)[m])
        raise ValueError(
            f"Expected no routing to model {model}, whose service time is inf (not deployed), but category "
            f"{arrivals.categories[c]!r} sends it p = {router.routing_matrix[c, model]}"
        )
    model = router.route_all(arrivals.category)
    arrival = arrivals.times_s
    start = np.empty(arrival.size)
    size = np.empty(arrival.size, dtype=np.int64)
    for m in np.unique(model):
        where = np.flatnonzero(model == m)
        start[where], size[where] = _fifo_starts(arrival[where], float(service[m]), int(batch[m]))
    wait = start - arrival
    per_request = service[model]
    return RequestRecords(
        arrival_s=arrival,
        category=arrivals.category,
        model=model,
        wait_s=wait,
        service_s=per_request,
        response_s=wait + per_request,
        batch_size=size,
        categories=arrivals.categories,
        n_models=n_models,
    )
