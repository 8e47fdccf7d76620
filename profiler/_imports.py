"""Lazy imports of heavy libraries (the profiler's, the server's), with an install hint when one is missing."""

from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType

__all__ = ["require"]

logger = logging.getLogger(__name__)


@functools.cache
def require(module: str, extra: str = "profile") -> ModuleType:
    """Import ``module`` on first use and cache it.

    Args:
        module: Import name, e.g. ``"diffusers"``.
        extra: the genedge extra that installs it, named in the error.

    Returns:
        The imported module.

    Raises:
        ImportError: When the module is not installed, naming the genedge extra that provides it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        part = "profiler" if extra == "profile" else extra
        hint = f'pip install "genedge[{extra}]"'
        raise ImportError(f"genedge.{part} needs {module!r}; install it with `{hint}`.") from err
