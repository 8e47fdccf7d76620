"""Claiming a run directory: the per-rank lock and the manifest every process of the run agrees on.

One process per rank may write a run at a time (:mod:`genedge.contract.locks`: an OS file lock,
released when the process ends, however it ends). The manifest is written once, by rank 0; a
resumed run keeps its ``run_id``, and a folder measured with other settings is refused, naming the fields that differ.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from genedge.contract.files import remove_temporaries
from genedge.contract.locks import hold_lock
from genedge.contract.runs import (
    MANIFEST_NAME,
    RECORDS_DIR,
    lock_path,
    read_manifest,
    settings_document,
    shard_rank,
    write_manifest,
)
from genedge.profiler.records import RunIndex

__all__ = ["run_lock", "open_run"]

logger = logging.getLogger(__name__)

# How long a rank > 0 waits for rank 0 to write the manifest (rank 0 loads the CLIP backbone first).
MANIFEST_WAIT_S = 900.0


@contextlib.contextmanager
def run_lock(run_dir: Path, rank: int) -> Iterator[None]:
    """Hold the run's per-rank lock: a second process of the same rank is refused, not interleaved.

    Holding it, remove what a killed process of this rank left half-written: temporary files of its
    shards (and of the manifest, for rank 0), which no live writer can own.
    """
    busy = (
        f"{run_dir}: another genedge profile process ({{holder}}) is writing this run as rank {rank}; "
        "wait for it to end, or use another --out"
    )
    with hold_lock(lock_path(run_dir, rank), busy):
        removed = remove_temporaries(run_dir / RECORDS_DIR, lambda name: shard_rank(name) == rank)
        if rank == 0:
            removed += remove_temporaries(run_dir, lambda name: name == MANIFEST_NAME)
        for path in removed:
            logger.info("%s: removed, a temporary file a killed run left", path)
        yield


def _settings_differ(run_dir: Path, existing: Mapping[str, Any], ours: Mapping[str, Any]) -> ValueError:
    theirs, mine = settings_document(existing), settings_document(ours)
    differing = [field for field in {**theirs, **mine} if theirs.get(field) != mine.get(field)]
    return ValueError(
        f"{run_dir / MANIFEST_NAME}: field 'settings_sha256': the folder holds run {existing['run_id']} measured "
        f"with other settings ({', '.join(differing)} differ); "
        "rerun with its settings to resume it, or use another --out"
    )


def _check_run_id(path: Path, existing: Mapping[str, Any], index: RunIndex) -> None:
    """Refuse a manifest whose run id names none of the rows measured with its settings: resuming it would
    measure every image again beside rows it calls foreign."""
    runs = {run: n for (run, sha), n in index.identities().items() if sha == existing["settings_sha256"]}
    if runs and existing["run_id"] not in runs:
        named = ", ".join(f"{run} ({n} rows)" for run, n in sorted(runs.items()))
        raise ValueError(
            f"{path}: field 'run_id': {existing['run_id']!r} names none of the rows measured with these settings "
            f"(runs {named}); the manifest was edited or replaced: restore it, or delete it to rebuild it from the "
            "rows, or use another --out"
        )


def _wait_for_manifest(path: Path, rank: int) -> None:
    deadline = time.monotonic() + MANIFEST_WAIT_S
    while not path.is_file():
        if time.monotonic() > deadline:
            raise ValueError(f"{path}: rank {rank} waited {MANIFEST_WAIT_S:.0f} s for rank 0 to write it")
        time.sleep(0.2)


def open_run(run_dir: Path, manifest: dict[str, Any], rank: int, index: RunIndex) -> dict[str, Any]:
    """The run's manifest: the existing one when its settings match, else a new or rebuilt one.

    Rank 0 writes it; other ranks wait for it. Without a manifest, rows measured with these settings
    lend the rebuilt manifest their run id; rows measured only with other settings refuse the folder.
    """
    path = run_dir / MANIFEST_NAME
    if rank != 0:
        _wait_for_manifest(path, rank)
    if path.is_file():
        existing = read_manifest(run_dir)
        if existing["settings_sha256"] != manifest["settings_sha256"]:
            raise _settings_differ(run_dir, existing, manifest)
        _check_run_id(path, existing, index)
        return existing
    found = index.identities()
    mine = {run: n for (run, sha), n in found.items() if sha == manifest["settings_sha256"]}
    if found and not mine:
        shas = sorted({sha[:12] for _, sha in found})
        raise ValueError(
            f"{path}: missing, and the {sum(found.values())} rows in {run_dir} were measured with other settings "
            f"(settings_sha256 {', '.join(shas)}); restore the manifest or rerun with those settings to resume, "
            "or use another --out"
        )
    if len(mine) > 1:
        logger.warning("%s: rows of %d runs share these settings; resuming the largest", run_dir, len(mine))
    if mine:
        manifest = manifest | {"run_id": max(mine, key=lambda run: (mine[run], run))}
        logger.warning("%s: missing; rebuilt from these settings, which match %d rows", path, max(mine.values()))
    write_manifest(run_dir, manifest)
    return manifest
