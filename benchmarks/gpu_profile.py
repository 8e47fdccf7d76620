"""Prepared GPU check: profile the SD 1.5 and SDXL replicas at float16 and compare with published figures.

For each architecture one short :func:`genedge.profiler.profile` run at 25 steps (random weights built on
the device, the prompts of ``genedge/data/prompts/smoke.tsv``, the random-weight ``replica:tiny`` CLIP
backbone since no CLIP weights are at hand), then a summary beside the published figures of
``shared/data/PUBLISHED.md`` as ratios measured / published, each compared like with like:

- the denoising step (median of every recorded step: the UNet with guidance, then the scheduler) against
  the diffusers torch 2.0 benchmark's A100 figure, 1000 / the denoising loop's it/s;
- the time from prompt to image at 25 steps (text encode, denoise, VAE decode) against ML.ENERGY v2's
  batch-1 latency on H100 and A100; its "ms/step" is that latency / 25, so it includes encode and decode;
- the energy per image against ML.ENERGY's J/image (both read from NVML's energy counter);
- the process's GPU memory against ONNX Runtime's torch 2.0 figure, which is the NVML device peak minus the
  device memory used before loading. NVML's per-process figure is used where NVML shows this process;
  where a container's PID namespace hides it, the NVML device peak minus the idle baseline this script
  reads before anything loads, labelled as such.

It also prints what selects the kernels (TF32 for matmul and cuDNN, ``cudnn.benchmark``, the SDPA backends
enabled, torch threads), model load and first-call seconds, p50/p90/p99 of the time per image, average
power and peak host memory, and writes the same text to ``summary.txt`` beside the runs in ``--out``
(default ``benchmarks/results/gpu-<device>-<UTC date>/`` on CUDA, a new temporary folder elsewhere).

On an offline GPU machine that has PyTorch and nothing else:

1. Read its Python and torch versions: ``python -c "import sys, torch; print(sys.version_info[:2],
   torch.__version__)"``. torchvision must be the release paired with that torch (torch 2.N pairs with
   torchvision 0.(N+15): 2.14 with 0.29), from the wheel index the torch came from: a torch whose version
   ends in ``+cuXXX`` came from PyTorch's own index, so give that index's ``--index-url`` to the
   torchvision download.
2. On a machine with network, download into ``wheels/`` the packages of ``benchmarks/gpu_wheels.txt`` with
   their dependencies (none of them depends on torch), then the three packages built on torch without
   theirs (each would pull a torch). ``--python-version`` and ``--abi`` name the GPU machine's Python
   (tested with CPython 3.11 on x86_64 Linux, with torchvision 0.29.1, timm 1.0.31 and open_clip_torch
   3.3.0)::

       WHERE="--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \\
              --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64"
       pip download -d wheels $WHERE -r benchmarks/gpu_wheels.txt
       pip download -d wheels $WHERE --no-deps torchvision==0.29.1 timm open_clip_torch

3. Carry ``wheels/`` with the repository, then in the repository root on the GPU machine::

       python -m pip install --no-index --find-links wheels -r benchmarks/gpu_wheels.txt \\
           torchvision timm open_clip_torch
       python -m pip install --no-build-isolation --no-deps -e .

   The first command keeps each package already installed within its bound, so a machine that has
   some of them needs only the rest and whichever of their dependencies it lacks. The second builds
   genedge with the setuptools now installed (pyproject's build backend is setuptools and needs
   setuptools >= 77, which ``gpu_wheels.txt`` brings; the ``wheel`` package is not needed; pip >= 21.3
   for an editable install) and installs none of genedge's dependencies: the profiler imports only what
   the first command installed (not accelerate, datasets, scipy or matplotlib).
4. ``python benchmarks/gpu_profile.py`` (a few minutes on an H100). It first checks that every module the
   profiler needs imports, and that transformers is 5 or newer, and stops naming what is missing.

Dry run on a CPU (no published figures for the tiny architecture; a dash, with the reason, for what only
a GPU measures)::

    HF_HUB_OFFLINE=1 python benchmarks/gpu_profile.py --device cpu --arch tiny --steps 2 --images 2 --out /tmp/x
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from genedge.contract.files import write_text_atomic
from genedge.data import path as data_path
from genedge.profiler import (
    PERCENTILES,
    NvmlMonitor,
    ProfileConfig,
    RunSummary,
    get_replica_config,
    profile,
    read_records,
    summarize_run,
)

#: Steps of ML.ENERGY's runs, hence of this check's (the per-image time is then measured, not extrapolated).
PUBLISHED_STEPS = 25
GIB = 2**30
#: Modules the profiler imports on the GPU machine, with the wheel that provides each.
REQUIRED_MODULES: tuple[tuple[str, str], ...] = (
    ("torchvision", "torchvision (the release paired with the installed torch)"),
    ("timm", "timm"),
    ("open_clip", "open_clip_torch"),
    ("diffusers", "diffusers"),
    ("transformers", "transformers>=5"),
    ("tokenizers", "tokenizers"),
    ("huggingface_hub", "huggingface_hub"),
    ("safetensors", "safetensors"),
    ("ftfy", "ftfy"),
    ("regex", "regex"),
    ("pandas", "pandas"),
    ("pyarrow", "pyarrow"),
)
#: The offline CLIP tokenizer passes vocab and merges as objects, which transformers accepts from version 5.
MIN_TRANSFORMERS_MAJOR = 5
# Published batch-1 float16 figures with classifier-free guidance (shared/data/PUBLISHED.md), by what they measure:
#   denoise_step_ms: diffusers torch 2.0 benchmark, no compile, 1000 / the denoising loop's it/s (§2.1; SD 1.5 at 512²
#     and SDXL at 1024², 50 steps): one step of the UNet with guidance and the scheduler.
#   end_to_end_s: ML.ENERGY v2 batch latency at 25 steps, prompt to image (§2.2; SD 1.5 = Openjourney-v4, the SD 1.5
#     architecture); its ms/step is this / 25.
#   energy_j: ML.ENERGY v2 J/image at 25 steps (§2.2), NVML's energy counter.
#   memory_bytes: ONNX Runtime README, torch 2.0, second run (§2.3): NVML device peak minus the device memory used
#     before loading models, in MiB (its monitor divides NVML's bytes by 1024²).
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "sd15": {
        "denoise_step_ms": {"A100": 46.2},
        "end_to_end_s": {"H100 80GB": 0.867, "A100-40GB": 0.921},
        "energy_j": {"H100 80GB": 232.0, "A100-40GB": 227.0},
        "memory_bytes": {"A100-40GB": 4400 * 2**20},
    },
    "sdxl-base": {
        "denoise_step_ms": {"A100": 115.7},
        "end_to_end_s": {"H100 80GB": 2.258, "A100-40GB": 2.858},
        "energy_j": {"H100 80GB": 969.0, "A100-40GB": 1104.0},
        "memory_bytes": {},
    },
}


def _missing_modules(cuda: bool) -> list[str]:
    """What the profiler cannot import here, each with the wheel to install; empty when all is there."""
    problems = []
    for module, wheel in REQUIRED_MODULES:
        try:
            imported = importlib.import_module(module)
        # torchvision raises RuntimeError, not ImportError, when built for another torch or CUDA.
        except Exception as err:
            problems.append(f"{module}: {type(err).__name__}: {err} (install {wheel})")
            continue
        if module == "transformers" and int(imported.__version__.split(".")[0]) < MIN_TRANSFORMERS_MAJOR:
            problems.append(
                f"transformers {imported.__version__}: expected >= {MIN_TRANSFORMERS_MAJOR} (install {wheel})"
            )
    if cuda:
        # The distribution only: genedge.profiler.nvml is the one module that imports pynvml.
        try:
            importlib.metadata.distribution("nvidia-ml-py")
        except importlib.metadata.PackageNotFoundError:
            problems.append("pynvml: no nvidia-ml-py, so no NVML memory or energy (install nvidia-ml-py)")
    return problems


def _number(value: Any) -> float | None:
    """A recorded value as a float, ``None`` where it was not measured (``None`` or NaN)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _fmt(value: Any, spec: str, unit: str = "") -> str:
    number = _number(value)
    return "-" if number is None else f"{number:{spec}}{unit}"


