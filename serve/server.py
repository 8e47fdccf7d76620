"""The server's set-up as library calls: a plan file becomes a Ray Serve application, started and drained.

:func:`prepare_server` makes every decision before Ray starts: it reads the plan and the table it
was made from, checks one against the other (:func:`~genedge.serve.spec.serve_spec`), places the
models on devices, picks the prompt router, the CPU threads and the cores to pin. The
:class:`Server` it returns builds the application (:meth:`Server.application`). :func:`build_app`
does both in one call, :func:`serving` starts it on Ray Serve and stops it, and
:func:`calibration_check` and :func:`drain` are the start-up check and the graceful stop that
``genedge serve`` prints.

:func:`app_builder` is the same set-up under Ray Serve's application-builder convention, so that
Ray's own tools deploy a plan::

    serve run genedge.serve.server:app_builder plan=/path/plan.json router=none

or, in a Ray Serve config file (``serve run config.yaml`` / ``serve deploy config.yaml``)::

    http_options: {host: 127.0.0.1, port: 8000}
    applications:
      - name: genedge
        route_prefix: /
        import_path: genedge.serve.server:app_builder
        args: {plan: /path/plan.json, threads: 1}

Example (a notebook; the plan of ``genedge demo``):

    >>> from genedge.serve.server import calibration_check, prepare_server, serving
    >>> server = prepare_server("demo/plan.json")  # doctest: +SKIP
    >>> with serving(server, port=8000) as served:  # doctest: +SKIP
    ...     rows = calibration_check(served.handle)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from genedge.contract.runs import DEFAULT_DTYPE
from genedge.serve.shares import SHARE_REALIZATIONS, ShareRealization
from genedge.serve.spec import ServeSpec

if TYPE_CHECKING:
    from genedge.optimizer.plan_file import PlanDocument
    from genedge.serve.controller import ControllerSettings
    from genedge.serve.gateway import Gateway
    from genedge.serve.images import ImageStoreSettings
    from genedge.serve.limits import GatewaySettings
    from genedge.serve.schedule_spec import ServedSchedule

__all__ = [
    "CALIBRATION_TOLERANCE",
    "DEFAULT_DRAIN_TIMEOUT_S",
    "DEFAULT_PORT",
    "BUILDER_ARGS",
    "BUILDER_IMPORT_PATH",
    "CalibrationRow",
    "DrainSummary",
    "RAY_MEMORY_THRESHOLD",
    "Served",
    "Server",
    "app_builder",
    "build_app",
    "calibration_check",
    "drain",
    "local_ray_environment",
    "parse_cpus",
    "prepare_server",
    "ray_memory_threshold",
    "server_from_args",
    "serving",
]

DEFAULT_PORT = 8000
#: What Ray's ``serve run`` and a Ray Serve config file's ``import_path`` name to deploy a plan.
BUILDER_IMPORT_PATH = "genedge.serve.server:app_builder"
#: On shutdown, requests in flight get this long to finish (s).
DEFAULT_DRAIN_TIMEOUT_S = 120.0
#: A model whose call here differs from the table's by more than this fraction makes the plan's delays off.
CALIBRATION_TOLERANCE = 0.2
#: Ray's own default share of a node's memory past which its memory monitor kills workers.
RAY_MEMORY_THRESHOLD = 0.95
_RAY_MEMORY_THRESHOLD = "RAY_memory_usage_threshold"
#: Ray's switch for taking the machine's address as the node's (off by default on macOS and Windows only).
_RAY_NODE_OUTSIDE_LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

Cpus = Sequence[int] | Literal["auto", "none"]


@dataclass(frozen=True)
class Server:
    """A plan checked against its table and set up to serve (what :func:`prepare_server` decided).

    Attributes:
        spec: what is served: models, steps, shares, placement, routing.
        router: the prompt router file for requests without a category (None: they are refused).
        realization: how shares are realized, ``"scheduler"`` or ``"mps"``.
        gpus: whether the deployments ask Ray for GPUs.
        device: the torch device type of each deployment (None: cuda when available, else cpu).
        work_conserving: whether a model may use the share others leave idle.
        threads: torch CPU threads per deployment (None: torch's own).
        cpus: the cores the device's process is pinned to (None: not pinned).
        drain_timeout_s: how long Ray Serve waits for requests in flight when it stops a deployment (s).
        schedule: the plan schedule served, where one was given (``spec`` is then its ``deployed``).
        controller: the settings of the controller that switches the schedule's plans.
        api_key_sha256: the SHA-256 of the API key requests must carry (None: no key); the key is not kept.
        openapi_docs: whether FastAPI's ``/docs``, ``/redoc`` and ``/openapi.json`` are served.
        image_store: how many ``response_format: "url"`` images are kept, and how long (None: the defaults).
        device_resource: a Ray custom resource each device deployment asks one unit of (None: none).
    """

    spec: ServeSpec
    router: str | None
    realization: ShareRealization
    gpus: bool
    device: str | None
    work_conserving: bool
    threads: int | None
    cpus: tuple[int, ...] | None
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    schedule: ServedSchedule | None = None
    controller: ControllerSettings | None = None
    api_key_sha256: str | None = None
    openapi_docs: bool = False
    image_store: ImageStoreSettings | None = None
    device_resource: str | None = None

    def application(self) -> Any:
        """The Ray Serve application (a ``ray.serve.Application``; pass it to ``serve.run``)."""
        from genedge.serve.app import build_application

        return build_application(
            self.spec,
            router=self.router,
            realization=self.realization,
            worker_options={
                "device": self.device,
                "work_conserving": self.work_conserving,
                "threads": self.threads,
                "cpus": None if self.cpus is None else list(self.cpus),
            },
            gpus=self.gpus,
            drain_timeout_s=self.drain_timeout_s,
            schedule=self.schedule,
            controller=self.controller,
            api_key_sha256=self.api_key_sha256,
            openapi_docs=self.openapi_docs,
            image_store=self.image_store,
            device_resource=self.device_resource,
        )


@dataclass(frozen=True)
class CalibrationRow:
    """One model's call timed at start on the whole device beside the table's.

    Attributes:
        model: the served model's name.
        served_s: one call on the whole device here (s).
        table_s: the plan's call time on its share times the share: the table's call on the whole device (s).
    """

    model: str
    served_s: float
    table_s: float

    @property
    def ratio(self) -> float:
        """``served_s / table_s``: the factor by which this device is slower than the table's."""
        return self.served_s / self.table_s

    @property
    def off(self) -> bool:
        """Whether the plan's delays will be off by about :attr:`ratio` (beyond :data:`CALIBRATION_TOLERANCE`)."""
        return abs(self.ratio - 1) > CALIBRATION_TOLERANCE


@dataclass(frozen=True)
class DrainSummary:
    """How a drain ended.

    Attributes:
        in_flight_left: requests the ingress still held at the deadline.
        devices_drained: whether every device finished its queued and running requests in time.
        accepted_left: requests the gateway had read and not yet answered at the deadline (these include the
            ingress's, and any still on their way to it).
    """

    in_flight_left: int
    devices_drained: bool
    accepted_left: int = 0

    @property
    def finished(self) -> bool:
        """Every accepted request answered and every device drained."""
        return self.devices_drained and self.accepted_left == 0 and self.in_flight_left == 0


@dataclass(frozen=True)
class Served:
    """What :func:`serving` yields: the ingress's Ray handle, the gateway clients connect to, and the address
    of the node of a Ray that :func:`serving` started (127.0.0.1 when it listens on loopback only; None for a
    Ray it joined or found connected)."""

    handle: Any
    gateway: Gateway
    started_ray_on: str | None = None


def parse_cpus(text: str, *, option: str = "cpus") -> Cpus:
    """Cores to pin to, as written on a command line: ``'1'``, ``'0-3,6'``, ``'none'`` or ``'auto'``.

    Raises:
        ValueError: anything else, naming ``option``.
    """
    if text in ("auto", "none"):
        return text  # type: ignore[return-value]  # one of the two literals
    cpus: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"{option}: expected core numbers like '1' or '0-3,6' (or 'none'), but got {text!r}")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


