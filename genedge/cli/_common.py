"""Options, loading and printing shared by the planning commands (plan, simulate, compare, demo)."""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from genedge import data
from genedge.contract.bounds import (
    MAX_BATCH_SIZE,
    MAX_BUDGET_GPUS,
    MAX_COUNT,
    MAX_DELAY_S,
    MAX_DELAY_WEIGHT,
    MAX_GUIDANCE_SCALE,
    MAX_MEMORY_BYTES,
    MAX_PIXELS,
    MAX_RATE_PER_S,
    MAX_SCHEDULE_RATES,
    MAX_THREADS,
    MAX_TRACE_S,
    MIN_RATE_PER_S,
    range_problem,
)
from genedge.contract.table import CalibrationTable
from genedge.contract.table_file import read_table_file
from genedge.optimizer.inputs import problem_from_options, slo_from_options
from genedge.optimizer.model import DEFAULT_REQUESTS, Problem, Workload, workload_from_options
from genedge.optimizer.planners import PlanResult

if TYPE_CHECKING:
    from datetime import datetime

    from genedge.optimizer.model import ImagesPerRequest, TraceReplay
    from genedge.router.counting import PromptCounts

__all__ = [
    "DEFAULT_TABLE",
    "add_planning_arguments",
    "add_workload_arguments",
    "add_budget_arguments",
    "add_service_arguments",
    "add_trace_replay_arguments",
    "trace_replay_from_args",
    "batch_size_argument",
    "bounded_number",
    "budget_gpus",
    "delay_weight",
    "request_count",
    "comma_separated",
    "schedule_rates",
    "image_side",
    "seed_argument",
    "slo_seconds",
    "window_seconds",
    "table_argument",
    "load_table_with_hash",
    "prompt_counts_from_args",
    "workload_from_args",
    "derived_share_line",
    "problem_from_args",
    "parse_counts",
    "left_out_line",
    "format_plan",
    "workload_line",
    "settings_parts",
]

DEFAULT_TABLE = data.path("tables", "reference-a100.json")
#: The forms of --rates that plan a schedule of total rates.
SCHEDULE_RATES_FORMS = (
    "LO:HI:COUNT (COUNT total rates evenly spaced from LO to HI requests/s, e.g. 0.05:2:40) or a comma list of "
    "total rates (e.g. 0.1,0.5,1)"
)
#: --rates-from-trace's defaults: the window a trace's rates are counted over (s), and how many rates are planned.
DEFAULT_TRACE_WINDOW_S = 60.0
DEFAULT_TRACE_RATES = 20


def comma_separated(kind: Callable[[str], object]) -> Callable[[str], list]:
    """An argparse type for comma-separated values of ``kind``, e.g. ``10,20,30``.

    ``kind`` is a type (``int``, ``float``, ``str``) or another argparse type such as a
    :func:`bounded_number`, whose errors pass through.
    """

    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            what, example = {int: ("integers", "10,20,30"), float: ("numbers", "0.5,1")}.get(kind, ("values", "a,b"))
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what} such as {example}, but got {text!r}"
            ) from None

    return parse


def bounded_number(
    what: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict: bool = False,
    kind: type = float,
) -> Callable[[str], float]:
    """An argparse type for a number of ``kind`` within a range (:mod:`genedge.contract.bounds`).

    Its errors say what was expected; argparse puts the option's name before them.
    """

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} ({kind.__name__}), but got {text!r}") from None
        problem = range_problem(value, minimum=minimum, maximum=maximum, strict=strict, what=what)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


