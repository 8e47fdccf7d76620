"""Replaying a recorded trace: GenTD26's request trace read as published, sliced, compressed, scaled and given
seeded categories, and the same arrivals in ``genedge simulate --trace`` and ``genedge loadtest --trace``."""

from __future__ import annotations

import logging
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, run_genedge
from loadtest_stub import PROMPTS, TABLE, StubServer, write_plan

from genedge import data
from genedge.cli import main
from genedge.contract.files import ArtifactError
from genedge.contract.prompts import read_prompt_file
from genedge.contract.table_file import load_table
from genedge.optimizer.model import DEFAULT_MIX, TraceReplay, read_trace
from genedge.optimizer.plan_file import plan_from_dict
from genedge.serve.loadtest_config import LoadConfig
from genedge.serve.loadtest_schedule import build_schedule

#: The GenTD26 request trace as Alibaba publishes it (cluster-trace-v2026-GenAI/lora_request_trace.csv).
GENTD26 = SHARED_DATA / "gentd26" / "lora_request_trace.csv"
needs_gentd26 = pytest.mark.skipif(not GENTD26.is_file(), reason="the GenTD26 request trace is not present")
#: Agreement with a stated value is judged at this many standard errors.
Z = 4.0


def _gentd26_layout(path: Path, minutes: int = 120, seed: int = 0) -> pd.DataFrame:
    """A trace in GenTD26's published layout (its columns, its datetime format, a missing row), written by pandas."""
    rng = np.random.default_rng(seed)
    n = 6 * minutes
    seconds = np.sort(rng.integers(0, 60 * minutes, n))
    frame = pd.DataFrame(
        {
            "gmt_create": (pd.Timestamp("2024-12-03 21:00:00") + pd.to_timedelta(seconds, unit="s")).strftime(
                "%Y-%m-%d %H:%M:%S"
            ),
            "predict_type": rng.choice(["TXT_2_IMG", "IMG_2_IMG", "INPAINTING"], n, p=[0.9, 0.08, 0.02]),
            "predict_status": "SUCCEED",
            "exec_time_seconds": rng.integers(5, 60, n).astype(float),
            "groupId": [f"G{i:04d}" for i in rng.integers(0, 50, n)],
            "prompt_length": rng.integers(5, 200, n).astype(float),
            "negative_prompt_length": 26.0,
            "num_images_per_prompt": rng.choice([1.0, 2.0, 4.0, 8.0], n),
            "num_inference_steps": rng.choice([30.0, 40.0], n),
            "checkpoint_model_version_id": "M0000",
            "num_lora": 0,
        }
    )
    frame.loc[3, ["num_images_per_prompt", "num_inference_steps", "prompt_length"]] = np.nan
    frame.to_csv(path, index=False)
    return frame


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    path = tmp_path / "lora_request_trace.csv"
    return path, _gentd26_layout(path)


def test_the_published_layout_is_read_with_its_images_steps_and_tasks(published, caplog):
    path, frame = published
    with caplog.at_level(logging.WARNING):
        arrivals = read_trace(path, replay=TraceReplay(images="one"), rng=0)
    text = frame["predict_type"] == "TXT_2_IMG"
    kept = frame[text & frame["num_images_per_prompt"].notna()]
    assert len(arrivals) == len(kept)
    assert "1 rows without num_images_per_prompt or num_inference_steps left out" in caplog.text
    start = pd.Timestamp(frame["gmt_create"].iloc[0])
    expected = (pd.to_datetime(kept["gmt_create"]) - start).dt.total_seconds().to_numpy()
    assert arrivals.times_s.tolist() == expected.tolist()
    assert arrivals.images.tolist() == kept["num_images_per_prompt"].astype(int).tolist()
    assert arrivals.steps.tolist() == kept["num_inference_steps"].astype(int).tolist()
    assert arrivals.categories == tuple(DEFAULT_MIX)
    every = read_trace(path, replay=TraceReplay(tasks=None, images="one"), rng=0)
    assert len(every) == frame["num_images_per_prompt"].notna().sum()
    # A request of k images is k one-image arrivals at its time, of one category (the default).
    expanded = read_trace(path, rng=0)
    assert len(expanded) == kept["num_images_per_prompt"].sum()
    assert expanded.times_s.tolist() == np.repeat(arrivals.times_s, arrivals.images).tolist()
    assert expanded.category.tolist() == np.repeat(arrivals.category, arrivals.images).tolist()
    assert set(expanded.images.tolist()) == {1}


