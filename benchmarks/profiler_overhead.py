"""Profiling overhead: a plain ``pipe(...)`` loop against the profiled loop on the same pipeline and prompts.

The profiled loop is the profiler's hot path (:func:`genedge.profiler.measure_call`): prompt
encoding, denoising and VAE decoding as separate windows, a step timer on the UNet, torch peak
resets and an NVML window. CLIPScore and record writing happen after measurement and are not
counted. The two loops alternate, ``--repeats`` times each, so drift in machine load hits both.

Usage::

    python benchmarks/profiler_overhead.py [--arch tiny] [--steps 10] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch

from genedge.data import path as data_path
from genedge.profiler import Clock, NvmlMonitor, ProfileConfig, load_pipeline, load_prompt_set, measure_call

TARGET_RATIO = 1.05


def _plain(pipe, prompts, config, device) -> float:
    start = time.perf_counter()
    for prompt in prompts:
        pipe(
            prompt,
            num_inference_steps=config.steps[0],
            guidance_scale=config.guidance_scale,
            height=config.resolution,
            width=config.resolution,
            generator=torch.Generator(device).manual_seed(0),
            output_type="pil",
        )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _profiled(pipe, prompts, config, device, clock, monitor) -> float:
    start = time.perf_counter()
    for prompt in prompts:
        measure_call(
            pipe, [prompt], steps=config.steps[0], seed=0, config=config, device=device, clock=clock, monitor=monitor
        )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny", help="replica architecture (default: tiny)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: steadier on a shared CPU)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = ProfileConfig(
        models=(f"replica:{args.arch}",), steps=(args.steps,), resolution=args.resolution, device=args.device
    )
    prompts = [p.text for p in load_prompt_set(str(data_path("prompts", "smoke.tsv"))).prompts]
    pipe = load_pipeline(
        config.models[0], device=device, dtype=torch.float32 if device.type == "cpu" else torch.float16
    )
    clock = Clock(device)
    monitor = NvmlMonitor(str(torch.cuda.get_device_properties(device).uuid) if device.type == "cuda" else None)
    _plain(pipe, prompts[:1], config, device)  # warm-up both paths
    _profiled(pipe, prompts[:1], config, device, clock, monitor)
    plain, profiled = [], []
    for _ in range(args.repeats):
        plain.append(_plain(pipe, prompts, config, device))
        profiled.append(_profiled(pipe, prompts, config, device, clock, monitor))
    monitor.close()
    images = len(prompts) * args.repeats
    ratio = sum(profiled) / sum(plain)
    print(f"replica:{args.arch}, {args.steps} steps, {args.resolution} px, {device}, {images} images per loop")
    print(f"plain    loop: {sum(plain):.3f} s ({1e3 * sum(plain) / images:.2f} ms/image)")
    print(f"profiled loop: {sum(profiled):.3f} s ({1e3 * sum(profiled) / images:.2f} ms/image)")
    print(
        f"ratio profiled/plain: {ratio:.3f} (target ≤ {TARGET_RATIO}); "
        f"best-of-{args.repeats} ratio {min(profiled) / min(plain):.3f}"
    )


if __name__ == "__main__":
    main()
