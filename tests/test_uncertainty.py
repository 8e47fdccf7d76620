"""How sure a plan is: the table's parametric bootstrap, robust plans and adaptive profiling's choice."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from genedge import data
from genedge.calibrate import load_table, table_from_dict
from genedge.calibrate.cells import NormalTruth, table_with_scores
from genedge.optimizer.analysis import next_batch
from genedge.optimizer.analysis._table_parameters import draw_parameters, parameter_model
from genedge.optimizer.analysis._uncertainty import (
    FREQUENCY_CHECKED_IMAGES,
    Decision,
    assess,
    assess_on,
    bootstrap,
    robust_plans,
)
from genedge.optimizer.model import Problem, Workload, evaluate
from genedge.optimizer.planners import exact_search

MODELS = {"fast": (0.10, 0.03), "slow": (0.15, 0.09)}  # key → (overhead s, per-step s)
CATEGORIES = ("Basic", "Detail")
STEPS = (10, 20)


def _truth(gap: float = 1.0) -> NormalTruth:
    """Known Normal cells: the slow model is ``gap`` points better, 20 steps 1 point better than 10."""
    mean, std = {}, {}
    for key in MODELS:
        for c, category in enumerate(CATEGORIES):
            for steps in STEPS:
                cell = (key, category, steps)
                mean[cell] = 30.0 + 2 * c + (gap if key == "slow" else 0.0) + (1.0 if steps == 20 else 0.0)
                std[cell] = 3.0
    return NormalTruth(mean, std)


def _base_table(truth: NormalTruth) -> Any:
    """A table whose every grid step is a cell, at the truth's parameters (n large, so nearly exact)."""
    sourced = {"source": "measured", "ref": "m"}
    models = {}
    for key, (overhead, per_step) in MODELS.items():
        models[key] = {
            "name": key,
            "resolution": 512,
            "steps": list(STEPS),
            "default_steps": STEPS[-1],
            "quality": {
                c: {
                    str(s): {"mean": truth.mean[(key, c, s)], "std": 3.0, "n": 10_000, "gof": None, **sourced}
                    for s in STEPS
                }
                for c in CATEGORIES
            },
            "curves": {c: {"form": "linear_interpolation", "valid_steps": list(STEPS), **sourced} for c in CATEGORIES},
            "latency": {"overhead_s": overhead, "per_step_s": per_step, "n": 10, "r2": None, **sourced},
            "memory": {"peak_bytes": 2**30, "kind": "torch_reserved", **sourced},
        }
    return table_from_dict(
        {
            "schema_version": 1,
            "kind": "genedge.calibration_table",
            "device": {"name": "GPU", "memory_bytes": 8 * 2**30},
            "clip_convention": {
                "backbone": "ViT-B-32",
                "pretrained": "openai",
                "formula": "100*cos",
                "truncation": "77",
                "preprocess": "val",
            },
            "categories": list(CATEGORIES),
            "category_mapping": {"column": "Challenge", "labels": {c: [c] for c in CATEGORIES}},
            "models": models,
            "sources": {"m": {"kind": "measured"}},
            "manifest": {},
        }
    )


WORKLOAD = Workload.from_counts({"Basic": 12.0, "Detail": 8.0})


def _profiled(truth: NormalTruth, images: int, rng: np.random.Generator) -> Any:
    """The base table refitted from ``images`` scores per cell drawn from the truth."""
    cells = list(truth.mean)
    return table_with_scores(_base_table(truth), {cell: truth.draw(cell, images, rng) for cell in cells})


def _reference() -> tuple[Any, Problem]:
    table = load_table(data.resolve_table("reference-a100"))
    workload = Workload.from_counts({"Basic": 25.0, "Detail": 50.0, "Imagination": 14.0, "Complex": 11.0})
    return table, Problem.from_table(table, workload)


def test_the_bootstrap_is_reproducible_with_its_seed() -> None:
    table, problem = _reference()
    model = parameter_model(table, problem)
    plan = exact_search(problem)
    first, again, other = (assess(model, plan, samples=50, rng=s) for s in (3, 3, 4))
    assert np.array_equal(first.utility, again.utility) and np.array_equal(first.optimum, again.optimum)
    assert first.routing == again.routing and first.steps == again.steps
    assert not np.array_equal(first.utility, other.utility)


def test_draws_from_a_generator_record_the_integer_seed_that_reproduces_them() -> None:
    table, problem = _reference()
    model = parameter_model(table, problem)
    drawn = draw_parameters(model, 5, rng=np.random.default_rng(7))
    assert isinstance(drawn.seed, int)
    assert np.array_equal(draw_parameters(model, 5, rng=drawn.seed).delta, drawn.delta)


