"""genedge loadtest: the schedule, the open-loop client, incremental records and resume, the plan's prediction
at the offered rates, the measured summary, and the command end to end against a real HTTP server on
127.0.0.1 that implements the contract of :mod:`genedge.serve.protocol` with a trivial generator."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import free_port, run_genedge
from kill_points import run_killed
from loadtest_stub import PROMPTS, TABLE, StubServer, write_plan

from genedge.cli import main
from genedge.contract.prompts import read_prompt_file
from genedge.contract.table_file import load_table
from genedge.optimizer.plan_file import PlanDocument, plan_from_dict
from genedge.serve import protocol
from genedge.serve.loadtest import run_loadtest
from genedge.serve.loadtest_config import LoadConfig, LoadTestError
from genedge.serve.loadtest_document import SessionDocument
from genedge.serve.loadtest_layout import CLIENT_FIELDS, read_records
from genedge.serve.loadtest_schedule import build_schedule
from genedge.serve.measured import (
    NO_GROUP,
    compare_run,
    comparison_figure,
    comparison_to_dict,
    format_comparison,
    measure,
    realized_shares,
)
from genedge.serve.predict import predict_at_rates, predict_for_window
from genedge.serve.protocol import StatsResponse


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_plan(tmp_path_factory.mktemp("plan") / "plan.json")


@pytest.fixture(scope="module")
def plan(plan_file: Path) -> dict:
    return json.loads(plan_file.read_text())


@pytest.fixture(scope="module")
def document(plan: dict, plan_file: Path) -> PlanDocument:
    return plan_from_dict(plan, str(plan_file))


@pytest.fixture(scope="module")
def table():
    return load_table(TABLE)


@pytest.fixture
def server(plan):
    stub = StubServer(plan).start()
    yield stub
    stub.stop()


# --------------------------------------------------------------------------- schedule


def _config(**kwargs) -> LoadConfig:
    return LoadConfig(**{"url": "http://127.0.0.1:1", "prompts": PROMPTS, **kwargs})


def _gaps(schedule) -> np.ndarray:
    times = np.array([r.time_s for r in schedule.requests])
    return np.diff(np.concatenate([[0.0], times]))


def test_poisson_gaps_have_mean_one_over_rate_and_cv_one(document, table):
    prompts = read_prompt_file(PROMPTS)
    schedule = build_schedule(_config(request_rate=4.0, num_prompts=20_000, seed=3), prompts, document, table)
    gaps = _gaps(schedule)
    assert gaps.mean() == pytest.approx(1 / 4.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.03)
    assert schedule.arrivals == "open"


@pytest.mark.parametrize("burstiness", [0.25, 4.0])
def test_gamma_gaps_have_cv_one_over_root_burstiness(document, table, burstiness):
    prompts = read_prompt_file(PROMPTS)
    schedule = build_schedule(
        _config(request_rate=2.0, burstiness=burstiness, num_prompts=20_000, seed=5), prompts, document, table
    )
    gaps = _gaps(schedule)
    assert gaps.mean() == pytest.approx(0.5, rel=0.04)
    assert gaps.std() / gaps.mean() == pytest.approx(1 / math.sqrt(burstiness), rel=0.04)


def test_schedule_is_reproducible_shuffled_and_labelled(document, table):
    prompts = read_prompt_file(PROMPTS)
    one = build_schedule(_config(request_rate=1.0, num_prompts=16, seed=7), prompts, document, table)
    two = build_schedule(_config(request_rate=1.0, num_prompts=16, seed=7), prompts, document, table)
    other = build_schedule(_config(request_rate=1.0, num_prompts=16, seed=8), prompts, document, table)
    assert one == two
    assert [r.prompt for r in one.requests] != [r.prompt for r in other.requests]
    texts = prompts.column("Prompt")
    # Every prompt once before any repeats (8 prompts, 16 requests: each exactly twice).
    assert sorted(r.prompt for r in one.requests[:8]) == sorted(texts)
    assert len({r.seed for r in one.requests}) == 16
    # smoke.tsv's Challenge labels map to the paper's categories.
    by_prompt = dict(zip(texts, prompts.column("Challenge")))
    for request in one.requests:
        expected = {"Fine-grained Detail": "Detail", "Simple Detail": "Detail"}.get(by_prompt[request.prompt])
        assert request.category == (expected or by_prompt[request.prompt])
    assert sum(one.demand.values()) == pytest.approx(16 / one.duration_s)


def test_no_categories_spreads_demand_in_the_plan_mix(plan, document, table):
    prompts = read_prompt_file(PROMPTS)
    schedule = build_schedule(
        _config(request_rate=1.0, num_prompts=10, send_categories=False), prompts, document, table
    )
    assert all(r.category is None for r in schedule.requests)
    assert all(r.label_category is not None for r in schedule.requests)
    assert schedule.unplaced == 10
    mix = plan["inputs"]["workload"]
    total = sum(mix.values())
    for category, rate in schedule.demand.items():
        assert rate == pytest.approx(10 / schedule.duration_s * mix[category] / total)


def test_trace_gives_times_and_categories(tmp_path, document, table):
    trace = tmp_path / "trace.tsv"
    trace.write_text("time_s\tcategory\n0.5\tBasic\n1.0\tComplex\n1.0\tBasic\n4.0\tDetail\n")
    prompts = read_prompt_file(PROMPTS)
    schedule = build_schedule(_config(trace=trace, seed=1), prompts, document, table)
    assert [r.time_s for r in schedule.requests] == [0.5, 1.0, 1.0, 4.0]
    assert [r.category for r in schedule.requests] == ["Basic", "Complex", "Basic", "Detail"]
    # Each request's prompt is one labelled with its category, the two Basic ones distinct.
    assert [r.label_category for r in schedule.requests] == ["Basic", "Complex", "Basic", "Detail"]
    assert schedule.requests[0].prompt != schedule.requests[2].prompt
    assert schedule.demand == pytest.approx({"Basic": 2 / 4.0, "Complex": 1 / 4.0, "Detail": 1 / 4.0})
    bad = tmp_path / "bad.tsv"
    bad.write_text("time_s\tcategory\n0.5\tNope\n")
    with pytest.raises(ValueError, match=r"bad\.tsv: category: .* have another"):
        build_schedule(_config(trace=bad), prompts, document, table)


def test_infinite_rate_is_a_window(document, table):
    schedule = build_schedule(_config(num_prompts=5), read_prompt_file(PROMPTS), document, table)
    assert schedule.arrivals == "window"
    assert all(r.time_s == 0 for r in schedule.requests)
    assert sum(schedule.demand.values()) == 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"request_rate": 0.0}, "--request-rate"),
        ({"request_rate": math.nan}, "--request-rate"),
        ({"burstiness": 0.0}, "--burstiness"),
        ({"num_prompts": 0}, "--num-prompts"),
        ({"max_concurrency": 0}, "--max-concurrency"),
        ({"endpoint": "grpc"}, "--endpoint"),
        ({"url": "127.0.0.1:8000"}, "http://"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(LoadTestError, match=match):
        _config(**kwargs)


def test_prompt_file_without_prompt_column_is_named(tmp_path, document, table):
    bad = tmp_path / "bad.tsv"
    bad.write_text("Text\tChallenge\nhello\tBasic\n")
    with pytest.raises(ValueError, match=r"bad\.tsv: Prompt: expected a column 'Prompt'"):
        build_schedule(_config(), read_prompt_file(bad), document, table)


# --------------------------------------------------------------------------- prediction


def test_prediction_at_the_planned_rates_is_the_plans_own(plan, document, table):
    assert sum(m["deployed"] for m in plan["models"].values()) == 2
    prediction = predict_at_rates(document, table, plan["inputs"]["workload"])
    predicted = plan["predicted"]
    assert prediction.overall.mean_response_s == pytest.approx(predicted["mean_delay_s"], rel=1e-9)
    assert prediction.overall.p95_response_s == pytest.approx(predicted["p95_delay_s"], rel=1e-9)
    assert prediction.overall.mean_clipscore == pytest.approx(predicted["mean_clipscore"], rel=1e-9)
    assert prediction.stable and prediction.arrivals == "open"
    deployed = [k for k, m in plan["models"].items() if m["deployed"]]
    assert sorted(prediction.per_model) == sorted(deployed)
    for key in deployed:
        assert prediction.per_model[key].utilization == pytest.approx(plan["models"][key]["utilization"], rel=1e-9)
    # The overall mean is the models' means weighted by their rates, and so is every category's.
    rates = {k: g.rate for k, g in prediction.per_model.items()}
    weighted = sum(rates[k] * prediction.per_model[k].mean_response_s for k in rates) / sum(rates.values())
    assert weighted == pytest.approx(prediction.overall.mean_response_s, rel=1e-9)


def test_category_figures_mix_the_models_it_is_routed_to(plan, document, table):
    prediction = predict_at_rates(document, table, plan["inputs"]["workload"], slo_s=2.0)
    per_model = prediction.per_model
    for category, row in plan["routing"].items():
        group = prediction.per_category[category]
        used = {k: p for k, p in row.items() if p > 0}
        mean = sum(p * per_model[k].mean_response_s for k, p in used.items())
        attained = sum(p * per_model[k].slo_attainment for k, p in used.items())
        assert group.mean_response_s == pytest.approx(mean, rel=1e-9)
        assert group.slo_attainment == pytest.approx(attained, rel=1e-9)
        p95 = [per_model[k].p95_response_s for k in used]
        assert min(p95) - 1e-9 <= group.p95_response_s <= max(p95) + 1e-9
    split = [c for c, row in plan["routing"].items() if 0 < max(row.values()) < 1]
    assert split  # the fixture's plan splits a category, so a mixture is exercised


def test_prediction_past_capacity_is_unstable_with_quality(plan, document, table):
    rates = {c: 10 * v for c, v in plan["inputs"]["workload"].items()}
    prediction = predict_at_rates(document, table, rates, slo_s=5.0)
    assert not prediction.stable
    assert math.isinf(prediction.overall.mean_response_s)
    assert prediction.overall.mean_clipscore == pytest.approx(plan["predicted"]["mean_clipscore"], rel=1e-9)
    assert max(g.utilization for g in prediction.per_model.values()) >= 1


def test_window_prediction_of_one_model_is_fifo(plan, document, table):
    category = next(c for c, row in plan["routing"].items() if max(row.values()) == 1)
    model = max(plan["routing"][category], key=plan["routing"][category].get)
    prediction = predict_for_window(document, table, {category: 4})
    service = prediction.per_model[model].service_s
    assert prediction.per_model[model].mean_response_s == pytest.approx(service * (4 + 1) / 2)
    assert prediction.overall.p95_response_s == pytest.approx(4 * service)


def test_prediction_refuses_a_category_the_plan_does_not_route(document, table):
    with pytest.raises(ValueError, match=r"categories \['Nope'\] are not routed by the plan"):
        predict_at_rates(document, table, {"Nope": 1.0})


# --------------------------------------------------------------------------- measured


def _records() -> pd.DataFrame:
    rows = [
        # index, session, sent, response, status, model, category, wait, service
        (0, 0, 0.0, 1.0, "ok", "a", "Basic", 0.1, 0.8),
        (1, 0, 1.0, 2.0, "ok", "a", "Basic", 0.3, 0.8),
        (2, 0, 2.0, 4.0, "ok", "b", "Detail", 1.0, 2.0),
        (3, 0, 3.0, 0.01, "rejected", None, None, None, None),
        (4, 1, 10.0, 3.0, "ok", "b", "Detail", 0.5, 2.0),
    ]
    frame = pd.DataFrame(
        rows, columns="index session sent_s client_response_s status model category queue_wait_s service_s".split()
    )
    frame["response_s"] = frame["queue_wait_s"] + frame["service_s"]
    frame["requested_category"] = ["Basic", "Basic", "Detail", "Detail", "Detail"]
    frame["label_category"] = frame["requested_category"]
    frame["clip_score"] = [30.0, 32.0, None, None, 28.0]
    return frame


def test_measured_summary_of_known_records():
    m = measure(_records(), slo_s=2.5)
    o = m.overall
    assert (o.count, o.ok, o.rejected, o.errors, o.timeouts) == (5, 4, 1, 0, 0)
    # Session 0 runs from 0 to 6 s (request 2 ends at 2 + 4), session 1 from 10 to 13 s.
    assert m.duration_s == pytest.approx(9.0)
    assert o.throughput_per_s == pytest.approx(4 / 9)
    assert o.mean_response_s == pytest.approx((1 + 2 + 4 + 3) / 4)
    assert o.p95_response_s == pytest.approx(np.percentile([1, 2, 4, 3], 95))
    assert o.mean_queue_wait_s == pytest.approx((0.1 + 0.3 + 1.0 + 0.5) / 4)
    assert o.slo_attainment == pytest.approx(2 / 5)  # the rejected request misses it too
    assert o.mean_clipscore == pytest.approx(30.0)
    assert sorted(m.per_model) == [NO_GROUP, "a", "b"]
    assert m.per_model["b"].mean_service_s == pytest.approx(2.0)
    assert m.per_model[NO_GROUP].rejected == 1
    # The rejected request has no served category: it counts under the one it was sent with.
    assert m.per_category["Detail"].count == 3 and m.per_category["Detail"].rejected == 1
    assert m.per_category["Basic"].mean_response_s == pytest.approx(1.5)


def test_realized_shares_from_stats_deltas():
    def stats(device_s, backlogged_s):
        fields = {"planned_share": 0.5, "device_s": device_s, "backlogged_s": backlogged_s}
        return {"uptime_s": 1.0, "devices": [{"device": 0, "models": {"a": fields}}]}

    def session(number, before, after):
        before = None if before is None else StatsResponse.from_dict(before, "before")
        after = StatsResponse.from_dict(after, "after")
        return SessionDocument(number, "test", "0" * 64, 0.0, 1, ended_unix=1.0, stats_before=before, stats_after=after)

    sessions = [
        session(0, stats(1.0, 2.0), stats(5.0, 10.0)),
        session(1, stats(5.0, 10.0), stats(7.0, 12.0)),
        session(2, None, stats(100.0, 100.0)),
    ]
    (share,) = realized_shares(sessions)
    assert share.device_s == pytest.approx(6.0)
    assert share.backlogged_s == pytest.approx(10.0)
    assert share.realized_share == pytest.approx(0.6)
    assert share.planned_share == 0.5


# --------------------------------------------------------------------------- against a server


def test_run_records_every_request_and_compares(server, tmp_path):
    config = LoadConfig(url=server.url, prompts=PROMPTS, request_rate=50.0, num_prompts=12, seed=1)
    done = run_loadtest(config, tmp_path / "run")
    assert done.sent == 12 and done.skipped == 0 and done.outcomes["ok"] == 12
    records = read_records(tmp_path / "run")
    assert list(records["index"]) == list(range(12))
    assert set(CLIENT_FIELDS) | set(protocol.RECORD_FIELDS) <= set(records.columns)
    assert (records["received_sha256"] == records["image_sha256"]).all()
    assert (records["requested_seed"] == records["seed"]).all()
    assert (records["client_response_s"] >= server.service_s).all()
    comparison = compare_run(tmp_path / "run")
    assert comparison.measurement.overall.ok == 12
    assert comparison.prediction is not None and comparison.prediction.arrivals == "open"
    assert [s.realized_share for s in comparison.shares if s.backlogged_s > 0] == pytest.approx(
        [s.planned_share for s in comparison.shares if s.backlogged_s > 0]
    )
    text = format_comparison(comparison)
    assert "model sd" in text and "category Basic" in text
    json.dumps(comparison_to_dict(comparison), allow_nan=False)
    figure = comparison_figure(comparison, records, tmp_path / "fig.png")
    assert figure.read_bytes().startswith(b"\x89PNG")
    # Running the same test again sends nothing: every index is recorded.
    again = run_loadtest(config, tmp_path / "run")
    assert again.sent == 0 and again.skipped == 12


def test_max_concurrency_is_respected(plan, tmp_path):
    stub = StubServer(plan, service_s=0.1).start()
    try:
        config = LoadConfig(url=stub.url, prompts=PROMPTS, num_prompts=12, max_concurrency=3)
        done = run_loadtest(config, tmp_path / "run")
    finally:
        stub.stop()
    assert done.outcomes["ok"] == 12
    assert stub.most_in_flight == 3


def test_503_is_recorded_as_rejected(plan, tmp_path):
    stub = StubServer(plan, service_s=0.2, queue_bound=2).start()
    try:
        config = LoadConfig(url=stub.url, prompts=PROMPTS, num_prompts=6, endpoint="openai")
        run_loadtest(config, tmp_path / "run")
    finally:
        stub.stop()
    records = read_records(tmp_path / "run")
    rejected = records[records["status"] == "rejected"]
    assert len(rejected) == 4 and (records["status"] == "ok").sum() == 2
    assert (rejected["http_status"] == 503).all()
    assert (rejected["retry_after_s"] == 1.0).all()
    assert rejected["error"].str.contains("queue full").all()
    assert rejected["model"].isna().all()


def test_another_configuration_in_the_same_directory_is_refused(server, tmp_path):
    run_loadtest(LoadConfig(url=server.url, prompts=PROMPTS, num_prompts=2), tmp_path / "run")
    with pytest.raises(LoadTestError, match="whose num_prompts is 2, but this one's is 3"):
        run_loadtest(LoadConfig(url=server.url, prompts=PROMPTS, num_prompts=3), tmp_path / "run")


def test_unreachable_server_and_foreign_answer_are_one_line_errors(server, tmp_path, capsys):
    port = free_port()  # nothing listens on it
    status = main(["loadtest", f"http://127.0.0.1:{port}", "--prompts", str(PROMPTS), "--num-prompts", "1"])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert "cannot reach the server" in err and len(err.splitlines()) == 1
    status = main(["loadtest", server.url + "/v1/health", "--prompts", str(PROMPTS), "--num-prompts", "1"])
    assert status == 2
    assert "expected a genedge server's plan" in capsys.readouterr().err
    status = main(["loadtest", server.url, "--prompts", str(tmp_path / "none.tsv")])
    assert status == 2
    assert "none.tsv: expected a prompt file, but there is no such file" in capsys.readouterr().err


def test_cli_end_to_end_writes_parquet_result_and_figure(server, tmp_path, capsys):
    result = tmp_path / "result"
    status = main(
        [
            "loadtest", server.url, "--prompts", str(PROMPTS), "--request-rate", "40", "--num-prompts", "10",
            "--result-dir", str(result), "--figure", str(tmp_path / "lt.png"), "--slo", "1", "--no-progress",
        ]
    )  # fmt: skip
    assert status == 0
    out = capsys.readouterr().out
    assert "genedge load test result" in out and "10 ok" in out
    files = sorted((result / "records").glob("part-*.parquet"))
    assert files
    frame = pd.concat(pd.read_parquet(f) for f in files)
    assert sorted(frame["index"]) == list(range(10))
    assert (tmp_path / "lt.png").read_bytes().startswith(b"\x89PNG")
    summary = json.loads((result / "result.json").read_text())
    assert summary["measurement"]["overall"]["slo_attainment"] == 1.0
    assert summary["prediction"]["overall"]["slo_attainment"] is not None


@pytest.mark.slow
def test_resume_after_a_kill_sends_only_what_is_missing(plan, tmp_path):
    stub = StubServer(plan, service_s=0.01).start()
    result = tmp_path / "result"
    command = [
        "loadtest", stub.url, "--prompts", str(PROMPTS), "--request-rate", "25", "--num-prompts", "80", "--seed", "2",
        "--result-dir", str(result), "--no-progress",
    ]  # fmt: skip
    try:
        # Killed just after its fourth publish: the manifest, the session's start and two record files.
        first = run_killed(4, "after", command, timeout=120)
        assert first.returncode == -signal.SIGKILL, first.stderr
        before = read_records(result)
        assert 0 < len(before) < 80
        second = run_genedge(*command, timeout=120)
        assert second.returncode == 0, second.stderr
        assert f"{len(before)} already recorded" in second.stdout
    finally:
        stub.stop()
    after = read_records(result)
    assert sorted(after["index"]) == list(range(80))  # read_records refuses an index recorded twice
    seeds = before["requested_seed"].tolist()
    assert all(stub.seen[s] == 1 for s in seeds)  # recorded before the kill: never sent again
    assert set(after.loc[~after["index"].isin(before["index"]), "session"]) == {1}


@pytest.mark.slow
def test_clip_score_with_a_replica_backbone(server, tmp_path):
    pytest.importorskip("open_clip")
    status = main(
        [
            "loadtest", server.url, "--prompts", str(PROMPTS), "--num-prompts", "3", "--result-dir",
            str(tmp_path / "r"), "--clip-score", "--clip-backbone", "replica:tiny", "--clip-pretrained", "none",
            "--no-progress",
        ]
    )  # fmt: skip
    assert status == 0
    records = read_records(tmp_path / "r")
    assert records["clip_score"].between(0, 100).all()
    assert not list((tmp_path / "r" / "images").glob("*.png"))  # scored images are not kept without --save-images
