"""One measurement run: every model × steps × seed × prompt, measured and scored into records.

Per generated image the run records per-step latency, the text-encode / denoise / VAE-decode /
total seconds, the memory ladder (torch allocated ≤ torch reserved ≤ NVML process ≤ NVML device)
and the CLIPScore. Under ``accelerate launch`` (or any launcher setting ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``) each process takes every ``WORLD_SIZE``-th pending image, runs on its own GPU and
writes its own shards.
"""

from __future__ import annotations

import gc
import hashlib
import io
import itertools
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from genedge import __version__
from genedge.contract.files import write_bytes_atomic
from genedge.contract.runs import MANIFEST_NAME, MANIFEST_SCHEMA_VERSION, read_manifest, write_manifest
from genedge.profiler._imports import require
from genedge.profiler.clipscore import DEFAULT_CLIP_BACKBONE, DEFAULT_CLIP_PRETRAINED, ClipScorer
from genedge.profiler.models import ModelSpec, load_pipeline, parse_model_spec, scheduler_config, unet_param_count
from genedge.profiler.nvml import NvmlMonitor, NvmlPeaks
from genedge.profiler.prompts import (
    DEFAULT_MAPPING,
    DEFAULT_PROMPT_SOURCE,
    Prompt,
    PromptSet,
    load_prompt_set,
)
from genedge.profiler.records import ShardWriter, recorded_keys
from genedge.profiler.timing import Clock, step_timer

__all__ = [
    "WARMUP_RUNS",
    "FLUSH_EVERY_IMAGES",
    "ProfileConfig",
    "Progress",
    "RunResult",
    "Measurement",
    "measure_call",
    "validate",
    "profile",
]

logger = logging.getLogger(__name__)

WARMUP_RUNS = 1
FLUSH_EVERY_IMAGES = 4
_DTYPES = ("float32", "float16", "bfloat16")
# What encode_prompt returns, per pipeline class, as the keyword names the pipeline call accepts.
_EMBEDDING_NAMES = {
    "StableDiffusionPipeline": ("prompt_embeds", "negative_prompt_embeds"),
    "StableDiffusionXLPipeline": (
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    ),
}


@dataclass(frozen=True)
class ProfileConfig:
    """What to measure and how.

    Attributes:
        models: Model specs (see :func:`genedge.profiler.parse_model_spec`).
        steps: Requested denoising step counts, each ≥ 1.
        prompts: Prompt source: datasets hub id or local TSV/CSV/Parquet file.
        category_mapping: Category mapping name.
        per_category: Keep at most this many prompts per category.
        limit: Keep at most this many prompts overall.
        prompt_seed: Seed of the prompt subsampling.
        seeds: Generation seeds; each prompt is generated once per seed.
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``; default ``cuda:<LOCAL_RANK>`` when CUDA is available.
        dtype: ``float32``, ``float16`` or ``bfloat16``; default float16 on CUDA, float32 on CPU.
        resolution: Image side in pixels (multiple of 8).
        guidance_scale: Classifier-free guidance scale (≤ 1 disables guidance).
        scheduler: diffusers scheduler class replacing each model's own, or ``None``.
        batch_size: Prompts per pipeline call.
        warmup: Unrecorded warm-up generations per model.
        save_images: Keep PNGs under ``RUN/images/<sha256>.png``.
        clip_backbone: open_clip model name, or ``replica:<name>`` for a random-weight test backbone.
        clip_pretrained: open_clip pretrained tag; ``None`` for random weights.
        flush_every: Images per shard; a kill loses at most this many measured images.
    """

    models: tuple[str, ...]
    steps: tuple[int, ...]
    prompts: str = DEFAULT_PROMPT_SOURCE
    category_mapping: str = DEFAULT_MAPPING
    per_category: int | None = None
    limit: int | None = None
    prompt_seed: int = 0
    seeds: tuple[int, ...] = (0,)
    device: str | None = None
    dtype: str | None = None
    resolution: int = 512
    guidance_scale: float = 7.5
    scheduler: str | None = None
    batch_size: int = 1
    warmup: int = WARMUP_RUNS
    save_images: bool = False
    clip_backbone: str = DEFAULT_CLIP_BACKBONE
    clip_pretrained: str | None = DEFAULT_CLIP_PRETRAINED
    flush_every: int = FLUSH_EVERY_IMAGES


