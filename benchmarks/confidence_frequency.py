"""How often a plan's claimed confidence is right: reliability tables on ground truths with real CLIPScores.

``genedge plan`` says how sure each decision is: the share of the table's bootstrap samples whose own optimum
decides the same. That is a posterior probability. This benchmark checks it as a frequency: each repetition
profiles a ground truth with n images per cell, fits the table, plans (exact search), and assesses the plan
(the bootstrap, 200 samples); the truth's own optimum says whether each decision was right, and its
utility what the plan really lost (the realized regret, against the claimed expected regret).

Ground truths (those of ``benchmarks/adaptive_profiling.py``, planned the same way):

- TIFA: SD 1.5 and SD 2.1, real per-prompt CLIPScores of the same PartiPrompts prompts;
- SD3-Medium: two variants, real per-prompt CLIPScores of the same 20 prompts per Challenge;
- synthetic: Normal scores with known parameters, seed 0 (no prompt effect: every image errs on its own).

Profiling, two ways:

- *same prompts*: as genedge profiles, every cell of a category draws the same prompts (with replacement
  from the truth's), and the table pairs its cells (their errors are drawn jointly);
- *own prompts*: every cell draws its own prompts, and the table has no pairing.

Printed per truth, n and profiling: for the deployment decisions and for the routing decisions, the claims
in bins of claimed probability (how many, the mean claim, how often right, and whether that is within the
claims' binomial 99 % interval: ``ok``, ``OVER`` for over-confident or ``under``), each kind's Brier score,
and the mean claimed against the mean realized regret.

Usage::

    python benchmarks/confidence_frequency.py [--reps 100] [--images 5,20] [--jobs 2] [--data PATH]

The committed results (``benchmarks/results/confidence-frequency.txt``) are this command's output with the
defaults, a few minutes at most on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from _environment import cpu_name, source_state
from adaptive_profiling import (
    BUDGET,
    DEFAULT_DATA,
    WEIGHT,
    Truth,
    sd3_truth,
    synthetic_truth,
    tifa_truth,
    true_regret,
)
from scipy import stats

from genedge.calibrate.cells import PopulationTruth, table_with_scores
from genedge.optimizer.analysis import Decision, assess, parameter_model
from genedge.optimizer.model import Problem
from genedge.optimizer.planners import PlanResult, exact_search

#: The synthetic truth's seed (seed 0 of the adaptive profiling benchmark's unfiltered draws).
SYNTHETIC_SEED = 0
#: Bootstrap samples per assessment (``genedge plan``'s default).
SAMPLES = 200
#: Claimed-probability bins.
BINS = ((0.0, 0.5), (0.5, 0.8), (0.8, 0.95), (0.95, 1.0 + 1e-9))
#: The binomial interval a bin's right count is judged by.
LEVEL = 0.99


def profile(truth: Truth, images: int, same_prompts: bool, rep: int) -> tuple[dict, dict | None]:
    """One repetition's scores per cell, and which image each is where the cells of a category share them."""
    rng = np.random.default_rng(rep)
    if not same_prompts:
        return {cell: np.asarray(truth.truth.draw(cell, images, rng), dtype=float) for cell in truth.cells}, None
    population = truth.truth.population
    size = {cell[1]: population[cell].size for cell in truth.cells}
    prompts = {category: rng.integers(0, n, images) for category, n in size.items()}
    scores = {cell: population[cell][prompts[cell[1]]] for cell in truth.cells}
    keys = {cell: [(int(p), i) for i, p in enumerate(prompts[cell[1]])] for cell in truth.cells}
    return scores, keys


