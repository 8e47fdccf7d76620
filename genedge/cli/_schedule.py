"""``genedge plan`` for several total rates: plan each into a plan schedule, print it, write it and draw it."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

from genedge.cli._common import (
    DEFAULT_TRACE_RATES,
    DEFAULT_TRACE_WINDOW_S,
    derived_share_line,
    left_out_line,
    problem_from_args,
    settings_parts,
    workload_from_args,
)
from genedge.contract.table import CalibrationTable
from genedge.optimizer.model import Problem

if TYPE_CHECKING:
    from genedge.optimizer.schedule_file import PlanSchedule, RatePoint
    from genedge.router.counting import PromptCounts

__all__ = ["run_schedule"]


def run_schedule(
    args: argparse.Namespace,
    table: CalibrationTable,
    sha256: str,
    prompt_counts: PromptCounts | None,
    totals: list[float] | None,
) -> int:
    """Plan every rate of --rates (``totals``) or --rates-from-trace as ``genedge plan --rate R`` would, and report.

    Each rate's problem is built from the same options as one ``--rate R`` run's, with the same ``--method``
    and ``--seed`` (see :func:`genedge.optimizer.analysis.plan_schedule`).
    """
    from tqdm import tqdm

    from genedge.optimizer.analysis import plan_schedule
    from genedge.optimizer.plan_file import plan_inputs

    rates, source = (totals, args.rates) if totals is not None else _trace_rates(args, table)

    def options_at(rate: float) -> argparse.Namespace:
        return argparse.Namespace(**{**vars(args), "rates": None, "rates_from_trace": None, "rate": rate})

    def make_problem(rate: float) -> Problem:
        workload = workload_from_args(options_at(rate), table, prompt_counts)
        return problem_from_args(options_at(rate), table, sha256, workload, args.budget, args.weight)

    lowest = workload_from_args(options_at(min(rates)), table, prompt_counts)
    first = problem_from_args(options_at(min(rates)), table, sha256, lowest, args.budget, args.weight)
    started = time.perf_counter()
    with tqdm(total=len(rates), unit="rate", desc="planning", disable=None, leave=False, file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total  # the rates to plan: those from the capacity on are not
            bar.update(done - bar.n)

        schedule = plan_schedule(
            make_problem,
            rates,
            method=args.method,
            seed=args.seed,
            jobs=_usable_cpus() if args.jobs is None else args.jobs,
            inputs={"table": str(args.table), "table_sha256": sha256, "rates": source},
            # What genedge plan --rate R --out writes, less the misrouting cost (a figure of the baselines' kind).
            plan_inputs=plan_inputs(args.table, table.source_counts(), lowest, prompts=prompt_counts),
            progress=progress,
        )
    seconds = time.perf_counter() - started
    print(derived_share_line(table))
    print(_rates_line(first, rates, source))
    left_out = left_out_line(first)
    if left_out:
        print(left_out)
    print()
    print(format_schedule(schedule, seconds))
    _write(args, schedule)
    return 0


def _usable_cpus() -> int:
    """The CPUs this process may run on (all the machine's where the system cannot say)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _trace_rates(args: argparse.Namespace, table: CalibrationTable) -> tuple[list[float], dict[str, object]]:
    """--rates-from-trace's rates: --rate-count of them from the trace's quietest to its busiest window."""
    from genedge.optimizer.analysis import rate_grid, trace_rate_range
    from genedge.optimizer.model import read_trace

    window_s = DEFAULT_TRACE_WINDOW_S if args.window_s is None else args.window_s
    count = DEFAULT_TRACE_RATES if args.rate_count is None else args.rate_count
    arrivals = read_trace(
        args.rates_from_trace, mapping=table.category_mapping, categories=table.categories, rng=args.seed
    )
    try:
        low, high = trace_rate_range(arrivals, window_s)
    except ValueError as err:
        raise ValueError(f"--rates-from-trace {args.rates_from_trace}: {err}") from None
    rates = rate_grid(low, high, 1 if low == high else count)
    return rates, {"trace": str(args.rates_from_trace), "window_s": window_s, "count": len(rates)}


def _rates_line(problem: Problem, rates: list[float], source: object) -> str:
    """The rates, their mix and what each plan is made under."""
    given = source if isinstance(source, str) else f"from {source['trace']}, windows of {source['window_s']:g} s"
    total = problem.n_requests
    mix = ", ".join(f"{c} {100 * n / total:.1f}%" for c, n in zip(problem.categories, problem.counts))
    head = f"rates: {len(rates)} total rates, {min(rates):g} to {max(rates):g} requests/s ({given}), split {mix}"
    return "; ".join([head, *settings_parts(problem)])


def format_schedule(schedule: PlanSchedule, seconds: float) -> str:
    """The bands, every rate's figures, and what lies beyond the rates that can be served or meet the SLO."""
    planned = [p for p in schedule.points if p.band is not None or p.unstable_plan]
    beyond = [p for p in schedule.points if p not in planned]
    took = f"{schedule.method} planned {len(planned)} of {len(schedule.points)} rates, seed {schedule.seed}"
    lines = [
        f"{took}; {seconds:.1f} s",
        "",
        f"{'band':>4}  {'rates (requests/s)':<20} plan: model@steps: categories served",
    ]
    for i, band in enumerate(schedule.bands, start=1):
        span = f"{band.low_rate:g}" if band.low_rate == band.high_rate else f"{band.low_rate:g}-{band.high_rate:g}"
        flag = "" if band.feasible else "  (misses the SLO)"
        lines.append(f"{i:>4}  {span:<20} {band.decisions.describe()}{flag}")
    slo = schedule.bands[0].plan.inputs.slo is not None
    lines += ["", _point_header(slo)]
    lines += [_point_row(p, slo, schedule.method) for p in planned]
    if beyond:
        many = f" to {beyond[-1].rate:g}: {len(beyond)} rates" if len(beyond) > 1 else ":"
        lines.append(f"{beyond[0].rate:>8g}{many} beyond capacity, not planned")
    lines += ["", *_limits(schedule), *_planner_check(planned)]
    return "\n".join(lines)


def _planner_check(planned: list[RatePoint]) -> list[str]:
    """Where the next rate's plan does better at a rate than the rate's own plan: the planner missed the optimum."""
    missed = [p for p in planned if p.higher_plan_utility is not None]
    if not missed:
        return []
    where = ", ".join(f"{p.rate:g} ({p.higher_plan_utility:.3f} > {p.utility:.3f})" for p in missed)
    head = f"planner check: at {len(missed)} rate(s) the next rate's plan does better than the rate's own"
    return [f"{head}, so the planner missed the optimum there (each plan is kept as planned): {where}"]


def _point_header(slo: bool) -> str:
    attained = f" {'attained':>8}" if slo else ""
    return f"{'rate':>8} {'band':>4} {'utility':>8} {'CLIPScore':>9} {'mean s':>8} {'p95 s':>8}{attained}  GPU shares"


def _point_row(point: RatePoint, slo: bool, method: str) -> str:
    if point.unstable_plan:
        return f"{point.rate:>8g} {'-':>4}  {method}'s plan leaves a queue unstable: no band"
    attained = f" {point.slo_attainment:>8.3f}" if slo else ""
    shares = ", ".join(f"{m} {r:.2f}" for m, r in point.shares.items() if r > 0)
    return (
        f"{point.rate:>8g} {point.band + 1:>4} {point.utility:>8.3f} {point.mean_clipscore:>9.2f} "
        f"{point.mean_delay_s:>8.2f} {point.p95_delay_s:>8.2f}{attained}  {shares}"
    )


def _limits(schedule: PlanSchedule) -> list[str]:
    """Where the SLO stops being met and the queues stop being stable, and what the schedule serves there."""
    last = len(schedule.bands)
    lines = []
    if schedule.bands[0].plan.inputs.slo is not None:
        first = schedule.first_infeasible_rate
        if first is None:
            lines.append("SLO: met at every planned rate")
        else:
            lines.append(
                f"SLO: missed from {first:g} requests/s on; there the schedule holds the best plan found, which "
                "misses it (bands marked so)"
            )
    lines.append(
        f"capacity: no plan keeps every queue stable from {schedule.max_stable_rate:.4g} requests/s on; a higher "
        f"rate gets band {last}'s plan, flagged as overload"
    )
    lines.append(
        "between bands: a rate gets the band above it (a plan made for a higher rate stays stable and within "
        "its SLO at a lower one)"
    )
    return lines


def _write(args: argparse.Namespace, schedule: PlanSchedule) -> None:
    """Write the schedule (--out) and its figure (--figures) where asked."""
    if args.out:
        from genedge.optimizer.schedule_file import save_plan_schedule

        print(f"\nwrote {save_plan_schedule(schedule.raw, args.out)}")
    if args.figures:
        from genedge.optimizer.analysis import plot_schedule

        for path in plot_schedule(schedule, args.figures):
            print(f"wrote {path}")
