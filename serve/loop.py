"""The ingress's plans and what it learns from serving them: routing by the active plan, switching, recalibrating.

:class:`ServedPlans` holds the plan an ingress routes by: one plan, or each band of a plan schedule with a
:class:`~genedge.serve.controller.PlanController` that switches between them as the arrival rate moves
(:meth:`ServedPlans.run`, one tick every ``tick_s``). A switch reconfigures every device first
(:meth:`~genedge.serve.worker.DeviceWorker.reconfigure`: steps, batch sizes, queue bounds and shares) and then
routes new requests by the new plan; requests routed before it finish as they were accepted.

:class:`ServedTimes` recalibrates: each served image's call time beside the plan's time of that call on the
model's share gives a ratio per (model, steps), kept as a running mean with its standard error; the ratio of
the latest :data:`LOAD_FACTOR_CALLS` images is the controller's load factor (a device running at twice the
table's times serves rate λ as the table's device would serve 2λ).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from genedge.serve.controller import CategoryMix, ControllerSettings, MixEstimate, PlanController, Switch
from genedge.serve.protocol import ImageTiming
from genedge.serve.schedule_spec import ServedSchedule
from genedge.serve.spec import ServedModel, ServeSpec

if TYPE_CHECKING:
    from genedge.optimizer.plan_file import PlanDocument

__all__ = ["LOAD_FACTOR_CALLS", "ServedPlans", "ServedTimes"]

logger = logging.getLogger(__name__)

#: The load factor is the mean served-to-planned ratio of this many latest images.
LOAD_FACTOR_CALLS = 100
# Below this many images the load factor is 1 (the table's times).
_MIN_LOAD_FACTOR_CALLS = 5


@dataclass
class _RunningRatio:
    """Welford's running mean and variance of served / planned call time, and the mean served time."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    served_s: float = 0.0
    planned_s: float = 0.0

    def add(self, served_s: float, planned_s: float) -> None:
        ratio = served_s / planned_s
        self.count += 1
        delta = ratio - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (ratio - self.mean)
        self.served_s += (served_s - self.served_s) / self.count
        self.planned_s = planned_s

    @property
    def stderr(self) -> float | None:
        return math.sqrt(self.m2 / (self.count - 1) / self.count) if self.count > 1 else None


class ServedTimes:
    """Served call times against the plan's, per (model key, steps) (module notes)."""

    def __init__(self) -> None:
        self._cells: dict[tuple[str, int], _RunningRatio] = {}
        self._recent: collections.deque[float] = collections.deque(maxlen=LOAD_FACTOR_CALLS)

    def add(self, model: str, steps: int, served_s: float, planned_s: float) -> None:
        """One image served by a call of ``served_s`` seconds where the plan expected ``planned_s``."""
        if not (planned_s > 0 and math.isfinite(served_s)):
            return
        self._cells.setdefault((model, steps), _RunningRatio()).add(served_s, planned_s)
        self._recent.append(served_s / planned_s)

    def load_factor(self) -> float:
        """Mean served / planned ratio of the latest :data:`LOAD_FACTOR_CALLS` images (1 before a few)."""
        if len(self._recent) < _MIN_LOAD_FACTOR_CALLS:
            return 1.0
        return sum(self._recent) / len(self._recent)

    def rows(self) -> list[dict[str, Any]]:
        """Per (model, steps): images, the plan's call time on the share it last ran at, the mean served call
        time, their mean ratio and its standard error (None from fewer than two images)."""
        return [
            {
                "model": model,
                "steps": steps,
                "images": cell.count,
                "planned_s": cell.planned_s,
                "served_mean_s": cell.served_s,
                "ratio": cell.mean,
                "ratio_stderr": cell.stderr,
            }
            for (model, steps), cell in sorted(self._cells.items())
        ]


@dataclass(frozen=True)
class _Band:
    spec: ServeSpec
    plan: PlanDocument
    router: Any
    handles: tuple[Any, ...]


