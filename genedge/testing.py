"""Fixtures with known truth for tests, benchmarks and checks of the fits; no stage re-exports them.

Two kinds, each drawn from stated parameters with a seed:

- profile runs (:func:`synthetic_run`, written by :func:`write_run`): the records follow the profile
  record contract exactly (the schema is :func:`~genedge.contract.runs.record_schema`), so a
  synthetic run goes through the same reader and fits as a measured one, and a fit can be checked
  against the parameters it should recover. Synthetic tables say nothing about any real GPU or model.
- planning problems (:func:`synthetic_problem`) with realistic structure: models differ in speed and
  quality the way diffusion families do, a faster model scores lower on average, categories shift
  every model's scores, and quality saturates with steps as a − b·exp(−s/κ).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genedge.calibrate.fit import saturating_mean
from genedge.contract.clip import ClipConvention
from genedge.contract.files import write_text_atomic
from genedge.contract.runs import (
    HOST_MEMORY_COLUMNS,
    MANIFEST_NAME,
    MANIFEST_SCHEMA_VERSION,
    MEMORY_RUNGS,
    Status,
    record_schema,
    rung_column,
    settings_sha256,
    shard_path,
)
from genedge.optimizer.model import Problem

__all__ = [
    "SYNTHETIC_CLIP_CONVENTION",
    "QualityTruth",
    "SyntheticModel",
    "synthetic_problem",
    "synthetic_run",
    "write_run",
]

SYNTHETIC_CLIP_CONVENTION = ClipConvention(
    backbone="ViT-L-14-quickgelu",
    pretrained="openai",
    formula="100*max(cos,0)",
    truncation="77 tokens, end token kept",
    preprocess="open_clip val transform (resize 224, center crop)",
)
# Text encoding takes this fraction of the overhead, VAE decoding the rest.
_TEXT_ENCODE_SHARE = 0.3


@dataclass(frozen=True)
class QualityTruth:
    """CLIPScore ~ Normal(a − b·exp(−steps/kappa), std²) for one (model, category)."""

    a: float
    b: float
    kappa: float
    std: float

    def mean(self, steps: int) -> float:
        """The true mean CLIPScore at ``steps`` steps (points)."""
        return float(saturating_mean(steps, self.a, self.b, self.kappa))


@dataclass(frozen=True)
class SyntheticModel:
    """The true parameters of one synthetic model.

    Attributes:
        key: model key.
        quality: category → true CLIPScore law.
        overhead_s, per_step_s: the true latency line ``total_s = overhead_s + per_step_s·steps``.
        step_noise_s: standard deviation of each step's latency around ``per_step_s`` (s).
        overhead_noise_s: standard deviation of each stage's overhead (s).
        memory_bytes: memory column → peak bytes: the GPU rungs (``peak_torch_allocated_bytes``, ...)
            and the host peaks (``peak_rss_bytes``, ``peak_system_memory_bytes``); absent or None
            columns are written as null (not measurable).
        unet_params: denoiser parameter count written to the manifest.
        is_replica: written to records and manifest.
        overhead_j, per_step_j: the true energy line ``energy_j = overhead_j + per_step_j·steps`` per
            image; None (both) for a run without an energy meter (``energy_j`` null).
        energy_noise_j: standard deviation of each image's energy around the line (J).
    """

    key: str
    quality: Mapping[str, QualityTruth]
    overhead_s: float
    per_step_s: float
    step_noise_s: float = 0.0
    overhead_noise_s: float = 0.0
    memory_bytes: Mapping[str, int | None] = field(default_factory=dict)
    unet_params: int = 1_000_000
    is_replica: bool = False
    overhead_j: float | None = None
    per_step_j: float | None = None
    energy_noise_j: float = 0.0

    def __post_init__(self) -> None:
        columns = {rung_column(rung) for rung in MEMORY_RUNGS} | set(HOST_MEMORY_COLUMNS)
        unknown = sorted(set(self.memory_bytes) - columns)
        if unknown:
            raise ValueError(f"{self.key}: expected memory columns among {sorted(columns)}, but got {unknown}")
        if (self.overhead_j is None) != (self.per_step_j is None):
            raise ValueError(f"{self.key}: expected overhead_j and per_step_j both or neither, but got one")


def synthetic_run(
    models: Sequence[SyntheticModel],
    *,
    steps: Sequence[int] = (10, 20, 30),
    prompts_per_category: int = 20,
    seeds: Sequence[int] = (0,),
    run_id: str = "synthetic",
    device_name: str = "Synthetic GPU",
    device_memory_bytes: int | None = 16 * 2**30,
    clip_convention: ClipConvention = SYNTHETIC_CLIP_CONVENTION,
    rng: int | np.random.Generator | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Sample a profile run: one record per (model, steps, prompt, seed).

    Args:
        models: the true parameters, one per model.
        steps: step counts profiled for every model.
        prompts_per_category: prompts of each category (categories are the union of the
            models' ``quality`` keys, each model needing all of them).
        seeds: image seeds per prompt.
        run_id, device_name, device_memory_bytes, clip_convention: written to manifest and records
            (with the manifest's ``settings_sha256``, so two runs of the same settings share it).
        rng: seed or generator (``numpy.random.default_rng``); the same seed gives the same run.

    Returns:
        ``(manifest, records)``: the manifest document and the records frame, ready for
        :func:`write_run` (and for editing first, to make bad records).
    """
    rng = np.random.default_rng(rng)
    categories = list(dict.fromkeys(c for m in models for c in m.quality))
    labels = {
        "run_id": run_id,
        "settings_sha256": "",  # the manifest's, once it is made
        "device_name": device_name,
        "clip_backbone": clip_convention.backbone,
        "clip_pretrained": clip_convention.pretrained,
    }
    manifest = _synthetic_manifest(
        models, steps, seeds, prompts_per_category, categories, labels, device_memory_bytes, clip_convention
    )
    labels["settings_sha256"] = manifest["settings_sha256"] = settings_sha256(manifest)
    rows = [
        _synthetic_record(model, s, category, i, seed, labels, rng)
        for model in models
        for s in steps
        for category in categories
        for i in range(prompts_per_category)
        for seed in seeds
    ]
    return manifest, pd.DataFrame(rows)


