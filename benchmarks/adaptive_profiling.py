"""Adaptive against uniform profiling on ground truth: images to a sure plan, and the true regret on the way.

A ground truth stands in for the GPU: every image of a (model, category, steps) cell is a score drawn
from it, and the true problem (the truth's cell means in a table) says what each plan is really
worth. Both strategies start from the same first batch of ``--first`` images in every cell and then
measure ``--batch`` images at a time:

- adaptive: refit the table, plan (exact search), and ask :func:`genedge.optimizer.analysis.next_batch`
  which cell to measure (the largest cut in the bootstrap's expected regret) or whether to stop
  (every routing, steps and deployment decision of the plan at least 95 % sure);
- uniform: the next cell in a fixed round-robin order; the plan's confidence (the same bootstrap,
  :func:`genedge.optimizer.analysis.assess`) is checked every quarter round, and inside the
  quarter that first reaches 95 % at every batch.

Each repetition draws its images from per-cell seeded streams, so both strategies see the same k-th
image of a cell (common random numbers), and a bootstrap at a given image count has the same seed in
both. A strategy stops at 95 % (or when the next batch would exceed the image budget) and keeps its
last plan. Printed per truth: the images each needed to reach 95 % (median over the repetitions, and
how many did not within the budget), their ratio, and the true regret U*(truth) − U(plan; truth) of
each strategy's plan at equal image counts, where U is the utility (mean CLIPScore points minus
w × mean delay) on the true problem.

Ground truths (all planned as a 60-request window, R = 1, w = 0.05, in PartiPrompts' category mix):

1. Synthetic: Normal scores with known parameters, 3 models (the reference A100 table's sd15, sd21
   and sdxl latency lines, rounded) × 4 categories × 2 step counts (20, 50); the means are drawn
   seeded, and the first seed is taken whose hardest decision can be 95 % sure with at most 80 images
   per cell (:func:`synthetic_truth`): with per-image spreads of 3–4.5 points most draws have a
   near-tie that takes thousands of images per cell, which neither strategy reaches in this run time.
2. TIFA: real per-prompt CLIPScores (ViT-B/32) of SD 1.5 and SD 2.1 on the 51 PartiPrompts prompts of
   TIFA v1.0, on the four Challenges with at least 7 prompts, one step count (50; TIFA does not record
   its steps) and the reference A100 table's latency lines; scores are resampled from each cell's
   prompts with replacement, and a cell's truth is their mean.
3. SD3-Medium: per-prompt CLIPScores (ViT-B/16) of SD3-Medium on 20 prompts per Challenge (DiTServing),
   PartiPrompts' four largest Challenges: the diffusers run at 50 steps and the unlabelled run taken as
   28 steps (the README's note) as one model, and the attention-caching run with cache interval 4
   (50 steps) as a second model with an assumed latency (:data:`SD3_CACHE4_STEP_FRACTION`); the
   latency line is ML.ENERGY's SD 3.5 Medium on an H100 (:data:`SD3_PER_STEP_S`); resampled like TIFA.

Each truth also prints its closest decisions: the utility the best whole-category plan deciding
otherwise loses, and the images per cell that make that margin 1.645 standard errors (:class:`Margin`).
The latency lines are known exactly (no standard errors), so only quality cells are uncertain and
profiled. The data of truths 2 and 3 is read from ``--data`` (default ``../shared/data`` beside the
repository); the script stops with a message where that folder is missing.

Usage::

    python benchmarks/adaptive_profiling.py [--reps 10] [--samples 100] [--batch 10] [--first 3]
        [--budget-per-cell 400] [--truths 123] [--jobs 2] [--seed 0] [--data PATH]

The committed results (``benchmarks/results/adaptive-profiling.txt``) are this command's output with
the defaults, ``python benchmarks/adaptive_profiling.py | tee benchmarks/results/adaptive-profiling.txt``;
it takes about 2 minutes on 2 cores (two repetitions at a time). The run time is kept there by 10
repetitions, 100 bootstrap samples, batches of 10 images and four categories per truth: an adaptive
decision costs a bootstrap per cell (0.04–0.2 s a decision here), and a repetition takes 50–90 of them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import scipy
from _environment import ROOT, cpu_name, source_state

from genedge import data
from genedge.calibrate.cells import Cell, NormalTruth, PopulationTruth, table_with_scores
from genedge.contract.table import CalibrationTable
from genedge.contract.table_file import load_table, table_from_dict
from genedge.optimizer.analysis import Decision, assess, next_batch, parameter_model
from genedge.optimizer.model import Problem, Workload, evaluate, utility_with_optimal_shares
from genedge.optimizer.planners import exact_search

#: Where the shared data sets are by default: ``shared/data`` beside the repository.
DEFAULT_DATA = ROOT.parent / "shared" / "data"
#: Requests in the planning window (one minute at 1 request/s), compute budget R and delay weight w.
REQUESTS = 60
BUDGET = 1.0
WEIGHT = 0.05
#: The decision confidence both strategies stop at.
TARGET = 0.95
#: PartiPrompts' prompts per category of the paper's four categories (the synthetic truth's mix).
PARTI_MIX = {"Basic": 272, "Detail": 544, "Imagination": 150, "Complex": 113}
#: The TIFA Challenges with at least 7 of the 51 prompts (fewer leave too small a population to resample).
TIFA_CHALLENGES = ("Fine-grained Detail", "Simple Detail", "Style & Format", "Imagination")
TIFA_STEPS = 50
#: SD3-Medium on an H100 at batch 1 (ML.ENERGY v3, SD 3.5 Medium): 3.525 s at 28 steps, i.e. 0.126 s per
#: step with the text encoder and VAE folded in (no separate overhead is published).
SD3_PER_STEP_S = 3.525 / 28
#: Assumed (no latency is published for the cache runs): the cache-interval-4 run's step takes half a full
#: step's time, 3.15 s per image at 50 steps against 3.53 s at 28. DeepCache, a feature cache on SD's UNet,
#: is 2.3x faster at interval 3 (../shared/data/PUBLISHED.md); attention caching alone saves less.
SD3_CACHE4_STEP_FRACTION = 0.5


# ---------------------------------------------------------------------------------------------------------
# Ground truths


@dataclasses.dataclass(frozen=True)
class Truth:
    """A ground truth: where images come from, and the true problem plans are scored on.

    Attributes:
        name: a short label.
        about: lines that say how the truth was built.
        base: the table profiling starts from (its cells are replaced by the first batch).
        truth: draws a cell's scores.
        true_problem: the problem on the truth's cell means.
        workload: requests per category.
        cells: every (model, category, steps) cell, in the uniform strategy's round-robin order.
    """

    name: str
    about: tuple[str, ...]
    base: CalibrationTable
    truth: NormalTruth | PopulationTruth
    true_problem: Problem
    workload: Workload
    cells: tuple[Cell, ...]


def table_doc(
    models: Mapping[str, tuple[float, float, tuple[int, ...]]],
    categories: Sequence[str],
    mean: Mapping[Cell, float],
    std: Mapping[Cell, float],
    n: Mapping[Cell, int],
    convention: str,
) -> dict:
    """A calibration table document: each model's latency line and one measured cell per grid step.

    ``models`` maps a key to (overhead s, per-step s, step grid); the grid is exactly the profiled step
    counts, so no curve is needed. Memory is no constraint (1 GiB per model on an 80 GiB device).
    """
    sourced = {"source": "measured", "ref": "truth"}
    doc_models = {}
    for key, (overhead, per_step, steps) in models.items():
        quality = {
            c: {
                str(s): {"mean": mean[key, c, s], "std": std[key, c, s], "n": n[key, c, s], "gof": None, **sourced}
                for s in steps
            }
            for c in categories
        }
        doc_models[key] = {
            "name": key,
            "resolution": 512,
            "steps": list(steps),
            "default_steps": steps[-1],
            "quality": quality,
            "latency": {"overhead_s": overhead, "per_step_s": per_step, "n": 10, "r2": None, **sourced},
            "memory": {"peak_bytes": 2**30, "kind": "assumed", **sourced},
        }
    return {
        "schema_version": 1,
        "kind": "genedge.calibration_table",
        "device": {"name": "ground truth", "memory_bytes": 80 * 2**30},
        "clip_convention": {
            "backbone": convention,
            "pretrained": "openai",
            "formula": "100*max(cos,0)",
            "truncation": "77",
            "preprocess": "val",
        },
        "categories": list(categories),
        "category_mapping": {"column": "Challenge", "labels": {c: [c] for c in categories}},
        "models": doc_models,
        "sources": {"truth": {"kind": "ground truth"}},
        "manifest": {},
    }


def make_truth(
    name: str,
    about: Sequence[str],
    models: Mapping[str, tuple[float, float, tuple[int, ...]]],
    mix: Mapping[str, float],
    truth: NormalTruth | PopulationTruth,
    true_std: Mapping[Cell, float],
    true_n: Mapping[Cell, int],
    convention: str,
) -> Truth:
    """The truth's base table (placeholder cells) and true problem (its cell means and spreads)."""
    categories = tuple(mix)
    cells = tuple((key, c, s) for key, (_, _, steps) in models.items() for c in categories for s in steps)
    placeholder = table_from_dict(
        table_doc(
            models,
            categories,
            dict.fromkeys(cells, 30.0),
            dict.fromkeys(cells, 3.0),
            dict.fromkeys(cells, 2),
            convention,
        )
    )
    true_mean = {cell: truth.cell_mean(cell) for cell in cells}
    true_table = table_from_dict(table_doc(models, categories, true_mean, true_std, true_n, convention))
    workload = Workload.from_mix(mix, REQUESTS)
    problem = Problem.from_table(true_table, workload, budget=BUDGET, weight=WEIGHT)
    return Truth(name, tuple(about), placeholder, truth, problem, workload, cells)


