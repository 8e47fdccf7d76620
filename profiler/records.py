"""Profile records: append-only Parquet shards and the run manifest (DESIGN §2.2).

A run directory holds ``manifest.json`` and ``records/shard-<rank>-<NNNNN>.parquet``. Each shard
is written once, atomically (temporary file, then ``os.replace``), and never rewritten, so a
killed run loses at most the images in flight and a rerun skips every key already recorded.
The key of a row is ``(model_key, steps, seed, prompt_id)``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from genedge.profiler._imports import require

__all__ = [
    "SCHEMA_VERSION",
    "KEY_COLUMNS",
    "STATUSES",
    "record_schema",
    "ShardWriter",
    "read_records",
    "recorded_keys",
    "write_atomic",
    "write_manifest",
    "read_manifest",
    "summarize_run",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
KEY_COLUMNS: tuple[str, ...] = ("model_key", "steps", "seed", "prompt_id")
STATUSES: tuple[str, ...] = ("ok", "oom", "error")
MANIFEST_NAME = "manifest.json"
RECORDS_DIR = "records"
_SHARD = re.compile(r"^shard-(\d+)-(\d{5})\.parquet$")
_MANIFEST_FIELDS = (
    "schema_version",
    "run_id",
    "device",
    "versions",
    "dtype",
    "resolution",
    "guidance_scale",
    "scheduler",
    "models",
    "batch_size",
    "seeds",
    "warmup",
    "clip_convention",
    "prompt_set",
    "nvml",
)

# (name, arrow type factory name, nullable); types are built lazily so importing needs no pyarrow.
_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("run_id", "string", False),
    ("model_key", "string", False),
    ("model_revision", "string", True),
    ("is_replica", "bool_", False),
    ("steps", "int32", False),
    ("num_timesteps", "int32", True),
    ("seed", "int64", False),
    ("batch_size", "int32", False),
    ("prompt_id", "string", False),
    ("prompt", "string", False),
    ("category", "string", False),
    ("challenge", "string", True),
    ("p2_category", "string", True),
    ("step_latencies_s", "list_float64", True),
    ("text_encode_s", "float64", True),
    ("denoise_s", "float64", True),
    ("decode_s", "float64", True),
    ("total_s", "float64", True),
    ("clip_score", "float64", True),
    ("prompt_truncated", "bool_", False),
    ("peak_torch_allocated_bytes", "int64", True),
    ("peak_torch_reserved_bytes", "int64", True),
    ("peak_nvml_process_bytes", "int64", True),
    ("peak_nvml_device_bytes", "int64", True),
    ("nvml_note", "string", True),
    ("image_sha256", "string", True),
    ("status", "string", False),
    ("error", "string", True),
    ("device_name", "string", False),
    ("dtype", "string", False),
    ("resolution", "int32", False),
    ("guidance_scale", "float64", False),
    ("clip_backbone", "string", False),
    ("clip_pretrained", "string", False),
    ("timestamp", "string", False),
)


def write_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a temporary file and a rename, so readers and a
    resumed run see the whole file or none of it (also when several processes write)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def record_schema() -> Any:
    """The Arrow schema of a record row (one row per generated image)."""
    pa = require("pyarrow")
    types = {"list_float64": pa.list_(pa.float64())}
    return pa.schema(
        [pa.field(name, types.get(kind) or getattr(pa, kind)(), nullable) for name, kind, nullable in _COLUMNS]
    )


def _shards(run_dir: Path) -> list[Path]:
    folder = run_dir / RECORDS_DIR
    return sorted(p for p in folder.glob("shard-*.parquet") if _SHARD.match(p.name)) if folder.is_dir() else []


class ShardWriter:
    """Writes one process's rows as new shards ``shard-<rank>-<NNNNN>.parquet``.

    Args:
        run_dir: The run directory.
        rank: This process's rank; ranks never share a shard name, so processes need no locks.
    """

    def __init__(self, run_dir: str | Path, rank: int = 0) -> None:
        self.folder = Path(run_dir) / RECORDS_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rank = rank
        numbers = [
            int(m.group(2)) for p in self.folder.iterdir() if (m := _SHARD.match(p.name)) and int(m.group(1)) == rank
        ]
        self._next = max(numbers, default=-1) + 1

    def write(self, rows: list[Mapping[str, Any]]) -> Path | None:
        """Write ``rows`` as one new shard, atomically; returns its path (``None`` for no rows).

        Raises:
            ValueError: When a row has a status outside ``STATUSES`` or lacks a column.
        """
        if not rows:
            return None
        pa = require("pyarrow")
        parquet = require("pyarrow.parquet")
        for row in rows:
            if row.get("status") not in STATUSES:
                raise ValueError(f"Expected a record status in {STATUSES}, but got {row.get('status')!r}")
        schema = record_schema()
        try:
            table = pa.Table.from_pylist([dict(row) for row in rows], schema=schema)
        except (KeyError, pa.ArrowException) as err:
            raise ValueError(
                f"Expected rows with the record columns {schema.names}, but got {sorted(rows[0])}: {err}"
            ) from err
        target = self.folder / f"shard-{self.rank}-{self._next:05d}.parquet"
        sink = pa.BufferOutputStream()
        parquet.write_table(table, sink)
        write_atomic(target, sink.getvalue().to_pybytes())
        self._next += 1
        logger.debug("wrote %d rows to %s", len(rows), target)
        return target


def read_records(run_dir: str | Path) -> Any:
    """All rows of a run, from every rank's shards, as a pandas DataFrame (empty with the columns when none)."""
    run_dir = Path(run_dir)
    pa = require("pyarrow")
    parquet = require("pyarrow.parquet")
    schema = record_schema()
    tables = [parquet.read_table(p, schema=schema) for p in _shards(run_dir)]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return table.to_pandas()


