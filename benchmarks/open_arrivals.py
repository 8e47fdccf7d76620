"""Planning under open arrivals and latency SLOs: plan time, certified gaps and the analytic queueing error.

One run prints four sections, all measured in that run:

1. Paper scale with an SLO. Poisson arrivals in PartiPrompts' category mix on the Galaxy S24 table
   (2 models, 0.2 requests/s) and on the reference A100 table (3 models, 1 request/s, the whole GPU),
   with p95 <= an SLO set to half the p95 of genedge's plan without one (so the SLO binds). Every
   method's plan time (genedge: median of ``--repeats`` runs), utility, p95, SLO attainment and
   feasibility; then genedge side by side with the code at ``--baseline`` (a git commit, default
   :data:`BASELINE_REF`, the planner before certified shares and round-robin laws), checked out into a
   temporary worktree and timed in a child process on the same problems in the same run.
2. Large scale. Synthetic problems with 8 and 16 models and all 11 PartiPrompts challenges, as
   windows of 5,000 requests (the paper's delay model) and as open arrivals at half the largest
   servable rate, without and with an SLO. genedge's plan time beside the window model's. An open
   run that outlasts ``--cap`` seconds is stopped through genedge's callback, and its time is then a
   lower bound on the full run's.
3. Certified gap under each objective: the exact method's certified gap (upper bound − utility) and
   genedge's gap to the same bound, on the paper-scale instances (the demand of a 60 s window for the
   window model), for the window model (classic, with an energy price, with an SLO, with random
   routing) and open arrivals (plain, SLO overall and per category, quality only under an SLO, random
   routing).
4. Analytic vs simulated delay: one two-model plan on the Galaxy S24 table with its rates scaled so
   each model runs at ρ = 0.5, 0.8, 0.95, evaluated analytically (M/D/1 per model) and simulated
   with Poisson and bursty (two-state MMPP, index of dispersion 4) arrivals.

Usage::

    python benchmarks/open_arrivals.py [--quick] [--full] [--repeats 5] [--cap 10] [--sections 1234] [--baseline REF]

``--quick`` runs a smaller version (Galaxy S24 only at paper scale, 8 models at large scale, the
cheaper objectives, shorter simulations, 3 genedge runs per median); ``--full`` adds the A100's slow
objectives to section 3 and runs section 2 without a cap (minutes per open run at 16 models);
``--sections 2`` runs section 2 alone. The default run takes about 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy
from _environment import cpu_name, source_state

from genedge import data
from genedge.contract.table_file import load_table
from genedge.optimizer.model import Problem, Slo, Workload
from genedge.optimizer.planners import (
    ITERATIONS_PER_GRID_STEP,
    METHODS,
    PROPOSED,
    PlanResult,
    exact_search,
    make_result,
    propose,
)
from genedge.optimizer.simulation import simulate_open_plan
from genedge.testing import synthetic_problem

#: PartiPrompts' prompts per category (the paper's four categories).
PARTI_MIX = {"Basic": 272, "Detail": 544, "Imagination": 150, "Complex": 113}
#: Delay weight w (CLIPScore points per second of mean delay) of every problem here but the large windows.
WEIGHT = 0.05
#: Planning window whose demand the window-model problems carry (requests = rate × window).
WINDOW_S = 60.0
#: SLO attainment (p95).
ATTAINMENT = 0.95
#: Energy price κ (points per Joule) of the energy objective.
ENERGY_PRICE = 0.01
#: Plan-time goals (s).
PAPER_GOAL_S = 0.1
#: The code section 1 times genedge against by default: main before shares were certified and round-robin
#: splits got their own queue law.
BASELINE_REF = "323c6ae"
LARGE_GOAL_S = 2.0


@dataclasses.dataclass(frozen=True)
class Instance:
    """A paper-scale instance: a shipped table, an open-arrival rate and a budget."""

    table: str
    rate: float
    budget: float

    def load(self):
        return load_table(data.path("tables", self.table + ".json"))

    def rates(self, scale: float = 1.0) -> Workload:
        total = sum(PARTI_MIX.values())
        return Workload.from_rates({c: scale * self.rate * n / total for c, n in PARTI_MIX.items()})

    def window(self) -> Workload:
        return Workload.from_mix(PARTI_MIX, round(self.rate * WINDOW_S))

    def open_problem(self, table, *, slo: Slo | None = None, **kwargs) -> Problem:
        kwargs.setdefault("weight", WEIGHT)
        return Problem.from_table(table, self.rates(), budget=self.budget, arrivals="open", slo=slo, **kwargs)

    def window_problem(self, table, **kwargs) -> Problem:
        kwargs.setdefault("weight", WEIGHT)
        return Problem.from_table(table, self.window(), budget=self.budget, **kwargs)


GALAXY = Instance("galaxy-s24", rate=0.2, budget=1.0)
A100 = Instance("reference-a100", rate=1.0, budget=1.0)


def header(args: argparse.Namespace) -> str:
    """The machine, the source and the run's settings."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    flags = "".join(f" {flag}" for flag, on in (("--quick", args.quick), ("--full", args.full)) if on) + (
        "" if args.sections == "1234" else f" --sections {args.sections}"
    )
    return (
        f"# python benchmarks/open_arrivals.py{flags} — {datetime.date.today().isoformat()}, "
        f"{cpu_name()}, {os.cpu_count()} cores, load average {load:.2f} at start\n"
        f"# python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"{platform.system()} {platform.release()}; genedge {source_state('optimizer')}\n"
        f"# plan times are each planner's own wall time (PlanResult.plan_time_s), genedge's at paper scale the "
        f"median of {args.repeats} runs"
    )


