"""``genedge loadtest URL``: send open-loop requests to a served plan and compare what it measures with
what the plan predicts at the demand offered (flags as ``vllm bench serve`` names them)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from genedge.cli._common import add_trace_replay_arguments, seed_argument, slo_seconds, trace_replay_from_args

if TYPE_CHECKING:
    from genedge.serve.loadtest_config import LoadConfig

__all__ = ["add_parser"]


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected requests per second or 'inf', but got {text!r}") from None
    if not (value > 0):
        raise argparse.ArgumentTypeError(f"expected requests per second > 0 or 'inf', but got {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``genedge loadtest``."""
    parser = subparsers.add_parser(
        "loadtest",
        help="measure a served plan with open-loop requests, beside its prediction",
        description=(
            "Send open-loop requests to a served plan ('genedge serve PLAN.json') and compare the measured "
            "response times, SLO attainment, throughput, CLIPScore and realized GPU shares with the plan's "
            "prediction at the demand actually offered. Requests go at their scheduled times whatever the "
            "answers so far; a 503 is recorded as rejected, not retried. Records are written as they complete, "
            "so rerunning the same command into the same --result-dir resumes a killed test."
        ),
    )
    _add_traffic_options(parser)
    add_trace_replay_arguments(parser)
    _add_result_options(parser)
    parser.set_defaults(func=run)


def _add_traffic_options(parser: argparse.ArgumentParser) -> None:
    """What is sent, where and how fast."""
    parser.add_argument("url", metavar="URL", help="the server's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--prompts",
        type=Path,
        required=True,
        help="prompt file (TSV/CSV/Parquet) with a Prompt column; a label column of the plan's category mapping "
        "(e.g. PartiPrompts' Challenge) gives each request's category",
    )
    parser.add_argument(
        "--request-rate",
        type=_rate,
        help="requests per second, or 'inf' to send every request at once (default: inf)",
    )
    parser.add_argument(
        "--burstiness",
        type=float,
        default=1.0,
        help="gamma shape of the gaps between requests: 1 is Poisson (the default), < 1 burstier, > 1 more regular",
    )
    parser.add_argument("--num-prompts", type=int, help="number of requests (default: 1000, or every row of --trace)")
    parser.add_argument(
        "--max-concurrency",
        type=int,
        help="most requests in flight; the others wait for a slot (default: no cap, a pure open loop)",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        help="arrival trace (TSV/CSV/Parquet): time_s (or timestamp) and category (or the mapping's label) "
        "columns, or GenTD26's lora_request_trace.csv as published (see 'replaying --trace'); replaces "
        "--request-rate and --burstiness. genedge simulate --trace with the same replay options and --seed "
        "replays the same arrivals and categories",
    )
    parser.add_argument(
        "--seed",
        type=seed_argument,
        default=0,
        help="seed of the arrival times (a trace's rate scale and drawn categories), the prompt order and image "
        "seeds (default: 0)",
    )
    parser.add_argument(
        "--endpoint",
        choices=("genedge", "openai"),
        default="genedge",
        help="'genedge': POST /v1/generate (the default); 'openai': POST /v1/images/generations",
    )
    parser.add_argument(
        "--no-categories",
        action="store_true",
        help="send no category with the requests: the server's prompt router places each one",
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        help="the server's API key, sent as 'Authorization: Bearer KEY' (default: the environment variable "
        "GENEDGE_API_KEY, if set; none: no key is sent). It is not written to the result files",
    )
    parser.add_argument(
        "--timeout-s", type=float, default=600.0, help="the most one request may take, in seconds (default: 600)"
    )