#: An argparse type for --seed: numpy seeds are integers >= 0.
seed_argument = bounded_number("a seed", minimum=0, kind=int)
#: An argparse type for images per pipeline call (profile's --batch-size).
batch_size_argument = bounded_number("images per call", minimum=1, maximum=MAX_BATCH_SIZE, kind=int)
#: An argparse type for an image side (--resolution).
image_side = bounded_number("pixels", minimum=1, maximum=MAX_PIXELS, kind=int)
#: An argparse type for a classifier-free guidance scale (profile's --guidance-scale).
guidance_scale_argument = bounded_number("a guidance scale", minimum=0, maximum=MAX_GUIDANCE_SCALE)
#: An argparse type for torch's CPU threads (--threads).
threads_argument = bounded_number("a thread count", minimum=1, maximum=MAX_THREADS, kind=int)
#: An argparse type for a compute budget (--budget, simulate's --budgets).
budget_gpus = bounded_number("GPUs", minimum=0, strict=True, maximum=MAX_BUDGET_GPUS)
#: An argparse type for a delay weight (--weight, simulate's --weights).
delay_weight = bounded_number("points per second", minimum=0, maximum=MAX_DELAY_WEIGHT)
#: An argparse type for a request count (--requests, simulate's --loads).
request_count = bounded_number("requests", minimum=1, maximum=MAX_COUNT, kind=int)
#: An argparse type for a latency SLO (--slo).
slo_seconds = bounded_number("seconds", minimum=0, strict=True, maximum=MAX_DELAY_S)
#: An argparse type for a planning window's length (--window-s, simulate's --window-vs-open).
window_seconds = bounded_number("seconds", minimum=0, strict=True, maximum=MAX_TRACE_S)