def test_a_slice_is_compressed_and_starts_at_zero(published):
    path, frame = published
    replay = TraceReplay(
        start=datetime(2024, 12, 3, 21, 30), end=datetime(2024, 12, 3, 22, 30), time_scale=60, images="one"
    )
    arrivals = read_trace(path, replay=replay, rng=0)
    stamps = pd.to_datetime(frame["gmt_create"])
    inside = frame[
        (stamps >= "2024-12-03 21:30")
        & (stamps < "2024-12-03 22:30")
        & (frame["predict_type"] == "TXT_2_IMG")
        & frame["num_images_per_prompt"].notna()
    ]
    assert len(arrivals) == len(inside)
    assert arrivals.duration_s == 60.0  # one trace hour in one minute
    expected = (pd.to_datetime(inside["gmt_create"]) - pd.Timestamp("2024-12-03 21:30")).dt.total_seconds() / 60
    assert arrivals.times_s == pytest.approx(expected.to_numpy())
    # Seconds on the trace's clock (from its first row) slice alike.
    first = (pd.Timestamp("2024-12-03 21:30") - stamps.iloc[0]).total_seconds()
    seconds = TraceReplay(start=first, end=first + 3600, time_scale=60, images="one")
    by_seconds = read_trace(path, replay=seconds, rng=0)
    assert by_seconds.times_s.tolist() == arrivals.times_s.tolist()
    assert arrivals.rates() == pytest.approx({c: n / 60 for c, n in arrivals.counts().items()})


@pytest.mark.parametrize("rate_scale", [0.3, 1.0, 2.0, 3.5])
def test_the_rate_scale_keeps_the_shape(tmp_path, rate_scale):
    # Hours of very different rates: scaled, every hour keeps its share.
    rng = np.random.default_rng(3)
    hourly = [5, 400, 0, 60, 200]
    times = np.sort(np.concatenate([3600 * h + rng.uniform(0, 3600, n) for h, n in enumerate(hourly)]))
    path = tmp_path / "t.csv"
    pd.DataFrame({"time_s": times, "category": "a"}).to_csv(path, index=False)
    arrivals = read_trace(path, replay=TraceReplay(rate_scale=rate_scale, end=3600.0 * len(hourly)), rng=7)
    counts, _ = np.histogram(arrivals.times_s, bins=len(hourly), range=(0, 3600 * len(hourly)))
    for count, recorded in zip(counts, hourly):
        # Whole copies are exact; the fraction is a binomial draw per request; copies stay within 60 s (one hour's
        # edge may pass a few to the next).
        whole, part = divmod(rate_scale, 1)
        sd = math.sqrt(recorded * part * (1 - part)) + math.sqrt(whole * recorded * 60 / 3600) + 1
        assert abs(count - rate_scale * recorded) <= Z * sd, (count, recorded)
    assert counts[2] <= Z  # a silent hour stays (nearly) silent
    again = read_trace(path, replay=TraceReplay(rate_scale=rate_scale, end=3600.0 * len(hourly)), rng=7)
    assert again.times_s.tolist() == arrivals.times_s.tolist()
    assert (np.diff(arrivals.times_s) >= 0).all()


