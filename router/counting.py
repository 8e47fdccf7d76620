"""Count every prompt of a prompt file per category: labelled rows by their label, the rest by a router.

Nothing is dropped silently: a row whose label the category mapping does not know (or every row,
when the file has no label column) is routed when a router is given, and counted as not placed
otherwise; :class:`PromptCounts` says how many of each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from genedge.contract.files import ArtifactError
from genedge.contract.mappings import label_to_category
from genedge.contract.prompts import PROMPT_COLUMN, PromptTable

__all__ = ["PromptCounts", "count_prompts", "require_fit"]


@dataclass(frozen=True)
class PromptCounts:
    """A prompt file's rows per category.

    Attributes:
        source: the prompt file.
        rows: rows in the file.
        label_column: the mapping's label column.
        labelled: category → rows whose label the mapping puts there.
        routed: category → other rows the router put there.
        not_placed: rows with no known label and no router to place them.
        router: the router's name, or None.
        served_mix: the router's P(true category | routed category), or None.
    """

    source: str
    rows: int
    label_column: str
    labelled: Mapping[str, int]
    routed: Mapping[str, int]
    not_placed: int
    router: str | None = None
    served_mix: Mapping[str, Mapping[str, float]] | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Requests per category: labelled plus routed, categories with none left out."""
        names = list(dict.fromkeys([*self.labelled, *self.routed]))
        totals = {c: self.labelled.get(c, 0) + self.routed.get(c, 0) for c in names}
        return {c: n for c, n in totals.items() if n > 0}

    def composition(self) -> dict[str, dict[str, float]] | None:
        """What each category's requests truly are, when served as counted (see
        :attr:`genedge.optimizer.Workload.composition`): labelled rows are their own category, routed
        ones the router's mixture. None when nothing was routed."""
        if not any(self.routed.values()) or self.served_mix is None:
            return None
        composition = {}
        for category, total in self.counts.items():
            shares = {category: self.labelled.get(category, 0) / total}
            routed_share = self.routed.get(category, 0) / total
            for true, p in self.served_mix[category].items():
                shares[true] = shares.get(true, 0.0) + routed_share * p
            composition[category] = {t: s for t, s in shares.items() if s > 0}
        return composition

    def workload(self, *, misrouting: bool = True) -> Any:
        """The counts as a :class:`~genedge.optimizer.Workload`; with ``misrouting`` (the default) the
        routed requests score as the router's mixture of true categories."""
        from genedge.optimizer.model import Workload

        return Workload(counts=self.counts, composition=self.composition() if misrouting else None)

    def summary(self) -> str:
        """One line: how many rows were labelled, routed and not placed."""
        labelled, routed = sum(self.labelled.values()), sum(self.routed.values())
        parts = [f"{self.rows:,} prompts from {self.source}: {labelled:,} labelled by {self.label_column}"]
        if self.router is not None:
            split = ", ".join(f"{c} {n:,}" for c, n in self.routed.items() if n)
            parts.append(f"{routed:,} routed by {self.router}" + (f" ({split})" if split else ""))
        if self.not_placed:
            parts.append(f"{self.not_placed:,} not placed (no label in the mapping and no router)")
        return ", ".join(parts)


def require_fit(router: Any, mapping: Mapping[str, Any]) -> None:
    """Refuse a :class:`~genedge.router.PromptRouter` that routes into another category mapping than ``mapping``.

    Raises:
        ValueError: naming the router's categories and mapping and the expected ones.
    """
    if not router.fits_mapping(mapping):
        raise ValueError(
            f"router {router.name!r} routes into the categories {list(router.categories)} of mapping "
            f"{router.mapping.get('name', '?')!r}, but the table's mapping {mapping.get('name', '?')!r} has "
            f"{list(mapping['labels'])}: train a router on this mapping (genedge router train)"
        )


def count_prompts(
    table: PromptTable,
    mapping: Mapping[str, Any],
    router: Any = None,
    progress: Callable[[int], Any] | None = None,
) -> PromptCounts:
    """Count a prompt table's rows per category of ``mapping``, routing rows without a known label.

    Args:
        table: the prompt file, as read by :func:`genedge.contract.read_prompt_file`.
        mapping: the category mapping.
        router: a :class:`~genedge.router.PromptRouter` into the same mapping, or None.
        progress: called with the number of prompts routed after each chunk, if given.

    Raises:
        ArtifactError: the file has no rows, rows to route but no prompt column, or places no row.
        ValueError: the router routes into another mapping.
    """
    if not table.rows:
        raise ArtifactError(table.source, "rows", "expected at least one prompt, but the file has only its header")
    if router is not None:
        require_fit(router, mapping)
    to_category = label_to_category(mapping)
    column = mapping["column"]
    labels = table.column(column) if column in table.columns else [""] * len(table.rows)
    categories = list(mapping["labels"])
    labelled = dict.fromkeys(categories, 0)
    unlabelled = []
    for row, label in enumerate(labels):
        if label in to_category:
            labelled[to_category[label]] += 1
        else:
            unlabelled.append(row)
    routed = dict.fromkeys(categories, 0)
    not_placed = len(unlabelled)
    if router is not None and unlabelled:
        prompts = table.column(PROMPT_COLUMN)
        predicted, _ = router.route([prompts[i] for i in unlabelled], progress)
        for category in predicted:
            routed[category] += 1
        not_placed = 0
    if not_placed == len(table.rows):
        raise ArtifactError(
            table.source,
            column,
            f"expected labels among {sorted(to_category)}, but no row has one; give a router to route them",
        )
    return PromptCounts(
        source=table.source,
        rows=len(table.rows),
        label_column=column,
        labelled=labelled,
        routed=routed,
        not_placed=not_placed,
        router=None if router is None else router.name,
        served_mix=None if router is None else router.served_mix(),
    )
