"""Turning measured (or failed) images into record rows: CLIP-scored in batches and written as shards.

A row carries the run's identity, the image's configuration and prompt, the call's measurement
(shared by the images of a batch; its energy divided among them), the model's cold start, and a
note naming why each missing memory or energy column is missing.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from genedge.contract.files import parquet_bytes, write_bytes_atomic
from genedge.contract.runs import HOST_MEMORY_COLUMNS, MEMORY_RUNGS, RECORD_COLUMNS, record_schema, rung_column
from genedge.profiler._imports import require
from genedge.profiler.clipscore import SCORING_BATCH_SIZE, ClipScorer
from genedge.profiler.host import trim_heap
from genedge.profiler.pipeline import Measurement, MemoryBaseline, pipeline_peak
from genedge.profiler.prompts import Prompt
from genedge.profiler.records import ShardWriter

__all__ = ["Item", "Pending", "ColdStart", "Recorder"]

# One value of each record column type (Column.type), for a warm-up table; the list is a 50-step call's.
_WARM_UP_VALUES = {
    "string": "warm-up",
    "bool": False,
    "int32": 1,
    "int64": 1,
    "float64": 1.0,
    "list<float64>": [1.0] * 50,
}
_PEAK_COLUMNS = (*(rung_column(r) for r in MEMORY_RUNGS), *HOST_MEMORY_COLUMNS)
_MEMORY_COLUMNS = (*_PEAK_COLUMNS, "pipeline_peak_bytes")
_TORCH_COLUMNS = tuple(rung_column(r) for r in MEMORY_RUNGS if r.startswith("torch_"))
_NOTED_COLUMNS = (*_MEMORY_COLUMNS, "energy_j")


@dataclass(frozen=True)
class Item:
    """One image a run makes: a model, a step count, a seed and a prompt."""

    model_key: str
    steps: int
    seed: int
    prompt: Prompt

    @property
    def key(self) -> tuple[str, int, int, str]:
        """The image's key among a run's records."""
        return (self.model_key, self.steps, self.seed, self.prompt.prompt_id)


@dataclass
class Pending:
    """An image waiting to be scored and written: its status, and its call's measurement when it has one."""

    item: Item
    status: str
    error: str | None = None
    measurement: Measurement | None = None
    image: Any = None
    call_images: int = 1  # images the measured call made (its energy is shared among them)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ColdStart:
    """What loading a model cost this process (import, load and first-call seconds), and what it held before."""

    import_s: float | None = None
    load_s: float | None = None
    first_call_s: float | None = None
    baseline: MemoryBaseline | None = None


