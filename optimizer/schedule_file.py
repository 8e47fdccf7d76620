"""The plan schedule document: a plan for every arrival rate, as JSON a server reads to switch plans.

A schedule holds, for total arrival rates planned one by one on one calibration table (the category mix
fixed), each rate's figures (its plan's shares and routing, predicted utility, delays and SLO attainment)
and the bands of neighbouring rates whose plans make the same discrete decisions (:class:`Decisions`:
which models serve each category, with how many steps and what largest batch). Each band carries a plan
document (:mod:`genedge.optimizer.plan_file`) made at its highest rate, which a server serves as it is.
:meth:`PlanSchedule.plan_for_rate` picks the plan for an observed rate under :data:`SCHEDULE_POLICY`.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genedge.contract.fields import FieldReader
from genedge.contract.files import ArtifactError, read_json, write_json_atomic
from genedge.optimizer.analysis import DECISION_TOLERANCE
from genedge.optimizer.model import arrival_model
from genedge.optimizer.plan_file import PlanDocument, plan_from_dict
from genedge.optimizer.planners import PlanResult

__all__ = [
    "SCHEDULE_KIND",
    "SCHEDULE_POLICY",
    "SCHEDULE_SCHEMA_VERSION",
    "Decisions",
    "PlanBand",
    "PlanSchedule",
    "RatePoint",
    "ScheduleError",
    "ScheduledPlan",
    "band_to_dict",
    "load_plan_schedule",
    "plan_schedule_from_dict",
    "rate_point_to_dict",
    "save_plan_schedule",
    "schedule_to_dict",
]

SCHEDULE_SCHEMA_VERSION = 1
#: The ``kind`` of a plan schedule document (what tells it from a plan).
SCHEDULE_KIND = "genedge.plan-schedule"

#: How :meth:`PlanSchedule.plan_for_rate` picks a plan; written into every schedule as ``policy``.
SCHEDULE_POLICY = (
    "A rate within a band's planned rates (its edges included) gets that band's plan. A rate between two bands, "
    "or below the first, gets the band above it: that plan was made for a higher rate, and under a fixed plan "
    "delays do not fall as the rate rises, so it keeps its queues stable and its SLO at the lower rate. A rate "
    "above the highest band gets the highest band's plan, flagged: it was made for a lower rate and may miss "
    "its SLO there, and from max_stable_rate on no plan keeps every queue stable (load must be shed or refused). "
    "A band whose plan misses the SLO (feasible false) holds the best plan found that misses it."
)


class ScheduleError(ArtifactError):
    """A plan schedule is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Decisions:
    """The discrete decisions of a plan, which a band's plans share (shares and routing fractions may vary).

    Attributes:
        routes: category → the models that serve it (routing probability at least
            :data:`~genedge.optimizer.analysis.DECISION_TOLERANCE`), in the plan's model order.
        steps: deployed model → its denoising steps.
        max_batch: deployed model → the largest batch it runs.
    """

    routes: Mapping[str, tuple[str, ...]]
    steps: Mapping[str, int]
    max_batch: Mapping[str, int]

    @classmethod
    def of(cls, plan: PlanDocument) -> Decisions:
        """The decisions of a plan document."""
        deployed = plan.deployed
        return cls(
            routes={
                category: tuple(m for m, p in row.items() if p >= DECISION_TOLERANCE)
                for category, row in plan.routing.items()
            },
            steps={key: entry.steps for key, entry in deployed.items()},
            max_batch={key: entry.batch for key, entry in deployed.items()},
        )

    def describe(self) -> str:
        """E.g. ``"sd15@10 b1: Basic, Detail; sd21@20 b1: Complex"``: each deployed model, its steps, batch and
        the categories it serves."""
        parts = []
        for key, steps in self.steps.items():
            served = [c for c, models in self.routes.items() if key in models]
            batch = f" b{self.max_batch[key]}" if self.max_batch[key] > 1 else ""
            parts.append(f"{key}@{steps}{batch}: {', '.join(served) or '-'}")
        return "; ".join(parts)