def _table_path(plan_path: Path, plan: PlanDocument, table: str | Path | None) -> Path:
    """The table to serve ``plan`` with: the one given, else the plan's ``inputs.table`` (beside the plan
    file when relative and not found from here, else a shipped table of that name)."""
    if table is not None:
        return Path(table)
    recorded = plan.inputs.table
    if recorded is None:
        raise ValueError(f"{plan_path}: inputs.table: the plan names no table; give the table it was made from")
    from genedge.data import resolve_table

    candidate = Path(recorded)
    if not candidate.is_absolute() and not candidate.exists():
        beside = plan_path.parent / candidate
        candidate = beside if beside.exists() else candidate
    return candidate if candidate.exists() else resolve_table(recorded)


def _router_path(choice: str, mapping: Mapping[str, Any]) -> str | None:
    """The router file to load in the server for ``choice`` (None: requests must carry their category)."""
    from genedge.router.choice import router_path

    path = router_path(choice, mapping)
    return None if path is None else str(path)


def _uses_gpus(device: str | None) -> bool:
    """Whether the deployments get GPUs: the device says, else the Ray cluster this process is connected
    to (the builder under ``serve run`` with a config file), else this machine."""
    if device is not None:
        return device.startswith("cuda")
    from genedge.profiler._imports import require

    ray = sys.modules.get("ray")  # not imported here: a Ray imported before serving() would leave loopback
    if ray is not None and ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(require("torch").cuda.is_available())


