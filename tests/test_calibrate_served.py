"""``genedge calibrate --served``: a table's latency lines updated from a served plan's records.

The fast tests write load-test result directories with the load tester's own writers (its manifest, its
record writer) for a plan served from the shipped reference table, with known call times; the slow test
serves the demo's plan on loopback, load-tests it and recalibrates the demo's table on what it served.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import DemoRun, genedge_in_process, run_genedge, serve_plan

from genedge import data
from genedge.calibrate.served import calibrate_served, read_served, recalibrate
from genedge.contract.files import ArtifactError
from genedge.contract.table_file import load_table, read_table_file, save_table, table_from_dict, table_to_dict
from genedge.serve.loadtest_document import LoadTestIdentity, LoadTestManifest, ScheduleSummary, document_sha256
from genedge.serve.loadtest_layout import CLIENT_FIELDS, RecordWriter, read_records, write_manifest
from genedge.serve.protocol import RECORD_FIELDS

TABLE = data.path("tables", "reference-a100.json")
# Each served call takes this many times the table's time on the whole device.
SLOWER = 1.25


@pytest.fixture(scope="module")
def served_spec():
    """A plan made from the reference table and what a server serves of it (replicas, devices, shares)."""
    from genedge.optimizer import propose
    from genedge.optimizer.inputs import problem_from_options
    from genedge.optimizer.model import workload_from_options
    from genedge.optimizer.plan_file import plan_from_dict, plan_to_dict
    from genedge.serve.spec import serve_spec

    table, table_bytes = read_table_file(TABLE)
    workload = workload_from_options(table.categories, rate=0.2)
    problem = problem_from_options(
        table, workload, arrivals="open", table_sha256=hashlib.sha256(table_bytes).hexdigest()
    )
    plan = plan_from_dict(plan_to_dict(problem, propose(problem, rng=0)), "plan")
    spec = serve_spec(plan, table, table_bytes, model_specs={key: "replica:tiny" for key in plan.deployed})
    return spec


def _manifest(spec, table_document: dict, requests: int, served: dict | None = None) -> LoadTestManifest:
    config = LoadTestIdentity(
        url="http://127.0.0.1:8000",
        endpoint="generate",
        plan_sha256=document_sha256(spec.plan),
        prompts_sha256="0" * 64,
        trace_sha256=None,
        request_rate=1.0,
        burstiness=1.0,
        num_prompts=requests,
        max_concurrency=None,
        seed=0,
        send_categories=True,
        timeout_s=60.0,
    )
    return LoadTestManifest(
        test_id=f"test-{requests}",
        config=config,
        prompts_file="prompts.tsv",
        trace_file=None,
        schedule=ScheduleSummary("open", float(requests), {"Basic": 1.0}, requests=requests, unplaced=0),
        plan=spec.plan,
        table=table_document,
        served=spec.summary() if served is None else served,
    )


def _row(index: int, status: str = "ok", **server) -> dict:
    row = {name: None for name in (*CLIENT_FIELDS, *RECORD_FIELDS)}
    row.update(index=index, status=status, scheduled_s=float(index), sent_s=float(index), client_response_s=0.5)
    row["http_status"] = {"ok": 200, "rejected": 503}.get(status)
    row.update(server)
    return row


def write_loadtest(
    folder: Path,
    spec,
    calls: Sequence[tuple[str, int, float] | tuple[str, int, float, int] | tuple[str, int, float, int, float]],
    *,
    rejected: int = 0,
    table_document: dict | None = None,
    served: dict | None = None,
) -> Path:
    """A load-test result directory holding one ok record per ``(model, steps, service_s[, batch_size[, share]])``
    call (batch 1 and no recorded share unless given, on the replica's device) and ``rejected`` 503 records,
    written by the load tester's own writers. (A record is one image: a call of b images is b records of one
    ``service_s``.)"""
    table_document = json.loads(Path(TABLE).read_text()) if table_document is None else table_document
    manifest = _manifest(spec, table_document, len(calls) + rejected, served)
    folder.mkdir(parents=True)
    write_manifest(folder, manifest)
    writer = RecordWriter(folder, manifest, session=0, keep_images=False)
    devices = {m.key: m.device for m in spec.models}
    for index, (model, steps, service_s, *rest) in enumerate(calls):
        batch_size = rest[0] if rest else 1
        share = rest[1] if len(rest) > 1 else None
        row = _row(
            index,
            model=model,
            steps=steps,
            device=devices[model],
            batch_size=batch_size,
            service_s=service_s,
            share=share,
        )
        writer.add(row, None)
    for index in range(len(calls), len(calls) + rejected):
        writer.add(_row(index, status="rejected", error="HTTP 503: queue full"), None)
    writer.flush()
    return folder


def _slow_calls(spec, per_model: int = 4) -> list[tuple[str, int, float]]:
    """``per_model`` calls of each served replica at its steps, each SLOWER × (1 ± a few %) the table's time on
    its share."""
    table = load_table(TABLE)
    calls = []
    for model in spec.models:
        whole = table.models[model.key].call_seconds(model.steps, 1)
        for wiggle in np.linspace(-0.03, 0.03, per_model):
            calls.append((model.key, model.steps, SLOWER * (1 + wiggle) * whole / model.share))
    return calls


def test_served_times_scale_the_lines_to_the_served_mean(served_spec, tmp_path, caplog) -> None:
    folder = write_loadtest(tmp_path / "lt", served_spec, _slow_calls(served_spec), rejected=3)
    records = read_records(folder)
    with caplog.at_level(logging.WARNING, logger="genedge.calibrate.served"):
        result, path = calibrate_served([folder], TABLE, tmp_path / "new.json")
    assert "Left out 3 served record(s): status rejected" in caplog.text
    old, new = load_table(TABLE), load_table(path)
    shares = {m.key: m.share for m in served_spec.models}
    for model in served_spec.models:
        mine = records[(records["model"] == model.key) & (records["status"] == "ok")]
        whole = (mine["service_s"] * shares[model.key]).to_numpy()
        line = new.models[model.key].latency
        assert line.seconds(model.steps) == pytest.approx(whole.mean(), rel=1e-12)
        assert line.source == "derived" and line.ref == "derived:latency-served-ratio" and line.n == len(mine)
        assert line.per_step_s / line.overhead_s == pytest.approx(
            old.models[model.key].latency.per_step_s / old.models[model.key].latency.overhead_s
        )
        cell = next(c for c in result.cells if c.model == model.key)
        assert cell.ratio == pytest.approx(SLOWER, rel=1e-12) and cell.calls == len(mine)
        assert cell.se_s == pytest.approx(whole.std(ddof=1) / np.sqrt(whole.size))
        assert line.per_step_se_s > old.models[model.key].latency.per_step_se_s * SLOWER  # the ratio's SE adds
    for key in set(old.models) - set(shares):  # not served: as it was
        assert new.models[key] == old.models[key]
    for key in old.models:
        assert new.models[key].quality == old.models[key].quality
        assert new.models[key].curves == old.models[key].curves
        assert new.models[key].memory == old.models[key].memory
    assert "derived:latency-served-ratio" in new.sources
    served = new.manifest.document["served"]
    assert served["left_out"] == {"status rejected (no image served)": 3}
    (test,) = served["loadtests"]
    assert test["result_dir"] == str(folder)
    for model in served_spec.models:
        assert test["records"][model.key][str(model.steps)] == {"calls": 4, "images": 4}


def test_calls_at_two_step_counts_refit_the_line(served_spec, tmp_path) -> None:
    key = served_spec.models[0].key
    overhead, per_step = 0.2, 0.05
    share = served_spec.models[0].share
    # Two calls at each step count a hair apart (calls of the same time would read as one call's images).
    calls = [(key, s, (overhead + per_step * s) * (1 + e) / share) for s, e in zip((10, 10, 20, 20, 30), (0, 1e-9) * 3)]
    result = recalibrate(load_table(TABLE), read_served([write_loadtest(tmp_path / "lt", served_spec, calls)]))
    line = result.table.models[key].latency
    assert line.ref == "measured:latency-served" and line.source == "measured" and line.n == 5
    assert line.overhead_s == pytest.approx(overhead, rel=1e-6) and line.per_step_s == pytest.approx(per_step, rel=1e-6)
    assert [c.steps for c in result.cells] == [10, 20, 30]


def test_batch_lines_are_updated_per_batch_size_and_unknown_batch_sizes_left_out(served_spec, tmp_path, caplog):
    table = load_table(TABLE)
    served = served_spec.models[0]
    model = table.models[served.key]
    base = replace(model.latency, batch_size=1)
    four = replace(model.latency, overhead_s=2 * model.latency.overhead_s, batch_size=4, stages={})
    four = replace(four, step_p50_s=None, step_p95_s=None)
    batched = replace(model, latency=base, batch_latency={1: replace(base, stages={}), 4: four})
    table = table_from_dict(table_to_dict(replace(table, models={**table.models, served.key: batched})))
    call_s = 1.5 * four.seconds(served.steps) / served.share
    # Two calls of 4 images (4 records each) and one call of 2 images, at a batch size the table has no line for.
    calls = [(served.key, served.steps, call_s * f, 4) for f in (0.99, 1.01) for _ in range(4)]
    calls += [(served.key, served.steps, call_s, 2)] * 2
    with caplog.at_level(logging.WARNING, logger="genedge.calibrate.served"):
        result = recalibrate(table, read_served([write_loadtest(tmp_path / "lt", served_spec, calls)]))
    assert "Left out 1 served call(s) at batch sizes the table has no line for" in caplog.text
    new = result.table.models[served.key]
    assert new.latency == table.models[served.key].latency and new.batch_latency[1] == batched.batch_latency[1]
    assert new.batch_latency[4].seconds(served.steps) == pytest.approx(1.5 * four.seconds(served.steps))
    assert new.batch_latency[4].n == 2 and new.batch_latency[4].ref == "derived:latency-served-ratio"
    (cell,) = result.cells
    assert (cell.batch_size, cell.calls, cell.images) == (4, 2, 8)


def test_the_cli_prints_table_against_served_and_the_planner_reads_the_table(served_spec, tmp_path) -> None:
    folder = write_loadtest(tmp_path / "lt", served_spec, _slow_calls(served_spec))
    done = run_genedge("calibrate", "--served", folder, "--table", TABLE, "--out", tmp_path / "new.json")
    assert done.returncode == 0, done.stderr
    assert "ratio" in done.stdout and "1.250" in done.stdout and f"wrote {tmp_path / 'new.json'}" in done.stdout
    planned = run_genedge("plan", "--table", tmp_path / "new.json", "--out", tmp_path / "plan.json")
    assert planned.returncode == 0, planned.stderr
    assert (
        json.loads((tmp_path / "plan.json").read_text())["inputs"]["table_sha256"]
        == hashlib.sha256((tmp_path / "new.json").read_bytes()).hexdigest()
    )


def test_usage_errors(capsys, tmp_path) -> None:
    out = tmp_path / "new.json"
    for args, message in (
        (["--served", tmp_path, "--out", out], "--served needs --table"),
        (["--table", TABLE, "--out", out], "give --served LOADTEST_DIR too"),
        (["--out", out], "expected profile run directories"),
        ([tmp_path, "--served", tmp_path, "--table", TABLE, "--out", out], "not both"),
        (["--served", tmp_path, "--table", TABLE, "--figures", tmp_path, "--out", out], "--figures"),
        (["--served", tmp_path, "--table", TABLE, "--out", TABLE], "refusing to replace an input"),
    ):
        done = genedge_in_process(capsys, "calibrate", *args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
    assert not out.exists()


def test_a_missing_directory_and_a_foreign_manifest_are_named(capsys, tmp_path) -> None:
    done = genedge_in_process(capsys, "calibrate", "--served", tmp_path / "none", "--table", TABLE, "--out", "x.json")
    assert done.returncode == 2 and f"{tmp_path / 'none'}: no such load-test result directory" in done.stderr
    (tmp_path / "empty").mkdir()
    done = genedge_in_process(capsys, "calibrate", "--served", tmp_path / "empty", "--table", TABLE, "--out", "x.json")
    assert done.returncode == 2 and "loadtest.json" in done.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "loadtest.json").write_bytes(Path(TABLE).read_bytes())  # a table, not a load test's manifest
    done = genedge_in_process(capsys, "calibrate", "--served", foreign, "--table", TABLE, "--out", "x.json")
    assert done.returncode == 2 and f"{foreign / 'loadtest.json'}: kind: expected 'genedge.loadtest'" in done.stderr


def test_a_load_test_without_an_ok_record_is_named(served_spec, tmp_path) -> None:
    folder = write_loadtest(tmp_path / "lt", served_spec, [], rejected=2)
    with pytest.raises(ArtifactError, match=r"records: status: no ok record .*status rejected"):
        read_served([folder])


def test_a_model_the_table_lacks_is_named(served_spec, tmp_path) -> None:
    table = load_table(TABLE)
    key = served_spec.models[0].key
    fewer = replace(table, models={k: m for k, m in table.models.items() if k != key})
    save_table(table_from_dict(table_to_dict(fewer)), tmp_path / "fewer.json")
    folder = write_loadtest(tmp_path / "lt", served_spec, _slow_calls(served_spec))
    with pytest.raises(ArtifactError, match=rf"{folder / 'records'}: model: records of models \['{key}'\]"):
        calibrate_served([folder], tmp_path / "fewer.json", tmp_path / "new.json")
    assert not (tmp_path / "new.json").exists()


def test_records_of_another_device_are_named(served_spec, tmp_path) -> None:
    document = json.loads(Path(TABLE).read_text())
    document["device"]["name"] = "another GPU"
    ours = write_loadtest(tmp_path / "ours", served_spec, _slow_calls(served_spec))
    theirs = write_loadtest(tmp_path / "theirs", served_spec, _slow_calls(served_spec), table_document=document)
    with pytest.raises(ArtifactError, match=r"loadtest.json: table.device.name: .*different devices"):
        read_served([ours, theirs])
    with pytest.raises(ArtifactError, match=rf"{theirs / 'loadtest.json'}: table.device.name: .*'another GPU'"):
        recalibrate(load_table(TABLE), read_served([theirs]), "ref.json")


def test_a_server_that_says_nothing_of_its_replicas_or_serves_a_schedule_is_refused(served_spec, tmp_path) -> None:
    silent = write_loadtest(tmp_path / "silent", served_spec, _slow_calls(served_spec), served={"stub": True})
    with pytest.raises(ArtifactError, match=r"loadtest.json: served: models: missing field"):
        read_served([silent])
    notes = {**served_spec.summary(), "schedule": {"band": 0}}
    switching = write_loadtest(tmp_path / "switching", served_spec, _slow_calls(served_spec), served=notes)
    with pytest.raises(ArtifactError, match=r"records: share: the server served a plan schedule"):
        read_served([switching])


def test_a_schedules_records_carry_each_calls_share(served_spec, tmp_path) -> None:
    """A plan schedule's server changes shares with its band: each record's share converts its call to the device."""
    notes = {**served_spec.summary(), "schedule": {"band": 0}}
    calls = [(*call, 1, 0.5) for call in _slow_calls(served_spec)]  # every call on half the device
    switching = write_loadtest(tmp_path / "switching", served_spec, calls, served=notes)
    device_s = read_served([switching]).calls["device_s"].to_numpy()
    np.testing.assert_allclose(device_s, [0.5 * service_s for _, _, service_s, *_ in sorted(calls)], rtol=1e-12)


def test_records_written_before_they_carried_the_share_read_it_as_null(served_spec, tmp_path) -> None:
    import pyarrow.parquet as parquet

    folder = write_loadtest(tmp_path / "old", served_spec, _slow_calls(served_spec))
    for part in (folder / "records").glob("*.parquet"):
        parquet.write_table(parquet.read_table(part).drop_columns(["share"]), part)
    calls = read_served([folder]).calls
    shares = {m.key: m.share for m in served_spec.models}
    np.testing.assert_allclose(calls["share"], [shares[m] for m in calls["model"]])


@pytest.mark.slow
def test_a_served_demo_recalibrates_its_table(demo_run: DemoRun, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="serving needs genedge[serve]")
    folder, done = demo_run
    assert done.returncode == 0, done.stderr
    with serve_plan(folder / "plan.json") as server:
        url = server.url
        prompts = tmp_path / "prompts.tsv"
        lines = [f"a photo of thing {i}\tBasic\nsome detail {i}\tFine-grained Detail" for i in range(6)]
        prompts.write_text("Prompt\tChallenge\n" + "\n".join(lines) + "\n")
        result = tmp_path / "result"
        loaded = run_genedge(
            "loadtest", url, "--prompts", prompts, "--request-rate", "4", "--num-prompts", "12", "--seed", "1",
            "--result-dir", result,
        )  # fmt: skip
        assert loaded.returncode == 0, loaded.stderr
    new = tmp_path / "new.json"
    calibrated = run_genedge("calibrate", "--served", result, "--table", folder / "table.json", "--out", new)
    assert calibrated.returncode == 0, calibrated.stderr
    old, table = load_table(folder / "table.json"), load_table(new)
    records = read_records(result)
    ok = records[records["status"] == "ok"]
    served = read_served([result])
    assert len(ok) > 0 and int(served.calls["images"].sum()) == len(ok)
    for (key, steps), calls in served.calls.groupby(["model", "steps"]):
        seconds = calls["device_s"].to_numpy()
        se = seconds.std(ddof=1) / np.sqrt(seconds.size)
        assert abs(table.models[key].latency.seconds(int(steps)) - seconds.mean()) <= max(se, 1e-12)
        assert table.models[key].latency.n == len(calls)
        assert table.models[key].quality == old.models[key].quality
        assert table.manifest.document["served"]["loadtests"][0]["records"][key][str(int(steps))]["calls"] == len(calls)
        assert f"{key:<20}" in calibrated.stdout
    planned = run_genedge("plan", "--table", new, "--out", tmp_path / "plan.json")
    assert planned.returncode == 0, planned.stderr