def recorded_keys(run_dir: str | Path, *, statuses: Collection[str] | None = None) -> set[tuple[str, int, int, str]]:
    """The keys ``(model_key, steps, seed, prompt_id)`` already recorded in a run.

    Args:
        run_dir: the run directory.
        statuses: count only rows with one of these statuses (default: any status).
    """
    parquet = require("pyarrow.parquet")
    keys: set[tuple[str, int, int, str]] = set()
    for shard in _shards(Path(run_dir)):
        columns = parquet.read_table(shard, columns=[*KEY_COLUMNS, "status"]).to_pydict()
        rows = zip(*(columns[c] for c in KEY_COLUMNS), columns["status"])
        keys.update(row[:-1] for row in rows if statuses is None or row[-1] in statuses)
    return keys


def write_manifest(run_dir: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` atomically.

    Raises:
        ValueError: When a manifest field is missing.
    """
    for field in _MANIFEST_FIELDS:
        if field not in manifest:
            raise ValueError(f"Expected manifest field {field!r}, but it is missing")
    target = Path(run_dir) / MANIFEST_NAME
    write_atomic(target, (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode("utf-8"))
    return target


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """Read and validate ``manifest.json``.

    Raises:
        FileNotFoundError: When the run has no manifest.
        ValueError: When it does not parse, has another schema version or lacks a field.
    """
    file = Path(run_dir) / MANIFEST_NAME
    if not file.is_file():
        raise FileNotFoundError(f"Expected a profile run directory with {MANIFEST_NAME}, but {file} does not exist")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: expected JSON, but it does not parse: {err}") from err
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{file}: field 'schema_version': expected {SCHEMA_VERSION}, but got {manifest.get('schema_version')!r}"
        )
    for field in _MANIFEST_FIELDS:
        if field not in manifest:
            raise ValueError(f"{file}: expected field {field!r}, but it is missing")
    return manifest


def summarize_run(run_dir: str | Path) -> tuple[dict[str, Any], Any]:
    """What a run holds: its manifest and one summary row per (model, steps, category).

    Returns:
        ``(manifest, summary)``; ``summary`` is a DataFrame with columns ``model_key, steps,
        category, images, ok, oom, error, step_ms_mean, total_s_mean, clip_score_mean,
        peak_torch_allocated_bytes_max`` (means over ``ok`` rows; raw values, unrounded).
    """
    manifest = read_manifest(run_dir)
    frame = read_records(run_dir)
    pandas = require("pandas")
    if frame.empty:
        return manifest, pandas.DataFrame()
    frame["step_ms"] = frame["step_latencies_s"].map(
        lambda v: 1e3 * sum(v) / len(v) if v is not None and len(v) else None
    )
    for status in STATUSES:
        frame[f"is_{status}"] = frame["status"] == status
    ok = frame[frame["is_ok"]]
    keys = ["model_key", "steps", "category"]
    counts = frame.groupby(keys).agg(images=("status", "size"), **{s: (f"is_{s}", "sum") for s in STATUSES})
    means = ok.groupby(keys).agg(
        step_ms_mean=("step_ms", "mean"),
        total_s_mean=("total_s", "mean"),
        clip_score_mean=("clip_score", "mean"),
        peak_torch_allocated_bytes_max=("peak_torch_allocated_bytes", "max"),
    )
    return manifest, counts.join(means).reset_index()
