"""Profile records: the profiler's shard writer and its readers of a run (DESIGN §2.2).

The layout, columns, statuses and manifest are defined in :mod:`genedge.contract.runs`. Each shard
is written once, atomically, and never rewritten or replaced, so a killed run loses at most the
images in flight and a rerun skips every key this run has already recorded.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genedge.contract.files import ArtifactError, write_new_parquet
from genedge.contract.runs import (
    KEY_COLUMNS,
    STATUSES,
    RunAudit,
    Status,
    audit_run,
    check_row,
    list_shards,
    quarantine_shard,
    read_manifest,
    read_shard,
    record_schema,
    run_identity,
    shard_path,
)
from genedge.profiler._imports import require

__all__ = [
    "PERCENTILES",
    "RunSummary",
    "ShardWriter",
    "RunIndex",
    "index_run",
    "read_records",
    "summarize_run",
]

logger = logging.getLogger(__name__)


class ShardWriter:
    """Writes one process's rows as new shards ``shard-<rank>-<NNNNN>.parquet``.

    A shard name is claimed atomically (a hard link that fails when the name exists), so a writer
    never replaces a shard, whoever else writes into the run.

    Args:
        run_dir: The run directory.
        rank: This process's rank.
    """

    def __init__(self, run_dir: str | Path, rank: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.rank = rank
        self._next = self._first_free()

    def _first_free(self) -> int:
        numbers = [number for shard_rank, number, _ in list_shards(self.run_dir) if shard_rank == self.rank]
        return max(numbers, default=-1) + 1

    def write(self, rows: list[Mapping[str, Any]]) -> Path | None:
        """Write ``rows`` as one new shard, atomically; returns its path (``None`` for no rows).

        Raises:
            ValueError: When a row lacks a record column, has one the contract does not know, or has
                a status outside :data:`~genedge.contract.runs.STATUSES`.
        """
        if not rows:
            return None
        pa = require("pyarrow")
        for row in rows:
            check_row(row)
        table = pa.Table.from_pylist([dict(row) for row in rows], schema=record_schema())
        # Another writer may take names since we looked: the write takes the next free one.
        target, number = write_new_parquet(table, lambda n: shard_path(self.run_dir, self.rank, n), self._next)
        self._next = number + 1
        logger.debug("wrote %d rows to %s", len(rows), target)
        return target


def read_records(run_dir: str | Path, *, own: Mapping[str, Any] | None = None, skip_unreadable: bool = False) -> Any:
    """Rows of a run, from every rank's shards, as a pandas DataFrame (empty with the columns when none).

    Args:
        run_dir: the run directory.
        own: a manifest: keep only the rows of that run with its settings (:func:`run_identity`).
        skip_unreadable: leave out shards that cannot be read (for summaries whose audit names them).

    Raises:
        ArtifactError: a shard cannot be read (naming it and the way forward), unless skipped.
    """
    pa = require("pyarrow")
    schema = record_schema()
    tables = []
    for _, _, path in list_shards(run_dir):
        try:
            tables.append(read_shard(path).select(schema.names).cast(schema))
        except ArtifactError:
            if not skip_unreadable:
                raise
    frame = (pa.concat_tables(tables) if tables else schema.empty_table()).to_pandas()
    if own is None:
        return frame
    run_id, settings = run_identity(own)
    return frame[(frame["run_id"] == run_id) & (frame["settings_sha256"] == settings)]


# What resuming needs of each row: whose it is, which image, and how it ended.
_INDEX_COLUMNS = ("run_id", "settings_sha256", *KEY_COLUMNS, "status")


@dataclass(frozen=True)
class RunIndex:
    """Identity, key and status of every row in a run's readable shards: read once, asked many times.

    Attributes:
        rows: one tuple per row: ``run_id, settings_sha256, model_key, steps, seed, prompt_id, status``.
    """

    rows: tuple[tuple[Any, ...], ...]

    def identities(self) -> dict[tuple[str, str], int]:
        """Row counts per ``(run_id, settings_sha256)``."""
        return dict(collections.Counter(row[:2] for row in self.rows))

    def keys(self, manifest: Mapping[str, Any], *, statuses: Collection[str] | None = None) -> set[tuple[Any, ...]]:
        """The keys ``(model_key, steps, seed, prompt_id)`` the manifest's run has recorded itself.

        Rows of another run or with other settings (foreign rows) do not count: their images are
        measured again for this run.

        Args:
            manifest: the run's manifest.
            statuses: count only rows with one of these statuses (default: any status).
        """
        identity = run_identity(manifest)
        return {row[2:-1] for row in self.rows if row[:2] == identity and (statuses is None or row[-1] in statuses)}


def index_run(run_dir: str | Path, *, quarantine: bool = False) -> tuple[RunIndex, tuple[Path, ...]]:
    """Read every shard of a run once: refuse (or move aside) unreadable ones, index the rest.

    Each shard is read whole, so a readable footer over a damaged column chunk still counts as corrupt.

    Args:
        run_dir: the run directory.
        quarantine: move unreadable shards to ``RUN/quarantine/`` (their images then count as not
            measured) instead of raising.

    Returns:
        The index, and where moved shards now lie.

    Raises:
        ArtifactError: a shard cannot be read and ``quarantine`` is false (naming it and the way forward).
    """
    rows: list[tuple[Any, ...]] = []
    moved = []
    for _, _, path in list_shards(run_dir):
        try:
            columns = read_shard(path).select(list(_INDEX_COLUMNS)).to_pydict()
        except ArtifactError:
            if not path.exists():
                continue  # another rank moved it to quarantine meanwhile
            if not quarantine:
                raise
            target = quarantine_shard(path)
            if target is not None:
                moved.append(target)
                logger.warning("%s: unreadable; moved to %s, its images will be measured again", path, target)
            continue
        rows.extend(zip(*(columns[c] for c in _INDEX_COLUMNS)))
    return RunIndex(tuple(rows)), tuple(moved)


#: Latency percentiles ``profile show`` prints.
PERCENTILES: tuple[int, ...] = (50, 90, 99)


def _percentile_columns(prefix: str, values: Any) -> dict[str, float]:
    numpy = require("numpy")
    values = numpy.asarray(values, dtype=float)
    if values.size == 0:
        return {f"{prefix}_p{q}": float("nan") for q in PERCENTILES} | {f"{prefix}_std": float("nan")}
    quantiles = numpy.percentile(values, PERCENTILES)
    return {f"{prefix}_p{q}": float(v) for q, v in zip(PERCENTILES, quantiles)} | {
        f"{prefix}_std": float(values.std(ddof=1)) if values.size > 1 else float("nan")
    }


@dataclass(frozen=True)
class RunSummary:
    """What a run holds, for people: ``profile show`` prints it.

    Attributes:
        manifest: the run's manifest.
        audit: foreign rows, duplicates, corrupt shards and mixed settings (see :func:`audit_run`).
        latency: one row per (model, steps) over this run's ``ok`` rows: ``images``, ``ok``, ``oom``,
            ``error``, ``total_s_p50/p90/p99/std``, ``step_ms_p50/p90/p99/std`` (every recorded step),
            ``images_per_s`` (batch size / call seconds, averaged over calls), ``energy_j_mean``,
            ``average_power_w_mean``, ``pipeline_peak_bytes_max`` (the pipeline's own), ``peak_rss_bytes_max``,
            ``peak_torch_allocated_bytes_max``, ``peak_nvml_process_bytes_max``, ``overhead_s_median``,
            ``import_s``, ``model_load_s`` and ``first_call_s`` (medians over rows: each load weighs by its images).
        quality: one row per (model, steps, category): ``ok`` images and ``clip_score_mean``/``_std``.
    """

    manifest: dict[str, Any]
    audit: RunAudit
    latency: Any
    quality: Any


def summarize_run(run_dir: str | Path) -> RunSummary:
    """Summarize a run's own rows; problems (foreign rows, duplicates, corrupt shards) go to ``audit``."""
    manifest = read_manifest(run_dir)
    audit = audit_run(run_dir, manifest)
    pandas = require("pandas")
    frame = read_records(run_dir, own=manifest, skip_unreadable=True)  # the audit names what is skipped
    if frame.empty:
        return RunSummary(manifest, audit, pandas.DataFrame(), pandas.DataFrame())
    latency_rows = []
    for (model, steps), group in frame.groupby(["model_key", "steps"], sort=True):
        ok = group[group["status"] == Status.OK.value]
        steps_s = [x for values in ok["step_latencies_s"] if values is not None for x in values]
        calls = ok["total_s"] / ok["batch_size"]
        row: dict[str, Any] = {"model_key": model, "steps": int(steps), "images": len(group)}
        row |= {status: int((group["status"] == status).sum()) for status in STATUSES}
        row |= _percentile_columns("total_s", ok["total_s"].dropna())
        row |= _percentile_columns("step_ms", [1e3 * x for x in steps_s])
        row["images_per_s"] = float((1.0 / calls).mean()) if len(calls) else float("nan")
        row["energy_j_mean"] = float(ok["energy_j"].mean())
        row["average_power_w_mean"] = float(ok["average_power_w"].mean())
        peaks = ("pipeline_peak_bytes", "peak_rss_bytes", "peak_torch_allocated_bytes", "peak_nvml_process_bytes")
        for column in peaks:
            row[f"{column}_max"] = float(ok[column].max())
        row["overhead_s_median"] = float(ok["overhead_s"].median())
        for column in ("import_s", "model_load_s", "first_call_s"):
            row[column] = float(group[column].median())
        latency_rows.append(row)
    ok = frame[frame["status"] == Status.OK.value]
    quality = (
        ok.groupby(["model_key", "steps", "category"])
        .agg(ok=("status", "size"), clip_score_mean=("clip_score", "mean"), clip_score_std=("clip_score", "std"))
        .reset_index()
    )
    return RunSummary(manifest, audit, pandas.DataFrame(latency_rows), quality)