#: The synthetic truth's models: (overhead s, per-step s, step grid), the reference A100 table's sd15, sd21
#: and sdxl lines rounded.
SYNTHETIC_MODELS = {
    "sd15-like": (0.12, 0.032, (20, 50)),
    "sd21-like": (0.16, 0.042, (20, 50)),
    "sdxl-like": (0.16, 0.108, (20, 50)),
}
#: Mean CLIPScore of each synthetic model above the first's, and of each category above Detail's (points).
SYNTHETIC_LEVEL = {"sd15-like": 0.0, "sd21-like": 0.9, "sdxl-like": 2.1}
SYNTHETIC_OFFSET = {"Basic": -1.5, "Detail": 0.0, "Imagination": 1.0, "Complex": 2.0}
#: Spread of the seeded (model, category) interaction (points).
SYNTHETIC_INTERACTION = 1.5
#: The synthetic truth's hardest decision takes at most this many images per cell to be 95 % sure of at its
#: true margin (:class:`Margin`): a harder one takes thousands, beyond what this benchmark can run.
SYNTHETIC_MAX_IMAGES = 80


def synthetic_means(seed: int) -> tuple[dict[Cell, float], dict[Cell, float]]:
    """Means and spreads of the synthetic cells drawn with ``seed`` (:func:`synthetic_truth`)."""
    gen = np.random.default_rng(seed)
    mean, std = {}, {}
    for key, (_, _, steps) in SYNTHETIC_MODELS.items():
        for c in PARTI_MIX:
            interaction = gen.normal(0.0, SYNTHETIC_INTERACTION)
            for s in steps:
                base = 31.0 + SYNTHETIC_LEVEL[key] + SYNTHETIC_OFFSET[c] + interaction
                mean[key, c, s] = base - 4.0 * math.exp(-s / 10)
                std[key, c, s] = float(gen.uniform(3.0, 4.5))
    return mean, std


