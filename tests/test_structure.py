"""The package's shape: no function longer than a reader can hold at once.

Complexity is ruff's job (C901 in pyproject.toml, run by CI); length is checked here, since ruff has no
rule for it.
"""

from __future__ import annotations

import ast

from conftest import ROOT

#: The folders installed as the ``genedge`` package (pyproject's package-dir).
PACKAGE_DIRS = ("genedge", "optimizer", "calibrate", "profiler", "router", "serve", "data")
#: Lines a function may span, decorators and docstring included.
MAX_FUNCTION_LINES = 80


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
