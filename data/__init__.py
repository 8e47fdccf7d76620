"""Files shipped with genedge: calibration tables, replica configs, workloads.

Paths are resolved with :func:`path`; nothing here is read at import time.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["path"]

_ROOT = Path(__file__).parent


def path(*parts: str) -> Path:
    """Return the path of a shipped data file, e.g. ``path("tables", "reference.json")``."""
    return _ROOT.joinpath(*parts)