def test_the_reference_plan_is_unsure_of_its_close_calls() -> None:
    table, problem = _reference()
    a = assess(parameter_model(table, problem), exact_search(problem), samples=200, rng=0)
    # Imagination goes to SD 1.5 on 33.73 vs 33.69 points, each ± ~1 point: a coin flip, not a decision.
    model, p = a.routing["Imagination"]
    assert model == "sd15" and 0.2 < p < 0.8
    assert a.expected_regret > 0 and (a.regret >= 0).all()
    lo, hi = a.utility_interval()
    # The plan was chosen on these very estimates: its true utility is likelier below them than above.
    assert lo < hi and lo < a.point_utility and np.median(a.optimism) > 0
    # Its smallest measured cells (SD 1.5 and SD 2.1 "Complex") hold 4 images: too few for the claims to
    # have been checked as frequencies, which the plan's output and file say.
    assert a.fewest_images == 4 < FREQUENCY_CHECKED_IMAGES and a.to_dict()["fewest_images_per_cell"] == 4
    profiled = _profiled(_truth(), 20, np.random.default_rng(0))
    twenty = Problem.from_table(profiled, WORKLOAD)
    assert assess(parameter_model(profiled, twenty), exact_search(twenty)).fewest_images == 20


def test_parameters_move_the_arrays_they_come_from() -> None:
    table, problem = _reference()
    model = parameter_model(table, problem)
    names = [p.name for p in model.parameters]
    assert "sd15 Complex@50 mean" in names and "sd21 per_step_s" in names and "sd15 Detail curve b" in names
    complex_cell = names.index("sd15 Complex@50 mean")
    sd15, complex_row = problem.models.index("sd15"), problem.categories.index("Complex")
    # The 50-step cell moves every step of its category (the curve is anchored to it), nothing else.
    weights = model.mean_weights[sd15][..., complex_cell]
    assert np.allclose(weights[complex_row], 1.0) and np.allclose(np.delete(weights, complex_row, axis=0), 0.0)
    assert table.models["sd15"].quality["Complex"][50].n == 4
    assert model.parameters[complex_cell].se == pytest.approx(table.models["sd15"].quality["Complex"][50].mean_se)


def test_vectorized_plan_utilities_equal_the_system_model() -> None:
    table, problem = _reference()
    model = parameter_model(table, problem)
    boot = bootstrap(model, draw_parameters(model, 20, rng=1))
    decision = Decision.of(exact_search(problem))
    fast, _ = boot.plan_utilities(decision)
    slow = [evaluate(p, decision.routing, decision.step_index, decision.shares).utility for p in boot.problems]
    assert fast == pytest.approx(slow, rel=1e-10)


