"""Adaptive against uniform profiling on ground truths: images to a sure plan, over unselected truths and streams.

A ground truth stands in for the GPU: every image of a (model, category, steps) cell is a score drawn
from it, and the true problem (the truth's cell means in a table) says what each plan is really
worth. Both strategies start from the same first batch of ``--first`` images in every cell and then
measure ``--batch`` images at a time:

- adaptive: refit the table, plan (exact search), and ask :func:`genedge.optimizer.analysis.next_batch`
  which cell to measure (the largest cut in the bootstrap's expected regret) or whether to stop
  (every routing, steps and deployment decision of the plan at least 95 % sure, with at least
  :data:`~genedge.optimizer.analysis.FREQUENCY_CHECKED_IMAGES` = 20 images in every cell: the claims were
  checked as frequencies from there, and ran high with fewer);
- uniform: the next cell in a fixed round-robin order; the plan's confidence (the same bootstrap,
  :func:`genedge.optimizer.analysis.assess`) is checked every quarter round, and inside the
  quarter that first reaches 95 % at every batch (counted, as for adaptive, from 20 images per cell).

The real-data truths are profiled as ``genedge autoprofile`` profiles: one seeded prompt order per category,
every cell taking its next prompts from it, so a category's cells share prompts and the table pairs them (the
bootstrap draws their errors jointly); the synthetic truth's Normal scores have no prompts to share.

A run is one truth and one image stream: its images come from per-cell seeded streams, so both strategies
see the same k-th image of a cell (common random numbers), and a bootstrap at a given image count has the
same seed in both; every run of the benchmark has its own stream seed. A strategy stops at 95 % (or when
the next batch would exceed the image budget) and keeps its last plan. A stop at 95 % on a plan that is
not the truth's optimum is a wrong stop; its true regret is U*(truth) − U(plan; truth), where U is the
utility (mean CLIPScore points minus w × mean delay) on the true problem.

Reported: each truth's optimum and closest decisions; per truth, how many runs of each strategy got
every decision 95 % sure within the budget, their images (median), uniform's images over adaptive's run
by run where both got there, and wrong stops; per group of truths, the true regret of each strategy's
plan at equal image counts (mean ± standard error over the runs, and the paired difference); and the
distribution over runs: reach counts, the image ratio's median, quartiles and range (with how many runs
it covers), and the wrong stops with their true regrets. Runs of one synthetic truth share its near-ties,
so standard errors taken over runs understate the spread between truths.

Ground truths (all planned as a 60-request window, R = 1, w = 0.05):

1. Synthetic: Normal scores with known parameters, 3 models (the reference A100 table's sd15, sd21
   and sdxl latency lines, rounded) × 4 categories (PartiPrompts' mix) × 2 step counts (20, 50); the
   means are drawn with seeds 0..N−1 (``--synthetic``), every draw taken, whatever its closest decision
   needs: with per-image spreads of 3–4.5 points many draws hold a near-tie that takes hundreds or
   thousands of images per cell, and then neither strategy gets there within the budget.
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

    python benchmarks/adaptive_profiling.py [--synthetic 10] [--synthetic-streams 2] [--synthetic-budget 150]
        [--streams 10] [--budget-per-cell 400] [--samples 100] [--batch 10] [--first 3] [--truths 123]
        [--jobs 2] [--seed 0] [--data PATH]

The committed results (``benchmarks/results/adaptive-profiling.txt``) are this command's output with
the defaults, ``python benchmarks/adaptive_profiling.py | tee benchmarks/results/adaptive-profiling.txt``,
on 2 cores (two runs at a time); its last line gives the run time. The run time is the synthetic truths': an
adaptive decision costs a bootstrap per cell (25 bootstraps of 100 samples) and a run that does not get there
takes 360 of them. It is kept down by taking more truths with fewer streams each (10 truths × 2 streams) and a
synthetic budget of 150 images per cell (3,600 images, against 400 per cell on the cheaper real-data truths,
whose 8 and 12 cells cost a few times less a decision): about a quarter of an hour on an idle 2-core machine,
longer where other work shares the cores.
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
from genedge.optimizer.analysis import FREQUENCY_CHECKED_IMAGES, Decision, assess, next_batch, parameter_model
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


def synthetic_truth(seed: int) -> Truth:
    """Normal scores: a model level + a category offset + a seeded interaction − a step penalty.

    mean(m, c, s) = 31 + level_m + offset_c + N(0, 1.5²) − 4·exp(−s/10) and std ~ Uniform(3, 4.5), drawn
    with ``seed``, whatever decisions the draw makes hard. The levels rise with the models' cost, so a slower
    model wins a category only where its gain there pays for its delay.
    """
    mean, std = synthetic_means(seed)
    return make_truth(
        f"synthetic seed {seed}",
        (),
        SYNTHETIC_MODELS,
        PARTI_MIX,
        NormalTruth(mean, std),
        std,
        dict.fromkeys(mean, 10_000),
        "ViT-B-32",
    )


def synthetic_about(seeds: range) -> tuple[str, ...]:
    """How the synthetic truths are built, said once for all of them."""
    levels = ", ".join(f"{v:g}" for v in SYNTHETIC_LEVEL.values())
    offsets = ", ".join(f"{c} {v:g}" for c, v in SYNTHETIC_OFFSET.items())
    scores = (
        f"Normal scores: mean = 31 + model level ({levels}) + category offset ({offsets}) + "
        f"N(0, {SYNTHETIC_INTERACTION:g}²) per (model, category) - 4·exp(-steps/10), std ~ U(3, 4.5); "
        f"seeds {seeds.start}..{seeds.stop - 1}, every draw taken (no filter)"
    )
    lines = ", ".join(f"{k} {o:g} + {p:g} s" for k, (o, p, _) in SYNTHETIC_MODELS.items())
    latency = f"latency (overhead + per step): {lines} (the reference A100 table's sd15, sd21, sdxl lines rounded)"
    return scores, latency + "; steps 20 and 50"


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
    """Seeded image streams: the k-th image of a cell is the same whoever asks for it.

    A population truth is profiled as genedge profiles (one seeded prompt order per category, every cell
    taking its next prompts from it), so the k-th images of a category's cells share their prompt and the
    table pairs those cells; a Normal truth has no prompts, and each cell its own stream.
    """

    def __init__(self, truth: Truth, seed: Sequence[int]) -> None:
        self.truth = truth
        self.gens = {
            cell: np.random.default_rng(np.random.SeedSequence([*seed, i])) for i, cell in enumerate(truth.cells)
        }
        categories = dict.fromkeys(c for _, c, _ in truth.cells)
        self.order_gens = {
            c: np.random.default_rng(np.random.SeedSequence([*seed, len(truth.cells) + i]))
            for i, c in enumerate(categories)
        }
        self.orders: dict[str, list[int]] = {c: [] for c in categories}
        self.taken: dict[Cell, int] = dict.fromkeys(truth.cells, 0)

    @property
    def paired(self) -> bool:
        """Whether the cells of a category draw the same prompts."""
        return isinstance(self.truth.truth, PopulationTruth)

    def draw(self, cell: Cell, images: int) -> np.ndarray:
        """The cell's next ``images`` scores."""
        if not self.paired:
            return np.asarray(self.truth.truth.draw(cell, images, self.gens[cell]), dtype=float)
        population = self.truth.truth.population[cell]
        order, start = self.orders[cell[1]], self.taken[cell]
        while len(order) < start + images:
            order.extend(int(i) for i in self.order_gens[cell[1]].integers(0, population.size, 64))
        self.taken[cell] = start + images
        return population[order[start : start + images]].astype(float)

    def table(self, base: CalibrationTable, scores: Mapping[Cell, np.ndarray]) -> CalibrationTable:
        """``base`` fitted to every cell's scores, cells paired where they share prompts."""
        images = {cell: list(range(len(values))) for cell, values in scores.items()} if self.paired else None
        return table_with_scores(base, scores, images)