def _gib(value: Any) -> str:
    number = _number(value)
    return "-" if number is None else f"{number / GIB:.2f} GiB"


def _against(measured: float | None, published: Mapping[str, float], show: Callable[[float], str]) -> str:
    """``published <gpu> <figure> → ratio <measured / figure>; ...``, each figure written by ``show``."""
    if not published:
        return "no published figure"
    if measured is None:
        return "published " + "; ".join(f"{gpu} {show(ref)}" for gpu, ref in published.items()) + " (not measured here)"
    return "published " + "; ".join(f"{gpu} {show(ref)} → ratio {measured / ref:.2f}" for gpu, ref in published.items())


def _per_step(seconds: float) -> str:
    """A time at :data:`PUBLISHED_STEPS` steps, with its share per step (ML.ENERGY's "ms/step")."""
    return f"{seconds:.3f} s = {1e3 * seconds / PUBLISHED_STEPS:.1f} ms/step"


def _notes(frame: Any, column: str) -> list[str]:
    return [str(note) for note in frame[column].dropna().unique()]


def _idle_baseline(torch: Any, device: Any) -> tuple[int | None, str]:
    """NVML's device memory in use before this script loads anything, and how it was read (or why not)."""
    if device.type != "cuda":
        return None, "not a CUDA device"
    monitor = NvmlMonitor(str(torch.cuda.get_device_properties(device).uuid))
    try:
        with monitor.window() as window:
            pass
    finally:
        monitor.close()
    used = window.peaks.device_bytes
    if used is None:
        return None, window.notes.get("device") or monitor.status.reason or "NVML gave no device memory"
    return used, "NVML device memory used, all processes, before any model loaded"


