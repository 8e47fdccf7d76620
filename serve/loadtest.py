"""The load generator: open-loop requests to a served plan, recorded as they complete.

``genedge loadtest URL`` speaks ``vllm bench serve``'s language: ``request_rate`` (``inf`` sends every
request at once), ``burstiness`` (1 = Poisson; gamma-distributed gaps of shape B otherwise, mean
1/rate), ``num_prompts`` and ``max_concurrency`` (a cap on requests in flight; the others wait for a
slot, as vLLM's semaphore makes them). A ``trace`` replaces the drawn arrival times by recorded ones.

The schedule is a pure function of the configuration: arrival times from
:func:`genedge.optimizer.arrivals.poisson_arrivals` / :func:`~genedge.optimizer.arrivals.gamma_arrivals`
(seeded), then the prompts drawn as vLLM draws a custom dataset: shuffled with the same seed and taken
in that order (cycling past the end, so no prompt repeats before every one is used). Each request is
sent at its time whatever the responses so far (open loop); each is bounded by ``timeout_s``, so the
run ends by itself.

Result directory (append-only, so a killed run loses at most the records not yet flushed)::

    loadtest.json                    the configuration, the plan and table served, the offered demand
    sessions/session-NNN.json        one per run of the command: start, end, /v1/stats before and after
    records/part-NNN-MMMMM.parquet   records as they complete, in small batches, never rewritten
    scores/part-NNN.parquet          CLIPScores of the images (--clip-score), by request index
    images/IIIIII.png                images (--save-images; or until scored)

Running the same configuration into the same directory resumes it: the indices already recorded are
not sent again; the missing ones keep their gaps, shifted so the first of them goes at once. Another
configuration in that directory is refused, naming the setting that differs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genedge.contract.files import ArtifactError, read_json, write_bytes_atomic, write_text_atomic
from genedge.serve.protocol import GENERATE_ROUTE, OPENAI_ROUTE, PLAN_ROUTE, RECORD_FIELDS, STATS_ROUTE

if TYPE_CHECKING:
    import pandas as pd

    from genedge.calibrate.table import CalibrationTable
    from genedge.contract.prompts import PromptTable

__all__ = [
    "CLIENT_FIELDS",
    "ENDPOINTS",
    "LOADTEST_KIND",
    "MANIFEST_NAME",
    "RECORD_BATCH",
    "LoadConfig",
    "LoadTestError",
    "LoadTestRun",
    "Schedule",
    "ScheduledRequest",
    "ServedPlan",
    "build_schedule",
    "default_result_dir",
    "fetch_plan",
    "read_manifest",
    "read_records",
    "read_sessions",
    "run_loadtest",
    "score_images",
]

logger = logging.getLogger(__name__)

LOADTEST_KIND = "genedge.loadtest"
LOADTEST_SCHEMA_VERSION = 1
MANIFEST_NAME = "loadtest.json"
_SESSIONS_DIR = "sessions"
_RECORDS_DIR = "records"
_SCORES_DIR = "scores"
_IMAGES_DIR = "images"
#: The routes a load test may target: genedge's own, or the OpenAI-compatible one.
ENDPOINTS = ("genedge", "openai")
#: Records are flushed to a new Parquet file every this many, or ...
RECORD_BATCH = 16
#: ... when this many seconds have passed since the last flush and another record arrives.
FLUSH_INTERVAL_S = 1.0
# A GET of the plan or the stats: the server answers from memory, so a slow answer is a dead one.
_GET_TIMEOUT_S = 30.0
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: The client's fields of a record (beside :data:`genedge.serve.protocol.RECORD_FIELDS`, the server's, null
#: when the server sent none). Times are seconds; scheduled_s and sent_s from the schedule's origin.
CLIENT_FIELDS: dict[str, str] = {
    "index": "int64",  # the request's position in the schedule
    "session": "int64",  # which run of the command sent it (0, then 1 after a resume, ...)
    "scheduled_s": "double",
    "sent_s": "double",  # sent_s − scheduled_s is how late it went (a full --max-concurrency, a busy client)
    "client_response_s": "double",  # from sending to the whole body received
    "http_status": "int64",  # null when no response came (timeout, connection error)
    "status": "string",  # ok | rejected (503) | error | timeout
    "error": "string",
    "error_param": "string",
    "retry_after_s": "double",
    "prompt": "string",
    "requested_category": "string",  # sent with the request; null lets the server's router decide
    "label_category": "string",  # the prompt file's label under the table's mapping, sent or not
    "requested_seed": "int64",
    "received_sha256": "string",  # of the PNG bytes received
}
_STATUSES = ("ok", "rejected", "error", "timeout")


class LoadTestError(ValueError):
    """A load test cannot start: a bad setting, an unreachable or foreign server, a directory of another test."""


@dataclass(frozen=True)
class LoadConfig:
    """What a load test sends, where and how fast.

    Attributes:
        url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
        prompts: the prompt file (TSV/CSV/Parquet with a ``Prompt`` column).
        request_rate: requests per second (``math.inf``: all at once); ignored with ``trace``.
        burstiness: the gamma shape of the gaps (1 = Poisson).
        num_prompts: requests to send (default: 1000, or the trace's rows).
        max_concurrency: the most requests in flight, or None for no cap.
        trace: a trace file of arrival times (``time_s`` or ``timestamp``) and categories.
        seed: seeds the arrival times, the prompt order and each request's image seed.
        endpoint: ``genedge`` (``POST /v1/generate``) or ``openai`` (``POST /v1/images/generations``).
        send_categories: send each prompt's category (from its label under the table's mapping);
            False sends none and the server's prompt router places every request.
        timeout_s: the most one request may take, from sending to the whole body.
        save_images: keep every image as a PNG file.
    """

    url: str
    prompts: Path
    request_rate: float = math.inf
    burstiness: float = 1.0
    num_prompts: int | None = None
    max_concurrency: int | None = None
    trace: Path | None = None
    seed: int = 0
    endpoint: str = "genedge"
    send_categories: bool = True
    timeout_s: float = 600.0
    save_images: bool = False

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise LoadTestError(f"URL: expected an http:// or https:// base URL, but got {self.url!r}")
        if not (self.request_rate > 0):  # also refuses NaN
            raise LoadTestError(f"--request-rate: expected requests per second > 0 or inf, but got {self.request_rate}")
        if not (self.burstiness > 0):
            raise LoadTestError(f"--burstiness: expected a gamma shape > 0 (1 = Poisson), but got {self.burstiness}")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise LoadTestError(f"--num-prompts: expected at least 1 request, but got {self.num_prompts}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise LoadTestError(f"--max-concurrency: expected at least 1, but got {self.max_concurrency}")
        if self.endpoint not in ENDPOINTS:
            raise LoadTestError(f"--endpoint: expected one of {list(ENDPOINTS)}, but got {self.endpoint!r}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise LoadTestError(f"--timeout-s: expected seconds > 0, but got {self.timeout_s}")

    @property
    def base_url(self) -> str:
        """The URL without a trailing slash."""
        return self.url.rstrip("/")


@dataclass(frozen=True)
class ScheduledRequest:
    """One request of the schedule.

    Attributes:
        index: position in the schedule (0-based).
        time_s: when to send it, in seconds from the schedule's origin.
        prompt: the prompt text.
        category: the category sent with it, or None (the server's router decides).
        label_category: the prompt's category by its label under the table's mapping, or None.
        seed: the image seed sent (``genedge`` endpoint; the OpenAI route takes none).
    """

    index: int
    time_s: float
    prompt: str
    category: str | None
    label_category: str | None
    seed: int


@dataclass(frozen=True)
class Schedule:
    """Every request of a load test, and the demand it offers the plan.

    Attributes:
        requests: the requests in the order of their times.
        arrivals: ``open`` (requests over time) or ``window`` (all at once: ``request_rate`` inf, or one request).
        duration_s: the time of the last request (the span the rates are measured over).
        demand: category → offered rate (requests/s) under ``open``, or requests under ``window``; requests
            sent without a category are spread over the plan's categories in its planned mix.
        unplaced: requests sent without a category.
    """

    requests: tuple[ScheduledRequest, ...]
    arrivals: str
    duration_s: float
    demand: Mapping[str, float]
    unplaced: int


@dataclass(frozen=True)
class ServedPlan:
    """What ``GET /v1/plan`` answered: the plan document, its calibration table and the server's notes."""

    plan: dict[str, Any]
    table: CalibrationTable
    table_document: dict[str, Any]
    served: dict[str, Any]

    @property
    def plan_sha256(self) -> str:
        """SHA-256 of the plan document as canonical JSON: a resumed test must meet the same plan."""
        return hashlib.sha256(json.dumps(self.plan, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class LoadTestRun:
    """What one run of :func:`run_loadtest` did.

    Attributes:
        result_dir: where the records are.
        session: this run's number (0 for the first, 1 after a resume, ...).
        schedule: the whole schedule.
        sent: requests this run sent; skipped: requests already recorded by earlier runs.
        outcomes: status → this run's requests with it.
        served: the plan and table the server answered.
    """

    result_dir: Path
    session: int
    schedule: Schedule
    sent: int
    skipped: int
    outcomes: Mapping[str, int] = field(default_factory=dict)
    served: ServedPlan | None = None


# --------------------------------------------------------------------------- server


async def _get_json(session: Any, url: str) -> tuple[int, Any]:
    import aiohttp

    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=_GET_TIMEOUT_S)) as response:
            body = await response.read()
            status = response.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as err:
        reason = "no answer within " + f"{_GET_TIMEOUT_S:g} s" if isinstance(err, asyncio.TimeoutError) else str(err)
        raise LoadTestError(f"{url}: cannot reach the server ({reason or type(err).__name__})") from err
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def _served_plan(url: str, status: int, body: Any) -> ServedPlan:
    from genedge.calibrate.table import table_from_dict
    from genedge.optimizer.plan_file import validate_plan

    if status != 200 or not isinstance(body, Mapping) or not {"plan", "table"} <= set(body):
        got = f"HTTP {status}" + ("" if isinstance(body, Mapping) else ", not a JSON object")
        if isinstance(body, Mapping):
            got += f" with fields {sorted(body)[:8]}"
        raise LoadTestError(
            f"{url}: expected a genedge server's plan (200, a JSON object with 'plan' and 'table'), but got {got}"
        )
    plan, table = body["plan"], body["table"]
    if not isinstance(plan, dict) or not isinstance(table, dict):
        raise LoadTestError(f"{url}: expected 'plan' and 'table' to be JSON objects")
    validate_plan(plan, f"{url} plan")
    served = body.get("served")
    return ServedPlan(plan, table_from_dict(table, f"{url} table"), table, served if isinstance(served, dict) else {})


def fetch_plan(url: str) -> ServedPlan:
    """``GET {url}/v1/plan``: the plan a genedge server serves, and its calibration table.

    Raises:
        LoadTestError: the server cannot be reached, or answers something that is not a genedge plan.
        ArtifactError: the plan or the table is malformed (naming the field).
    """
    import aiohttp

    async def get() -> ServedPlan:
        async with aiohttp.ClientSession() as session:
            return _served_plan(url.rstrip("/") + PLAN_ROUTE, *await _get_json(session, url.rstrip("/") + PLAN_ROUTE))

    return asyncio.run(get())


async def _stats(session: Any, base_url: str) -> dict[str, Any] | None:
    """``GET /v1/stats``, or None (with a warning) where the server does not give it."""
    url = base_url + STATS_ROUTE
    try:
        status, body = await _get_json(session, url)
    except LoadTestError as err:
        logger.warning("%s; realized shares will not be measured", err)
        return None
    if status != 200 or not isinstance(body, Mapping) or not isinstance(body.get("devices"), list):
        logger.warning("%s: no share accounting (HTTP %s); realized shares will not be measured", url, status)
        return None
    return dict(body)


# --------------------------------------------------------------------------- schedule


def _request_seed(seed: int, index: int) -> int:
    """The image seed of request ``index``: distinct per request, the same on every run of a seed."""
    digest = hashlib.sha256(f"genedge.loadtest:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:7], "big")  # < 2**56, within the contract's [0, 2**63)


def _prompt_rows(prompts: PromptTable) -> list[str]:
    from genedge.contract.prompts import PROMPT_COLUMN

    texts = prompts.column(PROMPT_COLUMN)
    if not texts:
        raise ArtifactError(prompts.source, "rows", "expected at least one prompt after the header, but got none")
    empty = [i for i, text in enumerate(texts) if not text.strip()]
    if empty:
        raise ArtifactError(
            prompts.source,
            PROMPT_COLUMN,
            f"expected a prompt on every row, but {len(empty)} rows are empty (the first is row {empty[0] + 1})",
        )
    return texts


def _labels(prompts: PromptTable, table: CalibrationTable, planned: Sequence[str]) -> list[str | None]:
    """Each row's category by its label under the table's mapping (None: no label column, or an unknown label)."""
    from genedge.contract.mappings import label_to_category

    mapping = table.category_mapping
    if mapping["column"] not in prompts.columns:
        return [None] * len(prompts.rows)
    categories = label_to_category(mapping)
    labels = [categories.get(label) for label in prompts.column(mapping["column"])]
    unplanned = sorted({c for c in labels if c is not None and c not in planned})
    if unplanned:
        logger.warning(
            "%s: categories %s are not in the plan (it routes %s); their prompts go without a category",
            prompts.source,
            unplanned,
            list(planned),
        )
    return [c if c in planned else None for c in labels]


def _cycle(order: np.ndarray, n: int) -> np.ndarray:
    return np.resize(order, n)  # repeats the order to length n


def build_schedule(
    config: LoadConfig, prompts: PromptTable, plan: Mapping[str, Any], table: CalibrationTable
) -> Schedule:
    """Every request of a load test, a pure function of the configuration and the files.

    Raises:
        ArtifactError: a prompt file without a ``Prompt`` column or prompts, or a trace naming a category
            the plan does not route (naming the file and column).
    """
    from genedge.optimizer.arrivals import gamma_arrivals, poisson_arrivals, read_trace
    from genedge.optimizer.delay import OPEN, WINDOW
    from genedge.optimizer.workload import Workload
    from genedge.serve.predict import plan_rates

    texts = _prompt_rows(prompts)
    planned = list(plan["routing"])
    labels = _labels(prompts, table, planned)
    gen = np.random.default_rng(config.seed)
    if config.trace is not None:
        trace = read_trace(config.trace, mapping=table.category_mapping, categories=planned)
        n = len(trace) if config.num_prompts is None else min(config.num_prompts, len(trace))
        times = np.asarray(trace.times_s[:n], dtype=float)
        wanted = [trace.categories[i] for i in trace.category[:n]]
        by_category = {c: np.flatnonzero([label == c for label in labels]) for c in set(wanted)}
        everything = gen.permutation(len(texts))
        rows = np.empty(n, dtype=int)
        for category in sorted(set(wanted)):
            at = [i for i, c in enumerate(wanted) if c == category]
            pool = by_category[category] if by_category[category].size else everything
            rows[at] = _cycle(gen.permutation(pool), len(at))
        categories: list[str | None] = list(wanted)
    else:
        n = 1000 if config.num_prompts is None else config.num_prompts
        if math.isinf(config.request_rate):
            times = np.zeros(n)
        elif config.burstiness == 1:
            times = poisson_arrivals({"all": config.request_rate}, n_requests=n, rng=gen).times_s
        else:
            times = gamma_arrivals(
                {"all": config.request_rate}, burstiness=config.burstiness, n_requests=n, rng=gen
            ).times_s
        rows = _cycle(gen.permutation(len(texts)), n)
        categories = [labels[r] for r in rows]
    sent = [c if config.send_categories else None for c in categories]
    requests = tuple(
        ScheduledRequest(
            index=i,
            time_s=float(times[i]),
            prompt=texts[rows[i]],
            category=sent[i],
            label_category=labels[rows[i]],
            seed=_request_seed(config.seed, i),
        )
        for i in range(n)
    )
    duration = float(times[-1]) if n else 0.0
    timed = duration > 0 and n > 1  # requests spread over time arrive as rates; else all at once, a window
    arrivals = (OPEN if timed else WINDOW).name
    counts: dict[str, float] = {c: 0.0 for c in planned}
    for category in sent:
        if category is not None:
            counts[category] += 1
    unplaced = sum(c is None for c in sent)
    if unplaced and timed:
        for category, share in plan_rates(plan, 1.0).items():
            counts[category] += unplaced * share
    elif unplaced:  # a window counts whole requests: split in the plan's mix by largest remainder
        for category, count in Workload.from_mix(plan["inputs"]["workload"], unplaced).counts.items():
            counts[category] += count
    demand = {c: (v / duration if timed else v) for c, v in counts.items() if v > 0}
    return Schedule(requests, arrivals, duration, demand, unplaced)


# --------------------------------------------------------------------------- result directory


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _identity(config: LoadConfig, served: ServedPlan) -> dict[str, Any]:
    """The settings a resumed test must share with the recorded one (JSON: inf is written as a string)."""
    rate = "inf" if math.isinf(config.request_rate) else config.request_rate
    return {
        "url": config.base_url,
        "endpoint": config.endpoint,
        "plan_sha256": served.plan_sha256,
        "prompts_sha256": _sha256_file(config.prompts),
        "trace_sha256": None if config.trace is None else _sha256_file(config.trace),
        "request_rate": None if config.trace is not None else rate,
        "burstiness": None if config.trace is not None else config.burstiness,
        "num_prompts": config.num_prompts,
        "max_concurrency": config.max_concurrency,
        "seed": config.seed,
        "send_categories": config.send_categories,
        "timeout_s": config.timeout_s,
    }


def default_result_dir(config: LoadConfig) -> Path:
    """``genedge-loadtest-<hash of the settings>`` in the working directory: the same command finds the same
    directory, so rerunning it resumes."""
    settings = {
        "url": config.base_url,
        "endpoint": config.endpoint,
        "prompts": str(config.prompts),
        "trace": None if config.trace is None else str(config.trace),
        "request_rate": str(config.request_rate),
        "burstiness": config.burstiness,
        "num_prompts": config.num_prompts,
        "max_concurrency": config.max_concurrency,
        "seed": config.seed,
        "send_categories": config.send_categories,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return Path(f"genedge-loadtest-{digest[:12]}")


def read_manifest(result_dir: str | Path) -> dict[str, Any]:
    """The load test's manifest (configuration, plan, table, offered demand).

    Raises:
        FileNotFoundError: no load test in ``result_dir``.
        ArtifactError: not a genedge load-test manifest.
    """
    path = Path(result_dir) / MANIFEST_NAME
    document = read_json(path, "a JSON load-test manifest")
    if not isinstance(document, dict) or document.get("kind") != LOADTEST_KIND:
        raise ArtifactError(str(path), "kind", f"expected {LOADTEST_KIND!r}")
    if document.get("schema_version") != LOADTEST_SCHEMA_VERSION:
        raise ArtifactError(str(path), "schema_version", f"expected {LOADTEST_SCHEMA_VERSION}")
    return document


def read_sessions(result_dir: str | Path) -> list[dict[str, Any]]:
    """Every run's session document (start, end, stats before and after), in order."""
    folder = Path(result_dir) / _SESSIONS_DIR
    return [read_json(path, "a JSON load-test session") for path in sorted(folder.glob("session-*.json"))]


def _check_same(result_dir: Path, recorded: Mapping[str, Any], identity: Mapping[str, Any]) -> None:
    for key, value in identity.items():
        if recorded.get(key) != value:
            raise LoadTestError(
                f"{result_dir}: holds a load test whose {key} is {recorded.get(key)!r}, but this one's is {value!r}; "
                f"rerun with the recorded settings to resume it, or choose another --result-dir"
            )


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([(name, kind) for name, kind in {**CLIENT_FIELDS, **RECORD_FIELDS}.items()])


def read_records(result_dir: str | Path) -> pd.DataFrame:
    """Every record of a load test (all sessions), one row per request index, with its ``clip_score`` and
    ``clip_truncated`` (null where unscored).

    Raises:
        ArtifactError: a record file that cannot be read, or an index recorded twice.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as parquet

    result_dir = Path(result_dir)
    parts = []
    for path in sorted((result_dir / _RECORDS_DIR).glob("part-*.parquet")):
        try:
            parts.append(parquet.read_table(path))
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise ArtifactError(str(path), "file", f"not a readable Parquet file ({err})") from err
    table = pa.concat_tables(parts) if parts else _schema().empty_table()
    records = table.to_pandas(types_mapper=None)
    twice = records["index"][records["index"].duplicated()]
    if len(twice):
        raise ArtifactError(str(result_dir / _RECORDS_DIR), "index", f"request {int(twice.iloc[0])} is recorded twice")
    scores = [parquet.read_table(p).to_pandas() for p in sorted((result_dir / _SCORES_DIR).glob("part-*.parquet"))]
    if scores:
        merged = pd.concat(scores).drop_duplicates("index", keep="last")
        records = records.merge(merged, on="index", how="left")
    else:
        records["clip_score"] = pd.Series(np.nan, index=records.index, dtype=float)
        records["clip_truncated"] = pd.Series(None, index=records.index, dtype=object)
    return records.sort_values("index", ignore_index=True)


class _Writer:
    """Collects records and writes them in small batches, each a new Parquet file."""

    def __init__(self, result_dir: Path, session: int, keep_images: bool) -> None:
        self.folder = result_dir / _RECORDS_DIR
        self.images = result_dir / _IMAGES_DIR
        self.session = session
        self.keep_images = keep_images
        self.pending: list[dict[str, Any]] = []
        self.number = 0
        self.last_flush = time.monotonic()
        self.schema = _schema()

    def add(self, row: dict[str, Any], image: bytes | None) -> None:
        if image is not None and self.keep_images:
            write_bytes_atomic(self.images / f"{row['index']:06d}.png", image)
        self.pending.append(row)
        if len(self.pending) >= RECORD_BATCH or time.monotonic() - self.last_flush >= FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as parquet

        self.last_flush = time.monotonic()
        if not self.pending:
            return
        table = pa.Table.from_pylist(self.pending, schema=self.schema)
        buffer = io.BytesIO()
        parquet.write_table(table, buffer)
        write_bytes_atomic(
            self.folder / f"part-{self.session:03d}-{self.number:05d}.parquet", buffer.getvalue(), replace=False
        )
        self.number += 1
        self.pending = []


# --------------------------------------------------------------------------- sending


def _body(config: LoadConfig, request: ScheduledRequest) -> tuple[str, dict[str, Any]]:
    if config.endpoint == "openai":
        body: dict[str, Any] = {"prompt": request.prompt, "n": 1, "response_format": "b64_json"}
        route = OPENAI_ROUTE
    else:
        body = {"prompt": request.prompt, "seed": request.seed}
        route = GENERATE_ROUTE
    if request.category is not None:
        body["category"] = request.category
    return config.base_url + route, body


def _parse_ok(config: LoadConfig, body: Any) -> tuple[bytes, Mapping[str, Any]]:
    """The image bytes and the server's record of a 200 answer."""
    if not isinstance(body, Mapping):
        raise ValueError("expected a JSON object")
    if config.endpoint == "openai":
        data, records = body.get("data"), body.get("genedge")
        if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], Mapping):
            raise ValueError("expected 'data' to hold one image")
        encoded = data[0].get("b64_json")
        record = records[0] if isinstance(records, list) and records and isinstance(records[0], Mapping) else {}
    else:
        encoded, record = body.get("image_png_b64"), body.get("record")
        record = record if isinstance(record, Mapping) else {}
    if not isinstance(encoded, str):
        raise ValueError("expected a base64 image")
    try:
        image = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"the image is not valid base64 ({err})") from err
    if not image.startswith(_PNG_MAGIC):
        raise ValueError("the image is not a PNG")
    return image, record