def bootstrap_seed(run_id: int, images: int) -> int:
    """The bootstrap's seed at a given image count, the same in both strategies."""
    return 1_000_003 * run_id + images


def plan(truth: Truth, table: CalibrationTable) -> tuple[Problem, Decision]:
    """The exact plan on the fitted table."""
    problem = Problem.from_table(table, truth.workload, budget=BUDGET, weight=WEIGHT)
    return problem, Decision.of(exact_search(problem))


def adaptive_run(truth: Truth, optimum: float, run_id: int, args: argparse.Namespace, budget: int) -> Run:
    """Measure the cell next_batch picks until it says stop."""
    streams = Streams(truth, (args.seed, run_id))
    scores = {cell: streams.draw(cell, args.first) for cell in truth.cells}
    table = streams.table(truth.base, scores)
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
            rng=bootstrap_seed(run_id, images),
        )
        seconds.append(time.perf_counter() - started)
        if step.stop is not None:
            reached = step.confidence >= TARGET and min(map(len, scores.values())) >= FREQUENCY_CHECKED_IMAGES
            return Run(images if reached else None, trail, seconds)
        cell = (step.choice.model, step.choice.category, step.choice.steps)
        scores[cell] = np.concatenate([scores[cell], streams.draw(cell, args.batch)])
        table = streams.table(truth.base, scores)
        images += args.batch


