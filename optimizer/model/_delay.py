r"""Delay models' interface: how long a plan's requests wait (DESIGN §3, §3.2), and the arrival models.

A delay model is one implementation of :class:`DelayModel`, chosen by the problem's arrival model
(:class:`ArrivalModel`) and routing realization (:func:`~genedge.optimizer.model._delay_models.delay_model`;
the implementations are in :mod:`~genedge.optimizer.model._delay_models`). The planners, the system
model's evaluation, the discrete-event comparison and the serving prediction all ask the problem's model
(:attr:`~genedge.optimizer.model.Problem.delay`); no other module branches on which model it is.
Every method takes the plan as expected requests x[c, m] (per window, or per second under open
arrivals), the seconds S_m one call takes on model m's share (a batch of up to b_m images; ``inf``
where a model is not deployed) and b_m.

In the window model a delay is the time from the window's start to the request's image; under
open arrivals it is the response time (wait plus service).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from genedge.optimizer.model._images import ONE_IMAGE, ImagesPerRequest

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
    "arrival_model",
    "deployed_mask",
    "fifo_delay_coefficient",
    "utilization",
]

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
    """How long a plan's requests wait: one implementation per delay model
    (:mod:`~genedge.optimizer.model._delay_models`).

    Args:
        counts: the problem's demand per category n_c (requests per window, or λ_c requests/s).
        realization: how routing is realized (one of :data:`REALIZATIONS`).
        images: how many images one request asks for; the demand counts images, and a request's images
            arrive and queue together (open arrivals; in a window everything arrives at once anyway).

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

    def __init__(self, counts: np.ndarray, realization: str, images: ImagesPerRequest = ONE_IMAGE) -> None:
        self.counts = np.asarray(counts, dtype=float)
        self.realization = realization
        self.images = images

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and other.realization == self.realization
            and other.images == self.images
            and np.array_equal(other.counts, self.counts)
        )

    def __hash__(self) -> int:
        return hash((type(self), self.realization, self.images, self.counts.tobytes()))

    @classmethod
    def check_demand(cls, counts: np.ndarray) -> None:
        """Refuse a demand n_c the model cannot take (:func:`~genedge.optimizer.model._delay_models.delay_model`
        asks; by default it takes any)."""
        return None

    def for_counts(self, counts: np.ndarray) -> DelayModel:
        """The same model for another demand n_c.

        Raises:
            ValueError: a demand the model cannot take.
        """
        type(self).check_demand(counts)
        return type(self)(counts, self.realization, self.images)

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
        says otherwise (:class:`~genedge.optimizer.model._delay_models.WindowRandom`). Weighted by the
        requests, these give back :meth:`model_attainment`.
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
