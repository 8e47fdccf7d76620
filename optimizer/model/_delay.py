r"""Delay models: how long a plan's requests wait (DESIGN §3, §3.2).

A delay model is one implementation of :class:`DelayModel`, chosen by the problem's arrival model
and routing realization (:func:`delay_model`). The planners, the system model's evaluation, the
discrete-event comparison and the serving prediction all ask the problem's model
(:attr:`~genedge.optimizer.model.Problem.delay`); no other module branches on which model it is.
Every method takes the plan as expected requests x[c, m] (per window, or per second under open
arrivals), the seconds S_m one call takes on model m's share (a batch of up to b_m images; ``inf``
where a model is not deployed) and b_m.

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
  much).

In the window model a delay is the time from the window's start to the request's image; under
open arrivals it is the response time (wait plus service). Another model (e.g. arrivals that are
not Poisson) is one more subclass, registered for its arrival model and realization in
:data:`_MODELS`.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.special import gammaln, xlog1py, xlogy

from genedge.optimizer.model import _queueing as queueing

__all__ = [
    "ARRIVAL_MODELS",
    "DEPLOYED_MIN_REQUESTS",
    "OPEN",
    "REALIZATIONS",
    "WINDOW",
    "ArrivalModel",
    "DelayFigures",
    "DelayModel",
    "GroupDelay",
    "OpenQueue",
    "WindowFifo",
    "WindowRandom",
    "arrival_model",
    "delay_model",
    "delay_model_class",
    "deployed_mask",
    "fifo_delay_coefficient",
    "utilization",
    "window_delay_quantile",
]

# Expected loads within this of a whole number count as that whole number of requests.
_WHOLE_REQUEST_TOL = 1e-9
# Relative round-off allowed when a delay is compared with a multiple of a call time.
_DELAY_RTOL = 1e-12
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

#: Expected requests per planning window (or per second) at or below which a model is not deployed:
#: it gets no compute share, holds no memory and adds no delay. Routings carry float residue far
#: below one request; this is where residue ends and traffic begins.
DEPLOYED_MIN_REQUESTS = 1e-9


def deployed_mask(loads: np.ndarray) -> np.ndarray:
    """Which models a plan deploys: expected requests N_m above :data:`DEPLOYED_MIN_REQUESTS`, shape (M,).

    This is the one definition of "deployed" (or "in use"): the system model, the planners, the
    plan file and the command line all decide it here.
    """
    return np.asarray(loads, dtype=float) > DEPLOYED_MIN_REQUESTS


@dataclass(frozen=True)
class ArrivalModel:
    """How requests arrive, as far as the demand is concerned.

    Attributes:
        name: the name the command line and the plan file use (one of :data:`ARRIVAL_MODELS`).
        per_second: the demand is rates λ_c (requests/s), not requests per window.
        demand_unit: what a demand counts, ``"requests/s"`` or ``"requests"`` (per window).
        label: the arrival model in words.
    """

    name: str
    per_second: bool
    demand_unit: str
    label: str


#: Every request of a planning window arrives at once (the paper's model).
WINDOW = ArrivalModel("window", per_second=False, demand_unit="requests", label="window model")
#: Poisson arrivals of λ_c requests per second.
OPEN = ArrivalModel("open", per_second=True, demand_unit="requests/s", label="open arrivals")
_ARRIVALS = {a.name: a for a in (WINDOW, OPEN)}
#: Arrival models (DESIGN §3, §3.2): ``window`` serves n_c requests that all arrive at once (the paper's
#: model); ``open`` serves Poisson arrivals of λ_c requests per second, one M/D/1 (or, with batching,
#: bulk-service) queue per deployed model.
ARRIVAL_MODELS = tuple(_ARRIVALS)
#: How routing probabilities become routes: ``deterministic`` (smooth weighted round robin per category,
#: so the planned loads hold exactly) or ``random`` (each request drawn independently, so the loads vary
#: and their variance enters the delay).
REALIZATIONS = ("deterministic", "random")


def arrival_model(name: str) -> ArrivalModel:
    """The arrival model called ``name`` (one of :data:`ARRIVAL_MODELS`).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name not in _ARRIVALS:
        raise ValueError(f"Expected a delay model among {list(ARRIVAL_MODELS)}, but got {name!r}")
    return _ARRIVALS[name]


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


