"""A stand-in for the contract's field reader (``genedge.contract.fields.FieldReader``), with its API.

serve's documents (the HTTP bodies, the load-test result) read their fields through this one class,
so a missing field or a wrong type is refused the same way everywhere, naming the document and the
field. It has the contract reader's signatures (``get``, ``opt``, ``check``, ``fail``, ``count``) so
that, once the contract has its reader, this module becomes the one line
``from genedge.contract.fields import FieldReader``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

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
    """Typed field access on one parsed JSON document; dotted field paths (``schedule.demand``).

    Args:
        where: the document's name in errors (its path, or the URL that answered it).
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

    def count(self, obj: Mapping[str, Any], key: str, path: str, *, minimum: int = 0) -> int:
        """A required integer of at least ``minimum``."""
        value = self.get(obj, key, path, int)
        if value < minimum:
            raise self.fail(f"{path}.{key}" if path else key, f"expected a count >= {minimum}, but got {value}")
        return value
