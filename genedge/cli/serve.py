"""``genedge serve PLAN.json``: serve a plan on Ray Serve until interrupted, then drain."""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from genedge.serve.server import (
    BUILDER_ARGS,
    BUILDER_IMPORT_PATH,
    DEFAULT_DRAIN_TIMEOUT_S,
    DEFAULT_PORT,
    RAY_MEMORY_THRESHOLD,
)
from genedge.serve.shares import SHARE_REALIZATIONS

if TYPE_CHECKING:
    from genedge.serve.controller import ControllerSettings
    from genedge.serve.images import ImageStoreSettings
    from genedge.serve.limits import GatewaySettings
    from genedge.serve.server import Served, Server

__all__ = ["add_parser", "run"]

_DESCRIPTION = (
    "Start a Ray Serve application that realizes a plan: each request's category (given, or predicted "
    "by the prompt router) picks a model with the plan's routing fractions, the model generates with "
    "its planned steps, and each model gets its planned share of its device. Routes: POST /v1/generate, "
    "POST /v1/images/generations (OpenAI-compatible; images as b64_json or, with response_format url, as "
    "URLs GET /v1/images/ID.png kept in memory for a while), GET /v1/plan, /v1/stats, /v1/health, /metrics. "
    "With an API key, every route but /v1/health and the image URLs needs 'Authorization: Bearer KEY'. "
    "Ctrl-C (or SIGTERM) stops taking requests, finishes those in flight and exits. Ray's own tools deploy "
    f"the same server: 'serve run {BUILDER_IMPORT_PATH} plan=PLAN [threads=N ...]', or a Ray Serve config "
    f"file whose import_path is {BUILDER_IMPORT_PATH} and whose args are this command's options "
    f"({', '.join(BUILDER_ARGS)})."
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``genedge serve``."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a plan over HTTP on Ray Serve (genedge's route and an OpenAI-compatible one)",
        description=_DESCRIPTION,
    )
    parser.add_argument(
        "plan", type=Path, help="plan JSON ('genedge plan'), or a plan schedule ('genedge plan --rates')"
    )
    parser.add_argument(
        "--table",
        type=Path,
        help="the calibration table the plan was made from (default: the plan's inputs.table); its sha256 must "
        "match the plan's",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="KEY=SPEC",
        help="load SPEC (a saved pipeline folder, a hub id or a replica name) for the plan's model KEY "
        "(repeatable; default: each key is its own spec)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default: {DEFAULT_PORT})")
    parser.add_argument(
        "--router",
        default="auto",
        help="prompt router for requests without a category: 'auto' (the shipped TF-IDF router of the table's "
        "category mapping), a shipped name, a router JSON file, or 'none' (such requests get 400)",
    )
    parser.add_argument(
        "--device", help="torch device type in each deployment (default: cuda when available, else cpu)"
    )
    parser.add_argument(
        "--realization",
        choices=SHARE_REALIZATIONS,
        default="scheduler",
        help="how shares are realized: 'scheduler' (default: a step-level weighted fair scheduler in the process "
        "that owns each device; any device) or 'mps' (one process per model under CUDA MPS with the plan's "
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE; NVIDIA GPUs with the MPS daemon running)",
    )
    parser.add_argument(
        "--work-conserving",
        action="store_true",
        help="let a model use the share others leave idle (default: each model gets its planned share and no "
        "more, which is what the plan's delays assume)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads per deployment (default on a CPU: the thread count the table was profiled with)",
    )
    parser.add_argument(
        "--cpus",
        help="on a CPU device, pin the serving process to these cores, e.g. '1' or '2-3' ('none': no pinning; "
        "default 'auto': the last --threads cores, so a model thread keeps its caches as when it was profiled)",
    )
    parser.add_argument(
        "--queue-bound-s",
        type=float,
        help="refuse a request (503 + Retry-After) when its model already holds this many seconds of planned "
        "work (default: the plan's SLO, else 30)",
    )
    _add_cluster_options(parser)
    _add_access_options(parser)
    _add_limit_options(parser)
    _add_controller_options(parser)
    parser.set_defaults(func=run)


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """Where Ray runs and how devices are placed on its nodes."""
    group = parser.add_argument_group("cluster", "where Ray runs and how the devices are placed on its nodes")
    group.add_argument(
        "--device-resource",
        metavar="NAME",
        help="each device deployment asks Ray for one unit of the custom resource NAME, so that on a cluster whose "
        "nodes each offer one (ray start --resources '{\"NAME\": 1}') each device runs on a node of its own, as "
        "num_gpus does on GPUs (default: none)",
    )
    group.add_argument(
        "--address",
        help="join this Ray cluster (e.g. 'auto') instead of starting a local instance; run genedge serve on the "
        "cluster's head node, where Ray Serve's proxy runs behind genedge's gateway (default: start Ray here, "
        "listening on loopback only)",
    )
    group.add_argument(
        "--memory-threshold",
        type=float,
        metavar="SHARE",
        help="the share of this machine's memory past which Ray's memory monitor kills Ray's workers (a device "
        "replica is then restarted); it never kills another process that takes the memory, so raise it on a "
        f"machine shared with memory-hungry processes (default: Ray's, {RAY_MEMORY_THRESHOLD:g}; not with --address)",
    )