@dataclass(frozen=True)
class GroupDelay:
    """What one group of a plan's requests (one model's, one category's) waits.

    An overloaded queue's requests wait without bound: they make the group's mean infinite, never
    meet the SLO, and make a quantile infinite only where their share of the group reaches past it.

    Attributes:
        mean_s: mean delay (s).
        p95_s / p99_s: 95th / 99th percentile of the delay (s).
        attainment: P(delay ≤ SLO), where an SLO is given; else None.
    """

    mean_s: float
    p95_s: float
    p99_s: float
    attainment: float | None


def utilization(loads: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray) -> np.ndarray:
    """ρ_m = λ_m S_m / b_m (0 where a model has no load)."""
    with np.errstate(invalid="ignore"):
        return np.where(deployed_mask(loads), loads * call_s / max_batch, 0.0)


def fifo_delay_coefficient(full_share_s: np.ndarray | float, loads: np.ndarray | float) -> np.ndarray:
    """K_m = (o_m + τ_m s_m) · N_m (N_m + 1) / 2: total FIFO delay on model m is K_m / r_m (s · GPU)."""
    return full_share_s * loads * (loads + 1) / 2


class DelayModel(ABC):
    """How long a plan's requests wait: one implementation per delay model (module doc).

    Args:
        counts: the problem's demand per category n_c (requests per window, or λ_c requests/s).
        realization: how routing is realized (one of :data:`REALIZATIONS`).

    Models are equal where they are the same model for the same demand.

    Attributes:
        arrivals: how requests arrive (class attribute).
        description: the model in words, as reports state it (class attribute).
        steady_state: requests keep arriving, so each deployed model is a queue with steady-state
            figures, stable only at ρ_m < 1; False for one window of requests (class attribute).
        bound_notes: what the exact search's upper bound leaves out under this model: of each
            request's delay, and of the loads' variation (class attribute; None where nothing).
        chance_per_model: every request on a model has the same chance of meeting an SLO, its
            :meth:`model_within` (class attribute; False where :meth:`attainment_matrix` says otherwise).
    """

    arrivals: ClassVar[ArrivalModel]
    description: ClassVar[str]
    steady_state: ClassVar[bool]
    bound_notes: ClassVar[tuple[str | None, str | None]] = (None, None)
    chance_per_model: ClassVar[bool] = True

    def __init__(self, counts: np.ndarray, realization: str) -> None:
        self.counts = np.asarray(counts, dtype=float)
        self.realization = realization

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and other.realization == self.realization
            and np.array_equal(other.counts, self.counts)
        )

    def __hash__(self) -> int:
        return hash((type(self), self.realization, self.counts.tobytes()))

    @classmethod
    def check_demand(cls, counts: np.ndarray) -> None:
        """Refuse a demand n_c the model cannot take (:func:`delay_model` asks; by default it takes any)."""
        return None

    def for_counts(self, counts: np.ndarray) -> DelayModel:
        """The same model for another demand n_c.

        Raises:
            ValueError: a demand the model cannot take.
        """
        type(self).check_demand(counts)
        return type(self)(counts, self.realization)

    @property
    def beyond_paper(self) -> tuple[str, ...]:
        """What this model adds to the paper's (one window routed deterministically), in words; () for it."""
        return ()

    # ----------------------------------------------------------------- whole plan

    def utilization(self, loads: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray) -> np.ndarray | None:
        """ρ_m = λ_m S_m / b_m per model where requests keep arriving (:attr:`steady_state`); else None."""
        return None

    def stable(self, loads: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray) -> bool:
        """Whether every deployed queue has a steady state (always, for one window)."""
        return True

    def share_coefficient(self, requests: np.ndarray, max_batch: np.ndarray) -> np.ndarray | None:
        """c_m with model m's delay mass c_m · S_m, proportional to its call time and so to 1/r_m, shape (M,).

        Where the delay mass has that form the shares minimizing the mean delay are the closed form
        r_m ∝ √(S_m c_m) at full share; None where it does not.
        """
        return None

    @abstractmethod
    def mass(self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray) -> np.ndarray:
        """Per model, the summed delay of its requests: mean delay = Σ_m mass_m / N, shape (M,).

        Window: c_m·S_m seconds per window. Open: λ_m·E[T_m] (request-seconds per second); inf for
        an unstable queue.
        """

    @abstractmethod
    def model_mean(
        self, requests: np.ndarray, model: int, call_s: np.ndarray | float, batch: int
    ) -> np.ndarray | float:
        """Mean delay of a request on ``model`` (s), for each call time in ``call_s`` (inf where unstable)."""

    @abstractmethod
    def model_within(
        self, requests: np.ndarray, model: int, call_s: np.ndarray | float, batch: int, d: float
    ) -> np.ndarray:
        """P(delay ≤ ``d``) of a request on ``model``, for each call time in ``call_s`` (0 where unstable)."""

    @abstractmethod
    def model_attainment(
        self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, slo_s: float
    ) -> np.ndarray:
        """P(delay ≤ ``slo_s``) of a request on each model, shape (M,) (1 where a model has no load)."""

    def attainment_matrix(
        self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, slo_s: float
    ) -> np.ndarray:
        """P(delay ≤ ``slo_s``) of a category-c request routed to model m, shape (C, M).

        Every request on a model shares its queue, so the chance is the model's alone unless a model
        says otherwise (:class:`WindowRandom`). Weighted by the requests, these give back
        :meth:`model_attainment`.
        """
        per_model = self.model_attainment(requests, call_s, max_batch, slo_s)
        return np.broadcast_to(per_model, requests.shape).copy()

    @abstractmethod
    def quantile(self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, q: float) -> float:
        """The q-quantile of the delay over all requests (s); inf when a deployed queue is unstable."""

    def mg1_mean(
        self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, spread_s: np.ndarray
    ) -> float | None:
        """The M/G/1 mean delay from the spread of one image's service time, where the model has one; else None."""
        return None

    @abstractmethod
    def vertex_delay(
        self, full_share_s: np.ndarray, max_batch: np.ndarray
    ) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray] | None]:
        """The delay every request must wait, as :func:`~genedge.optimizer.planners._assignment.vertex_bound` takes it:
        its ``full_share_s`` and ``delay_root`` (None for the window's √(N(N+1)))."""

    def figures(
        self,
        requests: np.ndarray,
        call_s: np.ndarray,
        max_batch: np.ndarray,
        *,
        slo_s: float | None = None,
        spread_s: np.ndarray | None = None,
    ) -> DelayFigures:
        """Mean, p95, p99 and SLO attainment of a plan's delays (see :class:`DelayFigures`).

        Args:
            slo_s: the SLO (s) the attainments are for, or None for none.
            spread_s: standard deviation of one image's service time on each model's share (s), for
                the M/G/1 mean beside the M/D/1 one; None to leave it out.
        """
        loads = requests.sum(axis=0)
        total = float(loads.sum())
        stable = self.stable(loads, call_s, max_batch)
        mass = self.mass(requests, call_s, max_batch)
        attainment = category = None
        if slo_s is not None:  # an unstable queue's requests never meet it; the others may
            chance = self.attainment_matrix(requests, call_s, max_batch, slo_s)
            attainment = float((requests * chance).sum() / total)
            category = (requests * chance).sum(axis=1) / requests.sum(axis=1)
        mg1 = None
        if spread_s is not None and stable:
            mg1 = self.mg1_mean(requests, call_s, max_batch, spread_s)
        return DelayFigures(
            mean_s=float(mass.sum() / total) if stable else np.inf,
            p95_s=self.quantile(requests, call_s, max_batch, 0.95),
            p99_s=self.quantile(requests, call_s, max_batch, 0.99),
            attainment=attainment,
            category_attainment=category,
            utilization=self.utilization(loads, call_s, max_batch),
            stable=bool(stable),
            mg1_mean_s=mg1,
        )

    # ----------------------------------------------------------------- groups of requests

    def groups(
        self,
        requests: np.ndarray,
        call_s: np.ndarray,
        max_batch: np.ndarray,
        members: Sequence[np.ndarray],
        slo_s: float | None = None,
    ) -> list[GroupDelay]:
        """The delays of groups of a plan's requests (see :class:`GroupDelay`).

        Args:
            requests: all of the plan's requests x[c, m], whose queues every group shares.
            members: per group, its part of ``requests``, shape (C, M) each (e.g. one model's column).
            slo_s: the SLO (s) the attainments are for, or None.
        """
        loads = requests.sum(axis=0)
        used = deployed_mask(loads)
        chance = None if slo_s is None else self.attainment_matrix(requests, call_s, max_batch, slo_s)
        means = {m: float(self.model_mean(requests, m, call_s[m], int(max_batch[m]))) for m in np.flatnonzero(used)}
        out = []
        for group in members:
            weights = np.where(used, group.sum(axis=0), 0.0)
            models = np.flatnonzero(weights > 0)
            share = weights[models] / weights[models].sum()
            out.append(
                GroupDelay(
                    mean_s=float(sum(w * means[m] for w, m in zip(share, models))),
                    p95_s=self._group_quantile(requests, call_s, max_batch, weights, 0.95),
                    p99_s=self._group_quantile(requests, call_s, max_batch, weights, 0.99),
                    attainment=None if chance is None else float((group * chance).sum() / group.sum()),
                )
            )
        return out

    @abstractmethod
    def _group_quantile(
        self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, weights: np.ndarray, q: float
    ) -> float:
        """The q-quantile of the delay of requests spread over the models by ``weights`` (requests per model)."""


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
        done = _done_by(call_s, batch, d)
        whole = np.floor(load + _WHOLE_REQUEST_TOL)
        partial = max(load - whole, 0.0)  # weight of request number whole + 1
        return np.minimum(done, whole) + np.where(done > whole, partial, 0.0)

    def _largest_load(self, requests: np.ndarray, model: int) -> float:
        """The most requests ``model`` can have in a window."""
        return float(np.ceil(requests[:, model].sum() - _WHOLE_REQUEST_TOL))

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
            return float(share @ np.array(within)) >= q - _WHOLE_REQUEST_TOL / weights.sum()

        return _snap(_bisect(reached, 0.0, hi), calls)


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
            done = np.floor(slo_s / call_s[m] * (1 + _DELAY_RTOL)) * max_batch[m]
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
        d = _bisect(
            lambda d: (
                float(self._window_served(requests, call_s, max_batch, d).sum()) >= q * total - _WHOLE_REQUEST_TOL
            ),
            0.0,
            hi,
        )
        return _snap(d, call_s[used])

    def _coefficient(self, requests: np.ndarray, model: int, batch: int) -> float:
        if not deployed_mask(float(requests[:, model].sum())):
            return 0.0
        values, pmf = self._load_distribution(requests, model)
        return float(pmf @ queueing.window_batch_delay_sum(values, np.ones_like(values), batch))

    def _served(self, requests: np.ndarray, model: int, call_s: np.ndarray | float, batch: int, d: float) -> np.ndarray:
        call_s = np.asarray(call_s, dtype=float)
        if not deployed_mask(float(requests[:, model].sum())):
            return np.zeros(call_s.shape)
        done = _done_by(call_s, batch, d)
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
        return _binomial_sum(tuple(int(n) for n in counts), tuple(float(p) for p in chances))


