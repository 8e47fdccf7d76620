"""genedge.profiler: measure diffusion pipelines on a GPU into resumable Parquet records.

Importing this package loads no heavy library: torch, diffusers, open_clip, datasets and pynvml
are imported inside the functions that need them, and the package's own names on first use (PEP 562).
"""

from genedge._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "genedge.contract": ("ClipConvention", "read_manifest", "record_schema"),
        ".clipscore": ("ClipScorer", "ClipWeights", "clip_score_from_features", "clip_scores", "resolve_clip_weights"),
        ".device": ("DEVICE_SYNTAX", "check_device_string", "select_device"),
        ".models": (
            "ModelSpec",
            "add_replica_path",
            "clip_bpe_tokenizer",
            "get_replica_config",
            "list_replicas",
            "load_pipeline",
            "native_resolution",
            "parse_model_spec",
            "resolve_revision",
            "scheduler_config",
            "unet_param_count",
            "vae_decode_dtype",
        ),
        ".host": ("host_info",),
        ".monitor": ("Monitor", "MonitorStatus", "WindowReading"),
        ".nvml": ("NvmlMonitor", "NvmlPeaks", "NvmlStatus"),
        ".prompts": (
            "Prompt",
            "PromptSet",
            "add_category_mapping_path",
            "get_category_mapping",
            "list_category_mappings",
            "load_prompt_set",
        ),
        ".records": (
            "PERCENTILES",
            "RunIndex",
            "RunSummary",
            "ShardWriter",
            "index_run",
            "read_records",
            "summarize_run",
        ),
        ".run": (
            "GRAD_MODE",
            "Measurement",
            "ProfileConfig",
            "Progress",
            "RunResult",
            "measure_call",
            "profile",
            "validate",
        ),
        ".timing": ("Clock", "StepTimer", "step_timer"),
    },
)