def _add_limit_options(parser: argparse.ArgumentParser) -> None:
    """The gateway's limits (one option per field of :class:`~genedge.serve.limits.GatewaySettings`) and the
    drain's."""
    import dataclasses

    from genedge.serve.limits import GatewaySettings

    group = parser.add_argument_group(
        "limits", "what the HTTP gateway in front of Ray Serve's proxy holds each connection to, and the drain"
    )
    group.add_argument(
        "--drain-timeout-s",
        type=float,
        default=DEFAULT_DRAIN_TIMEOUT_S,
        help=f"on shutdown, wait at most this long for requests in flight (default: {DEFAULT_DRAIN_TIMEOUT_S:g})",
    )
    for setting in dataclasses.fields(GatewaySettings):
        group.add_argument(
            f"--{setting.name.replace('_', '-')}",
            type=type(setting.default),
            help=f"{setting.metadata['help']} (default: {setting.default})",
        )


def _add_access_options(parser: argparse.ArgumentParser) -> None:
    """Who may use the server, what it shows, and how long it keeps URL images."""
    from genedge.serve.access import API_KEY_ENV
    from genedge.serve.images import DEFAULT_IMAGE_TTL_S, DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGES

    group = parser.add_argument_group("access", "who may use the server and what it shows")
    group.add_argument(
        "--api-key",
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' (as OpenAI clients send their api_key) on every route but "
        "/v1/health and image URLs; others get 401. Precedence: --api-key or --api-key-file (not both), else "
        f"the environment variable {API_KEY_ENV}; none of them: every route is open. A key on the command line "
        "is visible to other users of the machine: prefer the file or the variable",
    )
    group.add_argument(
        "--api-key-file", type=Path, metavar="FILE", help="a file whose first line is the API key (see --api-key)"
    )
    group.add_argument(
        "--openapi-docs",
        action="store_true",
        help="serve FastAPI's /docs, /redoc and /openapi.json (default: not served; with an API key they need it)",
    )
    group.add_argument(
        "--image-ttl-s",
        type=float,
        help=f"seconds a response_format=url image stays fetchable (default: {DEFAULT_IMAGE_TTL_S:g}, 15 minutes)",
    )
    group.add_argument(
        "--image-max-count",
        type=int,
        help=f"the most URL images kept at once, the oldest dropped first (default: {DEFAULT_MAX_IMAGES})",
    )
    group.add_argument(
        "--image-max-mib",
        type=float,
        help=f"the most MiB of URL images kept at once (default: {DEFAULT_MAX_IMAGE_BYTES / 2**20:g})",
    )


def _add_controller_options(parser: argparse.ArgumentParser) -> None:
    """How a plan schedule's controller estimates the rate and switches plans (a schedule only)."""
    from genedge.serve.controller import ControllerSettings

    defaults = ControllerSettings()
    group = parser.add_argument_group("plan schedule", "how the plan is switched as the arrival rate moves")
    group.add_argument(
        "--switch-window-s",
        type=float,
        help=f"the rate change detector's window in seconds: a step is seen within about one (default: "
        f"{defaults.window_s:g})",
    )
    group.add_argument(
        "--switch-alpha",
        type=float,
        help=f"the detector's false-alarm probability per test (default: {defaults.alpha:g})",
    )
    group.add_argument(
        "--switch-dwell-s",
        type=float,
        help=f"seconds a lower rate's plan must be the pick before the plan moves down (default: {defaults.dwell_s:g})",
    )
    group.add_argument(
        "--switch-margin",
        type=float,
        help=f"dead band around each band's edge, as a fraction of the rate (default: {defaults.margin:g})",
    )
    group.add_argument("--switch-tick-s", type=float, help=f"seconds between decisions (default: {defaults.tick_s:g})")
    group.add_argument(
        "--switch-horizon-s",
        type=float,
        help=f"the rate estimate's longest memory in seconds (default: {defaults.horizon_s:g})",
    )


def _controller(args: argparse.Namespace) -> ControllerSettings | None:
    """The controller settings the options give (None where none is given: the defaults, for a schedule)."""
    import dataclasses

    from genedge.serve.controller import ControllerSettings

    # Each field of the settings is the option --switch-FIELD.
    options = {field.name: getattr(args, f"switch_{field.name}") for field in dataclasses.fields(ControllerSettings)}
    given = {name: value for name, value in options.items() if value is not None}
    return ControllerSettings(**given) if given else None


def _image_store(args: argparse.Namespace) -> ImageStoreSettings | None:
    """The URL images' store the options give (None where none is given: the defaults)."""
    from genedge.serve.images import ImageStoreSettings

    given = {
        "ttl_s": args.image_ttl_s,
        "max_images": args.image_max_count,
        "max_bytes": None if args.image_max_mib is None else max(1, round(args.image_max_mib * 2**20)),
    }
    given = {name: value for name, value in given.items() if value is not None}
    return ImageStoreSettings(**given) if given else None


