"""Lazy imports of the heavy libraries the profiler needs, with an install hint when one is missing."""

from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType

__all__ = ["require"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = 'pip install "genedge[profile]"'


@functools.cache
def require(module: str) -> ModuleType:
    """Import ``module`` on first use and cache it.

    Args:
        module: Import name, e.g. ``"diffusers"``.

    Returns:
        The imported module.

    Raises:
        ImportError: When the module is not installed, naming the genedge extra that provides it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"genedge.profiler needs {module!r}; install it with `{_INSTALL_HINT}`.") from err