def synthetic_truth(first_seed: int = 0) -> Truth:
    """Normal scores: a model level + a category offset + a seeded interaction − a step penalty.

    mean(m, c, s) = 31 + level_m + offset_c + N(0, 1.5²) − 4·exp(−s/10) and std ~ Uniform(3, 4.5), drawn
    with the first seed from ``first_seed`` on whose hardest decision takes at most
    :data:`SYNTHETIC_MAX_IMAGES` images per cell (:class:`Margin`). The levels rise with the models'
    cost, so a slower model wins a category only where its gain there pays for its delay.
    """
    for seed in itertools.count(first_seed):
        mean, std = synthetic_means(seed)
        truth = make_truth(
            "synthetic (Normal)",
            (),
            SYNTHETIC_MODELS,
            PARTI_MIX,
            NormalTruth(mean, std),
            std,
            dict.fromkeys(mean, 10_000),
            "ViT-B-32",
        )
        if max(m.images for m in decision_margins(truth.true_problem)) <= SYNTHETIC_MAX_IMAGES:
            break
    levels = ", ".join(f"{v:g}" for v in SYNTHETIC_LEVEL.values())
    offsets = ", ".join(f"{c} {v:g}" for c, v in SYNTHETIC_OFFSET.items())
    scores = (
        f"Normal scores: mean = 31 + model level ({levels}) + category offset ({offsets}) + "
        f"N(0, {SYNTHETIC_INTERACTION:g}²) per (model, category) - 4·exp(-steps/10), std ~ U(3, 4.5); "
        f"seed {seed}, the first from {first_seed} whose hardest decision takes <= {SYNTHETIC_MAX_IMAGES} images "
        f"per cell"
    )
    lines = ", ".join(f"{k} {o:g} + {p:g} s" for k, (o, p, _) in SYNTHETIC_MODELS.items())
    latency = f"latency (overhead + per step): {lines} (the reference A100 table's sd15, sd21, sdxl lines rounded)"
    return dataclasses.replace(truth, about=(scores, latency + "; steps 20 and 50"))


def read_tsv(path: Path) -> list[dict[str, str]]:
    """A tab-separated file with a header row (prompts contain quotes, so none are interpreted)."""
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def challenge_mix(data_dir: Path, challenges: Sequence[str]) -> dict[str, int]:
    """PartiPrompts' prompts per Challenge, for the given Challenges."""
    counts = {c: 0 for c in challenges}
    for row in read_tsv(data_dir / "PartiPrompts.tsv"):
        if row["Challenge"] in counts:
            counts[row["Challenge"]] += 1
    return counts


