"""genedge.profiler: measure diffusion pipelines on a GPU into resumable Parquet records.

Importing this package loads no heavy library: torch, diffusers, open_clip, datasets and pynvml
are imported inside the functions that need them.
"""

from __future__ import annotations

from genedge.contract.runs import read_manifest, record_schema
from genedge.profiler.clipscore import ClipConvention, ClipScorer, clip_score_from_features, clip_scores
from genedge.profiler.models import (
    ModelSpec,
    add_replica_path,
    clip_bpe_tokenizer,
    get_replica_config,
    list_replicas,
    load_pipeline,
    parse_model_spec,
    scheduler_config,
    unet_param_count,
)
from genedge.profiler.nvml import NvmlMonitor, NvmlPeaks, NvmlStatus
from genedge.profiler.prompts import (
    Prompt,
    PromptSet,
    add_category_mapping_path,
    get_category_mapping,
    list_category_mappings,
    load_prompt_set,
)
from genedge.profiler.records import read_records, recorded_keys, summarize_run
from genedge.profiler.run import Measurement, ProfileConfig, Progress, RunResult, measure_call, profile, validate
from genedge.profiler.timing import Clock, StepTimer, step_timer

__all__ = [
    "ClipConvention",
    "ClipScorer",
    "clip_score_from_features",
    "clip_scores",
    "ModelSpec",
    "add_replica_path",
    "clip_bpe_tokenizer",
    "get_replica_config",
    "list_replicas",
    "load_pipeline",
    "parse_model_spec",
    "scheduler_config",
    "unet_param_count",
    "NvmlMonitor",
    "NvmlPeaks",
    "NvmlStatus",
    "Prompt",
    "PromptSet",
    "add_category_mapping_path",
    "get_category_mapping",
    "list_category_mappings",
    "load_prompt_set",
    "read_manifest",
    "read_records",
    "recorded_keys",
    "record_schema",
    "summarize_run",
    "Measurement",
    "ProfileConfig",
    "Progress",
    "RunResult",
    "measure_call",
    "profile",
    "validate",
    "Clock",
    "StepTimer",
    "step_timer",
]