class OpenQueue(DelayModel):
    """Poisson arrivals: each deployed model is an M/D/1 (b = 1) or bulk-service (b > 1) queue (module doc)."""

    arrivals = OPEN
    description = "open arrivals (Poisson, M/D/1 per model)"
    steady_state = True
    bound_notes = ("the bound counts each request's service time but not its queueing wait", None)

    @property
    def beyond_paper(self) -> tuple[str, ...]:
        return ("open arrivals", *(("random routing",) if self.realization == "random" else ()))

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
        mean[single] = _queue_mean(loads[single], call_s[single], 1)
        for m in np.flatnonzero(live & (max_batch > 1)):
            mean[m] = float(_queue_mean(loads[m], call_s[m], int(max_batch[m])))
        mean[~live] = 0.0
        return np.where(used, loads * mean, 0.0)

    def model_mean(
        self, requests: np.ndarray, model: int, call_s: np.ndarray | float, batch: int
    ) -> np.ndarray | float:
        return _queue_mean(float(requests[:, model].sum()), call_s, batch)

    def model_within(
        self, requests: np.ndarray, model: int, call_s: np.ndarray | float, batch: int, d: float
    ) -> np.ndarray:
        return _queue_cdf(d, float(requests[:, model].sum()), call_s, batch)

    def model_attainment(
        self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, slo_s: float
    ) -> np.ndarray:
        loads = requests.sum(axis=0)
        cdf = np.zeros(np.shape(loads))
        single = max_batch == 1
        cdf[single] = _queue_cdf(slo_s, loads[single], call_s[single], 1)
        for m in np.flatnonzero(~single):
            cdf[m] = float(_queue_cdf(slo_s, loads[m], call_s[m], int(max_batch[m])))
        return np.where(deployed_mask(loads), cdf, 1.0)

    def quantile(self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, q: float) -> float:
        loads = requests.sum(axis=0)
        used = deployed_mask(loads)
        if not used.any():
            return 0.0
        if not self.stable(loads, call_s, max_batch):
            return np.inf
        batch = None if (max_batch[used] == 1).all() else max_batch[used]
        return float(queueing.mixture_response_quantile(q, loads[used], call_s[used], batch))

    def mg1_mean(
        self, requests: np.ndarray, call_s: np.ndarray, max_batch: np.ndarray, spread_s: np.ndarray
    ) -> float | None:
        if not (max_batch == 1).all():
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
            queueing.mixture_response_quantile(target, loads[live], call_s[live], batch, weights=weights[live])
        )


