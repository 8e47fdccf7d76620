"""A plan schedule as a server serves it: every band's plan checked against the table, and what to load.

A server of a schedule (:mod:`genedge.optimizer.schedule_file`) switches plans while it runs
(:mod:`genedge.serve.controller`), so each device loads, once, every model any band's plan deploys; a model
the current plan leaves out rests at share 0. Each band's plan is checked as a single plan is
(:func:`~genedge.serve.spec.serve_spec`). Switching moves shares within one device, so every band's plan
must fit on one device (a budget of at most one GPU).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from genedge.contract.runs import DEFAULT_DTYPE
from genedge.serve.spec import ServedModel, ServeError, ServeSpec, serve_spec

if TYPE_CHECKING:
    from genedge.contract.table import CalibrationTable
    from genedge.optimizer.schedule_file import PlanSchedule

__all__ = ["ServedSchedule", "served_schedule"]


@dataclass(frozen=True)
class ServedSchedule:
    """A plan schedule checked for serving.

    Attributes:
        schedule: the schedule as read.
        bands: each band's plan as served, in the schedule's band order.
        start: the band served first: the highest, whose plan keeps the queues stable and the SLO at every
            rate the schedule covers (:data:`~genedge.optimizer.schedule_file.SCHEDULE_POLICY`), until the
            controller has seen the rate.
        deployed: what the devices load: the starting band's spec with every model any band deploys (share 0
            where the starting plan leaves it out).
    """

    schedule: PlanSchedule
    bands: tuple[ServeSpec, ...]
    start: int
    deployed: ServeSpec


def served_schedule(
    schedule: PlanSchedule,
    table: CalibrationTable,
    table_bytes: bytes,
    *,
    model_specs: Mapping[str, str] | None = None,
    queue_bound_s: float | None = None,
    default_dtype: str = DEFAULT_DTYPE,
    where: str = "<schedule>",
) -> ServedSchedule:
    """Check every band's plan against the table (:func:`~genedge.serve.spec.serve_spec`) and say what to load.

    Raises:
        ServeError: what :func:`~genedge.serve.spec.serve_spec` refuses in any band (named ``bands[i].plan``),
            a band whose plan needs more than one device, or a ``--model`` key no band deploys.
    """
    model_specs = dict(model_specs or {})
    deployed_anywhere = {key for band in schedule.bands for key in band.plan.deployed}
    extra = sorted(set(model_specs) - deployed_anywhere)
    if extra:
        raise ServeError(
            f"--model: {extra} are not models any plan of the schedule deploys ({sorted(deployed_anywhere)})"
        )
    bands = []
    for i, band in enumerate(schedule.bands):
        spec = serve_spec(
            band.plan,
            table,
            table_bytes,
            model_specs={key: value for key, value in model_specs.items() if key in band.plan.deployed},
            queue_bound_s=queue_bound_s,
            default_dtype=default_dtype,
            where=f"{where}: bands[{i}].plan",
        )
        if spec.devices != 1:
            raise ServeError(
                f"{where}: bands[{i}].plan: its shares need {spec.devices} devices, but a schedule is served on one "
                "device (plans switch by moving shares within it): plan the schedule with a budget of at most 1"
            )
        bands.append(spec)
    start = len(bands) - 1
    return ServedSchedule(schedule, tuple(bands), start, _deployed(bands, start))


def _deployed(bands: list[ServeSpec], start: int) -> ServeSpec:
    """The starting band's spec, with every other band's models added at share 0 (routed nothing)."""
    models: dict[str, ServedModel] = {m.name: m for m in bands[start].models}
    for spec in bands:
        for model in spec.models:
            models.setdefault(model.name, dataclasses.replace(model, share=0.0))
    first = bands[start]
    routing = np.zeros((len(first.categories), len(models)))
    routing[:, : len(first.models)] = first.routing
    return dataclasses.replace(first, models=tuple(models.values()), routing=routing)
