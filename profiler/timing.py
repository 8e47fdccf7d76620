"""Device clocks and the per-step timer hooked into a diffusers pipeline.

On a CUDA device, time is read from CUDA events recorded on the hot path and synchronized once
before reading; elsewhere from ``time.perf_counter``. The step timer records a start mark before
the first UNet call and an end mark after every step, so ``N`` steps give ``N`` intervals (a
step-end callback alone gives ``N − 1``).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from genedge.profiler._imports import require

__all__ = ["Clock", "StepTimer", "step_timer"]

logger = logging.getLogger(__name__)


class Clock:
    """Marks points in time on a device and converts pairs of marks to seconds.

    Args:
        device: ``torch.device``; CUDA events are used when its type is ``"cuda"``, recorded on
            that device's current stream whichever device is current.
    """

    def __init__(self, device: Any) -> None:
        self.device = device
        self._cuda = device.type == "cuda"

    def mark(self) -> Any:
        """Record a mark: a CUDA event queued on the device's current stream, or a ``perf_counter`` reading."""
        if self._cuda:
            torch = require("torch")
            event = torch.cuda.Event(enable_timing=True)
            # A bare record() uses the current stream of the current device, which need not be ours.
            event.record(torch.cuda.current_stream(self.device))
            return event
        return time.perf_counter()

    def synchronize(self) -> None:
        """Wait for the device; call once before reading elapsed times."""
        if self._cuda:
            require("torch").cuda.synchronize(self.device)

    def elapsed_s(self, start: Any, end: Any) -> float:
        """Seconds between two marks (after :meth:`synchronize` on CUDA)."""
        if self._cuda:
            return start.elapsed_time(end) / 1e3
        return end - start

    def intervals_s(self, marks: list[Any]) -> list[float]:
        """Seconds between consecutive marks: ``len(marks) − 1`` values."""
        return [self.elapsed_s(a, b) for a, b in itertools.pairwise(marks)]


class StepTimer:
    """Pipeline step callback that records one mark per finished step.

    Its ``__call__`` follows diffusers' ``callback_on_step_end`` protocol: it returns
    ``callback_kwargs`` unchanged and never synchronizes the device.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.marks: list[Any] = []

    def start(self, *_: Any) -> None:
        """UNet forward pre-hook: the first call of a generation marks the start of step 0."""
        if not self.marks:
            self.marks.append(self.clock.mark())

    def __call__(self, pipe: Any, step_index: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        self.marks.append(self.clock.mark())
        return callback_kwargs


@contextmanager
def step_timer(pipe: Any, clock: Clock) -> Iterator[StepTimer]:
    """Attach a :class:`StepTimer` to ``pipe.unet`` for one generation.

    Pass the yielded timer as ``callback_on_step_end``; after the generation and a
    ``clock.synchronize()``, ``clock.intervals_s(timer.marks)`` holds one latency per step.
    """
    timer = StepTimer(clock)
    handle = pipe.unet.register_forward_pre_hook(timer.start)
    try:
        yield timer
    finally:
        handle.remove()