def population_truth(
    name: str,
    about: Sequence[str],
    models: Mapping[str, tuple[float, float, tuple[int, ...]]],
    mix: Mapping[str, float],
    population: Mapping[Cell, np.ndarray],
    convention: str,
) -> Truth:
    """A truth that resamples each cell's per-prompt scores; its spreads are the populations' (ddof = 0)."""
    std = {cell: float(np.std(values)) for cell, values in population.items()}
    n = {cell: int(values.size) for cell, values in population.items()}
    return make_truth(name, about, models, mix, PopulationTruth(population), std, n, convention)


def reference_lines() -> dict[str, tuple[float, float]]:
    """(overhead s, per-step s) of the shipped reference A100 table's models."""
    table = load_table(data.path("tables", "reference-a100.json"))
    return {key: (m.latency.overhead_s, m.latency.per_step_s) for key, m in table.models.items()}


def tifa_truth(data_dir: Path) -> Truth:
    """SD 1.5 and SD 2.1 on TIFA's PartiPrompts prompts, per Challenge, at one step count."""
    folder = data_dir / "tifa-human-clip"
    challenge = {row["text_id"]: row["Challenge"] for row in read_tsv(folder / "DERIVED_partiprompt_map.tsv")}
    with open(folder / "human_annotations_with_scores.json", encoding="utf-8") as f:
        images = json.load(f)
    lines = reference_lines()
    suffix = {"sd15": "stable_diffusion_v1_5", "sd21": "stable_diffusion_v2_1"}
    models = {key: (*lines[key], (TIFA_STEPS,)) for key in suffix}
    population = {}
    for key, name in suffix.items():
        for c in TIFA_CHALLENGES:
            ids = sorted(t for t, ch in challenge.items() if ch == c)
            population[key, c, TIFA_STEPS] = np.array([images[f"{t}_{name}"]["clipscore_vitb32"] for t in ids])
    sizes = ", ".join(f"{c} {population['sd15', c, TIFA_STEPS].size}" for c in TIFA_CHALLENGES)
    scores = f"per-prompt CLIPScore (ViT-B/32) of SD 1.5 and SD 2.1 on TIFA's PartiPrompts prompts: {sizes} prompts"
    lines = ", ".join(f"{k} {o:.3f} + {p:.4f} s/step" for k, (o, p, _) in models.items())
    about = (scores, f"one step count ({TIFA_STEPS}, nominal); latency: the reference A100 table's lines, {lines}")
    mix = challenge_mix(data_dir, TIFA_CHALLENGES)
    return population_truth("TIFA SD 1.5 / SD 2.1", about, models, mix, population, "ViT-B-32")


#: The SD3 truth's Challenges: PartiPrompts' four largest. All 11 take too long here: every bootstrap
#: sample's optimum is searched over 2^C whole-category routings, and each cell adds a bootstrap per decision.
SD3_CHALLENGES = ("Basic", "Fine-grained Detail", "Simple Detail", "Style & Format")


def sd3_truth(data_dir: Path) -> Truth:
    """SD3-Medium at 28 and 50 steps and its cache-interval-4 variant, per Challenge."""
    folder = data_dir / "ditserving-sd3-parti"
    challenge = {row["key"]: row["Challenge"] for row in read_tsv(folder / "DERIVED_p2_key_map.tsv")}
    runs = {
        ("sd3m", 28): ("clip_scores_by_prompt.json", ""),
        ("sd3m", 50): ("clip_scores_by_prompt_diffusers.json", ""),
        ("sd3m-cache4", 50): ("clip_scores_by_prompt_custom_4.json", "_cache_4"),
    }
    population = {}
    for (key, steps), (file, suffix) in runs.items():
        with open(folder / file, encoding="utf-8") as f:
            scores = {k.removesuffix(suffix): v for k, v in json.load(f).items()}
        for c in SD3_CHALLENGES:
            population[key, c, steps] = np.array([scores[k] for k in sorted(challenge) if challenge[k] == c])
    models = {
        "sd3m": (0.0, SD3_PER_STEP_S, (28, 50)),
        "sd3m-cache4": (0.0, SD3_CACHE4_STEP_FRACTION * SD3_PER_STEP_S, (50,)),
    }
    scores = (
        "per-prompt CLIPScore (ViT-B/16) of SD3-Medium, 20 prompts per Challenge, PartiPrompts' four largest "
        "Challenges: sd3m = the unlabelled run (taken as 28 steps) and the diffusers run (50 steps); "
        "sd3m-cache4 = the cache-interval-4 run (50 steps)"
    )
    latency = (
        f"latency: sd3m {SD3_PER_STEP_S:.4f} s/step (ML.ENERGY v3, SD 3.5 Medium, H100, 3.525 s at 28 steps); "
        f"sd3m-cache4 assumed {SD3_CACHE4_STEP_FRACTION:g} of that per step "
        f"({50 * SD3_CACHE4_STEP_FRACTION * SD3_PER_STEP_S:.2f} s per image)"
    )
    about = (scores, latency)
    mix = challenge_mix(data_dir, SD3_CHALLENGES)
    return population_truth("SD3-Medium", about, models, mix, population, "ViT-B-16")


