"""``genedge compare``: a doubled per-step latency, reported with its uncertainty and the plan decisions it moves;
the plan comparison of the library beneath it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import genedge_in_process, run_genedge
from scipy import stats

from genedge.calibrate import fit_quality
from genedge.calibrate.compare import welch_t
from genedge.optimizer import PlanChange, PlanComparison, Problem, compare_plans, plan_changes
from genedge.optimizer.planners import make_result
from genedge.testing import QualityTruth, SyntheticModel, synthetic_run, write_run

CATEGORIES = ("Basic", "Detail", "Imagination", "Complex")
SMALL = SyntheticModel(
    key="small",
    quality={c: QualityTruth(a=29.0, b=5.0, kappa=8.0, std=3.0) for c in CATEGORIES},
    overhead_s=0.3,
    per_step_s=0.04,
    step_noise_s=0.002,
    overhead_noise_s=0.01,
    memory_bytes={"peak_torch_reserved_bytes": 3_000_000_000},
)
# The large model is clearly better on the hard categories, so the old plan gives it a share.
LARGE = SyntheticModel(
    key="large",
    quality={c: QualityTruth(a=29.0 + d, b=8.0, kappa=12.0, std=3.0) for c, d in zip(CATEGORIES, (0.5, 2.0, 5.0, 7.0))},
    overhead_s=0.8,
    per_step_s=0.12,
    step_noise_s=0.005,
    overhead_noise_s=0.02,
    memory_bytes={"peak_torch_reserved_bytes": 9_000_000_000},
)


def test_welch_t_from_mle_cells_matches_scipy_on_the_raw_scores() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(30, 3, 25), rng.normal(32, 4, 40)
    fa, fb = fit_quality(a), fit_quality(b)
    se, t, _dof, p = welch_t(fa.mean, fa.std, fa.n, fb.mean, fb.std, fb.n)
    reference = stats.ttest_ind(b, a, equal_var=False)
    assert t == pytest.approx(reference.statistic, rel=1e-10)
    assert p == pytest.approx(reference.pvalue, rel=1e-8)
    assert se == pytest.approx(np.sqrt(a.var(ddof=1) / 25 + b.var(ddof=1) / 40), rel=1e-10)
    assert welch_t(30.0, 3.0, 1, 31.0, 3.0, 10) is None


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Calibrated tables, made the way a user makes them: old (small, large), new (large twice as slow per step)
    and small (the small model only). ``genedge calibrate`` runs in this process: its own tests run it as a
    subprocess."""
    from genedge.cli import main

    folder = tmp_path_factory.mktemp("tables")
    made = {}
    for name, models, steps in (
        ("old", [SMALL, LARGE], (10, 20, 30, 40)),
        ("new", [SMALL, dataclasses.replace(LARGE, per_step_s=0.24)], (10, 20, 30, 40)),
        ("small", [SMALL], (10, 20, 30)),
    ):
        # The same seed draws the same scores: only the latency differs between old and new.
        manifest, records = synthetic_run(models, steps=steps, prompts_per_category=20, rng=0)
        run = write_run(folder / name, manifest, records)
        assert main(["calibrate", str(run), "--out", str(folder / f"{name}.json")]) == 0
        made[name] = folder / f"{name}.json"
    return made


WORKLOAD = ("--workload", "Basic=10,Detail=10,Imagination=10,Complex=10", "--weight", "0.1", "--seed", "0")


