"""Latency lines per batch size: a model profiled at batch sizes 1 and 2 gets one line per call of b images.

The path a user takes: profile a tiny replica for real at batch size 1 and at batch size 2 (two
runs), calibrate both into one table, and read each batch size's line back. Synthetic records
check the rules exactly (known lines, short calls, energy, bytes) and the schema's errors.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from genedge.calibrate import (
    TableError,
    calibrate_runs,
    load_table,
    save_table,
    table_from_dict,
    table_summary,
    table_to_dict,
)
from genedge.contract import settings_sha256
from genedge.testing import QualityTruth, SyntheticModel, synthetic_run, write_run

CATEGORIES = ("Basic", "Detail", "Imagination")
STEPS = (5, 10, 20)
PROMPTS = 5  # per category: 15 images per (steps, run), so each batch-2 run ends on one short call
# The batch-2 truth: one call of two images costs less than two calls of one.
BATCH2_OVERHEAD_S, BATCH2_PER_STEP_S = 0.3, 0.05
MODEL = SyntheticModel(
    key="m",
    quality={c: QualityTruth(a=30.0 + i, b=5.0, kappa=6.0, std=2.0) for i, c in enumerate(CATEGORIES)},
    overhead_s=0.2,
    per_step_s=0.03,
    step_noise_s=0.001,
    overhead_noise_s=0.005,
    overhead_j=20.0,
    per_step_j=3.0,
    energy_noise_j=0.2,
    memory_bytes={"peak_torch_allocated_bytes": 1_000_000_000, "peak_torch_reserved_bytes": 1_200_000_000},
)


def _line(steps: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """(overhead, per step) by numpy.polyfit, through the origin where the overhead comes out negative."""
    per_step, overhead = np.polyfit(steps, seconds, 1)
    if overhead < 0:
        return 0.0, float(steps @ seconds / (steps @ steps))
    return float(overhead), float(per_step)


def _calls(records: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    """One row per pipeline call of ``batch_size`` images (its images repeat the call's total_s)."""
    rows = records[(records["status"] == "ok") & (records["batch_size"] == batch_size)]
    sizes = rows.groupby(["run_id", "steps", "seed", "total_s"]).size().rename("images").reset_index()
    return sizes[sizes["images"] == batch_size]


# --------------------------------------------------------------------------- synthetic records


def _batch2_run(folder: Path, rng: np.random.Generator) -> Path:
    """A run at batch size 2: consecutive images share one call's measurement, the last one alone."""
    manifest, records = synthetic_run([MODEL], steps=STEPS, prompts_per_category=PROMPTS, run_id="batch2", rng=5)
    manifest["batch_size"] = 2
    records["batch_size"] = 2
    records["settings_sha256"] = manifest["settings_sha256"] = settings_sha256(manifest)  # a run of its own settings
    for steps, group in records.groupby("steps"):
        index = list(group.index)
        for start in range(0, len(index), 2):
            call = index[start : start + 2]
            scale = len(call) / 2  # the short last call makes one image
            step = BATCH2_PER_STEP_S * scale + 0.002 * rng.standard_normal(steps)
            text, decode = (share * BATCH2_OVERHEAD_S * scale + 0.004 * rng.standard_normal() for share in (0.3, 0.7))
            denoise = float(step.sum())
            total = float(text + denoise + decode)
            for i in call:
                records.at[i, "step_latencies_s"] = [float(v) for v in step]
                records.loc[i, ["text_encode_s", "denoise_s", "decode_s", "total_s"]] = [text, denoise, decode, total]
                records.loc[i, "energy_j"] = 0.6 * records.loc[i, "energy_j"]  # batching saves energy per image
    return write_run(folder, manifest, records)


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("synthetic")
    manifest, records = synthetic_run([MODEL], steps=STEPS, prompts_per_category=PROMPTS, run_id="batch1", rng=4)
    return write_run(folder / "b1", manifest, records), _batch2_run(folder / "b2", np.random.default_rng(6))


def test_synthetic_runs_at_two_batch_sizes_give_one_line_each(synthetic_runs: tuple[Path, Path]) -> None:
    b1, b2 = synthetic_runs
    table = calibrate_runs([b1, b2])
    model = table.models["m"]
    assert model.batch_sizes() == (1, 2) and sorted(model.batch_latency) == [1, 2]
    records = pd.concat([pd.read_parquet(run / "records") for run in (b1, b2)], ignore_index=True)
    for b, line in model.batch_latency.items():
        calls = _calls(records, b)
        assert line.batch_size == b and line.n == len(calls)
        assert (line.source, line.ref) == ("measured", "measured:latency-batch")
        overhead, per_step = _line(calls["steps"].to_numpy(float), calls["total_s"].to_numpy(float))
        assert (line.overhead_s, line.per_step_s) == pytest.approx((overhead, per_step), rel=1e-9)
        assert line.overhead_se_s > 0 and line.per_step_se_s > 0 and line.residual_std_s > 0 and line.r2 > 0.99
        assert line.stages == {} and line.step_p50_s is None  # the step and stage statistics stay on `latency`
    assert model.batch_latency[2].overhead_s == pytest.approx(BATCH2_OVERHEAD_S, rel=0.05)
    assert model.batch_latency[2].per_step_s == pytest.approx(BATCH2_PER_STEP_S, rel=0.02)
    assert model.call_seconds(10, 2) == pytest.approx(model.batch_latency[2].seconds(10))
    with pytest.raises(KeyError, match=r"no latency line at batch size 3 \(measured: \[1, 2\]\)"):
        model.call_seconds(10, 3)

    # `latency` is the batch-1 line, with the statistics of the batch-1 images; energy is batch 1's.
    alone = calibrate_runs([b1]).models["m"]
    assert alone.batch_latency == {} and alone.batch_sizes() == (1,)
    assert (model.latency.overhead_s, model.latency.per_step_s) == pytest.approx(
        (alone.latency.overhead_s, alone.latency.per_step_s), rel=1e-9
    )
    assert model.latency.batch_size == 1 and model.latency.stages == alone.latency.stages
    assert model.latency.step_p95_s == alone.latency.step_p95_s
    assert model.energy == alone.energy
    assert model.call_seconds(10, 1) == model.latency.seconds(10)
    # Quality pools both runs; memory is the peak over both.
    assert all(cell.n == 2 * PROMPTS for cells in model.quality.values() for cell in cells.values())
    assert model.memory == alone.memory

    # The short last call of each step count is left out of the batch-2 line, and said so.
    short = [e for e in table.exclusions if e.reason.startswith("short pipeline call")]
    assert [(e.steps, e.rows) for e in short] == [(s, 1) for s in STEPS]
    assert "left out of the batch-2 latency line; kept for quality and memory" in short[0].reason
    assert "batch_latency" in table.sources["measured:latency-batch"]["rule"]
    summary = table_summary(table)
    assert "    batch 2 (measured): " in summary and "per call of 2 images" in summary


def test_batch_lines_round_trip_byte_stably_and_a_single_batch_table_has_none(
    synthetic_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    b1, b2 = synthetic_runs
    path = save_table(calibrate_runs([b1, b2]), tmp_path / "both.json")
    table = load_table(path)
    assert table == calibrate_runs([b2, b1])
    doc = json.loads(path.read_text())
    assert sorted(doc["models"]["m"]["batch_latency"]) == ["1", "2"]
    assert doc["models"]["m"]["batch_latency"]["2"]["batch_size"] == 2
    assert save_table(table, tmp_path / "again.json").read_bytes() == path.read_bytes()
    assert save_table(calibrate_runs([b2, b1]), tmp_path / "swapped.json").read_bytes() == path.read_bytes()
    # Each batch size's own line is counted once; the batch-1 line repeats `latency`.
    counts = table.source_counts()
    assert counts["measured"] == calibrate_runs([b1]).source_counts()["measured"] + 2
    single = save_table(calibrate_runs([b1]), tmp_path / "single.json")
    assert "batch_latency" not in json.loads(single.read_text())["models"]["m"]


# --------------------------------------------------------------------------- schema errors


@pytest.fixture(scope="module")
def batch_doc(synthetic_runs: tuple[Path, Path]) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return table_to_dict(calibrate_runs(list(synthetic_runs)))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda lines: lines.update(two=lines.pop("2")),
            "models.m.batch_latency.two: expected a batch size (an integer >= 1) as key, but got 'two'",
        ),
        (
            lambda lines: lines.update({"0": lines.pop("2")}),
            "models.m.batch_latency.0: expected a batch size (an integer >= 1) as key, but got '0'",
        ),
        (
            lambda lines: lines.update({"02": lines.pop("2")}),
            "models.m.batch_latency.02: expected a batch size (an integer >= 1) as key, but got '02'",
        ),
        (
            lambda lines: lines["2"].update(per_step_s=-0.1),
            "models.m.batch_latency.2.per_step_s: expected a number > 0, but got -0.1",
        ),
        (
            lambda lines: lines["2"].update(overhead_s=-1),
            "models.m.batch_latency.2.overhead_s: expected a number >= 0, but got -1.0",
        ),
        (lambda lines: lines["2"].pop("n"), "models.m.batch_latency.2.n: missing field"),
        (
            lambda lines: lines["2"].update(batch_size=3),
            "models.m.batch_latency.2.batch_size: expected 2, the line's key, but got 3",
        ),
        (
            lambda lines: lines["2"].update(ref="nowhere"),
            "models.m.batch_latency.2.ref: 'nowhere' is not a key of 'sources'",
        ),
        (
            lambda lines: lines.update({"2": [1, 2]}),
            "models.m.batch_latency.2: expected an object, but got list",
        ),
        (
            lambda lines: lines["1"].update(per_step_s=lines["1"]["per_step_s"] * 1.5),
            "models.m.batch_latency.1.per_step_s: expected ",  # ... as in the model's latency line
        ),
    ],
)
def test_a_malformed_batch_line_is_named_by_its_json_path(batch_doc: dict[str, Any], edit: Any, message: str) -> None:
    doc = copy.deepcopy(batch_doc)
    edit(doc["models"]["m"]["batch_latency"])
    with pytest.raises(TableError, match=re.escape(message)):
        table_from_dict(doc, where="t.json")


