"""The Ray Serve application of a plan: an HTTP ingress and one deployment per device.

The ingress (:class:`Ingress`) checks each request (:mod:`.protocol`), takes its category from the
request or from the prompt router, picks the model with the plan's routing (one smooth weighted
round robin per category, so the planned fractions hold in every prefix of the requests) and
calls the deployment that owns the model. A :class:`Device` deployment owns one device and the
models placed on it (:class:`~genedge.serve.worker.DeviceWorker`, shares by the step-level
scheduler). With ``realization="mps"`` each model replica is instead its own deployment, a process
holding ``num_gpus = share`` of a GPU with ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` from the plan, and
the MPS daemon enforces the shares.

With an API key (:mod:`genedge.serve.access`) every route but ``GET /v1/health`` and the image URLs
answers 401 without ``Authorization: Bearer KEY``. ``response_format: "url"`` images are kept in the
ingress's memory (:mod:`genedge.serve.images`). FastAPI's ``/docs``, ``/redoc`` and ``/openapi.json``
are served only when asked for (``openapi_docs``).
"""

import asyncio
import collections
import dataclasses
import logging
import math
import time
import uuid
from collections.abc import Sequence
from typing import Any

from genedge.contract.table_file import public_table_document
from genedge.profiler._imports import require
from genedge.serve.access import bearer_matches
from genedge.serve.accounts import READ_EVERY_S, CarriedAccounts
from genedge.serve.controller import ControllerSettings
from genedge.serve.images import ImageStore, ImageStoreSettings
from genedge.serve.loop import ServedPlans
from genedge.serve.metrics import METRICS_CONTENT_TYPE, ServeMetrics
from genedge.serve.protocol import (
    GENERATE_ROUTE,
    HEALTH_ROUTE,
    IMAGE_ROUTE,
    METRICS_ROUTE,
    OPENAI_ROUTE,
    PLAN_ROUTE,
    STATS_ROUTE,
    DeviceStats,
    GeneratedImage,
    GenerateResponse,
    GenerationRequest,
    ImagesResponse,
    ImageTiming,
    ModelStats,
    Overloaded,
    PlanResponse,
    RequestError,
    StatsResponse,
    Unauthorized,
    error_body,
    image_url,
    json_body,
    parse_generate,
    parse_openai,
    public_document,
)
from genedge.serve.schedule_spec import ServedSchedule
from genedge.serve.shares import SHARE_REALIZATIONS, ShareRealization
from genedge.serve.spec import SERVED_MODEL_NAME, ServedModel, ServeSpec, refusal

__all__ = ["APP_NAME", "build_application", "deployment_units"]

APP_NAME = "genedge"
logger = logging.getLogger(__name__)
#: Seconds a client is told to wait after a device replica died under its request twice (Ray restarts a
#: replica in about this long).
REPLICA_RESTART_S = 5.0
#: The longest a call waits for a device whose replica was lost to have a new one (Ray restarted one in about
#: 20 s on a loaded 2-core machine); past it the image is refused with Retry-After.
REPLICA_WAIT_S = 60.0
#: Every Ray cluster's head node has one unit of this resource.
_HEAD_NODE_RESOURCE = "node:__internal_head__"
#: The longest one read of a device's accounts may take; a device without a replica is read at the next interval.
_READ_TIMEOUT_S = 5.0
#: Requests one replica of a deployment takes at once: queueing and refusal are the plan's job, not Ray's.
_MAX_ONGOING = 100_000

serve = require("ray.serve", extra="serve")
# A device replica that died (``kill -9``, out of memory) under a call, or cannot be reached while Ray restarts it.
_REPLICA_LOST = require("ray.exceptions", extra="serve").RayActorError
fastapi = require("fastapi", extra="serve")
responses = require("fastapi.responses", extra="serve")
# This module has no `from __future__ import annotations`: FastAPI reads the handlers' annotations as objects.
Request = fastapi.Request

#: FastAPI's own documentation routes, served only with ``openapi_docs`` (and then, with a key, only with it).
_OPENAPI_ROUTE, _DOCS_ROUTE, _REDOC_ROUTE = "/openapi.json", "/docs", "/redoc"