@dataclass(frozen=True)
class Progress:
    """Progress of this process: images done (recorded, any status) of its total, and the current configuration."""

    done: int
    total: int
    config: str


@dataclass(frozen=True)
class RunResult:
    """What one process did.

    Attributes:
        run_dir: The run directory.
        run_id: Run id (the same for every process and every resumption with the same settings).
        rank: This process's rank.
        world_size: Number of processes.
        recorded: Rows this process wrote now.
        skipped: Images skipped because the run already held them.
        failed: Rows written with status ``oom`` or ``error``.
    """

    run_dir: Path
    run_id: str
    rank: int
    world_size: int
    recorded: int
    skipped: int
    failed: int


@dataclass(frozen=True)
class Measurement:
    """One pipeline call's measurements (shared by the images of a batch).

    Attributes:
        step_latencies_s: Seconds per executed denoising step (``num_timesteps`` values).
        num_timesteps: Steps the scheduler actually ran (``pipeline.num_timesteps``).
        text_encode_s: Prompt encoding window, seconds.
        denoise_s: Denoising window (pipeline call up to latents), seconds.
        decode_s: VAE decode and conversion to images, seconds.
        total_s: Host wall-clock seconds from before encoding to after the device finished.
        peak_torch_allocated_bytes: ``torch.cuda.max_memory_allocated`` over the call (``None`` off CUDA).
        peak_torch_reserved_bytes: ``torch.cuda.max_memory_reserved`` over the call (``None`` off CUDA).
        nvml: NVML process and device peaks over the call.
    """

    step_latencies_s: tuple[float, ...]
    num_timesteps: int
    text_encode_s: float
    denoise_s: float
    decode_s: float
    total_s: float
    peak_torch_allocated_bytes: int | None
    peak_torch_reserved_bytes: int | None
    nvml: NvmlPeaks


@dataclass(frozen=True)
class _Item:
    model_key: str
    steps: int
    seed: int
    prompt: Prompt

    @property
    def key(self) -> tuple[str, int, int, str]:
        return (self.model_key, self.steps, self.seed, self.prompt.prompt_id)


@dataclass
class _Pending:
    item: _Item
    status: str
    error: str | None = None
    measurement: Measurement | None = None
    image: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def validate(config: ProfileConfig) -> tuple[list[ModelSpec], PromptSet]:
    """Check a configuration before any work; returns the parsed model specs and the prompt set.

    Raises:
        ValueError: For an unknown model spec (listing the replicas), steps ≤ 0, an empty prompt
            set, a prompt file without the mapped column, or another invalid option.
    """
    if not config.models:
        raise ValueError("Expected at least one --model, but got none")
    if not config.steps or any(int(s) != s or s < 1 for s in config.steps):
        raise ValueError(f"Expected steps as positive integers, but got {list(config.steps)}")
    if not config.seeds:
        raise ValueError("Expected at least one seed, but got none")
    for name in ("batch_size", "flush_every"):
        if getattr(config, name) < 1:
            raise ValueError(f"Expected {name} ≥ 1, but got {getattr(config, name)}")
    if config.warmup < 0:
        raise ValueError(f"Expected warmup ≥ 0, but got {config.warmup}")
    if config.resolution < 8 or config.resolution % 8:
        raise ValueError(f"Expected a resolution that is a positive multiple of 8, but got {config.resolution}")
    if config.dtype is not None and config.dtype not in _DTYPES:
        raise ValueError(f"Expected dtype in {_DTYPES}, but got {config.dtype!r}")
    specs = [parse_model_spec(m) for m in config.models]
    if len({s.key for s in specs}) != len(specs):
        raise ValueError(f"Expected distinct models, but got {list(config.models)}")
    prompt_set = load_prompt_set(
        config.prompts,
        mapping=config.category_mapping,
        per_category=config.per_category,
        limit=config.limit,
        seed=config.prompt_seed,
    )
    return specs, prompt_set


