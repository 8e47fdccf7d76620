"""Calibration table: validation of every malformed case, round trip, and the shipped reference table."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_DATA, needs_shared_data

from genedge import data
from genedge.calibrate import TableError, load_table, save_table, table_from_dict
from genedge.optimizer import Problem, Workload

REFERENCE = data.path("tables", "reference-a100.json")


@pytest.fixture
def doc() -> dict:
    return json.loads(REFERENCE.read_text())


def _write(tmp_path: Path, document: dict, raw: str | None = None) -> Path:
    path = tmp_path / "table.json"
    path.write_text(raw if raw is not None else json.dumps(document))
    return path


def _break(document: dict, dotted: str, value=...) -> dict:
    out = copy.deepcopy(document)
    *parents, last = dotted.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


@pytest.mark.parametrize(
    ("dotted", "value", "field", "expected"),
    [
        ("models.sd15.latency.per_step_s", ..., "models.sd15.latency.per_step_s", "missing field"),
        (
            "models.sd15.quality.Detail.50.mean",
            "31.3",
            "models.sd15.quality.Detail.50.mean",
            "expected a number, but got str",
        ),
        (
            "models.sd15.quality.Detail.50.std",
            -1.0,
            "models.sd15.quality.Detail.50.std",
            "expected a number > 0, but got -1.0",
        ),
        ("models.sd15.quality.Detail.50.n", True, "models.sd15.quality.Detail.50.n", "but got a boolean"),
        ("models.sd21.steps", [], "models.sd21.steps", "expected a non-empty list of step counts"),
        ("models.sd21.steps", [10, 30, 20, 40, 50], "models.sd21.steps", "increasing order"),
        ("models.sd21.steps", [10, 20, 20, 50], "models.sd21.steps", "duplicates [20]"),
        ("models.sd21.steps", [0, 50], "models.sd21.steps[0]", "expected a step count > 0"),
        ("models.sdxl.default_steps", 35, "models.sdxl.default_steps", "expected one of the step grid"),
        ("models.sdxl.memory.peak_bytes", 64 * 2**30, "models.sdxl.memory.peak_bytes", "but the device has 40.00 GiB"),
        (
            "models.sdxl.quality.Detail.50.source",
            "guessed",
            "models.sdxl.quality.Detail.50.source",
            "expected one of ['measured', 'published', 'derived']",
        ),
        ("models.sdxl.quality.Detail.50.ref", "nowhere", "models.sdxl.quality.Detail.50.ref", "is not a key of"),
        ("schema_version", 7, "schema_version", "expected 1, but got 7"),
        (
            "models.sd15.curves.Basic.valid_steps",
            [20, 50],
            "models.sd15.quality.Basic",
            "step 10 of the grid has no cell and no curve covering it",
        ),
    ],
)
def test_malformed_table_names_file_and_field(tmp_path, doc, dotted, value, field, expected):
    path = _write(tmp_path, _break(doc, dotted, value))
    with pytest.raises(TableError) as info:
        load_table(path)
    assert info.value.where == str(path)
    assert info.value.field_path == field
    assert expected in str(info.value)


def test_nan_std_is_rejected(tmp_path, doc):
    raw = json.dumps(_break(doc, "models.sd15.quality.Detail.50.std", float("nan")))  # json writes NaN
    with pytest.raises(TableError, match=r"quality\.Detail\.50\.std: expected a finite number, but got nan"):
        load_table(_write(tmp_path, doc, raw))


def test_mixed_clip_conventions_are_refused(tmp_path, doc):
    other = dict(doc["clip_convention"], backbone="ViT-L-14-quickgelu")
    path = _write(tmp_path, _break(doc, "models.sdxl.clip_convention", other))
    with pytest.raises(TableError, match="mixed CLIPScore conventions: the table uses ViT-B-32/openai"):
        load_table(path)


def test_quality_for_unknown_category_is_refused(tmp_path, doc):
    broken = copy.deepcopy(doc)
    broken["models"]["sd15"]["quality"]["Writing"] = broken["models"]["sd15"]["quality"]["Basic"]
    with pytest.raises(TableError, match=r"models\.sd15\.quality: categories \['Writing'\] are not in"):
        load_table(_write(tmp_path, broken))


def test_binary_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "table.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TableError, match=r"table\.json: byte 0: not UTF-8 text"):
        load_table(path)


def test_invalid_json_reports_the_line(tmp_path, doc):
    with pytest.raises(TableError, match="line 1: not valid JSON"):
        load_table(_write(tmp_path, doc, "{not json"))


def test_unknown_workload_category_is_refused():
    table = load_table(REFERENCE)
    with pytest.raises(ValueError, match=r"workload categories \['Writing'\] are not in the table"):
        Problem.from_table(table, Workload.from_counts({"Basic": 3, "Writing": 2}))


def test_round_trip_is_byte_identical(tmp_path):
    table = load_table(REFERENCE)
    first = save_table(table, tmp_path / "a.json").read_bytes()
    second = save_table(table_from_dict(json.loads(first)), tmp_path / "b.json").read_bytes()
    assert first == second == REFERENCE.read_bytes()


def test_curve_interpolates_between_cells_and_refuses_to_extrapolate():
    model = load_table(REFERENCE).models["sd21"]
    means = [model.quality_at("Detail", s)[0] for s in model.steps]
    assert all(b > a for a, b in itertools.pairwise(means)), "quality saturates upwards with steps"
    assert means[-1] == pytest.approx(model.quality["Detail"][50].mean)
    with pytest.raises(KeyError, match="no cell at 60 steps and no curve covering it"):
        model.quality_at("Detail", 60)


@needs_shared_data
def test_reference_table_is_reproduced_by_its_script(tmp_path):
    out = tmp_path / "reference.json"
    script = ROOT / "scripts" / "build_reference_table.py"
    subprocess.run(
        [sys.executable, str(script), "--data", str(SHARED_DATA), "--out", str(out)], check=True, capture_output=True
    )
    assert out.read_bytes() == REFERENCE.read_bytes()