def _check_options(realization: str, threads: int | None, queue_bound_s: float | None, drain_timeout_s: float) -> None:
    """:func:`prepare_server`'s checks of its settings, naming the argument refused."""
    if realization not in SHARE_REALIZATIONS:
        raise ValueError(f"realization: expected one of {list(SHARE_REALIZATIONS)}, but got {realization!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads: expected a positive number of threads, but got {threads!r}")
    for name, value in (("queue_bound_s", queue_bound_s), ("drain_timeout_s", drain_timeout_s)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}: expected a positive finite number of seconds, but got {value!r}")


def _access(
    api_key: str | None, api_key_file: str | Path | None, openapi_docs: bool, image_store: ImageStoreSettings | None
) -> dict[str, Any]:
    """The :class:`Server` fields of who may use it and what it shows: the SHA-256 of the API key the options (or
    the environment) give, the key itself going no further."""
    from genedge.serve.access import key_digest, read_api_key

    key = read_api_key(api_key, api_key_file)
    sha256 = None if key is None else key_digest(key)
    return {"api_key_sha256": sha256, "openapi_docs": openapi_docs, "image_store": image_store}


def _check_served(
    plan: str | Path,
    schedule: ServedSchedule | None,
    controller: ControllerSettings | None,
    realization: str,
    gpus: bool,
) -> None:
    """MPS only on NVIDIA GPUs, a controller only for a plan schedule, and a schedule only under the scheduler."""
    if realization == "mps" and not gpus:
        raise ValueError("realization mps needs NVIDIA GPUs (CUDA MPS); this machine has none: use the scheduler")
    if schedule is None and controller is not None:
        raise ValueError(f"controller: {plan} is a single plan; a controller switches the plans of a plan schedule")
    if schedule is not None and realization != "scheduler":
        raise ValueError("realization: a plan schedule switches shares inside one process: use the scheduler")


def _pinned_cores(cpus: Cpus, threads: int | None, devices: int) -> tuple[int, ...] | None:
    """The cores a CPU device's process is pinned to (None: not pinned)."""
    from genedge.serve.worker import default_cpus

    if cpus == "none":
        return None
    if cpus == "auto":  # pinning is per process: one CPU device per machine gets it by default
        cores = default_cpus(threads) if devices == 1 else None
        return None if cores is None else tuple(cores)
    return tuple(cpus)


