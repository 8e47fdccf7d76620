"""``genedge compare OLD NEW``: what changed between two calibration tables, and which plan decisions it moves.

The table differences come from :mod:`genedge.calibrate.compare`; the plan
differences come from running the planner on each table with the same workload,
which only this layer may do (calibrate does not import the optimizer).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genedge.cli._common import add_budget_arguments, add_workload_arguments, workload_from_args

__all__ = ["PlanChange", "add_parser", "plan_changes", "run"]

logger = logging.getLogger(__name__)

#: Routing probabilities and shares that move by less than this are reported as unchanged.
DECISION_TOLERANCE = 0.01


@dataclass(frozen=True)
class PlanChange:
    """One plan decision that differs between the plans of two tables.

    Attributes:
        decision: ``"routing"``, ``"steps"`` or ``"share"``.
        subject: ``"category -> model"`` for routing, the model key otherwise.
        old, new: the decision under each table (None where a model is in one table only).
    """

    decision: str
    subject: str
    old: float | None
    new: float | None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``genedge compare``."""
    parser = subparsers.add_parser(
        "compare",
        help="per-cell differences between two calibration tables and the plan decisions they change",
        description=(
            "Compare two calibration tables (e.g. an old GPU and a new one): quality cells by Welch's t-test, "
            "latency coefficients with their standard errors, memory peaks; then plan on each table with the "
            "same workload and list the routing, steps and share decisions that change."
        ),
    )
    parser.add_argument("old", metavar="OLD", help="the reference table (JSON)")
    parser.add_argument("new", metavar="NEW", help="the table to compare with it (JSON)")
    add_workload_arguments(parser, prompt_file=False)
    add_budget_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="planner seed (default 0)")
    parser.add_argument("--alpha", type=float, default=0.05, help="mark changes with p below this (default 0.05)")
    parser.set_defaults(func=run)


def plan_changes(old: Any, new: Any, *, tolerance: float = DECISION_TOLERANCE) -> list[PlanChange]:
    """The routing, steps and share decisions that differ between two plans.

    Args:
        old, new: :class:`genedge.optimizer.Plan` objects for the same workload.
        tolerance: routing probabilities and shares closer than this count as equal; a model
            whose share is below it in both plans is idle, and its steps are not compared.
    """
    changes = []
    for category in dict.fromkeys([*old.routing, *new.routing]):
        a, b = old.routing.get(category, {}), new.routing.get(category, {})
        for model in dict.fromkeys([*a, *b]):
            pa, pb = a.get(model, 0.0), b.get(model, 0.0)
            if abs(pa - pb) >= tolerance:
                changes.append(PlanChange("routing", f"{category} -> {model}", pa, pb))
    # The steps of a model that serves nothing in either plan decide nothing.
    idle = {
        m
        for m in dict.fromkeys([*old.shares, *new.shares])
        if old.shares.get(m, 0.0) < tolerance and new.shares.get(m, 0.0) < tolerance
    }
    for decision, attr, equal in (
        ("steps", "steps", lambda x, y: x == y),
        ("share", "shares", lambda x, y: abs(x - y) < tolerance),
    ):
        a, b = getattr(old, attr), getattr(new, attr)
        for model in dict.fromkeys([*a, *b]):
            va, vb = a.get(model), b.get(model)
            if model not in idle and (va is None or vb is None or not equal(va, vb)):
                changes.append(PlanChange(decision, model, va, vb))
    return changes


def run(args: argparse.Namespace) -> int:
    """Print the table differences, then the plans' differences."""
    from genedge.calibrate import compare_tables, comparison_text, load_table
    from genedge.optimizer import Problem, propose

    old, new = load_table(args.old), load_table(args.new)
    workload = workload_from_args(args, old)
    # Build both problems before printing anything, so bad options fail with nothing half-printed.
    problems = [Problem.from_table(table, workload, budget=args.budget, weight=args.weight) for table in (old, new)]
    print(comparison_text(compare_tables(old, new), alpha=args.alpha))
    results = [propose(problem, rng=args.seed) for problem in problems]
    print(
        f"\nplans on the same workload {_counts_text(workload.counts)} (budget {args.budget:g} GPU, w {args.weight:g} "
        f"points/s, seed {args.seed}):"
    )
    for label, attr, fmt in (
        ("utility", "utility", ".3f"),
        ("mean quality", "mean_quality", ".3f"),
        ("mean delay s", "mean_delay_s", ".3f"),
        ("p95 delay s", "p95_delay_s", ".3f"),
    ):
        a, b = (getattr(r, attr) for r in results)
        print(f"  {label:<14}{a:>10{fmt}} -> {b:{fmt}}")
    changes = plan_changes(results[0].plan, results[1].plan)
    if not changes:
        print("  no plan decision changes")
    for change in changes:
        fmt = "d" if change.decision == "steps" else ".3f"
        print(f"  {change.decision:<8}{change.subject:<30}{_value(change.old, fmt)} -> {_value(change.new, fmt)}")
    return 0


def _counts_text(counts: Mapping[str, float]) -> str:
    return ", ".join(f"{c}={n:g}" for c, n in counts.items())


def _value(value: float | None, fmt: str) -> str:
    return "absent" if value is None else format(value, fmt)