@pytest.mark.slow
def test_compare_reports_doubled_per_step_latency_and_the_plan_decisions_it_moves(tables: dict[str, Path]) -> None:
    done = run_genedge("compare", tables["old"], tables["new"], *WORKLOAD)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # The change, its ratio and its significance (the SE is from the least-squares fits).
    per_step = re.search(r"^\* large\s+per_step_s\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", out, re.M)
    assert per_step is not None, out
    _old, new, ratio, diff, se, p = map(float, per_step.groups())
    assert ratio == pytest.approx(2.0, abs=0.01) and new == pytest.approx(0.24, rel=0.02)
    assert 0 < se < 0.01 * diff and p < 1e-6
    # Nothing else changed: the other coefficients and every quality cell are unmarked.
    assert re.search(r"^  small\s+per_step_s", out, re.M) and re.search(r"^  large\s+overhead_s", out, re.M)
    assert not re.search(r"^\* \S+\s+(Basic|Detail|Imagination|Complex)", out, re.M)
    assert len(re.findall(r"^  (small|large)\s+(Basic|Detail|Imagination|Complex)\s+\d+.*\+0\.000", out, re.M)) == 32
    # The plan decisions it moves: the slower large model loses its share and its categories.
    plan = out.split("plans on the same workload", 1)[1]
    share = re.search(r"^  share\s+large\s+(\S+) -> (\S+)$", plan, re.M)
    assert share is not None, plan
    assert float(share.group(1)) > 0.2 and float(share.group(2)) < float(share.group(1))
    moved = re.findall(r"^  routing (\w+) -> large\s+(\S+) -> (\S+)$", plan, re.M)
    assert moved and all(float(new_p) < float(old_p) for _, old_p, new_p in moved)
    assert "None" not in out


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [("--models", "small"), ("--memory-gib", "5")],
)
def test_compare_plans_with_the_models_and_memory_plan_takes(
    capsys: pytest.CaptureFixture[str], tables: dict[str, Path], options: tuple[str, str]
) -> None:
    # Only the large model changed, so planning without it leaves every decision as it was.
    done = genedge_in_process(capsys, "compare", tables["old"], tables["new"], *WORKLOAD, *options)
    assert done.returncode == 0, done.stderr
    plan = done.stdout.split("plans on the same workload", 1)[1]
    assert plan.rstrip().endswith("no plan decision changes"), plan
    if options[0] == "--memory-gib":  # large needs 9e9 bytes
        for path in (tables["old"], tables["new"]):
            assert f"  {path}: left out (too big for the device memory): large needs 8.38 GiB, limit 5.00 GiB" in plan
    assert "large" not in plan.replace("left out (too big for the device memory): large", "")


@pytest.mark.slow
def test_compare_builds_both_problems_before_printing(
    capsys: pytest.CaptureFixture[str], tables: dict[str, Path]
) -> None:
    done = genedge_in_process(capsys, "compare", tables["old"], tables["small"], *WORKLOAD, "--models", "large")
    assert done.returncode == 2 and done.stdout == ""
    assert "models ['large'] are not in the table; available: ['small']" in done.stderr
    done = genedge_in_process(capsys, "compare", tables["old"], tables["new"], *WORKLOAD, "--memory-gib", "2")
    assert done.returncode == 2 and done.stdout == ""
    assert "No model fits in the 2.00 GiB of device memory: large needs 8.38 GiB, small needs 2.79 GiB" in done.stderr


def test_compare_takes_the_options_plan_takes(capsys: pytest.CaptureFixture[str]) -> None:
    def options(command: str) -> set[str]:
        # An option ends in a letter: "--rate-" is "--rate-count" wrapped across two help lines.
        return set(re.findall(r"(--[a-z][a-z-]*[a-z])", genedge_in_process(capsys, command, "--help").stdout))

    plan, compare = options("plan"), options("compare")
    # The bootstrap of one plan's table (--samples, --robust, --quantile) and the plan schedule over
    # rates (--rates-from-trace, --rate-count, --jobs, --figures) are plan's own.
    own = {"--table", "--compare", "--out", "--samples", "--robust", "--quantile"}
    schedule = {"--rates-from-trace", "--rate-count", "--jobs", "--figures"}
    assert plan - own - schedule <= compare
    assert {"--prompts", "--models", "--memory-gib", "--min-clipscore", "--max-shortfall"} <= compare
    assert "--table" not in compare  # the tables are OLD and NEW


