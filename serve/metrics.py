"""What a served plan exports on ``GET /metrics``: Prometheus' text format, read by any Prometheus server.

Names follow Prometheus' conventions as Ray Serve's and vLLM's exporters do: one ``genedge_`` prefix, base
units in the name (``_seconds``), ``_total`` for counters, histograms for times, labels for the category
a request was routed as and the model (replica) that served it. Three kinds of figure:

* **Counted as requests pass** the ingress (:meth:`ServeMetrics.arrived` and friends): HTTP requests by
  route and outcome, images per request, images arrived at, completed by and refused by each model per
  category, and histograms of response time, queue wait and call time.
* **Read from the devices at scrape** (:meth:`ServeMetrics.collect`, from ``GET /v1/stats``' accounts):
  each model's queue length, calls, device seconds (so device time per call is
  ``rate(genedge_model_device_seconds_total) / rate(genedge_model_calls_total)``), planned and realized
  share, and the refusals the device counted.
* **The plan against what happened**, over sliding windows of :data:`WINDOWS_S` seconds: the arrival rate
  beside the planned one, the mean and p95 response time beside the plan's predicted ones, and, where the
  plan has an SLO, the share of images answered within it; ``genedge_plan_info`` names the active plan by
  the SHA-256 of its document (the hash a load test records).
* **The closed loop** (:mod:`genedge.serve.loop`): served-to-planned call time per model and steps, and for a
  plan schedule the band served, the estimated arrival rate, the load factor and the switches made.

Every counter starts at 0 for every (category, model) the plan routes, so a rate over it exists from the
first scrape. Counters restart at 0 with the ingress, as Prometheus' counters may.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from genedge.profiler._imports import require

if TYPE_CHECKING:
    from genedge.optimizer.plan_file import PlanDocument
    from genedge.serve.controller import MixEstimate
    from genedge.serve.protocol import ImageTiming

__all__ = ["LATENCY_BUCKETS_S", "METRICS_CONTENT_TYPE", "WINDOWS_S", "ServeMetrics"]

prometheus = require("prometheus_client", extra="serve")
core = require("prometheus_client.core", extra="serve")

#: Content type of the text exposition format.
METRICS_CONTENT_TYPE = prometheus.CONTENT_TYPE_LATEST
#: Sliding windows (s) of the observed-vs-predicted figures: a minute and five.
WINDOWS_S = (60.0, 300.0)
#: Histogram buckets of response, wait and call times (s): from 10 ms (a tiny replica's step) to 20 minutes.
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 1200.0)
# Completions kept for the windows: enough for the longest window at 300 images/s; beyond, the oldest go.
_WINDOW_EVENTS = 100_000
# Outcomes of an HTTP request, by the status it got.
_OUTCOMES = {200: "ok", 400: "bad_request", 401: "unauthorized", 503: "overloaded"}


class ServeMetrics:
    """The served plan's metrics in a registry of their own (not the process-global one Ray Serve uses).

    Args:
        plan: the served plan (its document hashed into ``genedge_plan_info``; its predicted figures, planned
            rate under open arrivals and SLO beside the observed ones).
        categories: the plan's categories.
        routes: category → the names of the models (replicas) the plan routes it to.
        models: model name → its device.
        clock: seconds on a monotonic clock (a test's clock where given).
    """

    def __init__(
        self,
        plan: PlanDocument,
        *,
        categories: Sequence[str],
        routes: Mapping[str, Sequence[str]],
        models: Mapping[str, int],
        clock: Any = time.monotonic,
    ) -> None:
        self.registry = prometheus.CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._models = dict(models)
        self._arrivals: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=_WINDOW_EVENTS)
        self._predict: Callable[[Mapping[tuple[str, str], float]], Mapping[str, float] | None] | None = None
        self._completions: collections.deque[tuple[float, float]] = collections.deque(maxlen=_WINDOW_EVENTS)
        self._stats: Mapping[str, Mapping[str, Any]] = {}
        self._loop: Mapping[str, Any] | None = None
        self._times: Sequence[Mapping[str, Any]] = ()
        self._define(categories, routes)
        self._info = prometheus.Info("genedge_plan", "The plan being served.", registry=self.registry)
        self.plan_changed(plan)
        self.registry.register(self)

    def plan_changed(self, plan: PlanDocument) -> None:
        """``plan`` is served from now on (a schedule's switch): its name and predicted figures."""
        from genedge.optimizer.model import arrival_model
        from genedge.serve.loadtest_document import document_sha256
        from genedge.serve.protocol import public_document

        predicted = plan.predicted
        figures = {"mean_delay_s": predicted.mean_delay_s, "p95_delay_s": predicted.p95_delay_s}
        figures["p99_delay_s"] = predicted.p99_delay_s
        self._predicted = {k: v for k, v in figures.items() if v is not None and math.isfinite(v)}
        per_second = arrival_model(plan.inputs.arrivals).per_second
        self._planned_rate = sum(plan.inputs.workload.values()) if per_second else None
        self._slo_s = None if plan.inputs.slo is None else plan.inputs.slo.seconds
        self._info.info(
            {
                "plan_sha256": document_sha256(public_document(plan.raw)),  # of the plan GET /v1/plan answers
                "method": plan.method,
                "slo_s": "" if self._slo_s is None else f"{self._slo_s:g}",
            }
        )

    def _define(self, categories: Sequence[str], routes: Mapping[str, Sequence[str]]) -> None:
        """The counted metrics, each (category, model) pair the plan routes started at 0."""
        r = self.registry
        self.requests = prometheus.Counter(
            "genedge_http_requests",
            "HTTP requests to the generation routes, by outcome.",
            ["route", "outcome"],
            registry=r,
        )
        self.images_per_request = prometheus.Histogram(
            "genedge_request_images", "Images asked for per request.", buckets=(1, 2, 4, 8), registry=r
        )
        pair = ["category", "model"]
        self.arrivals = prometheus.Counter("genedge_image_arrivals", "Images routed to a model.", pair, registry=r)
        self.completions = prometheus.Counter("genedge_image_completions", "Images a model served.", pair, registry=r)
        self.rejections = prometheus.Counter(
            "genedge_image_rejections",
            "Images a model refused (its queue at its bound, or draining).",
            pair,
            registry=r,
        )
        buckets = LATENCY_BUCKETS_S
        self.response = prometheus.Histogram(
            "genedge_image_response_seconds",
            "Response time of an image, arrival at the ingress to its answer.",
            pair,
            buckets=buckets,
            registry=r,
        )
        self.wait = prometheus.Histogram(
            "genedge_image_queue_wait_seconds",
            "Time an image waited for its model's call.",
            ["model"],
            buckets=buckets,
            registry=r,
        )
        self.call = prometheus.Histogram(
            "genedge_image_call_seconds",
            "Wall time of the call that made an image (on the model's share).",
            ["model"],
            buckets=buckets,
            registry=r,
        )
        self.in_flight = prometheus.Gauge("genedge_requests_in_flight", "HTTP requests being answered.", registry=r)
        self.device_restarts = prometheus.Counter(
            "genedge_device_restarts",
            "Device replicas replaced since the ingress started (their counters carried over).",
            ["deployment"],
            registry=r,
        )
        self.replica_losses = prometheus.Counter(
            "genedge_replica_losses",
            "Calls whose device replica died under them (retried once on the restarted replica, then refused).",
            ["model", "action"],
            registry=r,
        )
        self.switches = prometheus.Counter(
            "genedge_plan_switches", "Plan switches by a schedule's controller, up or down.", ["direction"], registry=r
        )
        for category in categories:
            for model in routes.get(category, ()):
                for counter in (self.arrivals, self.completions, self.rejections):
                    counter.labels(category, model)

    # --- counted as requests pass -----------------------------------------------------------------

    def request(self, route: str, status: int, images: int | None) -> None:
        """One HTTP request answered with ``status``; ``images`` it asked for, where it was parsed."""
        self.requests.labels(route, _OUTCOMES.get(status, "error")).inc()
        if images is not None:
            self.images_per_request.observe(images)

    def arrived(self, category: str, model: str) -> None:
        """One image routed to ``model``."""
        self.arrivals.labels(category, model).inc()
        self._arrivals.append((self._clock(), category, model))

    def device_restarted(self, deployment: str) -> None:
        """A device deployment's replica was replaced (its counters carried over)."""
        self.device_restarts.labels(deployment).inc()

    def replica_lost(self, model: str, *, retried: bool) -> None:
        """A call to ``model`` lost with its replica; ``retried`` on a restarted one, or refused."""
        self.replica_losses.labels(model, "retried" if retried else "refused").inc()

    def refused(self, category: str, model: str) -> None:
        """One image ``model`` refused."""
        self.rejections.labels(category, model).inc()

    def completed(self, category: str, model: str, timing: ImageTiming) -> None:
        """One image served by ``model`` (a replica's name), with its times."""
        self.completions.labels(category, model).inc()
        self.response.labels(category, model).observe(timing.response_s)
        self.wait.labels(model).observe(timing.queue_wait_s)
        self.call.labels(model).observe(timing.service_s)
        self._completions.append((self._clock(), timing.response_s))

    # --- read at scrape -----------------------------------------------------------------------------

    def switched(self, to_band: int, from_band: int) -> None:
        """The controller switched bands."""
        self.switches.labels("up" if to_band > from_band else "down").inc()

    def exposition(
        self,
        stats: Mapping[str, Mapping[str, Any]],
        loop: Mapping[str, Any] | None = None,
        times: Sequence[Mapping[str, Any]] = (),
        predict: Callable[[Mapping[tuple[str, str], float]], Mapping[str, float] | None] | None = None,
        mix: MixEstimate | None = None,
    ) -> bytes:
        """The text exposition, with each model's device account ``stats`` (``GET /v1/stats``' fields), the
        controller's state ``loop`` (:meth:`~genedge.serve.loop.ServedPlans.state`) and the served times' rows
        (:meth:`~genedge.serve.loop.ServedTimes.rows`); ``predict`` maps observed rates per (category, model)
        to the active plan's predicted ``mean`` and ``p95`` response (:meth:`~genedge.serve.loop.ServedPlans.predict`);
        ``mix`` is the observed category mix against the plan's.
        """
        self._stats, self._loop, self._times, self._predict, self._mix = stats, loop, times, predict, mix
        return prometheus.generate_latest(self.registry)

    def describe(self) -> list:
        # Families known only at scrape: nothing to check against the registry's names in advance.
        return []

    def collect(self) -> Iterator[Any]:
        """The device accounts and the windows, as of now (prometheus_client's custom-collector protocol)."""
        yield from self._device_families()
        yield from self._window_families()
        yield from self._loop_families()
        yield from self._mix_families()

    def _mix_families(self) -> Iterator[Any]:
        if self._mix is None:
            return
        share = core.GaugeMetricFamily(
            "genedge_category_share",
            "Share of the requests per category: observed over the controller's horizon, and planned.",
            labels=["category", "source"],
        )
        for source, mix in (("observed", self._mix.observed), ("planned", self._mix.planned)):
            for category, value in mix.items():
                share.add_metric([category, source], value)
        yield share
        if self._mix.p_value is not None:
            yield core.GaugeMetricFamily(
                "genedge_category_mix_p_value",
                "The G-test's P of the observed category mix under the planned one (small: the mix moved).",
                value=self._mix.p_value,
            )

    def _device_families(self) -> Iterator[Any]:
        labels = ["model", "device"]
        families = {
            "queued": core.GaugeMetricFamily(
                "genedge_model_queue_length", "Images queued or in service on a model.", labels=labels
            ),
            "calls": core.CounterMetricFamily("genedge_model_calls", "Calls (batches) a model ran.", labels=labels),
            "device_s": core.CounterMetricFamily(
                "genedge_model_device_seconds",
                "Device time a model's calls took, in whole-device seconds.",
                labels=labels,
            ),
            "rejected": core.CounterMetricFamily(
                "genedge_model_rejections",
                "Images refused for a model (past its queue bound, by the ingress or its device).",
                labels=labels,
            ),
            "planned_share": core.GaugeMetricFamily(
                "genedge_model_planned_share", "The plan's share of its device.", labels=labels
            ),
            "realized_share": core.GaugeMetricFamily(
                "genedge_model_realized_share",
                "Device time over backlogged time: the share a model got.",
                labels=labels,
            ),
        }
        for model, account in self._stats.items():
            key = [model, str(self._models.get(model, ""))]
            for field, family in families.items():
                value = account.get(field)
                if value is not None:
                    family.add_metric(key, float(value))
        yield from families.values()

    def _window_families(self) -> Iterator[Any]:
        now = self._clock()
        rate = core.GaugeMetricFamily(
            "genedge_arrival_rate", "Images per second arrived over the window.", labels=["window"]
        )
        observed = core.GaugeMetricFamily(
            "genedge_observed_response_seconds",
            "Response time of the images completed over the window (NaN where none).",
            labels=["window", "statistic"],
        )
        attained = core.GaugeMetricFamily(
            "genedge_slo_attainment",
            "Share of the window's completed images answered within the SLO.",
            labels=["window"],
        )
        times = np.fromiter((t for t, _ in self._completions), float, len(self._completions))
        responses = np.fromiter((r for _, r in self._completions), float, len(self._completions))
        arrivals = np.fromiter((t for t, _, _ in self._arrivals), float, len(self._arrivals))
        for window in WINDOWS_S:
            name = f"{window:g}s"
            rate.add_metric([name], float((arrivals > now - window).sum()) / window)
            recent = responses[times > now - window]
            mean = float(recent.mean()) if recent.size else math.nan
            p95 = float(np.quantile(recent, 0.95)) if recent.size else math.nan
            observed.add_metric([name, "mean"], mean)
            observed.add_metric([name, "p95"], p95)
            if self._slo_s is not None:
                attained.add_metric([name], float((recent <= self._slo_s).mean()) if recent.size else math.nan)
        yield rate
        yield observed
        if self._slo_s is not None:
            yield attained
        yield from self._planned_families()
        yield from self._recalibrated_families(now)

    def _recalibrated_families(self, now: float) -> Iterator[Any]:
        """The active plan's response predicted at each window's observed rates with the served call times."""
        family = core.GaugeMetricFamily(
            "genedge_recalibrated_response_seconds",
            "The active plan's response time predicted at the window's observed rates with the served call times.",
            labels=["window", "statistic"],
        )
        if self._predict is not None:
            for window in WINDOWS_S:
                rates: dict[tuple[str, str], float] = collections.Counter()
                for t, category, model in self._arrivals:
                    if t > now - window:
                        rates[(category, model)] += 1 / window
                predicted = self._predict(rates) if rates else None
                for statistic, value in (predicted or {}).items():
                    family.add_metric([f"{window:g}s", statistic], value)
        yield family

    def _planned_families(self) -> Iterator[Any]:
        predicted = core.GaugeMetricFamily(
            "genedge_predicted_response_seconds",
            "The plan's predicted response time at its planned workload.",
            labels=["statistic"],
        )
        for key, statistic in (("mean_delay_s", "mean"), ("p95_delay_s", "p95"), ("p99_delay_s", "p99")):
            if key in self._predicted:
                predicted.add_metric([statistic], self._predicted[key])
        yield predicted
        if self._planned_rate is not None:
            yield core.GaugeMetricFamily(
                "genedge_planned_arrival_rate", "Requests per second the plan was made for.", value=self._planned_rate
            )

    def _loop_families(self) -> Iterator[Any]:
        ratio = core.GaugeMetricFamily(
            "genedge_served_time_ratio",
            "Mean served call time over the plan's, per model and steps (the recalibration).",
            labels=["model", "steps"],
        )
        for row in self._times:
            ratio.add_metric([row["model"], str(row["steps"])], row["ratio"])
        yield ratio
        if self._loop is None:
            return
        yield core.GaugeMetricFamily(
            "genedge_schedule_band", "The schedule's band being served.", value=self._loop["band"]
        )
        yield core.GaugeMetricFamily(
            "genedge_estimated_arrival_rate",
            "The controller's estimate of requests per second.",
            value=self._loop["rate"],
        )
        yield core.GaugeMetricFamily(
            "genedge_load_factor",
            "Served over planned call time, the controller's load factor.",
            value=self._loop["load_factor"],
        )