def prepare_server(
    plan: str | Path,
    *,
    table: str | Path | None = None,
    models: Mapping[str, str] | None = None,
    router: str = "auto",
    device: str | None = None,
    realization: ShareRealization = "scheduler",
    work_conserving: bool = False,
    threads: int | None = None,
    cpus: Cpus = "auto",
    queue_bound_s: float | None = None,
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
    controller: ControllerSettings | None = None,
    api_key: str | None = None,
    api_key_file: str | Path | None = None,
    openapi_docs: bool = False,
    image_store: ImageStoreSettings | None = None,
    device_resource: str | None = None,
) -> Server:
    """Check a plan file against its table and decide how to serve it, before anything starts.

    Args:
        plan: a plan JSON written by ``genedge plan`` or ``genedge demo``, or a plan schedule written by
            ``genedge plan --rates`` (served on one device, switching plans as the arrival rate moves:
            :mod:`genedge.serve.loop`).
        table: the plan's calibration table (default: the plan's ``inputs.table``); its sha256 must match.
        models: plan model key → what to load instead (a saved pipeline folder, a hub id or a replica name).
        router: for requests without a category: ``"auto"`` (the shipped router of the table's category
            mapping), a shipped router name, a router JSON file, or ``"none"`` (such requests get 400).
        device: torch device type in each deployment (default: cuda when available, else cpu).
        realization: ``"scheduler"`` (a step-level weighted fair scheduler per device) or ``"mps"``
            (one process per model under CUDA MPS; NVIDIA GPUs only).
        work_conserving: let a model use the share others leave idle (default: its planned share only).
        threads: torch CPU threads per deployment (default on a CPU: the count the table was profiled with).
        cpus: on a CPU, the cores to pin the device's process to; ``"auto"`` pins a one-device plan to the
            last ``threads`` cores (a model thread then keeps its caches, as when it was profiled),
            ``"none"`` pins nothing.
        queue_bound_s: refuse a request (503) when its model already holds this many seconds of planned
            work (default: the plan's SLO, else :data:`~genedge.serve.spec.DEFAULT_QUEUE_BOUND_S`).
        drain_timeout_s: when a deployment is stopped, wait at most this long for requests in flight.
        controller: with a plan schedule, how its controller estimates the rate and switches (default:
            :class:`~genedge.serve.controller.ControllerSettings`' defaults); refused with a single plan.
        api_key: the key every route but health and image URLs requires (``Authorization: Bearer KEY``); else
            ``api_key_file``'s first line, else ``$GENEDGE_API_KEY``, else none (only its SHA-256 is kept).
        api_key_file: a file whose first line is the API key (not together with ``api_key``).
        openapi_docs: serve FastAPI's ``/docs``, ``/redoc`` and ``/openapi.json`` (default: not served).
        image_store: the bounds of the ``response_format: "url"`` images (default: 256, 256 MiB, 15 minutes).
        device_resource: a Ray custom resource each device deployment asks one unit of: one device per node
            on a cluster whose nodes offer one each, as ``num_gpus`` does on GPUs (default: none).

    Returns:
        The :class:`Server` (``.application()`` is what ``serve.run`` takes, ``.spec.notes`` what was chosen).

    Raises:
        ValueError: the plan or table is unreadable or invalid (naming the file and field), they do not
            match (:class:`~genedge.serve.spec.ServeError`), or an argument is out of range (naming it).
    """
    _check_options(realization, threads, queue_bound_s, drain_timeout_s)
    access = _access(api_key, api_key_file, openapi_docs, image_store)
    gpus = _uses_gpus(device)
    dtype = "float16" if gpus else DEFAULT_DTYPE
    spec, schedule = _served(Path(plan), table, model_specs=models, queue_bound_s=queue_bound_s, default_dtype=dtype)
    _check_served(plan, schedule, controller, realization, gpus)
    threads = threads if threads is not None else (None if gpus else spec.profile_threads)
    return Server(
        spec=spec,
        router=_router_path(router, spec.category_mapping),
        realization=realization,
        gpus=gpus,
        device=device,
        work_conserving=work_conserving,
        threads=threads,
        cpus=None if gpus else _pinned_cores(cpus, threads, spec.devices),
        drain_timeout_s=drain_timeout_s,
        schedule=schedule,
        controller=controller,
        device_resource=_resource_name(device_resource),
        **access,
    )


def _resource_name(name: str | None) -> str | None:
    """A custom resource's name as Ray takes it, or None."""
    if name is not None and (not name or name in ("CPU", "GPU", "memory", "object_store_memory") or " " in name):
        raise ValueError(f"device_resource: expected a custom Ray resource's name (not CPU/GPU/memory), got {name!r}")
    return name


def _served(path: Path, table: str | Path | None, **checked: Any) -> tuple[ServeSpec, ServedSchedule | None]:
    """A plan file's spec, or a plan schedule's deployed spec and the schedule checked, by the file's ``kind``."""
    from genedge.contract.files import read_json
    from genedge.contract.table_file import read_table_file
    from genedge.optimizer.plan_file import load_plan
    from genedge.optimizer.schedule_file import SCHEDULE_KIND, load_plan_schedule
    from genedge.serve.schedule_spec import served_schedule
    from genedge.serve.spec import serve_spec

    document = read_json(path, "a plan JSON (genedge plan) or a plan schedule (genedge plan --rates)")
    if isinstance(document, Mapping) and document.get("kind") == SCHEDULE_KIND:
        schedule = load_plan_schedule(path)
        calibration, table_bytes = read_table_file(_table_path(path, schedule.bands[0].plan, table))
        served = served_schedule(schedule, calibration, table_bytes, where=str(path), **checked)
        return served.deployed, served
    plan = load_plan(path)
    calibration, table_bytes = read_table_file(_table_path(path, plan, table))
    return serve_spec(plan, calibration, table_bytes, where=str(path), **checked), None