def uniform_run(
    truth: Truth, optimum: float, run_id: int, args: argparse.Namespace, budget: int, checkpoints: Sequence[int]
) -> Run:
    """Measure the cells round-robin; check the plan's confidence every quarter round, then every batch.

    A check costs a plan and a bootstrap, so checking after every batch would cost the uniform run more
    than adaptive's decisions; once a quarter round's check passes, the batches inside it are checked
    in order and the first that passes is where uniform profiling would have stopped.
    """
    streams = Streams(truth, (args.seed, run_id))
    scores = {cell: streams.draw(cell, args.first) for cell in truth.cells}
    images = args.first * len(truth.cells)
    trail: dict[int, float] = {}
    seconds: list[float] = []
    every = max(1, round(len(truth.cells) / 4))

    def sure(table: CalibrationTable, images: int) -> bool:
        problem, decision = plan(truth, table)
        trail[images] = true_regret(truth, decision, optimum)
        return _confident(truth, table, problem, decision, args.samples, bootstrap_seed(run_id, images), seconds)

    def stopped_at(images: int) -> Run:
        # Plans recorded past the stop were never made: the strategy stops there with its plan.
        return Run(images, {i: r for i, r in trail.items() if i <= images}, seconds)

    table = streams.table(truth.base, scores)
    if sure(table, images):
        return stopped_at(images)
    batches = 0
    since_check: list[tuple[int, CalibrationTable]] = []
    while images + args.batch <= budget:
        cell = truth.cells[batches % len(truth.cells)]
        scores[cell] = np.concatenate([scores[cell], streams.draw(cell, args.batch)])
        table = streams.table(truth.base, scores)
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


def _confident(
    truth: Truth,
    table: CalibrationTable,
    problem: Problem,
    decision: Decision,
    samples: int,
    seed: int,
    seconds: list[float],
) -> bool:
    """Whether the plan is sure: every decision at the target, counted once every cell holds the images the
    claims were checked from (as for adaptive profiling); the assessment's time is appended to ``seconds``."""
    if _fewest_images(table, truth) < FREQUENCY_CHECKED_IMAGES:
        return False
    started = time.perf_counter()
    confidence = assess(parameter_model(table, problem), decision, samples=samples, rng=seed).min_confidence
    seconds.append(time.perf_counter() - started)
    return confidence >= TARGET


def _fewest_images(table: CalibrationTable, truth: Truth) -> int:
    """The fewest images of any of the truth's cells in ``table``."""
    return min(table.models[key].quality[category][steps].n for key, category, steps in truth.cells)


#: Rounds' worth of images (a batch in every cell) after the first batch at which the strategies are compared.
CHECKPOINT_ROUNDS = (1, 2, 3, 4, 6, 8, 16, 32)


def checkpoints_of(truth: Truth, first: int, batch: int, budget_per_cell: int) -> list[int]:
    """Equal image counts to compare the strategies at: the first batch, then whole rounds' worth."""
    start, round_ = first * len(truth.cells), batch * len(truth.cells)
    budget = budget_per_cell * len(truth.cells)
    return [start] + [start + j * round_ for j in CHECKPOINT_ROUNDS if start + j * round_ <= budget]


