"""Clocks, the per-step timer (N intervals for N steps), and imports that load nothing heavy."""

from __future__ import annotations

import time

import pytest
import torch
from conftest import run_python

from genedge.profiler import Clock, load_pipeline, measure_call
from genedge.profiler.monitor import Monitor

SLEEP_S = 0.05


def test_cpu_clock_known_answer() -> None:
    clock = Clock(torch.device("cpu"))
    marks = [clock.mark()]
    for _ in range(2):
        time.sleep(SLEEP_S)
        marks.append(clock.mark())
    clock.synchronize()
    intervals = clock.intervals_s(marks)
    assert len(intervals) == 2
    assert all(SLEEP_S * 0.9 < value < SLEEP_S * 3 for value in intervals)


@pytest.mark.slow
@pytest.mark.parametrize(("scheduler", "executed"), [("DDIMScheduler", 4), ("PNDMScheduler", 13)])
def test_one_latency_per_executed_step(scheduler: str, executed: int) -> None:
    device = torch.device("cpu")
    pipe = load_pipeline("replica:tiny", device=device, dtype=torch.float32, scheduler=scheduler)
    with Monitor(None) as monitor:
        images, measurement = measure_call(
            pipe,
            ["a cat", "a dog"],
            steps=4,
            seed=0,
            resolution=64,
            guidance_scale=7.5,
            device=device,
            clock=Clock(device),
            monitor=monitor,
        )
    # PNDM runs Runge-Kutta warm-up steps: pipeline.num_timesteps, not the requested steps, counts the steps.
    assert measurement.num_timesteps == len(measurement.step_latencies_s) == executed
    assert len(images) == 2 and images[0].size == (64, 64)
    assert sum(measurement.step_latencies_s) <= measurement.denoise_s


def test_importing_the_profiler_and_its_command_loads_nothing_heavy() -> None:
    code = (
        "import sys, genedge.profiler, genedge.cli.profile; "
        "heavy = ('torch', 'diffusers', 'open_clip', 'pynvml', 'datasets', 'transformers'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    result = run_python(code, check=True)
    assert result.stdout.strip() == "[]"
