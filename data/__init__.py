"""Files shipped with genedge: calibration tables, replica configs, workloads.

Paths are resolved with :func:`path`; nothing here is read at import time. Shipped
calibration tables have names (their file stems under ``tables/``, e.g. ``reference-a100``):
:func:`shipped_tables` lists them and :func:`resolve_table` turns a name or a path into a file.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["path", "resolve_table", "shipped_tables"]

_ROOT = Path(__file__).parent


def path(*parts: str) -> Path:
    """Return the path of a shipped data file, e.g. ``path("tables", "reference.json")``."""
    return _ROOT.joinpath(*parts)


def shipped_tables() -> dict[str, Path]:
    """Shipped calibration tables: name (the file stem) → path, sorted by name."""
    return {p.stem: p for p in sorted(path("tables").glob("*.json"), key=lambda p: p.stem)}


def resolve_table(name_or_path: str | Path) -> Path:
    """The calibration table file that ``name_or_path`` names.

    An existing file wins; otherwise a shipped table's name (e.g. ``"galaxy-s24"``).

    Raises:
        ValueError: neither an existing file nor a shipped name; the message lists the shipped names.
    """
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    shipped = shipped_tables()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    if candidate.exists():
        raise ValueError(f"{str(name_or_path)!r} is a directory, not a calibration table: expected a JSON file")
    if candidate.suffix == ".json" or len(candidate.parts) > 1:
        raise ValueError(f"{str(name_or_path)!r}: no such calibration table file")
    raise ValueError(
        f"no calibration table {str(name_or_path)!r}: expected an existing file or a shipped table name, "
        f"one of {list(shipped)}"
    )