def repetition(
    truth: Truth, optimum: float, run_id: int, budget_per_cell: int, args: argparse.Namespace
) -> tuple[Run, Run]:
    """Both strategies on one run's image streams (``run_id`` seeds them and the bootstraps)."""
    budget = budget_per_cell * len(truth.cells)
    checkpoints = checkpoints_of(truth, args.first, args.batch, budget_per_cell)
    adaptive = adaptive_run(truth, optimum, run_id, args, budget)
    uniform = uniform_run(truth, optimum, run_id, args, budget, checkpoints)
    return adaptive, uniform


# ---------------------------------------------------------------------------------------------------------
# What a set of runs shows

#: The two strategies, in the order a run pair holds them.
STRATEGIES = ("adaptive", "uniform")
#: A plan whose true regret is above this (points) is not the truth's optimum.
REGRET_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True)
class Summary:
    """The distribution over a set of paired runs (a run: one truth, one image stream, both strategies).

    Attributes:
        runs: paired runs.
        reached: per strategy (:data:`STRATEGIES` order), the runs that got every decision 95 % sure within
            the budget.
        ratios: uniform's images to the target over adaptive's, in each run where both got there, sorted.
        wrong: per strategy, the true regret (points) of each plan a run stopped on "95 % sure" that is not
            the truth's optimum, sorted.
    """

    runs: int
    reached: tuple[int, int]
    ratios: tuple[float, ...]
    wrong: tuple[tuple[float, ...], tuple[float, ...]]

    def ratio_quartiles(self) -> tuple[float, float, float] | None:
        """The ratios' first quartile, median and third quartile (numpy's linear rule), None without any."""
        if not self.ratios:
            return None
        q1, median, q3 = (float(np.quantile(self.ratios, q)) for q in (0.25, 0.5, 0.75))
        return q1, median, q3


def summarize(pairs: Sequence[tuple[Run, Run]]) -> Summary:
    """Reach counts, image ratios and wrong stops of paired (adaptive, uniform) runs."""
    reached = tuple(sum(p[k].reached is not None for p in pairs) for k in range(2))
    ratios = sorted(u.reached / a.reached for a, u in pairs if a.reached is not None and u.reached is not None)
    wrong = tuple(
        tuple(
            sorted(
                r
                for r in (p[k].regret_at(p[k].reached) for p in pairs if p[k].reached is not None)
                if r > REGRET_TOLERANCE
            )
        )
        for k in range(2)
    )
    return Summary(len(pairs), reached, tuple(ratios), wrong)


@dataclasses.dataclass(frozen=True)
class RegretRow:
    """True regret at one equal image count over paired runs: mean and standard error (points).

    Attributes:
        images: images measured by each strategy.
        mean: per strategy, the mean true regret of its last plan made with at most ``images`` images.
        se: per strategy, the standard error of that mean (sample sd / √runs).
        difference: the mean of adaptive's regret minus uniform's, run by run.
        difference_se: its standard error (the runs are paired: both see the same images).
        stopped: whether some run had stopped at the target before ``images`` (it keeps its last plan).
    """

    images: int
    mean: tuple[float, float]
    se: tuple[float, float]
    difference: float
    difference_se: float
    stopped: bool


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """The mean and its standard error (sample sd / √n; 0 from a single value)."""
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(np.mean(values)), se


def regret_at_equal_images(pairs: Sequence[tuple[Run, Run]], images: int) -> RegretRow:
    """Both strategies' true regret after ``images`` images, over the same runs."""
    regrets = [[p[k].regret_at(images) for p in pairs] for k in range(2)]
    (mean_a, se_a), (mean_u, se_u) = (mean_and_se(r) for r in regrets)
    difference, difference_se = mean_and_se([a - u for a, u in zip(*regrets)])
    stopped = any(r.reached is not None and r.reached < images for p in pairs for r in p)
    return RegretRow(images, (mean_a, mean_u), (se_a, se_u), difference, difference_se, stopped)


# ---------------------------------------------------------------------------------------------------------
# Report


