"""``genedge serve SCHEDULE``: a plan schedule served on loopback, driven through a rate step low → high → low.

The demo's two tiny replicas are planned at twelve rates under an SLO (``genedge plan --rates``), and the
schedule is served with a short detector window so the step is seen within seconds. The server starts on the
highest band's plan; the low rate moves it down, the high rate up, the low rate down again. Every request
gets an answer (200, or 503 with ``Retry-After`` when a queue is at its bound), none is lost or served twice
(the ingress's counters and the answers agree), and the served call times are recalibrated against the plan's.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import DemoRun, run_genedge, serve_plan

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("serving_extras")]

WINDOW_S, DWELL_S, TICK_S = 4.0, 4.0, 0.5
#: The capacity the schedule is planned for (requests/s): the demo's replicas are timed on this machine, whose
#: speed (and load) moves the table's capacity several-fold, so the schedule is planned on the share of the
#: device that gives this capacity (the server then holds each model to its share), and the rates below hold.
CAPACITY = 7.7
# (requests per second, seconds): at that capacity the demo's schedule has one model alone up to about 2.3
# requests/s; the high phase is past the lowest band's edge even if this machine serves calls 3x faster than
# profiled.
PHASES = ((0.5, 3 * WINDOW_S + DWELL_S + 4), (8.0, 3 * WINDOW_S), (0.5, 3 * WINDOW_S + 2 * DWELL_S + 4))


@pytest.fixture(scope="module")
def schedule(demo_run: DemoRun) -> Path:
    from genedge.contract.table_file import load_table
    from genedge.optimizer.inputs import problem_from_options
    from genedge.optimizer.model import workload_from_options

    folder, done = demo_run
    assert done.returncode == 0, done.stderr
    table = load_table(folder / "table.json")
    full = problem_from_options(table, workload_from_options(table.categories, rate=1.0), arrivals="open")
    budget = min(1.0, CAPACITY / full.max_stable_rate)
    planned = run_genedge(
        "plan", "--table", "table.json", "--arrivals", "open", "--rates", "0.2:6:12", "--slo", "3",
        "--budget", f"{budget:.4f}", "--out", "schedule.json", cwd=folder,
    )  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    assert len(json.loads((folder / "schedule.json").read_text())["bands"]) >= 2, planned.stdout
    return folder / "schedule.json"


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _post(url: str, body: dict) -> tuple[int, dict, str | None]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read()), None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers.get("Retry-After")


@pytest.fixture(scope="module")
def server(schedule: Path):
    switch = ("--switch-window-s", str(WINDOW_S), "--switch-dwell-s", str(DWELL_S), "--switch-tick-s", str(TICK_S))
    with serve_plan(schedule, *switch) as served:
        yield served.url, schedule


def _drive(url: str) -> list[tuple[float, int, dict, str | None]]:
    """Send the phases' requests at evenly spaced times; (time sent, status, body, Retry-After) of each."""
    categories = ("Basic", "Detail", "Imagination", "Complex")
    times, start = [], 0.0
    for rate, seconds in PHASES:
        times += [start + i / rate for i in range(int(rate * seconds))]
        start += seconds
    began = time.monotonic()

    def send(i: int) -> tuple[float, int, dict, str | None]:
        time.sleep(max(0.0, began + times[i] - time.monotonic()))
        body = {"prompt": f"a small test image {i}", "category": categories[i % 4], "seed": i}
        return (times[i], *_post(f"{url}/v1/generate", body))

    with ThreadPoolExecutor(64) as pool:
        return list(pool.map(send, range(len(times))))


def test_a_rate_step_switches_plans_up_and_down_and_loses_no_request(server) -> None:
    url, schedule = server
    answers = _drive(url)
    served = _get(f"{url}/v1/plan")["served"]
    state = served["schedule"]
    switches = state["switches"]
    # Down from the starting (highest) band in the first low phase, up in the high phase, down again after it.
    ups = [s for s in switches if s["to_band"] > s["from_band"]]
    downs = [s for s in switches if s["to_band"] < s["from_band"]]
    assert downs and ups and downs[0]["at_s"] < ups[0]["at_s"] < downs[-1]["at_s"], switches
    assert all(s["reason"] and s["after"]["decisions"] for s in switches)
    # Every request answered: 200 with its image's record, or 503 with Retry-After; none twice.
    statuses = [status for _, status, _, _ in answers]
    assert set(statuses) <= {200, 503}, statuses
    assert all(retry is not None and int(retry) >= 1 for _, status, _, retry in answers if status == 503)
    records = [body["record"] for _, status, body, _ in answers if status == 200]
    assert len({r["request_id"] for r in records}) == len(records)
    # Requests keep the steps of the plan they were accepted under: every record's steps are some band's.
    bands = json.loads(schedule.read_text())["bands"]
    planned = {(key, entry["steps"]) for band in bands for key, entry in band["plan"]["models"].items()}
    assert {(r["model"], r["steps"]) for r in records} <= planned
    # Each record says the share its call started on (what calibrate --served converts it with).
    assert all(0 < r["share"] <= 1 for r in records)
    stats = _get(f"{url}/v1/stats")
    accepted = sum(m["requests"] for d in stats["devices"] for m in d["models"].values())
    finished = sum(m["images"] for d in stats["devices"] for m in d["models"].values())
    refused = sum(m["rejected"] for d in stats["devices"] for m in d["models"].values())
    assert accepted == finished == len(records) and refused == statuses.count(503)
    # Recalibrated: each model's served call times beside the plan's, with the images behind them.
    times = served["served_times"]
    assert sum(row["images"] for row in times) == len(records)
    assert all(row["ratio"] > 0 and row["planned_s"] > 0 for row in times)
    assert state["load_factor"] > 0
