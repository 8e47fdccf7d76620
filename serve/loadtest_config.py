"""What a load test sends, where and how fast: its configuration, checked where it is made."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from genedge.optimizer.model import TraceReplay

__all__ = ["LoadConfig", "LoadTestError"]


class LoadTestError(ValueError):
    """A load test cannot start: a bad setting, an unreachable or foreign server, a directory of another test."""


@dataclass(frozen=True)
class LoadConfig:
    """What a load test sends, where and how fast.

    Attributes:
        url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
        prompts: the prompt file (TSV/CSV/Parquet with a ``Prompt`` column).
        request_rate: requests per second (``math.inf``: all at once); ignored with ``trace``.
        burstiness: the gamma shape of the gaps (1 = Poisson).
        num_prompts: requests to send (default: 1000, or the trace's rows).
        max_concurrency: the most requests in flight, or None for no cap.
        trace: a trace file of arrival times (``time_s`` or ``timestamp``) and categories, or GenTD26's
            ``lora_request_trace.csv`` as published (:func:`genedge.optimizer.model.read_trace`).
        trace_replay: how ``trace`` is replayed (slice, time and rate scale, categories drawn, images per
            request), seeded by ``seed``; None: :class:`~genedge.optimizer.model.TraceReplay`'s defaults.
        seed: seeds the arrival times, the prompt order and each request's image seed.
        endpoint: a name of :data:`genedge.serve.loadtest_client.ENDPOINTS`: ``genedge``
            (``POST /v1/generate``) or ``openai`` (``POST /v1/images/generations``).
        send_categories: send each prompt's category (from its label under the table's mapping);
            False sends none and the server's prompt router places every request.
        timeout_s: the most one request may take, from sending to the whole body.
        save_images: keep every image as a PNG file.
        api_key: sent as ``Authorization: Bearer KEY`` to a server that requires a key (never written to
            the test's files, nor shown by ``repr``).
    """

    url: str
    prompts: Path
    request_rate: float = math.inf
    burstiness: float = 1.0
    num_prompts: int | None = None
    max_concurrency: int | None = None
    trace: Path | None = None
    trace_replay: TraceReplay | None = None
    seed: int = 0
    endpoint: str = "genedge"
    send_categories: bool = True
    timeout_s: float = 600.0
    save_images: bool = False
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # The client's endpoint registry imports this module's error: read it when checking, not at import.
        from genedge.serve.loadtest_client import ENDPOINTS

        if not self.url.startswith(("http://", "https://")):
            raise LoadTestError(f"URL: expected an http:// or https:// base URL, but got {self.url!r}")
        if not (self.request_rate > 0):  # also refuses NaN
            raise LoadTestError(f"--request-rate: expected requests per second > 0 or inf, but got {self.request_rate}")
        if not (self.burstiness > 0):
            raise LoadTestError(f"--burstiness: expected a gamma shape > 0 (1 = Poisson), but got {self.burstiness}")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise LoadTestError(f"--num-prompts: expected at least 1 request, but got {self.num_prompts}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise LoadTestError(f"--max-concurrency: expected at least 1, but got {self.max_concurrency}")
        if self.endpoint not in ENDPOINTS:
            raise LoadTestError(f"--endpoint: expected one of {list(ENDPOINTS)}, but got {self.endpoint!r}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise LoadTestError(f"--timeout-s: expected seconds > 0, but got {self.timeout_s}")

    @property
    def base_url(self) -> str:
        """The URL without a trailing slash."""
        return self.url.rstrip("/")
