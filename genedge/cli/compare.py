"""``genedge compare OLD NEW``: what changed between two calibration tables, and which plan decisions it moves.

The table differences come from :func:`genedge.calibrate.compare_tables`, the plan differences from
:func:`genedge.optimizer.compare_plans`; this command composes the two (calibrate does not import the
optimizer) and prints them.
"""

from __future__ import annotations

import argparse

from genedge.cli._common import (
    add_budget_arguments,
    add_planning_arguments,
    add_service_arguments,
    add_workload_arguments,
    left_out_line,
    load_table_with_hash,
    problem_from_args,
    table_argument,
    workload_from_args,
    workload_line,
)

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``genedge compare``."""
    parser = subparsers.add_parser(
        "compare",
        help="per-cell differences between two calibration tables and the plan decisions they change",
        description=(
            "Compare two calibration tables (e.g. an old GPU and a new one): quality cells by Welch's t-test, "
            "latency coefficients with their standard errors, memory peaks; then plan on each table with the "
            "same workload and planning options as 'genedge plan' takes, and list the routing, steps and share "
            "decisions that change."
        ),
    )
    parser.add_argument(
        "old", metavar="OLD", type=table_argument, help="the reference table (a JSON file or a shipped table's name)"
    )
    parser.add_argument(
        "new", metavar="NEW", type=table_argument, help="the table to compare with it (a file or a shipped name)"
    )
    add_planning_arguments(parser, table=False)
    add_workload_arguments(parser)
    add_budget_arguments(parser)
    add_service_arguments(parser)
    parser.add_argument("--method", default="genedge", help="the planner whose plans are compared (default: genedge)")
    parser.add_argument("--alpha", type=float, default=0.05, help="mark changes with p below this (default 0.05)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the table differences, then the plans' differences."""
    from genedge.calibrate import compare_tables, comparison_text
    from genedge.optimizer import compare_plans

    (old, old_sha), (new, new_sha) = load_table_with_hash(args.old), load_table_with_hash(args.new)
    workload = workload_from_args(args, old)
    # Build both problems and plan before printing anything, so bad options fail with nothing half-printed.
    problems = [
        problem_from_args(args, table, sha, workload, args.budget, args.weight)
        for table, sha in ((old, old_sha), (new, new_sha))
    ]
    plans = compare_plans(*problems, method=args.method, rng=args.seed)
    tables = comparison_text(compare_tables(old, new), alpha=args.alpha)

    print(tables)
    problem = problems[0]
    counts = ", ".join(f"{c}={n:g}" for c, n in zip(problem.categories, problem.counts))
    print(f"\nplans on the same workload {counts} ({args.method}, seed {args.seed}):\n  {workload_line(problem)}")
    for path, each in zip((args.old, args.new), problems):
        line = left_out_line(each)
        if line:
            print(f"  {path}: {line}")
    for label, attr in (
        ("utility", "utility"),
        ("mean quality", "mean_quality"),
        ("mean delay s", "mean_delay_s"),
        ("p95 delay s", "p95_delay_s"),
        ("p99 delay s", "p99_delay_s"),
    ):
        print(f"  {label:<14}{getattr(plans.old, attr):>10.3f} -> {getattr(plans.new, attr):.3f}")
    if not plans.changes:
        print("  no plan decision changes")
    for change in plans.changes:
        fmt = "d" if change.decision in ("steps", "batch") else ".3f"
        print(f"  {change.decision:<8}{change.subject:<30}{_value(change.old, fmt)} -> {_value(change.new, fmt)}")
    return 0


def _value(value: float | None, fmt: str) -> str:
    return "not deployed" if value is None else format(value, fmt)
