"""The process that owns one device: its models' pipelines, their queues and the share scheduler.

Each served model has a first-in first-out queue and one worker thread that takes up to
``max_batch`` requests at a time and generates them with the model's planned steps. Every piece of
device work — text encoding, each denoising step (gated from the pipeline's step-end callback),
VAE decoding — runs as one slice of :class:`~genedge.serve.shares.ShareScheduler`, so each model
gets its planned share of the device. A model holding ``queue_bound`` requests refuses more with
:class:`~genedge.serve.protocol.Overloaded`; :meth:`DeviceWorker.drain` stops taking requests and
waits for those in flight.
"""

from __future__ import annotations

import collections
import hashlib
import io
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from genedge.profiler import (
    Clock,
    decode_latents,
    denoise,
    encode_prompts,
    grad_mode,
    load_pipeline,
    seeded_generators,
    set_threads,
    torch_device,
)
from genedge.serve.protocol import Overloaded
from genedge.serve.shares import ShareScheduler
from genedge.serve.spec import ServedModel

__all__ = ["Generated", "DeviceWorker", "default_cpus"]

logger = logging.getLogger(__name__)

_WARMUP_PROMPT = "a photograph of an astronaut riding a horse"


def default_cpus(threads: int | None) -> list[int] | None:
    """The cores to pin a CPU device's process to: the last ``threads`` this process may use, leaving the
    others to the HTTP proxy, the ingress and the rest (None: no thread count, too few cores, or no
    affinity on this platform)."""
    if threads is None or not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[-threads:] if threads < len(allowed) else None


@dataclass(frozen=True)
class Generated:
    """One image and its record (the server's fields of :data:`~genedge.serve.protocol.RECORD_FIELDS`)."""

    png: bytes
    record: dict[str, Any]


@dataclass
class _Job:
    prompt: str
    seed: int
    request_id: str
    arrived: float
    future: Future


class _Lane:
    """One model's queue, thread and counters."""

    def __init__(self, model: ServedModel, pipe: Any) -> None:
        self.model = model
        self.pipe = pipe
        self.jobs: collections.deque[_Job] = collections.deque()
        self.in_service = 0
        self.requests = 0
        self.images = 0
        self.calls = 0
        self.rejected = 0
        self.thread: threading.Thread | None = None

    @property
    def held(self) -> int:
        return len(self.jobs) + self.in_service


