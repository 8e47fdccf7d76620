"""``genedge profile``: measure diffusion pipelines into a resumable run; ``genedge profile show RUN``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from genedge.cli._common import (
    batch_size_argument,
    comma_separated,
    guidance_scale_argument,
    image_side,
    seed_argument,
    threads_argument,
)

# Light modules (constants only); torch, diffusers and open_clip load inside run().
from genedge.contract.runs import DEFAULT_GUIDANCE_SCALE
from genedge.profiler.clipscore import DEFAULT_CLIP_BACKBONE, DEFAULT_CLIP_PRETRAINED
from genedge.profiler.device import DEVICE_SYNTAX
from genedge.profiler.prompts import DEFAULT_MAPPING, DEFAULT_PROMPT_SOURCE
from genedge.profiler.run import FLUSH_EVERY_IMAGES, WARMUP_RUNS

__all__ = ["add_parser", "run", "show"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``genedge profile`` and ``genedge profile show``."""
    parser = subparsers.add_parser(
        "profile",
        help="measure diffusion pipelines: per-step latency, memory ladder, CLIPScore per prompt category",
        description=(
            "Generate one image per model x steps x seed x prompt and record per-step latency, "
            "text-encode/denoise/decode seconds, GPU (torch, NVML) and resident memory peaks, energy where the "
            "device reports it, model load and first-call seconds, and CLIPScore, as append-only Parquet shards "
            "under OUT/records plus OUT/manifest.json (settings, device, host, versions). A model is a saved "
            "diffusers folder, a hub id or a random-weight replica. Rerunning the same command resumes the run; "
            "other settings on the same OUT are refused. Under `accelerate launch` the processes split the work. "
            "`genedge profile show RUN` summarizes a run and its problems."
        ),
    )
    _add_measurement_options(parser)
    _add_run_options(parser)
    parser.set_defaults(func=run)
    actions = parser.add_subparsers(dest="profile_action", metavar="ACTION")
    show_parser = actions.add_parser("show", help="summarize what a profile run holds")
    show_parser.add_argument("run_dir", metavar="RUN", help="profile run directory")
    show_parser.set_defaults(func=show)
    save_parser = actions.add_parser(
        "save-replica",
        help="write a random-weight replica as a diffusers folder (save_pretrained's layout), offline",
        description=(
            "Write the random-weight replica ARCH to FOLDER as pipe.save_pretrained would (model_index.json, unet/, "
            "vae/, text_encoder/, tokenizer/, scheduler/; safetensors), so that profiling or serving a saved folder "
            "can be tried without a hub or a download: genedge profile --model FOLDER ..."
        ),
    )
    save_parser.add_argument("arch", metavar="ARCH", help="a replica's name, e.g. tiny, sd15, sdxl")
    save_parser.add_argument("folder", metavar="FOLDER", type=Path, help="a new (or empty) folder to write")
    save_parser.set_defaults(func=save_replica)


def _add_measurement_options(parser: argparse.ArgumentParser) -> None:
    # What a run measures: models, steps, prompts, seeds, device and generation settings.
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="SPEC",
        help="model spec, repeatable: replica:<arch> (random weights; see the error for the list), "
        "a local pipeline directory, or a hub id org/name[@revision]",
    )
    parser.add_argument(
        "--steps", type=comma_separated(int), default=(), help="comma-separated denoising step counts, e.g. 10,20,30"
    )
    parser.add_argument(
        "--prompts",
        default=DEFAULT_PROMPT_SOURCE,
        help=f"datasets hub id or local .tsv/.csv/.parquet prompt file (default: {DEFAULT_PROMPT_SOURCE})",
    )
    parser.add_argument(
        "--category-mapping",
        default=DEFAULT_MAPPING,
        help=f"category mapping: paper4 (Basic/Detail/Imagination/Complex), challenge, category "
        f"(default: {DEFAULT_MAPPING})",
    )
    parser.add_argument("--per-category", type=int, help="at most N prompts per category (sampled with --prompt-seed)")
    parser.add_argument("--limit", type=int, help="at most N prompts overall (sampled with --prompt-seed)")
    parser.add_argument(
        "--prompt-seed", type=seed_argument, default=0, help="seed of the prompt subsampling (default: 0)"
    )
    parser.add_argument(
        "--seeds",
        type=comma_separated(seed_argument),
        default=(0,),
        help="comma-separated generation seeds (default: 0)",
    )
    parser.add_argument("--device", help=f"{DEVICE_SYNTAX} (default: cuda:LOCAL_RANK when CUDA is available, else cpu)")
    parser.add_argument("--dtype", help="float32, float16 or bfloat16 (default: float16 on CUDA, float32 on CPU)")
    parser.add_argument(
        "--resolution",
        type=image_side,
        help="image side in pixels (default: each model's native size from its config, e.g. 512 for SD 1.5, "
        "1024 for SDXL)",
    )
    parser.add_argument(
        "--guidance-scale",
        type=guidance_scale_argument,
        default=DEFAULT_GUIDANCE_SCALE,
        help=f"classifier-free guidance (default: {DEFAULT_GUIDANCE_SCALE}; ≤1 disables)",
    )
    parser.add_argument("--scheduler", help="diffusers scheduler class replacing each model's own, e.g. DDIMScheduler")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    # How a run goes: batching, warm-up, threads, scoring, resuming and its output.
    parser.add_argument(
        "--batch-size", type=batch_size_argument, default=1, help="prompts per pipeline call (default: 1)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=WARMUP_RUNS,
        help=f"unrecorded warm-up generations per model (default: {WARMUP_RUNS})",
    )
    parser.add_argument(
        "--threads",
        type=threads_argument,
        help="CPU threads torch may use (torch.set_num_threads; default: torch's own, recorded in the manifest)",
    )
    parser.add_argument("--save-images", action="store_true", help="keep PNGs under OUT/images/<sha256>.png")
    parser.add_argument(
        "--clip-backbone",
        default=DEFAULT_CLIP_BACKBONE,
        help=f"open_clip model name, or replica:tiny for random test weights (default: {DEFAULT_CLIP_BACKBONE})",
    )
    parser.add_argument(
        "--clip-pretrained",
        default=DEFAULT_CLIP_PRETRAINED,
        help=f"open_clip pretrained tag, the path of a local weights file (offline), or 'none' for random weights "
        f"(default: {DEFAULT_CLIP_PRETRAINED})",
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="generate again the images an earlier attempt recorded as oom or error (say, after "
        "freeing the GPU); their failure rows stay in the run",
    )
    parser.add_argument(
        "--quarantine-corrupt",
        action="store_true",
        help="move shards that cannot be read to OUT/quarantine/ and measure their images again, instead of stopping",
    )
    parser.add_argument(
        "--flush-every",
        type=int,
        default=FLUSH_EVERY_IMAGES,
        help=f"images per shard; a kill loses at most these (default: {FLUSH_EVERY_IMAGES})",
    )
    parser.add_argument("--out", metavar="RUN", help="run directory, e.g. runs/NAME")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar; print one line per written shard instead (counts and ETA), for logs",
    )


