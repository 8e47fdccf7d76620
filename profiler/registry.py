"""Registries of named JSON configs kept as data files (open_clip's ``model_configs`` pattern).

A registry reads every ``*.json`` of its folders (or single files) on first use,
validates each one, and serves copies by name. A file that fails validation is an
error naming the file and the field, never skipped.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["JsonRegistry"]


class JsonRegistry:
    """Named JSON documents from folders: ``names()``, ``get(name)`` (a copy) and ``add_path(path)``.

    Args:
        kind: what one document is, for errors (e.g. ``"replica config"``).
        known: what a name names, for unknown-name errors (e.g. ``"replica architecture"``).
        paths: folders of ``*.json`` files, or single files, read in order (later ones win).
        required: fields every document must have; ``name`` is its key.
        check: further validation of one document, given the document and its file.
    """

    def __init__(
        self,
        kind: str,
        known: str,
        paths: list[Path],
        required: tuple[str, ...],
        check: Callable[[dict[str, Any], Path], None] | None = None,
    ) -> None:
        self.kind = kind
        self.known = known
        self.paths = list(paths)
        self.required = required
        self.check = check
        self._documents: dict[str, dict[str, Any]] | None = None

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._documents is None:
            documents: dict[str, dict[str, Any]] = {}
            for folder in self.paths:
                for file in [folder] if folder.is_file() else sorted(folder.glob("*.json")):
                    try:
                        document = json.loads(file.read_text(encoding="utf-8"))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{file}: expected a JSON {self.kind}, but it does not parse: {err}") from err
                    for field in self.required:
                        if field not in document:
                            raise ValueError(f"{file}: expected field {field!r} in a {self.kind}, but it is missing")
                    if self.check is not None:
                        self.check(document, file)
                    documents[document["name"]] = document
            self._documents = documents
        return self._documents

    def names(self) -> list[str]:
        """Names of the registered documents, sorted."""
        return sorted(self._load())

    def get(self, name: str) -> dict[str, Any]:
        """A copy of one document (callers may mutate it).

        Raises:
            ValueError: For an unknown name, listing the available ones.
        """
        documents = self._load()
        if name not in documents:
            raise ValueError(
                f"Expected a known {self.known}, but got {name!r}. Available: {', '.join(sorted(documents))}"
            )
        return copy.deepcopy(documents[name])

    def add_path(self, path: str | Path) -> None:
        """Register another file or folder of ``*.json`` files (validated on next use)."""
        self.paths.append(Path(path))
        self._documents = None
