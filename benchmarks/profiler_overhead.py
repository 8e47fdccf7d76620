"""Profiling overhead: the profiler against a plain pipeline loop doing the same work, time, memory and load.

Both sides run the same pipeline, saved to a folder with ``save_pretrained`` (the ``--arch`` replica), on
the same prompts with the same seeds, under the same grad mode (``torch.inference_mode``, which the profiler
uses: :data:`genedge.profiler.GRAD_MODE`):

- plain: ``pipe(prompt, ..., output_type="pil")`` with a step-end callback that reads
  ``time.perf_counter`` (what a user timing a pipeline by hand would do); forward hooks on its text encoder
  and UNet and a wrapper on its VAE's ``decode`` mark where each part of the call begins and ends;
- profiled: :func:`genedge.profiler.measure_call` — encode, denoise and decode as separate windows, a
  step timer on the UNet, torch peak resets and a monitor window (memory and energy sampling).

1. **Time, in one process.** The two are interleaved A/B image by image (in alternating order, so neither
   always runs first) over ``--rounds`` rounds of the smoke prompts. The benchmark prints each round's time
   ratio profiled/plain and their median (goal 0.97–1.03), the median per-step latency the profiler
   recorded beside the plain loop's step-end intervals (goal ±5 %), and every part of a call side by side:
   text encoding, the denoising stage outside its steps, the steps, VAE decoding and what lies outside
   those (genedge's ``overhead_s``), so a difference in the whole call shows where it sits.
2. **Memory and load, in fresh processes.** ``--processes`` times, alternating: a plain child process
   (imports the classes ``model_index.json`` names, then times ``DiffusionPipeline.from_pretrained``, then
   generates the prompts, its peak resident set taken from the kernel's high-water mark reset after the load)
   and ``genedge profile`` on the same folder (its records' ``import_s``, ``model_load_s``,
   ``pipeline_peak_bytes`` and ``peak_rss_bytes``). The pipeline's peak is on both sides the peak over the
   calls less the resident set just before the load. CLIPScore and record writing happen between calls and
   are not timed.

Usage::

    python benchmarks/profiler_overhead.py [--arch tiny] [--steps 20] [--resolution 128] [--rounds 7] [--processes 3]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import diffusers
import torch
from _environment import cpu_name, source_state

from genedge.data import path as data_path
from genedge.profiler import Clock, load_pipeline, load_prompt_set, measure_call
from genedge.profiler.device import select_device
from genedge.profiler.models import save_replica
from genedge.profiler.monitor import Monitor

RATIO_GOAL = (0.97, 1.03)
STEP_AGREEMENT_GOAL = 0.05
PROMPTS = data_path("prompts", "smoke.tsv")
# The parts of a call, in order; the plain loop's are read from its hooks, genedge's from its record columns.
PARTS = ("text encoding", "denoise outside steps", "steps", "decode", "outside the stages", "whole call")

# The plain child process: no genedge, only what a user would write. argv: folder steps resolution threads prompts…
PLAIN_CHILD = r"""
import json, sys, time
folder, prompts = sys.argv[1], sys.argv[5:]
steps, resolution, threads = map(int, sys.argv[2:5])
import torch
torch.set_num_threads(threads)
def rss_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
start = time.perf_counter()
import importlib
index = json.load(open(f"{folder}/model_index.json"))
classes = [("diffusers", index["_class_name"])] + [tuple(v) for v in index.values() if isinstance(v, list) and v[0]]
for library, name in classes:
    getattr(importlib.import_module(library), name)
import diffusers
import_s = time.perf_counter() - start
before = rss_kib("VmRSS")
start = time.perf_counter()
pipe = diffusers.DiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32).to("cpu")
pipe.set_progress_bar_config(disable=True)
model_load_s = time.perf_counter() - start
open("/proc/self/clear_refs", "w").write("5")
with torch.inference_mode():
    for prompt in prompts:
        pipe(prompt, num_inference_steps=steps, height=resolution, width=resolution,
             generator=torch.Generator("cpu").manual_seed(0), output_type="pil")
peak = rss_kib("VmHWM")
print(json.dumps({"import_s": import_s, "model_load_s": model_load_s, "pipeline_peak_bytes": 1024 * (peak - before),
                  "peak_rss_bytes": 1024 * peak}))