def test_drawn_categories_are_seeded_and_in_the_mix(published):
    path, _ = published
    first = read_trace(path, rng=11, replay=TraceReplay(rate_scale=20))
    again = read_trace(path, rng=11, replay=TraceReplay(rate_scale=20))
    other = read_trace(path, rng=12, replay=TraceReplay(rate_scale=20))
    assert first.category.tolist() == again.category.tolist()
    assert first.category.tolist() != other.category.tolist()
    # Per request, not per image: the images of a request share its category, so test the mix on requests.
    requests = read_trace(path, rng=11, replay=TraceReplay(rate_scale=20, images="one"))
    total = sum(DEFAULT_MIX.values())
    counts = requests.counts()
    for category, weight in DEFAULT_MIX.items():
        p = weight / total
        sd = math.sqrt(len(requests) * p * (1 - p))
        assert abs(counts[category] - len(requests) * p) <= Z * sd
    # The draw does not depend on the order the caller lists the categories in.
    reordered = read_trace(path, rng=11, replay=TraceReplay(rate_scale=20), categories=sorted(DEFAULT_MIX))
    assert [reordered.categories[i] for i in reordered.category] == [first.categories[i] for i in first.category]
    mixed = read_trace(
        path, rng=11, replay=TraceReplay(mix={"Basic": 1, "Complex": 0}), categories=["Basic", "Complex"]
    )
    assert set(mixed.counts()) == {"Basic", "Complex"} and mixed.counts()["Complex"] == 0


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        ("num_images_per_prompt", "many", r"t\.csv: num_images_per_prompt: expected a whole number >= 1 .*row 2"),
        ("num_inference_steps", "2.5", r"t\.csv: num_inference_steps: expected a whole number >= 1 .*row 2"),
        ("gmt_create", "yesterday", r"t\.csv: gmt_create: expected an ISO-8601 datetime .*row 2 has 'yesterday'"),
    ],
)
def test_a_bad_value_names_the_file_column_and_row(tmp_path, column, value, match):
    path = tmp_path / "t.csv"
    frame = _gentd26_layout(path, minutes=1).astype({column: object})
    frame.loc[1, column] = value
    frame.to_csv(path, index=False)
    with pytest.raises(ArtifactError, match=match):
        read_trace(path, rng=0)


def test_replays_that_cannot_be_are_refused_clearly(published, tmp_path):
    path, _ = published
    renamed = tmp_path / "renamed.csv"
    pd.read_csv(path).rename(columns={"gmt_create": "created"}).to_csv(renamed, index=False)
    with pytest.raises(ArtifactError, match=r"renamed\.csv: time_s: .*GenTD26's 'gmt_create'.*the columns are"):
        read_trace(renamed, rng=0)
    with pytest.raises(ArtifactError, match=r"gmt_create: expected requests to replay, but none of the"):
        read_trace(path, replay=TraceReplay(start=datetime(2025, 1, 1)), rng=0)
    with pytest.raises(ValueError, match=r"Expected time_scale > 0"):
        TraceReplay(time_scale=0)
    with pytest.raises(ValueError, match=r"replay mix's categories among .*\['Elsewhere'\] are not"):
        read_trace(path, replay=TraceReplay(mix={"Elsewhere": 1}), categories=list(DEFAULT_MIX), rng=0)
    labelled = tmp_path / "labelled.tsv"
    labelled.write_text("time_s\tcategory\n0\tBasic\n1\tDetail\n")
    with pytest.raises(ValueError, match=r"a mix draws the categories of a trace without them, but this one has"):
        read_trace(labelled, replay=TraceReplay(mix={"Basic": 1}))


def test_a_loadtest_schedule_replays_what_the_simulation_replays(published, tmp_path):
    path, _ = published
    plan = plan_from_dict(*_plan(tmp_path))
    table = load_table(TABLE)
    replay = TraceReplay(start=datetime(2024, 12, 3, 21), end=datetime(2024, 12, 3, 22), time_scale=60)
    config = LoadConfig(url="http://127.0.0.1:1", prompts=PROMPTS, trace=path, trace_replay=replay, seed=4)
    schedule = build_schedule(config, read_prompt_file(PROMPTS), plan, table)
    simulated = read_trace(path, mapping=table.category_mapping, categories=table.categories, replay=replay, rng=4)
    assert [r.time_s for r in schedule.requests] == simulated.times_s.tolist()
    assert [r.category for r in schedule.requests] == [simulated.categories[i] for i in simulated.category]
    assert [r.label_category for r in schedule.requests] == [r.category for r in schedule.requests]
    assert schedule.duration_s <= 60.0


