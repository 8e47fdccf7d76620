"""``genedge serve PLAN.json``: serve a plan on Ray Serve until interrupted, then drain."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

DEFAULT_PORT = 8000
DEFAULT_DRAIN_TIMEOUT_S = 120.0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``genedge serve``."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a plan over HTTP on Ray Serve (genedge's route and an OpenAI-compatible one)",
        description=(
            "Start a Ray Serve application that realizes a plan: each request's category (given, or predicted "
            "by the prompt router) picks a model with the plan's routing fractions, the model generates with "
            "its planned steps, and each model gets its planned share of its device. Routes: POST /v1/generate, "
            "POST /v1/images/generations (OpenAI-compatible), GET /v1/plan, /v1/stats, /v1/health. "
            "Ctrl-C (or SIGTERM) stops taking requests, finishes those in flight and exits."
        ),
    )
    parser.add_argument("plan", type=Path, help="plan JSON written by 'genedge plan' or 'genedge demo'")
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
        choices=("scheduler", "mps"),
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
        "default: the last --threads cores, so a model thread keeps its caches as when it was profiled)",
    )
    parser.add_argument(
        "--queue-bound-s",
        type=float,
        help="refuse a request (503 + Retry-After) when its model already holds this many seconds of planned "
        "work (default: the plan's SLO, else 30)",
    )
    parser.add_argument(
        "--drain-timeout-s",
        type=float,
        default=DEFAULT_DRAIN_TIMEOUT_S,
        help=f"on shutdown, wait at most this long for requests in flight (default: {DEFAULT_DRAIN_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--address",
        help="join this Ray cluster (e.g. 'auto' on a node of a running cluster) instead of starting a local instance",
    )
    parser.set_defaults(func=run)


def _table_path(args: argparse.Namespace, plan: dict[str, Any]) -> Path:
    if args.table is not None:
        return args.table
    recorded = plan["inputs"].get("table")
    if recorded is None:
        raise ValueError(f"{args.plan}: inputs.table: the plan names no table; pass --table")
    from genedge.data import resolve_table

    candidate = Path(recorded)
    if not candidate.is_absolute() and not candidate.exists():
        beside = args.plan.parent / candidate
        candidate = beside if beside.exists() else candidate
    return candidate if candidate.exists() else resolve_table(recorded)


def _router_choice(choice: str, mapping: dict[str, Any]) -> str | None:
    """The router file to load in the server (None: requests must carry their category)."""
    from genedge.data import resolve_router
    from genedge.router.model import default_router_path, load_router

    if choice == "none":
        return None
    if choice == "auto":
        path = default_router_path(mapping)
        return None if path is None else str(path)
    path = resolve_router(choice)
    if not load_router(path).fits_mapping(mapping):
        raise ValueError(f"--router {choice}: it routes into another category mapping than the plan's table")
    return str(path)


def _parse_cpus(choice: str) -> list[int]:
    cpus = []
    for part in choice.split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"--cpus: expected core numbers like '1' or '0-3,6', but got {choice!r}")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


def run(args: argparse.Namespace) -> int:
    """Check the plan against its table and models, start Ray Serve, serve until a signal, drain."""
    from genedge.optimizer.plan_file import load_plan
    from genedge.profiler._imports import require
    from genedge.serve.spec import model_specs_from_pairs, read_table_file, serve_spec
    from genedge.serve.worker import default_cpus

    torch = require("torch")
    gpus = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if args.realization == "mps" and not gpus and args.address is None:
        raise ValueError("--realization mps needs NVIDIA GPUs (CUDA MPS); this machine has none: use the scheduler")
    plan = load_plan(args.plan)
    table_path = _table_path(args, plan)
    table, table_bytes = read_table_file(table_path)
    spec = serve_spec(
        plan,
        table,
        table_bytes,
        model_specs=model_specs_from_pairs(args.model),
        queue_bound_s=args.queue_bound_s,
        default_dtype="float16" if gpus else "float32",
        where=str(args.plan),
    )
    for note in spec.notes:
        print(f"note: {note}")
    router = _router_choice(args.router, spec.category_mapping)
    ray = require("ray", extra="serve")
    serve = require("ray.serve", extra="serve")
    from genedge.serve.app import APP_NAME, build_application

    threads = args.threads if args.threads is not None else (None if gpus else spec.profile_threads)
    if gpus or args.cpus == "none":
        cpus = None
    elif args.cpus is not None:
        cpus = _parse_cpus(args.cpus)
    else:  # pinning is per process: one CPU device per machine gets it by default
        cpus = default_cpus(threads) if spec.devices == 1 else None

    if args.address is None:
        # Ray runs its workers at niceness 15 by default; a served model would then yield the CPU to any
        # other process, and its step times would no longer be the ones the plan was calibrated with.
        os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(
        address=args.address, include_dashboard=False, log_to_driver=args.verbose > 0, logging_level=logging.WARNING
    )
    # After ray.init, which installs its own SIGTERM handler (exit at once): ours drains first.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        application = build_application(
            spec,
            router=router,
            realization=args.realization,
            worker_options={
                "device": args.device,
                "work_conserving": args.work_conserving,
                "threads": threads,
                "cpus": cpus,
            },
            gpus=gpus,
        )
        handle = serve.run(application, name=APP_NAME, route_prefix="/", blocking=False)
        url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
        shares = ", ".join(f"{m.name} {m.steps} steps share {m.share:.2f} on device {m.device}" for m in spec.models)
        print(f"serving {args.plan} ({spec.devices} device(s); {shares})")
        for row in handle.calibration_check.remote().result():
            ratio = row["served_s"] / row["table_s"]
            print(
                f"{row['model']}: one call takes {row['served_s']:.3g} s on the whole device here, "
                f"{row['table_s']:.3g} s in the table (×{ratio:.2f})"
                + ("; the plan's delays will be off by about that factor" if abs(ratio - 1) > 0.2 else "")
            )
        pinned = f"; device process pinned to cores {cpus}" if cpus else ""
        print(f"prompt router: {router or 'none (requests must carry a category)'}; shares: {args.realization}{pinned}")
        print(
            f"listening on {url} — POST /v1/generate, POST /v1/images/generations; Ctrl-C drains and stops", flush=True
        )
        stop.wait()
        print("draining: no new requests; finishing those in flight", flush=True)
        summary = handle.drain.remote(args.drain_timeout_s).result()
        print(
            f"drained: {'all requests finished' if summary['devices_drained'] else 'timed out with requests left'}",
            flush=True,
        )
        serve.shutdown()
    finally:
        ray.shutdown()
    return 0 if summary["devices_drained"] else 1
