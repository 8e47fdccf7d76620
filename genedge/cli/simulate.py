"""``genedge simulate``: sweep load, budget and weight; compare every method; check plans by simulation."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from genedge.cli._common import (
    add_planning_arguments,
    add_trace_replay_arguments,
    budget_gpus,
    comma_separated,
    delay_weight,
    derived_share_line,
    left_out_line,
    load_table_with_hash,
    parse_counts,
    problem_from_args,
    request_count,
    slo_seconds,
    trace_replay_from_args,
    window_seconds,
)
from genedge.optimizer.model import default_mix

__all__ = ["add_parser"]

# A utility change within this many percent of 0 counts as a tie (round-off between equal plans).
_TIE_PCT = 1e-9


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="sweep load, budget and weight; compare methods; check plans with a discrete-event simulation",
        description=(
            "Plan with every method at each (budget, weight, load) point of a grid, write the figures to CSV "
            "files (and, with --figures, plots like the paper's evaluation: quality, delay and utility versus load; "
            "the annealing's convergence), and check the proposed plan at each point with a discrete-event "
            "simulation that samples CLIPScores from the fitted Gaussians and FIFO delays per request."
        ),
    )
    add_planning_arguments(parser)
    parser.add_argument(
        "--loads",
        type=comma_separated(request_count),
        default=[10, 25, 50, 100, 150, 200],
        help="requests per planning window, comma-separated (default: 10,25,50,100,150,200)",
    )
    parser.add_argument(
        "--budgets",
        type=comma_separated(budget_gpus),
        default=[0.5, 1.0],
        help="compute budgets R in GPU units, comma-separated (default: 0.5,1.0)",
    )
    parser.add_argument(
        "--weights",
        type=comma_separated(delay_weight),
        default=[0.02, 0.05, 0.1],
        help="delay weights w in points per second, comma-separated (default: 0.02,0.05,0.1)",
    )
    parser.add_argument(
        "--mix",
        help="category mix scaled to each load, e.g. 'Basic=1,Detail=3' (default: "
        "PartiPrompts' proportions over the table's categories)",
    )
    parser.add_argument(
        "--replications",
        type=int,
        default=200,
        help="simulated planning windows per point for the discrete-event check (default: 200)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("simulate-out"),
        help="folder for results.csv, checks.csv and, with --figures, the figures (default: simulate-out)",
    )
    parser.add_argument(
        "--figures",
        action="store_true",
        help="also draw quality, delay and utility versus load and the annealing's convergence (PNG and SVG)",
    )
    _add_window_versus_open_arguments(parser)
    add_trace_replay_arguments(parser)
    parser.set_defaults(func=run)


def _add_window_versus_open_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the window-versus-open comparison, which replaces the sweep."""
    arrivals = parser.add_argument_group(
        "window versus open arrivals",
        "instead of the sweep: plan one demand (the middle of --loads requests per window of T seconds, the first "
        "budget and the middle weight) under the window model and under open arrivals (rate N/T), and serve both "
        "plans to simulated arrivals",
    )
    arrivals.add_argument(
        "--window-vs-open",
        type=window_seconds,
        metavar="T",
        help="the planning window's length T in seconds; turns this comparison on",
    )
    arrivals.add_argument("--slo", type=slo_seconds, help="latency SLO in seconds for the attainment column")
    arrivals.add_argument(
        "--percentile", type=float, default=95.0, help="with --slo: the percentile held within it (default: 95)"
    )
    arrivals.add_argument(
        "--burstiness",
        type=float,
        default=4.0,
        help="index of dispersion of the bursty arrivals (a two-state Markov-modulated Poisson process; "
        "1 = Poisson; default: 4)",
    )
    arrivals.add_argument(
        "--trace",
        type=Path,
        help="an arrival trace to replay as well (time_s or timestamp and category columns, or the mapping's label "
        "column; or GenTD26's lora_request_trace.csv as published, see 'replaying --trace'); the demand is then "
        "the replay's rates, N = rate × T per window",
    )
    arrivals.add_argument(
        "--simulated-requests",
        type=int,
        default=50_000,
        help="arrivals simulated per plan and process (default: 50000)",
    )