def _synthetic_record(
    model: SyntheticModel,
    s: int,
    category: str,
    i: int,
    seed: int,
    labels: Mapping[str, Any],
    rng: np.random.Generator,
) -> dict[str, Any]:
    """One image's record: prompt ``i`` of ``category`` at ``s`` steps and image seed ``seed``, its times,
    energy and CLIPScore drawn (in that order) from ``model``'s truth; ``labels`` name the run, device and
    CLIPScore convention."""
    memory_columns = (*map(rung_column, MEMORY_RUNGS), *HOST_MEMORY_COLUMNS)
    truth = model.quality[category]
    step_lat = model.per_step_s + model.step_noise_s * rng.standard_normal(s)
    text, decode = (
        share * model.overhead_s + model.overhead_noise_s * rng.standard_normal()
        for share in (_TEXT_ENCODE_SHARE, 1 - _TEXT_ENCODE_SHARE)
    )
    denoise = float(step_lat.sum())
    total = float(text + denoise + decode)
    energy = None
    if model.overhead_j is not None:
        noise = model.energy_noise_j * rng.standard_normal()
        energy = float(model.overhead_j + model.per_step_j * s + noise)
    missing = [column for column in memory_columns if model.memory_bytes.get(column) is None]
    return {
        "run_id": labels["run_id"],
        "settings_sha256": labels["settings_sha256"],
        "model_key": model.key,
        "model_revision": None,
        "is_replica": model.is_replica,
        "steps": s,
        "num_timesteps": s,
        "seed": seed,
        "batch_size": 1,
        "prompt_id": f"{category}-{i:04d}",
        "prompt": f"prompt {i} of {category}",
        "category": category,
        "challenge": category,
        "p2_category": None,
        "step_latencies_s": [float(v) for v in step_lat],
        "text_encode_s": float(text),
        "denoise_s": denoise,
        "decode_s": float(decode),
        "total_s": total,
        "overhead_s": None,
        "clip_score": float(truth.mean(s) + truth.std * rng.standard_normal()),
        "prompt_truncated": False,
        **{column: model.memory_bytes.get(column) for column in memory_columns},
        "pipeline_peak_bytes": None,
        "pipeline_memory": None,
        "memory_note": f"synthetic: not given: {', '.join(missing)}" if missing else None,
        "energy_j": energy,
        "average_power_w": None if energy is None else energy / total,
        "energy_note": "synthetic: no energy given" if energy is None else None,
        "import_s": None,
        "model_load_s": None,
        "first_call_s": None,
        "image_sha256": None,
        "status": Status.OK.value,
        "error": None,
        "device_name": labels["device_name"],
        "dtype": "float16",
        "resolution": 512,
        "guidance_scale": 7.5,
        "clip_backbone": labels["clip_backbone"],
        "clip_pretrained": labels["clip_pretrained"],
        "timestamp": "2026-01-01T00:00:00Z",
    }