def _config(args: argparse.Namespace) -> Any:
    from genedge.profiler import ProfileConfig

    if not args.out:
        raise ValueError("--out: expected a run directory such as runs/NAME, but got none")
    return ProfileConfig(
        models=tuple(args.model),
        steps=tuple(args.steps),
        prompts=args.prompts,
        category_mapping=args.category_mapping,
        per_category=args.per_category,
        limit=args.limit,
        prompt_seed=args.prompt_seed,
        seeds=tuple(args.seeds),
        device=args.device,
        dtype=args.dtype,
        resolution=args.resolution,
        guidance_scale=args.guidance_scale,
        scheduler=args.scheduler,
        batch_size=args.batch_size,
        warmup=args.warmup,
        threads=args.threads,
        save_images=args.save_images,
        clip_backbone=args.clip_backbone,
        clip_pretrained=None if args.clip_pretrained.lower() == "none" else args.clip_pretrained,
        flush_every=args.flush_every,
    )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _progress_line(progress: Any) -> str:
    share = progress.done / progress.total if progress.total else 1.0
    eta = progress.elapsed_s * (1 - share) / share if share > 0 else None
    return (
        f"profile: {progress.done}/{progress.total} images ({share:.0%}), {progress.written} rows written, "
        f"{progress.config}, elapsed {_duration(progress.elapsed_s)}, ETA {_duration(eta) if eta is not None else '?'}"
    )


def run(args: argparse.Namespace) -> int:
    """Validate, then measure with a progress bar (images done, ETA, current configuration)."""
    from genedge.contract.files import check_not_input
    from genedge.profiler import Progress, profile, validate
    from genedge.profiler._imports import require

    check_not_input({"--out": args.out}, {"--prompts": args.prompts, "--category-mapping": args.category_mapping})
    config = _config(args)
    validate(config)  # every input error surfaces here, before torch or any model is loaded
    require("torch")  # without the profile extra, stop here with one line naming it
    tqdm = require("tqdm").tqdm
    bars: list[Any] = []  # drawn from the first progress report: an early error prints no empty bar
    written = [0]

    def on_progress(progress: Progress) -> None:
        if not bars:
            bars.append(tqdm(total=progress.total, unit="img", disable=args.no_progress, dynamic_ncols=True))
        bar = bars[0]
        bar.total = progress.total
        bar.set_description(progress.config, refresh=False)
        bar.update(progress.done - bar.n)
        if args.no_progress and progress.written != written[0]:
            written[0] = progress.written
            print(_progress_line(progress), flush=True)

    try:
        result = profile(
            config,
            args.out,
            on_progress=on_progress,
            retry_failed=args.retry_failed,
            quarantine_corrupt=args.quarantine_corrupt,
        )
    finally:
        for bar in bars:
            bar.close()
    for path in result.quarantined:
        print(f"moved unreadable shard to {path}; its images were measured again")
    if result.foreign:
        print(f"{result.foreign} rows in {result.run_dir} belong to another run or other settings (see profile show)")
    print(
        f"run {result.run_id} (rank {result.rank} of {result.world_size}): recorded {result.recorded} images "
        f"({result.failed} oom/error), skipped {result.skipped} already recorded, in {result.run_dir}"
    )
    return 0


