"""The table schema's optional fields: older tables keep their bytes, new fields round-trip and validate."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from genedge import data
from genedge.calibrate import TableError, load_table, save_table, table_from_dict, table_to_dict
from genedge.contract.table import cell_standard_errors


def _minimal_doc() -> dict[str, Any]:
    """A table as written before the optional fields existed (its cells' standard errors are not optional)."""
    sourced = {"source": "measured", "ref": "m"}
    errors = dict(zip(("mean_se", "std_se"), cell_standard_errors(3.0, 5)))
    return {
        "schema_version": 1,
        "kind": "genedge.calibration_table",
        "device": {"name": "GPU", "memory_bytes": 8 * 2**30},
        "clip_convention": {
            "backbone": "ViT-L-14-quickgelu",
            "pretrained": "openai",
            "formula": "100*max(cos,0)",
            "truncation": "77",
            "preprocess": "val",
        },
        "categories": ["Basic"],
        "category_mapping": {"column": "Challenge", "labels": {"Basic": ["Basic"]}},
        "models": {
            "a": {
                "name": "a",
                "resolution": 512,
                "steps": [10, 20],
                "default_steps": 20,
                "quality": {
                    "Basic": {
                        "10": {"mean": 30.0, "std": 3.0, "n": 5, "gof": 0.5, **errors, **sourced},
                        "20": {"mean": 31.0, "std": 3.0, "n": 5, "gof": None, **errors, **sourced},
                    }
                },
                "curves": {"Basic": {"form": "linear_interpolation", "valid_steps": [10, 20], **sourced}},
                "latency": {"overhead_s": 0.5, "per_step_s": 0.1, "n": 10, "r2": 0.99, **sourced},
                "memory": {"peak_bytes": 2**30, "kind": "torch_reserved", **sourced},
            }
        },
        "sources": {"m": {"kind": "measured"}},
        "manifest": {},
    }


def test_a_table_without_optional_fields_keeps_its_bytes(tmp_path: Path) -> None:
    doc = _minimal_doc()
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    before = path.read_bytes()
    save_table(load_table(path), path)
    assert path.read_bytes() == before


def test_optional_fields_round_trip(tmp_path: Path) -> None:
    doc = _minimal_doc()
    model = doc["models"]["a"]
    model["is_replica"] = True
    model["quality"]["Basic"]["20"]["flags"] = ["few_samples"]
    model["latency"].update(
        overhead_se_s=0.01,
        per_step_se_s=0.001,
        residual_std_s=0.02,
        step_p50_s=0.1,
        step_p95_s=0.12,
        batch_size=1,
        stages={"10": {"text_encode_s": 0.1, "denoise_s": 1.0, "decode_s": 0.4}},
    )
    model["memory"].update(
        torch_allocated_bytes=2**29,
        torch_reserved_bytes=2**30,
        nvml_process_bytes=None,
        nvml_device_bytes=2**31,
        rss_bytes=3 * 2**30,
        system_memory_bytes=5 * 2**30,
    )
    model["energy"] = {
        "overhead_j": 40.0,
        "per_step_j": 6.0,
        "n": 10,
        "r2": 0.98,
        "overhead_se_j": 1.5,
        "per_step_se_j": 0.1,
        "residual_std_j": 2.0,
        "average_power_w": 250.0,
        "source": "measured",
        "ref": "m",
    }
    doc["exclusions"] = [{"model_key": "a", "steps": 20, "reason": "status=oom", "rows": 3}]
    table = table_from_dict(doc)
    assert table.models["a"].latency.stages[10].decode_s == 0.4
    assert table.models["a"].memory.nvml_process_bytes is None
    assert table.models["a"].memory.rss_bytes == 3 * 2**30
    assert table.models["a"].energy.joules(20) == 40.0 + 6.0 * 20
    assert table.source_counts()["measured"] == 2 * 2 + 1 + 2 + 1 + 2  # cells, curve, latency, memory, energy
    assert table.exclusions[0].rows == 3
    path = save_table(table, tmp_path / "t.json")
    assert load_table(path) == table
    expected = copy.deepcopy(doc)
    del expected["models"]["a"]["memory"]["nvml_process_bytes"]  # a null rung is not written
    assert table_to_dict(table) == expected


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["models"]["a"]["latency"].update(step_p95_s=-1.0),
            "models.a.latency.step_p95_s: expected seconds >= 0, but got -1.0",
        ),
        (
            lambda d: d["models"]["a"]["latency"].update(stages={"10": {"text_encode_s": 0.1, "denoise_s": 1.0}}),
            "models.a.latency.stages.10.decode_s: missing field",
        ),
        (
            lambda d: d["models"]["a"]["memory"].update(torch_reserved_bytes=-5),
            f"models.a.memory.torch_reserved_bytes: expected bytes in [0, {2**44}], but got -5",
        ),
        (
            lambda d: d["models"]["a"]["memory"].update(rss_bytes=2**45),
            f"models.a.memory.rss_bytes: expected bytes in [0, {2**44}], but got {2**45}",
        ),
        (
            lambda d: d["models"]["a"].update(energy={"overhead_j": 1.0, "per_step_j": 0.5, "n": 3, "r2": None}),
            "models.a.energy.source: missing field",
        ),
        (
            lambda d: d["models"]["a"].update(
                energy={"overhead_j": 1.0, "per_step_j": -0.5, "n": 3, "r2": None, "source": "measured", "ref": "m"}
            ),
            "models.a.energy.per_step_j: expected a number >= 0, but got -0.5",
        ),
        (
            lambda d: d["models"]["a"].update(
                energy={"overhead_j": 1e9, "per_step_j": 1.0, "n": 3, "r2": None, "source": "measured", "ref": "m"}
            ),
            "models.a.energy.overhead_j: expected a number <= 3.6e+07, but got 1000000000.0",
        ),
        (
            lambda d: d["models"]["a"].update(
                energy={
                    "overhead_j": 1.0,
                    "per_step_j": 1.0,
                    "n": 3,
                    "r2": None,
                    "average_power_w": 2e4,
                    "source": "measured",
                    "ref": "m",
                }
            ),
            "models.a.energy.average_power_w: expected watts in [0, 10000], but got 20000.0",
        ),
        (
            lambda d: d["models"]["a"].update(energy=[1.0]),
            "models.a.energy: expected an object, but got list",
        ),
        (
            lambda d: d.update(exclusions=[{"model_key": "zz", "steps": 1, "reason": "x", "rows": 1}]),
            "exclusions[0].model_key: expected one of the table's models ['a'], but got 'zz'",
        ),
    ],
)
def test_invalid_optional_fields_name_the_field(edit: Any, message: str) -> None:
    doc = _minimal_doc()
    edit(doc)
    with pytest.raises(TableError, match=re.escape(message)):
        table_from_dict(doc, where="t.json")