@dataclasses.dataclass(frozen=True)
class Group:
    """Truths reported together, with the runs each gets and the image budget per cell.

    Attributes:
        name: a short label.
        about: lines that say how its truths were built.
        truths: the truths.
        streams: image-stream seeds (runs) per truth.
        budget_per_cell: the image budget, per cell of a truth on average.
    """

    name: str
    about: tuple[str, ...]
    truths: tuple[Truth, ...]
    streams: int
    budget_per_cell: int


def header(args: argparse.Namespace, groups: Sequence[Group]) -> str:
    """The machine, the source and the run's settings."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    flags = "".join(f" {a}" for a in sys.argv[1:])
    runs = "; ".join(
        f"{g.name}: {len(g.truths)} truth{'s' * (len(g.truths) > 1)} × {g.streams} image streams, "
        f"budget {g.budget_per_cell} images per cell"
        for g in groups
    )
    return (
        f"# python benchmarks/adaptive_profiling.py{flags} — {datetime.date.today().isoformat()}, {cpu_name()}, "
        f"{os.cpu_count()} cores, load average {load:.2f} at start\n"
        f"# python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"{platform.system()} {platform.release()}; genedge {source_state('optimizer', 'calibrate')}\n"
        f"# {runs}; {args.jobs} runs at a time\n"
        f"# {args.first} images in every cell first, then batches of {args.batch}; {args.samples} bootstrap samples "
        f"per decision; stop at {TARGET:.0%} on every decision or at the budget; {REQUESTS} requests, R = {BUDGET:g}, "
        f"w = {WEIGHT}"
    )


def images_to_target(runs: Sequence[Run]) -> list[float]:
    """Each run's images to the target; inf where it did not get there within the budget."""
    return [math.inf if r.reached is None else float(r.reached) for r in runs]


def fmt_images(value: float, budget: int) -> str:
    return f"> {budget}" if math.isinf(value) else f"{value:.0f}"


def fmt_ratios(summary: Summary) -> str:
    """Median [quartiles] (range) of the image ratios, with how many runs they cover."""
    quartiles = summary.ratio_quartiles()
    if quartiles is None:
        return "— (0 runs)"
    q1, median, q3 = quartiles
    low, high = summary.ratios[0], summary.ratios[-1]
    return f"{median:.1f}x [{q1:.1f}–{q3:.1f}] ({low:.1f}–{high:.1f}; {len(summary.ratios)} runs)"


def fmt_wrong(summary: Summary, k: int) -> str:
    """Wrong stops of one strategy: how many of its stops, and their true regrets."""
    wrong = summary.wrong[k]
    text = f"{len(wrong)} of {summary.reached[k]}"
    return text + (f" ({', '.join(f'{r:.2f}' for r in wrong)})" if wrong else "")


def print_truth(truth: Truth, optimum: float) -> None:
    """The truth's optimum and its closest decisions."""
    problem = truth.true_problem
    best = Decision.of(exact_search(problem))
    margins = sorted(decision_margins(problem), key=lambda m: m.utility)
    print(f"  {truth.name}: U* = {optimum:.4f} points; {describe_plan(problem, best)}")
    print("    closest: " + "; ".join(f"{m.label} {m.utility:.3f} ({m.images:.0f})" for m in margins[:3]))


def print_group(group: Group, optimum: Mapping[str, float]) -> None:
    """The group's truths: how they were built, their workload, optimum and closest decisions."""
    first = group.truths[0]
    problem = first.true_problem
    print(
        f"\n{group.name}: {len(problem.models)} models, {len(problem.categories)} categories, {len(first.cells)} "
        f"cells; {group.streams} image streams per truth; budget {group.budget_per_cell * len(first.cells)} images"
    )
    for line in group.about:
        print(f"  {line}")
    print("  requests: " + ", ".join(f"{c} {n:g}" for c, n in zip(problem.categories, problem.counts)))
    print(
        "  true optimum, and the closest decisions (utility lost by the best whole-category plan deciding "
        "otherwise, points; images per cell that make it 1.645 standard errors):"
    )
    for truth in group.truths:
        print_truth(truth, optimum[truth.name])


