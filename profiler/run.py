"""One measurement run: every model × steps × seed × prompt, measured and scored into records.

Per generated image the run records per-step latency, the text-encode / denoise / VAE-decode /
total seconds, the memory ladder (torch allocated ≤ torch reserved ≤ NVML process ≤ NVML device),
the process's peak resident memory, the energy where the device reports it, the model's load and
first-call seconds, and the CLIPScore. Under ``accelerate launch`` (or any launcher setting
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``) each process takes every ``WORLD_SIZE``-th pending image,
runs on its own device and writes its own shards.

A run is identified by ``run_id`` (made once, when its manifest is first written) and by
``settings_sha256``, the hash of everything that defines what it measures; both travel in every
row. Resuming measures every image that this run has not recorded itself, so rows copied in from
another run never stand in for its own; the folder can be renamed or moved. One process per rank
may write a run at a time (an OS file lock), and shard names are claimed atomically.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import io
import itertools
import logging
import os
import platform
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from genedge import __version__
from genedge.contract.files import write_bytes_atomic
from genedge.contract.runs import (
    HOST_MEMORY_COLUMNS,
    MANIFEST_NAME,
    MANIFEST_SCHEMA_VERSION,
    MEMORY_RUNGS,
    lock_path,
    read_manifest,
    run_identity,
    rung_column,
    settings_document,
    settings_sha256,
    write_manifest,
)
from genedge.profiler._imports import require
from genedge.profiler.clipscore import (
    DEFAULT_CLIP_BACKBONE,
    DEFAULT_CLIP_PRETRAINED,
    ClipScorer,
    resolve_clip_weights,
)
from genedge.profiler.device import check_device_string, select_device
from genedge.profiler.host import host_info
from genedge.profiler.models import (
    ModelSpec,
    load_pipeline,
    native_resolution,
    parse_model_spec,
    resolve_revision,
    scheduler_config,
    unet_param_count,
)
from genedge.profiler.monitor import Monitor, WindowReading
from genedge.profiler.prompts import (
    DEFAULT_MAPPING,
    DEFAULT_PROMPT_SOURCE,
    Prompt,
    PromptSet,
    load_prompt_set,
)
from genedge.profiler.records import RunIndex, ShardWriter, index_run
from genedge.profiler.timing import Clock, step_timer

__all__ = [
    "WARMUP_RUNS",
    "FLUSH_EVERY_IMAGES",
    "ProfileConfig",
    "Progress",
    "RunResult",
    "Measurement",
    "measure_call",
    "encode_prompts",
    "decode_latents",
    "validate",
    "profile",
]

logger = logging.getLogger(__name__)

WARMUP_RUNS = 1
FLUSH_EVERY_IMAGES = 4
# How long a rank > 0 waits for rank 0 to write the manifest (rank 0 loads the CLIP backbone first).
MANIFEST_WAIT_S = 900.0
GRAD_MODE = "torch.inference_mode"
_MEMORY_COLUMNS = (*(rung_column(r) for r in MEMORY_RUNGS), *HOST_MEMORY_COLUMNS)
_TORCH_COLUMNS = tuple(rung_column(r) for r in MEMORY_RUNGS if r.startswith("torch_"))
_NOTED_COLUMNS = (*_MEMORY_COLUMNS, "energy_j")
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
        resolution: Image side in pixels (multiple of 8); ``None`` for each model's native size.
        guidance_scale: Classifier-free guidance scale (≤ 1 disables guidance).
        scheduler: diffusers scheduler class replacing each model's own, or ``None``.
        batch_size: Prompts per pipeline call.
        warmup: Unrecorded warm-up generations per model.
        threads: CPU threads torch may use (``torch.set_num_threads``); ``None`` keeps torch's default.
        save_images: Keep PNGs under ``RUN/images/<sha256>.png``.
        clip_backbone: open_clip model name, or ``replica:<name>`` for a random-weight test backbone.
        clip_pretrained: open_clip pretrained tag or a local weights file; ``None`` for random weights.
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
    resolution: int | None = None
    guidance_scale: float = 7.5
    scheduler: str | None = None
    batch_size: int = 1
    warmup: int = WARMUP_RUNS
    threads: int | None = None
    save_images: bool = False
    clip_backbone: str = DEFAULT_CLIP_BACKBONE
    clip_pretrained: str | None = DEFAULT_CLIP_PRETRAINED
    flush_every: int = FLUSH_EVERY_IMAGES


@dataclass(frozen=True)
class Progress:
    """Progress of this process.

    Attributes:
        done: Images done (recorded or about to be, any status) of ``total``.
        total: Images this process has to do now.
        config: What it is doing (``"<model> steps=<n>"`` or ``"<model> loading"``).
        written: Rows written to shards so far (changes at each flush).
        elapsed_s: Seconds since measuring started.
    """

    done: int
    total: int
    config: str
    written: int = 0
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class RunResult:
    """What one process did.

    Attributes:
        run_dir: The run directory.
        run_id: Run id (the same for every process and every resumption of the run).
        rank: This process's rank.
        world_size: Number of processes.
        recorded: Rows this process wrote now.
        skipped: Images skipped because this run already held them.
        failed: Rows written with status ``oom`` or ``error``.
        foreign: Rows in the folder from another run or other settings (measured again, never counted).
        quarantined: Unreadable shards moved to ``RUN/quarantine/`` (their images measured again).
    """

    run_dir: Path
    run_id: str
    rank: int
    world_size: int
    recorded: int
    skipped: int
    failed: int
    foreign: int = 0
    quarantined: tuple[Path, ...] = ()


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
        reading: What the monitor saw over the call: NVML and host memory peaks, energy, and why
            any of them is missing.
    """

    step_latencies_s: tuple[float, ...]
    num_timesteps: int
    text_encode_s: float
    denoise_s: float
    decode_s: float
    total_s: float
    peak_torch_allocated_bytes: int | None
    peak_torch_reserved_bytes: int | None
    reading: WindowReading


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
    call_images: int = 1  # images the measured call made (its energy is shared among them)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _ColdStart:
    """What loading a model cost this process: load seconds and its first call's seconds."""

    load_s: float | None = None
    first_call_s: float | None = None


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
    if len(set(config.steps)) != len(config.steps):
        raise ValueError(f"Expected distinct steps, but got {list(config.steps)}")
    if not config.seeds:
        raise ValueError("Expected at least one seed, but got none")
    for name in ("batch_size", "flush_every"):
        if getattr(config, name) < 1:
            raise ValueError(f"Expected {name} ≥ 1, but got {getattr(config, name)}")
    if config.warmup < 0:
        raise ValueError(f"Expected warmup ≥ 0, but got {config.warmup}")
    if config.threads is not None and config.threads < 1:
        raise ValueError(f"Expected threads ≥ 1, but got {config.threads}")
    if config.resolution is not None and (config.resolution < 8 or config.resolution % 8):
        raise ValueError(f"Expected a resolution that is a positive multiple of 8, but got {config.resolution}")
    if config.device is not None:
        check_device_string(config.device)
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


