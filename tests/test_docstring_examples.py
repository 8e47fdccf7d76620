"""Every example in a docstring of the package runs and prints what it shows (doctest)."""

from __future__ import annotations

import doctest
import importlib

import pytest
from conftest import PACKAGE_FOLDERS, ROOT


def _modules_with_examples() -> list[str]:
    names = []
    for folder, package in PACKAGE_FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            # A module whose every example is marked +SKIP has nothing to run.
            examples = [line for line in path.read_text(encoding="utf-8").splitlines() if ">>> " in line]
            if any("doctest: +SKIP" not in line for line in examples):
                parts = path.relative_to(ROOT / folder).with_suffix("").parts
                names.append(".".join((package, *parts)).removesuffix(".__init__"))
    return names


@pytest.mark.slow
@pytest.mark.parametrize("module", _modules_with_examples())
def test_docstring_examples_run_as_shown(module: str) -> None:
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(importlib.import_module(module), optionflags=flags, verbose=False)
    assert result.attempted > 0, f"no example of {module} ran"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {module} failed"