def fmt(value: float | None, spec: str = ".3f") -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def median_time(planner: Callable[[], PlanResult], repeats: int) -> tuple[float, PlanResult]:
    """Median of the planner's own wall time over ``repeats`` runs, and the last result."""
    results = [planner() for _ in range(repeats)]
    return statistics.median(r.plan_time_s for r in results), results[-1]


def binding_slo(problem: Problem) -> tuple[Slo, PlanResult]:
    """p95 ≤ half the p95 of genedge's plan without an SLO (rounded to whole seconds), and that plan."""
    free = propose(problem, rng=0)
    return Slo(float(max(1, round(free.p95_delay_s / 2))), ATTAINMENT), free


# ---------------------------------------------------------------------------------------------------------
# 1. Paper scale with an SLO


def paper_scale(instance: Instance, repeats: int) -> dict:
    """Every method on the instance's open-arrival problem under a binding SLO."""
    table = instance.load()
    slo, free = binding_slo(instance.open_problem(table))
    problem = instance.open_problem(table, slo=slo)
    rows = {}
    for name in METHODS:
        if name == PROPOSED:
            rows[name] = median_time(lambda: propose(problem, rng=0), repeats)
        else:
            result = METHODS[name](problem, rng=0)
            rows[name] = (result.plan_time_s, result)
    return {"instance": instance, "table": table, "slo": slo, "free": free, "problem": problem, "rows": rows}


def print_paper_scale(run: dict) -> None:
    instance, problem, slo, free = run["instance"], run["problem"], run["slo"], run["free"]
    print(
        f"\n{instance.table}: {len(problem.models)} models ({', '.join(problem.models)}), "
        f"{instance.rate:g} requests/s in PartiPrompts' mix, budget {instance.budget:g}, w = {WEIGHT}, "
        f"SLO {slo.describe()}"
    )
    print(
        f"  without the SLO genedge's plan has p95 {free.p95_delay_s:.2f} s (utility {free.utility:.4f}); "
        f"the SLO is half that, rounded"
    )
    print(
        f"  {'method':<18} {'plan time':>10} {'utility':>9} {'mean s':>8} {'p95 s':>8} {'attain':>7} "
        f"{'feasible':>8}  steps, ρ per model"
    )
    for name, (seconds, r) in run["rows"].items():
        rho = ", ".join("—" if u == 0 else f"{u:.2f}" for u in r.utilization)
        steps = ", ".join(str(s) if d else "—" for s, d in zip(r.plan.steps_per_model, r.deployed))
        print(
            f"  {name:<18} {fmt_ms(seconds):>10} {fmt(r.utility, '.4f'):>9} {fmt(r.mean_delay_s, '.2f'):>8} "
            f"{fmt(r.p95_delay_s, '.2f'):>8} {fmt(r.attainment, '.3f'):>7} {'yes' if r.feasible else 'NO':>8}  "
            f"({steps}), ({rho})"
        )
    seconds, ours = run["rows"][PROPOSED]
    exact = run["rows"]["exact"][1]
    verdict = "met" if seconds <= PAPER_GOAL_S else "missed"
    print(
        f"  genedge: median {fmt_ms(seconds)} (goal <= {PAPER_GOAL_S * 1000:.0f} ms: {verdict}), "
        f"{exact.plan_time_s / seconds:.1f}x faster than exact; utility {ours.utility:.4f} vs exact "
        f"{exact.utility:.4f}"
    )