@dataclass(frozen=True)
class RatePoint:
    """One planned rate of a schedule (a schedule's ``rates[i]``).

    Attributes:
        rate: the total arrival rate (requests/s).
        band: the index of its band in :attr:`PlanSchedule.bands`, or None where no plan keeps every queue
            stable at this rate (at or beyond :attr:`PlanSchedule.max_stable_rate`) or the planner's plan does not
            (:attr:`unstable_plan`); the figures are then None.
        utility / mean_clipscore / mean_delay_s / p95_delay_s: the rate's own plan's predicted figures (points, s).
        slo_attainment: its P(T ≤ SLO), where an SLO is planned for.
        feasible: whether it meets the SLO and quality floor.
        shares: model → GPU share of the rate's own plan.
        routing: category → model → probability of the rate's own plan.
        higher_plan_utility: the utility the next planned rate's plan reaches at this rate where it beats this
            rate's own plan, which is then not optimal (a check of the planner); None elsewhere.
        unstable_plan: the planner's plan at this rate, below the capacity, leaves a queue unstable (a baseline
            may); the rate then has no band.
    """

    rate: float
    band: int | None
    utility: float | None = None
    mean_clipscore: float | None = None
    mean_delay_s: float | None = None
    p95_delay_s: float | None = None
    slo_attainment: float | None = None
    feasible: bool | None = None
    shares: Mapping[str, float] | None = None
    routing: Mapping[str, Mapping[str, float]] | None = None
    higher_plan_utility: float | None = None
    unstable_plan: bool = False


@dataclass(frozen=True)
class PlanBand:
    """Neighbouring planned rates whose plans make the same :class:`Decisions` (a schedule's ``bands[i]``).

    Attributes:
        low_rate / high_rate: its lowest and highest planned rate (requests/s).
        feasible: whether its plan meets the SLO and quality floor at ``high_rate``.
        plan: the plan made at ``high_rate``, a plan document a server serves as it is.
    """

    low_rate: float
    high_rate: float
    feasible: bool
    plan: PlanDocument

    @property
    def decisions(self) -> Decisions:
        """The decisions every plan of the band makes."""
        return Decisions.of(self.plan)


@dataclass(frozen=True)
class ScheduledPlan:
    """The plan :meth:`PlanSchedule.plan_for_rate` picks for a rate.

    Attributes:
        rate: the rate asked for (requests/s).
        band: the band whose plan it is.
        note: why the plan may not serve the rate as planned (above the highest band, beyond the capacity, or
            a plan that misses its SLO), or None.
    """

    rate: float
    band: PlanBand
    note: str | None

    @property
    def plan(self) -> PlanDocument:
        """The band's plan document."""
        return self.band.plan


@dataclass(frozen=True)
class PlanSchedule:
    """A plan schedule read once, its parts typed.

    Attributes:
        method: the planner that made every rate's plan.
        seed: the seed every rate's planner got (each rate is planned as ``genedge plan --rate R --seed S``).
        max_stable_rate: the total rate (requests/s) from which on no plan keeps every queue stable.
        first_infeasible_rate: the lowest planned rate whose best plan misses the SLO or quality floor, or None.
        points: every planned rate, ascending.
        bands: the bands, ascending; every rate below :attr:`max_stable_rate` lies in one.
        raw: the document as read.
    """

    method: str
    seed: int
    max_stable_rate: float
    first_infeasible_rate: float | None
    points: tuple[RatePoint, ...]
    bands: tuple[PlanBand, ...]
    raw: Mapping[str, Any]

    def plan_for_rate(self, rate: float) -> ScheduledPlan:
        """The plan to serve at total arrival rate ``rate`` (requests/s), by :data:`SCHEDULE_POLICY`.

        Raises:
            ValueError: a rate that is not a finite number > 0.
        """
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
            raise ValueError(f"Expected an arrival rate > 0 requests/s, but got {rate!r}")
        highs = [band.high_rate for band in self.bands]
        at = bisect.bisect_left(highs, rate)
        if at < len(self.bands):
            band = self.bands[at]
            note = (
                None
                if band.feasible
                else f"the best plan at {band.high_rate:g} requests/s misses its SLO or quality floor"
            )
            return ScheduledPlan(rate, band, note)
        band = self.bands[-1]
        if rate >= self.max_stable_rate:
            note = (
                f"{rate:g} requests/s is at or beyond {self.max_stable_rate:.4g}, from which on no plan keeps every "
                f"queue stable: the plan for {band.high_rate:g} requests/s is kept; shed or refuse the excess load"
            )
        else:
            note = f"above the highest planned rate {band.high_rate:g} requests/s: its plan may miss the SLO here"
        return ScheduledPlan(rate, band, note)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def rate_point_to_dict(
    rate: float, result: PlanResult | None, band: int | None, *, higher_plan_utility: float | None = None
) -> dict[str, Any]:
    """One ``rates[i]`` entry: the rate's own plan's figures, shares and routing, and where the next rate's plan does
    better at it, that plan's utility. Only the rate where ``result`` is None (no plan keeps every queue stable
    there), and ``stable: false`` besides where the planner's plan leaves a queue unstable."""
    if result is None:
        return {"rate": rate, "band": None}
    if not result.stable:
        return {"rate": rate, "band": None, "stable": False}
    return {
        "rate": rate,
        "band": band,
        "utility": _finite(result.utility),
        "mean_clipscore": result.mean_quality,
        "mean_delay_s": _finite(result.mean_delay_s),
        "p95_delay_s": _finite(result.p95_delay_s),
        "slo_attainment": result.attainment,
        "feasible": bool(result.feasible),
        "shares": result.plan.shares,
        "routing": result.plan.routing,
        "higher_plan_utility": higher_plan_utility,
    }