"""


class PlainMarks:
    """Hooks on a plain pipeline's text encoder, UNet, step-end callback and VAE decode, reading perf_counter."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.encoder_end = self.first_step = self.last_step = self.decode_start = 0.0
        self.step_marks: list[float] = []
        self.decode = pipe.vae.decode

    def __enter__(self) -> PlainMarks:
        self.handles = [
            self.pipe.text_encoder.register_forward_hook(lambda *_: setattr(self, "encoder_end", time.perf_counter())),
            self.pipe.unet.register_forward_pre_hook(self._unet_call),
        ]

        def decode(*args, **kwargs):
            self.decode_start = time.perf_counter()
            return self.decode(*args, **kwargs)

        self.pipe.vae.decode = decode
        return self

    def _unet_call(self, *_: Any) -> None:
        if not self.first_step:
            self.first_step = time.perf_counter()

    def step_end(self, pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.last_step = time.perf_counter()
        self.step_marks.append(self.last_step)
        return kwargs

    def __exit__(self, *_: Any) -> None:
        for handle in self.handles:
            handle.remove()
        del self.pipe.vae.decode  # the instance attribute: the class's method shows through again


def _plain(pipe: Any, prompt: str, args: argparse.Namespace, device: Any) -> tuple[dict[str, float], list[float]]:
    """One plain call: its parts (seconds) and its step-end intervals (steps 2..N)."""
    with PlainMarks(pipe) as marks:
        start = time.perf_counter()
        with torch.inference_mode():
            pipe(
                prompt,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance_scale,
                height=args.resolution,
                width=args.resolution,
                generator=torch.Generator(device).manual_seed(0),
                output_type="pil",
                callback_on_step_end=marks.step_end,
                callback_on_step_end_tensor_inputs=[],
            )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        end = time.perf_counter()
    steps = [b - a for a, b in itertools.pairwise(marks.step_marks)]
    parts = {
        "text encoding": marks.encoder_end - start,
        "denoise outside steps": (marks.first_step - marks.encoder_end) + (marks.decode_start - marks.last_step),
        "steps": marks.last_step - marks.first_step,
        "decode": end - marks.decode_start,
        "outside the stages": 0.0,
        "whole call": end - start,
    }
    return parts, steps


def _profiled(
    pipe: Any, prompt: str, args: argparse.Namespace, device: Any, clock: Clock, monitor: Monitor
) -> tuple[dict[str, float], list[float]]:
    """One profiled call: its parts from the measurement, and its step latencies (steps 2..N)."""
    start = time.perf_counter()
    _, m = measure_call(
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
    whole = time.perf_counter() - start
    steps = sum(m.step_latencies_s)
    parts = {
        "text encoding": m.text_encode_s,
        "denoise outside steps": m.denoise_s - steps,
        "steps": steps,
        "decode": m.decode_s,
        "outside the stages": m.overhead_s,
        "whole call": whole,
    }
    return parts, list(m.step_latencies_s[1:])


def _interleaved(
    pipe: Any, prompts: list[str], args: argparse.Namespace, device: Any
) -> tuple[list[float], dict[str, dict[str, list[float]]], dict[str, list[float]]]:
    """Round ratios, every call's parts per side, and the step intervals per side."""
    clock = Clock(device)
    uuid = str(torch.cuda.get_device_properties(device).uuid) if device.type == "cuda" else None
    parts = {"plain": {p: [] for p in PARTS}, "profiled": {p: [] for p in PARTS}}
    steps: dict[str, list[float]] = {"plain": [], "profiled": []}
    ratios = []
    with Monitor(uuid) as monitor:
        _plain(pipe, prompts[0], args, device)  # warm both paths
        _profiled(pipe, prompts[0], args, device, clock, monitor)
        for round_ in range(args.rounds):
            seconds = {"plain": 0.0, "profiled": 0.0}
            # Interleaved per image, in alternating order: machine drift within a round hits both loops alike.
            for i, prompt in enumerate(prompts):
                order = ("plain", "profiled") if (round_ + i) % 2 == 0 else ("profiled", "plain")
                for name in order:
                    if name == "plain":
                        call, intervals = _plain(pipe, prompt, args, device)
                    else:
                        call, intervals = _profiled(pipe, prompt, args, device, clock, monitor)
                    steps[name] += intervals
                    seconds[name] += call["whole call"]
                    for part, value in call.items():
                        parts[name][part].append(value)
            ratios.append(seconds["profiled"] / seconds["plain"])
    return ratios, parts, steps


def _fresh_processes(folder: Path, prompts: list[str], args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """Import, load and memory figures of ``--processes`` plain child processes and ``genedge profile`` runs."""
    figures: dict[str, dict[str, list[float]]] = {"plain": {}, "profiled": {}}
    env = os.environ | {"PYTHONDONTWRITEBYTECODE": "1"}
    for i in range(args.processes):
        for name in ("plain", "profiled") if i % 2 == 0 else ("profiled", "plain"):
            if name == "plain":
                command = [sys.executable, "-c", PLAIN_CHILD, str(folder), str(args.steps), str(args.resolution)]
                out = subprocess.run(
                    [*command, str(args.threads), *prompts], capture_output=True, text=True, check=True, env=env
                )
                row = json.loads(out.stdout.strip().splitlines()[-1])
            else:
                row = _genedge_run(folder, args, env)
            for key, value in row.items():
                figures[name].setdefault(key, []).append(value)
    return figures


def _genedge_run(folder: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, float]:
    import pandas as pd

    options = {
        "--model": folder,
        "--steps": args.steps,
        "--prompts": PROMPTS,
        "--resolution": args.resolution,
        "--threads": args.threads,
        "--guidance-scale": args.guidance_scale,
        "--clip-backbone": "replica:tiny",
        "--clip-pretrained": "none",
    }
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "genedge", "profile", "--no-progress", "--out", out]
        command += [str(part) for option in options.items() for part in option]
        subprocess.run(command, capture_output=True, text=True, check=True, env=env)
        frame = pd.read_parquet(Path(out, "records"))
    return {
        "import_s": float(frame["import_s"].iat[0]),
        "model_load_s": float(frame["model_load_s"].iat[0]),
        "pipeline_peak_bytes": float(frame["pipeline_peak_bytes"].max()),
        "peak_rss_bytes": float(frame["peak_rss_bytes"].max()),
    }


def _print_time(ratios: list[float], parts: dict[str, dict[str, list[float]]], steps: dict[str, list[float]]) -> None:
    median = statistics.median(ratios)
    print("per-round ratio profiled/plain: " + ", ".join(f"{r:.3f}" for r in ratios))
    low, high = RATIO_GOAL
    print(f"median ratio: {median:.3f} (goal {low}–{high}: {'met' if low <= median <= high else 'NOT met'})")
    plain_step, profiled_step = statistics.median(steps["plain"]), statistics.median(steps["profiled"])
    agreement = profiled_step / plain_step - 1
    print(
        f"median step latency: profiler {1e3 * profiled_step:.3f} ms, plain step-end callback "
        f"{1e3 * plain_step:.3f} ms, difference {agreement:+.1%} (goal ±{STEP_AGREEMENT_GOAL:.0%}: "
        f"{'met' if abs(agreement) <= STEP_AGREEMENT_GOAL else 'NOT met'})"
    )
    print("every part of a call, median ms over the calls (plain: hooks on its pipeline; profiled: its record):")
    print(f"  {'part':<24}{'plain':>10}{'profiled':>10}{'difference':>12}")
    whole = statistics.median(parts["plain"]["whole call"])
    for part in PARTS:
        plain, profiled = statistics.median(parts["plain"][part]), statistics.median(parts["profiled"][part])
        share = f"{(profiled - plain) / whole:+.1%}"
        print(f"  {part:<24}{1e3 * plain:>10.2f}{1e3 * profiled:>10.2f}{share:>12}")
    print("  (difference: profiled − plain, as a share of the plain whole call)")


def _print_processes(figures: dict[str, dict[str, list[float]]], processes: int) -> None:
    print(f"fresh processes, median of {processes} each (plain child process vs genedge profile, same folder);")
    print("  imports: the plain child's of the pipeline's classes, genedge's what its start-up had not imported yet")
    rows = (
        ("imports left for the load, s", "import_s", 1.0),
        ("model load, s", "model_load_s", 1.0),
        ("pipeline peak, MiB", "pipeline_peak_bytes", 2**-20),
        ("whole-process peak, MiB", "peak_rss_bytes", 2**-20),
    )
    print(f"  {'figure':<26}{'plain':>10}{'profiled':>10}{'ratio':>8}")
    for label, key, scale in rows:
        plain = statistics.median(figures["plain"][key])
        profiled = statistics.median(figures["profiled"][key])
        print(f"  {label:<26}{scale * plain:>10.3f}{scale * profiled:>10.3f}{profiled / plain:>8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny", help="replica architecture (default: tiny)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per image (default: 20)")
    parser.add_argument("--resolution", type=int, default=128, help="image side in pixels (default: 128)")
    parser.add_argument("--guidance-scale", type=float, default=7.5, help="guidance scale (default: 7.5)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved A/B rounds (default: 7)")
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per side (default: 3)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1, steadier)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = select_device(args.device, 0)
    prompts = [p.text for p in load_prompt_set(str(PROMPTS)).prompts]
    dtype = torch.float32 if device.type == "cpu" else torch.float16
    command = "python benchmarks/profiler_overhead.py" + "".join(" " + shlex.quote(a) for a in sys.argv[1:])
    print(f"# {command} — {datetime.date.today().isoformat()}, {cpu_name()}, {os.cpu_count()} cores")
    print(
        f"# python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
        f"{platform.system()} {platform.release()}; genedge {source_state('profiler', 'benchmarks')}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_replica(args.arch, Path(tmp, args.arch))
        pipe = load_pipeline(str(folder), device=device, dtype=dtype)
        print(
            f"replica:{args.arch} saved to a folder, {args.steps} steps, {args.resolution} px, {device}, "
            f"{args.threads} thread(s), {len(prompts)} images per loop, {args.rounds} interleaved rounds, "
            "both under torch.inference_mode"
        )
        _print_time(*_interleaved(pipe, prompts, args, device))
        # The plain child reads Linux's resident set (a CPU run's memory figure) and resets its high-water mark.
        if device.type == "cpu" and sys.platform == "linux":
            _print_processes(_fresh_processes(folder, prompts, args), args.processes)


if __name__ == "__main__":
    main()