def _add_result_options(parser: argparse.ArgumentParser) -> None:
    """What is kept, scored and drawn."""
    parser.add_argument(
        "--save-result",
        action="store_true",
        help="keep the records and a result JSON (in --result-dir, or genedge-loadtest-<settings hash> here)",
    )
    parser.add_argument(
        "--result-dir",
        type=Path,
        help="directory of the records (implies --save-result); the same command into it resumes a killed test",
    )
    parser.add_argument("--save-images", action="store_true", help="keep every image as a PNG in the result directory")
    parser.add_argument(
        "--slo",
        type=slo_seconds,
        help="latency SLO in seconds for the attainment figures (default: the plan's, if any)",
    )
    parser.add_argument(
        "--clip-score",
        action="store_true",
        help="after the run, score each image against its prompt with CLIP (the table's convention by default; "
        "needs genedge[profile])",
    )
    parser.add_argument("--clip-backbone", help="open_clip backbone for --clip-score (default: the table's)")
    parser.add_argument(
        "--clip-pretrained",
        help="open_clip pretrained tag or weights file for --clip-score, 'none' for random weights (default: the "
        "table's)",
    )
    parser.add_argument("--clip-device", default="cpu", help="torch device for --clip-score (default: cpu)")
    parser.add_argument("--figure", type=Path, help="write a figure of measured vs predicted response times here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _pace(config: LoadConfig) -> str:
    """How fast the requests go: a trace's scales, or the request rate."""
    replay = config.trace_replay
    if replay is not None:
        return f"trace, time scale {replay.time_scale:g}, rate scale {replay.rate_scale:g}"
    return f"{config.request_rate:g} requests/s"


def run(args: argparse.Namespace) -> int:
    import tempfile

    from tqdm import tqdm

    from genedge.contract.files import check_not_input
    from genedge.serve.access import read_api_key
    from genedge.serve.loadtest import run_loadtest, score_images
    from genedge.serve.loadtest_config import LoadConfig
    from genedge.serve.loadtest_layout import default_result_dir, read_records, write_result
    from genedge.serve.measured import compare_run, comparison_figure, comparison_to_dict, format_comparison

    check_not_input(
        {"--result-dir": args.result_dir, "--figure": args.figure}, {"--prompts": args.prompts, "--trace": args.trace}
    )
    if args.trace is not None and args.request_rate is not None:
        raise ValueError("--trace gives the arrival times: leave out --request-rate")
    config = LoadConfig(
        url=args.url,
        prompts=args.prompts,
        request_rate=math.inf if args.request_rate is None else args.request_rate,
        burstiness=args.burstiness,
        num_prompts=args.num_prompts,
        max_concurrency=args.max_concurrency,
        trace=args.trace,
        trace_replay=trace_replay_from_args(args),
        seed=args.seed,
        endpoint=args.endpoint,
        send_categories=not args.no_categories,
        timeout_s=args.timeout_s,
        save_images=args.save_images,
        api_key=read_api_key(args.api_key),
    )
    keep = args.save_result or args.result_dir is not None or args.save_images
    scratch = None
    if keep:
        result_dir = args.result_dir if args.result_dir is not None else default_result_dir(config)
    else:
        scratch = tempfile.TemporaryDirectory(prefix="genedge-loadtest-")
        result_dir = Path(scratch.name)
    try:
        bar = tqdm(total=0, unit="req", disable=True if args.no_progress else None, file=sys.stderr)

        def started(schedule, to_send: int, skipped: int) -> None:
            rate = _pace(config)
            shape = "" if args.trace or config.burstiness == 1 else f", burstiness {config.burstiness:g}"
            print(
                f"load test: {len(schedule.requests)} requests to {config.base_url} ({rate}{shape}), seed {config.seed}"
            )
            if skipped:
                print(f"resuming {result_dir}: {skipped} already recorded, {to_send} to send")
            sys.stdout.flush()
            bar.reset(total=to_send)

        with bar:
            outcome = run_loadtest(
                config, result_dir, keep_images=args.clip_score, progress=bar.update, on_start=started
            )
        if args.clip_score:
            pretrained = args.clip_pretrained
            scored = score_images(
                result_dir,
                backbone=args.clip_backbone,
                pretrained="table" if pretrained is None else (None if pretrained.lower() == "none" else pretrained),
                device=args.clip_device,
                keep_images=args.save_images,
            )
            print(f"scored {scored} images with CLIP")
        comparison = compare_run(result_dir, slo_s=args.slo)
        print(format_comparison(comparison))
        if args.figure is not None:
            print(f"wrote {comparison_figure(comparison, read_records(result_dir), args.figure)}")
        if keep:
            path = write_result(result_dir, comparison_to_dict(comparison))
            print(f"wrote {path} (records under {outcome.result_dir})")
    finally:
        if scratch is not None:
            scratch.cleanup()
    return 0