def _save_image(run_dir: Path, image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    target = run_dir / "images" / f"{digest}.png"
    if not target.exists():  # content-addressed: an existing file already holds these bytes
        write_bytes_atomic(target, data)
    return digest


def _notes(notes: Mapping[str, str], columns: Sequence[str]) -> str | None:
    parts = [f"{column}: {notes[column]}" for column in columns if column in notes]
    return "; ".join(parts) or None


class Recorder:
    """Buffers finished images, scores them in batches and writes them as shards.

    Args:
        run_dir: The run directory.
        rank: This process's rank (its shards' names).
        common: Columns every row of this process carries (run identity, device, dtype, CLIP convention).
        models: Model key → the manifest's entry for it.
        scorer: The run's CLIP scorer.
        batch_size: Prompts per pipeline call, as recorded in every row.
        flush_every: Score and write once this many images wait.
        save_images: Keep each ok image as ``RUN/images/<sha256>.png``.
    """

    def __init__(
        self,
        run_dir: Path,
        rank: int,
        common: dict[str, Any],
        models: Mapping[str, Mapping[str, Any]],
        scorer: ClipScorer,
        *,
        batch_size: int,
        flush_every: int,
        save_images: bool,
    ) -> None:
        self.run_dir = run_dir
        self.writer = ShardWriter(run_dir, rank)
        self.common = common
        self.models = models
        self.scorer = scorer
        self.batch_size = batch_size
        self.flush_every = flush_every
        self.save_images = save_images
        self.cold: dict[str, ColdStart] = {}
        # Scoring on a GPU moves the CLIP backbone through it and empties the allocator's cache.
        self.cache_emptied = False
        self.pending: list[Pending] = []
        self.recorded = 0
        self.failed = 0

    def warm_up(self) -> None:
        """Make a flush's one-time allocations now: a first CLIPScore call, a first Parquet table, a first PNG.

        Called before any model loads, so what they leave resident (tens of MiB on a CPU) is in every
        model's memory baseline, and rows measured before and after the first flush compare.
        """
        # A flush holds up to flush_every + batch_size − 1 images, and CLIPScore encodes them in chunks.
        images = min(self.flush_every + self.batch_size - 1, SCORING_BATCH_SIZE)
        image = require("PIL.Image").new("RGB", (64, 64))
        self.scorer.score([image] * images, ["a warm-up prompt"] * images)
        # A shard of rows like the real ones: Arrow's memory pool keeps what its first real table needed.
        row = {column.name: _WARM_UP_VALUES[column.type] for column in RECORD_COLUMNS}
        parquet_bytes(require("pyarrow").Table.from_pylist([row] * images, schema=record_schema()))
        if self.save_images:
            image.save(io.BytesIO(), format="PNG")

    def add(self, entries: list[Pending]) -> None:
        """Buffer rows; score and write them once ``flush_every`` images wait."""
        self.pending.extend(entries)
        if len(self.pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Score and write what is buffered."""
        if not self.pending:
            return
        ok = [p for p in self.pending if p.status == "ok"]
        scores, truncated = (
            self.scorer.score([p.image for p in ok], [p.item.prompt.text for p in ok]) if ok else ([], [])
        )
        self.cache_emptied = self.cache_emptied or (bool(ok) and self.scorer.device.type == "cuda")
        for entry, score, cut in zip(ok, scores, truncated):
            entry.extra = {"clip_score": score, "prompt_truncated": cut}
            if self.save_images:
                entry.extra["image_sha256"] = _save_image(self.run_dir, entry.image)
        rows = [self._row(p) for p in self.pending]
        self.writer.write(rows)
        self.recorded += len(rows)
        self.failed += sum(p.status != "ok" for p in self.pending)
        self.pending = []
        # What scoring and writing freed leaves the resident set before the next measured call.
        trim_heap()

    def _row(self, entry: Pending) -> dict[str, Any]:
        item, m = entry.item, entry.measurement
        model = self.models[item.model_key]
        cold = self.cold.get(item.model_key, ColdStart())
        peaks = self._peaks(m)
        pipeline_bytes = pipeline_source = None
        if m is None:
            notes = {c: f"no call was measured for this image (status {entry.status})" for c in _NOTED_COLUMNS}
        else:
            notes = dict(m.reading.notes)
            if m.peak_torch_allocated_bytes is None:
                notes |= {c: "not a CUDA device" for c in _TORCH_COLUMNS}
            assert cold.baseline is not None  # a measured call follows its model's load, which reads the baseline
            pipeline_bytes, pipeline_source, why = pipeline_peak(peaks, cold.baseline)
            if why is not None:
                notes["pipeline_peak_bytes"] = why
        energy = m.reading.energy_j / entry.call_images if m is not None and m.reading.energy_j is not None else None
        return self.common | {
            "model_key": item.model_key,
            "model_revision": model["revision"],
            "is_replica": model["is_replica"],
            "steps": item.steps,
            "num_timesteps": m.num_timesteps if m else None,
            "seed": item.seed,
            "batch_size": self.batch_size,
            "prompt_id": item.prompt.prompt_id,
            "prompt": item.prompt.text,
            "category": item.prompt.category,
            "challenge": item.prompt.challenge,
            "p2_category": item.prompt.p2_category,
            "step_latencies_s": list(m.step_latencies_s) if m else None,
            "text_encode_s": m.text_encode_s if m else None,
            "denoise_s": m.denoise_s if m else None,
            "decode_s": m.decode_s if m else None,
            "total_s": m.total_s if m else None,
            "overhead_s": m.overhead_s if m else None,
            "clip_score": entry.extra.get("clip_score"),
            "prompt_truncated": entry.extra.get("prompt_truncated", False),
            **peaks,
            "pipeline_peak_bytes": pipeline_bytes,
            "pipeline_memory": pipeline_source,
            "memory_note": _notes(notes, _MEMORY_COLUMNS),
            "energy_j": energy,
            "average_power_w": m.reading.average_power_w if m else None,
            "energy_note": notes.get("energy_j"),  # one reason covers energy and power
            "import_s": cold.import_s,
            "model_load_s": cold.load_s,
            "first_call_s": cold.first_call_s,
            "resolution": model["resolution"],
            "image_sha256": entry.extra.get("image_sha256"),
            "status": entry.status,
            "error": entry.error,
            "timestamp": datetime.now(timezone.utc).isoformat(),
        }

    @staticmethod
    def _peaks(m: Measurement | None) -> dict[str, int | None]:
        # The call's memory peak columns (all None for an image no call measured).
        if m is None:
            return dict.fromkeys(_PEAK_COLUMNS)
        return {
            "peak_torch_allocated_bytes": m.peak_torch_allocated_bytes,
            "peak_torch_reserved_bytes": m.peak_torch_reserved_bytes,
            "peak_nvml_process_bytes": m.reading.nvml_process_bytes,
            "peak_nvml_device_bytes": m.reading.nvml_device_bytes,
            "peak_rss_bytes": m.reading.rss_bytes,
            "peak_system_memory_bytes": m.reading.system_memory_bytes,
        }
