r"""Discrete-event simulation of a service that switches plans while it serves.

A server of a plan schedule changes its plan as the arrival rate moves. This simulation serves an arrival
sequence under a *timeline*: which of several plans is in force from when. It follows the server's rules
for one request at a time:

- **routing**: a request is routed by the plan in force at its arrival, by that plan's own
  :class:`~genedge.optimizer.model.Router` (a smooth weighted round robin per category), whose state
  is kept from one spell of the plan in force to the next, as a server keeps one router per band;
- **admission**: under plan k, model m holds at most ``queue_bound[m]`` requests (waiting or in service);
  a request routed to a model that holds that many is rejected: counted, never served;
- **steps**: a request keeps the steps of the plan it arrived under;
- **service**: each model serves its queue first in first out, one request at a time. A request's
  service time is its call on the whole device, ``service_s[m] × shares[m]`` of the plan it arrived
  under, divided by the model's share in force when its service starts. A model that the plan in force
  leaves out finishes its queue at the last share a plan gave it.

With one plan throughout and no queue bound this is :func:`~genedge.optimizer.simulation.simulate_arrivals`
with batches of one: the same routing, and departures :math:`D_n = \max(D_{n-1}, a_n) + S` per model.

Out of scope: batching (a plan whose models take batches of more than one request is refused), and the
server's rescaling of the other models' shares while a left-out model finishes its queue (here every
model in force has its plan's share).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from genedge.optimizer.model import Arrivals, Router
from genedge.optimizer.plan_file import PlanDocument

__all__ = ["ServedPlan", "SwitchingRecords", "simulate_switching"]


@dataclass(frozen=True, eq=False)
class ServedPlan:
    """One plan as :func:`simulate_switching` serves it, on the simulation's category and model axes.

    Attributes:
        routing: p[c, m], shape (categories, models), rows summing to 1.
        service_s: seconds per request of each model on its share, shape (models,); ``math.inf`` where the
            plan does not deploy the model.
        shares: each model's share of the device, shape (models,); 0 where not deployed.
        steps: each model's denoising steps, shape (models,); 0 where not deployed.
        queue_bound: requests each model may hold (waiting or in service), shape (models,); None: no bound.
    """

    routing: np.ndarray
    service_s: np.ndarray
    shares: np.ndarray
    steps: np.ndarray
    queue_bound: np.ndarray | None = None

    def __post_init__(self) -> None:
        n_models = np.shape(self.routing)[-1]
        for name in ("service_s", "shares", "steps") + (() if self.queue_bound is None else ("queue_bound",)):
            if np.shape(getattr(self, name)) != (n_models,):
                raise ValueError(
                    f"{name}: expected one entry per model ({n_models}), but got shape {np.shape(getattr(self, name))}"
                )
        deployed = np.asarray(self.shares) > 0
        if (np.isinf(self.service_s) == deployed).any() or (np.asarray(self.service_s) <= 0).any():
            raise ValueError(
                f"service_s: expected a time > 0 for each model with a share and inf for the others, but got "
                f"{np.asarray(self.service_s).tolist()} with shares {np.asarray(self.shares).tolist()}"
            )
        routed = (np.asarray(self.routing) > 0) & ~deployed[None, :]
        if routed.any():
            c, m = np.argwhere(routed)[0]
            raise ValueError(f"routing: category {c} is routed to model {m}, which the plan does not deploy")
        if self.queue_bound is not None and (np.asarray(self.queue_bound) < 1).any():
            raise ValueError(f"queue_bound: expected at least 1 per model, but got {self.queue_bound.tolist()}")

    @classmethod
    def of(
        cls,
        plan: PlanDocument,
        categories: Sequence[str],
        models: Sequence[str],
        queue_bound: Mapping[str, int] | None = None,
    ) -> ServedPlan:
        """A plan document on the given axes (``models`` must hold every model the plan deploys).

        Args:
            plan: the plan.
            categories: the arrivals' categories, each one the plan routes.
            models: the model keys of the simulation's axis (the union of every plan's, say).
            queue_bound: deployed model → requests it may hold; None: no bound.

        Raises:
            ValueError: a category the plan does not route, a deployed model missing from ``models``, or a
                model that takes batches of more than one request.
        """
        deployed = plan.deployed
        missing = sorted(set(deployed) - set(models)) + sorted(set(categories) - set(plan.routing))
        if missing:
            raise ValueError(
                f"Expected the plan's models among {list(models)} and its categories to cover "
                f"{list(categories)}, but {missing} are not"
            )
        batched = sorted(key for key, entry in deployed.items() if entry.batch > 1)
        if batched:
            raise ValueError(f"Expected batches of one request (batching is not simulated), but {batched} batch")
        return cls(
            routing=np.array([[plan.routed(c, key) if key in deployed else 0.0 for key in models] for c in categories]),
            service_s=np.array([deployed[key].service_s if key in deployed else math.inf for key in models]),
            shares=np.array([deployed[key].share if key in deployed else 0.0 for key in models]),
            steps=np.array([deployed[key].steps if key in deployed else 0 for key in models], dtype=np.int64),
            queue_bound=None
            if queue_bound is None
            else np.array([queue_bound.get(key, 1) if key in deployed else 1 for key in models], dtype=np.int64),
        )


@dataclass(frozen=True, eq=False)
class SwitchingRecords:
    """Per-request outcome of :func:`simulate_switching`, in arrival order (one entry per request).

    Attributes:
        arrival_s: arrival time (s).
        category: category index into ``categories``.
        plan: index of the plan in force at its arrival.
        model: the model it was routed to (served by, unless rejected).
        steps: the steps it was served with (those of the plan it arrived under).
        rejected: whether the model was full when it arrived.
        wait_s / service_s / response_s: time in queue, in service and in all (s); NaN where rejected.
        categories: category names.
        n_models: number of models.
    """

    arrival_s: np.ndarray
    category: np.ndarray
    plan: np.ndarray
    model: np.ndarray
    steps: np.ndarray
    rejected: np.ndarray
    wait_s: np.ndarray
    service_s: np.ndarray
    response_s: np.ndarray
    categories: tuple[str, ...]
    n_models: int

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def served(self) -> np.ndarray:
        """Which requests were served (not rejected)."""
        return ~self.rejected

    def slo_attainment(self, slo_s: float) -> float:
        """The fraction of *all* requests served within ``slo_s`` seconds: a rejection counts as a miss."""
        if not len(self):
            return math.nan
        return float(np.mean(self.served & (np.nan_to_num(self.response_s, nan=math.inf) <= slo_s)))


def _checked_timeline(timeline: Sequence[tuple[float, int]], n_plans: int) -> tuple[list[float], np.ndarray]:
    """(each entry's start time, its plan index), after checking them."""
    if not timeline:
        raise ValueError("timeline: expected at least one (start_s, plan) entry, but got none")
    starts = [float(t) for t, _ in timeline]
    index = np.array([int(k) for _, k in timeline], dtype=np.int64)
    if starts[0] != 0 or any(b <= a for a, b in itertools.pairwise(starts)):
        raise ValueError(f"timeline: expected start times from 0 in increasing order, but got {starts[:5]}...")
    if index.min() < 0 or index.max() >= n_plans:
        raise ValueError(f"timeline: expected plan indices in [0, {n_plans}), but got {index.min()}..{index.max()}")
    return starts, index


def _held_shares(plans: Sequence[ServedPlan], index: np.ndarray) -> np.ndarray:
    """Per timeline entry, each model's share while it serves: the plan's, or where the plan leaves the model
    out, the last share a plan gave it (it finishes its queue at that share)."""
    held = np.zeros((index.size, plans[0].shares.size))
    last = np.zeros(plans[0].shares.size)
    for entry, k in enumerate(index):
        shares = plans[k].shares
        last = np.where(shares > 0, shares, last)
        held[entry] = last
    return held


def _route(category: np.ndarray, plan_of: np.ndarray, plans: Sequence[ServedPlan]) -> np.ndarray:
    """Each request's model by the router of the plan in force at its arrival (one router per plan)."""
    model = np.empty(category.size, dtype=np.int64)
    for k in np.unique(plan_of):
        where = np.flatnonzero(plan_of == k)
        model[where] = Router(plans[k].routing).route_all(category[where])
    return model


@dataclass
class _Outcome:
    """The per-request arrays :func:`_serve_model` fills in."""

    rejected: np.ndarray
    wait_s: np.ndarray
    service_s: np.ndarray


def _serve_model(
    m: int,
    rows: np.ndarray,
    times: np.ndarray,
    plan_of: np.ndarray,
    plans: Sequence[ServedPlan],
    starts: list[float],
    held: np.ndarray,
    out: _Outcome,
) -> None:
    """Model ``m``'s first-in first-out queue over its requests ``rows`` (in arrival order)."""
    free = -math.inf
    departures: collections.deque[float] = collections.deque()  # of the requests it holds
    for i in rows.tolist():
        arrival, plan = times[i], plans[plan_of[i]]
        while departures and departures[0] <= arrival:
            departures.popleft()
        if plan.queue_bound is not None and len(departures) >= plan.queue_bound[m]:
            out.rejected[i] = True
            continue
        start = arrival if arrival > free else free
        share = held[bisect.bisect_right(starts, start) - 1, m]
        # the call on the whole device, over the share in force: exactly service_s while the plan is the same
        service = plan.service_s[m] * (plan.shares[m] / share)
        free = start + service
        departures.append(free)
        out.wait_s[i], out.service_s[i] = start - arrival, service


def simulate_switching(
    arrivals: Arrivals, plans: Sequence[ServedPlan], timeline: Sequence[tuple[float, int]]
) -> SwitchingRecords:
    """Serve every request of ``arrivals`` under plans that change over time (see the module's description).

    Args:
        arrivals: the requests (their ``categories`` index the rows of every plan's routing).
        plans: the plans, on one category and model axis.
        timeline: ``(start_s, plan index)`` entries, the first at 0 s, times increasing: the plan in force
            at time t is the last entry's that starts at or before t.

    Returns:
        The per-request records, in arrival order.

    Raises:
        ValueError: no plans, plans on different axes, a routing row count other than the arrivals'
            categories, or a timeline that does not start at 0, is not increasing, or names no plan.

    Example:
        >>> from genedge.optimizer.model import Arrivals
        >>> fast = ServedPlan(np.array([[1.0]]), np.array([1.0]), np.array([1.0]), np.array([10]))
        >>> slow = ServedPlan(np.array([[1.0]]), np.array([2.0]), np.array([0.5]), np.array([20]))
        >>> requests = Arrivals(np.array([0.0, 0.5, 1.0, 3.0]), np.zeros(4, int), ("all",), 4.0)
        >>> records = simulate_switching(requests, [fast, slow], [(0.0, 0), (1.2, 1)])
        >>> records.response_s.tolist(), records.steps.tolist()  # the third arrives fast, starts on half the device
        ([1.0, 1.5, 3.0, 3.0], [10, 10, 10, 20])
    """
    if not plans:
        raise ValueError("plans: expected at least one plan, but got none")
    shape = (len(arrivals.categories), plans[0].shares.size)
    wrong = [k for k, plan in enumerate(plans) if plan.routing.shape != shape]
    if wrong:
        raise ValueError(
            f"plans: expected routing of shape {shape} (the arrivals' categories × models) in every plan, but plan "
            f"{wrong[0]} has {plans[wrong[0]].routing.shape}"
        )
    starts, index = _checked_timeline(timeline, len(plans))
    times = arrivals.times_s
    plan_of = index[np.searchsorted(np.array(starts), times, side="right") - 1]
    model = _route(arrivals.category, plan_of, plans)
    n = times.size
    out = _Outcome(np.zeros(n, dtype=bool), np.full(n, math.nan), np.full(n, math.nan))
    held = _held_shares(plans, index)
    for m in np.unique(model):
        _serve_model(int(m), np.flatnonzero(model == m), times, plan_of, plans, starts, held, out)
    steps = np.array([plan.steps for plan in plans])[plan_of, model]
    return SwitchingRecords(
        arrival_s=times,
        category=arrivals.category,
        plan=plan_of,
        model=model,
        steps=steps,
        rejected=out.rejected,
        wait_s=out.wait_s,
        service_s=out.service_s,
        response_s=out.wait_s + out.service_s,
        categories=arrivals.categories,
        n_models=shape[1],
    )
