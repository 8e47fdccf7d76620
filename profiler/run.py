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

This module holds the run's configuration and its loop; the call it measures is
:mod:`genedge.profiler.pipeline`'s, the rows are made by ``_recorder``, the environment is read by
``_environment`` and the folder is claimed by ``_rundir``.
"""

from __future__ import annotations

import functools
import gc
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from genedge.contract.bounds import MAX_GUIDANCE_SCALE, MAX_THREADS, range_problem
from genedge.contract.runs import (
    DEFAULT_DTYPE,
    DEFAULT_GUIDANCE_SCALE,
    MANIFEST_SCHEMA_VERSION,
    new_run_id,
    run_identity,
    settings_sha256,
)
from genedge.profiler._environment import distributed, environment
from genedge.profiler._imports import require
from genedge.profiler._recorder import ColdStart, Item, Pending, Recorder
from genedge.profiler._rundir import open_run, run_lock
from genedge.profiler.clipscore import (
    DEFAULT_CLIP_BACKBONE,
    DEFAULT_CLIP_PRETRAINED,
    ClipScorer,
    resolve_clip_weights,
)
from genedge.profiler.device import check_device_string, select_device, set_threads
from genedge.profiler.host import trim_heap
from genedge.profiler.models import (
    ModelSpec,
    import_pipeline_classes,
    load_pipeline,
    native_resolution,
    parse_model_spec,
    resolve_revision,
    scheduler_config,
    unet_param_count,
)
from genedge.profiler.monitor import Monitor
from genedge.profiler.pipeline import measure_call, memory_baseline
from genedge.profiler.prompts import (
    DEFAULT_MAPPING,
    DEFAULT_PROMPT_SOURCE,
    PromptSet,
    load_prompt_set,
)
from genedge.profiler.records import RunIndex, index_run
from genedge.profiler.timing import Clock

__all__ = [
    "WARMUP_RUNS",
    "FLUSH_EVERY_IMAGES",
    "ProfileConfig",
    "Progress",
    "RunResult",
    "validate",
    "profile",
]

logger = logging.getLogger(__name__)

WARMUP_RUNS = 1
FLUSH_EVERY_IMAGES = 4
_DTYPES = ("float32", "float16", "bfloat16")


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
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
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
    _check_options(config)
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


def _check_options(config: ProfileConfig) -> None:
    for name in ("batch_size", "flush_every"):
        if getattr(config, name) < 1:
            raise ValueError(f"Expected {name} ≥ 1, but got {getattr(config, name)}")
    if config.warmup < 0:
        raise ValueError(f"Expected warmup ≥ 0, but got {config.warmup}")
    # The calibration table refuses a run outside these ranges, so the profiler never measures one.
    for name, what, minimum, maximum in (
        ("guidance_scale", "a guidance scale", 0.0, MAX_GUIDANCE_SCALE),
        ("threads", "a thread count", 1, MAX_THREADS),
    ):
        value = getattr(config, name)
        problem = None if value is None else range_problem(value, minimum=minimum, maximum=maximum, what=what)
        if problem is not None:
            raise ValueError(f"{name}: {problem}")
    if config.resolution is not None and (config.resolution < 8 or config.resolution % 8):
        raise ValueError(f"Expected a resolution that is a positive multiple of 8, but got {config.resolution}")
    if config.device is not None:
        check_device_string(config.device)
    if config.dtype is not None and config.dtype not in _DTYPES:
        raise ValueError(f"Expected dtype in {_DTYPES}, but got {config.dtype!r}")


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
    rank, world_size, local_rank = distributed()
    torch = require("torch")
    set_threads(config.threads)
    device = select_device(config.device, local_rank)
    dtype_name = config.dtype or ("float16" if device.type == "cuda" else DEFAULT_DTYPE)
    # Configs only (a few JSON files): a hub id missing from an offline cache stops here, before any weights load.
    models = [_model_entry(s, config) for s in specs]
    # Before the lock and any loading: an offline machine without the CLIP weights stops here, with what to pass.
    resolve_clip_weights(config.clip_backbone, config.clip_pretrained)
    # Load exactly the commits the manifest records, even if a branch moves meanwhile.
    pinned = [replace(s, revision=m["revision"]) if s.kind == "hub" else s for s, m in zip(specs, models)]
    uuid = str(torch.cuda.get_device_properties(device).uuid) if device.type == "cuda" else None
    # The lock first: a second process on this run stops before it loads anything heavy.
    with run_lock(out_dir, rank), Monitor(uuid) as monitor:
        scorer = ClipScorer(config.clip_backbone, config.clip_pretrained, device=device, offload=device.type == "cuda")
        status = monitor.status.as_manifest()
        env = environment(device, status)
        proposed = _propose_manifest(config, dtype_name, models, prompt_set, scorer, env, status, world_size)
        index, quarantined = index_run(out_dir, quarantine=quarantine_corrupt)
        manifest = open_run(out_dir, proposed, rank, index)
        foreign = _foreign_rows(out_dir, index, manifest)
        done = index.keys(manifest, statuses={"ok"} if retry_failed else None)
        todo, skipped = _work(specs, config, prompt_set, done, rank, world_size)
        common = _common_columns(manifest, env, dtype_name, config, scorer)
        recorder = Recorder(
            out_dir,
            rank,
            common,
            {m["key"]: m for m in models},
            scorer,
            batch_size=config.batch_size,
            flush_every=config.flush_every,
            save_images=config.save_images,
        )
        if todo:  # nothing to measure (a finished run, a rank without work): nothing to warm up for
            recorder.warm_up()
        _Loop(todo, config, device, getattr(torch, dtype_name), monitor, recorder, on_progress).run(pinned)
        recorder.flush()
    return RunResult(
        out_dir, manifest["run_id"], rank, world_size, recorder.recorded, skipped, recorder.failed, foreign, quarantined
    )


def _model_entry(spec: ModelSpec, config: ProfileConfig) -> dict[str, Any]:
    # The manifest's entry of one model, read from its configs.
    return {
        "key": spec.key,
        "revision": resolve_revision(spec),
        "is_replica": spec.is_replica,
        "unet_params": unet_param_count(spec),
        "resolution": config.resolution or native_resolution(spec),
        "scheduler": scheduler_config(spec, config.scheduler),
    }


def _propose_manifest(
    config: ProfileConfig,
    dtype_name: str,
    models: list[dict[str, Any]],
    prompt_set: PromptSet,
    scorer: ClipScorer,
    env: dict[str, dict[str, Any]],
    monitor_status: dict[str, Any],
    world_size: int,
) -> dict[str, Any]:
    # The manifest this process would write for a new run, its settings hash included.
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "run_id": new_run_id(),
        "settings_sha256": "",  # set below, from the fields that define the run
        "host": env["host"],
        "device": env["device"],
        "versions": env["versions"],
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
        "nvml": monitor_status["nvml"],
        "energy": monitor_status["energy"],
        "save_images": config.save_images,
        "world_size": world_size,
    }
    manifest["settings_sha256"] = settings_sha256(manifest)
    return manifest


def _work(
    specs: list[ModelSpec],
    config: ProfileConfig,
    prompt_set: PromptSet,
    done: set[tuple[Any, ...]],
    rank: int,
    world_size: int,
) -> tuple[list[Item], int]:
    # This process's pending images, and how many images of the run are already done.
    every = [
        Item(s.key, n, seed, p)
        for s in specs
        for n in config.steps
        for seed in config.seeds
        for p in prompt_set.prompts
    ]
    # Split the full work list first, then skip what is done: every rank sees the same split
    # whatever the others have written, so no item is skipped by all ranks or done twice.
    todo = [it for it in every[rank::world_size] if it.key not in done]
    return todo, sum(it.key in done for it in every)


def _common_columns(
    manifest: dict[str, Any], env: dict[str, dict[str, Any]], dtype_name: str, config: ProfileConfig, scorer: ClipScorer
) -> dict[str, Any]:
    # The columns every row of this process carries.
    return {
        "run_id": manifest["run_id"],
        "settings_sha256": manifest["settings_sha256"],
        "device_name": env["device"]["name"],
        "dtype": dtype_name,
        "guidance_scale": float(config.guidance_scale),
        "clip_backbone": scorer.convention.backbone,
        "clip_pretrained": scorer.convention.pretrained,
    }


def _foreign_rows(out_dir: Path, index: RunIndex, manifest: dict[str, Any]) -> int:
    foreign = sum(n for pair, n in index.identities().items() if pair != run_identity(manifest))
    if foreign:
        logger.warning(
            "%s: %d rows belong to another run or other settings; their images are measured for this run",
            out_dir,
            foreign,
        )
    return foreign


def _oom_error(torch: Any) -> type[BaseException]:
    return getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def _configs(items: list[Item]) -> Iterator[tuple[tuple[str, int], list[Item]]]:
    for key, group in itertools.groupby(items, key=lambda it: (it.model_key, it.steps)):
        yield key, list(group)


def _batches(items: list[Item], size: int) -> Iterator[list[Item]]:
    for _, group in itertools.groupby(items, key=lambda it: it.seed):
        group = list(group)
        for start in range(0, len(group), size):
            yield group[start : start + size]


class _Loop:
    """This process's measuring: each model loaded and warmed up, then its images measured batch by batch."""

    def __init__(
        self,
        todo: list[Item],
        config: ProfileConfig,
        device: Any,
        dtype: Any,
        monitor: Monitor,
        recorder: Recorder,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.todo = todo
        self.config = config
        self.device = device
        self.dtype = dtype
        self.monitor = monitor
        self.recorder = recorder
        self.on_progress = on_progress
        self.torch = require("torch")
        self.oom = _oom_error(self.torch)
        self.clock = Clock(device)
        self.done = 0
        self.started = time.perf_counter()

    def report(self, label: str) -> None:
        """Tell ``on_progress`` where this process stands."""
        if self.on_progress is not None:
            elapsed_s = time.perf_counter() - self.started
            self.on_progress(Progress(self.done, len(self.todo), label, self.recorder.recorded, elapsed_s))

    def run(self, specs: Sequence[ModelSpec]) -> None:
        """Measure every pending image, model by model in ``specs``' order."""
        for spec in specs:
            model_items = [it for it in self.todo if it.model_key == spec.key]
            if model_items:
                self._model(spec, model_items)

    def _model(self, spec: ModelSpec, model_items: list[Item]) -> None:
        self.report(f"{spec.key} loading")
        call = functools.partial(
            measure_call,
            resolution=self.recorder.models[spec.key]["resolution"],
            guidance_scale=self.config.guidance_scale,
            device=self.device,
            clock=self.clock,
            monitor=self.monitor,
        )
        try:
            pipe = self._load(spec, model_items[0], call)
        except Exception as err:
            status = "oom" if isinstance(err, self.oom) else "error"
            logger.warning(
                "%s: %s while loading or warming up; recording its %d images as %s",
                spec.key,
                type(err).__name__,
                len(model_items),
                status,
            )
            error = f"while loading or warming up: {type(err).__name__}: {err}"
            self.recorder.add([Pending(it, status, error) for it in model_items])
            self.done += len(model_items)
            self.report(spec.key)
        else:
            for (_, steps), config_items in _configs(model_items):
                self._configuration(f"{spec.key} steps={steps}", pipe, call, config_items)
            self.recorder.flush()
            self.report(f"{spec.key} done")
            del pipe
        _release(self.torch, self.device)

    def _load(self, spec: ModelSpec, first: Item, call: Callable[..., Any]) -> Any:
        # Load the pipeline and run the warm-up calls; the model's cold start and what the process held
        # before it (the baseline of the pipeline's own memory) are recorded.
        import_start = time.perf_counter()
        import_pipeline_classes(spec, scheduler=self.config.scheduler)
        import_s = time.perf_counter() - import_start
        baseline = memory_baseline(self.device, self.monitor)
        load_start = time.perf_counter()
        pipe = load_pipeline(spec, device=self.device, dtype=self.dtype, scheduler=self.config.scheduler)
        self.clock.synchronize()
        load_s = time.perf_counter() - load_start
        first_call_s = None
        for _ in range(self.config.warmup):
            _, warm = call(pipe, [first.prompt.text], steps=first.steps, seed=first.seed)
            first_call_s = warm.total_s if first_call_s is None else first_call_s
            self.recorder.cache_emptied = False
        self.recorder.cold[spec.key] = ColdStart(import_s, load_s, first_call_s, baseline)
        # What loading freed leaves the resident set, as a flush's does, before the first measured call.
        trim_heap()
        return pipe

    def _configuration(self, label: str, pipe: Any, call: Callable[..., Any], config_items: list[Item]) -> None:
        # One (model, steps) configuration: an out-of-memory error records the rest of it as oom.
        remaining = list(config_items)
        for batch in _batches(config_items, self.config.batch_size):
            try:
                self._batch(pipe, call, batch)
            except self.oom as err:
                logger.warning(
                    "%s: out of memory; recording the configuration's %d remaining images as oom",
                    label,
                    len(remaining),
                )
                self.recorder.add([Pending(it, "oom", str(err)) for it in remaining])
                self.done += len(remaining)
                _release(self.torch, self.device)
                return
            except Exception as err:
                logger.warning("%s: generation failed: %s", label, err)
                self.recorder.add([Pending(it, "error", f"{type(err).__name__}: {err}") for it in batch])
            remaining = remaining[len(batch) :]
            self.done += len(batch)
            self.report(label)

    def _batch(self, pipe: Any, call: Callable[..., Any], batch: list[Item]) -> None:
        prompts = [it.prompt.text for it in batch]
        first = batch[0]
        if self.recorder.cache_emptied:
            # One unrecorded step of this very batch re-fills the allocator's cache, so the
            # image after a scoring flush does not pay the allocations in its measurement.
            call(pipe, prompts, steps=1, seed=first.seed)
            self.recorder.cache_emptied = False
        images, measurement = call(pipe, prompts, steps=first.steps, seed=first.seed)
        cold = self.recorder.cold[first.model_key]
        if cold.first_call_s is None:  # no warm-up: the first recorded call
            self.recorder.cold[first.model_key] = replace(cold, first_call_s=measurement.total_s)
        self.recorder.add([Pending(it, "ok", None, measurement, image, len(batch)) for it, image in zip(batch, images)])


def _release(torch: Any, device: Any) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
