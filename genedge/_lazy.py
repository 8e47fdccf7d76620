"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package lists which of its modules defines each public name; a name is imported on first use, so
importing the package (or one light module of it) never pulls in its heavier siblings.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, modules: Mapping[str, Sequence[str]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__all__``, ``__getattr__`` and ``__dir__`` of a package that re-exports lazily.

    Args:
        package: the package's ``__name__``.
        modules: module → the public names it defines; a module starting with ``.`` is relative to ``package``.

    Returns:
        ``(__all__, __getattr__, __dir__)`` to bind in the package's namespace.

    Example:
        >>> __all__, __getattr__, __dir__ = lazy_exports(__name__, {".table": ("load_table",)})  # doctest: +SKIP
    """
    owner = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in owner:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(owner[name], package), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *owner})

    # Importing a submodule sets the package attribute of its name to the module, so a public name spelled
    # like its module (``anneal`` of ``.anneal``) would be replaced by the module: refuse it.
    clashing = sorted(name for name, module in owner.items() if module.rsplit(".", 1)[-1] == name)
    if clashing:
        raise ValueError(f"{package}: {clashing} are named like their modules; make those modules private (_name)")
    return sorted(owner), __getattr__, __dir__
