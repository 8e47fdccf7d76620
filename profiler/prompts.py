"""Prompt sets (PartiPrompts by default), labelled by a category mapping.

The prompt-file reader and the mappings are the contract's (:mod:`genedge.contract.prompts`,
:mod:`genedge.contract.mappings`); this module selects and labels the prompts a run measures.
Rows whose label no category claims are not selected.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genedge.contract.files import ArtifactError
from genedge.contract.mappings import (
    DEFAULT_MAPPING,
    add_category_mapping_path,
    get_category_mapping,
    label_to_category,
    list_category_mappings,
)
from genedge.contract.prompts import PROMPT_COLUMN, PromptTable, read_prompt_file
from genedge.profiler._imports import require

__all__ = [
    "DEFAULT_PROMPT_SOURCE",
    "DEFAULT_MAPPING",
    "P2_COLUMNS",
    "Prompt",
    "PromptSet",
    "list_category_mappings",
    "get_category_mapping",
    "add_category_mapping_path",
    "load_prompt_set",
]

logger = logging.getLogger(__name__)

DEFAULT_PROMPT_SOURCE = "nateraw/parti-prompts"
P2_COLUMNS: tuple[str, ...] = (PROMPT_COLUMN, "Category", "Challenge", "Note")
_PROMPT_ID_PREFIX = "p2"


@dataclass(frozen=True)
class Prompt:
    """One selected prompt.

    Attributes:
        prompt_id: Stable id ``p2-<row>``, the 0-based row index in the source table.
        text: The exact prompt text.
        category: The mapped category name.
        challenge: The P2 ``Challenge`` label, if the table has that column.
        p2_category: The P2 ``Category`` label, if the table has that column.
    """

    prompt_id: str
    text: str
    category: str
    challenge: str | None
    p2_category: str | None


@dataclass(frozen=True)
class PromptSet:
    """A selected, labelled prompt set.

    Attributes:
        name: The source (hub id or file path) as given.
        sha256: SHA-256 of the whole source table (see :meth:`genedge.contract.PromptTable.sha256`).
        category_mapping: The category mapping applied (``name``, ``column``, ``labels``).
        prompts: The selected prompts, in source-row order.
    """

    name: str
    sha256: str
    category_mapping: Mapping[str, Any]
    prompts: tuple[Prompt, ...]

    @property
    def column(self) -> str:
        """The column the mapping reads."""
        return self.category_mapping["column"]

    @property
    def categories(self) -> list[str]:
        """Category names present in the set, in order of first appearance."""
        return list(dict.fromkeys(p.category for p in self.prompts))


def _read_table(source: str) -> PromptTable:
    if Path(source).exists():
        return read_prompt_file(source)
    if "/" not in source or source.startswith((".", "/")):
        raise FileNotFoundError(
            f"Expected a prompt file or a datasets hub id, but {source!r} is neither an existing file nor 'org/name'"
        )
    frame = require("datasets").load_dataset(source, split="train").to_pandas()
    columns = tuple(str(c) for c in frame.columns)
    rows = tuple(tuple("" if v is None else str(v) for v in row) for row in frame.itertuples(index=False))
    return PromptTable(source, columns, rows)


def _subsample(rows: list[int], n: int, rng: Any) -> list[int]:
    if n >= len(rows):
        return rows
    return sorted(rng.choice(rows, size=n, replace=False).tolist())


def load_prompt_set(
    source: str = DEFAULT_PROMPT_SOURCE,
    *,
    mapping: str = DEFAULT_MAPPING,
    per_category: int | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> PromptSet:
    """Load a prompt table, label each row by a category mapping and select a subset.

    Args:
        source: A datasets hub id (default ``nateraw/parti-prompts``) or a local ``.tsv`` (read
            exactly), ``.csv`` (standard quoting) or ``.parquet`` file with a ``Prompt`` column
            (see :func:`genedge.contract.read_prompt_file`).
        mapping: Category mapping name (see :func:`list_category_mappings`).
        per_category: Keep at most this many prompts per category, sampled with ``seed``.
        limit: Then keep at most this many prompts overall, sampled with ``seed``.
        seed: Seed of the subsampling (``numpy.random.default_rng``).

    Returns:
        The selected prompts in source-row order.

    Raises:
        ValueError: When the table lacks the ``Prompt`` column or the mapped column, when
            ``per_category``/``limit`` is below 1, or when no prompt is selected.
    """
    numpy = require("numpy")
    for option, value in (("per_category", per_category), ("limit", limit)):
        if value is not None and value < 1:
            raise ValueError(f"Expected {option} ≥ 1, but got {value}")
    spec = get_category_mapping(mapping)
    table = _read_table(source)
    column = spec["column"]
    texts = table.column(PROMPT_COLUMN)
    try:
        labels = table.column(column)
    except ArtifactError as err:
        raise ArtifactError(
            source, column, f"category mapping {mapping!r} reads this column, but the columns are {list(table.columns)}"
        ) from err
    to_category = label_to_category(spec)
    by_category: dict[str, list[int]] = {}
    for row, label in enumerate(labels):
        if label in to_category:
            by_category.setdefault(to_category[label], []).append(row)
    rng = numpy.random.default_rng(seed)
    if per_category is not None:
        by_category = {name: _subsample(rows, per_category, rng) for name, rows in by_category.items()}
    selected = sorted(row for rows in by_category.values() for row in rows)
    if limit is not None:
        selected = _subsample(selected, limit, rng)
    if not selected:
        raise ValueError(
            f"{source}: expected at least one prompt whose {column!r} label is one of "
            f"{sorted(to_category)} (mapping {mapping!r}), but got an empty prompt set from {len(table.rows)} rows"
        )
    optional = {name: table.column(name) if name in table.columns else None for name in ("Challenge", "Category")}
    prompts = tuple(
        Prompt(
            prompt_id=f"{_PROMPT_ID_PREFIX}-{row:05d}",
            text=texts[row],
            category=to_category[labels[row]],
            challenge=None if optional["Challenge"] is None else optional["Challenge"][row],
            p2_category=None if optional["Category"] is None else optional["Category"][row],
        )
        for row in selected
    )
    return PromptSet(name=source, sha256=table.sha256(), category_mapping=spec, prompts=prompts)