# The child that plans with another commit's code: it mounts that tree's packages as the package-dir mapping of its
# pyproject.toml says (as an install would), then plans each case and prints JSON.
_BASELINE_CHILD = """
import importlib.util, json, statistics, sys, tomllib
from pathlib import Path
tree, cases, repeats = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
mapping = tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
for name, folder in sorted(mapping.items(), key=lambda item: item[0].count(".")):
    spec = importlib.util.spec_from_file_location(
        name, tree / folder / "__init__.py", submodule_search_locations=[str(tree / folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
from genedge.contract.table_file import load_table
from genedge.optimizer.model import Problem, Slo, Workload
from genedge.optimizer.planners import propose
out = {}
for case in cases:
    problem = Problem.from_table(
        load_table(case["table"]), Workload.from_rates(case["rates"]), budget=case["budget"], arrivals="open",
        weight=case["weight"], slo=Slo(case["slo_s"], case["attainment"]),
    )
    results = [propose(problem, rng=0) for _ in range(repeats)]
    last = results[-1]
    out[case["name"]] = {
        "seconds": statistics.median(r.plan_time_s for r in results),
        "utility": last.utility if last.feasible else None,
    }
print(json.dumps(out))
"""


def baseline_times(runs: dict[str, dict], ref: str, repeats: int) -> dict[str, dict] | str:
    """genedge's median plan time and utility on section 1's problems with the code at git ``ref``, by table name;
    or, where that code cannot be checked out here (not a git checkout, an unknown ref), why not."""
    root = Path(__file__).resolve().parents[1]
    cases = [
        {
            "name": name,
            "table": str(data.path("tables", name + ".json")),
            "rates": {c: float(r) for c, r in zip(run["problem"].categories, run["problem"].counts)},
            "budget": run["problem"].budget,
            "weight": run["problem"].weight,
            "slo_s": run["slo"].seconds,
            "attainment": run["slo"].attainment,
        }
        for name, run in runs.items()
    ]
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        added = subprocess.run(
            ["git", "-C", str(root), "worktree", "add", "--detach", str(tree), ref], capture_output=True, text=True
        )
        if added.returncode != 0:
            return f"no baseline: git could not check out {ref!r} ({added.stderr.strip().splitlines()[-1:]})"
        try:
            child = subprocess.run(
                [sys.executable, "-c", _BASELINE_CHILD, str(tree), json.dumps(cases), str(repeats)],
                capture_output=True,
                text=True,
                check=True,
            )
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)], capture_output=True)
    return json.loads(child.stdout)


def print_baseline(runs: dict[str, dict], baseline: dict[str, dict] | str, ref: str) -> None:
    """genedge now beside genedge at ``ref``, on each table's problem of section 1."""
    if isinstance(baseline, str):
        print(f"\n  {baseline}")
        return
    print(f"\n  genedge now vs at {ref}, same problems, same run (median plan time; utility as each evaluates it)")
    print(f"  {'table':<16} {'now':>10} {'at ' + ref:>12} {'speed-up':>9} {'utility now':>12} {'at ' + ref:>12}")
    for name, run in runs.items():
        seconds, ours = run["rows"][PROPOSED]
        old = baseline[name]
        print(
            f"  {name:<16} {fmt_ms(seconds):>10} {fmt_ms(old['seconds']):>12} {old['seconds'] / seconds:>8.2f}x "
            f"{fmt(ours.utility if ours.feasible else None, '.4f'):>12} {fmt(old['utility'], '.4f'):>12}"
        )


