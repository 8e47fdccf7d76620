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
from genedge.contract.runs import DEFAULT_DTYPE, DEFAULT_GUIDANCE_SCALE
from genedge.contract.table import ProfiledModel, ProfileRun, ProfileSettings
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
    """A copy of ``document`` with the field at ``dotted`` (list items by index) set to ``value``, or deleted."""
    out = copy.deepcopy(document)
    *parents, last = dotted.split(".")
    node = out
    for key in parents:
        node = node[int(key) if isinstance(node, list) else key]
    last = int(last) if isinstance(node, list) else last
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


def _assert_refused(path: Path, field: str, expected: str) -> None:
    """Reading the table at ``path`` fails naming the file, ``field`` and ``expected``."""
    with pytest.raises(TableError) as info:
        load_table(path)
    assert info.value.where == str(path)
    assert info.value.field_path == field
    assert expected in str(info.value)


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
    _assert_refused(_write(tmp_path, _break(doc, dotted, value)), field, expected)


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


# --------------------------------------------------------------------------------------------------
# The profile runs a table embeds in its manifest


def _profile_run() -> dict:
    """One run as calibrate embeds it: its manifest's fields but the identity and the CLIPScore convention."""
    scheduler = {"class": "DDIMScheduler", "config": {"steps_offset": 1, "timestep_spacing": "leading"}}
    return {
        "settings_sha256": "ab" * 32,
        "host": {"cpu": "AMD EPYC", "os": "Linux", "threads": 4},
        "device": {"name": "NVIDIA A100-SXM4-40GB", "driver": "550.54", "cuda": "12.4", "memory_bytes": 42949672960},
        "versions": {"genedge": "0.1.0", "torch": "2.4.0"},
        "dtype": "float16",
        "resolution": None,
        "guidance_scale": 5.0,
        "scheduler": scheduler,
        "models": [
            {"key": "sd15", "revision": "1d0c4eb", "is_replica": False, "resolution": 512, "scheduler": scheduler},
            {"key": "sdxl", "revision": None, "is_replica": False, "resolution": 1024, "scheduler": None},
        ],
        "steps": [10, 20, 30, 40, 50],
        "batch_size": 1,
        "seeds": [0],
        "warmup": 1,
        "nvml": {"available": True, "driver": "550.54"},
        "energy": {"available": True, "source": "nvml", "reason": None},
    }


@pytest.fixture
def profiled(doc) -> dict:
    """The reference table's document with one embedded profile run, ``run-a``."""
    return {**doc, "manifest": {"note": "calibrated from one run", "runs": {"run-a": _profile_run()}}}


def test_embedded_runs_are_typed_and_written_back_byte_identical(tmp_path, profiled):
    path = tmp_path / "profiled.json"
    path.write_text(json.dumps(profiled, indent=2, sort_keys=True) + "\n")
    table = load_table(path)
    assert table.manifest.runs == {
        "run-a": ProfileRun(
            run_id="run-a",
            models=(ProfiledModel("sd15", 512, "DDIMScheduler"), ProfiledModel("sdxl", 1024, None)),
            guidance_scale=5.0,
            dtype="float16",
            threads=4,
        )
    }
    assert table.profile_settings() == {
        "sd15": ProfileSettings(resolution=512, scheduler="DDIMScheduler", guidance_scale=5.0, dtype="float16"),
        "sdxl": ProfileSettings(resolution=1024, scheduler=None, guidance_scale=5.0, dtype="float16"),
    }
    assert table.profile_threads() == 4
    written = save_table(table, tmp_path / "again.json").read_bytes()
    assert written == path.read_bytes()
    assert table_from_dict(json.loads(written)) == table


