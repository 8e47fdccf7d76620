"""A load test's result directory: where each file lies, and the append-only writing that makes resume work.

Layout (append-only, so a killed run loses at most the records not yet flushed)::

    loadtest.json                    the manifest (LoadTestManifest): configuration, plan, table, demand
    result.json                      the measured-against-predicted comparison (--save-result), rewritten
    sessions/session-NNN.json        one per run of the command (SessionDocument)
    records/part-NNN-MMMMM.parquet   records as they complete, in small batches, never rewritten
    scores/part-NNN.parquet          CLIPScores of the images (--clip-score), by request index
    images/IIIIII.png                images (--save-images; or until scored)

A run resumes by index: the indices already in ``records/`` are not sent again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genedge.contract.files import ArtifactError, read_json, write_bytes_atomic, write_new_parquet, write_text_atomic
from genedge.serve.loadtest_document import LoadTestIdentity, LoadTestManifest, SessionDocument
from genedge.serve.protocol import RECORD_FIELDS

if TYPE_CHECKING:
    import pandas as pd

    from genedge.serve.loadtest_client import ServedPlan
    from genedge.serve.loadtest_config import LoadConfig

__all__ = [
    "CLIENT_FIELDS",
    "MANIFEST_NAME",
    "RECORD_BATCH",
    "RESULT_NAME",
    "STATUSES",
    "RecordWriter",
    "default_result_dir",
    "identity",
    "image_path",
    "read_manifest",
    "read_records",
    "read_sessions",
    "recorded_indices",
    "write_manifest",
    "write_result",
    "write_scores",
    "write_session",
]

MANIFEST_NAME = "loadtest.json"
RESULT_NAME = "result.json"
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
    )


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


def read_sessions(result_dir: str | Path) -> list[SessionDocument]:
    """Every run's session document (start, end, stats before and after), in order."""
    folder = Path(result_dir) / _SESSIONS_DIR
    return [
        SessionDocument.from_dict(read_json(path, "a JSON load-test session"), str(path))
        for path in sorted(folder.glob("session-*.json"))
    ]


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


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([(name, kind) for name, kind in {**CLIENT_FIELDS, **RECORD_FIELDS}.items()])


def _merge_scores(result_dir: Path, records: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd
    import pyarrow.parquet as parquet

    scores = [parquet.read_table(p).to_pandas() for p in sorted((result_dir / _SCORES_DIR).glob("part-*.parquet"))]
    if scores:
        merged = pd.concat(scores).drop_duplicates("index", keep="last")
        return records.merge(merged, on="index", how="left")
    records["clip_score"] = pd.Series(np.nan, index=records.index, dtype=float)
    records["clip_truncated"] = pd.Series(None, index=records.index, dtype=object)
    return records


def read_records(result_dir: str | Path) -> pd.DataFrame:
    """Every record of a load test (all sessions), one row per request index, with its ``clip_score`` and
    ``clip_truncated`` (null where unscored).

    Raises:
        ArtifactError: a record file that cannot be read, or an index recorded twice.
    """
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
    return _merge_scores(result_dir, records).sort_values("index", ignore_index=True)


def recorded_indices(result_dir: Path) -> set[int]:
    """The request indices earlier runs recorded: a resumed run sends the others."""
    if not (result_dir / _RECORDS_DIR).is_dir():
        return set()
    return set(read_records(result_dir)["index"].tolist())


def write_scores(result_dir: Path, frame: pd.DataFrame) -> Path:
    """Write CLIPScores (``index``, ``clip_score``, ``clip_truncated``) as the next part under ``scores/``."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    path, _ = write_new_parquet(table, lambda n: result_dir / _SCORES_DIR / f"part-{n:03d}.parquet", 0)
    return path


class RecordWriter:
    """Collects one run's records and writes them in small batches, each a new Parquet file."""

    def __init__(self, result_dir: Path, session: int, keep_images: bool) -> None:
        self.result_dir = result_dir
        self.folder = result_dir / _RECORDS_DIR
        self.session = session
        self.keep_images = keep_images
        self.pending: list[dict[str, Any]] = []
        self.number = 0
        self.last_flush = time.monotonic()
        self.schema = _schema()

    def add(self, row: dict[str, Any], image: bytes | None) -> None:
        """Take one record (and its image, kept when asked); flush a full or an old batch."""
        if image is not None and self.keep_images:
            write_bytes_atomic(image_path(self.result_dir, row["index"]), image)
        self.pending.append(row)
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
