"""A router's files: the labelled prompts it trains on, the rows it routes, and a cross-validation's reports.

``genedge router train``, ``eval`` and ``predict`` read and write through these, so a notebook user
trains on the same rows and writes the same files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from genedge.contract.prompts import PromptTable

__all__ = [
    "ROUTED_SUFFIXES",
    "TrainingData",
    "check_routed_path",
    "evaluation_document",
    "training_data",
    "write_evaluation",
    "write_routed",
]

#: The file types :func:`write_routed` writes, by suffix.
ROUTED_SUFFIXES = (".parquet", ".csv", ".tsv")


@dataclass(frozen=True)
class TrainingData:
    """The rows of a prompt file a router learns from.

    Attributes:
        mapping: the category mapping (validated).
        prompts: the prompts whose label the mapping knows.
        categories: their categories, in the same order.
        source: provenance recorded in the router: the file's name, sha256 and row count.
    """

    mapping: dict[str, Any]
    prompts: list[str]
    categories: list[str]
    source: dict[str, Any]


def training_data(path: str | os.PathLike[str], mapping: str | os.PathLike[str]) -> TrainingData:
    """The labelled rows of a prompt file under a category mapping.

    Args:
        path: the prompt file (TSV/CSV/Parquet) with a Prompt column and the mapping's label column.
        mapping: a registered mapping's name (``paper4``, ``challenge``, ``category``) or a mapping file.

    Raises:
        ArtifactError: no row carries a label the mapping knows (or the file lacks a column).
    """
    from genedge.contract.files import ArtifactError
    from genedge.contract.mappings import load_category_mapping
    from genedge.contract.prompts import read_prompt_file
    from genedge.router.model import labelled_prompts

    categories_mapping = load_category_mapping(mapping)
    table = read_prompt_file(path)
    prompts, categories = labelled_prompts(table, categories_mapping)
    if not prompts:
        raise ArtifactError(
            str(path),
            categories_mapping["column"],
            f"expected rows labelled {sorted(categories_mapping['labels'])}, but none is",
        )
    source = {"file": Path(path).name, "sha256": table.sha256(), "rows": len(table.rows)}
    return TrainingData(categories_mapping, prompts, categories, source)


def check_routed_path(path: Path) -> None:
    """Refuse an output file :func:`write_routed` cannot write (before any routing).

    Raises:
        ValueError: a suffix outside :data:`ROUTED_SUFFIXES`.
    """
    if path.suffix.lower() not in ROUTED_SUFFIXES:
        raise ValueError(f"--out: expected a {', '.join(ROUTED_SUFFIXES)} file, but got {path.name!r}")


def write_routed(table: PromptTable, categories: Sequence[str], proba: np.ndarray, path: Path) -> Path:
    """Write a prompt file's rows with their routing, atomically: Parquet, CSV or TSV by ``path``'s suffix.

    The file's columns, then ``category`` (the most probable), ``probability`` (its probability) and
    one ``p_CATEGORY`` column per category.

    Args:
        table: the prompt file as read.
        categories: the router's categories (the columns of ``proba``).
        proba: P(category | prompt), one row per row of ``table``.
        path: the output file.

    Raises:
        ValueError: a suffix outside :data:`ROUTED_SUFFIXES`.
    """
    import pandas as pd

    from genedge.contract.files import write_bytes_atomic

    check_routed_path(path)
    frame = pd.DataFrame(list(table.rows), columns=list(table.columns))
    best = proba.argmax(axis=1)
    frame["category"] = [categories[i] for i in best]
    frame["probability"] = proba[range(len(best)), best]
    for i, category in enumerate(categories):
        frame[f"p_{category}"] = proba[:, i]
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        data = frame.to_parquet(index=False)
    else:
        data = frame.to_csv(index=False, sep="\t" if suffix == ".tsv" else ",", lineterminator="\n").encode("utf-8")
    return write_bytes_atomic(path, data)


def evaluation_document(
    mapping: Mapping[str, Any], prompts: int, folds: int, seed: int, reports: Mapping[str, Any]
) -> dict[str, Any]:
    """A nested cross-validation's reports as JSON-ready data (``genedge router eval --out``).

    Args:
        mapping: the category mapping.
        prompts: the number of labelled prompts.
        folds: k of the outer and inner stratified k-fold.
        seed: the outer fold assignment's seed.
        reports: backend (and the baselines ``"length"`` and ``"majority"``) →
            :class:`~genedge.router.NestedCrossValidation` (with the C per outer fold), or a plain
            :class:`~genedge.router.ClassificationReport`.
    """
    return {
        "mapping": mapping,
        "prompts": prompts,
        "folds": folds,
        "seed": seed,
        "reports": {name: report.to_dict() for name, report in reports.items()},
    }


def write_evaluation(document: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write :func:`evaluation_document`'s result as JSON, atomically."""
    from genedge.contract.files import write_text_atomic

    return write_text_atomic(path, json.dumps(document, indent=1) + "\n")
