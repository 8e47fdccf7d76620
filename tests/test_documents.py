"""Documents are read once, by their contract module: no other module indexes a plan or a calibration
table by its JSON keys.

``optimizer/plan_file.py`` reads a plan into a :class:`~genedge.optimizer.plan_file.PlanDocument` and
``calibrate/table_file.py`` a table into a :class:`~genedge.contract.table.CalibrationTable`; the
server, the load tester and the CLI use their attributes. The scan below finds, in their modules, a
subscript or ``.get`` with one of a plan's key names on a value reached through a name like ``plan``,
``entry`` or ``inputs`` (``plan["routing"]``, ``self.spec.plan["models"]``, ``entry.get("max_batch")``),
or with one of a table's top-level or per-model key names on a value reached through a name like
``table`` or ``calibration`` (``table["category_mapping"]``, ``spec.table.get("models")``). It does not
see a document held under another name, read by a :class:`~genedge.contract.fields.FieldReader`
outside the contract, or other documents read raw.
"""

from __future__ import annotations

import ast
import json
import re

import numpy as np
from conftest import ROOT

from genedge import data
from genedge.contract.table_file import load_table
from genedge.optimizer.model import Problem, Workload
from genedge.optimizer.plan_file import plan_inputs, plan_to_dict
from genedge.optimizer.planners import make_result

#: The folders whose modules take plans from the contract: the server, the load tester and the CLI.
SCANNED = ("serve", "genedge/cli")
#: Names a plan, one of its model entries or its inputs go by.
PLAN_NAMES = re.compile(r"(^|_)(plan|entry|inputs)($|_)")
#: Names a calibration table or one of its model entries goes by.
TABLE_NAMES = re.compile(r"(^|_)(table|calibration)($|_)")
#: Inputs that ``genedge plan`` writes only with a prompt file or a router's error cost.
OPTIONAL_INPUTS = {"prompts", "misrouting"}


def plan_keys() -> set[str]:
    """The key names of a plan as the writer makes them: top level, inputs, model entries, realization."""
    table = load_table(data.path("tables", "galaxy-s24.json"))
    workload = Workload(counts={"Basic": 4})
    problem = Problem.from_table(table, workload)
    result = make_result(problem, "sd21", [[0.0, 1.0]], [0, 0], np.array([0.0, 1.0]))
    inputs = plan_inputs("galaxy-s24", table.source_counts(), workload)
    document = plan_to_dict(problem, result, inputs=inputs, uncertainty={})
    entry = document["models"]["sd21"]
    return {*document, *document["inputs"], *OPTIONAL_INPUTS, *entry, *entry["realization"]}


def table_keys() -> set[str]:
    """The key names of every shipped table document: top level and model entries."""
    keys: set[str] = set()
    for path in sorted(data.path("tables", "galaxy-s24.json").parent.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        keys |= {*document, *(key for model in document["models"].values() for key in model)}
    return keys


def _names(node: ast.expr) -> list[str]:
    """The names along an access chain, outermost first (``self.spec.plan`` → plan, spec, self)."""
    names = []
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        if isinstance(node, ast.Attribute):
            names.append(node.attr)
        node = node.func if isinstance(node, ast.Call) else node.value
    if isinstance(node, ast.Name):
        names.append(node.id)
    return names


def _keyed_access(node: ast.AST) -> tuple[ast.expr, object] | None:
    """(the value indexed, the key) of ``x[KEY]`` or ``x.get(KEY, ...)``; None for anything else."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return node.value, node.slice.value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ):
        return node.func.value, node.args[0].value
    return None


def raw_reads(
    source: str, keys: set[str], names: re.Pattern[str], filename: str = "<source>", *, nearest: bool = False
) -> list[str]:
    """``file:line key`` for each of ``keys`` read by subscript or ``.get`` from a value reached through one
    of ``names`` in ``source`` (with ``nearest``, only through the name nearest the read: a table's
    free-form attributes, ``table.device["name"]``, hold keys of their own)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        access = _keyed_access(node)
        if access is None:
            continue
        value, key = access
        chain = _names(value)[:1] if nearest else _names(value)
        if key in keys and any(names.search(name) for name in chain):
            found.append(f"{filename}:{node.lineno} {key}")
    return found


def test_the_scan_catches_planted_raw_plan_reads():
    keys = plan_keys()
    assert {"routing", "models", "inputs", "predicted", "workload", "table_sha256", "share", "max_batch"} <= keys
    planted = """\
def serve(plan, table, entry, self):
    workload = plan["inputs"]["workload"]
    batch = entry.get("max_batch", 1)
    routed = self.spec.plan["routing"]
    raw = plan.raw["models"]
    fine = plan.inputs.workload, table["models"], entry.share, row["share"], plan.routed("Basic", "sd15")
"""
    assert sorted(raw_reads(planted, keys, PLAN_NAMES)) == [
        "<source>:2 inputs",
        "<source>:2 workload",
        "<source>:3 max_batch",
        "<source>:4 routing",
        "<source>:5 models",
    ]


def test_the_scan_catches_planted_raw_table_reads():
    keys = table_keys()
    assert {"models", "manifest", "category_mapping", "clip_convention", "resolution", "latency"} <= keys
    planted = """\
def serve(spec, table, plan_table_path, calibration, run):
    mapping = table["category_mapping"]
    runs = spec.table.get("manifest", {})
    side = table["models"]["sd15"]["resolution"]
    convention = read_manifest(path).table.get("clip_convention")
    model = calibration.get("models", {})
    fine = table.models, table.device["name"], run["resolution"], plan_table_path.get("x"), table.profile_settings()
"""
    assert sorted(raw_reads(planted, keys, TABLE_NAMES, nearest=True)) == [
        "<source>:2 category_mapping",
        "<source>:3 manifest",
        "<source>:4 models",
        "<source>:4 resolution",
        "<source>:5 clip_convention",
        "<source>:6 models",
    ]


def test_no_module_outside_the_contracts_indexes_a_plan_or_a_table_by_key():
    plan, table = plan_keys(), table_keys()
    paths = [path for folder in SCANNED for path in sorted((ROOT / folder).rglob("*.py"))]
    assert ROOT / "serve" / "spec.py" in paths and ROOT / "genedge" / "cli" / "serve.py" in paths
    found = []
    for path in paths:
        source, name = path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))
        found += raw_reads(source, plan, PLAN_NAMES, name) + raw_reads(source, table, TABLE_NAMES, name, nearest=True)
    assert found == []
