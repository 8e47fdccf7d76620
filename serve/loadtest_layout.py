"""A load test's result directory: where each file lies, and the append-only writing that makes resume work.

Layout (append-only, so a killed run loses at most the records not yet flushed)::

    loadtest.json                    the manifest (LoadTestManifest): identity, configuration, plan, table, demand
    result.json                      the measured-against-predicted comparison (--save-result), rewritten
    sessions/session-NNN.json        one per run of the command (SessionDocument)
    records/part-NNN-MMMMM.parquet   records of session NNN as they complete, in small batches, never rewritten
    scores/part-NNN.parquet          CLIPScores of the images (--clip-score), by request index
    images/IIIIII.png                images (--save-images; or until scored)
    .lock                            held by the one process writing the directory

A run resumes by index: the indices already in ``records/`` are not sent again. Every record, score and
session carries its test's ``test_id`` and ``settings_sha256``; rows of another test (a file copied in)
are named by :func:`audit_records` and never read as the test's. Record and score files are checked on
read, column by column: a missing column, a wrong type, or a time that is NaN, infinite or negative is
an :class:`~genedge.contract.files.ArtifactError` naming the file, the row and the field.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genedge.contract.files import (
    ArtifactError,
    read_json,
    remove_temporaries,
    write_bytes_atomic,
    write_new_parquet,
    write_text_atomic,
)
from genedge.contract.locks import hold_lock
from genedge.serve.loadtest_document import LoadTestIdentity, LoadTestManifest, SessionDocument
from genedge.serve.protocol import RECORD_FIELDS

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from genedge.optimizer.model import TraceReplay
    from genedge.serve.loadtest_client import ServedPlan
    from genedge.serve.loadtest_config import LoadConfig

__all__ = [
    "CLIENT_FIELDS",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "RECORD_BATCH",
    "RECORD_COLUMNS",
    "RESULT_NAME",
    "SCORE_FIELDS",
    "STATUSES",
    "ForeignFile",
    "RecordAudit",
    "RecordWriter",
    "audit_records",
    "default_result_dir",
    "identity",
    "image_path",
    "next_session",
    "read_manifest",
    "read_records",
    "read_sessions",
    "recorded_tests",
    "writing",
    "write_manifest",
    "write_result",
    "write_scores",
    "write_session",
]

MANIFEST_NAME = "loadtest.json"
RESULT_NAME = "result.json"
LOCK_NAME = ".lock"
_SESSIONS_DIR = "sessions"
_RECORDS_DIR = "records"
_SCORES_DIR = "scores"
_IMAGES_DIR = "images"
#: Records are flushed to a new Parquet file every this many, or ...
RECORD_BATCH = 16
#: ... when this many seconds have passed since the last flush and another record arrives.
FLUSH_INTERVAL_S = 1.0

#: The client's fields of a record (beside :data:`genedge.serve.protocol.RECORD_FIELDS`, the server's, null
#: when the server sent none). Times are seconds; scheduled_s and sent_s from the schedule's origin.
CLIENT_FIELDS: dict[str, str] = {
    "test_id": "string",  # the test's (its manifest's test_id): a row of another test is not this test's
    "settings_sha256": "string",  # the hash of the settings it was sent with (the manifest's)
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
#: A record's ``status``.
STATUSES = ("ok", "rejected", "error", "timeout")
#: The columns of a score file (``scores/``): the test's identity, the request index and its CLIPScore.
SCORE_FIELDS: dict[str, str] = {
    "test_id": "string",
    "settings_sha256": "string",
    "index": "int64",
    "clip_score": "double",
    "clip_truncated": "bool",  # the prompt was cut to CLIP's context length
}
#: The columns of a record file.
RECORD_COLUMNS: dict[str, str] = {**CLIENT_FIELDS, **RECORD_FIELDS}
#: Record and score columns that may not be null.
_REQUIRED = ("test_id", "settings_sha256", "index", "session", "status", "scheduled_s", "sent_s", "client_response_s")
#: Record and score columns of seconds (or a CLIPScore): finite and >= 0 where not null.
_NON_NEGATIVE = (
    "scheduled_s",
    "sent_s",
    "client_response_s",
    "retry_after_s",
    "queue_wait_s",
    "service_s",
    "response_s",
    "clip_score",
)
_SESSION_NAME = re.compile(r"^session-(?P<session>\d+)\.json$")
_PART_NAME = re.compile(r"^part-(?P<session>\d+)-\d+\.parquet$")
#: A column added while a file is checked: each row's number in the file, which an error names.
_FILE_ROW = "__row"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def identity(config: LoadConfig, served: ServedPlan) -> LoadTestIdentity:
    """The settings a resumed test must share with the recorded one."""
    traced = config.trace is not None
    return LoadTestIdentity(
        url=config.base_url,
        endpoint=config.endpoint,
        plan_sha256=served.plan_sha256,
        prompts_sha256=_sha256_file(config.prompts),
        trace_sha256=None if config.trace is None else _sha256_file(config.trace),
        request_rate=None if traced else config.request_rate,
        burstiness=None if traced else config.burstiness,
        num_prompts=config.num_prompts,
        max_concurrency=config.max_concurrency,
        seed=config.seed,
        send_categories=config.send_categories,
        timeout_s=config.timeout_s,
        trace_replay=None if config.trace is None else _replay(config).to_dict(),
    )


def _replay(config: LoadConfig) -> TraceReplay:
    from genedge.optimizer.model import TraceReplay

    return TraceReplay() if config.trace_replay is None else config.trace_replay


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
    if config.trace is not None:
        settings["trace_replay"] = _replay(config).to_dict()
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return Path(f"genedge-loadtest-{digest[:12]}")


def read_manifest(result_dir: str | Path) -> LoadTestManifest:
    """The load test's manifest (configuration, plan, table, offered demand).

    Raises:
        FileNotFoundError: no load test in ``result_dir``.
        ArtifactError: not a genedge load-test manifest, or a field missing or of the wrong type.
    """
    path = Path(result_dir) / MANIFEST_NAME
    return LoadTestManifest.from_dict(read_json(path, "a JSON load-test manifest"), str(path))


def write_manifest(result_dir: Path, manifest: LoadTestManifest) -> Path:
    """Write the manifest (at a test's first run); returns its path."""
    return write_text_atomic(
        result_dir / MANIFEST_NAME, json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n"
    )


@contextlib.contextmanager
def writing(result_dir: Path) -> Iterator[None]:
    """Hold the result directory's lock (``.lock``) for the block, after removing the temporary files of
    writes a killed run left unfinished: one process writes a load test at a time.

    Raises:
        FolderBusyError: another process is writing the directory (naming it and the holder).
    """
    busy = (
        f"{result_dir}: another genedge loadtest ({{holder}}) is writing this load test; wait for it to end, "
        "or choose another --result-dir"
    )
    with hold_lock(result_dir / LOCK_NAME, busy):
        remove_temporaries(result_dir, recursive=True)
        yield


def _session_files(result_dir: Path) -> list[Path]:
    return sorted(p for p in (result_dir / _SESSIONS_DIR).glob("session-*.json") if _SESSION_NAME.match(p.name))


def _part_files(result_dir: Path, folder: str) -> list[Path]:
    return sorted((result_dir / folder).glob("part-*.parquet"))


def next_session(result_dir: Path) -> int:
    """The number of a new run: one past every number a session file or a record file's name holds, so that
    a deleted session file never makes a number, and its files' names, used twice."""
    numbers = [int(_SESSION_NAME.match(p.name)["session"]) for p in _session_files(result_dir)]
    numbers += [int(m["session"]) for p in _part_files(result_dir, _RECORDS_DIR) if (m := _PART_NAME.match(p.name))]
    return max(numbers, default=-1) + 1


def _read_session_files(result_dir: Path) -> list[tuple[Path, SessionDocument]]:
    return [
        (path, SessionDocument.from_dict(read_json(path, "a JSON load-test session"), str(path)))
        for path in _session_files(result_dir)
    ]


def read_sessions(result_dir: str | Path) -> list[SessionDocument]:
    """The test's session documents (start, end, stats before and after), in order; another test's are
    left out (:func:`audit_records` names them).

    Raises:
        ArtifactError: a manifest or session document that is malformed, naming the file and field.
    """
    manifest = read_manifest(result_dir)
    found = _read_session_files(Path(result_dir))
    return [s for _, s in found if manifest.owns(s.test_id, s.settings_sha256)]


def write_session(result_dir: Path, session: SessionDocument) -> Path:
    """Write (or rewrite, at its end) a run's session document; returns its path."""
    path = result_dir / _SESSIONS_DIR / f"session-{session.session:03d}.json"
    return write_text_atomic(path, json.dumps(session.to_dict(), indent=2) + "\n")


def write_result(result_dir: str | Path, comparison: Mapping[str, Any]) -> Path:
    """Write the comparison document (:func:`genedge.serve.measured.comparison_to_dict`); returns its path."""
    return write_text_atomic(Path(result_dir) / RESULT_NAME, json.dumps(comparison, indent=2) + "\n")


def image_path(result_dir: Path, index: int) -> Path:
    """Where request ``index``'s image is kept."""
    return result_dir / _IMAGES_DIR / f"{index:06d}.png"


#: Record columns added after record files were first written: a file without one reads it as null.
_LATER_COLUMNS = frozenset({"share"})


def _schema(fields: Mapping[str, str]) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([(name, pa.type_for_alias(kind)) for name, kind in fields.items()])


def _read_typed(path: Path, fields: Mapping[str, str]) -> pa.Table:
    """A record or score file's ``fields``, each checked for its type."""
    import pyarrow as pa
    import pyarrow.parquet as parquet

    try:
        table = parquet.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise ArtifactError(str(path), "file", f"not a readable Parquet file ({err})") from err
    schema = _schema(fields)
    for column, kind in zip(schema.names, schema.types):
        if column not in table.column_names and column in _LATER_COLUMNS:
            table = table.append_column(pa.field(column, kind), pa.nulls(table.num_rows, kind))
        if column not in table.column_names:
            raise ArtifactError(str(path), column, f"missing column; the file's columns must include {list(fields)}")
        found = table.schema.field(column).type
        if found != kind:
            raise ArtifactError(str(path), column, f"expected a column of {kind}, but got {found}")
    return table.select(list(fields))


def _own_rows(table: pa.Table, manifest: LoadTestManifest) -> pa.Table:
    import pyarrow.compute as pc

    mine = pc.and_(
        pc.equal(table["test_id"], manifest.test_id), pc.equal(table["settings_sha256"], manifest.settings_sha256)
    )
    return table.filter(pc.fill_null(mine, False))


def _row_error(path: Path, table: pa.Table, column: str, row: int, expected: str) -> ArtifactError:
    """The error of ``table``'s ``row``, named by its row in the file (:data:`_FILE_ROW`) and its request."""
    index, value = table["index"][row].as_py(), table[column][row].as_py()
    where = f"{column} row {table[_FILE_ROW][row].as_py()}"
    return ArtifactError(str(path), where, f"request {index}: expected {expected}, but got {value!r}")


def _check_rows(path: Path, table: pa.Table, requests: int) -> None:
    """Refuse a value no run writes: a missing one, a request index outside the schedule, an unknown status,
    or a time (a CLIPScore) that is NaN, infinite or negative."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    for column in (c for c in _REQUIRED if c in table.column_names):
        missing = table[column].is_null().to_numpy(zero_copy_only=False)
        if missing.any():
            raise _row_error(path, table, column, int(np.argmax(missing)), "a value")
    outside = ~pc.and_(pc.greater_equal(table["index"], 0), pc.less(table["index"], requests)).to_numpy(
        zero_copy_only=False
    )
    if outside.any():
        raise _row_error(path, table, "index", int(np.argmax(outside)), f"an index of the schedule's {requests}")
    if "status" in table.column_names:
        unknown = ~pc.is_in(table["status"], value_set=pa.array(STATUSES, pa.string())).to_numpy(zero_copy_only=False)
        if unknown.any():
            raise _row_error(path, table, "status", int(np.argmax(unknown)), f"one of {list(STATUSES)}")
    for column in (c for c in _NON_NEGATIVE if c in table.column_names):
        values = pc.fill_null(table[column], 0.0).to_numpy(zero_copy_only=False)
        bad = ~(np.isfinite(values) & (values >= 0))
        if bad.any():
            raise _row_error(path, table, column, int(np.argmax(bad)), "a finite number >= 0")


@dataclass(frozen=True)
class ForeignFile:
    """A file in a result directory that holds another test's rows, or is another test's session.

    Attributes:
        path: the file.
        rows: its rows of another test or other settings (1 for a session document).
        tests: the ``test_id (settings …)`` of each test they are of.
    """

    path: Path
    rows: int
    tests: tuple[str, ...]


@dataclass(frozen=True)
class RecordAudit:
    """What a result directory holds beside the test's own records and sessions.

    Attributes:
        indices: the request indices the test has recorded (a resumed run sends the others).
        foreign: each file holding records, scores or a session of another test or of other settings
            (copied in, or left by a test run into the directory before): never counted as the test's.
    """

    indices: frozenset[int]
    foreign: tuple[ForeignFile, ...]

    @property
    def own(self) -> int:
        """The test's records."""
        return len(self.indices)

    def problems(self) -> list[str]:
        """One line per foreign file, empty when there is none."""
        return [
            f"{f.path}: {f.rows} row(s) of another load test ({', '.join(f.tests)}) left out; remove the file"
            for f in self.foreign
        ]


def _tests(table: pa.Table) -> dict[tuple[str | None, str | None], int]:
    """(test_id, settings_sha256) → rows, of a record or score table."""
    counts: dict[tuple[str | None, str | None], int] = {}
    for pair in zip(table["test_id"].to_pylist(), table["settings_sha256"].to_pylist()):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def _foreign(path: Path, tests: Mapping[tuple[str | None, str | None], int]) -> ForeignFile:
    names = tuple(f"test {test}, settings {(sha or '')[:12]}" for test, sha in sorted(tests, key=str))
    return ForeignFile(path, sum(tests.values()), names)


def audit_records(result_dir: str | Path) -> RecordAudit:
    """The request indices a result directory holds records of, and the files of another test there (their rows
    are never read as the test's).

    Raises:
        ArtifactError: a malformed manifest, session, record or score file, naming the file and field, or an
            index recorded twice (naming the files).
    """
    result_dir = Path(result_dir)
    manifest = read_manifest(result_dir)
    records, foreign_records = _read_parts(result_dir, manifest, _RECORDS_DIR, RECORD_COLUMNS)
    _check_once(result_dir, manifest, records)
    _, foreign_scores = _read_parts(result_dir, manifest, _SCORES_DIR, SCORE_FIELDS)
    foreign_sessions = tuple(
        _foreign(path, {(session.test_id, session.settings_sha256): 1})
        for path, session in _read_session_files(result_dir)
        if not manifest.owns(session.test_id, session.settings_sha256)
    )
    indices = frozenset(records["index"].to_pylist())
    return RecordAudit(indices, foreign_records + foreign_scores + foreign_sessions)


def recorded_tests(result_dir: Path) -> dict[tuple[str | None, str | None], int]:
    """(test_id, settings_sha256) → records, of every record file in ``result_dir`` (read without a
    manifest: what rebuilds a deleted one).

    Raises:
        ArtifactError: a record file that cannot be read, or lacks a column, naming it.
    """
    counts: dict[tuple[str | None, str | None], int] = {}
    for path in _part_files(result_dir, _RECORDS_DIR):
        for pair, n in _tests(_read_typed(path, RECORD_COLUMNS)).items():
            counts[pair] = counts.get(pair, 0) + n
    return counts


def _read_parts(
    result_dir: Path, manifest: LoadTestManifest, folder: str, fields: Mapping[str, str]
) -> tuple[pa.Table, tuple[ForeignFile, ...]]:
    """The test's rows of every file in ``folder``, checked, in one table; and the files holding another
    test's rows. Each file is read once."""
    import pyarrow as pa

    tables, foreign = [], []
    for path in _part_files(result_dir, folder):
        table = _read_typed(path, fields)
        others = {pair: n for pair, n in _tests(table).items() if not manifest.owns(*pair)}
        if others:
            foreign.append(_foreign(path, others))
        own = _own_rows(table.append_column(_FILE_ROW, pa.array(range(len(table)), pa.int64())), manifest)
        _check_rows(path, own, manifest.schedule.requests)
        tables.append(own.drop_columns([_FILE_ROW]))
    return (pa.concat_tables(tables) if tables else _schema(fields).empty_table()), tuple(foreign)


def _merge_scores(result_dir: Path, manifest: LoadTestManifest, records: pd.DataFrame) -> pd.DataFrame:
    scores = _read_parts(result_dir, manifest, _SCORES_DIR, SCORE_FIELDS)[0].to_pandas()
    scores = scores.drop(columns=["test_id", "settings_sha256"]).drop_duplicates("index", keep="last")
    return records.merge(scores, on="index", how="left")


def _check_once(result_dir: Path, manifest: LoadTestManifest, records: pa.Table) -> None:
    """Refuse a request index the test's records hold twice, naming the files that hold it."""
    import pyarrow.compute as pc

    counts = pc.value_counts(records["index"])
    twice = [entry["values"].as_py() for entry in counts if entry["counts"].as_py() > 1]
    if not twice:
        return
    index = min(twice)
    files = [
        path.name
        for path in _part_files(result_dir, _RECORDS_DIR)
        if pc.any(pc.equal(_own_rows(_read_typed(path, RECORD_COLUMNS), manifest)["index"], index)).as_py()
    ]
    raise ArtifactError(
        str(result_dir / _RECORDS_DIR), "index", f"request {index} is recorded twice (in {', '.join(files)})"
    )


def read_records(result_dir: str | Path) -> pd.DataFrame:
    """The test's records (all sessions), one row per request index, with its ``clip_score`` and
    ``clip_truncated`` (null where unscored). Rows of another test are left out (:func:`audit_records`
    names their files).

    Raises:
        ArtifactError: a malformed manifest, a record or score file that cannot be read, lacks a column, has
            one of another type or a value no run writes (naming the file, the row and the field), or an
            index recorded twice (naming the files).
    """
    result_dir = Path(result_dir)
    manifest = read_manifest(result_dir)
    records, _ = _read_parts(result_dir, manifest, _RECORDS_DIR, RECORD_COLUMNS)
    _check_once(result_dir, manifest, records)
    return _merge_scores(result_dir, manifest, records.to_pandas()).sort_values("index", ignore_index=True)


def write_scores(result_dir: Path, manifest: LoadTestManifest, frame: pd.DataFrame) -> Path:
    """Write CLIPScores (``index``, ``clip_score``, ``clip_truncated``) as the next part under ``scores/``,
    each row carrying the test's identity."""
    import pyarrow as pa

    frame = frame.assign(test_id=manifest.test_id, settings_sha256=manifest.settings_sha256)
    table = pa.Table.from_pandas(frame[list(SCORE_FIELDS)], schema=_schema(SCORE_FIELDS), preserve_index=False)
    path, _ = write_new_parquet(table, lambda n: result_dir / _SCORES_DIR / f"part-{n:03d}.parquet", 0)
    return path


class RecordWriter:
    """Collects one run's records and writes them in small batches, each a new Parquet file; every record
    carries the test's identity and the run's session number."""

    def __init__(self, result_dir: Path, manifest: LoadTestManifest, session: int, keep_images: bool) -> None:
        self.result_dir = result_dir
        self.folder = result_dir / _RECORDS_DIR
        self.owner = {"test_id": manifest.test_id, "settings_sha256": manifest.settings_sha256, "session": session}
        self.session = session
        self.keep_images = keep_images
        self.pending: list[dict[str, Any]] = []
        self.number = 0
        self.last_flush = time.monotonic()
        self.schema = _schema(RECORD_COLUMNS)

    def add(self, row: dict[str, Any], image: bytes | None) -> None:
        """Take one record (and its image, kept when asked); flush a full or an old batch."""
        if image is not None and self.keep_images:
            write_bytes_atomic(image_path(self.result_dir, row["index"]), image)
        self.pending.append({**row, **self.owner})
        if len(self.pending) >= RECORD_BATCH or time.monotonic() - self.last_flush >= FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Write the pending records as a new part file (the next free name of this session)."""
        self.last_flush = time.monotonic()
        if not self.pending:
            return
        import pyarrow as pa

        table = pa.Table.from_pylist(self.pending, schema=self.schema)
        _, number = write_new_parquet(
            table, lambda n: self.folder / f"part-{self.session:03d}-{n:05d}.parquet", self.number
        )
        self.number = number + 1
        self.pending = []