# ---------------------------------------------------------------------------------------------------------
# 2. Large scale


def capped_propose(problem: Problem, cap_s: float | None) -> tuple[PlanResult, int, int]:
    """genedge, stopped through its callback once ``cap_s`` seconds have passed: result, iterations, maxiter."""
    maxiter = ITERATIONS_PER_GRID_STEP * sum(problem.grid_sizes)
    start = time.perf_counter()
    done = [0]

    def stop(state) -> bool:
        done[0] = state.iteration
        return cap_s is not None and time.perf_counter() - start > cap_s

    result = propose(problem, rng=0, callback=stop)
    return result, done[0], maxiter


#: Where genedge's large open plan without an SLO is unstable, the SLO is this many fastest services.
FALLBACK_SLO_SERVICES = 10


def large_problems(n_models: int) -> tuple[Problem, Problem]:
    """The window problem of ``benchmarks/optimizer.py`` and an open-arrival version of its demand."""
    window = synthetic_problem(n_models, 11, 5000, weight=0.002, budget=4.0, rng=0)
    fastest = min(float(s.min()) for s in window.service_s)
    total = 0.5 * window.budget / fastest  # half the largest servable rate
    rates = window.counts / window.counts.sum() * total
    return window, dataclasses.replace(window, arrivals="open", counts=rates, weight=WEIGHT)


def large_scale(sizes: tuple[int, ...], cap_s: float | None) -> list[tuple]:
    """genedge on each size's window, open and open + SLO problems: (models, label, problem, result, done, maxiter).

    The SLO is half the p95 of genedge's open plan without one (itself capped where the cap applies),
    rounded to 0.1 s; where that plan is unstable, :data:`FALLBACK_SLO_SERVICES` times the fastest
    model's time per image on the whole device.
    """
    rows = []
    for n in sizes:
        window, open_ = large_problems(n)
        rows.append((n, "window", window, propose(window, rng=0), None, None))
        free, done, maxiter = capped_propose(open_, cap_s)
        rows.append((n, "open", open_, free, done, maxiter))
        if free.stable:
            seconds = max(0.1, round(free.p95_delay_s / 2, 1))
        else:
            seconds = round(FALLBACK_SLO_SERVICES * min(float(t.min()) for t in open_.service_s), 1)
        slo = Slo(seconds, ATTAINMENT)
        bound, done, maxiter = capped_propose(dataclasses.replace(open_, slo=slo), cap_s)
        rows.append((n, "open + SLO", dataclasses.replace(open_, slo=slo), bound, done, maxiter))
    return rows


def print_large_scale(rows: list[tuple], cap_s: float | None) -> None:
    print(
        f"  {'models':>6} {'delay model':<12} {'demand':>16} {'SLO':>18} {'plan time':>12} {'annealed':>11} "
        f"{'utility':>9} {'p95 s':>8} {'feasible':>8}"
    )
    window_time = {}
    for n, label, problem, r, done, maxiter in rows:
        demand = (
            f"{problem.n_requests:.2f} req/s"
            if problem.delay.arrivals.per_second
            else f"{problem.n_requests:.0f} requests"
        )
        slo = problem.slo.describe().replace(" (overall)", "") if problem.slo else "—"
        stopped = r.message != "Optimization terminated successfully"
        annealed = f"{done}/{maxiter}" if done is not None else "—"
        time_text = ("≥ " if stopped else "") + fmt_ms(r.plan_time_s)
        if not problem.delay.arrivals.per_second:
            window_time[n] = r.plan_time_s
        print(
            f"  {n:>6} {label:<12} {demand:>16} {slo:>18} {time_text:>12} {annealed:>11} {fmt(r.utility, '.4f'):>9} "
            f"{fmt(r.p95_delay_s, '.2f'):>8} {'yes' if r.feasible else 'NO':>8}"
        )
    if any(p.delay.steady_state and p.slo is None and not r.stable for _, _, p, r, *_ in rows):
        print(
            f"  an open plan without an SLO that is unstable (ρ >= 1 on a model) leaves no p95 to halve: the SLO "
            f"beside it is {FALLBACK_SLO_SERVICES} times the fastest model's time per image on the whole device"
        )
    worst = max((r.plan_time_s for n, label, p, r, *_ in rows if p.delay.arrivals.per_second), default=math.nan)
    any_stopped = any(r.message != "Optimization terminated successfully" for *_, r, _d, _m in rows)
    verdict = "met" if worst <= LARGE_GOAL_S and not any_stopped else "missed"
    print(
        f"  genedge under open arrivals: slowest {'≥ ' if any_stopped else ''}{fmt_ms(worst)} "
        f"(goal <= {LARGE_GOAL_S:g} s: {verdict}); window model: "
        + ", ".join(f"{n} models {fmt_ms(t)}" for n, t in window_time.items())
    )
    if any_stopped:
        print(
            f"  '≥': the run was stopped through genedge's callback after {cap_s:g} s of annealing (then its "
            f"best step vectors were polished); 'annealed' counts the iterations done of the full run's; "
            f"a stopped run's plan (and its feasibility) is the best among the step vectors it reached"
        )


