"""``genedge plan``: plan routing, steps and shares from a calibration table and a workload."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from genedge.cli._common import (
    add_budget_arguments,
    add_planning_arguments,
    add_service_arguments,
    add_workload_arguments,
    bounded_number,
    comma_separated,
    derived_share_line,
    format_plan,
    left_out_line,
    load_table_with_hash,
    problem_from_args,
    prompt_counts_from_args,
    schedule_rates,
    workload_from_args,
    workload_line,
)
from genedge.contract.bounds import MAX_THREADS
from genedge.optimizer.model import DEFAULT_REQUESTS

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="plan which model serves which prompt category, with how many steps and how much GPU",
        description=(
            "Plan an edge deployment: route each prompt category to models, choose denoising steps and "
            "compute shares to maximize mean CLIPScore minus w times mean delay (and an energy price), "
            "optionally under a latency SLO, for a window of requests or for requests arriving at rates. "
            "Prints the plan and the same figures for the paper's method and its baselines on the same "
            f"inputs. With no options it plans {DEFAULT_REQUESTS} requests in PartiPrompts' category "
            "proportions on the shipped reference table, one GPU, w = 0.05 points per second. With several total "
            "rates (--rates LO:HI:COUNT, a comma list, or --rates-from-trace) it plans each rate on its own and "
            "prints (and with --out writes) a plan schedule: the bands of rates that share a plan's decisions."
        ),
    )
    add_planning_arguments(parser)
    add_workload_arguments(parser)
    add_budget_arguments(parser)
    add_service_arguments(parser, schedule=True)
    parser.add_argument(
        "--method", default="genedge", help="the method whose plan is written (default: genedge; see --compare)"
    )
    parser.add_argument(
        "--compare",
        type=comma_separated(str),
        help="comma-separated methods to compare against (default: all: paper, direct-assignment, "
        "random-assignment, equal-allocation, optimal-step, exact)",
    )
    add_uncertainty_arguments(parser)
    parser.add_argument("--out", type=Path, help="write the plan JSON (or, for several rates, the plan schedule) here")
    parser.add_argument(
        "--jobs",
        type=bounded_number("processes", minimum=1, maximum=MAX_THREADS, kind=int),
        help="with a plan schedule: rates planned at once, each in a process of its own; the plans are the same "
        "for any number (default: the CPUs this process may use)",
    )
    parser.add_argument(
        "--figures",
        type=Path,
        metavar="DIR",
        help="with a plan schedule: draw its utility and p95 delay versus the rate, bands shaded (PNG and SVG)",
    )
    parser.set_defaults(func=run)


def add_uncertainty_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the table's parametric bootstrap: samples, and the robust plans."""
    from genedge.optimizer.analysis import DEFAULT_QUANTILE, DEFAULT_SAMPLES

    parser.add_argument(
        "--samples",
        type=int,
        help="parametric bootstrap samples of the table behind the plan's confidence and expected regret "
        f"(seeded by --seed; 0: skip; default: {DEFAULT_SAMPLES} where each sample's optimum has a vectorized "
        "search (the window model without SLO, quality floor or batching), else 0: there each sample is "
        "re-planned with the exact planner)",
    )
    parser.add_argument(
        "--robust",
        choices=("expected", "quantile"),
        help="write the plan of highest expected utility, or of highest lower --quantile of utility, over "
        "the table's uncertainty instead of the point-estimate plan; prints all three on the same samples",
    )
    parser.add_argument(
        "--quantile",
        type=bounded_number("a quantile", minimum=0, strict=True, maximum=1),
        default=DEFAULT_QUANTILE,
        help=f"the lower quantile of utility --robust quantile maximizes (default: {DEFAULT_QUANTILE})",
    )


