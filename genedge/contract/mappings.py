"""Named JSON registries (open_clip's ``model_configs`` pattern) and the label → category mappings.

A registry reads every ``*.json`` of its folders (or single files) on first use, validates each
one, and serves copies by name. A file that fails validation is an error naming the file and the
field, never skipped.

A category mapping names a column of a prompt table and, under ``labels``, maps each category name
to the labels of that column it takes: ``{"name", "column", "labels": {category: [label, ...]}}``.
Rows whose label no category claims belong to no category. The same document travels in run
manifests (``prompt_set.category_mapping``) and calibration tables (``category_mapping``). Shipped
mappings are ``paper4`` (the paper's four categories from ``Challenge``), ``challenge`` (all 11)
and ``category`` (the 12 ``Category`` labels).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from genedge.contract.fields import FieldReader
from genedge.contract.files import ArtifactError, read_json
from genedge.data import path as data_path

__all__ = [
    "DEFAULT_MAPPING",
    "MAPPING_FIELDS",
    "JsonRegistry",
    "add_category_mapping_path",
    "check_category_mapping",
    "get_category_mapping",
    "label_to_category",
    "list_category_mappings",
    "load_category_mapping",
]

DEFAULT_MAPPING = "paper4"
#: Fields every category mapping has; ``labels`` is category → labels of ``column``.
MAPPING_FIELDS: tuple[str, ...] = ("column", "labels")


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
        check: Callable[[dict[str, Any], Path], object] | None = None,
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
                    document = read_json(file, f"a JSON {self.kind}")
                    if not isinstance(document, dict):
                        raise ArtifactError(str(file), "document", f"expected a JSON object, but got {document!r:.40}")
                    for field in self.required:
                        if field not in document:
                            raise ArtifactError(
                                str(file), field, f"expected this field in a {self.kind}, but it is missing"
                            )
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


def check_category_mapping(
    mapping: Mapping[str, Any], where: str, error: type[ArtifactError] = ArtifactError
) -> dict[str, Any]:
    """Validate a category mapping document; return it as a dict.

    Raises:
        ArtifactError: (or ``error``) naming ``where`` and the field: a missing ``column`` or ``labels``, an
            empty category name, a category without labels, a label that is not a string, or a label claimed
            by two categories.
    """
    r = FieldReader(where, error)
    if not isinstance(mapping, Mapping):
        raise r.fail("category_mapping", f"expected an object, but got {type(mapping).__name__}")
    for field in MAPPING_FIELDS:
        if field not in mapping:
            raise r.fail(f"category_mapping.{field}", "missing field")
    if not isinstance(mapping["column"], str) or not mapping["column"]:
        raise r.fail("category_mapping.column", f"expected a column name, but got {mapping['column']!r}")
    labels = mapping["labels"]
    if not isinstance(labels, Mapping) or not labels:
        raise r.fail("category_mapping.labels", "expected an object of category → [labels]")
    seen: dict[str, str] = {}
    for category, names in labels.items():
        path = f"category_mapping.labels.{category}"
        r.name(category, "category_mapping.labels")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise r.fail(path, f"expected a non-empty list of label strings, but got {names!r}")
        for name in names:
            if name in seen:
                raise r.fail(path, f"label {name!r} is also claimed by category {seen[name]!r}")
            seen[name] = category
    return dict(mapping)


def label_to_category(mapping: Mapping[str, Any]) -> dict[str, str]:
    """Invert a category mapping: label of its ``column`` → category name."""
    return {label: category for category, labels in mapping["labels"].items() for label in labels}


_MAPPINGS = JsonRegistry(
    "category mapping",
    "category mapping",
    [data_path("prompts", "mappings")],
    ("name", *MAPPING_FIELDS),
    lambda document, file: check_category_mapping(document, str(file)),
)


def list_category_mappings() -> list[str]:
    """Names of the registered category mappings, sorted."""
    return _MAPPINGS.names()


def get_category_mapping(name: str) -> dict[str, Any]:
    """A copy of one category mapping: ``{"name", "column", "labels": {category: [labels]}, ...}``.

    Raises:
        ValueError: For an unknown name, listing the available ones.
    """
    return _MAPPINGS.get(name)


def add_category_mapping_path(path: str | Path) -> None:
    """Register another category-mapping JSON file or folder (validated on next use)."""
    _MAPPINGS.add_path(path)


def load_category_mapping(name_or_path: str | Path) -> dict[str, Any]:
    """A category mapping by registered name, or from a JSON file (validated).

    Raises:
        ValueError: neither a registered name nor a file (the message lists the names).
        ArtifactError: the file is not a valid category mapping (naming the field).
    """
    candidate = Path(name_or_path)
    if candidate.is_file():
        document = read_json(candidate, "a JSON category mapping")
        return check_category_mapping(document, str(candidate))
    return get_category_mapping(str(name_or_path))