class ServedPlans:
    """The plans an ingress routes by (module notes).

    Args:
        spec: a single plan's spec, or the deployed spec of ``schedule``.
        handles: model name → the device deployment's handle that serves it.
        units: every device deployment's handle (each is reconfigured on a switch).
        schedule: the schedule served, if any.
        settings: the controller's settings (with a schedule).
    """

    def __init__(
        self,
        spec: ServeSpec,
        handles: Mapping[str, Any],
        units: Sequence[Any],
        schedule: ServedSchedule | None = None,
        settings: ControllerSettings | None = None,
    ) -> None:
        from genedge.optimizer.model import Router
        from genedge.optimizer.plan_file import plan_from_dict

        specs = (spec,) if schedule is None else schedule.bands
        self.bands = [
            _Band(
                s,
                plan_from_dict(s.plan, "the served plan"),
                Router(s.routing),
                tuple(handles[m.name] for m in s.models),
            )
            for s in specs
        ]
        self.active = 0 if schedule is None else schedule.start
        self.units = list(units)
        self.times = ServedTimes()
        self.started = time.monotonic()
        self.settings = settings or ControllerSettings()
        self.controller = (
            None
            if schedule is None
            else PlanController(schedule.schedule, self.settings, self.started, band=schedule.start)
        )
        self.mix = CategoryMix(self.plan.inputs.workload, self.settings)
        self._mix_moved = False
        self._lock = asyncio.Lock()

    @property
    def spec(self) -> ServeSpec:
        """The active plan's spec."""
        return self.bands[self.active].spec

    def models(self) -> list[ServedModel]:
        """Every model any plan serves, each as the first plan that serves it configures it."""
        first: dict[str, ServedModel] = {}
        for band in self.bands:
            for model in band.spec.models:
                if model.share > 0:
                    first.setdefault(model.name, model)
        return list(first.values())

    def route(self, category: int) -> tuple[ServedModel, Any]:
        """The replica (and its device's handle) of the active plan for the next image of ``category``."""
        band = self.bands[self.active]
        replica = band.router.route(category)
        return band.spec.models[replica], band.handles[replica]

    def arrived(self, images: int) -> None:
        """A request for ``images`` images arrived (counted by the controller, if any)."""
        if self.controller is not None:
            self.controller.arrived(time.monotonic(), images)

    def arrived_image(self, category: str, images: int) -> None:
        """One image of a request for ``images`` images of ``category`` arrived (its part of the category mix)."""
        self.mix.arrived(time.monotonic(), category, 1 / images)

    def mix_estimate(self) -> MixEstimate:
        """The observed category mix against the plan's; logged where it moves away from it or back."""
        estimate = self.mix.update(time.monotonic())
        if estimate.moved != self._mix_moved:
            self._mix_moved = estimate.moved
            shares = ", ".join(f"{c} {v:.3f}" for c, v in estimate.observed.items())
            planned = ", ".join(f"{c} {v:.3f}" for c, v in estimate.planned.items())
            if estimate.moved:
                logger.warning(
                    "the category mix moved from the plan's: %s over the last %.0f requests, planned %s "
                    "(G-test P = %.2g); the plans were made for the planned mix: re-plan for the observed one",
                    shares,
                    estimate.requests,
                    planned,
                    estimate.p_value,
                )
            else:
                logger.warning("the category mix is back within the plan's (%s)", shares)
        return estimate

    @property
    def plan(self) -> PlanDocument:
        """The active plan, typed."""
        return self.bands[self.active].plan

    def predict(self, rates: Mapping[tuple[str, str], float]) -> dict[str, float] | None:
        """The active plan's mean and p95 response at the observed rate of each category (summed over the replicas
        ``rates`` names per (category, replica name)), routed by the active plan, each model's call the plan's time
        times its served-to-planned ratio at its steps (the recalibrated line): the plan's own delay model on what
        the server sees. Routed by the active plan, not as the window's images were: after a switch the window
        still holds images the previous plan routed, to models the active plan may give no share. None where no
        observed rate falls on the plan's categories."""
        from genedge.optimizer.model import delay_model

        spec = self.spec
        categories = {c: i for i, c in enumerate(spec.categories)}
        observed = np.zeros(len(categories))
        for (category, _), rate in rates.items():
            if category in categories:
                observed[categories[category]] += rate
        if observed.sum() <= 0:
            return None
        requests = observed[:, None] * spec.routing
        ratio = {(row["model"], row["steps"]): row["ratio"] for row in self.times.rows()}
        call = np.array([m.service_s * ratio.get((m.key, m.steps), 1.0) for m in spec.models])
        batch = np.array([m.max_batch for m in spec.models])
        inputs = self.plan.inputs
        delays = delay_model("open", inputs.routing_realization, requests.sum(axis=1), inputs.images)
        figures = delays.figures(requests, call, batch)
        return {"mean": figures.mean_s, "p95": figures.p95_s}

    def served(self, timing: ImageTiming, planned_s: float) -> None:
        """An image served (its record's times), by a call the plan expected to take ``planned_s``."""
        self.times.add(timing.model, timing.steps, timing.service_s, planned_s)

    async def tick(self) -> Switch | None:
        """One decision of the controller; a switch it decides is carried out before this returns."""
        if self.controller is None:
            return None
        async with self._lock:
            self.mix_estimate()
            switch = self.controller.tick(time.monotonic(), self.times.load_factor())
            if switch is not None:
                await self._switch_to(switch)
            return switch

    async def run(self, on_switch: Any = None) -> None:
        """Tick every ``tick_s`` for ever (the ingress's background task); ``on_switch(switch)`` after each switch."""
        while True:
            await asyncio.sleep(self.settings.tick_s)
            try:
                switch = await self.tick()
            except Exception:  # a failed tick must not stop the loop: the plan in force keeps serving
                logger.exception("the plan controller's tick failed; the plan in force keeps serving")
                continue
            if switch is not None and on_switch is not None:
                on_switch(switch)

    async def _switch_to(self, switch: Switch) -> None:
        band = self.bands[switch.to_band]
        # Devices first: from here on they run the new plan's steps and shares; requests still routed by the
        # old plan until the routing below changes are served as accepted (at the old plan's share).
        await asyncio.gather(*(unit.reconfigure.remote(band.spec.models) for unit in self.units))
        self.active = switch.to_band
        logger.warning(
            "plan switch %d -> %d at %.1f s: %s; before %s; after %s",
            switch.from_band,
            switch.to_band,
            switch.at_s,
            switch.reason,
            dict(switch.before),
            dict(switch.after),
        )

    def state(self) -> dict[str, Any] | None:
        """The controller's state for ``GET /v1/plan`` (None for a single plan)."""
        if self.controller is None:
            return None
        return {
            "band": self.active,
            "bands": len(self.bands),
            "rate": self.controller.rate,
            "load_factor": self.times.load_factor(),
            "settings": dataclasses.asdict(self.settings),
            "switches": [s.to_dict() for s in self.controller.switches],
        }