# ---------------------------------------------------------------------------------------------------------
# 3. Certified gap under each objective


def objectives(instance: Instance, table, open_slo: Slo) -> dict[str, Callable[[], Problem]]:
    """Objective name → problem builder, on one instance (energy only where the table has it)."""
    has_energy = all(m.energy is not None for m in table.models.values())
    out: dict[str, Callable[[], Problem]] = {"window (classic)": lambda: instance.window_problem(table)}
    if has_energy:
        out["window + energy price"] = lambda: instance.window_problem(table, energy_price=ENERGY_PRICE)
    out["window + SLO"] = None  # filled in once the window's p95 is known (see certified_gaps)
    out["window, random routing"] = lambda: instance.window_problem(table, realization="random")
    out["open"] = lambda: instance.open_problem(table)
    out["open + SLO overall"] = lambda: instance.open_problem(table, slo=open_slo)
    out["open + SLO per category"] = lambda: instance.open_problem(
        table, slo=Slo(open_slo.seconds, open_slo.attainment, "category")
    )
    out["open, quality only (w=0) + SLO"] = lambda: instance.open_problem(table, slo=open_slo, weight=0.0)
    out["open, random routing"] = lambda: instance.open_problem(table, realization="random")
    return out


#: Objectives of section 3 with --quick, and on the A100 table without --full (the rest take minutes there).
QUICK_OBJECTIVES = frozenset(
    {"window (classic)", "window + SLO", "window, random routing", "open", "open + SLO overall", "open, random routing"}
)
A100_OBJECTIVES = frozenset({"window (classic)", "window + energy price", "window + SLO", "open", "open + SLO overall"})


def certified_gaps(
    instance: Instance, table, open_slo: Slo, names: set[str] | None, reuse: dict[str, PlanResult]
) -> list[tuple]:
    """genedge and exact on each objective: (name, problem, genedge, exact)."""
    builders = objectives(instance, table, open_slo)
    rows = []
    window_free = None
    for name, build in builders.items():
        if names is not None and name not in names:
            continue
        if name == "window + SLO":
            if window_free is None:
                window_free = propose(instance.window_problem(table), rng=0)
            wslo = Slo(float(max(1, round(window_free.p95_delay_s / 2))), ATTAINMENT)
            problem = instance.window_problem(table, slo=wslo)
        else:
            problem = build()
        ours = reuse.get(name + ":genedge") or propose(problem, rng=0)
        exact = reuse.get(name + ":exact") or exact_search(problem)
        if name == "window (classic)":
            window_free = ours
        rows.append((name, problem, ours, exact))
    return rows