def _plan(tmp_path: Path) -> tuple[dict, str]:
    import json

    plan_path = write_plan(tmp_path / "plan.json")
    return json.loads(plan_path.read_text()), str(plan_path)


def test_loadtest_replays_a_compressed_trace_against_a_server(published, tmp_path, capsys):
    path, _ = published
    plan, _ = _plan(tmp_path)
    stub = StubServer(plan, service_s=0.0).start()
    try:
        status = main(
            [
                "loadtest", stub.url, "--prompts", str(PROMPTS), "--trace", str(path), "--trace-start",
                "2024-12-03 21:00", "--trace-end", "2024-12-03 21:10", "--time-scale", "300", "--rate-scale", "1.5",
                "--trace-images", "one", "--seed", "2", "--result-dir", str(tmp_path / "r"), "--no-progress",
            ]
        )  # fmt: skip
    finally:
        stub.stop()
    out = capsys.readouterr().out
    assert status == 0
    replay = TraceReplay(
        start=datetime(2024, 12, 3, 21), end=datetime(2024, 12, 3, 21, 10), time_scale=300, rate_scale=1.5, images="one"
    )
    sent = read_trace(path, replay=replay, rng=2)
    assert f"load test: {len(sent)} requests" in out and "trace, time scale 300, rate scale 1.5" in out
    assert f"{len(sent)} ok" in out
    status = main(["loadtest", "http://127.0.0.1:1", "--prompts", str(PROMPTS), "--time-scale", "60"])
    assert status == 2
    assert "--time-scale says how --trace is replayed: give --trace" in capsys.readouterr().err


@needs_gentd26
def test_the_real_trace_is_read_as_published():
    arrivals = read_trace(GENTD26, replay=TraceReplay(images="one"), rng=0)
    assert len(arrivals) == 24_438 - 25  # TXT_2_IMG rows, less the 25 without images or steps
    assert arrivals.duration_s == pytest.approx(1_989_356.0)  # the first to the last text-to-image request
    assert arrivals.images.sum() == pytest.approx(2.69 * len(arrivals), rel=0.03)
    assert np.bincount(arrivals.steps).argmax() == 30
    every = read_trace(GENTD26, replay=TraceReplay(tasks=None, images="one"), rng=0)
    assert len(every) == 26_823 - 25
    assert len(every) / every.duration_s == pytest.approx(0.01348, rel=0.01)
    busy = TraceReplay(start=datetime(2024, 12, 3), end=datetime(2024, 12, 4), tasks=None, images="one")
    assert (
        len(read_trace(GENTD26, replay=busy, rng=0)) == 2_728 - 4
    )  # the README's count for 12-03, 4 rows missing values
    compressed = read_trace(GENTD26, replay=TraceReplay(start=busy.start, end=busy.end, time_scale=60), rng=0)
    assert compressed.duration_s == 24 * 60


@needs_gentd26
def test_simulate_replays_a_busy_hour_of_the_real_trace(tmp_path):
    out = run_genedge(
        "simulate", "--table", "galaxy-s24", "--window-vs-open", "600", "--budgets", "1", "--trace", GENTD26,
        "--trace-start", "2024-12-03 21:00", "--trace-end", "2024-12-03 23:00", "--time-scale", "4",
        "--rate-scale", "0.5", "--trace-images", "one", "--simulated-requests", "2000", "--seed", "3", check=True,
        cwd=tmp_path,
    )  # fmt: skip
    replay = TraceReplay(
        start=datetime(2024, 12, 3, 21), end=datetime(2024, 12, 3, 23), time_scale=4, rate_scale=0.5, images="one"
    )
    table = load_table(data.path("tables", "galaxy-s24.json"))
    arrivals = read_trace(GENTD26, mapping=table.category_mapping, categories=table.categories, replay=replay, rng=3)
    assert f"trace: {len(arrivals)} arrivals replayed over 1800 s, seed 3" in out.stdout
    assert out.stdout.count("simulated, the trace") == 2
    assert "25 rows without num_images_per_prompt or num_inference_steps left out" in out.stderr