def _distributed() -> tuple[int, int, int]:
    # accelerate launch / torchrun set these; a plain process is rank 0 of 1.
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def _device_info(torch: Any, device: Any, monitor: NvmlMonitor) -> dict[str, Any]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {
            "name": props.name,
            "driver": monitor.status.driver,
            "cuda": torch.version.cuda,
            "memory_bytes": int(props.total_memory),
        }
    return {"name": _cpu_name(), "driver": monitor.status.driver, "cuda": None, "memory_bytes": None}


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": require("torch").__version__,
        "diffusers": require("diffusers").__version__,
        "open_clip": require("open_clip").__version__,
        "transformers": require("transformers").__version__,
        "genedge": __version__,
    }


def _run_id(out_dir: Path, config: ProfileConfig, prompt_set: PromptSet, device_name: str, dtype: str) -> str:
    # Deterministic, so every process and every resumption agree without talking to each other.
    settings = asdict(config) | {
        "prompts": prompt_set.sha256,
        "prompt_ids": [p.prompt_id for p in prompt_set.prompts],
        "device": device_name,
        "dtype": dtype,
        "flush_every": None,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    return f"{out_dir.name}-{digest[:8]}"


def _encode(pipe: Any, prompts: list[str], device: Any, guidance_scale: float) -> dict[str, Any]:
    outputs = pipe.encode_prompt(
        prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=guidance_scale > 1.0
    )
    return dict(zip(_EMBEDDING_NAMES[type(pipe).__name__], outputs))


def _decode(pipe: Any, latents: Any) -> list[Any]:
    vae = pipe.vae
    latents = latents.to(vae.dtype)
    mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
    if mean is not None and std is not None:
        torch = require("torch")
        mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
        std = torch.tensor(std).view(1, -1, 1, 1).to(latents)
        latents = latents * std / vae.config.scaling_factor + mean
    else:
        latents = latents / vae.config.scaling_factor
    pixels = vae.decode(latents, return_dict=False)[0]
    return pipe.image_processor.postprocess(pixels, output_type="pil")


def measure_call(
    pipe: Any,
    prompts: list[str],
    *,
    steps: int,
    seed: int,
    config: ProfileConfig,
    device: Any,
    clock: Clock,
    monitor: NvmlMonitor,
) -> tuple[list[Any], Measurement]:
    """Generate one batch with every measurement window: the profiler's hot path.

    Text encoding, denoising (``output_type="latent"``) and VAE decoding run as three contiguous
    windows on the device clock; a pre-hook on the UNet marks the start of step 0 and a step-end
    callback marks each step's end. Torch peaks are reset before the call and NVML is sampled in
    the background during it.

    Args:
        pipe: A pipeline from :func:`genedge.profiler.load_pipeline`.
        prompts: The batch's prompts.
        steps: Requested denoising steps.
        seed: Seed of every image's ``torch.Generator``.
        config: Resolution and guidance scale are read from it.
        device: The pipeline's ``torch.device``.
        clock: Clock of ``device``.
        monitor: NVML monitor of ``device``.

    Returns:
        The PIL images and the call's :class:`Measurement`.
    """
    torch = require("torch")
    cuda = device.type == "cuda"
    generators = [torch.Generator(device).manual_seed(seed) for _ in prompts]
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), monitor.window() as nvml_window:
        host_start = time.perf_counter()
        marks = [clock.mark()]
        embeddings = _encode(pipe, prompts, device, config.guidance_scale)
        marks.append(clock.mark())
        with step_timer(pipe, clock) as timer:
            latents = pipe(
                **embeddings,
                num_inference_steps=steps,
                guidance_scale=config.guidance_scale,
                height=config.resolution,
                width=config.resolution,
                generator=generators,
                output_type="latent",
                callback_on_step_end=timer,
                callback_on_step_end_tensor_inputs=[],
            ).images
        marks.append(clock.mark())
        images = _decode(pipe, latents)
        marks.append(clock.mark())
        clock.synchronize()
        total_s = time.perf_counter() - host_start
    text_encode_s, denoise_s, decode_s = clock.intervals_s(marks)
    measurement = Measurement(
        step_latencies_s=tuple(clock.intervals_s(timer.marks)),
        num_timesteps=int(pipe.num_timesteps),
        text_encode_s=text_encode_s,
        denoise_s=denoise_s,
        decode_s=decode_s,
        total_s=total_s,
        peak_torch_allocated_bytes=int(torch.cuda.max_memory_allocated(device)) if cuda else None,
        peak_torch_reserved_bytes=int(torch.cuda.max_memory_reserved(device)) if cuda else None,
        nvml=nvml_window.peaks,
    )
    return images, measurement