def print_per_truth(groups: Sequence[Group], results: Mapping[str, Sequence[tuple[Run, Run]]]) -> None:
    """One row per truth: reach, images to the target, the image ratio and wrong stops."""
    print(
        f"\nPer truth: runs that got every decision {TARGET:.0%} sure within the budget, and the images it took "
        "(median over the truth's runs; > budget where most did not get there); uniform / adaptive per run where "
        "both got there: median (range); wrong stops: stops on a plan that is not the optimum, of the stops"
    )
    print(
        f"  {'truth':<21} {'hardest':>7} {'adaptive':>16} {'uniform':>16} {'uniform/adaptive':>22} "
        f"{'wrong stops a':>14} {'wrong stops u':>14}"
    )
    for group in groups:
        for truth in group.truths:
            pairs = results[truth.name]
            budget = group.budget_per_cell * len(truth.cells)
            summary = summarize(pairs)
            hardest = max(m.images for m in decision_margins(truth.true_problem))
            cols = []
            for k in range(2):
                median = float(np.median(images_to_target([p[k] for p in pairs])))
                cols.append(f"{summary.reached[k]}/{summary.runs} {fmt_images(median, budget):>8}")
            ratio = "—"
            if summary.ratios:
                ratio = f"{statistics.median(summary.ratios):.1f}x ({summary.ratios[0]:.1f}–{summary.ratios[-1]:.1f})"
            wrong = [f"{len(summary.wrong[k])} of {summary.reached[k]}" for k in range(2)]
            print(
                f"  {truth.name:<21} {hardest:>7.0f} {cols[0]:>16} {cols[1]:>16} {ratio:>22} {wrong[0]:>14} "
                f"{wrong[1]:>14}"
            )
    print("  hardest: images per cell the truth's closest decision needs to be 1.645 standard errors")


def print_regret(group: Group, pairs: Sequence[tuple[Run, Run]], args: argparse.Namespace) -> None:
    """True regret at equal images over the group's runs, with standard errors."""
    truth = group.truths[0]
    print(
        f"\n{group.name}: true regret of the plan at equal images over {len(pairs)} runs (points; mean ± standard "
        "error; the difference is taken run by run)"
    )
    print(f"  {'images':>7} {'per cell':>8} {'adaptive':>17} {'uniform':>17} {'adaptive - uniform':>19}")
    for images in checkpoints_of(truth, args.first, args.batch, group.budget_per_cell):
        row = regret_at_equal_images(pairs, images)
        cols = [f"{row.mean[k]:.4f} ± {row.se[k]:.4f}" for k in range(2)]
        diff = f"{row.difference:+.4f} ± {row.difference_se:.4f}"
        print(
            f"  {images:>7} {images / len(truth.cells):>8.1f} {cols[0]:>17} {cols[1]:>17} {diff:>19}"
            + ("*" if row.stopped else "")
        )
    print(f"  * some runs had stopped at {TARGET:.0%} before this count; they keep their last plan")
    decide = [s for a, _ in pairs for s in a.seconds]
    check = [s for _, u in pairs for s in u.seconds]
    print(
        f"  bootstrap cost: an adaptive decision (next_batch: {len(truth.cells) + 1} bootstraps of {args.samples}) "
        f"median {statistics.median(decide):.2f} s over {len(decide)}; a uniform check (assess: 1 bootstrap) median "
        f"{1000 * statistics.median(check):.0f} ms over {len(check)}"
    )


def print_summary(groups: Sequence[Group], results: Mapping[str, Sequence[tuple[Run, Run]]]) -> None:
    """The distribution over each group's runs and over all runs."""
    print(
        f"\nSummary over runs (a run: one truth, one image stream, both strategies on the same images): runs that "
        f"got every decision {TARGET:.0%} sure within the budget; uniform / adaptive images where both got there, "
        "median [quartiles] (range); wrong stops of the stops at the target, with their true regrets (points)"
    )
    print(f"  {'truths':<22} {'runs':>4} {'adaptive':>8} {'uniform':>8}  {'uniform / adaptive':<40} wrong stops a; u")
    rows = [(g.name, [p for t in g.truths for p in results[t.name]]) for g in groups]
    rows.append(("all", [p for _, pairs in rows for p in pairs]))
    for name, pairs in rows:
        s = summarize(pairs)
        print(
            f"  {name:<22} {s.runs:>4} {s.reached[0]:>8} {s.reached[1]:>8}  {fmt_ratios(s):<40} "
            f"{fmt_wrong(s, 0)}; {fmt_wrong(s, 1)}"
        )