def repetition(truth: Truth, best: PlanResult, images: int, same_prompts: bool, rep: int) -> dict[str, list]:
    """Claims (probability, right) per decision kind, and (claimed, realized) regret, of one repetition;
    ``best`` is the truth's own optimal plan."""
    true_problem = truth.true_problem
    decision = Decision.of(best)
    deployed, routed = decision.deployed(true_problem), decision.key(true_problem)[0]
    scores, keys = profile(truth, images, same_prompts, rep)
    table = table_with_scores(truth.base, scores, keys)
    problem = Problem.from_table(table, truth.workload, budget=BUDGET, weight=WEIGHT)
    plan = exact_search(problem)
    a = assess(parameter_model(table, problem), plan, samples=SAMPLES, rng=rep)
    realized = true_regret(truth, Decision.of(plan), best.utility)
    return {
        "deploy": [
            (a.deployment[key][1], a.deployment[key][0] == bool(deployed[j]))
            for j, key in enumerate(true_problem.models)
        ],
        "routing": [
            (a.routing[c][1], a.routing[c][0] == true_problem.models[routed[i]])
            for i, c in enumerate(true_problem.categories)
        ],
        "regret": [(a.expected_regret, realized)],
    }


def verdict(right: int, count: int, claimed: float) -> str:
    """Whether ``right`` of ``count`` lies in the binomial interval of the claims' mean probability."""
    lo, hi = stats.binom.interval(LEVEL, count, claimed)
    return "OVER" if right < lo else "under" if right > hi else "ok"


def reliability(claims: np.ndarray) -> list[str]:
    """One line per bin with claims."""
    lines = []
    for lo, hi in BINS:
        inside = claims[(claims[:, 0] >= lo) & (claims[:, 0] < hi)]
        if len(inside):
            right, claimed = int(inside[:, 1].sum()), float(inside[:, 0].mean())
            bin_ = f"[{lo:.2f}, {min(hi, 1.0):.2f}{')' if hi <= 1 else ']'}"
            lines.append(
                f"    {bin_:<13} {len(inside):>5} {claimed:>8.3f} {right / len(inside):>7.3f}  "
                f"{verdict(right, len(inside), claimed)}"
            )
    return lines


def report(name: str, images: int, same_prompts: bool, runs: Sequence[dict[str, list]]) -> list[str]:
    """The reliability tables of one truth, image count and profiling."""
    how = "same prompts, paired cells" if same_prompts else "own prompts per cell"
    lines = [f"\n{name}, {images} images per cell, {how}, {len(runs)} repetitions"]
    for kind in ("deploy", "routing"):
        claims = np.array([c for run in runs for c in run[kind]], dtype=float)
        brier = float(np.mean((claims[:, 0] - claims[:, 1]) ** 2))
        lines.append(f"  {kind} decisions ({len(claims)}), Brier {brier:.3f}")
        lines.append(f"    {'claimed':<13} {'count':>5} {'mean':>8} {'right':>7}  in {LEVEL:.0%} interval")
        lines.extend(reliability(claims))
    regret = np.array([r for run in runs for r in run["regret"]])
    se = regret[:, 1].std(ddof=1) / np.sqrt(len(regret))
    lines.append(
        f"  expected regret claimed {regret[:, 0].mean():.3f}, realized {regret[:, 1].mean():.3f} ± {se:.3f} "
        f"(points, mean over repetitions ± SE)"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=100, help="seeded repetitions per setting (default 100)")
    parser.add_argument("--images", default="5,20", help="comma-separated images per cell (default 5,20)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="repetitions at once (default: CPUs)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data sets (default ../shared/data)")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"error: the shared data folder {args.data} does not exist; give its path with --data")
    started = time.perf_counter()
    print(
        f"{cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}; genedge "
        f"{source_state('optimizer', 'calibrate')}; {SAMPLES} bootstrap samples, exact plans"
    )
    truths = [tifa_truth(args.data), sd3_truth(args.data), synthetic_truth(SYNTHETIC_SEED)]
    images = [int(v) for v in args.images.split(",")]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for truth in truths:
            best = exact_search(truth.true_problem)
            for n in images:
                for same in (True, False) if isinstance(truth.truth, PopulationTruth) else (False,):
                    settings = [(truth, best, n, same, rep) for rep in range(args.reps)]
                    runs = list(pool.map(repetition, *zip(*settings)))
                    print("\n".join(report(truth.name, n, same, runs)), flush=True)
    print(f"\n# whole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