def _device_info(torch: Any, device: Any, driver: str | None, cpu_name: str) -> dict[str, Any]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {
            "name": props.name,
            "driver": driver,
            "cuda": torch.version.cuda,
            "memory_bytes": int(props.total_memory),
            "capability": f"{props.major}.{props.minor}",
        }
    return {"name": cpu_name, "driver": driver, "cuda": None, "memory_bytes": None}


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": require("torch").__version__,
        "diffusers": require("diffusers").__version__,
        "open_clip": require("open_clip").__version__,
        "transformers": require("transformers").__version__,
        "genedge": __version__,
    }


def _math_settings(torch: Any, device: Any) -> dict[str, Any]:
    # What changes kernels, hence latency, without changing the model: recorded beside the numbers.
    settings: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "grad_mode": GRAD_MODE,
    }
    if device.type == "cuda":
        settings |= {
            "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "sdpa_backends": {
                "flash": bool(torch.backends.cuda.flash_sdp_enabled()),
                "memory_efficient": bool(torch.backends.cuda.mem_efficient_sdp_enabled()),
                "math": bool(torch.backends.cuda.math_sdp_enabled()),
                "cudnn": bool(getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: False)()),
            },
        }
    return settings


def _new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def encode_prompts(pipe: Any, prompts: list[str], device: Any, guidance_scale: float) -> dict[str, Any]:
    """Encode a batch's prompts as the keyword arguments the pipeline's call takes (with guidance's negatives)."""
    outputs = pipe.encode_prompt(
        prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=guidance_scale > 1.0
    )
    return dict(zip(_EMBEDDING_NAMES[type(pipe).__name__], outputs))


