r"""Recorded arrivals: trace files read into :class:`~genedge.optimizer.model.Arrivals`."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from genedge.contract.bounds import MAX_TRACE_S, MIN_RATE_PER_S, range_problem
from genedge.contract.files import ArtifactError
from genedge.contract.mappings import check_category_mapping, get_category_mapping, label_to_category
from genedge.contract.prompts import read_prompt_file
from genedge.optimizer.model._arrivals import Arrivals

__all__ = ["CATEGORY_COLUMN", "TIMESTAMP_COLUMN", "TIME_COLUMN", "read_trace"]

#: Trace column of arrival times in seconds (non-decreasing, ≥ 0).
TIME_COLUMN = "time_s"
#: Trace column of ISO-8601 arrival datetimes (converted to seconds after the first); used when ``time_s`` is absent.
TIMESTAMP_COLUMN = "timestamp"
#: Trace column naming each request's category.
CATEGORY_COLUMN = "category"
#: Columns holding prompt text: a trace with only these cannot be categorized without a prompt router.
_PROMPT_COLUMNS: tuple[str, ...] = ("Prompt", "prompt")


def _resolve_mapping(mapping: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(mapping, str):
        return get_category_mapping(mapping)
    return check_category_mapping(mapping, "category mapping")


def _trace_times(path: str, columns: tuple[str, ...], column: Callable[[str], list[str]]) -> np.ndarray:
    if TIME_COLUMN in columns:
        raw = column(TIME_COLUMN)
        try:
            times = np.array(raw, dtype=float)
            bad = ~np.isfinite(times) | (times < 0) | (times > MAX_TRACE_S)
        except ValueError:
            bad = np.array([not _is_seconds(value) for value in raw])
        if bad.any():
            row = int(np.argmax(bad))
            raise ArtifactError(
                path,
                TIME_COLUMN,
                f"expected seconds in [0, {MAX_TRACE_S:.0f}] (a year at most) on every row, but row {row + 1} has "
                f"{raw[row]!r}" + (_FROM_ZERO if _is_late(raw[row]) else ""),
            )
        _check_starts_near_zero(path, times, raw)
        name = TIME_COLUMN
    elif TIMESTAMP_COLUMN in columns:
        raw = column(TIMESTAMP_COLUMN)
        stamps = []
        for row, value in enumerate(raw):
            try:
                stamps.append(datetime.fromisoformat(value.strip()))
            except ValueError as err:
                raise ArtifactError(
                    path,
                    TIMESTAMP_COLUMN,
                    f"expected an ISO-8601 datetime on every row, but row {row + 1} has {value!r}",
                ) from err
        aware = [stamp.tzinfo is not None for stamp in stamps]
        if any(aware) and not all(aware):
            row = aware.index(not aware[0])
            raise ArtifactError(
                path,
                TIMESTAMP_COLUMN,
                f"expected every datetime with a UTC offset or none without, but row 1 and row {row + 1} differ",
            )
        times = np.array([(stamp - stamps[0]).total_seconds() for stamp in stamps])
        problem = range_problem(float(times.max()), maximum=MAX_TRACE_S, what="a trace spanning seconds")
        if problem is not None:
            raise ArtifactError(path, TIMESTAMP_COLUMN, f"{problem} (a planning trace spans a year at most)")
        name = TIMESTAMP_COLUMN
    else:
        raise ArtifactError(
            path,
            TIME_COLUMN,
            f"expected a {TIME_COLUMN!r} column (seconds) or a {TIMESTAMP_COLUMN!r} column (ISO-8601), "
            f"but the columns are {list(columns)}",
        )
    decreasing = np.diff(times) < 0
    if decreasing.any():
        row = int(np.argmax(decreasing)) + 1
        raise ArtifactError(
            path,
            name,
            f"expected non-decreasing times, but row {row + 1} ({raw[row]!r}) "
            f"is earlier than row {row} ({raw[row - 1]!r})",
        )
    return times


#: A first arrival this late (s) is still "near zero" however short the trace: a minute of warm-up.
_NEAR_ZERO_S = 60.0
#: How to fix ``time_s`` that counts from another origin (an epoch, the start of a day).
_FROM_ZERO = (
    "; time_s counts seconds from the start of the trace: subtract the first row's time from every row, "
    "or give ISO-8601 datetimes in a 'timestamp' column instead"
)


def _is_late(value: str) -> bool:
    """A time that is a number past :data:`MAX_TRACE_S`: seconds from another origin, such as an epoch."""
    try:
        return float(value) > MAX_TRACE_S
    except ValueError:
        return False


def _is_seconds(value: str) -> bool:
    try:
        number = float(value)
    except ValueError:
        return False
    return math.isfinite(number) and 0 <= number <= MAX_TRACE_S


def _check_starts_near_zero(path: str, times: np.ndarray, raw: list[str]) -> None:
    """Refuse ``time_s`` whose first arrival comes after a minute and more quiet than the rest of the trace spans.

    The window is ``[0, last time]``, so such a trace's rates are mostly its silence: its times
    count from another origin (epoch seconds, the time of day), and planning it would be wrong by
    that factor without a word.
    """
    first, span = float(times.min()), float(times.max() - times.min())
    if first > max(span, _NEAR_ZERO_S):
        raise ArtifactError(
            path,
            TIME_COLUMN,
            f"expected times that start near 0 s, but the first request comes at {raw[int(np.argmin(times))]!r} "
            f"s and the rest span only {span:g} s" + _FROM_ZERO,
        )


def _trace_labels(
    path: str, columns: tuple[str, ...], column: Callable[[str], list[str]], mapping: Mapping[str, Any] | str | None
) -> tuple[str, list[str | None], tuple[str, ...] | None]:
    """(column read, category of each row or None, the mapping's category order or None).

    A ``category`` column wins; otherwise the mapping's label column, where the file has it.
    """
    if CATEGORY_COLUMN in columns:
        return CATEGORY_COLUMN, [value.strip() or None for value in column(CATEGORY_COLUMN)], None
    if mapping is not None:
        document = _resolve_mapping(mapping)
        name = document["column"]
        if name in columns:
            to_category = label_to_category(document)
            return name, [to_category.get(label) for label in column(name)], tuple(document["labels"])
    prompt = next((name for name in _PROMPT_COLUMNS if name in columns), None)
    if prompt is not None:
        raise ArtifactError(
            path,
            prompt,
            f"rows carry unlabelled prompts in column {prompt!r} but no {CATEGORY_COLUMN!r} column; routing prompts "
            "to categories needs the prompt router, which is not available yet. Add a 'category' column, or pass a "
            "category mapping whose column the file has",
        )
    raise ArtifactError(
        path,
        CATEGORY_COLUMN,
        f"expected a {CATEGORY_COLUMN!r} column"
        + ("" if mapping is None else f" or the category mapping's column {_resolve_mapping(mapping)['column']!r}")
        + f", but the columns are {list(columns)}",
    )


def _raise_rows(path: str, column: str, values: list[str], rows: list[int], expected: str, problem: str) -> None:
    first = rows[0]
    raise ArtifactError(
        path,
        column,
        f"expected {expected} on every row, but {len(rows)} of {len(values)} rows {problem} "
        f"(the first is row {first + 1}: {values[first]!r})",
    )


def read_trace(
    path: str | os.PathLike[str],
    *,
    mapping: Mapping[str, Any] | str | None = None,
    categories: Sequence[str] | None = None,
) -> Arrivals:
    """Read recorded arrivals from a TSV, CSV or Parquet file with a header.

    Times come from ``time_s`` (seconds in ``[0, MAX_TRACE_S]``, kept as given, and starting near
    0: a first request later than the rest of the trace spans is refused, as its times count from
    another origin such as an epoch) or, when that column is absent, from ``timestamp`` (ISO-8601
    datetimes, converted to seconds after the first row); they must be non-decreasing. Each row's
    category comes from a ``category`` column, or, when there is none and ``mapping`` is given,
    from the mapping's label column (``mapping["column"]``, labels → categories). The window is
    ``[0, last time]``. Rows are numbered from 1 after the header.

    Args:
        path: the trace file (read by :func:`genedge.contract.read_prompt_file`).
        mapping: a category mapping document, or the name of a registered one.
        categories: category names in the order the caller indexes them (e.g. the rows of a routing
            matrix); every row's category must be one of them. Default: the mapping's categories in
            its order, or the sorted distinct names of the ``category`` column.

    Raises:
        FileNotFoundError: no such file.
        ArtifactError: naming the file and column: an empty file or one with no rows, bytes that are not
            UTF-8, a missing time or category column (an unlabelled prompt column says a prompt router is
            needed), an unparsable, negative, too large or decreasing time, ``time_s`` that does not
            start near 0, fewer than ``MIN_RATE_PER_S`` requests per second, or rows whose category is unknown
            (counted, with the first one named).
    """
    table = read_prompt_file(path)
    where = str(path)
    if not table.rows:
        raise ArtifactError(where, "rows", "expected at least one request row after the header, but the file has none")
    times = _trace_times(where, table.columns, table.column)
    name, labels, mapping_order = _trace_labels(where, table.columns, table.column, mapping)
    if categories is not None:
        order = tuple(categories)
    elif mapping_order is not None:
        order = mapping_order
    else:
        order = tuple(sorted({label for label in labels if label is not None}))
    undetermined = [row for row, label in enumerate(labels) if label is None]
    if undetermined:
        expected = (
            f"a label of the category mapping ({sorted(label_to_category(_resolve_mapping(mapping)))})"
            if mapping is not None
            else "a category name"
        )
        _raise_rows(where, name, table.column(name), undetermined, expected, "have no category")
    index = {category: i for i, category in enumerate(order)}
    unknown = [row for row, label in enumerate(labels) if label not in index]
    if unknown:
        _raise_rows(where, name, table.column(name), unknown, f"a category among {list(order)}", "have another")
    category = np.array([index[label] for label in labels], dtype=np.int64)
    duration = float(times[-1])
    if duration > 0 and len(times) / duration < MIN_RATE_PER_S:
        raise ArtifactError(
            where,
            TIME_COLUMN if TIME_COLUMN in table.columns else TIMESTAMP_COLUMN,
            f"expected at least {MIN_RATE_PER_S:g} requests/s over the trace, but {len(times)} requests over "
            f"{duration:g} s are {len(times) / duration:.3g} requests/s: no load to plan for",
        )
    return Arrivals(times, category, order, duration)