def _server_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, kind in RECORD_FIELDS.items():
        value = record.get(name)
        if value is not None:
            try:
                value = {"string": str, "double": float, "int64": int}[kind](value)
            except (TypeError, ValueError):
                value = None  # a field of another type is no measurement
        out[name] = value
    return out


def _error_fields(status: int, body: Any) -> tuple[str, str | None]:
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        error = body["error"]
        return f"HTTP {status}: {error.get('message')}", error.get("param")
    return f"HTTP {status}", None


async def _send(
    session: Any, config: LoadConfig, request: ScheduledRequest, clock: Callable[[], float]
) -> tuple[dict[str, Any], bytes | None]:
    import aiohttp

    url, body = _body(config, request)
    row: dict[str, Any] = {name: None for name in CLIENT_FIELDS}
    row.update(
        index=request.index,
        scheduled_s=request.time_s,
        prompt=request.prompt,
        requested_category=request.category,
        label_category=request.label_category,
        requested_seed=request.seed if config.endpoint == "genedge" else None,
    )
    row.update({name: None for name in RECORD_FIELDS})
    image = None
    sent = clock()
    row["sent_s"] = sent
    try:
        async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=config.timeout_s)) as response:
            payload = await response.read()
            status = response.status
            retry_after = response.headers.get("Retry-After")
        row["client_response_s"] = clock() - sent
        row["http_status"] = status
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = None
        if status == 200:
            try:
                image, record = _parse_ok(config, parsed)
            except ValueError as err:
                row.update(status="error", error=f"HTTP 200 but {err}")
            else:
                row.update(_server_fields(record))
                row.update(status="ok", received_sha256=hashlib.sha256(image).hexdigest())
        else:
            message, param = _error_fields(status, parsed)
            row.update(status="rejected" if status == 503 else "error", error=message, error_param=param)
            if retry_after is not None:
                try:
                    row["retry_after_s"] = float(retry_after)
                except ValueError:
                    pass  # an HTTP-date; the seconds are what a rate study reads
    except asyncio.TimeoutError:
        row.update(status="timeout", client_response_s=clock() - sent, error=f"no answer within {config.timeout_s:g} s")
    except aiohttp.ClientError as err:
        row.update(status="error", client_response_s=clock() - sent, error=f"{type(err).__name__}: {err}")
    return row, image