class DeviceWorker:
    """Serve some models on one device, each at its planned share.

    Args:
        models: the replicas placed on this device (:meth:`ServeSpec.on_device`).
        device: torch device (default: cuda when available, else cpu).
        work_conserving: let a model use the share others leave idle (default: each model gets its
            share and no more, as the plan assumes).
        threads: torch CPU threads (default: torch's own).
        cpus: pin this process to these CPU cores (Linux), as a device of its own: a model thread that
            wakes on another core than it slept on starts with cold caches, and on a CPU that made the
            served steps of tiny models ~40 % slower than the profiled ones.
        warmup: run two calls per model before serving (the first call's one-time costs are no request's;
            the second is timed, :attr:`warmup_s`, to compare with the table).

    Raises:
        ValueError: models from more than one device, or shares summing to more than one device.
    """

    def __init__(
        self,
        models: Sequence[ServedModel],
        *,
        device: str | None = None,
        work_conserving: bool = False,
        threads: int | None = None,
        cpus: Sequence[int] | None = None,
        warmup: bool = True,
    ) -> None:
        if len({m.device for m in models}) != 1:
            raise ValueError(f"Expected the models of one device, but got devices {sorted({m.device for m in models})}")
        if cpus is not None:
            os.sched_setaffinity(0, set(cpus))
        self._threads = threads
        set_threads(threads)
        self.device = torch_device(device)
        self.scheduler = ShareScheduler({m.name: m.share for m in models}, work_conserving=work_conserving)
        self._lanes: dict[str, _Lane] = {}
        self._condition = threading.Condition()
        self._accepting = True
        self._closed = False
        self._counter = 0
        for model in models:
            pipe = load_pipeline(model.spec, device=self.device, dtype=model.dtype, scheduler=model.scheduler)
            self._lanes[model.name] = _Lane(model, pipe)
        #: model → device seconds of one image on the whole device, timed on a second warm-up call.
        self.warmup_s: dict[str, float] = {}
        if warmup:
            for lane in self._lanes.values():
                for _ in range(2):  # the first call pays one-time costs; the second is a served call's
                    alone = ShareScheduler({lane.model.name: 1.0})
                    self._generate(lane, [_WARMUP_PROMPT] * lane.model.max_batch, [0] * lane.model.max_batch, alone)
                self.warmup_s[lane.model.name] = alone.accounts()[lane.model.name].device_s
        for lane in self._lanes.values():
            lane.thread = threading.Thread(
                target=self._serve, args=(lane,), name=f"genedge-{lane.model.name}", daemon=True
            )
            lane.thread.start()

    @property
    def models(self) -> tuple[ServedModel, ...]:
        """The replicas this worker serves."""
        return tuple(lane.model for lane in self._lanes.values())

    def submit(self, name: str, prompt: str, *, seed: int | None = None, request_id: str | None = None) -> Future:
        """Queue one image of ``prompt`` on model ``name``; the future's result is a :class:`Generated`.

        Raises:
            KeyError: no such model on this device.
            Overloaded: the model already holds its queue bound, or the worker is draining.
        """
        lane = self._lanes.get(name)
        if lane is None:
            raise KeyError(f"model {name!r} is not served on this device (it serves {sorted(self._lanes)})")
        with self._condition:
            if not self._accepting:
                raise Overloaded("the server is shutting down", retry_after_s=self._backlog_s())
            model = lane.model
            if lane.held >= model.queue_bound:
                lane.rejected += 1
                excess = lane.held + 1 - model.queue_bound
                raise Overloaded(
                    f"model {name!r} holds {lane.held} requests, its bound ({model.queue_bound}: what it serves "
                    f"within the plan's bound at {model.service_s:.3g} s a call)",
                    retry_after_s=model.service_s * math.ceil(excess / model.max_batch),
                )
            self._counter += 1
            job = _Job(
                prompt=prompt,
                seed=self._counter if seed is None else seed,
                request_id=request_id or f"{name}-{self._counter}",
                arrived=time.monotonic(),
                future=Future(),
            )
            lane.jobs.append(job)
            lane.requests += 1
            self.scheduler.backlogged(name)
            self._condition.notify_all()
        return job.future

    def _backlog_s(self) -> float:
        return max((lane.held * lane.model.service_s for lane in self._lanes.values()), default=0.0)

    def _serve(self, lane: _Lane) -> None:
        set_threads(self._threads)  # each thread keeps its own count
        name = lane.model.name
        while True:
            with self._condition:
                while not lane.jobs and not self._closed:
                    self._condition.wait()
                if self._closed and not lane.jobs:
                    return
                batch = [lane.jobs.popleft() for _ in range(min(lane.model.max_batch, len(lane.jobs)))]
                lane.in_service = len(batch)
            try:
                results = self._run(lane, batch)
            except Exception as err:  # a failed call fails its requests, not the worker
                logger.exception("model %s failed a call of %d images", name, len(batch))
                for job in batch:
                    job.future.set_exception(err)
            else:
                for job, result in zip(batch, results):
                    job.future.set_result(result)
            with self._condition:
                lane.in_service = 0
                lane.images += len(batch)
                lane.calls += 1
                if not lane.jobs:
                    self.scheduler.idle(name)
                self._condition.notify_all()

    def _run(self, lane: _Lane, batch: list[_Job]) -> list[Generated]:
        started = time.monotonic()
        images = self._generate(lane, [job.prompt for job in batch], [job.seed for job in batch], self.scheduler)
        finished = time.monotonic()
        results = []
        for job, image in zip(batch, images):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            png = buffer.getvalue()
            record = {
                "request_id": job.request_id,
                "model": lane.model.key,
                "steps": lane.model.steps,
                "device": lane.model.device,
                "batch_size": len(batch),
                "seed": job.seed,
                "queue_wait_s": started - job.arrived,
                "service_s": finished - started,
                "image_sha256": hashlib.sha256(png).hexdigest(),
            }
            results.append(Generated(png=png, record=record))
        return results

    def _generate(self, lane: _Lane, prompts: list[str], seeds: list[int], scheduler: ShareScheduler) -> list[Any]:
        """One call, each piece of device work a slice of ``scheduler``."""
        model, pipe, name = lane.model, lane.pipe, lane.model.name
        # A slice ends when its kernels have, not when they were queued.
        settle = Clock(self.device).synchronize
        generators = seeded_generators(self.device, seeds)
        scheduler.backlogged(name)
        with grad_mode():
            with scheduler.slice(name):
                embeddings = encode_prompts(pipe, prompts, self.device, model.guidance_scale)
                settle()
            grant = {"started": scheduler.acquire(name)}

            def next_step(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
                settle()
                scheduler.release(name, grant["started"])
                grant["started"] = scheduler.acquire(name)
                return {}

            try:
                latents = denoise(
                    pipe,
                    embeddings,
                    steps=model.steps,
                    guidance_scale=model.guidance_scale,
                    resolution=model.resolution,
                    generators=generators,
                    on_step_end=next_step,
                )
                images = decode_latents(pipe, latents)
                settle()
            finally:
                scheduler.release(name, grant["started"])
        return images

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per model (:data:`~genedge.serve.protocol.STATS_FIELDS`): its share account and counters."""
        accounts = self.scheduler.accounts()
        with self._condition:
            return {
                name: {
                    "planned_share": lane.model.share,
                    "steps": lane.model.steps,
                    "device_s": accounts[name].device_s,
                    "backlogged_s": accounts[name].backlogged_s,
                    "realized_share": accounts[name].realized_share,
                    "slices": accounts[name].slices,
                    "calls": lane.calls,
                    "requests": lane.requests,
                    "images": lane.images,
                    "queued": lane.held,
                    "rejected": lane.rejected,
                }
                for name, lane in self._lanes.items()
            }

    def in_flight(self) -> int:
        """Requests queued or running."""
        with self._condition:
            return sum(lane.held for lane in self._lanes.values())

    def drain(self, timeout_s: float | None = None) -> bool:
        """Stop taking requests and wait for those queued or running; True when none is left."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._condition:
            self._accepting = False
            while any(lane.held for lane in self._lanes.values()):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._condition.wait(remaining)
            return True

    def close(self) -> None:
        """Drain, then stop the model threads."""
        self.drain()
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        for lane in self._lanes.values():
            if lane.thread is not None:
                lane.thread.join()