def build_app(plan: str | Path, **options: Any) -> Any:
    """The Ray Serve application of a plan file: ``prepare_server(plan, **options).application()``.

    Pass it to ``serve.run(app, name=APP_NAME, route_prefix="/")``; the keyword arguments are
    :func:`prepare_server`'s.
    """
    return prepare_server(plan, **options).application()


def _as_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"args.{name}: expected a non-empty string, but got {value!r}")
    return value


def _as_number(name: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"args.{name}: expected a number, but got {value!r}")
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(
            f"args.{name}: expected {'an integer' if kind is int else 'a number'}, but got {value!r}"
        ) from None
    if kind is int and isinstance(value, float) and value != number:
        raise ValueError(f"args.{name}: expected an integer, but got {value!r}")
    return number


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"args.{name}: expected true or false, but got {value!r}")


def _as_models(name: str, value: Any) -> dict[str, str]:
    from genedge.serve.spec import model_specs_from_pairs

    if isinstance(value, Mapping):
        return {_as_text(name, key): _as_text(f"{name}.{key}", spec) for key, spec in value.items()}
    try:
        return model_specs_from_pairs(_as_text(name, value).split(","))
    except ValueError as err:
        raise ValueError(f"args.{name}: expected KEY=SPEC[,KEY=SPEC...] or a mapping, but got {value!r}") from err


def _as_settings(name: str, value: Any, settings: type, whose: str) -> Any:
    """A frozen settings dataclass from a mapping or ``FIELD=VALUE[,FIELD=VALUE...]``, each field read as
    its declared type (int or float)."""
    if not isinstance(value, Mapping):
        pairs = [pair.partition("=") for pair in _as_text(name, value).split(",")]
        if not all(sep and key for key, sep, _ in pairs):
            raise ValueError(f"args.{name}: expected FIELD=VALUE[,FIELD=VALUE...] or a mapping, but got {value!r}")
        value = {key: text for key, _, text in pairs}
    kinds = {f.name: int if f.type in ("int", int) else float for f in dataclasses.fields(settings)}
    unknown = sorted(set(value) - set(kinds))
    if unknown:
        raise ValueError(f"args.{name}: unknown fields {unknown}; {whose} are {sorted(kinds)}")
    return settings(**{key: _as_number(f"{name}.{key}", text, kinds[key]) for key, text in value.items()})


def _as_controller(name: str, value: Any) -> ControllerSettings:
    """A plan schedule's controller settings: a mapping, or ``window_s=60,dwell_s=120`` (fields of
    :class:`~genedge.serve.controller.ControllerSettings`)."""
    from genedge.serve.controller import ControllerSettings

    return _as_settings(name, value, ControllerSettings, "the controller's")


def _as_image_store(name: str, value: Any) -> ImageStoreSettings:
    """The URL images' store: a mapping, or ``ttl_s=600,max_images=100`` (fields of
    :class:`~genedge.serve.images.ImageStoreSettings`)."""
    from genedge.serve.images import ImageStoreSettings

    return _as_settings(name, value, ImageStoreSettings, "the image store's")


def _as_cpus(name: str, value: Any) -> Cpus:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, list) and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in value):
        return value
    return parse_cpus(_as_text(name, value), option=f"args.{name}")


#: :func:`app_builder`'s arguments: name → how a string (``serve run key=val``) or YAML value becomes
#: :func:`prepare_server`'s keyword argument.
BUILDER_ARGS: dict[str, Callable[[str, Any], Any]] = {
    "plan": _as_text,
    "table": _as_text,
    "models": _as_models,
    "router": _as_text,
    "device": _as_text,
    "realization": _as_text,
    "work_conserving": _as_bool,
    "threads": lambda name, value: _as_number(name, value, int),
    "cpus": _as_cpus,
    "queue_bound_s": lambda name, value: _as_number(name, value, float),
    "drain_timeout_s": lambda name, value: _as_number(name, value, float),
    "controller": _as_controller,
    "api_key": _as_text,
    "api_key_file": _as_text,
    "openapi_docs": _as_bool,
    "image_store": _as_image_store,
    "device_resource": _as_text,
}