def _header(manifest: Mapping[str, Any], baseline: int | None, baseline_note: str) -> list[str]:
    device, host, versions = manifest["device"], manifest["host"], manifest["versions"]
    gpu = [f"{label} {device[key]}" for key, label in (("driver", "driver"), ("cuda", "CUDA")) if device.get(key)]
    if device.get("capability"):
        gpu.append(f"capability {device['capability']}")
    if device.get("memory_bytes"):
        gpu.append(_gib(device["memory_bytes"]))
    lines = [
        f"device {device['name']}" + (f" ({', '.join(gpu)})" if gpu else " (no GPU driver)"),
        "versions " + ", ".join(f"{name} {version}" for name, version in versions.items()),
        (
            f"host {host['os']} {host['os_release']}, {host['cpu']}, {host['usable_cpus']} of {host['logical_cpus']} "
            f"CPUs usable, {_gib(host['total_ram_bytes'])} RAM; torch threads {host['threads']} "
            f"(inter-op {host['interop_threads']}), {host['grad_mode']}"
        ),
    ]
    if "tf32_matmul" in host:
        on = {True: "on", False: "off"}
        backends = [name for name, enabled in host["sdpa_backends"].items() if enabled]
        lines.append(
            f"kernels: TF32 matmul {on[host['tf32_matmul']]}, TF32 cuDNN {on[host['tf32_cudnn']]}, "
            f"cudnn.benchmark {on[host['cudnn_benchmark']]}, SDPA backends enabled: {', '.join(backends) or 'none'} "
            "(torch picks one per call among these)"
        )
    else:
        lines.append("kernels: TF32, cudnn.benchmark and SDPA backends - (not a CUDA device)")
    nvml, energy = manifest["nvml"], manifest["energy"]
    lines.append(
        ("NVML available" if nvml["available"] else f"NVML unavailable: {nvml['reason']}")
        + "; energy "
        + (f"measured ({energy['source']})" if energy["available"] else f"not measured: {energy['reason']}")
    )
    lines.append(f"idle device memory before anything loaded: {_gib(baseline)} ({baseline_note})")
    return lines


