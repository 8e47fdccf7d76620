"""Prompt sets (PartiPrompts by default) and the category mappings that label each prompt.

A category mapping names a column of the prompt table and maps category names to that column's
labels; rows whose label no category claims are not selected. Mappings are JSON files under
``genedge/data/prompts/mappings`` (``paper4`` — the paper's four from ``Challenge`` —,
``challenge`` and ``category``).
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genedge.data import path as data_path
from genedge.profiler._imports import require
from genedge.profiler.registry import JsonRegistry

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
DEFAULT_MAPPING = "paper4"
P2_COLUMNS: tuple[str, ...] = ("Prompt", "Category", "Challenge", "Note")
_PROMPT_ID_PREFIX = "p2"
_REQUIRED_MAPPING_FIELDS = ("name", "column", "categories")


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
        sha256: SHA-256 of the whole source table serialized as tab-separated UTF-8 lines (header
            first, LF, trailing newline); for PartiPrompts.tsv this equals the file's own hash.
        category_mapping: Name of the category mapping applied.
        column: The column the mapping reads.
        prompts: The selected prompts, in source-row order.
    """

    name: str
    sha256: str
    category_mapping: str
    column: str
    prompts: tuple[Prompt, ...]

    @property
    def categories(self) -> list[str]:
        """Category names present in the set, in order of first appearance."""
        return list(dict.fromkeys(p.category for p in self.prompts))


def _check_mapping(mapping: dict[str, Any], file: Path) -> None:
    labels = [label for group in mapping["categories"].values() for label in group]
    if len(labels) != len(set(labels)):
        raise ValueError(f"{file}: field 'categories': expected each label in one category only, but got {labels}")


_MAPPINGS = JsonRegistry(
    "category mapping", "category mapping", [data_path("prompts", "mappings")], _REQUIRED_MAPPING_FIELDS, _check_mapping
)


def list_category_mappings() -> list[str]:
    """Names of the registered category mappings, sorted."""
    return _MAPPINGS.names()


def get_category_mapping(name: str) -> dict[str, Any]:
    """A copy of one category mapping: ``{"name", "column", "categories": {name: [labels]}, ...}``.

    Raises:
        ValueError: For an unknown name, listing the available ones.
    """
    return _MAPPINGS.get(name)


def add_category_mapping_path(path: str | Path) -> None:
    """Register another category-mapping JSON file or folder (validated on next use)."""
    _MAPPINGS.add_path(path)


def _read_table(source: str) -> Any:
    pandas = require("pandas")
    file = Path(source)
    if file.exists():
        suffix = file.suffix.lower()
        if suffix == ".tsv":
            # One P2 prompt begins with a double quote; csv quoting would strip it, so disable quoting.
            return pandas.read_csv(file, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
        if suffix == ".csv":
            return pandas.read_csv(file, dtype=str, keep_default_na=False)
        if suffix == ".parquet":
            return pandas.read_parquet(file).astype(str)
        raise ValueError(f"{file}: expected a .tsv, .csv or .parquet prompt file, but got suffix {file.suffix!r}")
    if "/" not in source or source.startswith((".", "/")):
        raise FileNotFoundError(
            f"Expected a prompt file or a datasets hub id, but {source!r} is neither an existing file nor 'org/name'"
        )
    dataset = require("datasets").load_dataset(source, split="train")
    return dataset.to_pandas().astype(str)


def _table_sha256(table: Any) -> str:
    digest = hashlib.sha256()
    digest.update(("\t".join(table.columns) + "\n").encode("utf-8"))
    for row in table.itertuples(index=False):
        digest.update(("\t".join(row) + "\n").encode("utf-8"))
    return digest.hexdigest()


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
        source: A datasets hub id (default ``nateraw/parti-prompts``) or a local ``.tsv`` (read with
            quoting disabled), ``.csv`` or ``.parquet`` file with a ``Prompt`` column.
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
    for needed in ("Prompt", column):
        if needed not in table.columns:
            raise ValueError(
                f"{source}: expected a column {needed!r} (category mapping {mapping!r} reads {column!r}), "
                f"but the columns are {list(table.columns)}"
            )
    label_to_category = {label: name for name, labels in spec["categories"].items() for label in labels}
    by_category: dict[str, list[int]] = {}
    for row, label in enumerate(table[column]):
        if label in label_to_category:
            by_category.setdefault(label_to_category[label], []).append(row)
    rng = numpy.random.default_rng(seed)
    if per_category is not None:
        by_category = {name: _subsample(rows, per_category, rng) for name, rows in by_category.items()}
    selected = sorted(row for rows in by_category.values() for row in rows)
    if limit is not None:
        selected = _subsample(selected, limit, rng)
    if not selected:
        raise ValueError(
            f"{source}: expected at least one prompt whose {column!r} label is one of "
            f"{sorted(label_to_category)} (mapping {mapping!r}), but got an empty prompt set from {len(table)} rows"
        )

    def optional(row: int, name: str) -> str | None:
        return str(table[name].iat[row]) if name in table.columns else None

    prompts = tuple(
        Prompt(
            prompt_id=f"{_PROMPT_ID_PREFIX}-{row:05d}",
            text=str(table["Prompt"].iat[row]),
            category=label_to_category[table[column].iat[row]],
            challenge=optional(row, "Challenge"),
            p2_category=optional(row, "Category"),
        )
        for row in selected
    )
    return PromptSet(name=source, sha256=_table_sha256(table), category_mapping=mapping, column=column, prompts=prompts)