def run(args: argparse.Namespace) -> int:
    from genedge.contract.files import check_not_input
    from genedge.optimizer import METHODS, misrouting_cost, run_methods
    from genedge.optimizer.plan_file import plan_inputs, plan_to_dict, save_plan

    check_not_input(
        {"--out": args.out, "--figures": args.figures},
        {
            "--table": args.table,
            "--prompts": args.prompts,
            "--trace": args.trace,
            "--rates-from-trace": args.rates_from_trace,
            "--router": args.router,
        },
    )
    totals = None if args.rates is None else schedule_rates(args.rates)
    _check_schedule_options(args, totals)
    table, sha = load_table_with_hash(args.table)
    prompt_counts = prompt_counts_from_args(args, table)
    if totals is not None or args.rates_from_trace is not None:
        from genedge.cli._schedule import run_schedule

        return run_schedule(args, table, sha, prompt_counts, totals)
    workload = workload_from_args(args, table, prompt_counts)
    problem = problem_from_args(args, table, sha, workload, args.budget, args.weight)
    names = [args.method] + [m for m in (args.compare or METHODS) if m != args.method]
    results = run_methods(problem, names, rng=args.seed)
    chosen = results[args.method]
    print(derived_share_line(table))
    if prompt_counts is not None:
        print(f"prompts: {prompt_counts.summary()}")
    print(workload_line(problem))
    left_out = left_out_line(problem)
    if left_out:
        print(left_out)
    print()
    print(format_plan(chosen))
    cost = None
    if workload.composition is not None:
        perfect = problem_from_args(args, table, sha, workload.by_true_category(), args.budget, args.weight)
        cost = misrouting_cost(problem, perfect, chosen, args.method, rng=args.seed)
        print()
        print(_format_misrouting(cost, prompt_counts))
    print()
    print(_format_comparison(results, args.method))
    uncertainty = None
    samples = _bootstrap_samples(args, problem, results)
    if samples:
        chosen, assessment = _how_sure(args, samples, table, workload, problem, chosen)
        uncertainty = assessment.to_dict()
    if args.out:
        inputs = plan_inputs(args.table, table.source_counts(), workload, prompts=prompt_counts, misrouting=cost)
        document = plan_to_dict(problem, chosen, others=results, inputs=inputs, uncertainty=uncertainty)
        print(f"\nwrote {save_plan(document, args.out)}")
    return 0


def _check_schedule_options(args: argparse.Namespace, totals: list[float] | None) -> None:
    """Refuse options of one plan with a schedule, and a schedule's options without one."""
    schedule = totals is not None or args.rates_from_trace is not None
    if schedule:
        given = [name for name, value in (("--compare", args.compare), ("--samples", args.samples)) if value]
        given += ["--robust"] if args.robust is not None else []
        if given:
            raise ValueError(f"{', '.join(given)}: a plan schedule plans each rate with --method alone; leave them out")
    elif args.rate_count is not None:
        raise ValueError("--rate-count: how many rates of --rates-from-trace to plan; give --rates-from-trace TRACE")
    elif args.jobs is not None:
        raise ValueError("--jobs: how many rates of a plan schedule to plan at once; give --rates LO:HI:COUNT")
    if not schedule and args.figures is not None:
        raise ValueError(
            "--figures draws a plan schedule: give --rates LO:HI:COUNT (or a comma list) or --rates-from-trace"
        )


def _bootstrap_samples(args: argparse.Namespace, problem, results) -> int:
    """The bootstrap's sample count (:func:`genedge.optimizer.inputs.bootstrap_size`); says why where it skips it."""
    from genedge.optimizer.inputs import bootstrap_size

    size = bootstrap_size(problem, args.samples, robust=args.robust is not None)
    if size.skipped_because is not None:
        took = results["exact"].plan_time_s if "exact" in results else None
        cost = "" if took is None else f", about {took:.1f} s a sample here"
        print(
            f"\nhow sure: not computed by default here; with {size.skipped_because} each bootstrap sample is "
            f"re-planned with the exact planner{cost}: --samples N computes it"
        )
    return size.samples


