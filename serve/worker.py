"""The process that owns one device: its models' pipelines, their queues and the share scheduler.

Each served model has a first-in first-out queue and one worker thread that takes up to
``max_batch`` requests at a time and generates them with the model's planned steps. Every piece of
device work — text encoding, each denoising step (gated from the pipeline's step-end callback),
VAE decoding — runs as one slice of :class:`~genedge.serve.shares.ShareScheduler`, so each model
gets its planned share of the device. A model holding ``queue_bound`` requests refuses more with
:class:`~genedge.serve.protocol.Overloaded`; :meth:`DeviceWorker.drain` stops taking requests and
waits for those in flight.

A server of a plan schedule loads every model any of its plans deploys; :meth:`DeviceWorker.reconfigure`
switches to another plan's models, steps, batch sizes, queue bounds and shares while serving. A request keeps
the steps of the plan it was accepted under; a model the new plan leaves out finishes its queue at its old
share (the others' shares scaled down to make room), then rests at share 0. Nothing queued is dropped or run
twice.
"""

from __future__ import annotations

import collections
import hashlib
import io
import logging
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
from genedge.serve.spec import ServedModel, refusal

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
    #: The plan's time of the call on the model's share (s), under the plan that accepted the request: what
    #: the call's ``service_s`` is compared with to recalibrate.
    planned_s: float


@dataclass
class _Job:
    prompt: str
    seed: int
    steps: int
    planned_s: float  # the accepting plan's time of this model's call on its share
    request_id: str
    arrived: float
    future: Future


class _Lane:
    """One model's queue, thread and counters."""

    def __init__(self, model: ServedModel, pipe: Any) -> None:
        self.model = model
        self.pipe = pipe
        # Whether the current plan serves this model, and the share it had when it last did (kept while a
        # model the plan left out finishes its queue).
        self.active = model.share > 0
        self.last_share = model.share
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
                    batch = lane.model.max_batch
                    self._generate(lane, [_WARMUP_PROMPT] * batch, [0] * batch, alone, lane.model.steps)
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
            refused = refusal(model, lane.held)
            if refused is not None:
                lane.rejected += 1
                raise refused
            self._counter += 1
            job = _Job(
                prompt=prompt,
                seed=self._counter if seed is None else seed,
                steps=model.steps,
                planned_s=model.service_s,
                request_id=request_id or f"{name}-{self._counter}",
                arrived=time.monotonic(),
                future=Future(),
            )
            lane.jobs.append(job)
            lane.requests += 1
            if not lane.active:  # routed under the plan before a switch: served at that plan's share
                self._apply_shares()
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
                batch = _next_batch(lane.jobs, lane.model.max_batch)
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
                    if not lane.active:  # a model the plan left out has finished its queue: it rests
                        self._apply_shares()
                self._condition.notify_all()

    def _run(self, lane: _Lane, batch: list[_Job]) -> list[Generated]:
        with self._condition:  # the share the call starts on (a switch may change it during the call)
            share = self.scheduler.shares[lane.model.name]
        started = time.monotonic()
        images = self._generate(
            lane, [job.prompt for job in batch], [job.seed for job in batch], self.scheduler, batch[0].steps
        )
        finished = time.monotonic()
        results = []
        for job, image in zip(batch, images):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            png = buffer.getvalue()
            record = {
                "request_id": job.request_id,
                "model": lane.model.key,
                "steps": job.steps,
                "device": lane.model.device,
                "batch_size": len(batch),
                "seed": job.seed,
                "queue_wait_s": started - job.arrived,
                "service_s": finished - started,
                "share": share,
                "image_sha256": hashlib.sha256(png).hexdigest(),
            }
            results.append(Generated(png=png, record=record, planned_s=job.planned_s))
        return results

    def _generate(
        self, lane: _Lane, prompts: list[str], seeds: list[int], scheduler: ShareScheduler, steps: int
    ) -> list[Any]:
        """One call of ``steps`` denoising steps, each piece of device work a slice of ``scheduler``."""
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
                    steps=steps,
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

    def reconfigure(self, models: Sequence[ServedModel]) -> None:
        """Serve another plan from now on: ``models`` are its replicas on this device (module notes).

        A model of this worker that ``models`` leave out (or give share 0) is no longer served once its queue
        is empty; requests already queued keep the steps they were accepted with.

        Raises:
            ValueError: a model this worker did not load.
        """
        by_name = {m.name: m for m in models}
        unknown = sorted(set(by_name) - set(self._lanes))
        if unknown:
            raise ValueError(f"models {unknown} are not loaded on this device (it has {sorted(self._lanes)})")
        with self._condition:
            for name, lane in self._lanes.items():
                if lane.active:
                    lane.last_share = lane.model.share
                model = by_name.get(name)
                lane.active = model is not None and model.share > 0
                if lane.active:
                    lane.model = model
            self._apply_shares()
            self._condition.notify_all()

    def _apply_shares(self) -> None:
        """The scheduler's shares for the current plan (call holding the condition's lock): a model left out
        that still holds requests keeps its last share, and the plan's models share what is left in their
        plan's proportions."""
        finishing = {
            name: lane.last_share or 1 / len(self._lanes)  # never served before: an equal part, as a floor
            for name, lane in self._lanes.items()
            if not lane.active and lane.held
        }
        left = max(0.0, 1.0 - sum(finishing.values()))
        shares = {
            name: lane.model.share * left if lane.active else finishing.get(name, 0.0)
            for name, lane in self._lanes.items()
        }
        total = sum(shares.values())
        if total > 1:
            shares = {name: share / total for name, share in shares.items()}
        self.scheduler.set_shares(shares)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per model (:data:`~genedge.serve.protocol.STATS_FIELDS`): its share account and counters."""
        accounts = self.scheduler.accounts()
        with self._condition:
            return {
                name: {
                    "planned_share": accounts[name].planned_share,
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


def _next_batch(jobs: collections.deque[_Job], max_batch: int) -> list[_Job]:
    """Up to ``max_batch`` jobs from the head of ``jobs`` with the head's steps (a batch runs one step count)."""
    batch = [jobs.popleft()]
    while jobs and len(batch) < max_batch and jobs[0].steps == batch[0].steps:
        batch.append(jobs.popleft())
    return batch
