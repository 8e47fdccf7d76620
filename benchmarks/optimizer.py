"""Time to plan and utility of each planner, at the paper's scale and at a large scale, from one run.

Paper scale: the shipped reference table (3 models, the paper's 4 categories), 100 requests, one GPU,
w = 0.05. Large scale: a synthetic problem with 16 models, all 11 PartiPrompts challenges, 5,000
requests (exhaustive and exact search do not scale there: 7^16 step vectors).

Usage: python benchmarks/optimizer.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics

from genedge import data
from genedge.calibrate import load_table
from genedge.optimizer import (
    Problem,
    Workload,
    exact_search,
    optimal_step,
    paper_method,
    propose,
)
from genedge.optimizer.planners import direct, equal_allocation, random_assignment, utility_upper_bound
from genedge.testing import synthetic_problem


def timed(planner, repeats: int):
    """Median of the planner's own wall time (``PlanResult.plan_time_s``) over ``repeats`` runs, and a result."""
    results = [planner() for _ in range(repeats)]
    return statistics.median(r.plan_time_s for r in results), results[-1]


def report(title: str, planners: dict, repeats: int, reference: str, bound: float | None = None) -> None:
    print(f"\n{title}")
    rows = {name: timed(planner, repeats) for name, planner in planners.items()}
    ref_time, ref_result = rows[reference]
    print(
        f"  {'method':<22} {'median time':>12} {'time / ' + reference:>16} {'utility':>9} {'gap to ' + reference:>14}"
    )
    for name, (seconds, result) in rows.items():
        gap = 100 * (ref_result.utility - result.utility) / abs(ref_result.utility)
        print(
            f"  {name:<22} {seconds * 1000:>10.1f} ms {seconds / ref_time:>15.2f}x {result.utility:>9.3f} "
            f"{gap:>+13.3f}%"
        )
    if ref_result.upper_bound is not None:
        print(f"  certified: optimum ≤ {ref_result.upper_bound:.4f} (gap ≤ {100 * ref_result.certified_gap:.3f}%)")
    if bound is not None:
        print(
            f"  certified by the decoupled bound: optimum ≤ {bound:.4f}, "
            f"so {reference} is within {100 * (bound - ref_result.utility) / abs(bound):.3f}% of it"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per planner; the median is reported")
    args = parser.parse_args()
    print(
        f"python {platform.python_version()} on {platform.processor() or platform.machine()}, "
        f"{args.repeats} runs per planner, median wall time"
    )

    table = load_table(data.path("tables", "reference-a100.json"))
    mix = Workload.from_mix({"Basic": 272, "Detail": 544, "Imagination": 150, "Complex": 113}, 100)
    small = Problem.from_table(table, mix, budget=1.0, weight=0.05)
    report(
        "paper scale: 3 models x 4 categories x 7 step choices, 100 requests (reference A100 table)",
        {
            "exact (certified)": lambda: exact_search(small),
            "genedge (proposed)": lambda: propose(small, rng=0),
            "paper annealing": lambda: paper_method(small, rng=0),
            "optimal-step": lambda: optimal_step(small),
            "direct-assignment": lambda: direct(small, rng=0),
            "random-assignment": lambda: random_assignment(small, rng=0),
            "equal-allocation": lambda: equal_allocation(small),
        },
        args.repeats,
        reference="exact (certified)",
    )

    large = synthetic_problem(16, 11, 5000, weight=0.002, budget=4.0, rng=0)
    report(
        f"large scale: 16 models x 11 categories x 7 step choices, {int(large.n_requests)} requests, "
        "R = 4 GPUs (synthetic)",
        {
            "genedge (proposed)": lambda: propose(large, rng=0),
            "paper annealing": lambda: paper_method(large, rng=0),
            "direct-assignment": lambda: direct(large, rng=0),
            "random-assignment": lambda: random_assignment(large, rng=0),
            "equal-allocation": lambda: equal_allocation(large),
        },
        max(1, args.repeats // 2),
        reference="genedge (proposed)",
        bound=utility_upper_bound(large),
    )


if __name__ == "__main__":
    main()
