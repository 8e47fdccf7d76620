"""A plan's claimed confidence checked as a frequency, on real per-prompt CLIPScores as the ground truth.

The truth is SD3-Medium's (``../shared/data/ditserving-sd3-parti``, as ``benchmarks/adaptive_profiling.py``
builds it): two models, four PartiPrompts Challenges, 20 real prompts each, measured on the same prompts.
Each repetition of ``benchmarks/confidence_frequency.py`` profiles it as genedge does, the same prompts (drawn
with replacement) for every cell of a category, fits the table, plans, and asks the bootstrap how sure each
decision is; the truth's own optimum says whether the decision was right. This test runs those repetitions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import script_module
from scipy import stats

from genedge.optimizer.planners import exact_search

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
BENCHMARK = ROOT / "benchmarks" / "confidence_frequency.py"
REPETITIONS, IMAGES = 100, 20
# Claimed-probability bins; a bin is judged from this many claims on.
BINS, MIN_CLAIMS = ((0.5, 0.8), (0.8, 0.95), (0.95, 1.0 + 1e-9)), 10
# A bin fails when its right count is below the claims' binomial 0.5 % quantile.
ALPHA = 0.005


def _claims(same_prompts: bool) -> dict[str, np.ndarray]:
    """(claimed probability, right) of every deployment and routing decision over the repetitions."""
    with script_module(BENCHMARK, "confidence_frequency_benchmark") as bench:
        truth = bench.sd3_truth(SHARED_DATA)
        best = exact_search(truth.true_problem)
        runs = [bench.repetition(truth, best, IMAGES, same_prompts, rep) for rep in range(REPETITIONS)]
    return {kind: np.array([c for run in runs for c in run[kind]], dtype=float) for kind in ("deploy", "routing")}


def _over_confident(claims: np.ndarray) -> list[str]:
    """The bins whose decisions were right significantly less often than claimed."""
    failures = []
    for lo, hi in BINS:
        inside = claims[(claims[:, 0] >= lo) & (claims[:, 0] < hi)]
        if len(inside) >= MIN_CLAIMS:
            right, claimed = int(inside[:, 1].sum()), float(inside[:, 0].mean())
            if right < stats.binom.ppf(ALPHA, len(inside), claimed):
                failures.append(f"[{lo}, {hi}): {right} of {len(inside)} right, {claimed:.3f} claimed")
    return failures


def _brier(claims: np.ndarray) -> float:
    return float(np.mean((claims[:, 0] - claims[:, 1]) ** 2))


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs the shared data sets beside the repository")
def test_decisions_claimed_sure_on_sd3_at_20_images_per_cell_are_right_at_least_as_often() -> None:
    paired = _claims(same_prompts=True)
    for kind, claims in paired.items():
        assert _over_confident(claims) == [], kind
    # A deployment is a union over categories: its claims were the over-confident ones when every cell
    # drew its own prompts, so that the cells' errors had nothing to share. Profiled that way it scores worse.
    unpaired = _claims(same_prompts=False)
    assert _brier(paired["deploy"]) < 0.08 < _brier(unpaired["deploy"])
    assert _brier(paired["routing"]) < _brier(unpaired["routing"])
