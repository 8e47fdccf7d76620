"""The loop on CPU: ``genedge demo`` profiles two tiny replicas, calibrates them and writes a plan that validates."""

from __future__ import annotations

import pytest
from conftest import DemoRun

from genedge.calibrate import load_table

pytest.importorskip("torch", reason="the demo profiles replicas with torch and diffusers (genedge[profile])")
pytest.importorskip("diffusers", reason="the demo profiles replicas with torch and diffusers (genedge[profile])")


@pytest.mark.slow
def test_demo_runs_profile_calibrate_plan_offline_on_cpu(demo_run: DemoRun) -> None:
    from genedge.cli.demo import DEMO_MODELS, REPLICA_BANNER
    from genedge.optimizer.plan_file import load_plan

    folder, done = demo_run  # the folder given as --dir, and the finished `genedge demo`
    assert done.args[-4:] == ["demo", "--dir", str(folder), "--no-figures"]  # the command a user types
    assert done.returncode == 0, done.stderr
    # Said plainly, before and after the numbers.
    assert done.stdout.count(REPLICA_BANNER) == 2
    assert "1. profile" in done.stdout and "2. calibrate" in done.stdout and "3. plan" in done.stdout

    table = load_table(folder / "table.json")
    assert tuple(table.models) == tuple(sorted(DEMO_MODELS))
    assert all(m.is_replica and m.steps == (2, 3, 4) for m in table.models.values())
    assert table.categories == ("Basic", "Detail", "Imagination", "Complex")
    assert table.category_mapping["name"] == "paper4" and table.category_mapping["column"] == "Challenge"
    assert table.device["name"] and table.exclusions == ()

    plan = load_plan(folder / "plan.json").raw  # validates routing rows, shares and budget
    assert set(plan["routing"]) == set(table.categories)
    assert set(plan["models"]) == set(DEMO_MODELS)
    assert f"wrote {folder / 'plan.json'}" in done.stdout
