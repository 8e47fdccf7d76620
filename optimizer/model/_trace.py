r"""Recorded arrivals: trace files read into :class:`~genedge.optimizer.model.Arrivals`, and how they are replayed.

A trace is a table with a header (TSV, CSV or Parquet) and one row per request. Two layouts are read:

- genedge's own: a ``time_s`` column (seconds) or a ``timestamp`` column (ISO-8601), and a ``category``
  column or the category mapping's label column;
- the GenTD26 production trace as Alibaba publishes it (``cluster-trace-v2026-GenAI/lora_request_trace.csv``
  in https://github.com/alibaba/clusterdata): ``gmt_create`` datetimes, ``predict_type``,
  ``num_images_per_prompt``, ``num_inference_steps`` and others, but no category. Its requests are given
  categories by a seeded draw from a stated mix (:class:`TraceReplay`).

A :class:`TraceReplay` says how a trace is replayed: which task types and which time slice, how much faster
(``time_scale``) and how much busier (``rate_scale``), which mix draws the categories of rows without one,
and whether a request of k images arrives as k one-image requests. :func:`read_trace` applies it, so a
load test and a simulation given the same replay and seed see the same arrivals.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np

from genedge.contract.bounds import MAX_TRACE_S, MIN_RATE_PER_S, range_problem
from genedge.contract.files import ArtifactError
from genedge.contract.mappings import check_category_mapping, get_category_mapping, label_to_category
from genedge.contract.prompts import PromptTable, read_prompt_file
from genedge.optimizer.model._arrivals import Arrivals
from genedge.optimizer.model._workload import DEFAULT_MIX, default_mix

__all__ = [
    "CATEGORY_COLUMN",
    "GENTD26_TIME_COLUMN",
    "IMAGES_COLUMN",
    "CATEGORY_RULE",
    "RATE_SCALE_RULE",
    "STEPS_COLUMN",
    "TASK_COLUMN",
    "TIMESTAMP_COLUMN",
    "TIME_COLUMN",
    "TraceReplay",
    "read_trace",
]

logger = logging.getLogger(__name__)

#: Trace column of arrival times in seconds (non-decreasing, ≥ 0).
TIME_COLUMN = "time_s"
#: Trace column of ISO-8601 arrival datetimes (converted to seconds after the first); used when ``time_s`` is absent.
TIMESTAMP_COLUMN = "timestamp"
#: GenTD26's column of request creation datetimes (``YYYY-MM-DD HH:MM:SS``, the file's anonymised clock).
GENTD26_TIME_COLUMN = "gmt_create"
#: Trace column naming each request's category.
CATEGORY_COLUMN = "category"
#: GenTD26's column of the generation task (``TXT_2_IMG``, ``IMG_2_IMG``, ``INPAINTING``).
TASK_COLUMN = "predict_type"
#: GenTD26's column of images per request.
IMAGES_COLUMN = "num_images_per_prompt"
#: GenTD26's column of denoising steps per request.
STEPS_COLUMN = "num_inference_steps"
#: Columns of datetimes, the first present read (when ``time_s`` is absent).
_DATETIME_COLUMNS: tuple[str, ...] = (TIMESTAMP_COLUMN, GENTD26_TIME_COLUMN)
#: Columns holding prompt text: a trace with only these cannot be categorized without a prompt router.
_PROMPT_COLUMNS: tuple[str, ...] = ("Prompt", "prompt")
#: The task a text-to-image service serves: the rows a replay keeps by default.
TEXT_TO_IMAGE = "TXT_2_IMG"
#: A further copy of a request (rate scale > 1) arrives at most this long after it, in trace seconds.
COPY_SPREAD_S = 60.0

#: How a replay thins or copies requests (help and docs quote it).
RATE_SCALE_RULE = (
    "each recorded request becomes floor(r) requests, plus one more with probability r - floor(r) (a seeded draw "
    "per request, so r < 1 keeps each request with probability r); the first copy keeps the recorded time, each "
    "further copy arrives at a uniformly drawn time after it, before the next recorded request and within "
    f"{COPY_SPREAD_S:g} trace seconds"
)
#: How a replay gives categories to the requests of a trace without them (help and docs quote it).
CATEGORY_RULE = (
    "each request's category is drawn independently with the mix's probabilities (PartiPrompts' Basic 272, "
    "Detail 544, Imagination 150, Complex 113 by default; 1 for another category asked for), from the replay's "
    "seeded generator after the rate scale's draws; the images of one request share its category"
)


@dataclass(frozen=True)
class TraceReplay:
    """How a recorded trace is replayed (:func:`read_trace` applies it, in the order of the attributes).

    Attributes:
        tasks: the ``predict_type`` values kept (GenTD26 has ``TXT_2_IMG``, ``IMG_2_IMG`` and ``INPAINTING``);
            None keeps every row. Default: text-to-image only. A trace without the column keeps every row.
        start: the first instant replayed: seconds on the trace's own clock (``time_s`` as given; for
            datetimes, seconds after the first row), or a datetime on the file's clock (datetime traces only).
            The replay's time 0 is ``start`` (default: the trace's 0).
        end: the end of the slice replayed (exclusive), in the same terms; the window ends there (default: at
            the last request kept).
        rate_scale: requests replayed per recorded request, > 0 (the rule is :data:`RATE_SCALE_RULE`).
        mix: category → weight for the categories of a trace without them (default: PartiPrompts' mix over
            the categories asked for, :func:`~genedge.optimizer.model.default_mix`; the rule is
            :data:`CATEGORY_RULE`). Given for a trace with categories of its own, it is an error.
        images: ``"expand"``: a request of k images arrives as k one-image requests at its time (as the
            server serves a request for n images: n one-image generations at once); ``"one"``: as one request,
            whatever it asked for. Traces without an images column have one image per request.
        time_scale: trace seconds per replayed second, > 0 (60: one trace hour in one replayed minute).
    """

    tasks: tuple[str, ...] | None = (TEXT_TO_IMAGE,)
    start: float | datetime | None = None
    end: float | datetime | None = None
    rate_scale: float = 1.0
    mix: Mapping[str, float] | None = None
    images: Literal["expand", "one"] = "expand"
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("time_scale", "rate_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
                raise ValueError(f"Expected {name} > 0 (and finite), but got {value!r}")
        if self.images not in ("expand", "one"):
            raise ValueError(f"Expected images 'expand' or 'one', but got {self.images!r}")
        if self.tasks is not None and not self.tasks:
            raise ValueError("Expected at least one task to keep (or None for every row), but got none")
        if self.mix is not None:
            weights = list(self.mix.values())
            if not weights or any(not (math.isfinite(w) and w >= 0) for w in weights) or sum(weights) <= 0:
                raise ValueError(f"Expected a mix of weights >= 0 with a positive total, but got {dict(self.mix)}")
        if self.start is not None and self.end is not None and _ordered(self.start, self.end) is False:
            raise ValueError(f"Expected start before end, but got start {self.start} and end {self.end}")

    def to_dict(self) -> dict[str, Any]:
        """The replay as JSON values (datetimes in ISO-8601)."""
        return {
            "tasks": None if self.tasks is None else list(self.tasks),
            "start": self.start.isoformat() if isinstance(self.start, datetime) else self.start,
            "end": self.end.isoformat() if isinstance(self.end, datetime) else self.end,
            "rate_scale": self.rate_scale,
            "mix": None if self.mix is None else dict(self.mix),
            "images": self.images,
            "time_scale": self.time_scale,
        }


def _ordered(start: float | datetime, end: float | datetime) -> bool | None:
    """Whether start < end, or None where they are not comparable (a number and a datetime)."""
    if isinstance(start, datetime) != isinstance(end, datetime):
        return None
    try:
        return start < end
    except TypeError:  # naive and aware datetimes: the file decides which is right
        return None


def _resolve_mapping(mapping: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(mapping, str):
        return get_category_mapping(mapping)
    return check_category_mapping(mapping, "category mapping")


def _trace_times(
    path: str, columns: tuple[str, ...], column: Callable[[str], list[str]]
) -> tuple[np.ndarray, str, datetime | None]:
    """(each row's time in seconds, the column read, the datetime of 0 s or None where times are seconds)."""
    if TIME_COLUMN in columns:
        name, raw = TIME_COLUMN, column(TIME_COLUMN)
        times, origin = _seconds(path, raw), None
    else:
        name = next((c for c in _DATETIME_COLUMNS if c in columns), None)
        if name is None:
            raise ArtifactError(
                path,
                TIME_COLUMN,
                f"expected a {TIME_COLUMN!r} column (seconds) or a {TIMESTAMP_COLUMN!r} column (ISO-8601), or "
                f"GenTD26's {GENTD26_TIME_COLUMN!r} (datetimes), but the columns are {list(columns)}",
            )
        raw = column(name)
        times, origin = _datetimes(path, name, raw)
    decreasing = np.diff(times) < 0
    if decreasing.any():
        row = int(np.argmax(decreasing)) + 1
        raise ArtifactError(
            path,
            name,
            f"expected non-decreasing times, but row {row + 1} ({raw[row]!r}) "
            f"is earlier than row {row} ({raw[row - 1]!r})",
        )
    return times, name, origin


def _seconds(path: str, raw: list[str]) -> np.ndarray:
    """``time_s``: seconds in [0, a year], starting near 0."""
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
    return times


def _datetimes(path: str, name: str, raw: list[str]) -> tuple[np.ndarray, datetime]:
    """A datetime column: seconds after the first row, and the first row's datetime."""
    stamps = []
    for row, value in enumerate(raw):
        try:
            stamps.append(datetime.fromisoformat(value.strip()))
        except ValueError as err:
            raise ArtifactError(
                path, name, f"expected an ISO-8601 datetime on every row, but row {row + 1} has {value!r}"
            ) from err
    aware = [stamp.tzinfo is not None for stamp in stamps]
    if any(aware) and not all(aware):
        row = aware.index(not aware[0])
        raise ArtifactError(
            path, name, f"expected every datetime with a UTC offset or none without, but row 1 and row {row + 1} differ"
        )
    times = np.array([(stamp - stamps[0]).total_seconds() for stamp in stamps])
    problem = range_problem(float(times.max()), maximum=MAX_TRACE_S, what="a trace spanning seconds")
    if problem is not None:
        raise ArtifactError(path, name, f"{problem} (a planning trace spans a year at most)")
    return times, stamps[0]


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
    path: str,
    columns: tuple[str, ...],
    column: Callable[[str], list[str]],
    mapping: Mapping[str, Any] | str | None,
    drawable: bool,
) -> tuple[str, list[str | None], tuple[str, ...] | None] | None:
    """(column read, category of each row or None, the mapping's category order or None), or None for a trace
    without categories whose categories may be drawn (``drawable``).

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
    if drawable:
        return None
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


def _file_categories(
    path: str,
    table: PromptTable,
    mapping: Mapping[str, Any] | str | None,
    categories: Sequence[str] | None,
    labelled: tuple[str, list[str | None], tuple[str, ...] | None],
) -> tuple[tuple[str, ...], np.ndarray]:
    """The category order and each row's category index, from the trace's own column (:func:`_trace_labels`)."""
    name, labels, mapping_order = labelled
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
        _raise_rows(path, name, table.column(name), undetermined, expected, "have no category")
    index = {category: i for i, category in enumerate(order)}
    unknown = [row for row, label in enumerate(labels) if label not in index]
    if unknown:
        _raise_rows(path, name, table.column(name), unknown, f"a category among {list(order)}", "have another")
    return order, np.array([index[label] for label in labels], dtype=np.int64)


def _categories(
    path: str,
    table: PromptTable,
    mapping: Mapping[str, Any] | str | None,
    categories: Sequence[str] | None,
    mix: Mapping[str, float] | None,
) -> tuple[tuple[str, ...], np.ndarray | None, dict[str, float] | None]:
    """(the category order, each row's category from the file or None, the mix drawn from or None)."""
    drawable = mix is not None or GENTD26_TIME_COLUMN in table.columns
    labelled = _trace_labels(path, table.columns, table.column, mapping, drawable)
    if labelled is None:
        order, drawn = _drawn_order(mapping, categories, mix)
        return order, None, drawn
    if mix is not None:
        raise ValueError(
            f"{path}: a mix draws the categories of a trace without them, but this one has {labelled[0]!r}"
        )
    order, row_category = _file_categories(path, table, mapping, categories, labelled)
    return order, row_category, None


def _drawn_order(
    mapping: Mapping[str, Any] | str | None, categories: Sequence[str] | None, mix: Mapping[str, float] | None
) -> tuple[tuple[str, ...], dict[str, float]]:
    """The category order and the mix drawn from, for a trace without categories."""
    if categories is not None:
        order = tuple(categories)
    elif mapping is not None:
        order = tuple(_resolve_mapping(mapping)["labels"])
    else:
        order = tuple(DEFAULT_MIX if mix is None else mix)
    drawn = dict(default_mix(order) if mix is None else mix)
    unknown = sorted(set(drawn) - set(order))
    if unknown:
        raise ValueError(f"Expected the replay mix's categories among {list(order)}, but {unknown} are not")
    return order, drawn


def _draw_categories(order: tuple[str, ...], mix: Mapping[str, float], n: int, gen: np.random.Generator) -> np.ndarray:
    """``n`` independent draws from ``mix``, as indices into ``order``.

    The mix is drawn over its sorted names, so the draws do not depend on the order the caller lists the
    categories in: a load test (the plan's order) and a simulation (the table's) draw the same.
    """
    names = sorted(mix)
    weights = np.array([mix[name] for name in names], dtype=float)
    drawn = gen.choice(len(names), size=n, p=weights / weights.sum())
    return np.array([order.index(name) for name in names], dtype=np.int64)[drawn]


def _whole_counts(path: str, name: str, raw: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A column of counts ≥ 1 (``4`` or ``4.0``): the counts (0 where missing) and which rows miss one."""
    missing = np.array([value.strip().lower() in ("", "nan", "none", "null") for value in raw])
    counts = np.zeros(len(raw), dtype=np.int64)
    for row in np.flatnonzero(~missing):
        try:
            number = float(raw[row])
        except ValueError:
            number = math.nan
        if not (math.isfinite(number) and number >= 1 and number.is_integer()):
            raise ArtifactError(
                path, name, f"expected a whole number >= 1 or nothing on every row, but row {row + 1} has {raw[row]!r}"
            )
        counts[row] = int(number)
    return counts, missing


def _kept_rows(
    path: str, table: PromptTable, replay: TraceReplay
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The rows of the replayed tasks that say how many images and steps they asked for (where the trace
    records them), and those counts per row of the file (None where not recorded)."""
    kept = np.ones(len(table.rows), dtype=bool)
    if replay.tasks is not None and TASK_COLUMN in table.columns:
        kept = np.isin(np.array(table.column(TASK_COLUMN), dtype=object), list(replay.tasks))
        logger.info("%s: %d of %d rows are %s", path, kept.sum(), kept.size, " or ".join(replay.tasks))
    counts: dict[str, np.ndarray | None] = {IMAGES_COLUMN: None, STEPS_COLUMN: None}
    missing = np.zeros(kept.size, dtype=bool)
    for name in counts:
        if name in table.columns:
            counts[name], absent = _whole_counts(path, name, table.column(name))
            missing |= absent
    dropped = int((kept & missing).sum())
    if dropped:
        recorded = [name for name, values in counts.items() if values is not None]
        logger.warning("%s: %d rows without %s left out of the replay", path, dropped, " or ".join(recorded))
    return kept & ~missing, counts[IMAGES_COLUMN], counts[STEPS_COLUMN]


def _instant_s(path: str, name: str, value: float | datetime, origin: datetime | None, which: str) -> float:
    """A slice's ``start`` or ``end`` as seconds on the trace's clock."""
    if not isinstance(value, datetime):
        return float(value)
    if origin is None:
        raise ArtifactError(
            path, name, f"the replay's {which} is a datetime ({value}), but {name!r} holds seconds: give seconds"
        )
    if (value.tzinfo is None) != (origin.tzinfo is None):
        with_offset = "with" if origin.tzinfo is not None else "without"
        raise ArtifactError(
            path,
            name,
            f"expected the replay's {which} {with_offset} a UTC offset, as the file's datetimes, but got {value}",
        )
    return (value - origin).total_seconds()


def _slice(
    path: str, name: str, times: np.ndarray, origin: datetime | None, kept: np.ndarray, replay: TraceReplay
) -> tuple[np.ndarray, float, float]:
    """The rows replayed (kept, in ``[start, end)``), the slice's start and its end in trace seconds."""
    start = 0.0 if replay.start is None else _instant_s(path, name, replay.start, origin, "start")
    end = math.inf if replay.end is None else _instant_s(path, name, replay.end, origin, "end")
    if not end > start:
        raise ValueError(f"Expected the replay's start before its end, but got {replay.start} and {replay.end}")
    rows = np.flatnonzero(kept & (times >= start) & (times < end))
    if not rows.size:
        raise ArtifactError(
            path,
            name,
            f"expected requests to replay, but none of the {int(kept.sum())} rows kept (of {kept.size}) lies in the "
            f"slice from {replay.start if replay.start is not None else 'the start'} to "
            f"{replay.end if replay.end is not None else 'the end'}",
        )
    return rows, start, float(times[rows[-1]]) if math.isinf(end) else end


def _scale_rate(
    times: np.ndarray, end: float, rate_scale: float, gen: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(the recorded request of each replayed one, its time): :data:`RATE_SCALE_RULE`."""
    if rate_scale == 1:
        return np.arange(times.size), times
    whole, part = divmod(rate_scale, 1.0)
    copies = int(whole) + (gen.random(times.size) < part)
    source = np.repeat(np.arange(times.size), copies)
    first = np.ones(source.size, dtype=bool)
    first[1:] = source[1:] != source[:-1]
    room = np.minimum(np.diff(times, append=end), COPY_SPREAD_S)
    scaled = times[source] + np.where(first, 0.0, gen.random(source.size) * room[source])
    order = np.argsort(scaled, kind="stable")
    return source[order], scaled[order]


def _one_per_image(arrivals: Arrivals) -> Arrivals:
    """Each request of k images as k one-image requests at its time, of its category and steps."""
    if arrivals.images is None:
        return arrivals
    k = arrivals.images
    return Arrivals(
        np.repeat(arrivals.times_s, k),
        np.repeat(arrivals.category, k),
        arrivals.categories,
        arrivals.duration_s,
        images=np.ones(int(k.sum()), dtype=np.int64),
        steps=None if arrivals.steps is None else np.repeat(arrivals.steps, k),
    )


def read_trace(
    path: str | os.PathLike[str],
    *,
    mapping: Mapping[str, Any] | str | None = None,
    categories: Sequence[str] | None = None,
    replay: TraceReplay | None = None,
    rng: int | np.random.Generator | None = None,
) -> Arrivals:
    """Read recorded arrivals from a TSV, CSV or Parquet file with a header, replayed as ``replay`` says.

    Times come from ``time_s`` (seconds in ``[0, MAX_TRACE_S]``, kept as given, and starting near
    0: a first request later than the rest of the trace spans is refused, as its times count from
    another origin such as an epoch) or, when that column is absent, from ``timestamp`` or GenTD26's
    ``gmt_create`` (ISO-8601 datetimes such as ``2024-11-15 16:57:50``, converted to seconds after the
    first row); they must be non-decreasing. Each row's category comes from a ``category`` column, or,
    when there is none and ``mapping`` is given, from the mapping's label column (``mapping["column"]``,
    labels → categories). A trace without either (GenTD26's layout, or any trace when ``replay.mix`` is
    given) gets categories drawn from the replay's mix (:data:`CATEGORY_RULE`). Rows are numbered from 1
    after the header.

    The replay then keeps the rows of its ``tasks`` (where the trace has ``predict_type``); leaves out,
    with a logged count, the rows that record no images or steps (where the trace has those columns:
    GenTD26 has 25 such rows); keeps the rows in ``[start, end)``, whose start becomes time 0; thins or
    copies requests by ``rate_scale``; draws the categories; turns each request of k images into k
    one-image requests (``images="expand"``); and divides every time by ``time_scale``. The window is
    ``[0, (end - start) / time_scale]``, ending at the last request kept where ``end`` is not given. The
    returned arrivals carry each request's images and steps where the trace records them.

    Args:
        path: the trace file (read by :func:`genedge.contract.read_prompt_file`).
        mapping: a category mapping document, or the name of a registered one.
        categories: category names in the order the caller indexes them (e.g. the rows of a routing
            matrix); every row's category must be one of them. Default: the mapping's categories in
            its order, or the sorted distinct names of the ``category`` column, or (drawn categories) the
            mix's.
        replay: how the trace is replayed (default: :class:`TraceReplay`'s defaults: text-to-image rows,
            all of the trace, at its own speed and rate).
        rng: a seed or generator for the rate scale's draws and drawn categories; the same seed gives the
            same arrivals.

    Raises:
        FileNotFoundError: no such file.
        ArtifactError: naming the file and column: an empty file or one with no rows, bytes that are not
            UTF-8, a missing time or category column (an unlabelled prompt column says a prompt router is
            needed), an unparsable, negative, too large or decreasing time, ``time_s`` that does not
            start near 0, images or steps that are not whole numbers >= 1, no request in the slice, fewer
            than ``MIN_RATE_PER_S`` requests per second, or rows whose category is unknown (counted, with
            the first one named).
        ValueError: a mix for a trace with categories of its own, or naming categories not asked for.
    """
    replay = TraceReplay() if replay is None else replay
    table = read_prompt_file(path)
    where = str(path)
    if not table.rows:
        raise ArtifactError(where, "rows", "expected at least one request row after the header, but the file has none")
    times, time_name, origin = _trace_times(where, table.columns, table.column)
    order, row_category, mix = _categories(where, table, mapping, categories, replay.mix)
    kept, images, steps = _kept_rows(where, table, replay)
    rows, start, end = _slice(where, time_name, times, origin, kept, replay)
    gen = np.random.default_rng(rng)
    source, offsets = _scale_rate(times[rows] - start, end - start, replay.rate_scale, gen)
    rows = rows[source]
    category = _draw_categories(order, mix, rows.size, gen) if row_category is None else row_category[rows]
    arrivals = Arrivals(
        offsets / replay.time_scale,
        category,
        order,
        (end - start) / replay.time_scale,
        images=None if images is None else images[rows],
        steps=None if steps is None else steps[rows],
    )
    if replay.images == "expand":
        arrivals = _one_per_image(arrivals)
    _check_rate(where, time_name, arrivals)
    return arrivals


def _check_rate(path: str, name: str, arrivals: Arrivals) -> None:
    """Refuse a replay of fewer than :data:`MIN_RATE_PER_S` requests per second: nothing to plan for."""
    n, duration = len(arrivals), arrivals.duration_s
    if duration > 0 and n / duration < MIN_RATE_PER_S:
        raise ArtifactError(
            path,
            name,
            f"expected at least {MIN_RATE_PER_S:g} requests/s over the replay, but {n} requests over "
            f"{duration:g} s are {n / duration:.3g} requests/s: no load to plan for (a larger rate scale or "
            "time scale raises the rate)",
        )