def _progress(start: float):
    def report(done: int, total: int) -> None:
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (total - done)
        print(
            f"\rpoints {done}/{total}  elapsed {elapsed:5.1f} s  eta {eta:5.1f} s", end="", file=sys.stderr, flush=True
        )
        if done == total:
            print(file=sys.stderr)

    return report


def run(args: argparse.Namespace) -> int:
    from genedge.contract.files import check_not_input
    from genedge.optimizer import Problem, Workload, exact_search, paper_method, propose
    from genedge.optimizer.analysis import BOUNDS, COMPARED_BELOW, SIMULATED, write_csv
    from genedge.optimizer.analysis import sweep as run_sweep

    check_not_input({"--out": args.out}, {"--table": args.table, "--trace": args.trace})
    table, sha = load_table_with_hash(args.table)
    replay = trace_replay_from_args(args)
    if args.window_vs_open is not None:
        return _window_versus_open(args, table, sha, replay)

    def make_problem(workload: Workload, budget: float, weight: float) -> Problem:
        return problem_from_args(args, table, sha, workload, budget, weight)

    mix = Workload.from_counts(parse_counts(args.mix, "--mix") if args.mix else default_mix(table.categories))
    # Built before the sweep, so bad options fail at once; its convergence is plotted afterwards.
    middle = make_problem(
        mix.scaled(args.loads[len(args.loads) // 2]), args.budgets[0], args.weights[len(args.weights) // 2]
    )
    print(derived_share_line(table))
    left_out = left_out_line(middle)
    if left_out:
        print(left_out)
    results, checks = run_sweep(
        make_problem,
        mix,
        args.loads,
        args.budgets,
        args.weights,
        rng=args.seed,
        replications=args.replications,
        progress=_progress(time.perf_counter()),
    )
    written = [write_csv(results, args.out / "results.csv"), write_csv(checks, args.out / "checks.csv")]
    if args.figures:
        from genedge.optimizer.analysis import plot_convergence, plot_sweep

        written += plot_sweep(results, args.out)
        written += plot_convergence(
            {
                "genedge (steps; routing and shares solved inside)": propose(middle, rng=args.seed).trajectory,
                "paper (steps and shares)": paper_method(middle, rng=args.seed).trajectory,
            },
            args.out,
            exact=exact_search(middle).utility,
        )

    def column(name: str) -> list[float]:
        return [row[name] for row in checks if row.get(name) is not None]

    print(f"\n{len(checks)} points; proposed (genedge) utility change versus each method, worst point first:")
    for name in (*COMPARED_BELOW, "paper", *BOUNDS):
        gains = column(f"gain_vs_{name}_pct")
        if gains:
            wins = sum(gain >= -_TIE_PCT for gain in gains)
            print(f"  vs {name:<18} ≥ on {wins}/{len(gains)} points; worst {min(gains):+.3f}%  best {max(gains):+.2f}%")
    print(f"  exact optimum certified within {max(column('exact_certified_gap_pct')):.3f}% at every point")
    print(f"  paper's annealing within {max(column('paper_gap_to_optimal_step_pct')):.3f}% of its Optimal-step bound")
    print("discrete-event check (|z| = |simulated − predicted| / standard error of the simulated mean):")
    for name in SIMULATED:
        quality_z = max(abs(z) for z in column(f"{name}_quality_z"))
        delay_z = max(abs(z) for z in column(f"{name}_delay_z"))
        print(
            f"  {name:<8} quality: max |z| {quality_z:.2f}; "
            f"delay: max |z| {delay_z:.2f} over {args.replications} windows per point"
        )
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _window_versus_open(args: argparse.Namespace, table, sha: str, replay) -> int:
    """Print the window-versus-open comparison (see the option group's help)."""
    from genedge.optimizer import Workload
    from genedge.optimizer.inputs import window_and_open_problems
    from genedge.optimizer.model import Slo, arrival_model
    from genedge.optimizer.simulation import compare_arrival_models

    if not args.window_vs_open > 0:
        raise ValueError(f"--window-vs-open: expected a window length > 0 seconds, but got {args.window_vs_open:g}")
    trace = None
    if args.trace is not None:
        from genedge.optimizer.model import read_trace

        trace = read_trace(
            args.trace, mapping=table.category_mapping, categories=table.categories, replay=replay, rng=args.seed
        )
        print(f"trace: {len(trace)} arrivals replayed over {trace.duration_s:g} s, seed {args.seed}")
        demand = Workload.from_rates(trace.rates())
    else:
        mix = Workload.from_counts(parse_counts(args.mix, "--mix") if args.mix else default_mix(table.categories))
        demand = mix.scaled(args.loads[len(args.loads) // 2])
    slo = None if args.slo is None else Slo(args.slo, args.percentile / 100)
    common = {
        "budget": args.budgets[0],
        "weight": args.weights[len(args.weights) // 2],
        "models": args.models,
        "memory_gib": args.memory_gib,
        "table_sha256": sha,
        "min_clipscore": args.min_clipscore,
        "max_shortfall": args.max_shortfall,
        "slo": slo,
    }
    window, opened = window_and_open_problems(table, demand, args.window_vs_open, **common)
    print(derived_share_line(table))
    print(
        f"demand: {window.n_requests:g} requests per {args.window_vs_open:g} s window ≡ {opened.n_requests:.4g} "
        f"requests/s; budget {common['budget']:g} GPU; w = {common['weight']:g} points/s"
        + ("" if slo is None else f"; SLO {slo.describe()}")
    )
    rows = compare_arrival_models(
        window,
        opened,
        burstiness=args.burstiness,
        trace=trace,
        n_requests=args.simulated_requests,
        rng=args.seed,
    )
    slo_column = slo is not None
    print(
        f"\n{'planned under':<14} {'evaluated by':<30} {'CLIPScore':>9} {'mean s':>8} {'p95 s':>8} {'p99 s':>8}"
        + (f" {'attained':>8}" if slo_column else "")
        + f" {'utility':>8}"
    )
    for row in rows:
        r = row.plan
        label = arrival_model(row.planned_under).label
        steps = ", ".join(f"{m} {s}" for m, s, used in zip(r.plan.models, r.plan.steps_per_model, r.deployed) if used)
        if not r.stable:
            worst = int(np.nanargmax(np.where(r.deployed, r.utilization, np.nan)))
            print(
                f"{label:<14} {'M/D/1 (analytic)':<30} unstable: {r.plan.models[worst]} at load "
                f"ρ = {r.utilization[worst]:.2f}; its queue grows without bound  [{steps}]"
            )
            continue
        print(
            f"{label:<14} {'M/D/1 (analytic)':<30} {r.mean_quality:>9.2f} {r.mean_delay_s:>8.2f} "
            f"{r.p95_delay_s:>8.2f} {r.p99_delay_s:>8.2f}"
            + (f" {r.attainment:>8.3f}" if slo_column else "")
            + f" {r.utility:>8.3f}  [{steps}]"
        )
        for name, check in row.checks.items():
            process = {"poisson": "Poisson", "trace": "the trace"}.get(name, f"bursty MMPP (D = {check.burstiness:g})")
            print(
                f"{'':<14} {'simulated, ' + process:<30} {check.mean_quality:>9.2f} {check.mean_s:>8.2f} "
                f"{check.p95_s:>8.2f} {check.p99_s:>8.2f}"
                + (f" {check.attainment:>8.3f}" if slo_column else "")
                + f" {check.utility:>8.3f}"
            )
    return 0
