"""Profiling overhead: the profiler's hot path against a plain pipeline loop doing the same work.

Both loops run the same pipeline on the same prompts with the same seeds, under the same grad mode
(``torch.inference_mode``, which the profiler uses: :data:`genedge.profiler.GRAD_MODE`), and
produce the same PIL images:

- plain: ``pipe(prompt, ..., output_type="pil")`` with a step-end callback that reads
  ``time.perf_counter`` (what a user timing a pipeline by hand would do);
- profiled: :func:`genedge.profiler.measure_call` — encode, denoise and decode as separate windows, a
  step timer on the UNet, torch peak resets and a monitor window (memory and energy sampling).

The loops are interleaved A/B image by image (in alternating order, so neither always runs first)
over ``--rounds`` rounds of the smoke prompts;
the benchmark prints each round's time ratio profiled/plain and their median (goal 0.97–1.03), then
the median per-step latency the profiler recorded beside the plain loop's step-end callback
intervals for the same calls (goal: within ±5 %). CLIPScore and record writing happen after
measurement and are not counted.

Usage::

    python benchmarks/profiler_overhead.py [--arch tiny] [--steps 20] [--resolution 128] [--rounds 7]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch

from genedge.data import path as data_path
from genedge.profiler import Clock, load_pipeline, load_prompt_set, measure_call
from genedge.profiler.device import select_device
from genedge.profiler.monitor import Monitor

RATIO_GOAL = (0.97, 1.03)
STEP_AGREEMENT_GOAL = 0.05


def _plain(pipe, prompts, args, device) -> tuple[float, list[float]]:
    """Seconds for the loop and every step-end interval (steps 2..N of each call)."""
    intervals: list[float] = []

    def on_step_end(pipe, step, timestep, kwargs):
        marks.append(time.perf_counter())
        return kwargs

    start = time.perf_counter()
    with torch.inference_mode():
        for prompt in prompts:
            marks: list[float] = []
            pipe(
                prompt,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance_scale,
                height=args.resolution,
                width=args.resolution,
                generator=torch.Generator(device).manual_seed(0),
                output_type="pil",
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=[],
            )
            intervals += [b - a for a, b in itertools.pairwise(marks)]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, intervals


def _profiled(pipe, prompts, args, device, clock, monitor) -> tuple[float, list[float]]:
    """Seconds for the loop and the profiler's recorded step latencies (steps 2..N, like the plain loop's)."""
    steps: list[float] = []
    start = time.perf_counter()
    for prompt in prompts:
        _, measurement = measure_call(
            pipe,
            [prompt],
            steps=args.steps,
            seed=0,
            resolution=args.resolution,
            guidance_scale=args.guidance_scale,
            device=device,
            clock=clock,
            monitor=monitor,
        )
        steps += list(measurement.step_latencies_s[1:])
    return time.perf_counter() - start, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny", help="replica architecture (default: tiny)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per image (default: 20)")
    parser.add_argument("--resolution", type=int, default=128, help="image side in pixels (default: 128)")
    parser.add_argument("--guidance-scale", type=float, default=7.5, help="guidance scale (default: 7.5)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved A/B rounds (default: 7)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1, steadier)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = select_device(args.device, 0)
    prompts = [p.text for p in load_prompt_set(str(data_path("prompts", "smoke.tsv"))).prompts]
    dtype = torch.float32 if device.type == "cpu" else torch.float16
    pipe = load_pipeline(f"replica:{args.arch}", device=device, dtype=dtype)
    clock = Clock(device)
    with Monitor(str(torch.cuda.get_device_properties(device).uuid) if device.type == "cuda" else None) as monitor:
        _plain(pipe, prompts[:1], args, device)  # warm both paths
        _profiled(pipe, prompts[:1], args, device, clock, monitor)
        ratios, plain_steps, profiled_steps = [], [], []
        for round_ in range(args.rounds):
            seconds = {"plain": 0.0, "profiled": 0.0}
            # Interleaved per image, in alternating order: machine drift within a round hits both loops alike.
            for i, prompt in enumerate(prompts):
                order = ("plain", "profiled") if (round_ + i) % 2 == 0 else ("profiled", "plain")
                for name in order:
                    if name == "plain":
                        elapsed, steps = _plain(pipe, [prompt], args, device)
                        plain_steps += steps
                    else:
                        elapsed, steps = _profiled(pipe, [prompt], args, device, clock, monitor)
                        profiled_steps += steps
                    seconds[name] += elapsed
            ratios.append(seconds["profiled"] / seconds["plain"])
    median = statistics.median(ratios)
    plain_step, profiled_step = statistics.median(plain_steps), statistics.median(profiled_steps)
    agreement = profiled_step / plain_step - 1
    print(
        f"replica:{args.arch}, {args.steps} steps, {args.resolution} px, {device}, {args.threads} thread(s), "
        f"{len(prompts)} images per loop, {args.rounds} interleaved rounds, both under torch.inference_mode"
    )
    print("per-round ratio profiled/plain: " + ", ".join(f"{r:.3f}" for r in ratios))
    low, high = RATIO_GOAL
    print(f"median ratio: {median:.3f} (goal {low}–{high}: {'met' if low <= median <= high else 'NOT met'})")
    print(
        f"median step latency: profiler {1e3 * profiled_step:.3f} ms, plain step-end callback "
        f"{1e3 * plain_step:.3f} ms, difference {agreement:+.1%} (goal ±{STEP_AGREEMENT_GOAL:.0%}: "
        f"{'met' if abs(agreement) <= STEP_AGREEMENT_GOAL else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