http = fastapi.FastAPI(
    title="genedge",
    description="A genedge plan served: text-to-image requests routed to models, steps and GPU shares as planned.",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


def _error_response(error: RequestError) -> Any:
    headers = None
    if isinstance(error, Overloaded):
        headers = {"Retry-After": error.retry_after_header}
    elif isinstance(error, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    return responses.JSONResponse(error_body(error), status_code=error.status, headers=headers)


def _not_found(path: str) -> Any:
    return _error_response(RequestError(f"no route {path}", status=404, error_type="not_found_error"))


@http.exception_handler(require("starlette.exceptions", extra="serve").HTTPException)
async def _http_error(request: Any, error: Any) -> Any:
    """FastAPI's own refusals (an unknown route, a method a route does not take) in OpenAI's error shape."""
    if error.status_code == 404:
        return _not_found(request.url.path)
    return _error_response(RequestError(str(error.detail), status=error.status_code))


@serve.deployment(max_ongoing_requests=_MAX_ONGOING, ray_actor_options={"num_cpus": 0})
class Device:
    """One device's models (or, under MPS, one model's process), as a Ray Serve deployment."""

    def __init__(self, models: Sequence[ServedModel], options: dict[str, Any]) -> None:
        from genedge.serve.worker import DeviceWorker

        self.worker = DeviceWorker(models, **options)
        # Drawn anew by each replica Ray starts: the ingress tells a restarted replica's counters by it.
        self.incarnation = uuid.uuid4().hex[:12]

    async def generate(self, name: str, prompt: str, seed: int | None, request_id: str) -> dict[str, Any]:
        """One image: ``{"png", "record"}``, or ``{"overloaded", "retry_after_s"}`` when refused."""
        try:
            future = self.worker.submit(name, prompt, seed=seed, request_id=request_id)
        except Overloaded as err:
            return {"overloaded": err.message, "retry_after_s": err.retry_after_s}
        result = await asyncio.wrap_future(future)
        return {"png": result.png, "record": result.record, "planned_s": result.planned_s}

    def stats(self) -> tuple[str, dict[str, dict[str, Any]]]:
        """This replica's incarnation and the worker's per-model accounts."""
        return self.incarnation, self.worker.stats()

    def warmup_s(self) -> dict[str, float]:
        """Device seconds of one call per model on the whole device, timed at start."""
        return self.worker.warmup_s

    def drain(self, timeout_s: float) -> bool:
        """Stop taking requests; wait for those in flight."""
        return self.worker.drain(timeout_s)

    def reconfigure(self, models: Sequence[ServedModel]) -> None:
        """Serve another plan's models on this device (a plan schedule's switch)."""
        mine = {m.name for m in self.worker.models}
        self.worker.reconfigure([m for m in models if m.name in mine])


def _metrics(plans: ServedPlans) -> ServeMetrics:
    """The served plans' metrics, each category's counters started for the replicas any plan routes it to."""
    spec = plans.spec
    routes: dict[str, list[str]] = {c: [] for c in spec.categories}
    models: dict[str, int] = {}
    for band in plans.bands:
        for i, category in enumerate(band.spec.categories):
            for model, p in zip(band.spec.models, band.spec.routing[i]):
                models[model.name] = model.device
                if p > 0 and model.name not in routes[category]:
                    routes[category].append(model.name)
    return ServeMetrics(plans.plan, categories=spec.categories, routes=routes, models=models)


def deployment_units(spec: ServeSpec, realization: ShareRealization) -> list[tuple[str, tuple[ServedModel, ...], dict]]:
    """The deployments a plan becomes: ``(name, models, ray_actor_options)`` each.

    ``scheduler``: one per device, owning the device's models (a whole GPU each where GPUs are used;
    ``num_gpus`` is set by :func:`build_application`). ``mps``: one per model replica, asking Ray for
    ``share`` of a GPU, with the plan's ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``; inside its process the
    model has the whole (MPS-limited) device.
    """
    if realization == "scheduler":
        return [(f"device-{d}", spec.on_device(d), {}) for d in range(spec.devices)]
    units = []
    for model in spec.models:
        percentage = max(1, min(100, math.ceil(100 * model.share)))
        options = {
            "num_gpus": model.share,
            "runtime_env": {"env_vars": {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(percentage)}},
        }
        alone = dataclasses.replace(model, share=1.0)
        units.append((f"model-{model.name}".replace("/", "_").replace(":", "_"), (alone,), options))
    return units


@serve.deployment(max_ongoing_requests=_MAX_ONGOING, ray_actor_options={"num_cpus": 0})
@serve.ingress(http)
class Ingress:
    """The HTTP front of a served plan (routes in :mod:`genedge.serve.protocol`)."""

    def __init__(
        self,
        spec: ServeSpec,
        router: str | None,
        units: list[tuple[str, tuple[str, ...]]],
        *handles: Any,
        schedule: ServedSchedule | None = None,
        controller: ControllerSettings | None = None,
        api_key_sha256: str | None = None,
        openapi_docs: bool = False,
        image_store: ImageStoreSettings | None = None,
    ):
        self.api_key_sha256 = api_key_sha256
        self.openapi_docs = openapi_docs
        self.images = ImageStore(image_store)
        self.router_name = router
        self.prompt_router = None
        if router is not None:
            from genedge.router.model import load_router

            self.prompt_router = load_router(router)
        by_name = {}
        for (_, names), handle in zip(units, handles):
            for name in names:
                by_name[name] = handle
        self.plans = ServedPlans(spec, by_name, handles, schedule, controller)
        self.deployed = spec  # every model loaded (a schedule's models of all its plans)
        self.unit_handles = list(handles)
        self.unit_names = [name for name, _ in units]
        device_of = {model.name: model.device for model in spec.models}
        self.unit_devices = [{device_of[name] for name in names} for _, names in units]
        self.accounts = CarriedAccounts()
        self.down_since: dict[int, float] = {}  # devices whose last read of the accounts failed: since when
        self.category_index = {c: i for i, c in enumerate(spec.categories)}
        self.started = time.monotonic()
        self.in_flight = 0
        self.draining = False
        # Request ids are this ingress's start token and a count, so a restarted ingress does not reuse them.
        self.run_token = uuid.uuid4().hex[:8]
        self.counter = 0
        self.outstanding: collections.Counter[str] = collections.Counter()  # images sent to a model, unanswered
        self.refused_here: collections.Counter[str] = collections.Counter()  # images refused by the ingress
        self.served_calibration: list[dict[str, Any]] | None = None
        self.metrics = _metrics(self.plans)
        self._tasks: list[asyncio.Task] = []
        self._start_loop()

    @property
    def spec(self) -> ServeSpec:
        """The plan served now (a schedule's active band)."""
        return self.plans.spec

    def _start_loop(self) -> None:
        """Start the background work once, in this replica's event loop (from the constructor where Ray Serve
        runs it in that loop, else from the first request): the devices' accounts read every
        :data:`~genedge.serve.accounts.READ_EVERY_S`, and a schedule's controller ticks."""
        if self._tasks:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._tasks.append(loop.create_task(self._read_accounts()))
        if self.plans.controller is not None:
            self._tasks.append(loop.create_task(self.plans.run(self._switched)))

    async def _read_accounts(self) -> None:
        """Keep the carried accounts fresh, so a replica that dies loses at most one interval of its counters."""
        while True:
            try:
                await self._accounts()
            except Exception:  # the reader must outlive one bad read: the next interval tries again
                logger.exception("reading the devices' accounts failed")
            await asyncio.sleep(READ_EVERY_S)

    def _switched(self, switch: Any) -> None:
        self.metrics.switched(switch.to_band, switch.from_band)
        self.metrics.plan_changed(self.plans.plan)

    def _category(self, request: GenerationRequest) -> tuple[str, str, float | None]:
        if request.category is not None:
            return request.category, "given", None
        if self.prompt_router is None:
            raise RequestError(
                "no category given, and this server has no prompt router (started with --router none)",
                param="category",
            )
        categories, probabilities = self.prompt_router.route([request.prompt])
        return categories[0], "router", float(probabilities[0])

    async def _one(self, request: GenerationRequest, seed: int | None) -> GeneratedImage:
        """Route and generate one image; raises :class:`Overloaded` when its model refuses it."""
        arrived = time.perf_counter()
        category, source, probability = self._category(request)
        model, handle = self.plans.route(self.category_index[category])
        self.counter += 1
        request_id = f"{self.run_token}-{self.counter}"
        self.metrics.arrived(category, model.name)
        self.plans.arrived_image(category, request.n)
        # Every call to a device goes through this ingress, so what it has sent and not had answered is what the
        # model holds (and those on their way): past the bound, refused here, without a round trip to a device
        # that is busy generating.
        refused = refusal(model, self.outstanding[model.name])
        if refused is not None:
            self.refused_here[model.name] += 1
            self.metrics.refused(category, model.name)
            raise refused
        self.outstanding[model.name] += 1
        try:
            result = await self._generate(handle, model.name, request.prompt, seed, request_id)
        finally:
            self.outstanding[model.name] -= 1
        if "overloaded" in result:
            self.metrics.refused(category, model.name)
            raise Overloaded(result["overloaded"], retry_after_s=result["retry_after_s"])
        record = {
            **result["record"],
            "category": category,
            "category_source": source,
            "category_probability": probability,
            "response_s": time.perf_counter() - arrived,
        }
        timing = ImageTiming.of(record)
        self.metrics.completed(category, model.name, timing)
        self.plans.served(timing, result["planned_s"])
        return GeneratedImage(result["png"], record)

    async def _generate(
        self, handle: Any, model: str, prompt: str, seed: int | None, request_id: str, *, retry: bool = True
    ) -> dict:
        """The device's answer to one image. A replica that dies under the call (its process killed, say) is
        tried once more, on the replica Ray restarts: a generation changes nothing but the device's counters,
        so the retry is safe. A second loss is refused (503 with Retry-After), never a bare 500; so is a call to
        a device that has had no live replica for :data:`REPLICA_WAIT_S` (:meth:`_device_answer`)."""
        unit = self.unit_handles.index(handle)
        try:
            return await self._device_answer(unit, handle.generate.remote(model, prompt, seed, request_id))
        except _REPLICA_LOST as err:
            self.down_since.setdefault(unit, time.monotonic())
            self.metrics.replica_lost(model, retried=retry)
            # Ray's reason (killed, its node gone, its memory monitor past the threshold) is in the error's text.
            reason = " ".join(str(err).split())[:400]
            logger.warning(
                "%s: a call was lost with its replica (%s); %s", model, reason, "retried" if retry else "refused"
            )
            if retry:
                return await self._generate(handle, model, prompt, seed, request_id, retry=False)
            message = f"the replica serving {model} was lost twice under this image ({type(err).__name__})"
            raise Overloaded(message, retry_after_s=REPLICA_RESTART_S) from err
        except TimeoutError as err:
            self.metrics.replica_lost(model, retried=False)
            message = (
                f"the device serving {model} lost its replica and Ray Serve has not started another within "
                f"{REPLICA_WAIT_S:g} s (its node gone, or no node with the resources it asks for)"
            )
            raise Overloaded(message, retry_after_s=REPLICA_RESTART_S) from err

    async def _device_answer(self, unit: int, call: Any) -> Any:
        """``call``'s answer; TimeoutError once device ``unit`` has been without a live replica (its accounts
        unread, :meth:`_accounts`) for :data:`REPLICA_WAIT_S`. Ray Serve holds a call to a deployment without
        replicas until one starts, forever where none can be placed (its node gone)."""
        task = asyncio.ensure_future(call)
        while True:
            done, _ = await asyncio.wait({task}, timeout=READ_EVERY_S)
            if done:
                return task.result()
            down = self.down_since.get(unit)
            if down is not None and time.monotonic() - down > REPLICA_WAIT_S:
                task.cancel()
                raise TimeoutError

    def _denied(self, request: Any) -> Any | None:
        """The 401 answer to a request without this server's API key, or None where it may pass."""
        if self.api_key_sha256 is None:
            return None
        authorization = request.headers.get("authorization")
        if bearer_matches(authorization, self.api_key_sha256):
            return None
        message = (
            "this server needs an API key: send it as 'Authorization: Bearer KEY'"
            if authorization is None
            else "the API key sent is not this server's (expected 'Authorization: Bearer KEY')"
        )
        return _error_response(Unauthorized(message))

    async def _serve(self, request: Any, parse: Any, answer: Any) -> Any:
        self._start_loop()
        route = request.url.path
        denied = self._denied(request)
        if denied is not None:
            self.metrics.request(route, 401, None)
            return denied
        if self.draining:
            closing = Overloaded("the server is shutting down", retry_after_s=1.0)
            self.metrics.request(route, closing.status, None)
            return _error_response(closing)
        self.in_flight += 1
        self.metrics.in_flight.inc()
        images = None
        status = 500  # until an answer says otherwise: an exception escaping here is the server's error
        try:
            parsed = parse(json_body(await request.body()))
            images = parsed.n
            self.plans.arrived(images)
            seeds = (
                [parsed.seed]
                if parsed.n == 1
                else [None if parsed.seed is None else parsed.seed + i for i in range(parsed.n)]
            )
            results = await asyncio.gather(*(self._one(parsed, seed) for seed in seeds))
            answered = answer(parsed, results)
            status = 200
            return answered
        except RequestError as err:
            status = err.status
            return _error_response(err)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
            self.metrics.request(route, status, images)

    @http.post(GENERATE_ROUTE)
    async def generate(self, request: Request) -> Any:
        """genedge's route: one image and its record."""

        def answer(_: GenerationRequest, results: list[GeneratedImage]) -> dict[str, Any]:
            (result,) = results
            return GenerateResponse(result).to_dict()

        return await self._serve(request, lambda body: parse_generate(body, self.spec.categories), answer)

    @http.post(OPENAI_ROUTE)
    async def images_generations(self, request: Request) -> Any:
        """The OpenAI-compatible route: ``n`` images as ``b64_json`` or as URLs of this server, records under
        ``genedge``."""

        def parse(body: Any) -> GenerationRequest:
            return parse_openai(
                body, self.spec.categories, resolution=self.spec.resolution, served_model=SERVED_MODEL_NAME
            )

        def answer(parsed: GenerationRequest, results: list[GeneratedImage]) -> dict[str, Any]:
            urls = None
            if parsed.response_format == "url":  # the base URL the request reached, never a path it gave
                urls = tuple(image_url(str(request.base_url), self.images.put(r.png)) for r in results)
            return ImagesResponse(tuple(results), created=int(time.time()), urls=urls).to_dict()

        return await self._serve(request, parse, answer)

    @http.get(IMAGE_ROUTE)
    def image(self, image_id: str) -> Any:
        """A ``response_format: "url"`` image while it is kept: a capability URL, fetched without the API key."""
        png = self.images.get(image_id)
        if png is None:
            return _error_response(
                RequestError(
                    "no such image: it was never made here, or it expired or was dropped to make room",
                    param="image_id",
                    status=404,
                    error_type="not_found_error",
                )
            )
        return responses.Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})

    @http.get(PLAN_ROUTE)
    async def plan(self, request: Request) -> Any:
        """The plan, its table and what is served (with the start-up calibration check, however started);
        absolute paths cut to their last part and the table's profile hosts left out."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        calibration = self.served_calibration if self.served_calibration is not None else await self.calibration_check()
        served = {
            **self.spec.summary(),
            "router": self.router_name,
            "calibration_check": calibration,
            "served_times": self.plans.times.rows(),
            "schedule": self.plans.state(),
            "category_mix": self.plans.mix_estimate().to_dict(),
        }
        table = public_table_document(self.spec.table_document)
        answer = PlanResponse(public_document(self.spec.plan), public_document(table), public_document(served))
        return responses.JSONResponse(answer.to_dict())

    async def _accounts(self) -> dict[str, dict[str, Any]]:
        """Each model's account (:data:`~genedge.serve.protocol.STATS_FIELDS`), from every device, with the
        counters of replicas that were replaced carried over (:mod:`genedge.serve.accounts`). A device that does
        not answer within :data:`_READ_TIMEOUT_S` (no replica: restarting, or its node gone) is given by its
        last accounts."""

        async def read(handle: Any) -> Any:
            return await asyncio.wait_for(handle.stats.remote(), _READ_TIMEOUT_S)

        answers = await asyncio.gather(*(read(handle) for handle in self.unit_handles), return_exceptions=True)
        merged: dict[str, dict[str, Any]] = {}
        for unit, answer in enumerate(answers):
            if isinstance(answer, (TimeoutError, _REPLICA_LOST)):
                self.down_since.setdefault(unit, time.monotonic())
            elif isinstance(answer, BaseException):
                raise answer
            else:
                self.down_since.pop(unit, None)
                incarnation, models = answer
                if self.accounts.update(unit, incarnation, models):
                    self._restarted(unit)
            if self.accounts.known(unit):
                merged.update(self.accounts.merged(unit))
        for name, count in self.refused_here.items():  # a model's refusals, by its device or by this ingress
            if name in merged:
                merged[name]["rejected"] += count
        return merged

    def _restarted(self, unit: int) -> None:
        name = self.unit_names[unit]
        logger.warning(
            "%s: its replica was replaced (restart %d); its counters are carried over, and the start-up calibration "
            "check runs again for the new replica",
            name,
            self.accounts.restarts(unit),
        )
        self.metrics.device_restarted(name)
        self.served_calibration = None

    @http.get(STATS_ROUTE)
    async def stats(self, request: Request) -> Any:
        """Each model's share account and counters, by device."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        merged = await self._accounts()
        devices: dict[int, dict[str, ModelStats]] = {}
        for model in self.deployed.models:
            if model.name in merged:  # a device never read yet (no replica since start) has no account to give
                devices.setdefault(model.device, {})[model.name] = ModelStats(**merged[model.name])
        restarts = dict.fromkeys(devices, 0)
        for unit, on in enumerate(self.unit_devices):
            for device in on & restarts.keys():
                restarts[device] += self.accounts.restarts(unit)
        per_device = tuple(DeviceStats(d, models, restarts[d]) for d, models in sorted(devices.items()))
        return StatsResponse(time.monotonic() - self.started, per_device).to_dict()

    @http.get(METRICS_ROUTE)
    async def metrics_text(self, request: Request) -> Any:
        """Prometheus' text format (:mod:`genedge.serve.metrics`), the devices' accounts read now."""
        self._start_loop()
        denied = self._denied(request)
        if denied is not None:
            return denied
        accounts = await self._accounts()
        text = self.metrics.exposition(
            accounts, self.plans.state(), self.plans.times.rows(), self.plans.predict, self.plans.mix_estimate()
        )
        return responses.Response(text, media_type=METRICS_CONTENT_TYPE)

    @http.get(_OPENAPI_ROUTE, include_in_schema=False)
    def openapi(self, request: Request) -> Any:
        """FastAPI's OpenAPI schema of these routes, where the server was started with ``openapi_docs``."""
        if not self.openapi_docs:
            return _not_found(request.url.path)
        return self._denied(request) or responses.JSONResponse(http.openapi())

    @http.get(_DOCS_ROUTE, include_in_schema=False)
    def docs(self, request: Request) -> Any:
        """Swagger UI of the schema, where the server was started with ``openapi_docs``."""
        from fastapi.openapi.docs import get_swagger_ui_html

        if not self.openapi_docs:
            return _not_found(request.url.path)
        return self._denied(request) or get_swagger_ui_html(openapi_url=_OPENAPI_ROUTE, title="genedge")

    @http.get(_REDOC_ROUTE, include_in_schema=False)
    def redoc(self, request: Request) -> Any:
        """ReDoc of the schema, where the server was started with ``openapi_docs``."""
        from fastapi.openapi.docs import get_redoc_html

        if not self.openapi_docs:
            return _not_found(request.url.path)
        return self._denied(request) or get_redoc_html(openapi_url=_OPENAPI_ROUTE, title="genedge")

    @http.get(HEALTH_ROUTE)
    def health(self) -> dict[str, str]:
        """Liveness (open without the API key, for load balancers; it tells nothing but ``ok`` or ``draining``)."""
        self._start_loop()
        return {"status": "draining" if self.draining else "ok"}

    async def calibration_check(self) -> list[dict[str, Any]]:
        """Each model's call on the whole device as timed at start beside the table's (the plan's
        call time on its share, times the share): a ratio far from 1 means this device is not the one
        the plan was made for, and its delays will be off by about that factor."""
        timed: dict[str, float] = {}
        for per_unit in await asyncio.gather(*(handle.warmup_s.remote() for handle in self.unit_handles)):
            timed.update(per_unit)
        rows = []
        for model in self.plans.models():
            table_s = model.service_s * model.share
            rows.append({"model": model.name, "served_s": timed[model.name], "table_s": table_s})
        self.served_calibration = rows
        return rows

    async def drain(self, timeout_s: float) -> dict[str, Any]:
        """Refuse new requests (503), wait for those in flight, then drain the devices."""
        self.draining = True
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = self.in_flight
        drained = await asyncio.gather(
            *(handle.drain.remote(max(deadline - time.monotonic(), 0.0)) for handle in self.unit_handles)
        )
        return {"in_flight_left": left, "devices_drained": all(drained)}


