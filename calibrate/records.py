"""Read profile runs (``RUN/manifest.json`` + ``RUN/records/shard-*.parquet``) into one validated frame.

The profiler writes one row per generated image (DESIGN §2.2). This module reads
those files directly (calibrate never imports the profiler), checks them against
the record contract, and refuses inputs that cannot share one table: different
devices, different CLIPScore conventions or different category mappings, and a run
whose shards hold rows of another run or settings, or one image twice (the
contract's :func:`~genedge.contract.runs.audit_run` counts them). Rows
that cannot enter a fit (a failed generation, a missing score) are kept and
counted as :class:`~genedge.contract.table.Exclusion` entries, never dropped
silently.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from genedge.contract.clip import CLIPSCORE_RANGE, ClipConvention
from genedge.contract.runs import (
    HOST_MEMORY_COLUMNS,
    MANIFEST_FIELDS,
    MANIFEST_NAME,
    MEMORY_RUNGS,
    RECORDS_DIR,
    STATUSES,
    Status,
    audit_run,
    clip_convention_of,
    list_shards,
    read_manifest,
    read_shard,
    rung_column,
)
from genedge.contract.table import Exclusion
from genedge.contract.table_file import TableError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "ProfileRuns",
    "manifests_as_provenance",
    "read_runs",
]

logger = logging.getLogger(__name__)

_MEMORY_COLUMNS = (*(rung_column(rung) for rung in MEMORY_RUNGS), *HOST_MEMORY_COLUMNS)
_ENERGY_COLUMNS = ("energy_j", "average_power_w")
# The columns the fits read; a shard without one of them cannot be calibrated.
_USED_COLUMNS = (
    "run_id",
    "model_key",
    "is_replica",
    "steps",
    "seed",
    "batch_size",
    "prompt_id",
    "category",
    "step_latencies_s",
    "text_encode_s",
    "denoise_s",
    "decode_s",
    "total_s",
    "clip_score",
    *_MEMORY_COLUMNS,
    *_ENERGY_COLUMNS,
    "status",
    "error",
    "device_name",
    "resolution",
    "clip_backbone",
    "clip_pretrained",
)
# Rows are sorted by these before fitting, so shard order and count never change a table's bytes.
_SORT_KEY = ["model_key", "steps", "category", "run_id", "prompt_id", "seed"]


@dataclass(frozen=True)
class ProfileRuns:
    """Profile runs that may share one calibration table.

    Attributes:
        run_dirs: the run directories, in the order given.
        manifests: run id → parsed manifest, sorted by run id.
        device: the device every run measured (``name``, ``driver``, ``cuda``, ``memory_bytes``).
        clip_convention: the one CLIPScore convention of every run.
        category_mapping: the one prompt-label → category mapping of every run.
        records: every row of every shard (all statuses), sorted by model, steps, category,
            run, prompt and seed. ``clip_score``, ``energy_j`` and ``average_power_w`` are NaN
            exactly where the record holds null; the memory columns are nullable integers.
        exclusions: rows left out of the fits, by model, steps and reason.
    """

    run_dirs: tuple[Path, ...]
    manifests: Mapping[str, Mapping[str, Any]]
    device: Mapping[str, Any]
    clip_convention: ClipConvention
    category_mapping: Mapping[str, Any]
    records: pd.DataFrame
    exclusions: tuple[Exclusion, ...]

    @property
    def ok(self) -> pd.DataFrame:
        """Rows of successful generations (the latency and memory fits use these)."""
        return self.records[self.records["status"] == Status.OK]

    @property
    def scored(self) -> pd.DataFrame:
        """Successful rows with a CLIPScore (the quality fits use these)."""
        ok = self.ok
        return ok[ok["clip_score"].notna()]


def read_runs(run_dirs: Iterable[str | os.PathLike[str]]) -> ProfileRuns:
    """Read and validate profile runs that are to share one calibration table.

    Args:
        run_dirs: run directories, each with ``manifest.json`` and ``records/shard-*.parquet``
            (any number of shards).

    Returns:
        The validated runs with their records merged.

    Raises:
        FileNotFoundError: a run directory, manifest or shard is missing.
        TableError: a malformed manifest or record (names the file and field), runs that
            mix devices, CLIPScore conventions or category mappings, or a run with foreign or
            duplicate rows (names the run directory and counts them).
        ArtifactError: an unreadable shard (names it and how to move it aside).
    """
    dirs = tuple(Path(d) for d in run_dirs)
    if not dirs:
        raise ValueError("Expected at least one run directory, but got none")
    manifests: dict[str, Mapping[str, Any]] = {}
    frames = []
    first = (dirs[0] / MANIFEST_NAME, read_manifest(dirs[0]))
    for run_dir in dirs:
        manifest_path = run_dir / MANIFEST_NAME
        manifest = first[1] if run_dir == dirs[0] else read_manifest(run_dir)
        if manifest["run_id"] in manifests:
            raise TableError(
                str(manifest_path), "run_id", f"expected each run once, but got run {manifest['run_id']!r} twice"
            )
        _check_compatible(first, (manifest_path, manifest))
        manifests[manifest["run_id"]] = manifest
        shards = _shards(run_dir)
        _check_clean(run_dir, manifest)
        frames.extend(_read_shard(path, manifest) for path in shards)
    records = pd.concat(frames, ignore_index=True).sort_values(_SORT_KEY, kind="stable", ignore_index=True)
    reference = first[1]
    return ProfileRuns(
        run_dirs=dirs,
        manifests=dict(sorted(manifests.items())),
        device=dict(reference["device"]),
        clip_convention=clip_convention_of(reference),
        category_mapping=dict(reference["prompt_set"]["category_mapping"]),
        records=records,
        exclusions=_exclusions(records),
    )


def _check_compatible(first: tuple[Path, Mapping[str, Any]], other: tuple[Path, Mapping[str, Any]]) -> None:
    """Refuse runs that cannot share a table; name both files and the differing field."""
    (path_a, a), (path_b, b) = first, other
    for field_path, get in (
        ("device.name", lambda m: m["device"]["name"]),
        ("device.memory_bytes", lambda m: m["device"].get("memory_bytes")),
        ("clip_convention", lambda m: m["clip_convention"]),
        ("prompt_set.category_mapping", lambda m: m["prompt_set"]["category_mapping"]),
    ):
        if get(a) != get(b):
            what = {"clip_convention": "CLIPScore conventions", "prompt_set.category_mapping": "category mappings"}.get(
                field_path, "devices"
            )
            raise TableError(
                str(path_b),
                field_path,
                f"a table never mixes {what}: expected {get(a)!r} (as in {path_a}), but got {get(b)!r}",
            )
    for field_path in ("driver", "cuda"):
        if a["device"].get(field_path) != b["device"].get(field_path):
            logger.warning(
                "%s: device.%s %r differs from %r in %s; the table lists every run's manifest.",
                path_b,
                field_path,
                b["device"].get(field_path),
                a["device"].get(field_path),
                path_a,
            )


def _shards(run_dir: Path) -> list[Path]:
    shards = [path for _, _, path in list_shards(run_dir)]
    if not shards:
        raise FileNotFoundError(
            f"{run_dir / RECORDS_DIR}: expected at least one shard-<rank>-<NNNNN>.parquet file, but found none"
        )
    return shards


def _check_clean(run_dir: Path, manifest: Mapping[str, Any]) -> None:
    """Refuse a run whose shards hold foreign rows or an image twice, with the counts.

    An unreadable shard is left to :func:`_read_shard`, whose error names it and the way forward.
    """
    audit = audit_run(run_dir, manifest)
    if audit.corrupt:
        return
    parts = []
    if audit.foreign:
        runs = ", ".join(
            f"{n} from run {run!r} (settings {sha[:12]}…)" for (run, sha), n in sorted(audit.foreign_runs.items())
        )
        parts.append(
            f"{audit.foreign} foreign row(s) ({runs}), not of this run {manifest['run_id']!r} with settings "
            f"{manifest['settings_sha256'][:12]}… (a shard copied from another run?)"
        )
    if audit.duplicates:
        parts.append(
            f"{audit.duplicates} duplicate row(s): an image recorded more than once (a second ok row of one "
            f"(model, steps, prompt, seed), or a copied failure row)"
        )
    if parts:
        raise TableError(
            str(run_dir), "records", "; ".join(parts) + "; remove them or profile again into a clean folder"
        )


def _read_shard(path: Path, manifest: Mapping[str, Any]) -> pd.DataFrame:
    """Read one shard, checking the columns and the values the fits depend on."""

    where = str(path)
    table = read_shard(path)  # every record column there, of its type
    frame = table.select(list(_USED_COLUMNS)).to_pandas()
    # pandas turns a null CLIPScore into NaN; keep where the record itself held NaN, which is an error.
    score_null = table.column("clip_score").is_null().to_numpy(zero_copy_only=False)

    def fail(row: int, column: str, message: str) -> TableError:
        return TableError(where, f"row {row} ({frame['prompt_id'].iat[row]!r}).{column}", message)

    _check_against_manifest(frame, manifest, fail)
    ok = (frame["status"] == Status.OK).to_numpy()
    score = frame["clip_score"].to_numpy(dtype=float)
    _check_scores(score, ok & ~score_null, fail)
    _check_times(frame, ok, fail)
    _check_energy(frame, table, ok, fail)
    for column in _MEMORY_COLUMNS:
        frame[column] = frame[column].astype("Int64")
    frame["clip_score"] = np.where(score_null, np.nan, score)
    return frame


# Builds the error for a shard's row and column from what was expected there.
_RowError = Callable[[int, str, str], TableError]


def _check_against_manifest(frame: pd.DataFrame, manifest: Mapping[str, Any], fail: _RowError) -> None:
    """Refuse a record of another device, CLIPScore convention or model than the manifest's, or of
    an unknown status."""
    for column, expected in (
        ("device_name", manifest["device"]["name"]),
        ("clip_backbone", manifest["clip_convention"]["backbone"]),
        ("clip_pretrained", manifest["clip_convention"]["pretrained"]),
    ):
        bad = np.flatnonzero(frame[column].to_numpy() != expected)
        if bad.size:
            what = {
                "device_name": "a table never mixes devices: ",
                "clip_backbone": "a table never mixes CLIPScore conventions: ",
                "clip_pretrained": "a table never mixes CLIPScore conventions: ",
            }.get(column, "")
            raise fail(
                int(bad[0]),
                column,
                f"{what}expected {expected!r} as in the run's manifest, but got {frame[column].iat[bad[0]]!r}",
            )
    known_models = {m["key"] for m in manifest["models"]}
    bad = np.flatnonzero(~frame["model_key"].isin(known_models).to_numpy())
    if bad.size:
        raise fail(
            int(bad[0]),
            "model_key",
            f"expected one of the manifest's models {sorted(known_models)}, but got {frame['model_key'].iat[bad[0]]!r}",
        )
    bad = np.flatnonzero(~frame["status"].isin(STATUSES).to_numpy())
    if bad.size:
        raise fail(int(bad[0]), "status", f"expected one of {list(STATUSES)}, but got {frame['status'].iat[bad[0]]!r}")


def _check_scores(score: np.ndarray, scored: np.ndarray, fail: _RowError) -> None:
    """Refuse a CLIPScore of an ok, scored row outside the CLIPScore range."""
    lo, hi = CLIPSCORE_RANGE
    with np.errstate(invalid="ignore"):
        bad_score = scored & ~((score >= lo) & (score <= hi))
    if bad_score.any():
        row = int(np.flatnonzero(bad_score)[0])
        raise fail(
            row,
            "clip_score",
            f"expected a CLIPScore in [{lo:g}, {hi:g}] (100·max(cos, 0)) or null, but got {float(score[row])!r}",
        )


def _check_times(frame: pd.DataFrame, ok: np.ndarray, fail: _RowError) -> None:
    """Refuse an ok row's step count or batch size below 1, or a stage or step time that is not finite
    seconds >= 0."""
    for column in ("steps", "batch_size"):
        bad = np.flatnonzero(ok & ~(frame[column].to_numpy() > 0))
        if bad.size:
            raise fail(int(bad[0]), column, f"expected a count > 0, but got {frame[column].iat[bad[0]]}")
    for column in ("text_encode_s", "denoise_s", "decode_s", "total_s"):
        values = frame[column].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(ok & ~(np.isfinite(values) & (values >= 0)))
        if bad.size:
            raise fail(int(bad[0]), column, f"expected finite seconds >= 0, but got {float(values[bad[0]])!r}")
    for row in np.flatnonzero(ok):
        latencies = frame["step_latencies_s"].iat[row]
        if latencies is None or not all(math.isfinite(x) and x >= 0 for x in latencies):
            raise fail(int(row), "step_latencies_s", f"expected a list of finite seconds >= 0, but got {latencies!r}")


def _check_energy(frame: pd.DataFrame, table: pa.Table, ok: np.ndarray, fail: _RowError) -> None:
    """Refuse an ok row's energy figure that is neither null nor a finite number >= 0."""
    for column in _ENERGY_COLUMNS:
        values = frame[column].to_numpy(dtype=float)
        null = table.column(column).is_null().to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(ok & ~null & ~(np.isfinite(values) & (values >= 0)))
        if bad.size:
            raise fail(int(bad[0]), column, f"expected a finite number >= 0 or null, but got {float(values[bad[0]])!r}")