def server_from_args(args: Mapping[str, Any]) -> Server:
    """:func:`prepare_server` from a mapping of argument names to values, as Ray Serve passes them.

    The keys are :func:`prepare_server`'s arguments (see :data:`BUILDER_ARGS`); ``plan`` is required.
    Values may be strings (as ``serve run key=value`` gives them) or YAML values (a config file's
    ``args``): ``models`` is ``KEY=SPEC[,KEY=SPEC...]`` or a mapping, ``cpus`` ``'2-3'``, ``'none'``,
    ``'auto'`` or a list of cores, ``work_conserving`` and ``openapi_docs`` true or false, ``controller`` and
    ``image_store`` ``FIELD=VALUE,...`` or a mapping. Give ``api_key_file`` (or the environment's
    ``GENEDGE_API_KEY``) rather than ``api_key`` in a config file that others may read.

    Raises:
        ValueError: a missing ``plan``, an unknown key (listing the known ones), a value of the wrong
            form (naming ``args.KEY``), or anything :func:`prepare_server` refuses.
    """
    if not isinstance(args, Mapping):
        raise ValueError(f"args: expected a mapping of argument names to values, but got {args!r}")
    unknown = sorted(set(args) - set(BUILDER_ARGS))
    if unknown:
        where = (
            " (where to listen is Ray Serve's: http_options in a config file, 8000 on this machine under serve run)"
            if {"host", "port"} & set(unknown)
            else ""
        )
        raise ValueError(
            f"args: unknown arguments {unknown}; genedge's application builder takes {list(BUILDER_ARGS)}{where}"
        )
    if "plan" not in args:
        raise ValueError("args.plan: required: the plan JSON to serve (e.g. plan=/path/plan.json)")
    return prepare_server(**{name: BUILDER_ARGS[name](name, value) for name, value in args.items()})


def app_builder(args: dict[str, Any]) -> Any:
    """Ray Serve application builder: ``serve run genedge.serve.server:app_builder plan=PLAN [key=value ...]``.

    Ray's ``serve run`` passes the ``key=value`` words after the import path, and a Ray Serve config
    file its application's ``args`` mapping; both are read by :func:`server_from_args`. Give paths
    absolute in config files: the builder runs in a Ray worker there. Ctrl-C of ``serve run`` (or
    ``serve shutdown``) lets requests in flight finish for up to ``drain_timeout_s``, and
    ``GET /v1/plan`` answers the start-up calibration check (``served.calibration_check``). For served
    step times to match a CPU table, start Ray with ``RAY_worker_niceness=0`` in the environment (Ray
    runs its workers at niceness 15 by default, and a served model would yield the CPU to any other
    process).

    Returns:
        The application (a ``ray.serve.Application``).

    Raises:
        ValueError: what :func:`server_from_args` refuses, naming the argument.
    """
    return server_from_args(args).application()


