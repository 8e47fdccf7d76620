"""The loop on CPU: ``genedge demo`` profiles two tiny replicas, calibrates them and writes a plan that validates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from genedge.calibrate import load_table

pytest.importorskip("torch", reason="the demo profiles replicas with torch and diffusers (genedge[profile])")
pytest.importorskip("diffusers", reason="the demo profiles replicas with torch and diffusers (genedge[profile])")

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.slow
def test_demo_runs_profile_calibrate_plan_offline_on_cpu(tmp_path: Path) -> None:
    from genedge.cli.demo import DEMO_MODELS, REPLICA_BANNER
    from genedge.optimizer.plan_file import load_plan

    done = subprocess.run(
        [sys.executable, "-m", "genedge", "demo", "--dir", str(tmp_path), "--no-figures"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    # Said plainly, before and after the numbers.
    assert done.stdout.count(REPLICA_BANNER) == 2
    assert "1. profile" in done.stdout and "2. calibrate" in done.stdout and "3. plan" in done.stdout

    table = load_table(tmp_path / "table.json")
    assert tuple(table.models) == tuple(sorted(DEMO_MODELS))
    assert all(m.is_replica and m.steps == (2, 3, 4) for m in table.models.values())
    assert table.categories == ("Basic", "Detail", "Imagination", "Complex")
    assert table.category_mapping["name"] == "paper4" and table.category_mapping["column"] == "Challenge"
    assert table.device["name"] and table.exclusions == ()

    plan = load_plan(tmp_path / "plan.json")  # validates routing rows, shares and budget
    assert set(plan["routing"]) == set(table.categories)
    assert set(plan["models"]) == set(DEMO_MODELS)
    assert f"wrote {tmp_path / 'plan.json'}" in done.stdout
