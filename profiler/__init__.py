"""genedge.profiler: measure diffusion pipelines on a GPU into resumable Parquet records.

The public surface: a run (:func:`profile`), reading what it wrote, the model and prompt registries,
CLIPScore, and driving a pipeline's call (:mod:`genedge.profiler.pipeline`, also the server's).
Other names stay in their modules.

Importing this package loads no heavy library: torch, diffusers, open_clip, datasets and pynvml
are imported inside the functions that need them, and the package's own names on first use (PEP 562).
"""

from genedge._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "genedge.contract": ("read_manifest", "record_schema"),
        ".clipscore": ("ClipScorer", "clip_score_from_features"),
        ".device": ("set_threads", "torch_device"),
        ".models": (
            "add_replica_path",
            "clip_bpe_tokenizer",
            "get_replica_config",
            "list_replicas",
            "load_pipeline",
            "parse_model_spec",
            "scheduler_config",
            "unet_param_count",
        ),
        ".monitor": ("Monitor",),
        ".nvml": ("NvmlMonitor",),
        ".pipeline": (
            "GRAD_MODE",
            "Measurement",
            "decode_latents",
            "denoise",
            "encode_prompts",
            "grad_mode",
            "measure_call",
            "seeded_generators",
        ),
        ".prompts": ("add_category_mapping_path", "get_category_mapping", "list_category_mappings", "load_prompt_set"),
        ".records": ("PERCENTILES", "RunSummary", "read_records", "summarize_run"),
        ".run": ("ProfileConfig", "Progress", "RunResult", "profile", "validate"),
        ".timing": ("Clock",),
    },
)
