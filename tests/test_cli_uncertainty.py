"""``genedge plan``'s confidence, expected regret and robust plans, as a user reads and writes them."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import genedge_in_process

from genedge.optimizer.plan_file import load_plan


def test_the_default_plan_says_how_sure_it_is(default_plan: subprocess.CompletedProcess[str]) -> None:
    out = default_plan.stdout
    assert "how sure: a parametric bootstrap of the table, 200 samples (seed 0)" in out
    assert re.search(r"expected regret \d+\.\d{3} ± \d+\.\d{3} points \(Monte Carlo SE\)", out)
    assert re.search(r"routing +Imagination -> sd15 +0\.\d\d", out)
    assert re.search(r"steps +sd21 at \d+ +[01]\.\d\d", out)
    assert re.search(r"deploy +sdxl no +[01]\.\d\d", out)


def test_the_plan_file_carries_its_confidence(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    done = genedge_in_process(capsys, "plan", "--samples", "60", "--seed", "3", "--out", str(tmp_path / "plan.json"))
    assert done.returncode == 0, done.stderr
    document = load_plan(tmp_path / "plan.json").raw
    sure = document["uncertainty"]
    assert (sure["samples"], sure["seed"]) == (60, 3)
    assert set(sure["routing"]) == {"Basic", "Detail", "Imagination", "Complex"}
    assert all(0 <= r["probability"] <= 1 for r in sure["routing"].values())
    assert sure["expected_regret"] >= 0 and sure["expected_regret_mc_se"] > 0
    assert sure["utility_interval_90"][0] < sure["utility_interval_90"][1]
    # The same seed gives the same figures.
    again = genedge_in_process(capsys, "plan", "--samples", "60", "--seed", "3", "--out", str(tmp_path / "again.json"))
    assert again.returncode == 0
    assert json.loads((tmp_path / "again.json").read_text())["uncertainty"]["routing"] == sure["routing"]


def test_robust_plans_are_compared_on_the_same_samples(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    done = genedge_in_process(
        capsys, "plan", "--robust", "quantile", "--quantile", "0.2", "--samples", "60", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    rows = {
        line.split("  ")[0].strip(): line
        for line in done.stdout.splitlines()
        if line.startswith(("point", "expected", "q20"))
    }
    assert set(rows) == {"point estimate", "expected utility", "q20 utility"}
    assert rows["q20 utility"].endswith("(written)")
    figures = {name: [float(v) for v in line.split()[2:7]] for name, line in rows.items()}
    point, expected, lower = figures["point estimate"], figures["expected utility"], figures["q20 utility"]
    assert expected[1] >= point[1] and lower[2] >= point[2]  # each is at least the point plan on its own objective
    assert "robust: q20 utility" in load_plan(out).method


def test_the_bootstrap_can_be_skipped_and_refuses_one_sample(capsys: pytest.CaptureFixture) -> None:
    assert "how sure" not in genedge_in_process(capsys, "plan", "--samples", "0").stdout
    refused = genedge_in_process(capsys, "plan", "--samples", "1")
    assert refused.returncode == 2 and "--samples: expected 0 (skip) or at least 2" in refused.stderr
