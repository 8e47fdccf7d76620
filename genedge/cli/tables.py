"""``genedge tables``: list the calibration tables shipped with genedge.

Each shipped table has a name, its file stem (:func:`genedge.data.resolve_table` turns a
name or a path into the file). For each the command prints the device, the model keys, the
prompt categories, the share of the table's numbers that are derived by a rule rather than
measured or published, and whether it carries energy per image. Reading a table needs numpy only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "overview", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``genedge tables``."""
    parser = subparsers.add_parser(
        "tables",
        help="list the calibration tables shipped with genedge, by name",
        description=(
            "List the calibration tables shipped with genedge: name (the file stem; --json also gives the path), "
            "device, models, prompt categories, the share of numbers derived by rule, and whether energy per "
            "image is included."
        ),
    )
    parser.add_argument(
        "--json", action="store_true", help="print the same facts as a JSON list (one object per table)"
    )
    parser.set_defaults(func=run)


def overview(name: str, path: Path) -> dict[str, Any]:
    """The facts ``genedge tables`` shows about one table (loaded and validated from ``path``).

    ``derived_share`` is the fraction of the table's sourced numbers (see
    :meth:`~genedge.contract.table.CalibrationTable.source_counts`) that are derived by a rule;
    ``energy_models`` the models with an energy line, and ``energy`` whether every model has one.
    """
    from genedge.contract.table_file import load_table

    table = load_table(path)
    counts = table.source_counts()
    total = sum(counts.values())
    energy_models = [key for key, model in table.models.items() if model.energy is not None]
    return {
        "name": name,
        "path": str(path),
        "device": table.device["name"],
        "models": list(table.models),
        "categories": list(table.categories),
        "numbers": total,
        "derived_share": counts["derived"] / total if total else 0.0,
        "energy": len(energy_models) == len(table.models),
        "energy_models": energy_models,
    }


def _energy_text(row: dict[str, Any]) -> str:
    if row["energy"]:
        return "yes"
    return ",".join(row["energy_models"]) or "no"


def run(args: argparse.Namespace) -> int:
    """Print one line (or JSON object) per shipped table."""
    from genedge.data import shipped_tables

    rows = [overview(name, path) for name, path in shipped_tables().items()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("name", "device", "models", "categories", "derived", "energy")
    lines = [
        (
            row["name"],
            row["device"],
            ",".join(row["models"]),
            ",".join(row["categories"]),
            f"{100 * row['derived_share']:.0f}%",
            _energy_text(row),
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in (header, *lines)) for i in range(len(header))]
    for cells in (header, *lines):
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip())
    return 0