def table_argument(text: str) -> Path:
    """An argparse type for --table: a table file, or the name of a shipped table."""
    try:
        return data.resolve_table(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_planning_arguments(parser: argparse.ArgumentParser, *, table: bool = True) -> None:
    """Add the table (unless ``table`` is False: the command names its tables itself), model, memory, seed and
    quality-floor options."""
    if table:
        parser.add_argument(
            "--table",
            type=table_argument,
            default=DEFAULT_TABLE,
            help="calibration table: a JSON file, or the name of a shipped table (see 'genedge tables'; "
            "default: reference-a100, an A100-SXM4-40GB)",
        )
    parser.add_argument(
        "--models",
        type=comma_separated(str),
        help="comma-separated model keys to plan with (default: every model in the table)",
    )
    parser.add_argument(
        "--memory-gib",
        type=bounded_number("GiB", minimum=0, strict=True, maximum=MAX_MEMORY_BYTES / 2**30),
        help="GPU memory available to the models in GiB (default: the table device's memory)",
    )
    parser.add_argument("--seed", type=seed_argument, default=0, help="seed of every randomized planner (default: 0)")
    parser.add_argument(
        "--min-clipscore",
        type=float,
        help="quality floor θ: plans keep P(CLIPScore < θ) at most --max-shortfall in every category "
        "(a chance constraint on the fitted Gaussians; baselines ignore it and show how often "
        "they fall short)",
    )
    parser.add_argument(
        "--max-shortfall",
        type=float,
        default=0.05,
        help="ε, the largest allowed P(CLIPScore < θ) per category (default: 0.05)",
    )


def add_workload_arguments(parser: argparse.ArgumentParser, *, prompt_file: bool = True) -> None:
    """Add --workload, --requests and (with ``prompt_file``) --prompts: one way to say the workload."""
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--workload", help="requests per category, e.g. 'Basic=25,Detail=50,Imagination=14,Complex=11'")
    if prompt_file:
        load.add_argument(
            "--prompts",
            type=Path,
            help="prompt file (TSV/CSV/Parquet with a header); every row is counted: by its label under the "
            "table's category mapping (e.g. PartiPrompts.tsv by Challenge), or else by the prompt router, and the "
            "routed requests score as the router's mixture of true categories",
        )
        parser.add_argument(
            "--router",
            default="auto",
            help="prompt router for --prompts rows without a known label: a shipped router's name (see "
            "'genedge router list'), a router JSON file, 'auto' (the default: the shipped TF-IDF router of the "
            "table's mapping) or 'none' (such rows are not counted, and the count says so)",
        )
    else:
        parser.set_defaults(prompts=None)
    load.add_argument(
        "--requests",
        type=request_count,
        default=DEFAULT_REQUESTS,
        help=f"number of requests in PartiPrompts' category mix (default: {DEFAULT_REQUESTS})",
    )


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --budget and --weight, the two numbers a planning point is made of besides its workload."""
    parser.add_argument(
        "--budget",
        type=budget_gpus,
        default=1.0,
        help="compute budget R in GPU units, 1.0 = one whole GPU (default: 1.0)",
    )
    parser.add_argument(
        "--weight",
        type=delay_weight,
        default=0.05,
        help="w: CLIPScore points one second of mean delay is worth (default: 0.05)",
    )


def add_service_arguments(parser: argparse.ArgumentParser, *, schedule: bool = False) -> None:
    """Add the delay model, arrival rates, SLO, energy price and batching options (DESIGN §3.2); with ``schedule``,
    --rates also takes total rates to plan one by one, and --rates-from-trace takes them from a trace."""
    group = parser.add_argument_group("requests over time, SLOs, energy and batching")
    group.add_argument(
        "--arrivals",
        choices=("window", "open"),
        help="delay model: 'window' serves the workload's requests that all arrive at once, first in first "
        "out (the paper's model; the default); 'open' serves Poisson arrivals at the given rates, one M/D/1 "
        "queue per model (the default when --rates, --rate or --trace is given)",
    )
    rates = parser.add_mutually_exclusive_group()
    per_category = "arrival rate per category in requests/s, e.g. 'Basic=0.05,Detail=0.1' (open arrivals)"
    rates.add_argument(
        "--rates",
        help=f"{per_category}; or, for a plan schedule (a plan for every rate), {SCHEDULE_RATES_FORMS}"
        if schedule
        else per_category,
    )
    rates.add_argument(
        "--rate",
        type=bounded_number("requests per second", minimum=MIN_RATE_PER_S, maximum=MAX_RATE_PER_S),
        help="total arrival rate in requests/s, split in PartiPrompts' category mix (or --prompts' mix)",
    )
    rates.add_argument(
        "--trace",
        type=Path,
        help="arrival trace (TSV/CSV/Parquet with a header): a time_s column (seconds) and a category column, "
        "or the table mapping's label column; its rates per category are planned for",
    )
    if schedule:
        rates.add_argument(
            "--rates-from-trace",
            type=Path,
            metavar="TRACE",
            help="plan a schedule over the total rates of an arrival trace (see --trace): from its quietest to its "
            f"busiest window of --window-s seconds (default: {DEFAULT_TRACE_WINDOW_S:g}), --rate-count rates evenly "
            "spaced, split in the mix --rate splits a rate in",
        )
        group.add_argument(
            "--rate-count",
            type=bounded_number("rates", minimum=1, maximum=MAX_SCHEDULE_RATES, kind=int),
            help=f"with --rates-from-trace: how many rates to plan (default: {DEFAULT_TRACE_RATES})",
        )
    group.add_argument(
        "--window-s",
        type=window_seconds,
        help="length of the planning window in seconds: with --arrivals open, the workload's N requests per "
        "window become the rate N / T"
        + ("; with --rates-from-trace, the window a trace's rates are counted over" if schedule else ""),
    )
    group.add_argument(
        "--routing",
        choices=("deterministic", "random"),
        default="deterministic",
        help="how routing probabilities are realized: smooth weighted round robin per category (default), "
        "or an independent draw per request, whose load variance every delay model then counts",
    )
    _add_slo_arguments(group)
    group.add_argument(
        "--objective",
        choices=("utility", "quality"),
        default="utility",
        help="'utility': mean CLIPScore minus w times mean delay (minus the energy term), subject to the SLO "
        "if one is given; 'quality': the highest mean CLIPScore subject to the SLO (needs --slo; w = 0)",
    )
    group.add_argument(
        "--energy-price",
        type=float,
        default=0.0,
        help="CLIPScore points one Joule per image is worth: the utility subtracts it times the mean energy "
        "per image (needs a table with energy lines; default: 0)",
    )
    _add_request_arguments(group)


def _add_request_arguments(group: argparse._ArgumentGroup) -> None:
    """Add what one request and one call hold to the service options: --batching and --images-per-request."""
    group.add_argument(
        "--batching",
        action="store_true",
        help="let planners choose a batch size per model among the table's batch lines (static-shape "
        "batching: a batch of up to b costs the batch-b time)",
    )
    group.add_argument(
        "--images-per-request",
        type=images_per_request_argument,
        metavar="IMAGES:WEIGHT,...",
        help="with --arrivals open: how many images one request asks for, e.g. '1:0.6,2:0.2,4:0.15,8:0.05' "
        "(weights normalized) or '4'; a request's images arrive and queue together, so each model is an "
        "M^X/D/1 queue, and the rates count images (default: 1, M/D/1; not with --batching)",
    )


def images_per_request_argument(text: str) -> ImagesPerRequest:
    """An argparse type for --images-per-request (see :meth:`ImagesPerRequest.parse`)."""
    from genedge.optimizer.model import ImagesPerRequest

    try:
        return ImagesPerRequest.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_slo_arguments(group: argparse._ArgumentGroup) -> None:
    """Add --slo, what it holds (--percentile or --attainment) and its --slo-scope to the service options."""
    group.add_argument(
        "--slo",
        type=slo_seconds,
        help="latency SLO in seconds: the plan keeps the --percentile within it",
    )
    target = group.add_mutually_exclusive_group()
    target.add_argument(
        "--percentile",
        type=float,
        help="with --slo: the percentile of delay that must be within the SLO, e.g. 95 for p95 (default: 95)",
    )
    target.add_argument(
        "--attainment",
        type=float,
        help="with --slo: the smallest fraction of requests within the SLO, e.g. 0.9 (the same constraint "
        "as --percentile 90)",
    )
    group.add_argument(
        "--slo-scope",
        choices=("overall", "category"),
        default="overall",
        help="apply the SLO to all requests together (default) or to each category on its own",
    )


def schedule_rates(text: str) -> list[float] | None:
    """The total rates of ``--rates LO:HI:COUNT`` or ``--rates R1,R2,...`` (a plan schedule), or None where
    ``text`` gives rates per category (``CATEGORY=RATE,...``, read by :func:`parse_counts`).

    Raises:
        ValueError: naming --rates and the forms it takes: a value of neither form, or a range that
            :func:`genedge.optimizer.analysis.rate_grid` refuses.
    """
    from genedge.optimizer.analysis import rate_grid

    if "=" in text:
        return None
    expected = (
        f"--rates: expected {SCHEDULE_RATES_FORMS}, or rates per category such as 'Basic=0.05,Detail=0.1', "
        f"but got {text!r}"
    )
    parts = [part.strip() for part in text.split(":")]
    try:
        if len(parts) == 3:
            return rate_grid(float(parts[0]), float(parts[1]), int(parts[2]))
        if len(parts) == 1:
            return [float(part) for part in text.split(",")]
    except ValueError as err:
        raise ValueError(f"{expected}: {err}" if "Expected" in str(err) else expected) from None
    raise ValueError(expected)


def prompt_counts_from_args(args: argparse.Namespace, table: CalibrationTable) -> PromptCounts | None:
    """The --prompts file's rows per category (labelled or routed by --router), or None without --prompts."""
    if getattr(args, "prompts", None) is None:
        return None
    from tqdm import tqdm

    from genedge.contract.prompts import read_prompt_file
    from genedge.router.choice import count_routed

    prompts = read_prompt_file(args.prompts)
    with tqdm(total=len(prompts.rows), unit="prompt", desc="routing", disable=None, file=sys.stderr) as bar:
        return count_routed(prompts, table.category_mapping, getattr(args, "router", "auto"), bar.update)


def workload_from_args(
    args: argparse.Namespace, table: CalibrationTable, prompt_counts: PromptCounts | None = None
) -> Workload:
    """The workload of --workload, --prompts or --requests, or, where the command takes them, --rates, --rate
    or --trace (see :func:`genedge.optimizer.model.workload_from_options`).

    ``prompt_counts`` is :func:`prompt_counts_from_args`' result, where the caller has it already.
    """
    if prompt_counts is None:
        prompt_counts = prompt_counts_from_args(args, table)
    rates = None
    if getattr(args, "rates", None) is not None:
        rates = parse_counts(args.rates, "--rates", minimum_total=MIN_RATE_PER_S)
    elif getattr(args, "trace", None) is not None:
        from genedge.optimizer.model import read_trace

        # A trace without categories (GenTD26's) draws them, seeded by --seed.
        rates = read_trace(
            args.trace, mapping=table.category_mapping, categories=table.categories, rng=args.seed
        ).rates()
    return workload_from_options(
        table.categories,
        counts=None if args.workload is None else parse_counts(args.workload, "--workload", whole=True),
        prompts=None if prompt_counts is None else prompt_counts.workload(),
        requests=args.requests,
        rates=rates,
        rate=getattr(args, "rate", None),
        arrivals=getattr(args, "arrivals", None),
        window_s=getattr(args, "window_s", None),
    )


def load_table_with_hash(path: Path) -> tuple[CalibrationTable, str]:
    """Load and validate a table; also return the sha256 of the bytes it was read from, recorded in plans."""
    table, data = read_table_file(path)
    return table, hashlib.sha256(data).hexdigest()


def parse_counts(text: str, option: str, *, whole: bool = False, minimum_total: float = 0.0) -> dict[str, float]:
    """Parse 'CATEGORY=COUNT,...' into a dict, naming ``option`` in errors.

    Args:
        text: the option's value.
        option: the option's name, for errors.
        whole: require whole numbers (request counts) rather than any number >= 0 (a mix's weights).
        minimum_total: the least the values may sum to (e.g. :data:`~genedge.contract.bounds.MIN_RATE_PER_S`
            for rates, which divide downstream).

    Raises:
        ValueError: an empty value, an item without '=', an empty or repeated category, a count that is
            not a number in [0, MAX_COUNT] (or not whole, with ``whole``), or a total below ``minimum_total``.
    """
    if not text.strip():
        raise ValueError(f"{option}: expected CATEGORY=COUNT items such as 'Basic=25,Detail=50', but got nothing")
    counts: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name:
            raise ValueError(f"{option}: expected CATEGORY=COUNT items, but got {item!r}")
        if name in counts:
            raise ValueError(f"{option}: category {name!r} is given twice")
        try:
            count = float(value)
        except ValueError as err:
            raise ValueError(f"{option}: expected a number for {name!r}, but got {value!r}") from err
        if not (math.isfinite(count) and count >= 0) or (whole and not count.is_integer()):
            kind = "a whole number of requests" if whole else "a number >= 0"
            raise ValueError(f"{option}: expected {kind} for {name!r}, but got {value!r}")
        problem = range_problem(count, maximum=MAX_COUNT)
        if problem is not None:
            raise ValueError(f"{option}: {name!r}: {problem}")
        counts[name] = count
    if sum(counts.values()) < minimum_total:
        raise ValueError(
            f"{option}: expected values summing to at least {minimum_total:g}, but they sum to {sum(counts.values()):g}"
        )
    return counts


def derived_share_line(table: CalibrationTable) -> str:
    """One line saying what share of the table's numbers are derived rather than measured."""
    counts = table.source_counts()
    total = sum(counts.values())
    return (
        f"table: {table.device['name']} — {100 * counts['derived'] / total:.0f}% of its {total} numbers are "
        f"derived by rule, {100 * counts['published'] / total:.0f}% published by others, "
        f"{100 * counts['measured'] / total:.0f}% measured by genedge"
    )


def problem_from_args(
    args: argparse.Namespace, table: CalibrationTable, sha256: str, workload: Workload, budget: float, weight: float
) -> Problem:
    """The problem of the shared options (models, memory, quality floor, and where the command takes them the
    delay model, SLO, energy price and batching; see :func:`genedge.optimizer.inputs.problem_from_options`)."""
    service = {}
    if hasattr(args, "arrivals"):
        service = {
            "arrivals": args.arrivals,
            "routing": args.routing,
            "slo": slo_from_options(
                args.slo, percentile=args.percentile, attainment=args.attainment, scope=args.slo_scope
            ),
            "objective": args.objective,
            "energy_price": args.energy_price,
            "batching": args.batching,
        }
        if args.images_per_request is not None:
            service["images"] = args.images_per_request
    return problem_from_options(
        table,
        workload,
        budget=budget,
        weight=weight,
        models=args.models,
        memory_gib=args.memory_gib,
        table_sha256=sha256,
        min_clipscore=args.min_clipscore,
        max_shortfall=args.max_shortfall,
        **service,
    )


def workload_line(problem: Problem) -> str:
    """One line stating the demand, the delay model and the objective the plans are made for."""
    total = problem.n_requests
    demand = ", ".join(f"{c} {n:.4g}" for c, n in zip(problem.categories, problem.counts))
    return "; ".join([f"workload: {total:.4g} {problem.demand_unit} — {demand}", *settings_parts(problem)])


def settings_parts(problem: Problem) -> list[str]:
    """What a plan is made under besides its demand: delay model, routing, budget, weight, SLO and the rest."""
    parts = [problem.delay.description, f"{problem.realization} routing"]
    parts.append(f"budget {problem.budget:g} GPU")
    parts.append(f"w = {problem.weight:g} points/s")
    if problem.slo is not None:
        parts.append(f"SLO {problem.slo.describe()}")
    if problem.energy_price > 0:
        parts.append(f"energy {problem.energy_price:g} points/J")
    if problem.batch_sizes is not None:
        parts.append("batching")
    if not problem.images.single:
        parts.append(f"requests of {problem.images.describe()}")
    if problem.min_clipscore is not None:
        parts.append(f"floor P(CLIPScore < {problem.min_clipscore:g}) <= {problem.max_shortfall:g} per category")
    return parts


def left_out_line(problem: Problem) -> str:
    """One line naming the models left out for device memory and why; empty when none was."""
    reasons = problem.left_out_reasons()
    if not reasons:
        return ""
    return "left out (too big for the device memory): " + "; ".join(f"{k} {why}" for k, why in reasons.items())


def format_plan(result: PlanResult) -> str:
    """The routing table, steps, shares and loads of a plan, for the models it deploys."""
    plan = result.plan
    used = [i for i, deployed in enumerate(result.deployed) if deployed]
    width = max(len(plan.models[i]) for i in used)
    took = "" if result.plan_time_s is None else f", {result.plan_time_s * 1000:.0f} ms"
    lines = [f"plan ({result.method}{took}):"]
    header = "  category       " + "  ".join(f"{plan.models[i]:>{width}}" for i in used)
    lines.append(header)
    for c, category in enumerate(plan.categories):
        lines.append(f"  {category:<14} " + "  ".join(f"{plan.routing_matrix[c, i]:>{width}.2f}" for i in used))
    lines.append("  steps          " + "  ".join(f"{plan.steps_per_model[i]:>{width}d}" for i in used))
    lines.append("  GPU share      " + "  ".join(f"{plan.share_vector[i]:>{width}.2f}" for i in used))
    if plan.batch_per_model and max(plan.batch_per_model) > 1:
        lines.append("  max batch      " + "  ".join(f"{plan.batch_per_model[i]:>{width}d}" for i in used))
    if result.utilization is not None:
        lines.append("  requests/s     " + "  ".join(f"{result.loads[i]:>{width}.3f}" for i in used))
        lines.append("  load ρ         " + "  ".join(f"{result.utilization[i]:>{width}.2f}" for i in used))
    else:
        lines.append("  requests       " + "  ".join(f"{result.loads[i]:>{width}.1f}" for i in used))
    if result.mg1_mean_delay_s is not None:
        lines.append(
            f"  mean delay     {result.mean_delay_s:.2f} s as M/D/1; {result.mg1_mean_delay_s:.2f} s as M/G/1 with the "
            f"table's spread of per-image latency"
        )
    unused = [m for i, m in enumerate(plan.models) if i not in used]
    if unused:
        lines.append(f"  not deployed: {', '.join(unused)}")
    if not result.success:
        lines.append(f"  stopped early: {result.message}")
    return "\n".join(lines)


#: The replay options (argparse's names → the flags); each defaults to None, so TraceReplay's defaults apply.
_REPLAY_OPTIONS = {
    "time_scale": "--time-scale",
    "rate_scale": "--rate-scale",
    "trace_start": "--trace-start",
    "trace_end": "--trace-end",
    "trace_tasks": "--trace-tasks",
    "trace_mix": "--trace-mix",
    "trace_images": "--trace-images",
}
#: The most a trace's time or rate may be scaled by (either way): past it a replay is no longer the trace.
_MAX_TRACE_SCALE = 1e6


def _trace_instant(text: str) -> float | datetime:
    """--trace-start/--trace-end: seconds on the trace's clock, or an ISO-8601 datetime on the file's clock."""
    from datetime import datetime

    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds on the trace's clock or an ISO-8601 datetime such as '2024-12-03 00:00:00', but got "
            f"{text!r}"
        ) from None