@contextlib.contextmanager
def serving(
    server: Server,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    address: str | None = None,
    log_to_driver: bool = False,
    stop: threading.Event | None = None,
    gateway: GatewaySettings | None = None,
    memory_threshold: float | None = None,
) -> Iterator[Served]:
    """Serve on Ray Serve over HTTP while the ``with`` block runs; yields the ingress's handle and the gateway.

    Starts (or, with ``address``, joins) Ray unless this process is connected already, starts Serve's
    HTTP proxy on a free loopback port behind a :class:`~genedge.serve.gateway.Gateway` that listens on
    ``host:port`` (limits, time-outs, and an answer while Ray's proxy restarts), deploys ``server``'s
    application as :data:`~genedge.serve.app.APP_NAME` at ``/`` and waits until its models are loaded
    and warmed up. On leaving, it undoes what it did: it stops a Ray it started; in a Ray it joined, it
    shuts Serve down and disconnects; in a Ray the caller had connected to, it deletes the application and
    leaves the rest running. Call
    :func:`drain` first to let requests in flight finish. A local Ray it starts listens on loopback only and
    runs its workers at niceness 0 (:func:`local_ray_environment`).

    Args:
        server: what :func:`prepare_server` decided.
        host: address to listen on (default: this machine only).
        port: HTTP port.
        address: a Ray cluster to join (e.g. ``"auto"``; default: the environment's ``RAY_ADDRESS``, if set)
            instead of starting a local instance; run on its head node, where Ray Serve's proxy then runs.
        log_to_driver: show the deployments' logs, and Ray Serve's steps, in this process.
        stop: set on SIGINT or SIGTERM from the moment Ray is started on (Ray installs its own SIGTERM handler,
            which exits at once; this one lets the caller drain). The proxy may answer before the application
            reports it is running, so a signal in that time is caught too. Main thread only.
        gateway: the gateway's limits (default: :class:`~genedge.serve.gateway.GatewaySettings`' defaults).
        memory_threshold: the share of the node's memory past which the memory monitor of a Ray this starts
            kills workers (default: Ray's, :data:`RAY_MEMORY_THRESHOLD`; see :func:`local_ray_environment`).
    """
    from genedge.profiler._imports import require
    from genedge.serve.background import free_port
    from genedge.serve.gateway import Gateway
    from genedge.serve.limits import GatewaySettings

    if not 0 < port < 65536:
        raise ValueError(f"port: expected a TCP port from 1 to 65535, but got {port}")
    ray_is = _connect_ray(address, log_to_driver, memory_threshold)
    ray = require("ray", extra="serve")
    serve = require("ray.serve", extra="serve")
    if not log_to_driver:  # Ray Serve's start-up steps at INFO; its warnings and errors still show
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    from genedge.serve.app import APP_NAME

    with contextlib.ExitStack() as undo:  # what was done, undone in reverse order on leaving
        if stop is not None:  # restored after Ray's shutdown: a signal meanwhile is still only a request to stop
            undo.enter_context(_set_on_signals(stop))
        if ray_is != "connected":
            undo.callback(ray.shutdown)
        front = Gateway(gateway or GatewaySettings(), ("127.0.0.1", free_port()))
        # One proxy, on the head node: the gateway forwards to it on loopback, so genedge serve runs on the head
        # (proxies on other nodes would bind their own loopback, which no gateway reaches).
        serve.start(proxy_location="HeadOnly", http_options={"host": front.upstream[0], "port": front.upstream[1]})
        # A Ray started here stops with Serve's actors at once: shutting Serve down first would only make its
        # proxy and replicas log failed calls to the controller it had killed.
        if ray_is == "joined":
            undo.callback(serve.shutdown)
        elif ray_is == "connected":
            undo.callback(serve.delete, APP_NAME)
        front.start(host, port)
        undo.callback(front.close)
        handle = serve.run(server.application(), name=APP_NAME, route_prefix="/", blocking=False)
        yield Served(handle, front, ray.util.get_node_ip_address() if ray_is == "started" else None)