# ---------------------------------------------------------------------------------------------------------
# The truth's own decisions


def true_regret(truth: Truth, decision: Decision, optimum: float) -> float:
    """U*(truth) − U(plan; truth): the plan's routing, steps and shares evaluated on the true problem."""
    problem = truth.true_problem
    return optimum - evaluate(problem, decision.routing, decision.step_index, decision.shares).utility


#: One-sided 95 % normal quantile: a decision is 95 % sure once its margin is this many standard errors.
Z95 = 1.645


@dataclasses.dataclass(frozen=True)
class Margin:
    """What one decision of the truth's optimal whole-category plan is worth.

    Attributes:
        label: the decision, e.g. ``"Detail -> sd21"``, ``"sd21 at 20 steps"``, ``"sdxl not deployed"``.
        utility: the optimum's utility minus that of the best plan deciding it otherwise (points).
        images: images in each cell the two plans disagree on that make the margin 1.645 standard
            errors of their utility difference, (1.645·√(Σ_c share_c²·(σ²_plan,c + σ²_other,c)) / margin)²
            with the sum over the categories whose cell differs: how hard the decision is to be 95 % sure of.
    """

    label: str
    utility: float
    images: float


def decision_margins(problem: Problem) -> list[Margin]:
    """How much utility each decision of the optimal whole-category plan is worth on ``problem``.

    Every routing of whole categories to models at every step vector is scored with optimal shares;
    a decision's margin is the optimum minus the best plan that decides it differently (the bootstrap
    compares plans the same way: each category's model, each model's steps, each model's deployment).
    """
    m, c = len(problem.models), len(problem.categories)
    assign = np.array(list(itertools.product(range(m), repeat=c)))  # (A, C)
    requests = (assign[:, :, None] == np.arange(m)) * problem.counts[None, :, None]  # x[a, c, m]
    used = requests.sum(axis=1) > 0  # (A, M)
    utility, assigns, steps = [], [], []
    for vector in itertools.product(*(range(g.size) for g in problem.steps)):
        full = np.array([problem.service_s[j][k] for j, k in enumerate(vector)])
        mean = np.stack([problem.quality_mean[j][:, k] for j, k in enumerate(vector)], axis=1)
        utility.append(utility_with_optimal_shares(problem, requests, full, mean))
        assigns.append(assign)
        steps.append(np.where(used, np.array(vector)[None, :], -1))
    u, a, s = np.concatenate(utility), np.concatenate(assigns), np.concatenate(steps)
    best = int(np.argmax(u))
    share = problem.counts / problem.n_requests

    def margin(label: str, other: np.ndarray) -> Margin:
        alt = int(np.flatnonzero(other)[np.argmax(u[other])])
        gap = float(u[best] - u[alt])
        variance = 0.0
        for i in range(c):
            cells = [(a[p, i], s[p, a[p, i]]) for p in (best, alt)]
            if cells[0] != cells[1]:
                variance += share[i] ** 2 * sum(float(problem.quality_std[j][i, k]) ** 2 for j, k in cells)
        images = (Z95 * math.sqrt(variance) / gap) ** 2 if gap > 0 else math.inf
        return Margin(label, gap, images)

    margins = [
        margin(f"{category} -> {problem.models[a[best, i]]}", a[:, i] != a[best, i])
        for i, category in enumerate(problem.categories)
    ]
    for j, key in enumerate(problem.models):
        deployed = s[best, j] >= 0
        if deployed:
            margins.append(margin(f"{key} at {problem.steps[j][s[best, j]]} steps", s[:, j] != s[best, j]))
        margins.append(margin(f"{key} {'deployed' if deployed else 'not deployed'}", (s[:, j] >= 0) != deployed))
    return margins