def add_trace_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of :class:`genedge.optimizer.model.TraceReplay`: how --trace is replayed."""
    from genedge.optimizer.model import CATEGORY_RULE, RATE_SCALE_RULE

    group = parser.add_argument_group(
        "replaying --trace",
        "which part of the trace is replayed, how fast and how busy, and the categories of a trace without them. "
        "GenTD26's lora_request_trace.csv (gmt_create, predict_type, num_images_per_prompt, num_inference_steps) "
        "is read as published; its 25 rows without images or steps are left out (with a logged count)",
    )
    scale = {"minimum": 1 / _MAX_TRACE_SCALE, "maximum": _MAX_TRACE_SCALE}
    group.add_argument(
        "--time-scale",
        type=bounded_number("trace seconds per replayed second", **scale),
        help="trace seconds per replayed second: 60 replays one trace hour in one minute, so every rate is 60 "
        "times the trace's (default: 1)",
    )
    group.add_argument(
        "--rate-scale",
        type=bounded_number("requests per recorded request", **scale),
        help="r, requests per recorded request, keeping the trace's shape (default: 1), with --seed: "
        + RATE_SCALE_RULE,
    )
    group.add_argument(
        "--trace-start",
        type=_trace_instant,
        metavar="WHEN",
        help="replay from here: seconds on the trace's clock, or a datetime on the file's clock for a trace of "
        "datetimes (e.g. '2024-12-03'); it becomes time 0 (default: the trace's start)",
    )
    group.add_argument(
        "--trace-end",
        type=_trace_instant,
        metavar="WHEN",
        help="replay up to here, exclusive, in the same terms; the replay's window ends here (default: at the last "
        "request)",
    )
    group.add_argument(
        "--trace-tasks",
        metavar="TASKS",
        help="predict_type values replayed, comma-separated, or 'all' (default: TXT_2_IMG; GenTD26 also has "
        "IMG_2_IMG and INPAINTING, which a text-to-image service does not serve); a trace without the column "
        "replays every row",
    )
    group.add_argument(
        "--trace-mix",
        metavar="MIX",
        help="the mix a trace without categories (GenTD26's) draws them from, e.g. 'Basic=1,Detail=3', with "
        "--seed: " + CATEGORY_RULE,
    )
    group.add_argument(
        "--trace-images",
        choices=("expand", "one"),
        help="a request of k images (num_images_per_prompt): 'expand' replays it as k one-image requests at its "
        "time, as the server serves a request for n images (n one-image generations at once; the default); "
        "'one' as one request",
    )


def trace_replay_from_args(args: argparse.Namespace) -> TraceReplay | None:
    """The :class:`~genedge.optimizer.model.TraceReplay` of :func:`add_trace_replay_arguments`' options (its own
    defaults for those not given), or None without --trace.

    Raises:
        ValueError: a replay option without --trace, or options the replay refuses (naming them).
    """
    from genedge.optimizer.model import TraceReplay

    given = {name: value for name, value in vars(args).items() if name in _REPLAY_OPTIONS and value is not None}
    if args.trace is None:
        if given:
            raise ValueError(f"{_REPLAY_OPTIONS[next(iter(given))]} says how --trace is replayed: give --trace")
        return None
    fields: dict[str, object] = {
        "start": given.get("trace_start"),
        "end": given.get("trace_end"),
        **{name: given[name] for name in ("time_scale", "rate_scale") if name in given},
    }
    if "trace_tasks" in given:
        tasks = given["trace_tasks"].strip()
        fields["tasks"] = None if tasks.lower() == "all" else tuple(t.strip() for t in tasks.split(",") if t.strip())
    if "trace_mix" in given:
        fields["mix"] = parse_counts(given["trace_mix"], "--trace-mix")
    if "trace_images" in given:
        fields["images"] = given["trace_images"]
    try:
        return TraceReplay(**fields)
    except ValueError as err:
        raise ValueError(f"--trace replay options: {err}") from None
