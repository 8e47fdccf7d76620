"""benchmarks/open_arrivals.py: its smallest case runs, and its fixed plan is what it says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import script_module

from genedge.optimizer.model import Slo

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "open_arrivals.py"


@pytest.fixture(scope="module")
def bench():
    with script_module(SCRIPT, "open_arrivals_benchmark") as module:
        yield module


def test_fixed_plan_runs_both_models_at_the_target_load(bench) -> None:
    table = bench.GALAXY.load()
    for rho in (0.5, 0.95):
        problem, plan = bench.fixed_plan(table, rho, None)
        assert problem.arrivals == "open"
        assert plan.deployed.all()
        np.testing.assert_allclose(plan.utilization, rho, rtol=1e-9)
        assert plan.plan.share_vector.sum() == pytest.approx(problem.budget)


def test_smallest_simulation_agrees_under_poisson_and_prints(bench, capsys) -> None:
    slo = Slo(10.0, 0.95)
    rows = bench.analytic_vs_simulated((0.5,), n_requests=5000, replications=2, slo=slo)
    assert [r["process"] for r in rows] == ["poisson", "MMPP 4"]
    poisson, bursty = rows
    # M/D/1 is exact for whole categories routed to single-server queues under Poisson arrivals.
    assert poisson["mean"] == pytest.approx(poisson["analytic_mean"], rel=0.1)
    # Bursts the M/D/1 model does not see make the simulated mean longer.
    assert bursty["mean"] > bursty["analytic_mean"]
    bench.print_analytic_vs_simulated(rows, 5000, 2, slo)
    out = capsys.readouterr().out
    assert "poisson" in out and "MMPP 4" in out and "attain a/s" in out


def test_certified_gap_rows_on_the_cheapest_objective(bench, capsys) -> None:
    table = bench.GALAXY.load()
    rows = bench.certified_gaps(bench.GALAXY, table, Slo(10.0, 0.95), {"window (classic)"}, {})
    assert [name for name, *_ in rows] == ["window (classic)"]
    _, _, ours, exact = rows[0]
    assert exact.upper_bound >= exact.utility >= ours.utility - 1e-9
    bench.print_certified_gaps(bench.GALAXY, rows)
    assert "window (classic)" in capsys.readouterr().out


def test_a_baseline_git_cannot_check_out_is_named_not_raised(bench) -> None:
    assert bench.baseline_times({}, "no-such-ref-0000", 1).startswith("no baseline: git could not check out")


@pytest.mark.slow
def test_the_baseline_at_head_plans_what_this_checkout_plans(bench, capsys) -> None:
    run = bench.paper_scale(bench.GALAXY, 1)
    runs = {bench.GALAXY.table: run}
    baseline = bench.baseline_times(runs, "HEAD", 1)
    assert baseline[bench.GALAXY.table]["utility"] == pytest.approx(run["rows"][bench.PROPOSED][1].utility, abs=1e-9)
    bench.print_baseline(runs, baseline, "HEAD")
    assert "genedge now vs at HEAD" in capsys.readouterr().out