def _synthetic_manifest(
    models: Sequence[SyntheticModel],
    steps: Sequence[int],
    seeds: Sequence[int],
    prompts_per_category: int,
    categories: Sequence[str],
    labels: Mapping[str, Any],
    device_memory_bytes: int | None,
    clip_convention: ClipConvention,
) -> dict[str, Any]:
    """The manifest document of a synthetic run of ``models``."""
    metered = any(m.overhead_j is not None for m in models)
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "run_id": labels["run_id"],
        "settings_sha256": labels["settings_sha256"],
        "host": {"name": "synthetic host"},
        "device": {
            "name": labels["device_name"],
            "driver": "synthetic",
            "cuda": None,
            "memory_bytes": device_memory_bytes,
        },
        "versions": {"genedge": "synthetic"},
        "dtype": "float16",
        "resolution": 512,
        "guidance_scale": 7.5,
        "scheduler": {"name": "synthetic"},
        "models": [
            {
                "key": m.key,
                "revision": None,
                "is_replica": m.is_replica,
                "unet_params": m.unet_params,
                "resolution": 512,
            }
            for m in models
        ],
        "steps": list(steps),
        "batch_size": 1,
        "seeds": list(seeds),
        "warmup": 0,
        "clip_convention": {name: getattr(clip_convention, name) for name in ClipConvention.__dataclass_fields__},
        "prompt_set": {
            "name": "synthetic",
            "sha256": "0" * 64,
            "category_mapping": {"name": "synthetic", "column": "category", "labels": {c: [c] for c in categories}},
            "n": prompts_per_category * len(categories),
        },
        "nvml": {"available": False, "reason": "synthetic run"},
        "energy": {
            "available": metered,
            "source": "synthetic",
            "reason": None if metered else "synthetic run: no energy given",
        },
    }


def write_run(
    run_dir: str | os.PathLike[str],
    manifest: Mapping[str, Any],
    records: pd.DataFrame,
    *,
    shards: int = 1,
    nan_as_null: bool = True,
) -> Path:
    """Write a run directory: ``manifest.json`` and rank 0's shards ``records/shard-0-00000.parquet`` ….

    Columns are typed by the record contract; a column the frame lacks is left out
    (so a test can write a shard with a missing column).

    Args:
        run_dir: directory to create.
        manifest: the manifest document.
        records: the rows; split into ``shards`` consecutive parts.
        shards: number of shard files (≥ 1).
        nan_as_null: write NaN as null (pandas' missing value). False keeps a float NaN a
            NaN in the file, as a broken writer would.

    Returns:
        ``run_dir`` as a path.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if shards < 1:
        raise ValueError(f"Expected shards >= 1, but got {shards}")
    run_dir = Path(run_dir)
    write_text_atomic(run_dir / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    full = record_schema()
    schema = pa.schema([full.field(name) for name in records.columns if name in full.names])
    for i, part in enumerate(np.array_split(np.arange(len(records)), shards)):
        rows = records.iloc[part]
        table = pa.table([pa.array(rows[f.name], type=f.type, from_pandas=nan_as_null) for f in schema], schema=schema)
        target = shard_path(run_dir, 0, i)
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)
    return run_dir


#: The step counts of every model of a synthetic problem.
DEFAULT_STEP_GRID = (10, 15, 20, 25, 30, 40, 50)


def synthetic_problem(
    n_models: int,
    n_categories: int,
    n_requests: int,
    *,
    budget: float = 1.0,
    weight: float = 0.05,
    step_grid: tuple[int, ...] = DEFAULT_STEP_GRID,
    rng: int | np.random.Generator | None = None,
) -> Problem:
    """Draw a problem with ``n_models`` models, ``n_categories`` categories and ``n_requests`` requests.

    Per-step time is drawn log-uniformly in [15, 150] ms with 0.05–0.3 s overhead;
    mean CLIPScore at 50 steps grows with per-step time (slower models are
    better, with noise), categories add offsets of a few points, σ is 2.5–4.5.
    """
    gen = np.random.default_rng(rng)
    grid = np.asarray(step_grid, dtype=int)
    per_step = np.exp(gen.uniform(np.log(0.015), np.log(0.15), n_models))
    overhead = gen.uniform(0.05, 0.3, n_models)
    base = 30 + 2.0 * np.log(per_step / 0.015) + gen.normal(0, 0.5, n_models)
    offset = gen.normal(0, 2.0, n_categories)
    affinity = gen.normal(0, 0.7, (n_categories, n_models))
    drop = gen.uniform(0.1, 0.25, n_models)  # fraction of the score lost at very few steps
    kappa = gen.uniform(6, 14, n_models)
    means, stds, service = [], [], []
    for m in range(n_models):
        top = base[m] + offset[:, None] + affinity[:, m : m + 1]
        shape = (1 - drop[m] * np.exp(-grid / kappa[m])) / (1 - drop[m] * np.exp(-grid[-1] / kappa[m]))
        means.append(top * shape[None, :])
        stds.append(np.repeat(gen.uniform(2.5, 4.5, (n_categories, 1)), grid.size, axis=1))
        service.append(overhead[m] + per_step[m] * grid)
    counts = gen.dirichlet(np.ones(n_categories) * 2) * n_requests
    counts = np.maximum(np.round(counts), 1.0)
    return Problem(
        models=tuple(f"model{m}" for m in range(n_models)),
        categories=tuple(f"category{c}" for c in range(n_categories)),
        counts=counts,
        steps=tuple(grid.copy() for _ in range(n_models)),
        quality_mean=tuple(means),
        quality_std=tuple(stds),
        service_s=tuple(service),
        default_step_index=tuple(grid.size - 1 for _ in range(n_models)),
        memory_bytes=np.full(n_models, 4 * 2**30, dtype=float),
        budget=budget,
        weight=weight,
    )
