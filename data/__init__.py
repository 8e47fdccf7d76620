"""Files shipped with genedge: calibration tables, prompt routers, replica configs, workloads.

Paths are resolved with :func:`path`; nothing here is read at import time. Shipped calibration
tables and routers have names (their file stems under ``tables/`` and ``routers/``, e.g.
``reference-a100`` and ``paper4-tfidf``): :func:`shipped_tables` and :func:`shipped_routers` list
them, and :func:`resolve_table` and :func:`resolve_router` turn a name or a path into a file.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["path", "resolve_router", "resolve_table", "shipped_routers", "shipped_tables"]

_ROOT = Path(__file__).parent


def path(*parts: str) -> Path:
    """Return the path of a shipped data file, e.g. ``path("tables", "reference.json")``."""
    return _ROOT.joinpath(*parts)


def _shipped(folder: str) -> dict[str, Path]:
    return {p.stem: p for p in sorted(path(folder).glob("*.json"), key=lambda p: p.stem)}


def shipped_tables() -> dict[str, Path]:
    """Shipped calibration tables: name (the file stem) → path, sorted by name."""
    return _shipped("tables")


def shipped_routers() -> dict[str, Path]:
    """Shipped prompt routers: name (the file stem) → path, sorted by name."""
    return _shipped("routers")


def _resolve(name_or_path: str | Path, shipped: dict[str, Path], what: str, listing: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    if candidate.exists():
        kind = "a directory" if candidate.is_dir() else "not a regular file (a FIFO, a device or a socket)"
        raise ValueError(f"{str(name_or_path)!r} is {kind}, not a {what}: expected a JSON file")
    if candidate.suffix == ".json" or len(candidate.parts) > 1:
        raise ValueError(f"{str(name_or_path)!r}: no such {what} file")
    raise ValueError(
        f"no {what} {str(name_or_path)!r}: expected an existing file or a shipped {what} name, "
        f"one of {list(shipped)} ({listing})"
    )


def resolve_table(name_or_path: str | Path) -> Path:
    """The calibration table file that ``name_or_path`` names.

    An existing file wins; otherwise a shipped table's name (e.g. ``"galaxy-s24"``).

    Raises:
        ValueError: neither an existing file nor a shipped name; the message lists the shipped names.
    """
    return _resolve(name_or_path, shipped_tables(), "calibration table", "see 'genedge tables'")


def resolve_router(name_or_path: str | Path) -> Path:
    """The prompt router file that ``name_or_path`` names: an existing file, or a shipped router's name
    (e.g. ``"paper4-tfidf"``).

    Raises:
        ValueError: neither an existing file nor a shipped name; the message lists the shipped names.
    """
    return _resolve(name_or_path, shipped_routers(), "prompt router", "see 'genedge router list'")
