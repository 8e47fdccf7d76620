"""The one field reader of parsed JSON documents: typed access whose errors name the file and the field.

Every document reader (the calibration table, the router, ...) reads its fields through a
:class:`FieldReader`, so a missing field, a wrong type, a non-finite or out-of-range number or an
empty name is refused the same way everywhere: as an :class:`~genedge.contract.files.ArtifactError`
(or the document's subclass of it) saying ``FILE: FIELD: expected X, but got Y``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from genedge.contract.bounds import MAX_COUNT, range_problem
from genedge.contract.files import ArtifactError

__all__ = ["FieldReader"]

_KIND_NAMES: dict[type, str] = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
    Mapping: "an object",
}


def _kind_name(kinds: tuple[type, ...]) -> str:
    return " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)


class FieldReader:
    """Typed field access on one parsed JSON document.

    Field paths are dotted (``models.sd15.latency.n``); ``path`` arguments name the object a key is
    read from (``""`` for the document itself).

    Args:
        where: the document's name in errors (usually its path).
        error: the :class:`ArtifactError` subclass to raise.
    """

    def __init__(self, where: str, error: type[ArtifactError] = ArtifactError) -> None:
        self.where = where
        self.error = error

    def fail(self, path: str, message: str) -> ArtifactError:
        """The error to raise for field ``path``."""
        return self.error(self.where, path, message)

    def get(self, obj: Mapping[str, Any], key: str, path: str, kind: type | tuple[type, ...]) -> Any:
        """A required field of ``kind`` (a JSON integer is accepted as a number)."""
        if not isinstance(obj, Mapping):
            raise self.fail(path, f"expected an object, but got {type(obj).__name__}")
        full = f"{path}.{key}" if path else key
        if key not in obj:
            raise self.fail(full, "missing field")
        return self.check(obj[key], full, kind)

    def opt(self, obj: Mapping[str, Any], key: str, path: str, kind: type | tuple[type, ...]) -> Any:
        """An optional field of ``kind``: None where it is absent or null."""
        value = obj.get(key)
        return None if value is None else self.check(value, f"{path}.{key}" if path else key, kind)

    def check(self, value: Any, path: str, kind: type | tuple[type, ...]) -> Any:
        """``value`` when it is of ``kind`` (and finite, for a number); a JSON integer becomes a float for ``float``."""
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a JSON true is never a valid number here.
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(path, f"expected {_kind_name(kinds)}, but got a boolean")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:
                raise self.fail(path, "expected a finite number, but got an integer too large for one") from None
        if not isinstance(value, kinds):
            raise self.fail(path, f"expected {_kind_name(kinds)}, but got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(path, f"expected a finite number, but got {value}")
        return value

    def bounded(
        self,
        value: float,
        path: str,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        strict: bool = False,
        what: str = "a number",
    ) -> Any:
        """``value`` when it lies in the range (see :func:`~genedge.contract.bounds.range_problem`)."""
        problem = range_problem(value, minimum=minimum, maximum=maximum, strict=strict, what=what)
        if problem is not None:
            raise self.fail(path, problem)
        return value

    def number(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        minimum: float | None = None,
        strict: bool = False,
        maximum: float | None = None,
    ) -> float:
        """A required finite number within ``[minimum, maximum]`` (``(minimum, …`` with ``strict``)."""
        value = self.get(obj, key, path, float)
        return self.bounded(value, f"{path}.{key}" if path else key, minimum=minimum, maximum=maximum, strict=strict)

    def opt_number(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        what: str = "a number",
    ) -> float | None:
        """An optional finite number within ``[minimum, maximum]``: None where it is absent or null."""
        value = self.opt(obj, key, path, float)
        if value is None:
            return None
        return self.bounded(value, f"{path}.{key}" if path else key, minimum=minimum, maximum=maximum, what=what)

    def count(self, obj: Mapping[str, Any], key: str, path: str, *, minimum: int = 0, maximum: int = MAX_COUNT) -> int:
        """A required integer count within ``[minimum, maximum]`` (by default ``[0, MAX_COUNT]``)."""
        value = self.get(obj, key, path, int)
        return self.bounded(value, f"{path}.{key}" if path else key, minimum=minimum, maximum=maximum, what="a count")

    def name(self, value: Any, path: str) -> str:
        """A non-empty string without surrounding white space (a model key, a category)."""
        text = self.check(value, path, str)
        if not text.strip() or text != text.strip():
            raise self.fail(path, f"expected a non-empty name without surrounding spaces, but got {text!r}")
        return text
