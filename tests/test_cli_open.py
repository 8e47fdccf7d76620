"""``genedge plan`` and ``genedge simulate`` with requests over time: rates, traces, SLOs, energy, batching,
shipped tables by name — through the command line a user types."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import genedge_in_process, run_genedge

from genedge import data
from genedge.contract.table_file import load_table, save_table, table_from_dict, table_to_dict
from genedge.optimizer.plan_file import load_plan

METHODS = ("genedge", "paper", "direct-assignment", "random-assignment", "equal-allocation", "optimal-step", "exact")
EDGE = ("--table", "galaxy-s24", "--rate", "0.2", "--slo", "20")


def _method_rows(out: str) -> dict[str, list[str]]:
    """method → the fields of its row in the comparison table."""
    header = out.index("\nmethod ")
    rows = {}
    for line in out[header:].splitlines()[2:]:
        fields = line.split()
        if fields and fields[0] in METHODS:
            rows[fields[0]] = fields
    return rows


@pytest.mark.slow
def test_plan_with_rates_and_an_slo_on_the_edge_table_prints_every_method_and_writes_the_plan(tmp_path: Path) -> None:
    out_path = tmp_path / "plan.json"
    out = run_genedge("plan", *EDGE, "--out", str(out_path), check=True).stdout
    assert "table: Samsung Galaxy S24" in out
    assert "open arrivals (Poisson, M/D/1 per model)" in out and "SLO p95 <= 20 s (overall)" in out
    header = out[out.index("\nmethod ") :].splitlines()[1]
    for column in ("CLIPScore", "mean s", "p95 s", "p99 s", "attained", "utility"):
        assert column in header
    rows = _method_rows(out)
    assert set(rows) == set(METHODS)
    # genedge's plan meets the SLO: its p95 is within 20 s and at least 95 % are within it.
    p95, attained = float(rows["genedge"][3]), float(rows["genedge"][5])
    assert p95 <= 20 + 1e-6 and attained >= 0.95 - 1e-9
    assert float(rows["genedge"][6]) >= max(float(r[6]) for r in rows.values() if r[6] != "-inf") - 1e-9
    assert "unstable: sd21 at load ρ =" in out  # equal allocation's half NPU cannot keep SD 2.1 stable
    plan = load_plan(out_path).raw
    inputs = plan["inputs"]
    assert inputs["arrivals"] == "open" and inputs["workload_unit"] == "requests/s"
    assert inputs["slo"] == {"seconds": 20.0, "attainment": 0.95, "scope": "overall"}
    assert plan["predicted"]["feasible"] and plan["predicted"]["slo_attainment"] >= 0.95 - 1e-9
    deployed = [m for m in plan["models"].values() if m["deployed"]]
    assert all(0 < m["utilization"] < 1 and m["max_batch"] == 1 for m in deployed)
    assert plan["baselines"]["equal-allocation"]["stable"] is False
    assert plan["baselines"]["equal-allocation"]["utility"] is None  # an infinite figure is written as null


@pytest.mark.slow
def test_the_quality_objective_maximizes_clipscore_under_the_slo(capsys: pytest.CaptureFixture) -> None:
    done = genedge_in_process(capsys, "plan", *EDGE, "--objective", "quality", "--compare", "optimal-step")
    assert done.returncode == 0, done.stderr
    assert "w = 0 points/s" in done.stdout
    rows = _method_rows(done.stdout)
    # With w = 0 the utility is the mean CLIPScore.
    assert float(rows["genedge"][6]) == pytest.approx(float(rows["genedge"][1]), abs=0.01)
    assert float(rows["genedge"][5]) >= 0.95 - 1e-9


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--arrivals", "open"), "--arrivals open needs rates: give --rates, --rate or --trace, or --window-s"),
        (("--rates", "Basic=0.1", "--arrivals", "window"), "plan them with --arrivals open"),
        (("--objective", "quality"), "--objective quality maximizes CLIPScore subject to an SLO: give --slo"),
        (("--percentile", "99"), "--percentile and --attainment need --slo SECONDS"),
        (("--rate", "0.2", "--slo", "20", "--percentile", "100"), "expected a percentile in (0, 100)"),
        (("--rate", "0"), "--rate: expected requests per second >= 1e-06"),
        (("--rates", "Basic=x"), "--rates: expected a number for 'Basic'"),
        (("--rate", "5", "--table", "galaxy-s24"), "No plan can keep every queue stable"),
        (("--energy-price", "0.01", "--table", "galaxy-s24"), "the table has none for ['sd15', 'sd21']"),
    ],
)
def test_bad_service_options_are_one_clear_line(capsys: pytest.CaptureFixture, args: tuple, message: str) -> None:
    done = genedge_in_process(capsys, "plan", *args)
    assert done.returncode == 2, done.stdout
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_the_energy_price_moves_the_plan_to_cheaper_images(capsys: pytest.CaptureFixture) -> None:
    energy = []
    for price in ("0", "0.002", "0.02"):
        done = genedge_in_process(capsys, "plan", "--energy-price", price, "--compare", "exact")
        assert done.returncode == 0, done.stderr
        energy.append(float(_method_rows(done.stdout)["genedge"][5]))  # J/image
    assert energy[0] >= energy[1] >= energy[2] and energy[2] < energy[0]


def test_a_trace_written_by_pandas_is_planned_at_its_rates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.exponential(10.0, 200))  # 0.1 requests/s
    category = rng.choice(["Basic", "Detail", "Complex"], size=200, p=[0.25, 0.5, 0.25])
    path = tmp_path / "trace.csv"
    pd.DataFrame({"time_s": times, "category": category}).to_csv(path, index=False)
    done = genedge_in_process(capsys, "plan", "--table", "galaxy-s24", "--trace", str(path), "--compare", "exact")
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("workload:"))
    assert "open arrivals" in line and "Imagination" not in line
    total = float(line.split()[1])
    assert total == pytest.approx(0.1, rel=0.15)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"time_s": [0.0, 1.0], "prompt": ["a cat", "a dog"]}).to_csv(bad, index=False)
    done = genedge_in_process(capsys, "plan", "--trace", str(bad))
    assert done.returncode == 2 and "bad.csv" in done.stderr and "Traceback" not in done.stderr


def test_random_routing_counts_the_variance_of_the_loads(capsys: pytest.CaptureFixture) -> None:
    rows = {}
    for routing in ("deterministic", "random"):
        done = genedge_in_process(
            capsys, "plan", "--routing", routing, "--method", "equal-allocation", "--compare", "equal-allocation"
        )
        assert done.returncode == 0, done.stderr
        assert f"{routing} routing" in done.stdout
        rows[routing] = _method_rows(done.stdout)["equal-allocation"]
    # The same plan (the paper's split routing, default steps, equal shares) waits longer on average when
    # each request is drawn at random: the loads vary from window to window.
    assert float(rows["random"][2]) > float(rows["deterministic"][2])
    assert rows["random"][1] == rows["deterministic"][1]  # quality does not depend on how routing is realized


def _table_with_batch_lines(path: Path) -> Path:
    """The Galaxy S24 table with a batch-2 line per model that costs 1.6× the batch-1 call."""
    document = table_to_dict(load_table(data.path("tables", "galaxy-s24.json")))
    for model in document["models"].values():
        line = dict(model["latency"])
        double = {**line, "overhead_s": 1.6 * line["overhead_s"], "per_step_s": 1.6 * line["per_step_s"]}
        double["batch_size"] = 2
        model["batch_latency"] = {"1": {**line, "batch_size": 1}, "2": double}
        model["latency"] = {**line, "batch_size": 1}
    return save_table(table_from_dict(document, where=str(path)), path)


def test_batching_is_chosen_where_it_pays(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table = _table_with_batch_lines(tmp_path / "batched.json")
    args = ("plan", "--table", str(table), "--rate", "0.55", "--compare", "exact")
    plain = genedge_in_process(capsys, *args)
    batched = genedge_in_process(capsys, *args, "--batching", "--out", str(tmp_path / "plan.json"))
    assert plain.returncode == 0 and batched.returncode == 0, batched.stderr
    assert "max batch" in batched.stdout and "batching" in batched.stdout
    # A table whose models have one batch size each leaves nothing to choose: the same plan as without.
    shipped = ("plan", "--table", "galaxy-s24", "--rate", "0.2", "--compare", "exact")
    with_flag = _method_rows(genedge_in_process(capsys, *shipped, "--batching").stdout)
    without = _method_rows(genedge_in_process(capsys, *shipped).stdout)
    assert {m: r[:7] for m, r in with_flag.items()} == {m: r[:7] for m, r in without.items()}  # all but times
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert max(m["max_batch"] for m in plan["models"].values()) == 2
    # A batch of two at 1.6× the time serves more per second: the mean delay drops at this load.
    assert float(_method_rows(batched.stdout)["genedge"][2]) < float(_method_rows(plain.stdout)["genedge"][2])


def test_shipped_tables_are_named_in_compare(capsys: pytest.CaptureFixture) -> None:
    done = genedge_in_process(capsys, "compare", "galaxy-s24", "x-elite-crd", "--rate", "0.1")
    assert done.returncode == 0, done.stderr
    assert "open arrivals" in done.stdout and "p99 delay s" in done.stdout


@pytest.mark.slow
def test_simulate_compares_the_window_and_open_plans_of_one_demand(tmp_path: Path) -> None:
    out = run_genedge(
        "simulate", "--table", "galaxy-s24", "--window-vs-open", "600", "--slo", "30", "--budgets", "1",
        "--simulated-requests", "5000", check=True,
    ).stdout  # fmt: skip
    assert "100 requests per 600 s window ≡ 0.1667 requests/s" in out
    lines = out.splitlines()
    window = lines.index(next(line for line in lines if line.startswith("window model")))
    opened = lines.index(next(line for line in lines if line.startswith("open arrivals")))
    assert "simulated, Poisson" in lines[window + 1] and "bursty MMPP (D = 4)" in lines[window + 2]
    assert "simulated, Poisson" in lines[opened + 1]
    # The open-arrival plan, made for the demand as it arrives, scores higher than the window plan.
    assert float(lines[opened].split()[-3]) > float(lines[window].split()[-3])
    # A trace is replayed as well, and sets the demand: 500 requests over about 3,000 s.
    rng = np.random.default_rng(1)
    trace = tmp_path / "trace.csv"
    times = np.cumsum(rng.exponential(6.0, 500))
    pd.DataFrame({"time_s": times, "category": rng.choice(["Basic", "Detail"], 500)}).to_csv(trace, index=False)
    out = run_genedge(
        "simulate", "--table", "galaxy-s24", "--window-vs-open", "600", "--budgets", "1", "--trace", str(trace),
        "--simulated-requests", "2000", check=True,
    ).stdout  # fmt: skip
    assert out.count("simulated, the trace") == 2
    demand = next(line for line in out.splitlines() if line.startswith("demand:"))
    assert float(demand.split("≡")[1].split()[0]) == pytest.approx(500 / times[-1], rel=1e-3)