def test_batch_lines_must_be_an_object_and_not_below_the_base_batch_size(batch_doc: dict[str, Any]) -> None:
    doc = copy.deepcopy(batch_doc)
    doc["models"]["m"]["batch_latency"] = [1]
    with pytest.raises(TableError, match=re.escape("t.json: models.m.batch_latency: expected an object, but got list")):
        table_from_dict(doc, where="t.json")
    doc = copy.deepcopy(batch_doc)
    model = doc["models"]["m"]
    model["latency"] = {**model["batch_latency"]["2"], "stages": model["latency"]["stages"]}  # base batch size 2
    with pytest.raises(TableError, match=re.escape("models.m.batch_latency.1: expected batch sizes >= 2")):
        table_from_dict(doc, where="t.json")
    del model["batch_latency"]["1"]
    base2 = table_from_dict(doc).models["m"]
    assert base2.batch_sizes() == (2,) and base2.base_batch_size == 2
    with pytest.raises(KeyError, match=r"measured: \[2\]"):
        base2.call_seconds(10, 1)


def test_a_line_without_a_batch_size_is_batch_one(batch_doc: dict[str, Any]) -> None:
    doc = copy.deepcopy(batch_doc)
    model = doc["models"]["m"]
    del model["batch_latency"], model["latency"]["batch_size"]
    old = table_from_dict(doc).models["m"]
    assert old.latency.batch_size is None and old.batch_sizes() == (1,)
    assert old.call_seconds(7, 1) == old.latency.seconds(7)


