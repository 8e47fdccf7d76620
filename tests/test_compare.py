"""``genedge compare``: a doubled per-step latency, reported with its uncertainty and the plan decisions it moves."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from genedge.calibrate import fit_quality
from genedge.calibrate.compare import welch_t
from genedge.calibrate.synthetic import QualityTruth, SyntheticModel, synthetic_run, write_run

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
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


def _genedge(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genedge", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=120
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


def test_compare_reports_doubled_per_step_latency_and_the_plan_decisions_it_moves(tmp_path: Path) -> None:
    tables = []
    for name, models in (("old", [SMALL, LARGE]), ("new", [SMALL, dataclasses.replace(LARGE, per_step_s=0.24)])):
        # The same seed draws the same scores: only the latency differs between the two runs.
        manifest, records = synthetic_run(models, steps=(10, 20, 30, 40), prompts_per_category=20, rng=0)
        run = write_run(tmp_path / name, manifest, records)
        done = _genedge("calibrate", run, "--out", tmp_path / f"{name}.json")
        assert done.returncode == 0, done.stderr
        tables.append(tmp_path / f"{name}.json")

    done = _genedge(
        "compare",
        *tables,
        "--workload",
        "Basic=10,Detail=10,Imagination=10,Complex=10",
        "--weight",
        "0.1",
        "--seed",
        "0",
    )
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


def test_compare_refuses_a_workload_it_cannot_read(tmp_path: Path) -> None:
    manifest, records = synthetic_run([SMALL], steps=(10, 20, 30), prompts_per_category=5, rng=0)
    assert (
        _genedge("calibrate", write_run(tmp_path / "r", manifest, records), "--out", tmp_path / "t.json").returncode
        == 0
    )
    done = _genedge("compare", tmp_path / "t.json", tmp_path / "t.json", "--workload", "Basic:3")
    assert done.returncode == 2
    assert "--workload: expected CATEGORY=COUNT items, but got 'Basic:3'" in done.stderr