def load_groups(args: argparse.Namespace) -> list[Group]:
    """The truths asked for, grouped; the data sets' folder must exist where a truth needs it."""
    if any(t in args.truths for t in "23") and not args.data.is_dir():
        sys.exit(
            f"error: the shared data folder {args.data} does not exist; truths 2 and 3 read TIFA's and "
            f"DiTServing's per-prompt CLIPScores from it. Give its path with --data, or run --truths 1."
        )
    groups = []
    if "1" in args.truths:
        seeds = range(args.synthetic)
        truths = tuple(synthetic_truth(seed) for seed in seeds)
        groups.append(
            Group("synthetic (Normal)", synthetic_about(seeds), truths, args.synthetic_streams, args.synthetic_budget)
        )
    for digit, build in (("2", tifa_truth), ("3", sd3_truth)):
        if digit in args.truths:
            truth = build(args.data)
            groups.append(Group(truth.name, truth.about, (truth,), args.streams, args.budget_per_cell))
    return groups


def run_all(
    groups: Sequence[Group], optimum: Mapping[str, float], args: argparse.Namespace
) -> dict[str, list[tuple[Run, Run]]]:
    """Every run of every truth, ``--jobs`` at a time; each run has its own seed over the whole benchmark."""
    jobs = [(g, t, s) for g in groups for t in g.truths for s in range(g.streams)]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        pairs = pool.map(
            repetition,
            [t for _, t, _ in jobs],
            [optimum[t.name] for _, t, _ in jobs],
            range(len(jobs)),
            [g.budget_per_cell for g, _, _ in jobs],
            [args] * len(jobs),
        )
        results: dict[str, list[tuple[Run, Run]]] = {}
        for (_, truth, _), pair in zip(jobs, pairs):
            results.setdefault(truth.name, []).append(pair)
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--synthetic", type=int, default=10, help="synthetic truths, seeds 0..N-1 (default 10)")
    add("--synthetic-streams", type=int, default=2, help="image streams per synthetic truth (default 2)")
    add("--synthetic-budget", type=int, default=150, help="synthetic image budget per cell (default 150)")
    add("--streams", type=int, default=10, help="image streams per real-data truth (default 10)")
    add("--budget-per-cell", type=int, default=400, help="real-data image budget per cell (default 400)")
    add("--samples", type=int, default=100, help="bootstrap samples per decision (default 100)")
    add("--batch", type=int, default=10, help="images per measured batch (default 10)")
    add("--first", type=int, default=3, help="images in every cell before anything else (default 3)")
    add("--truths", default="123", help="which ground truths to run, e.g. 1 or 23 (default 123)")
    add("--jobs", type=int, default=os.cpu_count() or 1, help="runs at once (default: the CPU count)")
    add("--seed", type=int, default=0, help="seed of the image streams (default 0)")
    add("--data", type=Path, default=DEFAULT_DATA, help="the shared data sets' folder (default ../shared/data)")
    args = parser.parse_args()
    if args.first < 2:
        parser.error("--first must be at least 2: a cell is fitted from two scores or more")
    if not set(args.truths) <= set("123"):
        parser.error(f"--truths takes the digits 1, 2 and 3, but got {args.truths!r}")
    return args


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    groups = load_groups(args)
    optimum = {t.name: exact_search(t.true_problem).utility for g in groups for t in g.truths}
    print(header(args, groups))
    results = run_all(groups, optimum, args)
    for group in groups:
        print_group(group, optimum)
    print_per_truth(groups, results)
    for group in groups:
        print_regret(group, [p for t in group.truths for p in results[t.name]], args)
    print_summary(groups, results)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"\n# whole run {time.perf_counter() - started:.0f} s; load average {load:.2f} at the end")


if __name__ == "__main__":
    main()
