"""Profile records: the profiler's shard writer and its readers of a run (DESIGN §2.2).

The layout, columns, statuses and manifest are defined in :mod:`genedge.contract.runs`. Each shard
is written once, atomically, and never rewritten, so a killed run loses at most the images in
flight and a rerun skips every key already recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from genedge.contract.files import write_bytes_atomic
from genedge.contract.runs import (
    KEY_COLUMNS,
    STATUSES,
    check_row,
    list_shards,
    read_manifest,
    read_shard,
    record_schema,
    shard_path,
)
from genedge.profiler._imports import require

__all__ = [
    "ShardWriter",
    "read_records",
    "recorded_keys",
    "summarize_run",
]

logger = logging.getLogger(__name__)


class ShardWriter:
    """Writes one process's rows as new shards ``shard-<rank>-<NNNNN>.parquet``.

    Args:
        run_dir: The run directory.
        rank: This process's rank; ranks never share a shard name, so processes need no locks.
    """

    def __init__(self, run_dir: str | Path, rank: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.rank = rank
        numbers = [number for shard_rank, number, _ in list_shards(self.run_dir) if shard_rank == rank]
        self._next = max(numbers, default=-1) + 1

    def write(self, rows: list[Mapping[str, Any]]) -> Path | None:
        """Write ``rows`` as one new shard, atomically; returns its path (``None`` for no rows).

        Raises:
            ValueError: When a row lacks a record column, has one the contract does not know, or has
                a status outside :data:`~genedge.contract.runs.STATUSES`.
        """
        if not rows:
            return None
        pa = require("pyarrow")
        parquet = require("pyarrow.parquet")
        for row in rows:
            check_row(row)
        table = pa.Table.from_pylist([dict(row) for row in rows], schema=record_schema())
        target = shard_path(self.run_dir, self.rank, self._next)
        sink = pa.BufferOutputStream()
        parquet.write_table(table, sink)
        write_bytes_atomic(target, sink.getvalue().to_pybytes())
        self._next += 1
        logger.debug("wrote %d rows to %s", len(rows), target)
        return target


def read_records(run_dir: str | Path) -> Any:
    """All rows of a run, from every rank's shards, as a pandas DataFrame (empty with the columns when none)."""
    pa = require("pyarrow")
    schema = record_schema()
    tables = [read_shard(path).select(schema.names).cast(schema) for _, _, path in list_shards(run_dir)]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return table.to_pandas()


def recorded_keys(run_dir: str | Path, *, statuses: Collection[str] | None = None) -> set[tuple[str, int, int, str]]:
    """The keys ``(model_key, steps, seed, prompt_id)`` already recorded in a run.

    Args:
        run_dir: the run directory.
        statuses: count only rows with one of these statuses (default: any status).
    """
    keys: set[tuple[str, int, int, str]] = set()
    for _, _, shard in list_shards(run_dir):
        columns = read_shard(shard, columns=[*KEY_COLUMNS, "status"]).to_pydict()
        rows = zip(*(columns[c] for c in KEY_COLUMNS), columns["status"])
        keys.update(row[:-1] for row in rows if statuses is None or row[-1] in statuses)
    return keys


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
