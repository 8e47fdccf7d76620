"""``genedge plan``: plan routing, steps and shares from a calibration table and a workload."""

from __future__ import annotations

import argparse
from pathlib import Path

from genedge.cli._common import (
    DEFAULT_REQUESTS,
    add_budget_arguments,
    add_planning_arguments,
    add_workload_arguments,
    comma_separated,
    derived_share_line,
    format_plan,
    left_out_line,
    load_table_with_hash,
    problem_from_args,
    workload_from_args,
)

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="plan which model serves which prompt category, with how many steps and how much GPU",
        description=(
            "Plan an edge deployment: route each prompt category to models, choose denoising steps and "
            "compute shares to maximize mean CLIPScore minus w times mean delay. Prints the plan and the "
            "same figures for the paper's method and its baselines on the same inputs. With no options it "
            f"plans {DEFAULT_REQUESTS} requests in PartiPrompts' category proportions on the shipped "
            "reference table, one GPU, w = 0.05 points per second."
        ),
    )
    add_planning_arguments(parser)
    add_workload_arguments(parser)
    add_budget_arguments(parser)
    parser.add_argument(
        "--method", default="genedge", help="the method whose plan is written (default: genedge; see --compare)"
    )
    parser.add_argument(
        "--compare",
        type=comma_separated(str),
        help="comma-separated methods to compare against (default: all: paper, direct-assignment, "
        "random-assignment, equal-allocation, optimal-step, exact)",
    )
    parser.add_argument("--out", type=Path, help="write the plan JSON here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from genedge.optimizer import METHODS, run_methods
    from genedge.optimizer.plan_file import plan_to_dict, save_plan

    table, sha = load_table_with_hash(args.table)
    workload = workload_from_args(args, table)
    problem = problem_from_args(args, table, sha, workload, args.budget, args.weight)
    names = [args.method] + [m for m in (args.compare or METHODS) if m != args.method]
    results = run_methods(problem, names, seed=args.seed)
    chosen = results[args.method]
    print(derived_share_line(table))
    print(
        f"workload: {int(problem.n_requests)} requests — "
        + ", ".join(f"{c} {n:g}" for c, n in zip(problem.categories, problem.counts))
        + f"; budget {args.budget:g} GPU; w = {args.weight:g} points/s"
        + (
            ""
            if args.min_clipscore is None
            else f"; floor P(CLIPScore < {args.min_clipscore:g}) <= {args.max_shortfall:g} per category"
        )
    )
    left_out = left_out_line(problem)
    if left_out:
        print(left_out)
    print()
    print(format_plan(chosen))
    print()
    print(_format_comparison(results, args.method))
    if args.out:
        document = plan_to_dict(
            problem,
            chosen,
            others=results,
            inputs={"table": str(args.table), "table_source_counts": table.source_counts()},
        )
        print(f"\nwrote {save_plan(document, args.out)}")
    return 0


def _format_comparison(results, chosen_name: str) -> str:
    from genedge.optimizer.result import relative_change

    chosen = results[chosen_name]
    floor = chosen.shortfall is not None
    lines = [
        f"{'method':<18} {'CLIPScore':>9} {'mean delay s':>12} {'p95 delay s':>11} {'utility':>8} "
        f"{'vs ' + chosen_name:>12} {'plan ms':>8}" + (f" {'worst P(<floor)':>15}" if floor else "")
    ]
    for name, r in results.items():
        change = 100 * relative_change(r.utility, chosen.utility)
        took = "" if r.plan_time_s is None else f"{r.plan_time_s * 1000:.0f}"
        risk = f" {r.shortfall.max():>15.3f}" if floor else ""
        note = f"  (optimum ≤ {r.upper_bound:.3f})" if r.upper_bound is not None else ""
        lines.append(
            f"{name:<18} {r.mean_quality:>9.2f} {r.mean_delay_s:>12.2f} {r.p95_delay_s:>11.2f} "
            f"{r.utility:>8.3f} {change:>+11.2f}% {took:>8}{risk}{note}"
        )
    return "\n".join(lines)
