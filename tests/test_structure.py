"""The package's shape: no function longer than a reader can hold at once, and an optimizer in four rooms.

Complexity is ruff's job (C901 in pyproject.toml, run by CI); length is checked here, since ruff has no
rule for it. The optimizer's rooms (system model, planners, simulation, analysis) are packages whose
``__init__`` lists their public names over private modules; code outside a room reaches it only through
those names (the tests, which check the internals, may import them).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util

import pytest
from conftest import CLIENT_DIRS, PACKAGE_FOLDERS, ROOT, python_sources

#: Lines a function may span, decorators and docstring included.
MAX_FUNCTION_LINES = 80
#: The optimizer's rooms, each a package with private modules behind its ``__all__``.
ROOMS = ("model", "planners", "simulation", "analysis")


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


def test_the_package_folders_are_pyprojects():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on
    with open(ROOT / "pyproject.toml", "rb") as handle:
        package_dir = tomllib.load(handle)["tool"]["setuptools"]["package-dir"]
    assert PACKAGE_FOLDERS == {folder: package for package, folder in package_dir.items()}


def test_no_function_in_the_package_is_over_80_lines():
    found = []
    for path in python_sources(PACKAGE_FOLDERS):
        found += long_functions(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert found == []


def _package_of(filename: str) -> str | None:
    """The package a source file lies in (``optimizer/model/_delay.py`` → ``genedge.optimizer.model``), or None
    outside the installed package (benchmarks, scripts)."""
    parts = filename.removesuffix(".py").split("/")
    if parts[0] not in PACKAGE_FOLDERS:
        return None
    dotted = parts if parts[0] == "genedge" else ["genedge", *parts]
    return ".".join(dotted[:-1])  # a package's __init__ lies in the package, as its modules do


def imported_modules(source: str, filename: str) -> list[tuple[int, str]]:
    """``(line, module)`` for each module an import in ``source`` may name, relative imports resolved:
    ``from a.b import c`` names ``a.b`` and ``a.b.c`` (``c`` may be a module)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(filename) or ""
                base = importlib.util.resolve_name("." * node.level + base, package) if package else base
            found += [(node.lineno, base), *((node.lineno, f"{base}.{alias.name}") for alias in node.names)]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def private_room_imports(source: str, filename: str) -> list[str]:
    """``file:line module`` for each import in ``source`` of a room's private module from outside that room.

    ``filename`` is the path relative to the repository root (``optimizer/model/_delay.py``), which says
    which room, if any, the source belongs to.
    """
    found: dict[int, str] = {}
    for line, module in imported_modules(source, filename):
        parts = module.split(".")
        if parts[:2] != ["genedge", "optimizer"] or len(parts) < 4 or parts[2] not in ROOMS:
            continue
        if parts[3].startswith("_") and not filename.startswith(f"optimizer/{parts[2]}/"):
            found.setdefault(line, f"{filename}:{line} {module}")
    return list(found.values())


def calibrate_imports(source: str, filename: str) -> list[str]:
    """``file:line module`` for each import in ``source`` of ``genedge.calibrate`` or a module of it."""
    lines = {
        line: module
        for line, module in imported_modules(source, filename)
        if module == "genedge.calibrate" or module.startswith("genedge.calibrate.")
    }
    return [f"{filename}:{line} {module}" for line, module in sorted(lines.items())]


def test_the_room_check_catches_planted_private_imports():
    planted = (
        "from genedge.optimizer.model._delay_models import OpenQueue\n"
        "from genedge.optimizer.planners import _exact\n"
        "import genedge.optimizer.analysis._uncertainty\n"
        "from genedge.optimizer.model import Problem\n"
    )
    assert private_room_imports(planted, "serve/predict.py") == [
        "serve/predict.py:1 genedge.optimizer.model._delay_models",
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
    for path in python_sources(CLIENT_DIRS):
        found += private_room_imports(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    assert found == []


def test_every_public_name_of_the_optimizer_and_its_rooms_resolves():
    for package in ("genedge.optimizer", *(f"genedge.optimizer.{room}" for room in ROOMS)):
        module = importlib.import_module(package)
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert missing == [], package


def test_the_import_checks_catch_relative_and_package_imports():
    planted = "from .model._delay_models import OpenQueue\nfrom genedge import calibrate\nfrom ..calibrate import fit\n"
    assert private_room_imports(planted, "optimizer/inputs.py") == [
        "optimizer/inputs.py:1 genedge.optimizer.model._delay_models"
    ]
    assert calibrate_imports(planted, "optimizer/inputs.py") == [
        "optimizer/inputs.py:2 genedge.calibrate",
        "optimizer/inputs.py:3 genedge.calibrate.fit",
    ]
    docstring = '"""Reads what genedge.calibrate writes: import nothing of it."""\n'
    assert calibrate_imports(docstring, "optimizer/x.py") == []


def test_the_optimizer_imports_nothing_of_calibrate():
    # The table it plans from is a contract document; calibrate is the stage that writes it.
    found = []
    for path in python_sources(["optimizer"]):
        found += calibrate_imports(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    assert found == []
