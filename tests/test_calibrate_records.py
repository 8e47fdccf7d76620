"""Bad profile records: each is a specific error or a counted exclusion, never a silent drop.

Documented behaviour (calibrate/records.py, calibrate/build.py):

| input | result |
|---|---|
| NaN, infinite, negative or > 100 CLIPScore on an ok row | ``TableError`` naming shard, row, prompt and value |
| null CLIPScore on an ok row | excluded from quality fits, counted in ``exclusions`` |
| status ``oom`` / ``error`` | excluded from every fit, counted with the status and error text |
| a missing contract column | ``TableError`` naming the shard and the column |
| < 2 scored images in a (model, category, steps) cell | ``TableError`` naming the cell |
| runs or rows of different devices or CLIP conventions | ``TableError`` "a table never mixes ..." |
| two ok rows for one image, or a copied shard | ``TableError`` naming the run, counting duplicate rows |
| rows of another run or other settings (a foreign shard) | ``TableError`` naming the run, counting them per run |
| an unreadable shard | ``ArtifactError`` naming it and ``--quarantine-corrupt`` |
| a negative or NaN ``energy_j`` on an ok row | ``TableError`` naming shard, row and value |
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genedge.calibrate import Exclusion, TableError, calibrate_runs
from genedge.contract import MANIFEST_SCHEMA_VERSION, ArtifactError, shard_path
from genedge.contract.table import ProfileSettings
from genedge.testing import (
    SYNTHETIC_CLIP_CONVENTION,
    QualityTruth,
    SyntheticModel,
    synthetic_run,
    write_run,
)

MODEL = SyntheticModel(
    key="m",
    quality={c: QualityTruth(a=32.0, b=5.0, kappa=8.0, std=3.0) for c in ("Basic", "Detail")},
    overhead_s=0.5,
    per_step_s=0.1,
    step_noise_s=0.002,
    memory_bytes={"peak_torch_reserved_bytes": 1_000_000_000},
)


def _run(tmp_path: Path, name: str = "run", **kwargs: object) -> tuple[dict, pd.DataFrame]:
    return synthetic_run([MODEL], steps=(10, 20, 30), prompts_per_category=6, run_id=name, rng=0, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, -1.5, np.inf, 100.5])
def test_invalid_clip_score_is_an_error_naming_the_record(tmp_path: Path, bad: float) -> None:
    manifest, records = _run(tmp_path)
    records.loc[7, "clip_score"] = bad
    run = write_run(tmp_path / "run", manifest, records, nan_as_null=False)
    message = (
        f"{shard_path(run, 0, 0)}: row 7 ('Detail-0001').clip_score: expected a CLIPScore "
        f"in [0, 100] (100·max(cos, 0)) or null, but got {bad!r}"
    )
    with pytest.raises(TableError, match=re.escape(message)):
        calibrate_runs([run])


def test_null_scores_and_failed_generations_are_counted_not_dropped(tmp_path: Path) -> None:
    manifest, records = _run(tmp_path)
    records.loc[[0, 1], "clip_score"] = None
    oom = records.index[(records["steps"] == 30) & (records["category"] == "Detail")][:2]
    records.loc[oom, ["status", "error", "clip_score"]] = ["oom", "CUDA out of memory. Tried to allocate 2 GiB", None]
    records.loc[5, ["status", "error"]] = ["error", "RuntimeError: boom\nTraceback ..."]
    table = calibrate_runs([write_run(tmp_path / "run", manifest, records)])
    assert table.exclusions == (
        Exclusion("m", 10, "clip_score is null (left out of quality fits; kept for latency and memory)", 2),
        Exclusion("m", 10, "status=error: RuntimeError: boom", 1),
        Exclusion("m", 30, "status=oom: CUDA out of memory. Tried to allocate 2 GiB", 2),
    )
    model = table.models["m"]
    assert model.quality["Basic"][10].n == 6 - 3
    assert model.quality["Detail"][30].n == 6 - 2
    assert model.latency.n == 3 * 12 - 3  # null scores still count for latency
    assert (3 * 12) == model.latency.n + 2 + 1  # every row is in a fit or in an exclusion


def test_missing_column_is_an_error_naming_shard_and_column(tmp_path: Path) -> None:
    manifest, records = _run(tmp_path)
    run = write_run(tmp_path / "run", manifest, records.drop(columns=["total_s"]))
    with pytest.raises(ArtifactError, match=re.escape(f"{shard_path(run, 0, 0)}: total_s: missing record column")):
        calibrate_runs([run])


def test_a_column_of_another_type_is_an_error_naming_shard_and_column(tmp_path: Path) -> None:
    manifest, records = _run(tmp_path)
    run = write_run(tmp_path / "run", manifest, records)
    shard = shard_path(run, 0, 0)
    pd.read_parquet(shard).astype({"steps": str}).to_parquet(shard)  # as a hand edit with pandas writes it
    with pytest.raises(ArtifactError, match=re.escape(f"{shard_path(run, 0, 0)}: steps: expected int32 values, but")):
        calibrate_runs([run])


def test_category_with_fewer_than_two_samples_is_an_error_naming_the_cell(tmp_path: Path) -> None:
    manifest, records = _run(tmp_path)
    keep_one = (records["category"] == "Detail") & (records["steps"] == 20) & (records["prompt_id"] != "Detail-0000")
    run = write_run(tmp_path / "run", manifest, records[~keep_one])
    with pytest.raises(
        TableError, match=re.escape("models.m.quality.Detail.20: Expected at least 2 scores to fit a Normal, but got 1")
    ):
        calibrate_runs([run])


def test_runs_of_two_devices_are_refused(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", *_run(tmp_path, "a"))
    b = write_run(tmp_path / "b", *_run(tmp_path, "b", device_name="Other GPU"))
    with pytest.raises(
        TableError,
        match=r"b/manifest.json: device.name: a table never mixes devices: expected "
        r"'Synthetic GPU' \(as in .*a/manifest.json\), but got 'Other GPU'",
    ):
        calibrate_runs([a, b])


def test_a_row_from_another_device_is_refused(tmp_path: Path) -> None:
    manifest, records = _run(tmp_path)
    records.loc[3, "device_name"] = "Other GPU"
    with pytest.raises(
        TableError,
        match=r"row 3 \('Basic-0003'\).device_name: a table never mixes devices: "
        r"expected 'Synthetic GPU' as in the run's manifest, but got 'Other GPU'",
    ):
        calibrate_runs([write_run(tmp_path / "run", manifest, records)])


def test_runs_of_two_clip_conventions_are_refused(tmp_path: Path) -> None:
    other = SYNTHETIC_CLIP_CONVENTION.__class__(**{**SYNTHETIC_CLIP_CONVENTION.__dict__, "backbone": "ViT-B-16"})
    a = write_run(tmp_path / "a", *_run(tmp_path, "a"))
    b = write_run(tmp_path / "b", *_run(tmp_path, "b", clip_convention=other))
    with pytest.raises(TableError, match=r"clip_convention: a table never mixes CLIPScore conventions"):
        calibrate_runs([a, b])


def test_a_row_scored_with_another_backbone_is_refused(tmp_path: Path) -> None:
    manifest, records = _run(tmp_path)
    records.loc[4, "clip_backbone"] = "ViT-B-16"
    with pytest.raises(TableError, match=r"row 4 .*clip_backbone: a table never mixes CLIPScore conventions"):
        calibrate_runs([write_run(tmp_path / "run", manifest, records)])


def test_two_runs_of_one_device_merge(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", *_run(tmp_path, "a"))
    b = write_run(tmp_path / "b", *_run(tmp_path, "b"))
    table = calibrate_runs([a, b])
    assert table.models["m"].quality["Basic"][10].n == 12
    assert sorted(table.manifest.runs) == ["a", "b"]
    assert table.profile_settings() == {
        "m": ProfileSettings(resolution=512, scheduler=None, guidance_scale=7.5, dtype="float16")
    }


def test_an_image_recorded_twice_is_refused(tmp_path: Path) -> None:
    manifest, records = _run(tmp_path)
    run = write_run(tmp_path / "run", manifest, pd.concat([records, records.iloc[[2]]]), shards=2)
    with pytest.raises(
        TableError,
        match=re.escape(f"{run}: records: 1 duplicate row(s): an image recorded more than once")
        + r".*remove them or profile again into a clean folder",
    ):
        calibrate_runs([run])


def test_a_copied_shard_is_refused_counting_its_rows(tmp_path: Path) -> None:
    manifest, records = _run(tmp_path)
    records.loc[[0, 1], ["status", "error", "clip_score"]] = ["oom", "CUDA out of memory", None]
    run = write_run(tmp_path / "run", manifest, records, shards=3)
    copy = shard_path(run, 0, 3)
    copy.write_bytes(shard_path(run, 0, 0).read_bytes())  # a copy: its ok rows and its failure rows again
    with pytest.raises(TableError, match=re.escape(f"{run}: records: {len(records) // 3} duplicate row(s)")):
        calibrate_runs([run])


def test_rows_of_another_run_are_refused_with_their_counts(tmp_path: Path) -> None:
    manifest, records = _run(tmp_path)
    other = records.iloc[:5].copy()
    other["run_id"] = "elsewhere"
    resettled = records.iloc[5:8].copy()
    resettled["settings_sha256"] = "f" * 64
    run = write_run(tmp_path / "run", manifest, pd.concat([records, other, resettled]), shards=2)
    sha = manifest["settings_sha256"][:12]
    message = (
        f"{run}: records: 8 foreign row(s) (5 from run 'elsewhere' (settings {sha}…), 3 from run 'run' "
        f"(settings {'f' * 12}…)), not of this run 'run' with settings {sha}… (a shard copied from another run?); "
        f"remove them or profile again into a clean folder"
    )
    with pytest.raises(TableError, match=re.escape(message)):
        calibrate_runs([run])


def test_foreign_and_duplicate_rows_are_counted_together(tmp_path: Path) -> None:
    manifest, records = _run(tmp_path)
    other = records.iloc[:3].copy()
    other["run_id"] = "elsewhere"
    run = write_run(tmp_path / "run", manifest, pd.concat([records, other, records.iloc[[4, 6]]]))
    with pytest.raises(TableError, match=r"records: 3 foreign row\(s\) .*; 2 duplicate row\(s\)"):
        calibrate_runs([run])


def test_an_unreadable_shard_is_refused_naming_it_and_the_way_forward(tmp_path: Path) -> None:
    manifest, records = _run(tmp_path)
    run = write_run(tmp_path / "run", manifest, records, shards=2)
    shard_path(run, 0, 1).write_bytes(b"not parquet")
    with pytest.raises(
        ArtifactError, match=re.escape(f"{shard_path(run, 0, 1)}: file: not a readable Parquet shard")
    ) as caught:
        calibrate_runs([run])
    assert "--quarantine-corrupt" in str(caught.value)


@pytest.mark.parametrize("bad", [-1.0, np.nan])
def test_an_invalid_energy_is_an_error_naming_the_record(tmp_path: Path, bad: float) -> None:
    manifest, records = synthetic_run(
        [replace(MODEL, overhead_j=50.0, per_step_j=10.0)], steps=(10, 20), prompts_per_category=3, rng=0
    )
    records.loc[2, "energy_j"] = bad
    run = write_run(tmp_path / "run", manifest, records, nan_as_null=False)
    with pytest.raises(TableError, match=re.escape("row 2 ('Basic-0002').energy_j: expected a finite number >= 0")):
        calibrate_runs([run])


def test_missing_manifest_and_wrong_manifest_field(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="expected a profile run manifest"):
        calibrate_runs([tmp_path / "nowhere"])
    manifest, records = _run(tmp_path)
    run = write_run(tmp_path / "run", manifest, records)
    doc = json.loads((run / "manifest.json").read_text())
    doc["schema_version"] = 2
    (run / "manifest.json").write_text(json.dumps(doc))
    expected = rf"manifest.json: schema_version: expected {MANIFEST_SCHEMA_VERSION}, but got 2 \(a run written by an"
    with pytest.raises(ArtifactError, match=expected):
        calibrate_runs([run])


def test_a_model_whose_every_image_failed_is_an_error_naming_it(tmp_path: Path) -> None:
    manifest, records = _run(tmp_path)
    records[["status", "error"]] = ["oom", "CUDA out of memory"]
    with pytest.raises(
        TableError,
        match=r"models.m: expected successful images for every model, but \['m'\] have "
        r"none \(see the excluded rows: \['status=oom: CUDA out of memory'",
    ):
        calibrate_runs([write_run(tmp_path / "run", manifest, records)])