def _report(arch: str, run_dir: Path, summary: RunSummary, baseline: int | None) -> list[str]:
    """The summary lines of one architecture's run (``summary`` from :func:`summarize_run`)."""
    manifest = summary.manifest
    lines = [f"problem: {problem}" for problem in summary.audit.problems()]
    frame = read_records(run_dir, own=manifest)
    model = manifest["models"][0]
    if summary.latency.empty:
        return [*lines, f"== replica:{arch}: no records"]
    row = summary.latency.iloc[0]
    steps = int(row["steps"])
    lines.append(
        f"== replica:{arch}: {model['resolution']} px, {manifest['dtype']}, guidance {manifest['guidance_scale']}, "
        f"{steps} steps, {model['scheduler']['class']}; {row['ok']} of {row['images']} images ok "
        f"({row['oom']} oom, {row['error']} error)"
    )
    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        first_error = frame["error"].dropna()
        return [*lines, "   first error: " + (first_error.iloc[0] if len(first_error) else "-")]
    published = PUBLISHED.get(arch, {})
    step_ms = _number(row["step_ms_p50"])
    total_s = _number(row["total_s_p50"])
    measured_at_published = steps == PUBLISHED_STEPS
    if measured_at_published:
        end_to_end, how = total_s, "measured"
    else:
        # Encode, decode and set-up do not scale with the steps: only the denoising steps are added or removed.
        end_to_end = total_s + (PUBLISHED_STEPS - steps) * step_ms / 1e3
        how = f"extrapolated from {steps} steps"
    power = _number(row["average_power_w_mean"])
    energy = _number(row["energy_j_mean"])
    if not measured_at_published:
        # Derived: the measured average power over the extrapolated time.
        energy, how_energy = (None if power is None else power * end_to_end), "average power × the time above"
    else:
        how_energy = "measured"
    stages = (("text_encode_s", "text encode"), ("denoise_s", "denoise"), ("decode_s", "VAE decode"))
    lines += [
        (
            f"imports {_fmt(row['import_s'], '.2f', ' s')}, then "
            f"model load {_fmt(row['model_load_s'], '.2f', ' s')} (the random-weight replica built on the device, "
            f"no checkpoint read); first call {_fmt(row['first_call_s'], '.2f', ' s')} (the unrecorded warm-up)"
        ),
        "time per image: "
        + ", ".join(f"p{q} {_fmt(row[f'total_s_p{q}'], '.3f', ' s')}" for q in PERCENTILES)
        + "; stages (median): "
        + ", ".join(f"{label} {_fmt(1e3 * ok[column].median(), '.1f', ' ms')}" for column, label in stages),
        (
            "denoising step (median of every step: UNet with guidance + scheduler, like diffusers' it/s): "
            f"{_fmt(step_ms, '.2f', ' ms')} | "
            + _against(step_ms, published.get("denoise_step_ms", {}), "{:.1f} ms".format)
        ),
        (
            f"prompt to image at {PUBLISHED_STEPS} steps, {how} (encode + denoise + decode, like ML.ENERGY's "
            f"latency; / {PUBLISHED_STEPS} = its ms/step): {_per_step(end_to_end)} | "
            + _against(end_to_end, published.get("end_to_end_s", {}), _per_step)
        ),
        (
            f"energy per image at {PUBLISHED_STEPS} steps ({how_energy}): {_fmt(energy, '.0f', ' J')}, "
            f"average power {_fmt(power, '.0f', ' W')} | "
            + _against(energy, published.get("energy_j", {}), "{:.0f} J".format)
        ),
    ]
    lines += _memory(ok, published.get("memory_bytes", {}), baseline)
    for column in ("memory_note", "energy_note"):
        lines += [f"   {column.replace('_', ' ')}: {note}" for note in _notes(ok, column)]
    return lines