@contextlib.contextmanager
def _set_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT or SIGTERM while the block runs. The handler only writes a byte to a pipe, which a
    thread reads to set the event: a handler that set the event itself would deadlock on the event's lock when
    a second signal interrupts it there (Ctrl-C twice, or a SIGTERM beside it)."""

    def relay() -> None:
        with open(read_end, "rb", buffering=0) as pipe:
            if pipe.read(1):  # b"" when the block has ended without a signal
                stop.set()

    def handler(signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError):  # the pipe full of earlier signals: one is enough
            os.write(write_end, b"\0")

    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
        threading.Thread(target=relay, name="genedge-signals", daemon=True).start()
        yield
    finally:
        for signum, restored in previous.items():
            signal.signal(signum, restored)
        os.close(write_end)  # the relay sees the end of the pipe (and closes its end) unless a signal came


def _connect_ray(
    address: str | None, log_to_driver: bool, memory_threshold: float | None
) -> Literal["started", "joined", "connected"]:
    """Start Ray for :func:`serving`, or join the cluster at ``address`` (else at the environment's
    ``RAY_ADDRESS``, as ``ray.init`` would), unless this process is connected already; which it did."""
    from genedge.profiler._imports import require

    imported = sys.modules.get("ray")
    address = address or os.environ.get("RAY_ADDRESS") or None
    ray_is = "connected" if imported is not None and imported.is_initialized() else "joined" if address else "started"
    if memory_threshold is not None and ray_is != "started":
        raise ValueError(
            f"memory_threshold: set only for a Ray this starts, and this one is {ray_is} (at {address}); a "
            "cluster's is set in its nodes' environment (RAY_memory_usage_threshold before ray start)"
        )
    if ray_is == "started":
        local_ray_environment(memory_threshold)  # before Ray is imported: it reads part of it at import
    ray = require("ray", extra="serve")
    if ray_is != "connected":
        ray.init(address=address, include_dashboard=False, log_to_driver=log_to_driver, logging_level=logging.WARNING)
    if ray_is == "started":
        _check_loopback(ray.util.get_node_ip_address())
    return ray_is


def local_ray_environment(memory_threshold: float | None = None) -> None:
    """Set how a Ray that genedge starts on this machine runs, in this process's environment (Ray's processes
    inherit it); a variable already set is left as it is, but for ``memory_threshold``, which is set when given.

    - ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: Ray takes 127.0.0.1 as the node's address, as it does on macOS
      and Windows, so its GCS, raylet, workers, agents and Prometheus metrics servers listen on loopback only
      (otherwise on the machine's address or all interfaces). Ray reads it when it is imported, so call this
      first; :func:`serving` does, and warns if Ray was imported before. A Ray that other machines join is
      started by ``ray start --head`` and joined with ``address``.
    - ``RAY_worker_niceness=0``: Ray runs its workers at niceness 15 by default; a served model would then yield
      the CPU to any other process, and its step times would no longer be the ones the plan was calibrated with.
    - ``RAY_memory_usage_threshold``: the share of the node's memory past which Ray's memory monitor kills
      workers (Ray's default :data:`RAY_MEMORY_THRESHOLD`); the monitor can only kill Ray's workers, never
      another process that takes the memory, so on a node shared with memory-hungry processes a higher
      threshold keeps the device replicas alive longer.

    Raises:
        ValueError: ``memory_threshold`` not in (0, 1].
    """
    if memory_threshold is not None and not 0 < memory_threshold <= 1:
        raise ValueError(f"memory_threshold: expected a share of memory in (0, 1], but got {memory_threshold!r}")
    os.environ.setdefault(_RAY_NODE_OUTSIDE_LOOPBACK, "0")
    os.environ.setdefault("RAY_worker_niceness", "0")
    if memory_threshold is not None:
        os.environ[_RAY_MEMORY_THRESHOLD] = f"{memory_threshold:g}"


def ray_memory_threshold() -> float:
    """The memory threshold a Ray started from this process gets (see :func:`local_ray_environment`)."""
    return float(os.environ.get(_RAY_MEMORY_THRESHOLD, RAY_MEMORY_THRESHOLD))


def _check_loopback(node_ip: str) -> None:
    """Warn when the Ray :func:`serving` started is not on loopback (Ray was imported before it could say so)."""
    import ipaddress

    if not ipaddress.ip_address(node_ip).is_loopback:
        logging.getLogger(__name__).warning(
            "the Ray started here listens on %s, not on loopback only: Ray was imported before genedge could "
            "set %s=0 (call genedge.serve.server.local_ray_environment() before importing ray)",
            node_ip,
            _RAY_NODE_OUTSIDE_LOOPBACK,
        )


def calibration_check(handle: Any) -> list[CalibrationRow]:
    """Each served model's call timed at start on the whole device beside the table's.

    A :attr:`CalibrationRow.ratio` far from 1 (:attr:`CalibrationRow.off`) means this device is not
    the one the plan was made for, and the plan's delays will be off by about that factor. The same
    rows are in ``GET /v1/plan``'s ``served.calibration_check``, however the server was started.

    Args:
        handle: the ingress's handle (:attr:`Served.handle`, or ``serve.get_app_handle("genedge")``).
    """
    return [CalibrationRow(**row) for row in handle.calibration_check.remote().result()]


def drain(served: Served, timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S) -> DrainSummary:
    """Stop taking requests (new ones get 503) and wait at most ``timeout_s`` for those in flight.

    The gateway waits first for every request it accepted (counted from its headers on, so none that just
    arrived is cut off), then the ingress and the devices drain in what is left of ``timeout_s``.

    Args:
        served: what :func:`serving` yields.
        timeout_s: the longest wait (s).
    """
    import time

    deadline = time.monotonic() + timeout_s
    accepted_left = served.gateway.drain(timeout_s)
    rest = served.handle.drain.remote(max(deadline - time.monotonic(), 0.0)).result()
    return DrainSummary(**rest, accepted_left=accepted_left)
