"""Documents are read once, by their contract module: no other module indexes a plan by its JSON keys.

``optimizer/plan_file.py`` reads a plan into a :class:`~genedge.optimizer.plan_file.PlanDocument`; the
server, the load tester and the CLI use its attributes. The scan below finds, in their modules, a
subscript or ``.get`` with one of the plan's key names on a value reached through a name like
``plan``, ``entry`` or ``inputs`` (``plan["routing"]``, ``self.spec.plan["models"]``,
``entry.get("max_batch")``). It does not see a plan held under another name, read by a
:class:`~genedge.contract.fields.FieldReader` outside the contract, or other documents read raw (the
calibration table in ``serve/spec.py`` is one).
"""

from __future__ import annotations

import ast
import re

import numpy as np
from conftest import ROOT

from genedge import data
from genedge.calibrate.table import load_table
from genedge.optimizer.plan_file import plan_inputs, plan_to_dict
from genedge.optimizer.problem import Problem
from genedge.optimizer.result import make_result
from genedge.optimizer.workload import Workload

#: The folders whose modules take plans from the contract: the server, the load tester and the CLI.
SCANNED = ("serve", "genedge/cli")
#: Names a plan, one of its model entries or its inputs go by.
PLAN_NAMES = re.compile(r"(^|_)(plan|entry|inputs)($|_)")
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


def raw_plan_reads(source: str, keys: set[str], filename: str = "<source>") -> list[str]:
    """``file:line key`` for each plan key read by subscript or ``.get`` from a plan-like name in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        access = _keyed_access(node)
        if access is None:
            continue
        value, key = access
        if key in keys and any(PLAN_NAMES.search(name) for name in _names(value)):
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
    assert sorted(raw_plan_reads(planted, keys)) == [
        "<source>:2 inputs",
        "<source>:2 workload",
        "<source>:3 max_batch",
        "<source>:4 routing",
        "<source>:5 models",
    ]


def test_no_module_outside_the_plan_contract_indexes_a_plan_by_key():
    keys = plan_keys()
    paths = [path for folder in SCANNED for path in sorted((ROOT / folder).rglob("*.py"))]
    assert ROOT / "serve" / "predict.py" in paths and ROOT / "genedge" / "cli" / "serve.py" in paths
    found = []
    for path in paths:
        found += raw_plan_reads(path.read_text(encoding="utf-8"), keys, str(path.relative_to(ROOT)))
    assert found == []
