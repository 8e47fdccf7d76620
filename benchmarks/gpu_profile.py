"""Prepared GPU check: profile the SD 1.5 and SDXL replicas at float16 and compare with published figures.

Runs on one NVIDIA GPU without network (PyTorch preinstalled; diffusers, transformers, open_clip and
nvidia-ml-py installed from wheels brought along), in a few minutes: for each architecture a short
``genedge.profiler`` run (random weights, own prompts from ``genedge/data/prompts/smoke.tsv``,
the random-weight ``replica:tiny`` CLIP backbone since no CLIP weights are at hand). It prints the
median per-step latency, the stage breakdown, an end-to-end time extrapolated to 25 steps and the
memory ladder beside the published A100/H100 figures of ``shared/data/PUBLISHED.md``, as ratios
measured / published. Results (the runs and ``summary.txt``, with device name and driver) go to
``benchmarks/results/gpu-<device>-<date>/``.

Dry mode on a CPU: ``python benchmarks/gpu_profile.py --device cpu --arch tiny``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from genedge.data import path as data_path
from genedge.profiler import ProfileConfig, get_replica_config, profile, read_manifest, read_records

EXTRAPOLATE_STEPS = 25
GIB = 2**30
# Published bs-1 float16 figures with classifier-free guidance (shared/data/PUBLISHED.md):
#   ms/step A100: diffusers torch 2.0 benchmark, no compile (§2.1); H100: ML.ENERGY v2 batch latency / 25 (§2.2).
#   total_s: ML.ENERGY v2, 25 steps, end to end (§2.2; SD 1.5 = Openjourney-v4, the SD 1.5 architecture).
#   peak_bytes: ONNX Runtime README, torch 2.0, SD 1.5 512², bs 1, second-run peak (§2.3; MB = 10^6 B).
PUBLISHED = {
    "sd15": {
        "ms_per_step": {"A100": 46.2, "H100": 34.7},
        "total_s": {"A100": 0.921, "H100": 0.867},
        "peak_bytes": {"A100": 4_400e6},
    },
    "sdxl-base": {
        "ms_per_step": {"A100": 115.7, "H100": 90.3},
        "total_s": {"A100": 2.858, "H100": 2.258},
        "peak_bytes": {},
    },
}


def _gib(value: float | None) -> str:
    return "null" if value is None or value != value else f"{value / GIB:.2f} GiB"


def _ratios(measured: float | None, references: dict[str, float], unit: str) -> str:
    if measured is None or measured != measured:
        return "(not measured here)"
    if not references:
        return "(no published figure)"
    return ", ".join(f"{gpu} {ref:.3g} {unit} → ratio {measured / ref:.2f}" for gpu, ref in references.items())


def _summarize(arch: str, run_dir: Path, lines: list[str]) -> None:
    frame = read_records(run_dir)
    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        lines.append(
            f"{arch}: no successful images ({dict(frame['status'].value_counts())}; "
            f"first error: {frame['error'].iloc[0]})"
        )
        return
    step_ms = 1e3 * statistics.median(s for steps in ok["step_latencies_s"] for s in steps)
    encode, denoise, decode, total = (ok[c].mean() for c in ("text_encode_s", "denoise_s", "decode_s", "total_s"))
    steps = int(ok["steps"].iloc[0])
    # Everything but the steps (encode, decode, pipeline set-up) is a per-image overhead.
    total_25 = total + (EXTRAPOLATE_STEPS - steps) * step_ms / 1e3
    published = PUBLISHED.get(arch, {})
    process = ok["peak_nvml_process_bytes"].max()
    process_gib = None if process != process else process / GIB
    published_gib = {gpu: value / GIB for gpu, value in published.get("peak_bytes", {}).items()}
    lines += [
        (
            f"== replica:{arch} ({ok['resolution'].iloc[0]} px, {ok['dtype'].iloc[0]}, "
            f"guidance {ok['guidance_scale'].iloc[0]}, "
            f"{steps} steps, {len(ok)} images)"
        ),
        f"per-step latency (median): {step_ms:.2f} ms   {_ratios(step_ms, published.get('ms_per_step', {}), 'ms')}",
        (
            f"stages (mean): text encode {1e3 * encode:.1f} ms, denoise {1e3 * denoise:.1f} ms, "
            f"VAE decode {1e3 * decode:.1f} ms, "
            f"total {1e3 * total:.1f} ms"
        ),
        (
            f"end to end at {EXTRAPOLATE_STEPS} steps (overhead + {EXTRAPOLATE_STEPS} × step): {total_25:.3f} s   "
            f"{_ratios(total_25, published.get('total_s', {}), 's')}"
        ),
        (
            f"memory ladder (max): torch allocated {_gib(ok['peak_torch_allocated_bytes'].max())} ≤ torch reserved "
            f"{_gib(ok['peak_torch_reserved_bytes'].max())} ≤ "
            f"NVML process {_gib(ok['peak_nvml_process_bytes'].max())} ≤ "
            f"NVML device {_gib(ok['peak_nvml_device_bytes'].max())}"
        ),
        f"   NVML process peak vs published peak: {_ratios(process_gib, published_gib, 'GiB')}",
    ]
    notes = ok["nvml_note"].dropna().unique()
    if len(notes):
        lines.append(f"   NVML note: {notes[0]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", default="sd15,sdxl-base", help="comma-separated replica architectures")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--images", type=int, default=4, help="prompts per architecture (one image each)")
    parser.add_argument(
        "--out", type=Path, help="results folder (default: benchmarks/results/gpu-<device>-<date> on CUDA)"
    )
    args = parser.parse_args()
    import torch

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("no CUDA device; for a dry run use --device cpu --arch tiny", file=sys.stderr)
        return 2
    if args.out is None:
        if cuda:
            slug = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(args.device)).strip("-").lower()
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
            resolution=replica["resolution"],
            guidance_scale=replica["guidance_scale"],
            clip_backbone="replica:tiny",
            clip_pretrained=None,
        )
        run_dir = args.out / arch
        profile(config, run_dir)
        if not lines:
            device = read_manifest(run_dir)["device"]
            lines.append(
                f"device {device['name']}, driver {device['driver']}, CUDA {device['cuda']}, "
                f"memory {_gib(device['memory_bytes'])}; torch {torch.__version__}"
            )
        _summarize(arch, run_dir, lines)
    lines.append(f"wall time {time.perf_counter() - started:.0f} s; runs in {args.out}")
    text = "\n".join(lines)
    print(text)
    (args.out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