def _number(value: float) -> str:
    return f"{value:.4g}"


def _gib(value: float) -> str:
    return f"{value / 2**30:.2f}" if value == value else "-"  # NaN (not measured) prints as a dash


def show(args: argparse.Namespace) -> int:
    """Print a run's problems first, then its manifest essentials, latency per (model, steps) and quality."""
    from genedge.profiler import summarize_run

    summary = summarize_run(args.run_dir)
    manifest = summary.manifest
    for problem in summary.audit.problems():
        print(f"problem: {problem}")
    device = manifest["device"]
    host = manifest["host"]
    clip = manifest["clip_convention"]
    prompt_set = manifest["prompt_set"]
    mapping = prompt_set["category_mapping"]
    gpu = ", ".join(
        f"{label} {device[key]}" for key, label in (("driver", "driver"), ("cuda", "CUDA")) if device.get(key)
    )
    print(f"run {manifest['run_id']} on {device['name']}" + (f" ({gpu})" if gpu else " (no GPU driver)"))
    print(
        f"host {host.get('os', '?')} {host.get('os_release', '')}, {host.get('cpu', '?')}, "
        f"{host.get('usable_cpus', '?')} of {host.get('logical_cpus', '?')} CPUs usable, "
        f"{_gib(host.get('total_ram_bytes') or float('nan'))} GiB RAM, {host.get('threads', '?')} torch threads, "
        f"{host.get('grad_mode', '?')}"
    )
    resolution = manifest["resolution"] or "native"
    print(
        f"dtype {manifest['dtype']}, resolution {resolution}, guidance {manifest['guidance_scale']}, "
        f"batch {manifest['batch_size']}, seeds {manifest['seeds']}, warm-up {manifest['warmup']}"
    )
    print(
        f"prompts {prompt_set['name']} ({prompt_set['n']} selected, mapping {mapping.get('name', 'unnamed')} "
        f"on {mapping['column']}, sha256 {prompt_set['sha256'][:12]}…)"
    )
    print(f"CLIPScore {clip['backbone']} / {clip['pretrained']}: {clip['formula']}")
    nvml, energy = manifest["nvml"], manifest["energy"]
    print("NVML " + ("available" if nvml["available"] else f"unavailable: {nvml['reason']}"))
    print(
        "energy "
        + (f"measured ({energy['source']})" if energy.get("available") else f"not measured: {energy.get('reason')}")
    )
    for model in manifest["models"]:
        kind = "random-weight replica" if model["is_replica"] else f"revision {model['revision'] or 'local'}"
        print(
            f"model {model['key']} ({kind}, {model['unet_params']:,} UNet parameters, {model['resolution']} px, "
            f"{model['scheduler']['class']})"
        )
    if summary.latency.empty:
        print("no records yet")
        return 0
    latency = summary.latency
    keys = ["model_key", "steps"]
    spread = [f"{m}_{s}" for m in ("total_s", "step_ms") for s in ("p50", "p90", "p99", "std")]
    print()
    print("latency (total_s per call, step_ms over every step; this run's ok rows):")
    print(latency[[*keys, "images", "ok", "oom", "error", *spread]].to_string(index=False, float_format=_number))
    costs = latency[keys].copy()
    for column, name, scale in (
        ("images_per_s", "images/s", 1.0),
        ("energy_j_mean", "J/image", 1.0),
        ("average_power_w_mean", "W", 1.0),
        ("overhead_s_median", "outside stages s", 1.0),
        ("pipeline_peak_bytes_max", "pipeline GiB", 2**-30),
        ("peak_rss_bytes_max", "RSS GiB", 2**-30),
        ("peak_torch_allocated_bytes_max", "torch GiB", 2**-30),
        ("peak_nvml_process_bytes_max", "NVML GiB", 2**-30),
        ("import_s", "import s", 1.0),
        ("model_load_s", "load s", 1.0),
        ("first_call_s", "first call s", 1.0),
    ):
        if latency[column].notna().any():  # a column nothing measured on this device is left out
            costs[name] = latency[column] * scale
    print()
    print("throughput, energy, memory peaks and cold start:")
    print(costs.to_string(index=False, float_format=_number, na_rep="-"))
    print()
    print("CLIPScore per model, steps and category:")
    print(summary.quality.to_string(index=False, float_format=_number, na_rep="-"))
    return 0


def save_replica(args: argparse.Namespace) -> int:
    """Write a replica as a saved pipeline folder and say what it is."""
    from genedge.profiler.models import save_replica

    folder = save_replica(args.arch, args.folder)
    print(f"wrote replica:{args.arch} (random weights: its images mean nothing) as a diffusers folder: {folder}")
    print(f"try: genedge profile --model {folder} --steps 2 --prompts PROMPTS --out runs/{folder.name}")
    return 0