def print_certified_gaps(instance: Instance, rows: list[tuple]) -> None:
    print(
        f"\n{instance.table} ({instance.rate:g} requests/s open; {round(instance.rate * WINDOW_S)} requests per "
        f"window; budget {instance.budget:g}; w = {WEIGHT} unless stated; energy price κ = {ENERGY_PRICE:g} points/J)"
    )
    print(
        f"  {'objective':<31} {'SLO':>22} {'genedge U':>10} {'exact U':>9} {'upper bd':>9} {'cert. gap':>10} "
        f"{'genedge gap':>11} {'genedge t':>10} {'exact t':>9}  note"
    )
    notes: dict[str, int] = {}
    for name, problem, ours, exact in rows:
        bound = exact.upper_bound
        cert = None if exact.certified_gap is None else 100 * exact.certified_gap
        gap = None
        if bound is not None:
            gap = math.inf if not ours.feasible else 100 * (bound - ours.utility) / abs(bound)
        mark = ""
        if exact.bound_note:
            mark = f"[{notes.setdefault(exact.bound_note, len(notes) + 1)}]"
        if not ours.feasible:
            mark += " genedge infeasible"
        slo = problem.slo.describe().replace("overall", "all") if problem.slo else "—"
        print(
            f"  {name:<31} {slo:>22} {fmt(ours.utility, '.4f'):>10} {fmt(exact.utility, '.4f'):>9} "
            f"{fmt(bound, '.4f'):>9} {fmt(cert, '.3f') + '%':>10} {fmt(gap, '.3f') + '%':>11} "
            f"{fmt_ms(ours.plan_time_s):>10} {fmt_ms(exact.plan_time_s):>9}  {mark}"
        )
    for note, k in notes.items():
        print(f"  [{k}] bound: {note}")


# ---------------------------------------------------------------------------------------------------------
# 4. Analytic vs simulated


#: The fixed two-model plan of section 4: category → model on the Galaxy S24 table, and each model's steps.
FIXED_ROUTES = {"Basic": "sd15", "Imagination": "sd15", "Detail": "sd21", "Complex": "sd21"}
FIXED_STEPS = {"sd15": 20, "sd21": 20}


def fixed_plan(table, rho: float, slo: Slo | None) -> tuple[Problem, PlanResult]:
    """The fixed plan at the rate that loads both models to ``rho``, with shares ∝ λ_m S_m (equal ρ)."""
    base = Problem.from_table(table, GALAXY.rates(), budget=GALAXY.budget, weight=WEIGHT, arrivals="open")
    models = list(base.models)
    routing = np.zeros((len(base.categories), len(models)))
    for c, category in enumerate(base.categories):
        routing[c, models.index(FIXED_ROUTES[category])] = 1.0
    steps = [int(np.searchsorted(base.steps[m], FIXED_STEPS[key])) for m, key in enumerate(models)]
    work = (base.counts @ routing) * base.service_at(steps)  # λ_m S_m at the base rate (GPU units)
    scale = rho * base.budget / work.sum()
    problem = Problem.from_table(
        table, GALAXY.rates(scale), budget=GALAXY.budget, weight=WEIGHT, arrivals="open", slo=slo
    )
    shares = problem.budget * work / work.sum()
    return problem, make_result(problem, "fixed", routing, steps, shares)


def analytic_vs_simulated(
    rhos: tuple[float, ...] = (0.5, 0.8, 0.95),
    *,
    n_requests: int = 200_000,
    replications: int = 5,
    burstiness: float = 4.0,
    slo: Slo | None = None,
    table=None,
) -> list[dict]:
    """For each ρ and arrival process: the plan's analytic figures and ``replications`` simulations' means."""
    table = GALAXY.load() if table is None else table
    rows = []
    for rho in rhos:
        problem, plan = fixed_plan(table, rho, slo)
        for process in ("poisson", "bursty"):
            sims = [
                simulate_open_plan(
                    problem, plan, process=process, burstiness=burstiness, n_requests=n_requests, rng=1000 * r + 7
                )
                for r in range(replications)
            ]
            mean = np.array([s.mean_s for s in sims])
            p95 = np.array([s.p95_s for s in sims])
            p99 = np.array([s.p99_s for s in sims])
            se = lambda x: float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan  # noqa: E731
            rows.append(
                {
                    "rho": rho,
                    "utilization": plan.utilization,
                    "rate": problem.n_requests,
                    "process": process if process == "poisson" else f"MMPP {burstiness:g}",
                    "requests": sum(s.requests for s in sims),
                    "mean": float(mean.mean()),
                    "mean_se": se(mean),
                    "batch_se": float(np.sqrt(np.mean([s.mean_se_s**2 for s in sims])) / math.sqrt(len(sims))),
                    "p95": float(p95.mean()),
                    "p95_se": se(p95),
                    "p99": float(p99.mean()),
                    "analytic_mean": plan.mean_delay_s,
                    "analytic_p95": plan.p95_delay_s,
                    "analytic_p99": plan.p99_delay_s,
                    "attainment": float(np.mean([s.attainment for s in sims])) if slo else None,
                    "analytic_attainment": plan.attainment,
                }
            )
    return rows


