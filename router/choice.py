"""Which prompt router to use: 'auto', 'none', a shipped router's name or a router file, for a category mapping.

``genedge plan`` (and the commands that take its options) and ``genedge serve`` both take a
``--router`` choice; this module decides it once, so a notebook user gets the same router.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from genedge.contract.prompts import PromptTable
from genedge.router.counting import PromptCounts, count_prompts, require_fit
from genedge.router.model import PromptRouter, default_router_path, load_router

__all__ = ["AUTO", "NONE", "router_path", "choose_router", "count_routed"]

#: The shipped TF-IDF router of the category mapping, where one fits it.
AUTO = "auto"
#: No router: rows or requests without a known label are not placed.
NONE = "none"


def router_path(choice: str | os.PathLike[str], mapping: Mapping[str, Any]) -> Path | None:
    """The router file that ``choice`` names for ``mapping``, or None for no router.

    Args:
        choice: ``"auto"`` (the shipped TF-IDF router that routes into ``mapping``; None where none
            does), ``"none"``, the name of a shipped router (see ``genedge router list``) or a router
            JSON file.
        mapping: the category mapping the router must route into (a calibration table's).

    Raises:
        ValueError: an unknown name or missing file (listing the shipped names), or a router that
            routes into another mapping.
        RouterError: the file is not a valid router (naming the field).
    """
    router = _chosen(choice, mapping)
    return None if router is None else router[0]


def choose_router(choice: str | os.PathLike[str], mapping: Mapping[str, Any]) -> PromptRouter | None:
    """The router that ``choice`` names for ``mapping``, loaded, or None (see :func:`router_path`)."""
    router = _chosen(choice, mapping)
    return None if router is None else router[1]


def _chosen(choice: str | os.PathLike[str], mapping: Mapping[str, Any]) -> tuple[Path, PromptRouter] | None:
    if choice == NONE:
        return None
    if choice == AUTO:
        path = default_router_path(mapping)
        return None if path is None else (path, load_router(path))
    from genedge.data import resolve_router

    path = resolve_router(choice)
    router = load_router(path)
    require_fit(router, mapping)
    return path, router


def count_routed(
    prompts: PromptTable,
    mapping: Mapping[str, Any],
    router: str | os.PathLike[str] = AUTO,
    progress: Callable[[int], Any] | None = None,
) -> PromptCounts:
    """Count every row of a prompt file per category of ``mapping``: by its label, else by the chosen router.

    Args:
        prompts: the prompt file, as read by :func:`genedge.contract.prompts.read_prompt_file`.
        mapping: the category mapping (a calibration table's ``category_mapping``).
        router: the router choice for rows without a known label (see :func:`router_path`).
        progress: called with the number of prompts routed after each chunk, if given.

    Returns:
        The counts; :meth:`PromptCounts.workload` turns them into a workload.

    Raises:
        ValueError: under ``"auto"``, rows without a known label while no shipped router fits the
            mapping; or a router choice :func:`router_path` refuses.
        ArtifactError: the file has no rows or places none.
    """
    chosen = choose_router(router, mapping)
    counts = count_prompts(prompts, mapping, chosen, progress)
    if router == AUTO and chosen is None and counts.not_placed:
        raise ValueError(
            f"{prompts.source}: {counts.not_placed} rows have no label of the table's mapping "
            f"{mapping.get('name', '?')!r} and no shipped router fits it: train one (genedge router train) and "
            f"pass --router FILE, or --router none to leave them out"
        )
    return counts