def _queue_mean(rate: np.ndarray | float, call_s: np.ndarray | float, batch: int) -> np.ndarray:
    """E[T] of Poisson arrivals at ``rate`` served in batches of up to ``batch`` (M/D/1 at b = 1); inf if unstable."""
    if batch == 1:
        return queueing.md1_mean_response(rate, call_s)
    return queueing.bulk_mean_response(rate, call_s, batch)


def _queue_cdf(x: float, rate: np.ndarray | float, call_s: np.ndarray | float, batch: int) -> np.ndarray:
    """P(T ≤ x) of the queue of :func:`_queue_mean` (0 where unstable)."""
    if batch == 1:
        return queueing.md1_response_cdf(x, rate, call_s)
    return queueing.bulk_response_cdf(x, rate, call_s, batch)


# Every (arrival model, realization) pair and its delay model. Under open arrivals random splitting keeps
# Poisson streams and round robin is scored as Poisson too (conservative, see the module doc).
_MODELS: dict[tuple[str, str], type[DelayModel]] = {
    ("window", "deterministic"): WindowFifo,
    ("window", "random"): WindowRandom,
    ("open", "deterministic"): OpenQueue,
    ("open", "random"): OpenQueue,
}


def delay_model_class(arrivals: str, realization: str) -> type[DelayModel]:
    """The delay model of an arrival model (:data:`ARRIVAL_MODELS`) and a routing realization (:data:`REALIZATIONS`).

    Raises:
        ValueError: an unknown arrival model or realization (the message lists the known ones).
    """
    arrival_model(arrivals)
    if realization not in REALIZATIONS:
        raise ValueError(f"Expected a routing realization among {list(REALIZATIONS)}, but got {realization!r}")
    return _MODELS[(arrivals, realization)]


def delay_model(arrivals: str, realization: str, counts: np.ndarray) -> DelayModel:
    """The delay model of :func:`delay_model_class` for a demand n_c (``counts``).

    Raises:
        ValueError: an unknown arrival model or realization, or a demand the model cannot take.
    """
    model = delay_model_class(arrivals, realization)
    model.check_demand(counts)
    return model(counts, realization)


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


def _done_by(call_s: np.ndarray, batch: int, d: float) -> np.ndarray:
    """Requests a model has completed by time ``d`` in a window, for each call time (0 where it has none)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(call_s), np.floor(d / call_s * (1 + _DELAY_RTOL)) * batch, 0.0)


@functools.lru_cache(maxsize=_DISTRIBUTION_CACHE)
def _binomial_sum(counts: tuple[int, ...], chances: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
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


def _bisect(reached, lo: float, hi: float) -> float:
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