def _save_image(run_dir: Path, image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    target = run_dir / "images" / f"{digest}.png"
    if not target.exists():  # content-addressed: an existing file already holds these bytes
        write_bytes_atomic(target, data)
    return digest


class _Recorder:
    """Buffers finished images, scores them in batches and writes them as shards."""

    def __init__(
        self,
        run_dir: Path,
        rank: int,
        common: dict[str, Any],
        specs: dict[str, ModelSpec],
        scorer: ClipScorer,
        config: ProfileConfig,
        nvml_reason: str | None,
    ) -> None:
        self.run_dir = run_dir
        self.writer = ShardWriter(run_dir, rank)
        self.common = common
        self.specs = specs
        self.scorer = scorer
        self.config = config
        self.nvml_reason = nvml_reason
        self.pending: list[_Pending] = []
        self.recorded = 0
        self.failed = 0

    def add(self, entries: list[_Pending]) -> None:
        self.pending.extend(entries)
        if len(self.pending) >= self.config.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        ok = [p for p in self.pending if p.status == "ok"]
        scores, truncated = (
            self.scorer.score([p.image for p in ok], [p.item.prompt.text for p in ok]) if ok else ([], [])
        )
        for entry, score, cut in zip(ok, scores, truncated):
            entry.extra = {"clip_score": score, "prompt_truncated": cut}
            if self.config.save_images:
                entry.extra["image_sha256"] = _save_image(self.run_dir, entry.image)
        rows = [self._row(p) for p in self.pending]
        self.writer.write(rows)
        self.recorded += len(rows)
        self.failed += sum(p.status != "ok" for p in self.pending)
        self.pending = []

    def _row(self, entry: _Pending) -> dict[str, Any]:
        item, m = entry.item, entry.measurement
        spec = self.specs[item.model_key]
        return self.common | {
            "model_key": item.model_key,
            "model_revision": spec.revision,
            "is_replica": spec.is_replica,
            "steps": item.steps,
            "num_timesteps": m.num_timesteps if m else None,
            "seed": item.seed,
            "batch_size": self.config.batch_size,
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
            "clip_score": entry.extra.get("clip_score"),
            "prompt_truncated": entry.extra.get("prompt_truncated", False),
            "peak_torch_allocated_bytes": m.peak_torch_allocated_bytes if m else None,
            "peak_torch_reserved_bytes": m.peak_torch_reserved_bytes if m else None,
            "peak_nvml_process_bytes": m.nvml.process_bytes if m else None,
            "peak_nvml_device_bytes": m.nvml.device_bytes if m else None,
            "nvml_note": m.nvml.note if m else self.nvml_reason,
            "image_sha256": entry.extra.get("image_sha256"),
            "status": entry.status,
            "error": entry.error,
            "timestamp": datetime.now(timezone.utc).isoformat(),
        }


def _configs(items: list[_Item]) -> Iterator[tuple[tuple[str, int], list[_Item]]]:
    for key, group in itertools.groupby(items, key=lambda it: (it.model_key, it.steps)):
        yield key, list(group)


def _batches(items: list[_Item], size: int) -> Iterator[list[_Item]]:
    for _, group in itertools.groupby(items, key=lambda it: it.seed):
        group = list(group)
        for start in range(0, len(group), size):
            yield group[start : start + size]


def profile(
    config: ProfileConfig,
    out_dir: str | Path,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    retry_failed: bool = False,
) -> RunResult:
    """Run (or resume) a measurement run into ``out_dir``.

    Every image already recorded in ``out_dir`` (any status) is skipped, so rerunning the same
    command after a kill completes the run without duplicates. A CUDA out-of-memory error records
    the rest of that (model, steps) configuration as ``oom`` rows and the run goes on; any other
    generation error records ``error`` rows for that batch.

    Args:
        config: What to measure.
        out_dir: Run directory (created if needed).
        on_progress: Called after each pipeline call with this process's progress.
        retry_failed: generate again the images whose rows say ``oom`` or ``error`` (after a
            transient failure); their failure rows stay, and calibration counts them as excluded.

    Returns:
        What this process did.

    Raises:
        ValueError: For invalid input (see :func:`validate`) or an ``out_dir`` holding a run with other settings.
    """
    out_dir = Path(out_dir)
    specs, prompt_set = validate(config)
    rank, world_size, local_rank = _distributed()
    torch = require("torch")
    if config.device is not None:
        device = torch.device(config.device)
    else:
        device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dtype_name = config.dtype or ("float16" if device.type == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)
    monitor = NvmlMonitor(str(torch.cuda.get_device_properties(device).uuid) if device.type == "cuda" else None)
    try:
        device_info = _device_info(torch, device, monitor)
        run_id = _run_id(out_dir, config, prompt_set, device_info["name"], dtype_name)
        if (out_dir / MANIFEST_NAME).is_file():
            existing = read_manifest(out_dir)
            if existing["run_id"] != run_id:
                raise ValueError(
                    f"{out_dir / MANIFEST_NAME}: field 'run_id': expected {run_id} (this command's settings), "
                    "but got "
                    f"{existing['run_id']!r}; the directory holds a run with other settings, use another --out"
                )
        models = [
            {
                "key": s.key,
                "revision": s.revision,
                "is_replica": s.is_replica,
                "unet_params": unet_param_count(s),
                "scheduler": scheduler_config(s, config.scheduler),
            }
            for s in specs
        ]
        scorer = ClipScorer(config.clip_backbone, config.clip_pretrained, device=device, offload=device.type == "cuda")
        if rank == 0:
            write_manifest(
                out_dir,
                {
                    "schema_version": MANIFEST_SCHEMA_VERSION,
                    "run_id": run_id,
                    "device": device_info,
                    "versions": _versions(),
                    "dtype": dtype_name,
                    "resolution": config.resolution,
                    "guidance_scale": config.guidance_scale,
                    "scheduler": models[0]["scheduler"],
                    "models": models,
                    "steps": list(config.steps),
                    "batch_size": config.batch_size,
                    "seeds": list(config.seeds),
                    "warmup": config.warmup,
                    "clip_convention": asdict(scorer.convention),
                    "prompt_set": {
                        "name": prompt_set.name,
                        "sha256": prompt_set.sha256,
                        # The whole mapping travels with the run, so reading it needs no mapping registry.
                        "category_mapping": prompt_set.category_mapping,
                        "n": len(prompt_set.prompts),
                    },
                    "nvml": {"available": monitor.status.available, "reason": monitor.status.reason},
                    "save_images": config.save_images,
                    "world_size": world_size,
                },
            )
        done = recorded_keys(out_dir, statuses={"ok"} if retry_failed else None)
        every = [
            _Item(m.key, s, seed, p)
            for m in specs
            for s in config.steps
            for seed in config.seeds
            for p in prompt_set.prompts
        ]
        # Split the full work list first, then skip what is done: every rank sees the same split
        # whatever the others have written, so no item is skipped by all ranks or done twice.
        todo = [it for it in every[rank::world_size] if it.key not in done]
        skipped = sum(it.key in done for it in every)
        common = {
            "run_id": run_id,
            "device_name": device_info["name"],
            "dtype": dtype_name,
            "resolution": config.resolution,
            "guidance_scale": float(config.guidance_scale),
            "clip_backbone": scorer.convention.backbone,
            "clip_pretrained": scorer.convention.pretrained,
        }
        recorder = _Recorder(out_dir, rank, common, {s.key: s for s in specs}, scorer, config, monitor.status.reason)
        _measure(todo, specs, config, device, dtype, monitor, recorder, on_progress)
        recorder.flush()
    finally:
        monitor.close()
    return RunResult(out_dir, run_id, rank, world_size, recorder.recorded, skipped, recorder.failed)


def _oom_error(torch: Any) -> type[BaseException]:
    return getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def _measure(
    todo: list[_Item],
    specs: Sequence[ModelSpec],
    config: ProfileConfig,
    device: Any,
    dtype: Any,
    monitor: NvmlMonitor,
    recorder: _Recorder,
    on_progress: Callable[[Progress], None] | None,
) -> None:
    torch = require("torch")
    oom = _oom_error(torch)
    clock = Clock(device)
    done = 0

    def report(label: str) -> None:
        if on_progress is not None:
            on_progress(Progress(done, len(todo), label))

    for spec in specs:
        model_items = [it for it in todo if it.model_key == spec.key]
        if not model_items:
            continue
        report(f"{spec.key} loading")
        pipe = None
        try:
            pipe = load_pipeline(spec, device=device, dtype=dtype, scheduler=config.scheduler)
            for _ in range(config.warmup):
                measure_call(
                    pipe,
                    [model_items[0].prompt.text],
                    steps=model_items[0].steps,
                    seed=model_items[0].seed,
                    config=config,
                    device=device,
                    clock=clock,
                    monitor=monitor,
                )
        except Exception as err:
            status = "oom" if isinstance(err, oom) else "error"
            logger.warning(
                "%s: %s while loading or warming up; recording its %d images as %s",
                spec.key,
                type(err).__name__,
                len(model_items),
                status,
            )
            recorder.add(
                [
                    _Pending(it, status, f"while loading or warming up: {type(err).__name__}: {err}")
                    for it in model_items
                ]
            )
            done += len(model_items)
            report(spec.key)
            del pipe
            _release(torch, device)
            continue
        for (_, steps), config_items in _configs(model_items):
            label = f"{spec.key} steps={steps}"
            remaining = list(config_items)
            for batch in _batches(config_items, config.batch_size):
                try:
                    images, measurement = measure_call(
                        pipe,
                        [it.prompt.text for it in batch],
                        steps=steps,
                        seed=batch[0].seed,
                        config=config,
                        device=device,
                        clock=clock,
                        monitor=monitor,
                    )
                    recorder.add([_Pending(it, "ok", None, measurement, image) for it, image in zip(batch, images)])
                except oom as err:
                    logger.warning(
                        "%s: out of memory; recording the configuration's %d remaining images as oom",
                        label,
                        len(remaining),
                    )
                    recorder.add([_Pending(it, "oom", str(err)) for it in remaining])
                    done += len(remaining)
                    _release(torch, device)
                    break
                except Exception as err:
                    logger.warning("%s: generation failed: %s", label, err)
                    recorder.add([_Pending(it, "error", f"{type(err).__name__}: {err}") for it in batch])
                remaining = remaining[len(batch) :]
                done += len(batch)
                report(label)
        recorder.flush()
        del pipe
        _release(torch, device)


def _release(torch: Any, device: Any) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