def test_the_whole_category_search_finds_the_exact_optimum() -> None:
    table, problem = _reference()
    model = parameter_model(table, problem)
    draws = draw_parameters(model, 2, rng=0)
    still = dataclasses.replace(draws, delta=np.zeros_like(draws.delta))  # the point estimates themselves
    boot = bootstrap(model, still)
    assert boot.optimum == pytest.approx([exact_search(problem).utility] * 2, rel=1e-9)
    # And on a drawn sample, it is the exact planner's optimum of that sample (whole categories there too).
    sample = bootstrap(model, draws)
    assert sample.optimum[1] == pytest.approx(exact_search(sample.problems[1]).utility, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robust_plans_are_never_worse_than_the_point_plan_on_their_objective(seed: int) -> None:
    table = _profiled(_truth(gap=0.5), 4, np.random.default_rng(seed))
    problem = Problem.from_table(table, WORKLOAD)
    plans = robust_plans(parameter_model(table, problem), exact_search(problem), samples=100, rng=seed)
    point = plans["point"]
    assert plans["expected"].expected_utility >= point.expected_utility
    assert plans["quantile"].quantile_utility >= point.quantile_utility
    # Each is scored on the same samples as its assessment.
    for plan in plans.values():
        assert plan.expected_utility == pytest.approx(plan.assessment.utility.mean())
        assert plan.quantile_utility == pytest.approx(np.quantile(plan.assessment.utility, 0.1))


@pytest.mark.slow
def test_nominal_90_percent_intervals_cover_the_truth() -> None:
    """Cell means and plan utility: 90 % bootstrap intervals cover the truth in 85–95 % of repetitions."""
    truth = _truth(gap=0.8)
    true_problem = Problem.from_table(_base_table(truth), WORKLOAD)
    reps, images = 200, 10
    cell_hits, cells, utility_hits = 0, 0, 0
    for rep in range(reps):
        table = _profiled(truth, images, np.random.default_rng(1000 + rep))
        problem = Problem.from_table(table, WORKLOAD)
        model = parameter_model(table, problem)
        draws = draw_parameters(model, 400, rng=rep)
        for j in model.cells():
            p = model.parameters[j]
            lo, hi = np.quantile(p.value + draws.delta[:, j], [0.05, 0.95])
            cell_hits += lo <= truth.cell_mean((p.model, p.category, p.steps)) <= hi
            cells += 1
        plan = Decision.of(exact_search(problem))
        lo, hi = assess_on(bootstrap(model, draws), plan).utility_interval(0.90)
        true = evaluate(true_problem, plan.routing, plan.step_index, plan.shares).utility
        utility_hits += lo <= true <= hi
    assert 0.85 <= cell_hits / cells <= 0.95, cell_hits / cells
    assert 0.85 <= utility_hits / reps <= 0.95, utility_hits / reps


def test_adaptive_profiling_stops_at_its_target_and_measures_the_close_call() -> None:
    truth = _truth(gap=3.0)  # the slow model is clearly better; only its steps are close
    rng = np.random.default_rng(0)
    scores = {cell: truth.draw(cell, 3, rng) for cell in truth.mean}
    for _ in range(60):
        table = table_with_scores(_base_table(truth), scores)
        problem = Problem.from_table(table, WORKLOAD)
        decision = next_batch(
            parameter_model(table, problem),
            Decision.of(exact_search(problem)),
            batch=4,
            budget=400,
            samples=100,
            min_images=3,  # the posterior alone (the next test holds the cells to their frequency check)
        )
        if decision.stop is not None:
            break
        c = decision.choice
        assert decision.ranking[0].reduction >= decision.ranking[-1].reduction
        cell = (c.model, c.category, c.steps)
        scores[cell] = np.concatenate([scores[cell], truth.draw(cell, c.images, rng)])
    assert decision.stop.startswith("target reached") and decision.confidence >= 0.95
    assert decision.images == sum(len(s) for s in scores.values()) < 400


def test_a_target_reached_on_cells_too_small_to_trust_it_measures_those_cells_first() -> None:
    truth = _truth(gap=3.0)
    table = _profiled(truth, 3, np.random.default_rng(0))
    scores = {cell: truth.draw(cell, 20, np.random.default_rng(1)) for cell in list(truth.mean)[:6]}
    table = table_with_scores(table, scores)  # 6 of the 8 cells hold 20 images, two still 3
    problem = Problem.from_table(table, WORKLOAD)
    model, plan = parameter_model(table, problem), Decision.of(exact_search(problem))
    going_on = next_batch(model, plan, batch=4, budget=400, samples=50, target=0.001)
    assert going_on.stop is None and going_on.confidence >= 0.001
    assert {(v.model, v.category, v.steps) for v in going_on.ranking} == set(list(truth.mean)[6:])
    stopped = next_batch(model, plan, batch=4, budget=400, samples=50, target=0.001, min_images=3)
    assert stopped.stop.startswith("target reached") and stopped.choice is None


def test_adaptive_profiling_stops_when_its_budget_is_spent() -> None:
    truth = _truth(gap=0.0)
    table = _profiled(truth, 3, np.random.default_rng(0))
    problem = Problem.from_table(table, WORKLOAD)
    decision = next_batch(
        parameter_model(table, problem), Decision.of(exact_search(problem)), batch=4, budget=26, samples=50
    )
    assert decision.stop is not None and decision.stop.startswith("budget spent") and decision.choice is None


def test_adaptive_profiling_leaves_a_cheap_near_tie_undecided_when_told_to() -> None:
    truth = _truth(gap=0.0)  # the two models tie: no number of images decides the routing
    table = _profiled(truth, 40, np.random.default_rng(0))
    problem = Problem.from_table(table, WORKLOAD)
    model, plan = parameter_model(table, problem), Decision.of(exact_search(problem))
    going_on = next_batch(model, plan, batch=4, budget=10_000, samples=50)
    assert going_on.stop is None and going_on.confidence < 0.95
    regret = going_on.assessment.expected_regret
    stopped = next_batch(model, plan, batch=4, budget=10_000, samples=50, max_regret=regret * 1.01)
    assert stopped.stop.startswith("regret small enough") and stopped.choice is None
