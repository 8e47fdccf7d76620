"""Workloads: requests per prompt category in one planning window."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Workload"]


@dataclass(frozen=True)
class Workload:
    """Requests per prompt category in one planning window.

    Attributes:
        counts: category → number of requests (≥ 0; at least one > 0).
    """

    counts: Mapping[str, float]

    def __post_init__(self) -> None:
        if not self.counts:
            raise ValueError("Expected at least one category in the workload, but got none")
        for category, count in self.counts.items():
            if not isinstance(count, (int, float)) or isinstance(count, bool) or not math.isfinite(count) or count < 0:
                raise ValueError(f"Expected a request count >= 0 for category {category!r}, but got {count!r}")
        if sum(self.counts.values()) <= 0:
            raise ValueError(f"Expected at least one request in the workload, but got {dict(self.counts)}")

    @classmethod
    def from_counts(cls, counts: Mapping[str, float]) -> Workload:
        """Build a workload from ``{category: count}``."""
        return cls(counts=dict(counts))

    @classmethod
    def from_mix(cls, mix: Mapping[str, float], total: int) -> Workload:
        """Split ``total`` requests over categories in proportion to ``mix``, as integers.

        Uses largest-remainder rounding, so the counts add up to ``total`` exactly.
        """
        if total <= 0:
            raise ValueError(f"Expected a total number of requests > 0, but got {total}")
        names = list(mix)
        weights = np.array([mix[n] for n in names], dtype=float)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"Expected non-negative category weights with a positive sum, but got {dict(mix)}")
        exact = weights / weights.sum() * total
        counts = np.floor(exact).astype(int)
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[: total - counts.sum()]] += 1
        return cls(counts={n: int(c) for n, c in zip(names, counts)})

    @classmethod
    def from_prompt_file(cls, path: str | Path, mapping: Mapping[str, str], column: str) -> Workload:
        """Count the prompts of a TSV/CSV file per category.

        Args:
            path: a prompt file with a header row (tab-separated for ``.tsv``, else comma).
            mapping: label in ``column`` → category name; rows with other labels are ignored.
            column: the column whose labels are mapped (e.g. ``"Challenge"``).

        Raises:
            ValueError: the column is missing or no row maps to a category.
        """
        import csv

        path = Path(path)
        delimiter = "\t" if path.suffix.lower() in {".tsv", ".tab"} else ","
        counts: dict[str, int] = {}
        with path.open(encoding="utf-8", newline="") as handle:
            # Quoting off: one PartiPrompts prompt starts with a double quote.
            reader = csv.DictReader(handle, delimiter=delimiter, quoting=csv.QUOTE_NONE)
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise ValueError(f"{path}: expected a column {column!r}, but the header has {reader.fieldnames}")
            for row in reader:
                category = mapping.get(row[column])
                if category is not None:
                    counts[category] = counts.get(category, 0) + 1
        if not counts:
            raise ValueError(f"{path}: no row's {column!r} label is one of {sorted(mapping)}")
        return cls(counts=counts)

    def scaled(self, total: int) -> Workload:
        """The same category mix with ``total`` requests."""
        return Workload.from_mix(self.counts, total)

    def sha256(self) -> str:
        """Hash of the workload, written into plans to identify their inputs."""
        return hashlib.sha256(json.dumps(dict(self.counts), sort_keys=True).encode()).hexdigest()
