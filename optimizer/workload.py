"""Workloads: requests per prompt category, in one planning window or per second."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genedge.contract.files import ArtifactError
from genedge.contract.mappings import label_to_category
from genedge.contract.prompts import read_prompt_file

__all__ = ["Workload"]


@dataclass(frozen=True)
class Workload:
    """Requests per prompt category: in one planning window, or per second.

    Attributes:
        counts: category → number of requests per window (whole numbers ≥ 0), or, with
            ``per_second``, arrival rate λ_c in requests per second (≥ 0); at least one > 0.
        per_second: whether ``counts`` are rates (the open-arrival delay model plans for them).
    """

    counts: Mapping[str, float]
    per_second: bool = False

    def __post_init__(self) -> None:
        if not self.counts:
            raise ValueError("Expected at least one category in the workload, but got none")
        for category, count in self.counts.items():
            if not isinstance(category, str) or not category.strip():
                raise ValueError(f"Expected category names, but got {category!r}")
            if not isinstance(count, (int, float)) or isinstance(count, bool) or not math.isfinite(count) or count < 0:
                raise ValueError(f"Expected a request count >= 0 for category {category!r}, but got {count!r}")
            if not self.per_second and not float(count).is_integer():
                raise ValueError(f"Expected a whole number of requests for category {category!r}, but got {count!r}")
        if sum(self.counts.values()) <= 0:
            raise ValueError(f"Expected at least one request in the workload, but got {dict(self.counts)}")

    @classmethod
    def from_rates(cls, rates: Mapping[str, float]) -> Workload:
        """Build a workload of arrival rates ``{category: requests per second}``."""
        return cls(counts=dict(rates), per_second=True)

    def as_rates(self, window_s: float) -> Workload:
        """The same demand as rates: N requests per window of ``window_s`` seconds is N / window_s per second."""
        if self.per_second:
            return self
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"Expected a window length > 0 seconds, but got {window_s}")
        return Workload.from_rates({c: n / window_s for c, n in self.counts.items()})

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
    def from_prompt_file(cls, path: str | Path, mapping: Mapping[str, Any]) -> Workload:
        """Count the prompts of a prompt file per category.

        Args:
            path: a prompt file (TSV, CSV or Parquet with a header; see
                :func:`genedge.contract.read_prompt_file`).
            mapping: a category mapping (``column`` and ``labels``); rows with other labels are not counted.

        Raises:
            ArtifactError: the file is malformed or lacks the mapping's column, or no row maps to a category.
        """
        table = read_prompt_file(path)
        to_category = label_to_category(mapping)
        counts: dict[str, int] = {}
        for label in table.column(mapping["column"]):
            category = to_category.get(label)
            if category is not None:
                counts[category] = counts.get(category, 0) + 1
        if not counts:
            raise ArtifactError(
                str(path), mapping["column"], f"expected labels among {sorted(to_category)}, but no row has one"
            )
        return cls(counts=counts)

    def scaled(self, total: int) -> Workload:
        """The same category mix with ``total`` requests."""
        if self.per_second:
            raise ValueError("Expected a workload of counts to scale, but this one gives rates")
        return Workload.from_mix(self.counts, total)

    def sha256(self) -> str:
        """Hash of the workload, written into plans to identify their inputs."""
        document: dict[str, Any] = dict(self.counts)
        if self.per_second:  # counts keep their old hash; rates are told apart from counts
            document = {"per_second": document}
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