# --------------------------------------------------------------------------- a real tiny replica


@pytest.fixture(scope="module")
def profiled_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch = pytest.importorskip("torch", reason="profiling needs torch and diffusers (genedge[profile])")
    pytest.importorskip("diffusers", reason="profiling needs torch and diffusers (genedge[profile])")
    folder = tmp_path_factory.mktemp("profiled")
    threads = torch.get_num_threads()  # the runs use one thread for steadier CPU timings; put it back after
    try:
        return _profile_tiny(folder, 1), _profile_tiny(folder, 2)
    finally:
        torch.set_num_threads(threads)


def _profile_tiny(folder: Path, batch_size: int) -> Path:
    """Profile the ``tiny`` replica on CPU at 1, 3 and 6 steps on the smoke prompts (8: two per category)."""
    from genedge.data import path as data_path
    from genedge.profiler import ProfileConfig, profile

    config = ProfileConfig(
        models=("replica:tiny",),
        steps=(1, 3, 6),
        prompts=str(data_path("prompts", "smoke.tsv")),
        device="cpu",
        resolution=64,
        batch_size=batch_size,
        threads=1,
        clip_backbone="replica:tiny",
        clip_pretrained=None,
    )
    result = profile(config, folder / f"batch{batch_size}")
    assert (result.recorded, result.failed) == (24, 0)
    return result.run_dir


@pytest.mark.slow
def test_profiling_a_replica_at_batch_sizes_1_and_2_calibrates_into_one_table(
    profiled_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    from genedge.calibrate import fit_and_write
    from genedge.profiler import read_records

    table, path, figures = fit_and_write(list(profiled_runs), tmp_path / "table.json", tmp_path / "figures")
    model = table.models["replica:tiny"]
    assert model.batch_sizes() == (1, 2) and model.is_replica
    records = pd.concat([read_records(run) for run in profiled_runs], ignore_index=True)
    for b, line in model.batch_latency.items():
        calls = _calls(records, b)
        assert len(calls) == 24 // b and line.n == len(calls) and line.source == "measured"
        # Each line is its own batch size's per-call seconds against steps, fitted independently here.
        overhead, per_step = _line(calls["steps"].to_numpy(float), calls["total_s"].to_numpy(float))
        assert (line.overhead_s, line.per_step_s) == pytest.approx((overhead, per_step), rel=1e-9, abs=1e-15)
    assert (model.latency.overhead_s, model.latency.per_step_s, model.latency.batch_size) == (
        model.batch_latency[1].overhead_s,
        model.batch_latency[1].per_step_s,
        1,
    )
    assert sorted(model.latency.stages) == [1, 3, 6]
    assert all(cell.n == 4 for cells in model.quality.values() for cell in cells.values())  # both runs pooled
    assert not any(e.reason.startswith("short") for e in table.exclusions)  # 8 prompts make 4 full calls

    assert load_table(path) == table
    assert save_table(load_table(path), tmp_path / "again.json").read_bytes() == path.read_bytes()
    doc = json.loads(path.read_text())
    assert sorted(doc["models"]["replica:tiny"]["batch_latency"]) == ["1", "2"]
    assert {p.name for p in figures} >= {"latency_vs_steps.png", "latency_vs_steps.svg"}

    doc["models"]["replica:tiny"]["batch_latency"]["2"]["per_step_s"] = -0.01
    with pytest.raises(TableError, match=re.escape("models.replica:tiny.batch_latency.2.per_step_s: expected a")):
        table_from_dict(doc, where=str(path))
