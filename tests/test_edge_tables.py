"""Shipped tables: the edge-device tables, the A100 table's energy, table names and ``genedge tables``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_DATA, genedge_in_process, needs_shared_data, run_genedge, run_python

from genedge import data
from genedge.contract.table_file import load_table

EDGE_SCRIPT = ROOT / "scripts" / "build_edge_tables.py"
EDGE_TABLES = ("galaxy-s24", "qcs8550-proxy", "x-elite-crd")
PERF_FILES = {"sd15": "stable_diffusion_v1_5.perf.yaml", "sd21": "stable_diffusion_v2_1.perf.yaml"}


def _component_ms(path: Path, device: str, runtime: str = "qnn_context_binary") -> dict[str, float]:
    """component → inference_time_milliseconds of one device and runtime (w8a16), read line by line.

    A minimal reader for the nested-mapping layout of qai-hub-models' perf.yaml (PyYAML is not a
    genedge dependency): each ``key: value`` line's path is the keys of the less-indented lines above it.
    """
    stack: list[tuple[int, str]] = []
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith(("#", "- ")):
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = text.partition(":")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        keys = [k for _, k in stack]
        if (
            len(keys) == 8
            and keys[:3] == ["precisions", "w8a16", "components"]
            and keys[4:] == ["performance_metrics", device, runtime, "inference_time_milliseconds"]
        ):
            out[keys[3]] = float(value)
    return out


# --------------------------------------------------------------------------- names


def test_shipped_tables_are_named_by_file_stem_and_sorted():
    shipped = data.shipped_tables()
    assert list(shipped) == sorted(shipped)
    assert {"reference-a100", *EDGE_TABLES} <= set(shipped)
    assert all(path == data.path("tables", f"{name}.json") for name, path in shipped.items())


def test_resolve_table_takes_a_shipped_name_or_a_path(tmp_path, monkeypatch):
    assert data.resolve_table("galaxy-s24") == data.path("tables", "galaxy-s24.json")
    own = tmp_path / "mine.json"
    own.write_text("{}")
    assert data.resolve_table(own) == own
    assert data.resolve_table(str(own)) == own
    monkeypatch.chdir(tmp_path)
    Path("galaxy-s24").write_text("{}")  # an existing file wins over a shipped name
    assert data.resolve_table("galaxy-s24") == Path("galaxy-s24")


def test_resolve_table_refuses_an_unknown_name_listing_the_shipped_ones():
    with pytest.raises(ValueError, match=r"no calibration table 'galaxy-s99'") as info:
        data.resolve_table("galaxy-s99")
    for name in data.shipped_tables():
        assert repr(name) in str(info.value)


# --------------------------------------------------------------------------- shipped tables


@pytest.mark.parametrize("name", sorted(data.shipped_tables()))
def test_every_shipped_table_loads_and_validates(name):
    table = load_table(data.resolve_table(name))
    assert table.models
    assert sum(table.source_counts().values()) > 0


@pytest.mark.parametrize("name", EDGE_TABLES)
def test_edge_tables_share_the_reference_quality_and_carry_no_energy(name):
    reference = load_table(data.resolve_table("reference-a100"))
    table = load_table(data.resolve_table(name))
    assert table.clip_convention == reference.clip_convention
    assert table.categories == reference.categories
    assert set(table.models) == {"sd15", "sd21"}
    for key, model in table.models.items():
        assert model.steps == reference.models[key].steps
        assert model.quality == reference.models[key].quality
        assert model.curves == reference.models[key].curves
        assert model.energy is None
        assert (model.latency.source, model.latency.n, model.latency.r2) == ("derived", 0, None)
        assert model.memory.source == "derived"
    assert table.source_counts()["measured"] == 0
    assert (
        "Copyright 2025 Qualcomm Technologies, Inc. and/or its subsidiaries"
        in table.sources["qai-hub-perf"]["citation"]
    )


def test_reference_table_has_energy_for_every_model():
    table = load_table(data.resolve_table("reference-a100"))
    for key, model in table.models.items():
        assert model.energy is not None, key
        assert model.energy.per_step_j > 0
    sd15 = table.models["sd15"].energy
    assert (sd15.source, sd15.ref) == ("derived", "rule-sd15-energy")
    assert sd15.joules(25) == pytest.approx(227.0)  # the published Openjourney-v4 figure the rule scales to
    assert {table.models[k].energy.source for k in ("sd21", "sdxl")} == {"published"}


@needs_shared_data
def test_edge_tables_are_reproduced_by_their_script(tmp_path):
    pytest.importorskip("yaml", reason="the build script reads the perf.yaml files with PyYAML")
    subprocess.run(
        [sys.executable, str(EDGE_SCRIPT), "--data", str(SHARED_DATA), "--out-dir", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    built = sorted(p.stem for p in tmp_path.glob("*.json"))
    assert built == sorted(EDGE_TABLES)
    for name in built:
        assert (tmp_path / f"{name}.json").read_bytes() == data.resolve_table(name).read_bytes(), name


@needs_shared_data
@pytest.mark.parametrize(
    ("name", "device"), [("galaxy-s24", "Samsung Galaxy S24"), ("qcs8550-proxy", "QCS8550 (Proxy)")]
)
def test_edge_latency_is_the_rule_applied_to_the_published_figures(name, device):
    table = load_table(data.resolve_table(name))
    assert table.device["name"] == device
    for key, file in PERF_FILES.items():
        ms = _component_ms(SHARED_DATA / "qai-hub-sd-edge" / file, device)
        assert set(ms) == {"text_encoder", "unet", "vae"}
        latency = table.models[key].latency
        assert latency.overhead_s == pytest.approx((2 * ms["text_encoder"] + ms["vae"]) / 1000, rel=1e-12)
        assert latency.per_step_s == pytest.approx(2 * ms["unet"] / 1000, rel=1e-12)


# --------------------------------------------------------------------------- genedge tables


def test_genedge_tables_lists_every_shipped_table():
    done = run_genedge("tables", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["name", "device", "models", "categories", "derived", "energy"]
    for name in data.shipped_tables():
        row = next(line for line in lines if line.startswith(f"{name} "))
        table = load_table(data.resolve_table(name))
        assert table.device["name"] in row
        assert ",".join(table.models) in row
    assert next(line for line in lines if line.startswith("reference-a100 ")).endswith(" yes")
    assert next(line for line in lines if line.startswith("galaxy-s24 ")).endswith(" no")


def test_genedge_tables_json_matches_the_shipped_tables(capsys):
    done = genedge_in_process(capsys, "tables", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [row["name"] for row in rows] == list(data.shipped_tables())
    by_name = {row["name"]: row for row in rows}
    assert by_name["reference-a100"]["energy"] is True
    assert by_name["galaxy-s24"]["energy"] is False
    assert by_name["galaxy-s24"]["models"] == ["sd15", "sd21"]
    assert 0 < by_name["galaxy-s24"]["derived_share"] < 1


def test_genedge_tables_imports_no_heavy_package():
    code = (
        "import contextlib, io, sys\n"
        "from genedge.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['tables'])\n"
        "print(sorted(m for m in ('torch', 'pandas', 'pyarrow', 'matplotlib', 'diffusers') if m in sys.modules))\n"
    )
    done = run_python(code, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
