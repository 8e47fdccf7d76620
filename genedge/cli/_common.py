"""Options, loading and printing shared by the planning commands (plan, simulate, compare, demo)."""

from __future__ import annotations

import argparse
import hashlib
import math
from collections.abc import Callable
from pathlib import Path

from genedge import data
from genedge.calibrate.table import CalibrationTable, load_table
from genedge.optimizer.problem import Problem
from genedge.optimizer.result import PlanResult
from genedge.optimizer.workload import Workload

__all__ = [
    "DEFAULT_TABLE",
    "DEFAULT_MIX",
    "DEFAULT_REQUESTS",
    "add_planning_arguments",
    "add_workload_arguments",
    "add_budget_arguments",
    "comma_separated",
    "default_mix",
    "load_table_with_hash",
    "workload_from_args",
    "derived_share_line",
    "problem_from_args",
    "parse_counts",
    "left_out_line",
    "format_plan",
]

DEFAULT_TABLE = data.path("tables", "reference-a100.json")
# PartiPrompts' prompts per category of the paper's mapping (DESIGN §2.1).
DEFAULT_MIX = {"Basic": 272, "Detail": 544, "Imagination": 150, "Complex": 113}
DEFAULT_REQUESTS = 100


def comma_separated(kind: type) -> Callable[[str], list]:
    """An argparse type for comma-separated values of ``kind``, e.g. ``10,20,30``."""

    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            what, example = {int: ("integers", "10,20,30"), float: ("numbers", "0.5,1")}.get(kind, ("values", "a,b"))
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what} such as {example}, but got {text!r}"
            ) from None

    return parse


def add_planning_arguments(parser: argparse.ArgumentParser, *, table: bool = True) -> None:
    """Add the table (unless ``table`` is False: the command names its tables itself), model, memory, seed and
    quality-floor options."""
    if table:
        parser.add_argument(
            "--table",
            type=Path,
            default=DEFAULT_TABLE,
            help="calibration table JSON (default: the shipped reference table, A100-SXM4-40GB)",
        )
    parser.add_argument(
        "--models",
        type=comma_separated(str),
        help="comma-separated model keys to plan with (default: every model in the table)",
    )
    parser.add_argument(
        "--memory-gib",
        type=float,
        help="GPU memory available to the models in GiB (default: the table device's memory)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every randomized planner (default: 0)")
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
            help="prompt file (TSV/CSV with a header); its rows are counted per category using the "
            "table's category mapping (e.g. PartiPrompts.tsv by Challenge)",
        )
    else:
        parser.set_defaults(prompts=None)
    load.add_argument(
        "--requests",
        type=int,
        default=DEFAULT_REQUESTS,
        help=f"number of requests in PartiPrompts' category mix (default: {DEFAULT_REQUESTS})",
    )


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --budget and --weight, the two numbers a planning point is made of besides its workload."""
    parser.add_argument(
        "--budget", type=float, default=1.0, help="compute budget R in GPU units, 1.0 = one whole GPU (default: 1.0)"
    )
    parser.add_argument(
        "--weight",
        type=float,
        default=0.05,
        help="w: CLIPScore points one second of mean delay is worth (default: 0.05)",
    )


def default_mix(table: CalibrationTable) -> dict[str, float]:
    """PartiPrompts' category proportions over the table's categories (1 each for others)."""
    return {c: DEFAULT_MIX.get(c, 1) for c in table.categories}


def load_table_with_hash(path: Path) -> tuple[CalibrationTable, str]:
    """Load and validate a table; also return the sha256 of its bytes, recorded in plans."""
    table = load_table(path)
    return table, hashlib.sha256(Path(path).read_bytes()).hexdigest()


def workload_from_args(args: argparse.Namespace, table: CalibrationTable) -> Workload:
    """The workload from --workload, --prompts or --requests (one of them; --requests by default)."""
    if args.workload is not None:
        return Workload.from_counts(parse_counts(args.workload, "--workload", whole=True))
    if args.prompts is not None:
        return Workload.from_prompt_file(args.prompts, table.category_mapping)
    return Workload.from_mix(default_mix(table), args.requests)


def parse_counts(text: str, option: str, *, whole: bool = False) -> dict[str, float]:
    """Parse 'CATEGORY=COUNT,...' into a dict, naming ``option`` in errors.

    Args:
        text: the option's value.
        option: the option's name, for errors.
        whole: require whole numbers (request counts) rather than any number >= 0 (a mix's weights).

    Raises:
        ValueError: an empty value, an item without '=', an empty or repeated category, or a count that is
            not a number >= 0 (or not whole, with ``whole``).
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
        counts[name] = count
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
    """Build a problem with the shared options (models, memory, quality floor)."""
    memory = None if args.memory_gib is None else int(args.memory_gib * 2**30)
    return Problem.from_table(
        table,
        workload,
        budget=budget,
        weight=weight,
        models=args.models,
        device_memory_bytes=memory,
        table_sha256=sha256,
        min_clipscore=args.min_clipscore,
        max_shortfall=args.max_shortfall,
    )


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
    lines.append("  requests       " + "  ".join(f"{result.loads[i]:>{width}.1f}" for i in used))
    unused = [m for i, m in enumerate(plan.models) if i not in used]
    if unused:
        lines.append(f"  not deployed: {', '.join(unused)}")
    if not result.success:
        lines.append(f"  stopped early: {result.message}")
    return "\n".join(lines)
