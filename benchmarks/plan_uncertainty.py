"""What knowing how sure a plan is costs: the table's bootstrap beside planning, from one run.

On the shipped reference table (3 models, the paper's 4 categories, 100 requests, one GPU, w = 0.05), it times
the exact planner and then the parametric bootstrap of ``genedge plan`` at several sample counts B, side by side:
wall time, the expected regret with its Monte Carlo standard error, and the smallest decision probability. The
Monte Carlo error should fall as 1/√B while the cost grows as B. It then times the robust plans (expected utility
and lower quantile on the same samples) and, for a problem with an SLO, where each sample is re-planned with the
exact planner, the cost per sample.

Usage: python benchmarks/plan_uncertainty.py [--samples 50,200,1000] [--replanned 5]
Results: benchmarks/results/plan-uncertainty-cpu.txt (its output, from one run)
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from _environment import cpu_name, source_state

from genedge import data
from genedge.calibrate import load_table
from genedge.optimizer import Problem, Workload, exact_search
from genedge.optimizer.analysis import assess, parameter_model, robust_plans
from genedge.optimizer.model import Slo

WORKLOAD = {"Basic": 25.0, "Detail": 50.0, "Imagination": 14.0, "Complex": 11.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="50,200,1000", help="comma-separated bootstrap sample counts")
    parser.add_argument("--replanned", type=int, default=5, help="samples re-planned under an SLO (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default: 0)")
    args = parser.parse_args()
    print(
        f"{cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}; genedge {source_state('optimizer')}"
    )
    table = load_table(data.resolve_table("reference-a100"))
    workload = Workload.from_counts(WORKLOAD)
    problem = Problem.from_table(table, workload)
    started = time.perf_counter()
    plan = exact_search(problem)
    plan_s = time.perf_counter() - started
    model = parameter_model(table, problem, workload)
    print(f"\nreference table, 100 requests, window model: {len(model.parameters)} uncertain parameters")
    print(f"exact plan: {plan_s:.3f} s, utility {plan.utility:.3f}")
    print(f"{'samples':>8} {'seconds':>8} {'x plan':>7} {'regret':>8} {'MC SE':>7} {'min P':>6} {'P(all)':>7}")
    for samples in (int(v) for v in args.samples.split(",")):
        a = assess(model, plan, samples=samples, rng=args.seed)
        print(
            f"{samples:>8} {a.seconds:>8.2f} {a.seconds / plan_s:>7.1f} {a.expected_regret:>8.3f} "
            f"{a.regret_mc_se:>7.3f} {a.min_confidence:>6.2f} {a.plan_probability:>7.2f}"
        )
    started = time.perf_counter()
    plans = robust_plans(model, plan, samples=200, rng=args.seed)
    robust_s = time.perf_counter() - started
    print(f"\nrobust plans on 200 samples: {robust_s:.2f} s")
    for r in plans.values():
        print(f"  {r.objective:<18} mean {r.expected_utility:.3f}  q10 {r.quantile_utility:.3f}")

    slo = Problem.from_table(table, workload, slo=Slo(seconds=100.0, attainment=0.95))
    started = time.perf_counter()
    slo_plan = exact_search(slo)
    slo_plan_s = time.perf_counter() - started
    slo_model = parameter_model(table, slo, workload)
    started = time.perf_counter()
    a = assess(slo_model, slo_plan, samples=args.replanned, rng=args.seed)
    per_sample = (time.perf_counter() - started) / args.replanned
    print(
        f"\nwith an SLO (p95 <= 100 s) each sample is re-planned with the exact planner: {per_sample:.2f} s a sample "
        f"({args.replanned} samples; the plan itself {slo_plan_s:.2f} s), so 200 samples take about "
        f"{200 * per_sample:.0f} s"
    )


if __name__ == "__main__":
    main()