def decode_latents(pipe: Any, latents: Any) -> list[Any]:
    """Decode latents with the pipeline's VAE (undoing its latent normalization) into PIL images."""
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
    resolution: int,
    guidance_scale: float,
    device: Any,
    clock: Clock,
    monitor: Monitor,
) -> tuple[list[Any], Measurement]:
    """Generate one batch with every measurement window: the profiler's hot path.

    Text encoding, denoising (``output_type="latent"``) and VAE decoding run as three contiguous
    windows on the device clock, under ``torch.inference_mode`` (:data:`GRAD_MODE`); a pre-hook on
    the UNet marks the start of step 0 and a step-end callback marks each step's end. Torch peaks
    are reset before the call; the monitor samples memory and energy in the background during it.

    Args:
        pipe: A pipeline from :func:`genedge.profiler.load_pipeline`.
        prompts: The batch's prompts.
        steps: Requested denoising steps.
        seed: Seed of every image's ``torch.Generator``.
        resolution: Image side in pixels.
        guidance_scale: Classifier-free guidance scale.
        device: The pipeline's ``torch.device``.
        clock: Clock of ``device``.
        monitor: Monitor of ``device``.

    Returns:
        The PIL images and the call's :class:`Measurement`.
    """
    torch = require("torch")
    cuda = device.type == "cuda"
    generators = [torch.Generator(device).manual_seed(seed) for _ in prompts]
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), monitor.window() as window:
        host_start = time.perf_counter()
        marks = [clock.mark()]
        embeddings = encode_prompts(pipe, prompts, device, guidance_scale)
        marks.append(clock.mark())
        with step_timer(pipe, clock) as timer:
            latents = pipe(
                **embeddings,
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                height=resolution,
                width=resolution,
                generator=generators,
                output_type="latent",
                callback_on_step_end=timer,
                callback_on_step_end_tensor_inputs=[],
            ).images
        marks.append(clock.mark())
        images = decode_latents(pipe, latents)
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
        reading=window.reading,
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


def _notes(notes: Mapping[str, str], columns: Sequence[str]) -> str | None:
    parts = [f"{column}: {notes[column]}" for column in columns if column in notes]
    return "; ".join(parts) or None