def describe_plan(problem: Problem, decision: Decision) -> str:
    """Each deployed model's steps and the categories it serves most of."""
    main = np.argmax(decision.routing, axis=1)
    parts = []
    for j, key in enumerate(problem.models):
        served = [c for i, c in enumerate(problem.categories) if main[i] == j]
        if served:
            parts.append(f"{key}@{problem.steps[j][decision.step_index[j]]}: {', '.join(served)}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------------------
# One repetition of each strategy


@dataclasses.dataclass
class Run:
    """One strategy's repetition: when it was sure, and the true regret of its plan along the way.

    Attributes:
        reached: images at which every decision was at least 95 % sure, or None within the budget.
        trail: images → true regret of the plan at that image count (only where the plan was made).
        seconds: wall time of each stop-or-next decision (adaptive) or confidence check (uniform).
    """

    reached: int | None
    trail: dict[int, float]
    seconds: list[float]

    def regret_at(self, images: int) -> float:
        """The true regret of the last plan made with at most ``images`` images."""
        return self.trail[max(i for i in self.trail if i <= images)]


class Streams:
    """Per-cell seeded image streams: the k-th image of a cell is the same whoever asks for it."""

    def __init__(self, truth: Truth, seed: Sequence[int]) -> None:
        self.truth = truth
        self.gens = {
            cell: np.random.default_rng(np.random.SeedSequence([*seed, i])) for i, cell in enumerate(truth.cells)
        }

    def draw(self, cell: Cell, images: int) -> np.ndarray:
        """The cell's next ``images`` scores."""
        return np.asarray(self.truth.truth.draw(cell, images, self.gens[cell]), dtype=float)


def bootstrap_seed(rep: int, images: int) -> int:
    """The bootstrap's seed at a given image count, the same in both strategies."""
    return 1_000_003 * rep + images


def plan(truth: Truth, table: CalibrationTable) -> tuple[Problem, Decision]:
    """The exact plan on the fitted table."""
    problem = Problem.from_table(table, truth.workload, budget=BUDGET, weight=WEIGHT)
    return problem, Decision.of(exact_search(problem))


def adaptive_run(truth: Truth, optimum: float, rep: int, args: argparse.Namespace, budget: int) -> Run:
    """Measure the cell next_batch picks until it says stop."""
    streams = Streams(truth, (args.seed, rep))
    scores = {cell: streams.draw(cell, args.first) for cell in truth.cells}
    table = table_with_scores(truth.base, scores)
    images = args.first * len(truth.cells)
    trail, seconds = {}, []
    while True:
        problem, decision = plan(truth, table)
        trail[images] = true_regret(truth, decision, optimum)
        started = time.perf_counter()
        step = next_batch(
            parameter_model(table, problem),
            decision,
            batch=args.batch,
            budget=budget,
            target=TARGET,
            samples=args.samples,
            rng=bootstrap_seed(rep, images),
        )
        seconds.append(time.perf_counter() - started)
        if step.stop is not None:
            return Run(images if step.confidence >= TARGET else None, trail, seconds)
        cell = (step.choice.model, step.choice.category, step.choice.steps)
        scores[cell] = np.concatenate([scores[cell], streams.draw(cell, args.batch)])
        # Only the measured cell changes, so only it is refitted.
        table = table_with_scores(table, {cell: scores[cell]})
        images += args.batch


def uniform_run(
    truth: Truth, optimum: float, rep: int, args: argparse.Namespace, budget: int, checkpoints: Sequence[int]
) -> Run:
    """Measure the cells round-robin; check the plan's confidence every quarter round, then every batch.

    A check costs a plan and a bootstrap, so checking after every batch would cost the uniform run more
    than adaptive's decisions; once a quarter round's check passes, the batches inside it are checked
    in order and the first that passes is where uniform profiling would have stopped.
    """
    streams = Streams(truth, (args.seed, rep))
    scores = {cell: streams.draw(cell, args.first) for cell in truth.cells}
    images = args.first * len(truth.cells)
    trail: dict[int, float] = {}
    seconds: list[float] = []
    every = max(1, round(len(truth.cells) / 4))

    def sure(table: CalibrationTable, images: int) -> bool:
        problem, decision = plan(truth, table)
        trail[images] = true_regret(truth, decision, optimum)
        started = time.perf_counter()
        model = parameter_model(table, problem)
        confidence = assess(model, decision, samples=args.samples, rng=bootstrap_seed(rep, images)).min_confidence
        seconds.append(time.perf_counter() - started)
        return confidence >= TARGET

    def stopped_at(images: int) -> Run:
        # Plans recorded past the stop were never made: the strategy stops there with its plan.
        return Run(images, {i: r for i, r in trail.items() if i <= images}, seconds)

    table = table_with_scores(truth.base, scores)
    if sure(table, images):
        return stopped_at(images)
    batches = 0
    since_check: list[tuple[int, CalibrationTable]] = []
    while images + args.batch <= budget:
        cell = truth.cells[batches % len(truth.cells)]
        scores[cell] = np.concatenate([scores[cell], streams.draw(cell, args.batch)])
        table = table_with_scores(table, {cell: scores[cell]})
        images += args.batch
        batches += 1
        since_check.append((images, table))
        if images in checkpoints:
            trail[images] = true_regret(truth, plan(truth, table)[1], optimum)
        if batches % every and images + args.batch <= budget:
            continue
        if sure(table, images):
            for count, earlier in since_check[:-1]:
                if sure(earlier, count):
                    return stopped_at(count)
            return stopped_at(images)
        since_check = []
    return Run(None, trail, seconds)


#: Rounds' worth of images (a batch in every cell) after the first batch at which the strategies are compared.
CHECKPOINT_ROUNDS = (1, 2, 3, 4, 6, 8, 16, 32)


def checkpoints_of(truth: Truth, args: argparse.Namespace) -> list[int]:
    """Equal image counts to compare the strategies at: the first batch, then whole rounds' worth."""
    start, round_ = args.first * len(truth.cells), args.batch * len(truth.cells)
    budget = args.budget_per_cell * len(truth.cells)
    return [start] + [start + j * round_ for j in CHECKPOINT_ROUNDS if start + j * round_ <= budget]


def repetition(truth: Truth, optimum: float, rep: int, args: argparse.Namespace) -> tuple[Run, Run]:
    """Both strategies on one repetition's image streams."""
    budget = args.budget_per_cell * len(truth.cells)
    adaptive = adaptive_run(truth, optimum, rep, args, budget)
    uniform = uniform_run(truth, optimum, rep, args, budget, checkpoints_of(truth, args))
    return adaptive, uniform


# ---------------------------------------------------------------------------------------------------------
# Report


def header(args: argparse.Namespace) -> str:
    """The machine, the source and the run's settings."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    flags = "".join(f" {a}" for a in sys.argv[1:])
    return (
        f"# python benchmarks/adaptive_profiling.py{flags} — {datetime.date.today().isoformat()}, {cpu_name()}, "
        f"{os.cpu_count()} cores, load average {load:.2f} at start\n"
        f"# python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"{platform.system()} {platform.release()}; genedge {source_state('optimizer', 'calibrate')}\n"
        f"# {args.reps} repetitions per truth, {args.jobs} at a time; {args.first} images in every cell first, then "
        f"batches of {args.batch}; {args.samples} bootstrap samples per decision; stop at {TARGET:.0%} on every "
        f"decision or at {args.budget_per_cell} images per cell on average; {REQUESTS} requests, R = {BUDGET:g}, "
        f"w = {WEIGHT}"
    )


def images_to_target(runs: Sequence[Run]) -> list[float]:
    """Each run's images to the target; inf where it did not get there within the budget."""
    return [math.inf if r.reached is None else float(r.reached) for r in runs]


def fmt_images(value: float, budget: int) -> str:
    return f"> {budget}" if math.isinf(value) else f"{value:.0f}"


def fmt_spread(values: Sequence[float], budget: int) -> str:
    """Median [quartiles]; a run that did not get there counts as more than the budget."""
    q1, median, q3 = (float(np.quantile(values, q)) for q in (0.25, 0.5, 0.75))
    return f"{fmt_images(median, budget)} [{fmt_images(q1, budget)}–{fmt_images(q3, budget)}]"


def print_truth(
    truth: Truth, optimum: float, runs: Sequence[tuple[Run, Run]], args: argparse.Namespace, seconds: float
) -> tuple[float, float, int]:
    """The truth, images to the target, regret at equal images and the bootstrap's cost.

    Returns:
        the median images to the target of adaptive and of uniform profiling (inf: not within the
        budget in most repetitions), and the budget.
    """
    problem = truth.true_problem
    budget = args.budget_per_cell * len(truth.cells)
    print(
        f"\n{truth.name}: {len(problem.models)} models, {len(problem.categories)} categories, "
        f"{len(truth.cells)} cells; budget {budget} images"
    )
    for line in truth.about:
        print(f"  {line}")
    print("  requests: " + ", ".join(f"{c} {n:g}" for c, n in zip(problem.categories, problem.counts)))
    best = Decision.of(exact_search(problem))
    print(f"  true optimum: U* = {optimum:.4f} points; {describe_plan(problem, best)}")
    margins = sorted(decision_margins(problem), key=lambda m: m.utility)
    print(
        "  closest decisions (utility lost by the best whole-category plan deciding otherwise, points; images per "
        "cell that make it 1.645 standard errors):"
    )
    print("    " + "; ".join(f"{m.label} {m.utility:.3f} ({m.images:.0f})" for m in margins[:4]))
    adaptive = [a for a, _ in runs]
    uniform = [u for _, u in runs]
    print(f"  images to {TARGET:.0%} on every decision, median [quartiles] over {len(runs)} repetitions:")
    medians = []
    for name, rs in (("adaptive", adaptive), ("uniform", uniform)):
        values = images_to_target(rs)
        medians.append(float(np.median(values)))
        missed = sum(r.reached is None for r in rs)
        wrong = sum(r.reached is not None and r.regret_at(r.reached) > 1e-9 for r in rs)
        notes = [f"{missed} of {len(rs)} not within the budget"] if missed else []
        if wrong:
            notes.append(f"{wrong} of {len(rs)} stopped with a plan of true regret > 0")
        print(f"    {name:<9} {fmt_spread(values, budget):>24}{'; ' + '; '.join(notes) if notes else ''}")
    med_a, med_u = medians
    print(f"    uniform / adaptive: {fmt_ratio(med_a, med_u, budget)}")
    print("  true regret of the plan at equal images (points; mean over repetitions [max]):")
    print(f"    {'images':>7} {'per cell':>8} {'adaptive':>19} {'uniform':>19}")
    for x in checkpoints_of(truth, args):
        cols = []
        for rs in (adaptive, uniform):
            values = [r.regret_at(x) for r in rs]
            stopped = any(r.reached is not None and r.reached < x for r in rs)
            cols.append(f"{np.mean(values):.4f} [{max(values):.4f}]" + ("*" if stopped else " "))
        print(f"    {x:>7} {x / len(truth.cells):>8.1f} {cols[0]:>19} {cols[1]:>19}")
    print(f"    * some repetitions had stopped at {TARGET:.0%} before this count; they keep their last plan")
    decide = [s for r in adaptive for s in r.seconds]
    check = [s for r in uniform for s in r.seconds]
    print(
        f"  bootstrap cost: an adaptive decision (next_batch: {len(truth.cells) + 1} bootstraps of {args.samples}) "
        f"median {statistics.median(decide):.2f} s over {len(decide)}; a uniform check (assess: 1 bootstrap) median "
        f"{1000 * statistics.median(check):.0f} ms over {len(check)}; this truth took {seconds:.0f} s"
    )
    return med_a, med_u, budget


def fmt_ratio(adaptive: float, uniform: float, budget: int) -> str:
    """Uniform's median images over adaptive's, or a bound where one did not get there."""
    if math.isinf(adaptive):
        return "— (adaptive not within the budget)"
    if math.isinf(uniform):
        return f"> {budget / adaptive:.1f}x (uniform not within the budget)"
    return f"{uniform / adaptive:.1f}x"


def load_truths(which: str, data_dir: Path) -> list[Truth]:
    """The truths asked for; the data sets' folder must exist where a truth needs it."""
    if any(t in which for t in "23") and not data_dir.is_dir():
        sys.exit(
            f"error: the shared data folder {data_dir} does not exist; truths 2 and 3 read TIFA's and "
            f"DiTServing's per-prompt CLIPScores from it. Give its path with --data, or run --truths 1."
        )
    builders = {"1": synthetic_truth, "2": lambda: tifa_truth(data_dir), "3": lambda: sd3_truth(data_dir)}
    return [builders[t]() for t in "123" if t in which]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10, help="seeded repetitions per truth (default 10)")
    parser.add_argument("--samples", type=int, default=100, help="bootstrap samples per decision (default 100)")
    parser.add_argument("--batch", type=int, default=10, help="images per measured batch (default 10)")
    parser.add_argument("--first", type=int, default=3, help="images in every cell before anything else (default 3)")
    parser.add_argument(
        "--budget-per-cell", type=int, default=400, help="image budget per cell of the truth, on average (default 400)"
    )
    parser.add_argument("--truths", default="123", help="which ground truths to run, e.g. 1 or 23 (default 123)")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="repetitions run at once (default: the CPU count)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the image streams (default 0)")
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="the shared data sets' folder (default ../shared/data)"
    )
    args = parser.parse_args()
    if args.first < 2:
        parser.error("--first must be at least 2: a cell is fitted from two scores or more")
    if not set(args.truths) <= set("123"):
        parser.error(f"--truths takes the digits 1, 2 and 3, but got {args.truths!r}")
    started = time.perf_counter()
    truths = load_truths(args.truths, args.data)
    print(header(args))
    summary = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for truth in truths:
            t0 = time.perf_counter()
            optimum = exact_search(truth.true_problem).utility
            reps = range(args.reps)
            runs = list(pool.map(repetition, [truth] * len(reps), [optimum] * len(reps), reps, [args] * len(reps)))
            summary.append((truth.name, *print_truth(truth, optimum, runs, args, time.perf_counter() - t0)))
    print(f"\nSummary: images to {TARGET:.0%} on every decision, median over the repetitions")
    for name, med_a, med_u, budget in summary:
        print(
            f"  {name:<22} adaptive {fmt_images(med_a, budget):>7}, uniform {fmt_images(med_u, budget):>7}: "
            f"uniform / adaptive {fmt_ratio(med_a, med_u, budget)}"
        )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"\n# whole run {time.perf_counter() - started:.0f} s; load average {load:.2f} at the end")


if __name__ == "__main__":
    main()