def _gateway(args: argparse.Namespace) -> GatewaySettings | None:
    """The gateway's limits the options give (None where none is given: the defaults)."""
    import dataclasses

    from genedge.serve.limits import GatewaySettings

    given = {field.name: getattr(args, field.name) for field in dataclasses.fields(GatewaySettings)}
    given = {name: value for name, value in given.items() if value is not None}
    return GatewaySettings(**given) if given else None


def _print_started(args: argparse.Namespace, server: Server, served: Served) -> None:
    """What ``genedge serve`` says once the server answers: the plan, the start-up calibration check, access."""
    from genedge.serve.background import server_url
    from genedge.serve.server import calibration_check, ray_memory_threshold

    spec = server.spec
    url = server_url(args.host, args.port)
    shares = ", ".join(f"{m.name} {m.steps} steps share {m.share:.2f} on device {m.device}" for m in spec.models)
    print(f"serving {args.plan} ({spec.devices} device(s); {shares})")
    # Where the files are on this host: GET /v1/plan shows clients only their names.
    specs = ", ".join(f"{m.key}: {m.spec}" for m in spec.models if m.spec != m.key)
    print(
        f"plan {args.plan.resolve()}, table sha256 {spec.table_sha256[:12]}…" + (f"; loaded {specs}" if specs else "")
    )
    if server.schedule is not None:
        print(
            f"plan schedule: {len(server.schedule.bands)} bands; starting on band {server.schedule.start}, the "
            "plan for the highest rate, until the rate is seen; switches are in GET /v1/plan and /metrics"
        )
    for row in calibration_check(served.handle):
        print(
            f"{row.model}: one call takes {row.served_s:.3g} s on the whole device here, "
            f"{row.table_s:.3g} s in the table (×{row.ratio:.2f})"
            + ("; the plan's delays will be off by about that factor" if row.off else "")
        )
    pinned = f"; device process pinned to cores {list(server.cpus)}" if server.cpus else ""
    print(
        f"prompt router: {server.router or 'none (requests must carry a category)'}; "
        f"shares: {server.realization}{pinned}"
    )
    if served.started_ray_on is not None:
        print(
            f"ray: started here on {served.started_ray_on}; its memory monitor kills its workers past "
            f"{ray_memory_threshold():.0%} of this machine's memory (--memory-threshold)"
        )
    access = "an API key is required on every route but /v1/health" if server.api_key_sha256 else "no API key"
    print(f"access: {access}; OpenAPI docs {'at /docs' if server.openapi_docs else 'off'}")
    print(f"listening on {url} — POST /v1/generate, POST /v1/images/generations; Ctrl-C drains and stops", flush=True)


def run(args: argparse.Namespace) -> int:
    """Check the plan against its table and models, start Ray Serve, serve until a signal, drain."""
    from genedge.serve.access import API_KEY_ENV
    from genedge.serve.server import drain, parse_cpus, prepare_server, serving
    from genedge.serve.spec import model_specs_from_pairs

    if args.memory_threshold is not None and (args.address or os.environ.get("RAY_ADDRESS")):
        raise ValueError("--memory-threshold: only for a Ray genedge serve starts, not with --address or RAY_ADDRESS")
    server = prepare_server(
        args.plan,
        table=args.table,
        models=model_specs_from_pairs(args.model),
        router=args.router,
        device=args.device,
        realization=args.realization,
        work_conserving=args.work_conserving,
        threads=args.threads,
        cpus="auto" if args.cpus is None else parse_cpus(args.cpus, option="--cpus"),
        queue_bound_s=args.queue_bound_s,
        drain_timeout_s=args.drain_timeout_s,
        controller=_controller(args),
        api_key=args.api_key,
        api_key_file=args.api_key_file,
        openapi_docs=args.openapi_docs,
        image_store=_image_store(args),
        device_resource=args.device_resource,
    )
    # Read once: Ray's workers inherit this process's environment, and the server keeps only the key's digest.
    os.environ.pop(API_KEY_ENV, None)
    spec = server.spec
    for note in spec.notes:
        print(f"note: {note}")
    stop = threading.Event()  # set by SIGINT or SIGTERM from Ray's start on: the server drains, then exits
    with serving(
        server,
        host=args.host,
        port=args.port,
        address=args.address,
        log_to_driver=args.verbose > 0,
        stop=stop,
        gateway=_gateway(args),
        memory_threshold=args.memory_threshold,
    ) as served:
        _print_started(args, server, served)
        stop.wait()
        print("draining: no new requests; finishing those in flight", flush=True)
        summary = drain(served, args.drain_timeout_s)
        events = ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in sorted(served.gateway.events.items()))
        print(
            f"drained: {'all requests finished' if summary.finished else 'timed out with requests left'}"
            + (f"; gateway: {events}" if events else ""),
            flush=True,
        )
    return 0 if summary.finished else 1
