"""``benchmarks/trace_replay_server.py``'s core on 15 minutes of GenTD26's busiest day, one trace minute a second:
the demo's schedule served on loopback with its controller, the load test's records accounted for (every request
answered once), ``/metrics`` scraped while it runs, the same minutes simulated under the four policies, and the
report and figure made."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import SHARED_DATA, DemoRun, script_module

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "trace_replay_server.py"
GENTD26 = SHARED_DATA / "gentd26" / "lora_request_trace.csv"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not GENTD26.is_file(), reason="the GenTD26 request trace is not present"),
]
#: From 05:00 of the trace's busiest day (day 17 from its first request), 15 trace minutes in 15 s.
START_S, MINUTES, TIME_SCALE, RATE_SCALE = 17 * 86400 + 5 * 3600, 15, 60.0, 0.6


@pytest.fixture(scope="module")
def measured(demo_run: DemoRun, tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("diffusers", reason="serving replicas needs genedge[profile]")
    pytest.importorskip("ray.serve", reason="needs genedge[serve]")
    folder, done = demo_run
    assert done.returncode == 0, done.stderr
    with script_module(BENCHMARK, "trace_replay_server_benchmark") as bench:
        images = bench.trace_images(GENTD26)
        schedule = bench.plan_for_trace(folder, images, rates="1:40:5", name="trace-replay-schedule.json")
        setup = bench.Setup(
            GENTD26, START_S, START_S + 60 * MINUTES, TIME_SCALE, RATE_SCALE, folder / "table.json", schedule
        )
        yield bench, setup, bench.measure(setup, tmp_path_factory.mktemp("served"), policies=("adaptive",))


def test_every_request_of_the_replay_is_answered_exactly_once(measured):
    bench, setup, result = measured
    run = result.runs["adaptive"]
    sent = len(bench.replayed(setup))
    counted = bench.accounting(run)
    assert counted.sent == sent == len(run.records)
    assert counted.ok + counted.rejected_with_retry == sent
    assert counted.clean, counted
    figures = result.served_figures("adaptive")
    assert figures.requests == sent and 0 < figures.attainment <= 1 and math.isfinite(figures.mean_clipscore)


def test_the_server_is_scraped_while_it_serves_and_its_prediction_read(measured):
    _, _, result = measured
    scrapes = result.runs["adaptive"].scrapes
    assert len(scrapes) >= 60 * MINUTES / TIME_SCALE / 5 - 1  # one every 5 s while the load test runs
    assert all(s.band is not None for s in scrapes)  # a schedule: its band is exported
    last = scrapes[-1]
    assert math.isfinite(last.recalibrated_mean) and math.isfinite(last.recalibrated_p95)
    assert math.isfinite(last.observed_p95) and last.plan_p95 > 0


def test_the_simulation_serves_the_same_arrivals_under_every_policy_and_the_report_is_made(measured, tmp_path):
    bench, setup, result = measured
    sent = len(bench.replayed(setup))
    for name in bench.POLICIES:
        assert result.simulated_figures(name).requests == sent
    text = "\n".join(bench.report(result, 0.0))
    assert "Every request answered once" in text and "Goals" in text
    assert all(path.is_file() for path in bench.draw(result, tmp_path / "figure"))
