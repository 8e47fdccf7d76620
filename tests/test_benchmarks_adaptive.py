"""benchmarks/adaptive_profiling.py: what it reports over runs, computed from hand-made runs."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "adaptive_profiling.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPT.parent))  # as when run as a script: its folder's helpers import by name
    spec = importlib.util.spec_from_file_location("adaptive_profiling_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        sys.path.remove(str(SCRIPT.parent))


def test_summary_counts_reach_ratios_of_runs_where_both_got_there_and_wrong_stops(bench) -> None:
    run = bench.Run
    pairs = [
        # Both sure on the optimum: uniform took 3 times the images.
        (run(100, {30: 0.4, 100: 0.0}, []), run(300, {30: 0.4, 300: 0.0}, [])),
        # Adaptive sure on a plan 0.3 points short of the optimum (a wrong stop); uniform right, 2 times the images.
        (run(200, {30: 0.4, 200: 0.3}, []), run(400, {30: 0.4, 400: 0.0}, [])),
        # Uniform never sure within the budget: no ratio, though adaptive got there.
        (run(100, {30: 0.2, 100: 0.0}, []), run(None, {30: 0.2, 500: 0.0}, [])),
        # Adaptive never sure; uniform sure on a plan 0.1 short.
        (run(None, {30: 0.5, 500: 0.0}, []), run(250, {30: 0.5, 250: 0.1}, [])),
        # Both sure on the first batch.
        (run(30, {30: 0.0}, []), run(30, {30: 0.0}, [])),
    ]
    summary = bench.summarize(pairs)
    assert summary.runs == 5
    assert summary.reached == (4, 4)
    assert summary.ratios == (1.0, 2.0, 3.0)
    assert summary.ratio_quartiles() == pytest.approx((1.5, 2.0, 2.5))
    assert summary.wrong == ((0.3,), (0.1,))
    assert bench.fmt_ratios(summary) == "2.0x [1.5–2.5] (1.0–3.0; 3 runs)"
    assert bench.fmt_wrong(summary, 0) == "1 of 4 (0.30)"


def test_summary_without_a_run_where_both_got_there_has_no_ratio(bench) -> None:
    run = bench.Run
    summary = bench.summarize([(run(None, {30: 0.2}, []), run(60, {30: 0.2, 60: 0.0}, []))])
    assert summary.reached == (0, 1)
    assert summary.ratios == ()
    assert summary.ratio_quartiles() is None
    assert bench.fmt_ratios(summary) == "— (0 runs)"


def test_regret_at_equal_images_keeps_each_runs_last_plan_and_pairs_the_difference(bench) -> None:
    run = bench.Run
    pairs = [
        (run(20, {10: 1.0, 20: 0.0}, []), run(None, {10: 1.0}, [])),
        (run(None, {10: 0.5}, []), run(None, {10: 0.5, 20: 0.1}, [])),
    ]
    row = bench.regret_at_equal_images(pairs, 20)
    # adaptive [0.0, 0.5], uniform [1.0, 0.1], adaptive − uniform [−1.0, 0.4]: standard error sd / √2.
    assert row.mean == pytest.approx((0.25, 0.55))
    assert row.se == pytest.approx((0.25, 0.45))
    assert row.difference == pytest.approx(-0.3)
    assert row.difference_se == pytest.approx(0.7)
    assert not row.stopped  # the stop at 20 images is not before 20
    later = bench.regret_at_equal_images(pairs, 30)
    assert later.mean == pytest.approx((0.25, 0.55)) and later.stopped
    assert bench.mean_and_se([2.0]) == (2.0, 0.0)


def test_synthetic_truths_take_every_seed_whatever_its_closest_decision_needs(bench) -> None:
    truth = bench.synthetic_truth(1)
    assert truth.name == "synthetic seed 1"
    mean, _ = bench.synthetic_means(1)
    assert {cell: truth.truth.cell_mean(cell) for cell in truth.cells} == pytest.approx(mean)
    # Seed 1's closest decision needs hundreds of images per cell; the benchmark keeps it all the same.
    hardest = max(m.images for m in bench.decision_margins(truth.true_problem))
    assert math.isfinite(hardest) and hardest > 150