def band_to_dict(low_rate: float, high_rate: float, plan: Mapping[str, Any]) -> dict[str, Any]:
    """One ``bands[i]`` entry: its lowest and highest rate, and the plan document made at the highest."""
    return {"low_rate": low_rate, "high_rate": high_rate, "plan": dict(plan)}


def schedule_to_dict(
    *,
    method: str,
    seed: int,
    max_stable_rate: float,
    points: Sequence[Mapping[str, Any]],
    bands: Sequence[Mapping[str, Any]],
    inputs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The schedule document from its parts (:func:`rate_point_to_dict`, :func:`band_to_dict`).

    Args:
        method / seed: the planner and the seed every rate was planned with.
        max_stable_rate: the total rate from which on no plan keeps every queue stable (requests/s).
        points: every planned rate, ascending.
        bands: the bands, ascending.
        inputs: what the schedule was made for (table, mix, how its rates were given), written as ``inputs``.
    """
    infeasible = [p["rate"] for p in points if p["band"] is not None and not p["feasible"]]
    return {
        "schema_version": SCHEDULE_SCHEMA_VERSION,
        "kind": SCHEDULE_KIND,
        "method": method,
        "seed": seed,
        "policy": SCHEDULE_POLICY,
        "inputs": dict(inputs or {}),
        "max_stable_rate": max_stable_rate,
        "first_infeasible_rate": min(infeasible) if infeasible else None,
        "rates": [dict(p) for p in points],
        "bands": [dict(b) for b in bands],
    }


def save_plan_schedule(document: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a schedule atomically (after checking it with :func:`plan_schedule_from_dict`)."""
    path = Path(path)
    plan_schedule_from_dict(document, str(path))
    write_json_atomic(path, document)
    return path


def load_plan_schedule(path: str | os.PathLike[str]) -> PlanSchedule:
    """Read and validate a schedule file (see :func:`plan_schedule_from_dict`).

    Raises:
        ScheduleError: naming the file and the field that is wrong.
    """
    path = Path(path)
    return plan_schedule_from_dict(read_json(path, "a JSON plan schedule", ScheduleError), str(path))


def plan_schedule_from_dict(document: Mapping[str, Any], where: str) -> PlanSchedule:
    """A parsed schedule, checked and read into its typed parts in one pass.

    Rates are > 0 and ascending; each band's plan is a valid plan document (read by
    :func:`~genedge.optimizer.plan_file.plan_from_dict`) made at the band's highest rate; the rates of a band
    are neighbours, from its ``low_rate`` to that highest rate; a planned rate has its figures; every rate
    below ``max_stable_rate`` lies in a band, and none at or above it.

    Raises:
        ScheduleError: naming ``where`` and the field that is wrong.
    """
    r = FieldReader(where, ScheduleError)
    if not isinstance(document, Mapping):
        raise r.fail("document", f"expected a JSON object, but got {type(document).__name__}")
    if document.get("schema_version") != SCHEDULE_SCHEMA_VERSION or document.get("kind") != SCHEDULE_KIND:
        raise r.fail("schema_version", f"expected a {SCHEDULE_KIND!r} document of schema {SCHEDULE_SCHEMA_VERSION}")
    max_stable = r.number(document, "max_stable_rate", "", minimum=0, strict=True)
    bands = tuple(_read_band(r, entry, i) for i, entry in enumerate(r.get(document, "bands", "", list)))
    if not bands:
        raise r.fail("bands", "expected at least one band, but got none")
    points = tuple(_read_point(r, entry, i, len(bands)) for i, entry in enumerate(r.get(document, "rates", "", list)))
    _check_points(r, points, bands, max_stable)
    return PlanSchedule(
        method=r.get(document, "method", "", str),
        seed=r.get(document, "seed", "", int),
        max_stable_rate=max_stable,
        first_infeasible_rate=r.opt_number(document, "first_infeasible_rate", "", minimum=0),
        points=points,
        bands=bands,
        raw=document,
    )


def _read_band(r: FieldReader, entry: Any, i: int) -> PlanBand:
    """One ``bands[i]``: its rates and its plan, made for the band's high rate."""
    path = f"bands.{i}"
    r.check(entry, path, dict)
    try:
        plan = plan_from_dict(r.get(entry, "plan", path, dict), f"{r.where} ({path}.plan)")
    except ArtifactError as err:
        raise ScheduleError(r.where, f"{path}.plan", str(err)) from None
    if not arrival_model(plan.inputs.arrivals).per_second or plan.predicted.feasible is None:
        raise r.fail(f"{path}.plan", "expected a plan for open arrivals that says whether it is feasible")
    high = r.number(entry, "high_rate", path, minimum=0, strict=True)
    low = r.number(entry, "low_rate", path, minimum=0, strict=True, maximum=high)
    planned = math.fsum(plan.inputs.workload.values())
    if not math.isclose(planned, high, rel_tol=1e-9):
        raise r.fail(f"{path}.high_rate", f"expected the rate its plan was made for, {planned:g}, but got {high:g}")
    return PlanBand(low_rate=low, high_rate=high, feasible=plan.predicted.feasible, plan=plan)


def _read_point(r: FieldReader, entry: Any, i: int, bands: int) -> RatePoint:
    """One ``rates[i]``: the rate, its band, and (in a band) its figures."""
    path = f"rates.{i}"
    r.check(entry, path, dict)
    rate = r.number(entry, "rate", path, minimum=0, strict=True)
    band = r.opt(entry, "band", path, int)
    if band is None:
        return RatePoint(rate, None, unstable_plan=r.opt(entry, "stable", path, bool) is False)
    r.bounded(band, f"{path}.band", minimum=0, maximum=bands - 1, what="a band index")
    return RatePoint(
        rate=rate,
        band=band,
        utility=r.get(entry, "utility", path, float),
        mean_clipscore=r.get(entry, "mean_clipscore", path, float),
        mean_delay_s=r.get(entry, "mean_delay_s", path, float),
        p95_delay_s=r.get(entry, "p95_delay_s", path, float),
        slo_attainment=r.opt(entry, "slo_attainment", path, float),
        feasible=r.get(entry, "feasible", path, bool),
        shares=_fractions(r, r.get(entry, "shares", path, dict), f"{path}.shares"),
        routing={
            c: _fractions(r, row, f"{path}.routing.{c}") for c, row in r.get(entry, "routing", path, dict).items()
        },
        higher_plan_utility=r.opt(entry, "higher_plan_utility", path, float),
    )


def _fractions(r: FieldReader, values: Any, path: str) -> dict[str, float]:
    """A ``{model: number}`` object (shares, a routing row)."""
    return {key: r.check(value, f"{path}.{key}", float) for key, value in r.check(values, path, dict).items()}


def _check_points(r: FieldReader, points: Sequence[RatePoint], bands: Sequence[PlanBand], max_stable: float) -> None:
    """Rates ascending; a band's rates neighbours from its low to its high rate, bands in order; no band from the
    capacity on, and below it only where the plan there is unstable."""
    rates = [p.rate for p in points]
    if any(b <= a for a, b in itertools.pairwise(rates)):
        raise r.fail("rates", f"expected distinct rates in ascending order, but got {rates}")
    for i, point in enumerate(points):
        if point.band is not None and point.rate >= max_stable:
            raise r.fail(
                f"rates.{i}.band",
                f"expected no band from max_stable_rate {max_stable:g} on (no plan keeps every queue stable), but "
                f"rate {point.rate:g} has band {point.band}",
            )
        if point.band is None and point.rate < max_stable and not point.unstable_plan:
            raise r.fail(
                f"rates.{i}.band",
                f"expected a band below max_stable_rate {max_stable:g}, or 'stable': false where the plan there "
                f"leaves a queue unstable, but rate {point.rate:g} has neither",
            )
    for index, band in enumerate(bands):
        mine = [i for i, p in enumerate(points) if p.band == index]
        if not mine or mine != list(range(mine[0], mine[-1] + 1)):
            raise r.fail(f"bands.{index}", "expected the band's rates to be neighbours in 'rates'")
        if (points[mine[0]].rate, points[mine[-1]].rate) != (band.low_rate, band.high_rate):
            raise r.fail(
                f"bands.{index}",
                f"expected low_rate and the plan's rate to be its first and last rates {points[mine[0]].rate:g} and "
                f"{points[mine[-1]].rate:g}, but got {band.low_rate:g} and {band.high_rate:g}",
            )
        if index and band.low_rate <= bands[index - 1].high_rate:
            raise r.fail(f"bands.{index}", "expected the bands in ascending order of rate")