def print_analytic_vs_simulated(rows: list[dict], n_requests: int, replications: int, slo: Slo | None) -> None:
    print(
        f"  fixed plan: Basic, Imagination -> sd15 at {FIXED_STEPS['sd15']} steps; Detail, Complex -> sd21 at "
        f"{FIXED_STEPS['sd21']} steps; shares ∝ λ_m S_m so both models run at the same ρ; "
        f"{replications} runs of {n_requests:,} requests per row (first 10% of each left out)"
    )
    print("  error = (analytic − simulated) / simulated; z = (analytic − simulated) / standard error over the runs")
    att = f" {'attain a/s':>13}" if slo else ""
    print(
        f"  {'ρ':>5} {'req/s':>6} {'arrivals':<9} {'mean a':>7} {'mean s':>7} {'± se':>6} {'error':>8} {'z':>6} "
        f"{'p95 a':>7} {'p95 s':>7} {'± se':>6} {'error':>8} {'z':>6} {'p99 a':>7} {'p99 s':>7} {'error':>8}{att}"
    )
    for r in rows:
        e_mean = (r["analytic_mean"] - r["mean"]) / r["mean"]
        e_p95 = (r["analytic_p95"] - r["p95"]) / r["p95"]
        e_p99 = (r["analytic_p99"] - r["p99"]) / r["p99"]
        z_mean = (r["analytic_mean"] - r["mean"]) / r["mean_se"]
        z_p95 = (r["analytic_p95"] - r["p95"]) / r["p95_se"]
        extra = f" {r['analytic_attainment']:.3f}/{r['attainment']:.3f}" if slo else ""
        print(
            f"  {r['rho']:>5.2f} {r['rate']:>6.3f} {r['process']:<9} {r['analytic_mean']:>7.2f} {r['mean']:>7.2f} "
            f"{r['mean_se']:>6.3f} {100 * e_mean:>+7.1f}% {z_mean:>+6.1f} {r['analytic_p95']:>7.2f} {r['p95']:>7.2f} "
            f"{r['p95_se']:>6.3f} {100 * e_p95:>+7.1f}% {z_p95:>+6.1f} {r['analytic_p99']:>7.2f} {r['p99']:>7.2f} "
            f"{100 * e_p99:>+7.1f}%{extra}"
        )
    poisson = [r for r in rows if r["process"] == "poisson"]
    bursty = [r for r in rows if r["process"] != "poisson"]
    worst_z = max(abs(r["analytic_mean"] - r["mean"]) / r["mean_se"] for r in poisson)
    worst_p = max(abs(r["analytic_mean"] - r["mean"]) / r["mean"] for r in poisson)
    print(
        f"  Poisson: analytic means within {100 * worst_p:.1f}% of the simulated ones (|z| <= {worst_z:.1f}); "
        f"bursty: the analytic mean is "
        + ", ".join(f"{100 * (1 - r['analytic_mean'] / r['mean']):.0f}% below at ρ = {r['rho']:g}" for r in bursty)
        + " (M/D/1 assumes Poisson)"
    )


# ---------------------------------------------------------------------------------------------------------


def light_run(instance: Instance) -> dict:
    """What sections 3 and 4 need of section 1 where it is not run: the table, the SLO, the plan without it."""
    table = instance.load()
    slo, free = binding_slo(instance.open_problem(table))
    return {"instance": instance, "table": table, "slo": slo, "free": free, "rows": None}


