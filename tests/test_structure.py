"""The package's shape: no function longer than a reader can hold at once, and an optimizer in four rooms.

Complexity is ruff's job (C901 in pyproject.toml, run by CI); length is checked here, since ruff has no
rule for it. The optimizer's rooms (system model, planners, simulation, analysis) are packages whose
``__init__`` lists their public names over private modules; code outside a room reaches it only through
those names (the tests, which check the internals, may import them).
"""

from __future__ import annotations

import ast
import importlib

from conftest import ROOT

#: The folders installed as the ``genedge`` package (pyproject's package-dir).
PACKAGE_DIRS = ("genedge", "optimizer", "calibrate", "profiler", "router", "serve", "data")
#: Lines a function may span, decorators and docstring included.
MAX_FUNCTION_LINES = 80
#: The optimizer's rooms, each a package with private modules behind its ``__all__``.
ROOMS = ("model", "planners", "simulation", "analysis")
#: Code that uses the package as a user does: the package itself, the benchmarks and the scripts.
CLIENT_DIRS = (*PACKAGE_DIRS, "benchmarks", "scripts")


def long_functions(source: str, filename: str = "<source>") -> list[str]:
    """``file:line name (n lines)`` for each function or method in ``source`` over :data:`MAX_FUNCTION_LINES`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lines = node.end_lineno - first + 1
            if lines > MAX_FUNCTION_LINES:
                found.append(f"{filename}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_the_length_check_catches_a_planted_long_function():
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    planted = f"def short():\n    return 1\n\n\nclass C:\n    def long(self):\n{body}\n"
    assert long_functions(planted) == [f"<source>:6 long ({MAX_FUNCTION_LINES + 1} lines)"]


def test_no_function_in_the_package_is_over_80_lines():
    found = []
    for folder in PACKAGE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            found += long_functions(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert found == []


def private_room_imports(source: str, filename: str) -> list[str]:
    """``file:line module`` for each import in ``source`` of a room's private module from outside that room.

    ``filename`` is the path relative to the repository root (``optimizer/model/_delay.py``), which says
    which room, if any, the source belongs to.
    """
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        modules = []
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        for module in modules:
            parts = module.split(".")
            if parts[:2] != ["genedge", "optimizer"] or len(parts) < 4 or parts[2] not in ROOMS:
                continue
            if parts[3].startswith("_") and not filename.startswith(f"optimizer/{parts[2]}/"):
                found.append(f"{filename}:{node.lineno} {module}")
                break
    return found


def test_the_room_check_catches_planted_private_imports():
    planted = (
        "from genedge.optimizer.model._delay import OpenQueue\n"
        "from genedge.optimizer.planners import _exact\n"
        "import genedge.optimizer.analysis._uncertainty\n"
        "from genedge.optimizer.model import Problem\n"
    )
    assert private_room_imports(planted, "serve/predict.py") == [
        "serve/predict.py:1 genedge.optimizer.model._delay",
        "serve/predict.py:2 genedge.optimizer.planners._exact",
        "serve/predict.py:3 genedge.optimizer.analysis._uncertainty",
    ]
    # Inside its own room a module uses its siblings directly; another room may not.
    assert private_room_imports(planted, "optimizer/model/_system.py") == [
        "optimizer/model/_system.py:2 genedge.optimizer.planners._exact",
        "optimizer/model/_system.py:3 genedge.optimizer.analysis._uncertainty",
    ]


def test_the_optimizer_rooms_are_reached_only_through_their_public_names():
    found = []
    for folder in CLIENT_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            found += private_room_imports(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    assert found == []


def test_every_public_name_of_the_optimizer_and_its_rooms_resolves():
    for package in ("genedge.optimizer", *(f"genedge.optimizer.{room}" for room in ROOMS)):
        module = importlib.import_module(package)
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert missing == [], package


def test_the_optimizer_imports_nothing_of_calibrate():
    # The table it plans from is a contract document; calibrate is the stage that writes it.
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "optimizer").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "genedge.calibrate" in line and ("import" in line or line.lstrip().startswith("from"))
    ]
    assert found == []