def _exclusions(records: pd.DataFrame) -> tuple[Exclusion, ...]:
    """Count the rows each fit leaves out, by model, steps and reason."""
    failed = records[records["status"] != Status.OK]
    reasons = "status=" + failed["status"] + failed["error"].fillna("").map(_first_line)
    unscored = records[(records["status"] == Status.OK) & records["clip_score"].isna()]
    parts: list[tuple[str, int, str]] = list(zip(failed["model_key"], failed["steps"].astype(int), reasons))
    parts += [
        (m, int(s), "clip_score is null (left out of quality fits; kept for latency and memory)")
        for m, s in zip(unscored["model_key"], unscored["steps"])
    ]
    counts: dict[tuple[str, int, str], int] = {}
    for part in parts:
        counts[part] = counts.get(part, 0) + 1
    for (model, steps, reason), rows in sorted(counts.items()):
        logger.warning("Excluded %d record(s) of %s at %d steps: %s", rows, model, steps, reason)
    return tuple(Exclusion(model_key=m, steps=s, reason=r, rows=n) for (m, s, r), n in sorted(counts.items()))


def _first_line(error: str) -> str:
    # Error texts can be long tracebacks; their first line is the reason, and it groups identical failures.
    line = error.strip().splitlines()[0] if error.strip() else ""
    return f": {line[:160]}" if line else ""


def manifests_as_provenance(manifests: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The manifest fields a table carries as provenance, per run (nothing time-dependent)."""
    # Everything but the identity and the convention, which the table holds once for all runs.
    keep = [field for field in MANIFEST_FIELDS if field not in ("schema_version", "run_id", "clip_convention")]
    return {"runs": {run_id: {k: m[k] for k in keep if k in m} for run_id, m in manifests.items()}}