def parse_args() -> argparse.Namespace:
    """The options, with ``--repeats`` and ``--cap`` resolved (``cap`` None: no cap)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller version (about 40 s on 2 cores)")
    parser.add_argument("--full", action="store_true", help="every objective on both tables; no cap at large scale")
    parser.add_argument("--repeats", type=int, default=None, help="genedge runs per paper-scale median (5; 3 quick)")
    parser.add_argument("--cap", type=float, default=None, help="seconds of annealing per large open run")
    parser.add_argument("--sections", default="1234", help="which sections to run, e.g. 2 or 34 (default 1234)")
    parser.add_argument(
        "--baseline",
        default=BASELINE_REF,
        help=f"git commit whose genedge section 1 times side by side ({BASELINE_REF}); 'none' to skip",
    )
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    args.cap = None if args.full else (args.cap if args.cap is not None else (3.0 if args.quick else 10.0))
    return args


def run_paper_scale(instances: tuple[Instance, ...], repeats: int, baseline: str) -> dict[str, dict]:
    """Section 1; its runs by table name, for sections 3 and 4 to reuse."""
    print("\n1. Plan time at paper scale, open arrivals with a binding SLO")
    paper = {}
    for instance in instances:
        paper[instance.table] = run = paper_scale(instance, repeats)
        print_paper_scale(run)
    if baseline != "none":
        print_baseline(paper, baseline_times(paper, baseline, repeats), baseline)
    return paper


def run_large_scale(quick: bool, cap: float | None) -> None:
    print("\n2. Plan time at large scale (synthetic, 11 categories, 7 step choices per model, R = 4)")
    sizes = (8,) if quick else (8, 16)
    print_large_scale(large_scale(sizes, cap), cap)


def gap_objectives(instance: Instance, args: argparse.Namespace) -> frozenset[str] | None:
    """The objectives section 3 runs on the instance (None: all of them)."""
    if args.full or (instance is GALAXY and not args.quick):
        return None
    return QUICK_OBJECTIVES if args.quick else A100_OBJECTIVES


def run_certified_gaps(instances: tuple[Instance, ...], paper: dict[str, dict], args: argparse.Namespace) -> None:
    print("\n3. Certified gap under each objective (gap = (upper bound − utility) / |upper bound|)")
    for instance in instances:
        run = paper.get(instance.table) or light_run(instance)
        reuse = {"open:genedge": run["free"]}
        if run["rows"] is not None:
            reuse["open + SLO overall:genedge"] = run["rows"][PROPOSED][1]
            reuse["open + SLO overall:exact"] = run["rows"]["exact"][1]
        names = gap_objectives(instance, args)
        print_certified_gaps(instance, certified_gaps(instance, run["table"], run["slo"], names, reuse))
    if not args.full:
        left = "galaxy-s24's per-category and quality-only" if args.quick else "reference-a100's other"
        print(f"  (not run here, see --full: {left} objectives, whose exact searches take tens of seconds each)")


def run_analytic_vs_simulated(paper: dict[str, dict], quick: bool) -> None:
    print("\n4. Analytic (M/D/1 per model) vs simulated response time, galaxy-s24")
    n_requests, replications = (100_000, 4) if quick else (200_000, 5)
    slo = (paper.get(GALAXY.table) or light_run(GALAXY))["slo"]
    rows = analytic_vs_simulated(n_requests=n_requests, replications=replications, slo=slo)
    print_analytic_vs_simulated(rows, n_requests, replications, slo)


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    print(header(args))
    instances = (GALAXY,) if args.quick else (GALAXY, A100)
    paper = run_paper_scale(instances, args.repeats, args.baseline) if "1" in args.sections else {}
    if "2" in args.sections:
        run_large_scale(args.quick, args.cap)
    if "3" in args.sections:
        run_certified_gaps(instances, paper, args)
    if "4" in args.sections:
        run_analytic_vs_simulated(paper, args.quick)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"\n# whole run {time.perf_counter() - started:.0f} s; load average {load:.2f} at the end")


if __name__ == "__main__":
    main()