@pytest.mark.slow
def test_compare_refuses_a_workload_it_cannot_read(capsys: pytest.CaptureFixture[str], tables: dict[str, Path]) -> None:
    done = genedge_in_process(capsys, "compare", tables["small"], tables["small"], "--workload", "Basic:3")
    assert done.returncode == 2
    assert "--workload: expected CATEGORY=COUNT items, but got 'Basic:3'" in done.stderr


def _two_model_problem(**changes: object) -> Problem:
    grid = np.array([10, 20])
    problem = Problem(
        models=("fast", "slow"),
        categories=("easy", "hard"),
        counts=np.array([6.0, 4.0]),
        steps=(grid, grid),
        quality_mean=(np.array([[30.0, 31.0], [26.0, 27.0]]), np.array([[30.5, 31.5], [31.0, 32.0]])),
        quality_std=(np.full((2, 2), 3.0), np.full((2, 2), 3.0)),
        service_s=(0.1 + 0.02 * grid, 0.2 + 0.06 * grid),
        default_step_index=(1, 1),
        memory_bytes=np.array([4e9, 8e9]),
        budget=1.0,
        weight=0.05,
    )
    return Problem(**{**problem.__dict__, **changes})


def test_plan_changes_lists_routing_then_steps_then_shares() -> None:
    problem = _two_model_problem()
    alone = make_result(problem, "by hand", np.array([[1.0, 0.0], [1.0, 0.0]]), (0, 1), np.array([1.0, 0.0]))
    split = make_result(problem, "by hand", np.array([[1.0, 0.0], [0.0, 1.0]]), (1, 0), np.array([0.4, 0.6]))
    assert plan_changes(alone, split) == [
        PlanChange("routing", "hard -> fast", 1.0, 0.0),
        PlanChange("routing", "hard -> slow", 0.0, 1.0),
        PlanChange("steps", "fast", 10, 20),
        PlanChange("steps", "slow", None, 10),  # not deployed in the first plan: its steps decide nothing
        PlanChange("share", "fast", 1.0, 0.4),
        PlanChange("share", "slow", 0.0, 0.6),
    ]
    assert plan_changes(split, split) == []
    nearly = make_result(problem, "by hand", np.array([[1.0, 0.0], [0.0, 1.0]]), (1, 0), np.array([0.405, 0.595]))
    assert plan_changes(split, nearly) == []  # within DECISION_TOLERANCE
    assert plan_changes(split, nearly, tolerance=0.001) != []


def test_compare_plans_plans_both_problems_with_one_planner_and_seed() -> None:
    old = _two_model_problem()
    slower = (old.service_s[0], old.service_s[1] * 3)
    comparison = compare_plans(old, _two_model_problem(service_s=slower), method="exact", rng=0)
    assert isinstance(comparison, PlanComparison)
    assert comparison.old.method == comparison.new.method == "exact"
    assert comparison.old.utility > comparison.new.utility
    assert comparison.changes == tuple(plan_changes(comparison.old, comparison.new))
    same = compare_plans(old, old, rng=0)
    assert same.changes == () and same.old.utility == same.new.utility


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"budget": 0.5}, "they differ in budget: 1.0 vs 0.5"),
        ({"weight": 0.1}, "they differ in weight: 0.05 vs 0.1"),
        ({"counts": np.array([6.0, 5.0])}, r"they differ in request counts: \[6.0, 4.0\] vs \[6.0, 5.0\]"),
        ({"min_clipscore": 20.0}, "they differ in quality floor: None vs 20.0"),
    ],
)
def test_compare_plans_refuses_problems_with_different_options(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match="Expected two problems with the same workload and options, but " + message):
        compare_plans(_two_model_problem(), _two_model_problem(**changes), rng=0)
    with pytest.raises(ValueError, match=r"unknown methods \['greedy'\]"):
        compare_plans(_two_model_problem(), _two_model_problem(), method="greedy")