def test_every_shipped_table_loads_unchanged(tmp_path: Path) -> None:
    shipped = sorted(data.path("tables").glob("*.json"))
    assert shipped
    for path in shipped:
        table = load_table(path)
        assert all(m.memory.rss_bytes is None for m in table.models.values())  # GPU and NPU tables
        assert save_table(table, tmp_path / path.name).read_bytes() == path.read_bytes()


def test_a_cell_without_standard_errors_gets_those_its_n_implies() -> None:
    doc = _minimal_doc()
    cell = doc["models"]["a"]["quality"]["Basic"]["10"]
    del cell["mean_se"], cell["std_se"]
    read = table_from_dict(doc).models["a"].quality["Basic"][10]
    # std = 3 is the ML spread of 5 scores: the sample SD is 3·√(5/4), its SE of the mean that over √5.
    assert read.mean_se == pytest.approx(3.0 * (5 / 4) ** 0.5 / 5**0.5)
    assert read.std_se == pytest.approx(3.0 / 8**0.5)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(mean_se=0.5), r"quality\.Basic\.10\.mean_se: 0\.5 contradicts n = 5 and std = 3"),
        (lambda c: c.update(std_se=2.0), r"quality\.Basic\.10\.std_se: 2 contradicts n = 5"),
        (lambda c: c.update(n=0, mean_se=None), r"quality\.Basic\.10\.mean_se: a cell from n = 0 images must state"),
        (lambda c: c.update(n=1, mean_se=1.0, std_se=-1.0), r"quality\.Basic\.10\.std_se: expected a finite"),
    ],
)
def test_standard_errors_that_contradict_n_are_refused(edit: Any, message: str) -> None:
    doc = _minimal_doc()
    edit(doc["models"]["a"]["quality"]["Basic"]["10"])
    with pytest.raises(TableError, match=message):
        table_from_dict(doc)


def test_a_derived_cell_keeps_the_width_its_rule_states() -> None:
    doc = _minimal_doc()
    doc["models"]["a"]["quality"]["Basic"]["10"].update(n=0, mean_se=1.25, std_se=0.5)
    cell = table_from_dict(table_to_dict(table_from_dict(doc))).models["a"].quality["Basic"][10]
    assert (cell.n, cell.mean_se, cell.std_se) == (0, 1.25, 0.5)