def test_an_older_run_without_guidance_scale_or_dtype_reads_with_the_run_defaults(tmp_path, profiled):
    older = profiled["manifest"]["runs"]["run-a"]
    for name in ("guidance_scale", "dtype", "host"):
        del older[name]
    profiled["manifest"]["runs"]["run-b"] = {**_profile_run(), "models": [{"key": "sd21", "resolution": 768}]}
    table = load_table(_write(tmp_path, profiled))
    settings = table.profile_settings()
    assert settings["sd15"] == ProfileSettings(
        resolution=512, scheduler="DDIMScheduler", guidance_scale=DEFAULT_GUIDANCE_SCALE, dtype=DEFAULT_DTYPE
    )
    assert settings["sd21"] == ProfileSettings(resolution=768, scheduler=None, guidance_scale=5.0, dtype="float16")
    assert table.profile_threads() == 4  # the one run that says
    written = json.loads(save_table(table, tmp_path / "again.json").read_bytes())
    assert written["manifest"] == profiled["manifest"]  # the defaults are applied on reading, never written


def test_runs_with_different_threads_state_no_profile_threads(tmp_path, profiled):
    profiled["manifest"]["runs"]["run-b"] = _break(_profile_run(), "host.threads", 8)
    assert load_table(_write(tmp_path, profiled)).profile_threads() is None


def test_a_table_without_runs_has_no_profile_settings():
    table = load_table(REFERENCE)
    assert table.manifest.runs == {} and table.profile_settings() == {} and table.profile_threads() is None


_RUN = "manifest.runs.run-a"


@pytest.mark.parametrize(
    ("dotted", "value", "field", "expected"),
    [
        ("manifest", [], "manifest", "expected an object, but got list"),
        ("manifest.runs", [_profile_run()], "manifest.runs", "expected an object, but got list"),
        (_RUN, "run-a", _RUN, "expected an object, but got str"),
        (f"{_RUN}.models", ..., f"{_RUN}.models", "missing field"),
        (f"{_RUN}.models", {"key": "sd15"}, f"{_RUN}.models", "expected a list, but got dict"),
        (f"{_RUN}.models.0", "sd15", f"{_RUN}.models[0]", "expected an object, but got str"),
        (f"{_RUN}.models.0.key", ..., f"{_RUN}.models[0].key", "missing field"),
        (f"{_RUN}.models.1.key", " sdxl", f"{_RUN}.models[1].key", "expected a non-empty name"),
        (f"{_RUN}.models.0.resolution", ..., f"{_RUN}.models[0].resolution", "missing field"),
        (f"{_RUN}.models.0.resolution", 512.0, f"{_RUN}.models[0].resolution", "expected an integer, but got float"),
        (f"{_RUN}.models.0.resolution", "512", f"{_RUN}.models[0].resolution", "expected an integer, but got str"),
        (f"{_RUN}.models.0.resolution", 0, f"{_RUN}.models[0].resolution", "expected pixels >= 1, but got 0"),
        (f"{_RUN}.models.0.scheduler", "DDIM", f"{_RUN}.models[0].scheduler", "expected an object, but got str"),
        (f"{_RUN}.models.0.scheduler.class", 3, f"{_RUN}.models[0].scheduler.class", "expected a string"),
        (f"{_RUN}.guidance_scale", 750, f"{_RUN}.guidance_scale", "expected a guidance scale <= 100, but got 750.0"),
        (f"{_RUN}.guidance_scale", -1.0, f"{_RUN}.guidance_scale", "expected a guidance scale >= 0, but got -1.0"),
        (f"{_RUN}.guidance_scale", "7.5", f"{_RUN}.guidance_scale", "expected a number, but got str"),
        (f"{_RUN}.dtype", 16, f"{_RUN}.dtype", "expected a string, but got int"),
        (f"{_RUN}.dtype", "", f"{_RUN}.dtype", "expected a non-empty name"),
        (f"{_RUN}.host", "4 threads", f"{_RUN}.host", "expected an object, but got str"),
        (f"{_RUN}.host.threads", 0, f"{_RUN}.host.threads", "expected a thread count >= 1, but got 0"),
        (f"{_RUN}.host.threads", 8193, f"{_RUN}.host.threads", "expected a thread count <= 8192, but got 8193"),
        (f"{_RUN}.host.threads", True, f"{_RUN}.host.threads", "expected an integer, but got a boolean"),
    ],
)
def test_a_malformed_embedded_run_names_file_and_field(tmp_path, profiled, dotted, value, field, expected):
    _assert_refused(_write(tmp_path, _break(profiled, dotted, value)), field, expected)