def _how_sure(args: argparse.Namespace, samples: int, table, workload, problem, chosen):
    """Print how sure the plan is (and, with --robust, the robust plans); return the plan to write and its figures."""
    import sys

    from tqdm import tqdm

    from genedge.optimizer.analysis import assess, parameter_model, robust_plans
    from genedge.optimizer.planners import make_result

    model = parameter_model(table, problem, workload)
    with tqdm(total=samples, unit="sample", desc="bootstrap", disable=None, leave=False, file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        options = {"samples": samples, "rng": args.seed, "progress": progress}
        if args.robust is None:
            assessment = assess(model, chosen, **options)
        else:
            plans = robust_plans(model, chosen, quantile=args.quantile, **options)
            robust = plans[args.robust]
            assessment = robust.assessment
    print()
    print(_format_assessment(assessment))
    if args.robust is None:
        return chosen, assessment
    print()
    print(_format_robust(plans, args.robust))
    d = robust.decision
    method = f"{chosen.method}, robust: {robust.objective}"
    return make_result(
        problem, method, d.routing, d.step_index, d.shares, seed=args.seed, batch_index=d.batch_index
    ), assessment


_REGRET = "the utility lost, on average, against each sample's own optimum"


def _format_assessment(a) -> str:
    """How sure a plan is (see :class:`genedge.optimizer.analysis.Assessment`)."""
    from genedge.optimizer.analysis import FREQUENCY_CHECKED_IMAGES

    lo, hi = a.utility_interval()
    regret = a.expected_regret
    head = (
        f"how sure: a parametric bootstrap of the table, {a.samples} samples (seed {a.seed}), each sample's "
        f"optimum by {a.optimizer}; {a.seconds:.1f} s"
    )
    # Below the point utility more often than not: the plan was chosen as the best on these estimates.
    interval = f"its true utility, 90% interval [{lo:.3f}, {hi:.3f}] (corrected for choosing it on them)"
    lines = [
        head,
        f"  utility {a.point_utility:.3f} on the table's estimates; {interval}",
        f"  expected regret {regret:.3f} ± {a.regret_mc_se:.3f} points (Monte Carlo SE): {_REGRET}",
        f"  P(an optimal plan decides the same), each ± at most {a.probability_mc_se(0.5):.3f} (Monte Carlo SE):",
    ]
    row = "    {:<10} {:<26} {:>5.2f}"

    def otherwise(decision: str) -> str:
        if decision not in a.alternatives:
            return ""
        choice, p = a.alternatives[decision]
        return f"   else mostly {choice} ({p:.2f})"

    for category, (model, p) in a.routing.items():
        lines.append(row.format("routing", f"{category} -> {model}", p) + otherwise(f"routing {category}"))
    for model, (steps, p) in a.steps.items():
        lines.append(row.format("steps", f"{model} at {steps}", p) + otherwise(f"steps {model}"))
    for model, (deployed, p) in a.deployment.items():
        lines.append(row.format("deploy", f"{model} {'yes' if deployed else 'no'}", p))
    lines.append(row.format("all", "every decision above", a.plan_probability))
    shares = ", ".join(f"{k} {lo:.2f}-{hi:.2f}" for k, (lo, hi) in a.optimal_shares.items())
    lines.append(f"  optimal GPU shares, 90% of samples: {shares}")
    if a.feasible is not None:
        lines.append(f"  the plan meets its SLO and quality floor in {100 * a.feasible:.1f}% of samples")
    if a.fixed:
        lines.append(f"  held at the table's value (it states no error): {', '.join(a.fixed)}")
    if a.fewest_images is not None and a.fewest_images < FREQUENCY_CHECKED_IMAGES:
        lines.append(
            f"  a measured cell has only {a.fewest_images} images: checked as frequencies on real scores, these "
            f"probabilities held from {FREQUENCY_CHECKED_IMAGES} images per cell;\n  with 5, claims of 0.8-0.95 "
            f"were right far less often and the expected regret was overstated (docs: How sure is a plan)"
        )
    return "\n".join(lines)


def _format_robust(plans, written: str) -> str:
    """The point, expected-utility and lower-quantile plans on the same bootstrap samples."""
    quantile = next(iter(plans.values())).quantile
    head = (
        f"{'plan':<18} {'utility':>8} {'mean':>8} {f'q{100 * quantile:g}':>8} {'regret':>8} {'P(same)':>8}  decisions"
    )
    lines = ["robust plans, on the same samples:", head]
    for name, r in plans.items():
        a = r.assessment
        routing = ", ".join(f"{c}->{m}" for c, (m, _) in a.routing.items())
        steps = ", ".join(f"{k}@{s}" for k, (s, _) in a.steps.items())
        mark = "  (written)" if name == written else ""
        lines.append(
            f"{r.objective:<18} {a.point_utility:>8.3f} {r.expected_utility:>8.3f} {r.quantile_utility:>8.3f} "
            f"{a.expected_regret:>8.3f} {a.plan_probability:>8.2f}  {routing}; {steps}{mark}"
        )
    return "\n".join(lines)


def _format_misrouting(cost, prompt_counts) -> str:
    """The utility lost to misrouting (see :mod:`genedge.optimizer.analysis._misrouting`)."""
    routed = sum(prompt_counts.routed.values())
    row = "  {:<24} CLIPScore {:6.2f}  utility {:8.3f}"
    head = f"misrouting: {routed:,} requests routed by {prompt_counts.router}, scored as its cross-validated mixture"
    lines = [
        f"{head} of true categories",
        row.format("with perfect labels", cost.perfect_quality, cost.perfect_utility),
        row.format("planned for the router", cost.served_quality, cost.served_utility)
        + f"  (lost to misrouting: {cost.loss:.3f})",
    ]
    if cost.naive_utility is not None:
        lines.append(
            row.format("planned ignoring it", cost.naive_quality, cost.naive_utility)
            + f"  (planning with the confusion matrix gains {cost.planning_gain:.3f})"
        )
    return "\n".join(lines)


def _format_comparison(results, chosen_name: str) -> str:
    from genedge.optimizer.planners import relative_change

    chosen = results[chosen_name]
    floor = chosen.shortfall is not None
    slo = chosen.attainment is not None
    energy = chosen.mean_energy_j is not None
    lines = [
        f"{'method':<18} {'CLIPScore':>9} {'mean s':>8} {'p95 s':>8} {'p99 s':>8}"
        + (f" {'attained':>8}" if slo else "")
        + (f" {'J/image':>8}" if energy else "")
        + f" {'utility':>8} {'vs ' + chosen_name:>12} {'plan ms':>8}"
        + (f" {'worst P(<floor)':>15}" if floor else "")
    ]
    for name, r in results.items():
        comparable = math.isfinite(r.utility) and math.isfinite(chosen.utility)
        change = f"{100 * relative_change(r.utility, chosen.utility):>+11.2f}%" if comparable else f"{'—':>12}"
        took = "" if r.plan_time_s is None else f"{r.plan_time_s * 1000:.0f}"
        notes = []
        if not r.stable:
            worst = int(np.nanargmax(np.where(r.deployed, r.utilization, np.nan)))
            notes.append(f"unstable: {r.plan.models[worst]} at load ρ = {r.utilization[worst]:.2f}")
        elif not r.feasible:
            notes.append("misses the SLO")
        if r.upper_bound is not None:
            notes.append(f"optimum ≤ {r.upper_bound:.3f}, gap {100 * r.certified_gap:.2f}%")
        if r.bound_note:
            notes.append(r.bound_note)
        lines.append(
            f"{name:<18} {r.mean_quality:>9.2f} {r.mean_delay_s:>8.2f} {r.p95_delay_s:>8.2f} {r.p99_delay_s:>8.2f}"
            + (f" {r.attainment:>8.3f}" if slo else "")
            + (f" {r.mean_energy_j:>8.0f}" if energy else "")
            + f" {r.utility:>8.3f} {change} {took:>8}"
            + (f" {r.shortfall.max():>15.3f}" if floor else "")
            + (f"  ({'; '.join(notes)})" if notes else "")
        )
    return "\n".join(lines)
