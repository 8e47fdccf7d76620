"""``benchmarks/trace_replay.py``'s core on a rate step: static, adaptive and oracle plans served by the switching
simulation lose no request, and the adaptive service (the server's controller) moves up with the step and back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import script_module

from genedge.optimizer.analysis import plan_schedule
from genedge.optimizer.model import Arrivals, poisson_arrivals
from genedge.serve.controller import ControllerSettings

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "trace_replay.py"
MIX = {"Basic": 272, "Detail": 544, "Imagination": 150, "Complex": 113}
#: One hour at each rate (requests/s): calm, busy, calm.
STEP = (0.05, 0.45, 0.05)


def _stepped_arrivals() -> Arrivals:
    """Poisson arrivals in PartiPrompts' mix whose rate steps up for the second hour and back for the third."""
    total = sum(MIX.values())
    parts = []
    for hour, rate in enumerate(STEP):
        drawn = poisson_arrivals({c: rate * n / total for c, n in MIX.items()}, duration_s=3600.0, rng=hour)
        parts.append((drawn.times_s + hour * 3600.0, drawn.category, drawn.categories))
    categories = parts[0][2]
    return Arrivals(
        np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), categories, 3600.0 * len(STEP)
    )


@pytest.fixture(scope="module")
def replayed():
    with script_module(BENCHMARK, "trace_replay_benchmark") as bench:
        problem_at, _ = bench.problem_maker()
        schedule = plan_schedule(problem_at, [0.05, 0.25, 0.45])
        arrivals = _stepped_arrivals()
        result = bench.replay(arrivals, schedule, problem_at(0.05), ControllerSettings(tick_s=10.0), peak_rate=0.45)
        yield bench, schedule, result


def test_every_policy_serves_or_rejects_every_request(replayed):
    bench, _, result = replayed
    n = len(result.arrivals)
    for name in bench.POLICIES:
        records = result.records[name]
        assert len(records) == n and records.served.sum() + records.rejected.sum() == n
        assert np.isfinite(result.scores[name][records.served]).all()
        figures = bench.figures(records, result.scores[name], 0.05, bench.switches_in(result.timelines[name]))
        assert 0 < figures.attainment <= 1 and figures.requests == n


def test_the_adaptive_service_moves_up_with_the_step_and_back_down(replayed):
    bench, schedule, result = replayed
    adaptive = result.timelines["adaptive"]
    calm, busy = bench.band_of(schedule, STEP[0]), bench.band_of(schedule, STEP[1])
    assert busy > calm and bench.switches_in(adaptive) >= 2
    assert bench.band_in_force(adaptive, 3600.0, 7200.0) == busy  # within the busy hour, mostly its plan
    assert adaptive[-1][1] < busy  # and back down after it
    up = next(at for at, band in adaptive if band == busy)
    assert 3600.0 < up < 3600.0 + 600.0
    # the oracle switches at the hours, to each hour's plan; the statics never
    assert [band for _, band in result.timelines["oracle"]] == [
        bench.band_of(schedule, len(h) / 3600.0)
        for h in np.split(result.arrivals.times_s, np.searchsorted(result.arrivals.times_s, [3600.0, 7200.0]))
    ]
    assert len(result.timelines["static-mean"]) == len(result.timelines["static-peak"]) == 1


def test_the_busy_hour_is_served_better_by_the_plans_that_switch_than_by_the_calm_static_plan(replayed):
    bench, _, result = replayed
    busy = (result.arrivals.times_s >= 3600.0) & (result.arrivals.times_s < 7200.0)
    attainment = {name: bench.subset(result.records[name], busy).slo_attainment(bench.SLO_S) for name in bench.POLICIES}
    assert attainment["adaptive"] > attainment["static-mean"] and attainment["oracle"] > attainment["static-mean"]