class _Recorder:
    """Buffers finished images, scores them in batches and writes them as shards."""

    def __init__(
        self,
        run_dir: Path,
        rank: int,
        common: dict[str, Any],
        models: Mapping[str, Mapping[str, Any]],
        scorer: ClipScorer,
        config: ProfileConfig,
    ) -> None:
        self.run_dir = run_dir
        self.writer = ShardWriter(run_dir, rank)
        self.common = common
        self.models = models
        self.scorer = scorer
        self.config = config
        self.cold: dict[str, _ColdStart] = {}
        # Scoring on a GPU moves the CLIP backbone through it and empties the allocator's cache.
        self.cache_emptied = False
        self.pending: list[_Pending] = []
        self.recorded = 0
        self.failed = 0

    def add(self, entries: list[_Pending]) -> None:
        """Buffer rows; score and write them once ``flush_every`` images wait."""
        self.pending.extend(entries)
        if len(self.pending) >= self.config.flush_every:
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
            if self.config.save_images:
                entry.extra["image_sha256"] = _save_image(self.run_dir, entry.image)
        rows = [self._row(p) for p in self.pending]
        self.writer.write(rows)
        self.recorded += len(rows)
        self.failed += sum(p.status != "ok" for p in self.pending)
        self.pending = []

    def _row(self, entry: _Pending) -> dict[str, Any]:
        item, m = entry.item, entry.measurement
        model = self.models[item.model_key]
        cold = self.cold.get(item.model_key, _ColdStart())
        if m is None:
            notes = {c: f"no call was measured for this image (status {entry.status})" for c in _NOTED_COLUMNS}
        else:
            notes = dict(m.reading.notes)
            if m.peak_torch_allocated_bytes is None:
                notes |= {c: "not a CUDA device" for c in _TORCH_COLUMNS}
        energy = m.reading.energy_j / entry.call_images if m is not None and m.reading.energy_j is not None else None
        return self.common | {
            "model_key": item.model_key,
            "model_revision": model["revision"],
            "is_replica": model["is_replica"],
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
            "peak_nvml_process_bytes": m.reading.nvml_process_bytes if m else None,
            "peak_nvml_device_bytes": m.reading.nvml_device_bytes if m else None,
            "peak_rss_bytes": m.reading.rss_bytes if m else None,
            "peak_system_memory_bytes": m.reading.system_memory_bytes if m else None,
            "memory_note": _notes(notes, _MEMORY_COLUMNS),
            "energy_j": energy,
            "average_power_w": m.reading.average_power_w if m else None,
            "energy_note": notes.get("energy_j"),  # one reason covers energy and power
            "model_load_s": cold.load_s,
            "first_call_s": cold.first_call_s,
            "resolution": model["resolution"],
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


@contextlib.contextmanager
def _run_lock(run_dir: Path, rank: int) -> Iterator[None]:
    """Hold the run's per-rank lock: a second process of the same rank is refused, not interleaved."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = lock_path(run_dir, rank)
    handle = open(path, "a+")  # held open, and so locked, for the whole run
    try:
        try:
            _lock_file(handle)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ValueError(
                f"{run_dir}: another genedge profile process ({holder}) is writing this run as rank {rank}; "
                "wait for it to end, or use another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {platform.node() or 'this host'}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


def _lock_file(handle: Any) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _settings_differ(run_dir: Path, existing: Mapping[str, Any], ours: Mapping[str, Any]) -> ValueError:
    theirs, mine = settings_document(existing), settings_document(ours)
    differing = [field for field in {**theirs, **mine} if theirs.get(field) != mine.get(field)]
    return ValueError(
        f"{run_dir / MANIFEST_NAME}: field 'settings_sha256': the folder holds run {existing['run_id']} measured "
        f"with other settings ({', '.join(differing)} differ); "
        "rerun with its settings to resume it, or use another --out"
    )


def _open_run(run_dir: Path, manifest: dict[str, Any], rank: int, index: RunIndex) -> dict[str, Any]:
    """The run's manifest: the existing one when its settings match, else a new or rebuilt one.

    Rank 0 writes it; other ranks wait for it. Without a manifest, rows measured with these settings
    lend the rebuilt manifest their run id; rows measured only with other settings refuse the folder.
    """
    path = run_dir / MANIFEST_NAME
    if rank != 0:
        deadline = time.monotonic() + MANIFEST_WAIT_S
        while not path.is_file():
            if time.monotonic() > deadline:
                raise ValueError(f"{path}: rank {rank} waited {MANIFEST_WAIT_S:.0f} s for rank 0 to write it")
            time.sleep(0.2)
    if path.is_file():
        existing = read_manifest(run_dir)
        if existing["settings_sha256"] != manifest["settings_sha256"]:
            raise _settings_differ(run_dir, existing, manifest)
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


def profile(
    config: ProfileConfig,
    out_dir: str | Path,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    retry_failed: bool = False,
    quarantine_corrupt: bool = False,
) -> RunResult:
    """Run (or resume) a measurement run into ``out_dir``.

    Every image this run has already recorded (any status) is skipped, so rerunning the same
    command after a kill completes the run without duplicates; rows of another run or other
    settings found in the folder are reported and measured again, never counted. A CUDA
    out-of-memory error records the rest of that (model, steps) configuration as ``oom`` rows and
    the run goes on; any other generation error records ``error`` rows for that batch.

    Args:
        config: What to measure.
        out_dir: Run directory (created if needed).
        on_progress: Called after each pipeline call and each flush with this process's progress.
        retry_failed: generate again the images whose rows say ``oom`` or ``error`` (after a
            transient failure); their failure rows stay, and calibration counts them as excluded.
        quarantine_corrupt: move unreadable shards to ``RUN/quarantine/`` and measure their images
            again, instead of stopping.

    Returns:
        What this process did.

    Raises:
        ValueError: For invalid input (see :func:`validate`), unreachable CLIP weights, an
            ``out_dir`` holding a run with other settings, another process writing the same rank
            of it, or an unreadable shard (without ``quarantine_corrupt``).
    """
    out_dir = Path(out_dir)
    specs, prompt_set = validate(config)
    rank, world_size, local_rank = _distributed()
    torch = require("torch")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = select_device(config.device, local_rank)
    dtype_name = config.dtype or ("float16" if device.type == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)
    # Configs only (a few JSON files): a hub id missing from an offline cache stops here, before any weights load.
    models = [
        {
            "key": s.key,
            "revision": resolve_revision(s),
            "is_replica": s.is_replica,
            "unet_params": unet_param_count(s),
            "resolution": config.resolution or native_resolution(s),
            "scheduler": scheduler_config(s, config.scheduler),
        }
        for s in specs
    ]
    # Before the lock and any loading: an offline machine without the CLIP weights stops here, with what to pass.
    resolve_clip_weights(config.clip_backbone, config.clip_pretrained)
    # Load exactly the commits the manifest records, even if a branch moves meanwhile.
    pinned = [replace(s, revision=m["revision"]) if s.kind == "hub" else s for s, m in zip(specs, models)]
    uuid = str(torch.cuda.get_device_properties(device).uuid) if device.type == "cuda" else None
    # The lock first: a second process on this run stops before it loads anything heavy.
    with _run_lock(out_dir, rank), Monitor(uuid) as monitor:
        scorer = ClipScorer(config.clip_backbone, config.clip_pretrained, device=device, offload=device.type == "cuda")
        status = monitor.status.as_manifest()
        host = host_info() | _math_settings(torch, device) | {"memory_measurement": status["host_memory"]}
        device_info = _device_info(torch, device, status["nvml"].get("driver"), host["cpu"])
        proposed = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "run_id": _new_run_id(),
            "settings_sha256": "",  # set below, from the fields that define the run
            "host": host,
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
                "prompt_ids": [p.prompt_id for p in prompt_set.prompts],
            },
            "nvml": status["nvml"],
            "energy": status["energy"],
            "save_images": config.save_images,
            "world_size": world_size,
        }
        proposed["settings_sha256"] = settings_sha256(proposed)
        index, quarantined = index_run(out_dir, quarantine=quarantine_corrupt)
        manifest = _open_run(out_dir, proposed, rank, index)
        done = index.keys(manifest, statuses={"ok"} if retry_failed else None)
        foreign = sum(n for pair, n in index.identities().items() if pair != run_identity(manifest))
        if foreign:
            logger.warning(
                "%s: %d rows belong to another run or other settings; their images are measured for this run",
                out_dir,
                foreign,
            )
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
            "run_id": manifest["run_id"],
            "settings_sha256": manifest["settings_sha256"],
            "device_name": device_info["name"],
            "dtype": dtype_name,
            "guidance_scale": float(config.guidance_scale),
            "clip_backbone": scorer.convention.backbone,
            "clip_pretrained": scorer.convention.pretrained,
        }
        recorder = _Recorder(out_dir, rank, common, {m["key"]: m for m in models}, scorer, config)
        _measure(todo, pinned, config, device, dtype, monitor, recorder, on_progress)
        recorder.flush()
    return RunResult(
        out_dir, manifest["run_id"], rank, world_size, recorder.recorded, skipped, recorder.failed, foreign, quarantined
    )


def _oom_error(torch: Any) -> type[BaseException]:
    return getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def _measure(
    todo: list[_Item],
    specs: Sequence[ModelSpec],
    config: ProfileConfig,
    device: Any,
    dtype: Any,
    monitor: Monitor,
    recorder: _Recorder,
    on_progress: Callable[[Progress], None] | None,
) -> None:
    torch = require("torch")
    oom = _oom_error(torch)
    clock = Clock(device)
    done = 0
    started = time.perf_counter()

    def report(label: str) -> None:
        if on_progress is not None:
            on_progress(Progress(done, len(todo), label, recorder.recorded, time.perf_counter() - started))

    for spec in specs:
        model_items = [it for it in todo if it.model_key == spec.key]
        if not model_items:
            continue
        report(f"{spec.key} loading")

        call = functools.partial(
            measure_call,
            resolution=recorder.models[spec.key]["resolution"],
            guidance_scale=config.guidance_scale,
            device=device,
            clock=clock,
            monitor=monitor,
        )
        pipe = None
        try:
            load_start = time.perf_counter()
            pipe = load_pipeline(spec, device=device, dtype=dtype, scheduler=config.scheduler)
            clock.synchronize()
            load_s = time.perf_counter() - load_start
            first = model_items[0]
            first_call_s = None
            for _ in range(config.warmup):
                _, warm = call(pipe, [first.prompt.text], steps=first.steps, seed=first.seed)
                first_call_s = warm.total_s if first_call_s is None else first_call_s
                recorder.cache_emptied = False
            recorder.cold[spec.key] = _ColdStart(load_s, first_call_s)
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
                prompts = [it.prompt.text for it in batch]
                try:
                    if recorder.cache_emptied:
                        # One unrecorded step of this very batch re-fills the allocator's cache, so the
                        # image after a scoring flush does not pay the allocations in its measurement.
                        call(pipe, prompts, steps=1, seed=batch[0].seed)
                        recorder.cache_emptied = False
                    images, measurement = call(pipe, prompts, steps=steps, seed=batch[0].seed)
                    if recorder.cold[spec.key].first_call_s is None:  # no warm-up: the first recorded call
                        recorder.cold[spec.key] = _ColdStart(recorder.cold[spec.key].load_s, measurement.total_s)
                    recorder.add(
                        [_Pending(it, "ok", None, measurement, image, len(batch)) for it, image in zip(batch, images)]
                    )
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
        report(f"{spec.key} done")
        del pipe
        _release(torch, device)


def _release(torch: Any, device: Any) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