async def _run(
    config: LoadConfig,
    todo: Sequence[ScheduledRequest],
    writer: _Writer,
    progress: Callable[[int], None] | None,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, int]]:
    import aiohttp

    outcomes = dict.fromkeys(_STATUSES, 0)
    # No pool limit of aiohttp's own: the open loop (and --max-concurrency's semaphore) decide what is in flight.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        before = await _stats(session, config.base_url)
        loop = asyncio.get_running_loop()
        shift = todo[0].time_s if todo else 0.0
        origin = loop.time() - shift

        def clock() -> float:
            return loop.time() - origin

        slots = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None

        async def one(request: ScheduledRequest) -> None:
            if slots is None:
                row, image = await _send(session, config, request, clock)
            else:
                async with slots:
                    row, image = await _send(session, config, request, clock)
            row["session"] = writer.session
            outcomes[row["status"]] += 1
            writer.add(row, image)
            if progress is not None:
                progress(1)

        tasks = []
        for request in todo:
            wait = request.time_s - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(request)))
        await asyncio.gather(*tasks)
        after = await _stats(session, config.base_url)
    return before, after, outcomes


def run_loadtest(
    config: LoadConfig,
    result_dir: str | Path,
    *,
    keep_images: bool = False,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[Schedule, int, int], None] | None = None,
) -> LoadTestRun:
    """Send a load test's requests to a served plan, recording each as it completes.

    A directory that holds this configuration's test is resumed: recorded indices are not sent again.

    Args:
        config: what to send.
        result_dir: where the records go (created when missing).
        keep_images: keep each image until it is scored (``--clip-score``), even without ``save_images``.
        progress: called with 1 as each request completes (a progress bar's ``update``).
        on_start: called with the schedule, the requests to send and the ones already recorded, before sending.

    Raises:
        LoadTestError: an unreachable or foreign server, or a directory holding another configuration.
        ArtifactError: a malformed prompt file, trace, plan or table (naming the file and field).
        FileNotFoundError: a missing prompt file or trace.
    """
    from genedge.contract.prompts import read_prompt_file

    result_dir = Path(result_dir)
    prompts = read_prompt_file(config.prompts)
    if config.trace is not None and not Path(config.trace).is_file():
        raise FileNotFoundError(f"{config.trace}: expected a trace file, but there is no such file")
    served = fetch_plan(config.base_url)
    schedule = build_schedule(config, prompts, served.plan, served.table)
    identity = _identity(config, served)
    manifest_path = result_dir / MANIFEST_NAME
    if manifest_path.exists():
        _check_same(result_dir, read_manifest(result_dir)["config"], identity)
    else:
        manifest = {
            "kind": LOADTEST_KIND,
            "schema_version": LOADTEST_SCHEMA_VERSION,
            "config": identity,
            "files": {"prompts": str(config.prompts), "trace": None if config.trace is None else str(config.trace)},
            "schedule": {
                "arrivals": schedule.arrivals,
                "duration_s": schedule.duration_s,
                "demand": dict(schedule.demand),
                "requests": len(schedule.requests),
                "unplaced": schedule.unplaced,
            },
            "plan": served.plan,
            "table": served.table_document,
            "served": served.served,
        }
        write_text_atomic(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    done = set()
    if (result_dir / _RECORDS_DIR).is_dir():
        done = set(read_records(result_dir)["index"].tolist())
    todo = [r for r in schedule.requests if r.index not in done]
    session = len(read_sessions(result_dir))
    if on_start is not None:
        on_start(schedule, len(todo), len(done))
    writer = _Writer(result_dir, session, keep_images or config.save_images)
    document: dict[str, Any] = {"session": session, "started_unix": time.time(), "to_send": len(todo)}
    session_path = result_dir / _SESSIONS_DIR / f"session-{session:03d}.json"
    write_text_atomic(session_path, json.dumps(document, indent=2) + "\n")
    try:
        before, after, outcomes = asyncio.run(_run(config, todo, writer, progress))
    finally:
        writer.flush()  # an interrupted run keeps what completed
    document.update(ended_unix=time.time(), stats_before=before, stats_after=after, outcomes=outcomes)
    write_text_atomic(session_path, json.dumps(document, indent=2) + "\n")
    return LoadTestRun(result_dir, session, schedule, len(todo), len(done), outcomes, served)


# --------------------------------------------------------------------------- CLIPScore


def score_images(
    result_dir: str | Path,
    *,
    backbone: str | None = None,
    pretrained: str | None = "table",
    device: str = "cpu",
    batch_size: int = 16,
    keep_images: bool = False,
) -> int:
    """Score every recorded image not yet scored against its prompt, after the run (so scoring never slows
    the open loop); the scores go to a new file under ``scores/``.

    Args:
        result_dir: the load test's directory (images under ``images/``, kept during the run).
        backbone / pretrained: the CLIP backbone (default: the table's ``clip_convention``, so the scores
            are comparable with the table's); ``pretrained=None`` is random weights (``replica:`` tests).
        device: the torch device to score on.
        batch_size: images per forward pass.
        keep_images: keep the PNG files after scoring (``--save-images``); otherwise they are removed.

    Returns:
        The number of images scored.

    Raises:
        ImportError: torch or open_clip is missing (``pip install "genedge[profile]"``).
    """
    import pandas as pd
    from PIL import Image

    from genedge.profiler.clipscore import ClipScorer

    result_dir = Path(result_dir)
    manifest = read_manifest(result_dir)
    convention = manifest["table"].get("clip_convention", {})
    if backbone is None:
        backbone = convention.get("backbone")
    if pretrained == "table":
        pretrained = convention.get("pretrained")
    records = read_records(result_dir)
    todo = records[(records["status"] == "ok") & records["clip_score"].isna()]
    images = result_dir / _IMAGES_DIR
    todo = todo[[(images / f"{i:06d}.png").is_file() for i in todo["index"]]]
    if todo.empty:
        return 0
    import torch

    scorer = ClipScorer(backbone, pretrained, device=torch.device(device))
    scores, truncated = [], []
    for start in range(0, len(todo), batch_size):
        chunk = todo.iloc[start : start + batch_size]
        pictures = []
        for i in chunk["index"]:
            with Image.open(images / f"{i:06d}.png") as picture:
                pictures.append(picture.convert("RGB"))
        got, cut = scorer.score(pictures, chunk["prompt"].tolist())
        scores.extend(got)
        truncated.extend(cut)
    frame = pd.DataFrame({"index": todo["index"].to_numpy(), "clip_score": scores, "clip_truncated": truncated})
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    number = len(list((result_dir / _SCORES_DIR).glob("part-*.parquet")))
    write_bytes_atomic(result_dir / _SCORES_DIR / f"part-{number:03d}.parquet", buffer.getvalue(), replace=False)
    if not keep_images:
        for i in todo["index"]:
            (images / f"{i:06d}.png").unlink(missing_ok=True)
    return len(frame)
