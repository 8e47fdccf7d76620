"""The discrete-event check agrees with the analytic prediction within sampling error."""

from __future__ import annotations

import numpy as np
import pytest

from genedge.optimizer import anneal, paper_routing, propose
from genedge.optimizer.simulation import simulate_plan
from genedge.testing import synthetic_problem


@pytest.mark.parametrize("planner", ["proposed", "paper"])
def test_simulation_agrees_with_prediction(planner):
    problem = synthetic_problem(3, 4, 80, weight=0.05, rng=2)
    result = propose(problem, rng=0) if planner == "proposed" else anneal(problem, paper_routing(problem), rng=0)
    check = simulate_plan(problem, result, replications=400, rng=1)
    # 4 standard errors: a false alarm about once in 16,000 runs.
    assert abs(check.quality_z) < 4
    assert abs(check.mean_delay_s - check.predicted_delay_s) <= 4 * check.mean_delay_se_s + 1e-9
    assert check.predicted_quality == pytest.approx(result.mean_quality)


def test_random_routing_adds_the_variance_of_the_loads_to_the_delay():
    problem = synthetic_problem(2, 1, 40, weight=0.05, rng=0)
    result = anneal(problem, np.array([[0.5, 0.5]]), rng=0)
    check = simulate_plan(problem, result, replications=2000, rng=3)
    assert check.predicted_delay_s > check.plan_delay_s  # E[N²] = N̄² + Var N
    assert abs(check.delay_z) < 4


def test_simulation_refuses_fractional_counts():
    problem = synthetic_problem(2, 2, 10, rng=0)
    fractional = type(problem)(**{**problem.__dict__, "counts": problem.counts + 0.5})
    with pytest.raises(ValueError, match="Expected whole request counts"):
        simulate_plan(fractional, propose(fractional, rng=0))


def test_sweep_records_each_planner_time_from_its_result():
    from genedge import data
    from genedge.calibrate import load_table
    from genedge.optimizer import Problem, Workload
    from genedge.optimizer.analysis import sweep

    table = load_table(data.path("tables", "reference-a100.json"))

    def make_problem(workload, budget, weight):
        return Problem.from_table(table, workload, budget=budget, weight=weight, device_memory_bytes=10 * 2**30)

    results, checks = sweep(
        make_problem,
        Workload.from_counts({"Basic": 1, "Detail": 2}),
        [12],
        [1.0],
        [0.05],
        methods=["genedge", "paper", "optimal-step", "exact"],
        replications=20,
    )
    assert [row["method"] for row in results] == ["genedge", "paper", "optimal-step", "exact"]
    assert all(row["plan_time_s"] > 0 for row in results)
    assert len(checks) == 1 and checks[0]["exact_certified_gap_pct"] >= -1e-9


@pytest.mark.parametrize("figures", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_simulate_writes_csv_readable_by_pandas_and_figures_only_when_asked(tmp_path, figures):
    import subprocess
    import sys

    import pandas as pd

    code = (
        "import sys\n"
        "from genedge.cli import main\n"
        f"status = main(['simulate', '--loads', '10,20', '--budgets', '1', '--weights', '0.05', '--replications', '10',"
        f" '--out', {str(tmp_path)!r}{', ' + repr('--figures') if figures else ''}])\n"
        "print(sorted(m for m in ('pandas', 'pyarrow', 'scipy.stats', 'matplotlib', 'torch') if m in sys.modules))\n"
        "raise SystemExit(status)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == ("['matplotlib']" if figures else "[]")
    results = pd.read_csv(tmp_path / "results.csv")
    checks = pd.read_csv(tmp_path / "checks.csv")
    assert len(results) == 2 * 7 and set(results["method"]) >= {"genedge", "paper", "exact"}
    assert len(checks) == 2 and (checks["exact_certified_gap_pct"] >= -1e-9).all()
    assert (tmp_path / "sweep.png").exists() == figures