def build_application(
    spec: ServeSpec,
    *,
    router: str | None,
    realization: ShareRealization = "scheduler",
    worker_options: dict[str, Any] | None = None,
    gpus: bool = False,
    drain_timeout_s: float | None = None,
    schedule: ServedSchedule | None = None,
    controller: ControllerSettings | None = None,
    api_key_sha256: str | None = None,
    openapi_docs: bool = False,
    image_store: ImageStoreSettings | None = None,
    device_resource: str | None = None,
) -> Any:
    """The Ray Serve application of ``spec`` (pass it to ``serve.run``).

    Args:
        spec: what to serve.
        router: a prompt router file or shipped name for requests without a category (None: they are refused).
        realization: ``"scheduler"`` (step-level share scheduler, one deployment per device) or
            ``"mps"`` (one process per model under CUDA MPS).
        worker_options: keyword arguments of each deployment's
            :class:`~genedge.serve.worker.DeviceWorker` (device, work_conserving, threads, cpus).
        gpus: ask Ray for GPUs (one per device deployment, ``share`` per MPS process).
        drain_timeout_s: when Ray Serve stops a deployment (``serve shutdown``, Ctrl-C of ``serve run``),
            it waits at most this long for the requests in flight (default: Ray Serve's).
        schedule: a plan schedule to serve (``spec`` is then its ``deployed`` spec): the ingress switches
            between its bands' plans (:mod:`genedge.serve.loop`).
        controller: the switching controller's settings (default: :class:`ControllerSettings`' defaults).
        api_key_sha256: the SHA-256 of the API key every route but health and image URLs requires
            (:func:`~genedge.serve.access.key_digest`; None: all open). The key itself never reaches Ray.
        openapi_docs: serve FastAPI's ``/docs``, ``/redoc`` and ``/openapi.json``.
        image_store: how many ``response_format: "url"`` images are kept, and how long (default:
            :class:`~genedge.serve.images.ImageStoreSettings`' defaults).
        device_resource: a Ray custom resource each device deployment asks one unit of (one device per node of
            a cluster whose nodes offer one each).
    """
    if realization not in SHARE_REALIZATIONS:
        raise ValueError(f"Expected a realization in {list(SHARE_REALIZATIONS)}, but got {realization!r}")
    graceful = {} if drain_timeout_s is None else {"graceful_shutdown_timeout_s": drain_timeout_s}
    bound = []
    units = []
    for name, models, options in deployment_units(spec, realization):
        actor = {"num_cpus": 0, **options}
        if device_resource is not None:
            actor["resources"] = {device_resource: 1}
        if gpus:
            actor.setdefault("num_gpus", 1)
        else:
            actor.pop("num_gpus", None)
        deployment = Device.options(name=name, ray_actor_options=actor, **graceful)
        bound.append(deployment.bind(models, dict(worker_options or {})))
        units.append((name, tuple(m.name for m in models)))
    # The ingress runs on the head node, beside Ray Serve's proxy and genedge's gateway (Ray's own libraries pin
    # their coordinators there by this resource): losing another node then loses its devices, never the front.
    on_head = {"num_cpus": 0, "resources": {_HEAD_NODE_RESOURCE: 0.001}}
    return Ingress.options(ray_actor_options=on_head, **graceful).bind(
        spec,
        router,
        units,
        *bound,
        schedule=schedule,
        controller=controller,
        api_key_sha256=api_key_sha256,
        openapi_docs=openapi_docs,
        image_store=image_store,
    )