def _memory(ok: Any, published: Mapping[str, float], baseline: int | None) -> list[str]:
    """The memory ladder, the process's GPU memory against the published figure, and host memory."""
    process = _number(ok["peak_nvml_process_bytes"].max())
    device = _number(ok["peak_nvml_device_bytes"].max())
    over_idle = device - baseline if device is not None and baseline is not None else None
    if process is not None:
        measured, how = process, "NVML's figure for this process"
    elif over_idle is not None:
        measured, how = over_idle, "NVML device peak − idle baseline (NVML does not show this process)"
    else:
        measured, how = None, "not measured"
    return [
        (
            f"memory (max over images): torch allocated {_gib(ok['peak_torch_allocated_bytes'].max())} ≤ reserved "
            f"{_gib(ok['peak_torch_reserved_bytes'].max())}; NVML process {_gib(process)}; NVML device {_gib(device)}; "
            f"device − idle baseline {_gib(over_idle)}"
        ),
        (
            f"GPU memory of the process: {_gib(measured)}, {how} | "
            + _against(measured, published, lambda b: f"{b / GIB:.2f} GiB (device peak − memory before loading)")
        ),
        (
            f"host memory (max over images): peak RSS {_gib(ok['peak_rss_bytes'].max())}, "
            f"system memory {_gib(ok['peak_system_memory_bytes'].max())}"
        ),
        (
            f"the pipeline's own peak (max over images): {_gib(ok['pipeline_peak_bytes'].max())}, "
            f"from {', '.join(sorted(ok['pipeline_memory'].dropna().unique())) or 'nothing measured'}"
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="torch device (default cuda; cpu for a dry run)")
    parser.add_argument("--arch", default="sd15,sdxl-base", help="comma-separated replica architectures")
    parser.add_argument(
        "--steps", type=int, default=PUBLISHED_STEPS, help=f"denoising steps (default {PUBLISHED_STEPS}, as published)"
    )
    parser.add_argument("--images", type=int, default=4, help="prompts per architecture (one image each)")
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for the runs and summary.txt (default: benchmarks/results/gpu-<device>-<UTC date> on CUDA, "
        "a new temporary folder otherwise)",
    )
    args = parser.parse_args()
    import torch

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("no CUDA device; for a dry run use --device cpu --arch tiny", file=sys.stderr)
        return 2
    missing = _missing_modules(cuda)
    if missing:
        print("missing on this machine (see this script's docstring for the wheels):", file=sys.stderr)
        print("\n".join(f"  {problem}" for problem in missing), file=sys.stderr)
        return 2
    # Before anything loads: the fallback for a process that NVML does not show is measured from here.
    baseline, baseline_note = _idle_baseline(torch, device)
    if args.out is None:
        if cuda:
            slug = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(device)).strip("-").lower()
            args.out = Path(__file__).parent / "results" / f"gpu-{slug}-{datetime.now(timezone.utc):%Y%m%d-%H%M}"
        else:
            args.out = Path(tempfile.mkdtemp(prefix="genedge-gpu-profile-"))
    started = time.perf_counter()
    lines: list[str] = []
    for arch in [a for a in args.arch.split(",") if a]:
        replica = get_replica_config(arch)
        config = ProfileConfig(
            models=(f"replica:{arch}",),
            steps=(args.steps,),
            prompts=str(data_path("prompts", "smoke.tsv")),
            category_mapping="challenge",
            limit=args.images,
            device=args.device,
            dtype="float16" if cuda else "float32",
            resolution=None,  # each replica's native size, as published
            guidance_scale=replica["guidance_scale"],
            clip_backbone="replica:tiny",
            clip_pretrained=None,
        )
        run_dir = args.out / arch
        profile(config, run_dir)
        summary = summarize_run(run_dir)
        if not lines:
            lines = _header(summary.manifest, baseline, baseline_note)
        lines += _report(arch, run_dir, summary, baseline)
    lines.append(f"wall time {time.perf_counter() - started:.0f} s; runs in {args.out}")
    text = "\n".join(lines)
    print(text)
    write_text_atomic(args.out / "summary.txt", text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
