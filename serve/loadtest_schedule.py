"""A load test's arrival schedule: every request's time, prompt, category and seed, and the demand offered.

The schedule is a pure function of the configuration: arrival times from
:func:`genedge.optimizer.model.poisson_arrivals` / :func:`~genedge.optimizer.model.gamma_arrivals`
(seeded), then the prompts drawn as vLLM draws a custom dataset: shuffled with the same seed and taken
in that order (cycling past the end, so no prompt repeats before every one is used). A ``trace``
replaces the drawn times by recorded ones (replayed by :func:`genedge.optimizer.model.read_trace`, as
``genedge simulate --trace`` replays them), and its categories choose the prompts. A trace request of k images
is k one-image requests at its time (``TraceReplay.images``), each with a prompt of its category: the genedge
route generates one image per request, and the load test records one image per request.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from genedge.contract.files import ArtifactError
from genedge.serve.loadtest_document import ScheduleSummary

if TYPE_CHECKING:
    from genedge.contract.prompts import PromptTable
    from genedge.contract.table import CalibrationTable
    from genedge.optimizer.plan_file import PlanDocument
    from genedge.serve.loadtest_config import LoadConfig

__all__ = ["Schedule", "ScheduledRequest", "build_schedule"]

logger = logging.getLogger(__name__)

#: Requests of a drawn schedule when the configuration names no number.
_DEFAULT_REQUESTS = 1000


@dataclass(frozen=True)
class ScheduledRequest:
    """One request of the schedule.

    Attributes:
        index: position in the schedule (0-based).
        time_s: when to send it, in seconds from the schedule's origin.
        prompt: the prompt text.
        category: the category sent with it, or None (the server's router decides).
        label_category: the prompt's category by its label under the table's mapping, or None.
        seed: the image seed sent (``genedge`` endpoint; the OpenAI route takes none).
    """

    index: int
    time_s: float
    prompt: str
    category: str | None
    label_category: str | None
    seed: int


@dataclass(frozen=True)
class Schedule:
    """Every request of a load test, and the demand it offers the plan.

    Attributes:
        requests: the requests in the order of their times.
        arrivals: ``open`` (requests over time) or ``window`` (all at once: ``request_rate`` inf, or one request).
        duration_s: the time of the last request (the span the rates are measured over).
        demand: category → offered rate (requests/s) under ``open``, or requests under ``window``; requests
            sent without a category are spread over the plan's categories in its planned mix.
        unplaced: requests sent without a category.
    """

    requests: tuple[ScheduledRequest, ...]
    arrivals: str
    duration_s: float
    demand: Mapping[str, float]
    unplaced: int

    def summary(self) -> ScheduleSummary:
        """What the result's manifest records of the schedule."""
        return ScheduleSummary(self.arrivals, self.duration_s, dict(self.demand), len(self.requests), self.unplaced)


def _request_seed(seed: int, index: int) -> int:
    """The image seed of request ``index``: distinct per request, the same on every run of a seed."""
    digest = hashlib.sha256(f"genedge.loadtest:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:7], "big")  # < 2**56, within the contract's [0, 2**63)


def _prompt_rows(prompts: PromptTable) -> list[str]:
    from genedge.contract.prompts import PROMPT_COLUMN

    texts = prompts.column(PROMPT_COLUMN)
    if not texts:
        raise ArtifactError(prompts.source, "rows", "expected at least one prompt after the header, but got none")
    empty = [i for i, text in enumerate(texts) if not text.strip()]
    if empty:
        raise ArtifactError(
            prompts.source,
            PROMPT_COLUMN,
            f"expected a prompt on every row, but {len(empty)} rows are empty (the first is row {empty[0] + 1})",
        )
    return texts


def _labels(prompts: PromptTable, table: CalibrationTable, planned: Sequence[str]) -> list[str | None]:
    """Each row's category by its label under the table's mapping (None: no label column, or an unknown label)."""
    from genedge.contract.mappings import label_to_category

    mapping = table.category_mapping
    if mapping["column"] not in prompts.columns:
        return [None] * len(prompts.rows)
    categories = label_to_category(mapping)
    labels = [categories.get(label) for label in prompts.column(mapping["column"])]
    unplanned = sorted({c for c in labels if c is not None and c not in planned})
    if unplanned:
        logger.warning(
            "%s: categories %s are not in the plan (it routes %s); their prompts go without a category",
            prompts.source,
            unplanned,
            list(planned),
        )
    return [c if c in planned else None for c in labels]


def _cycle(order: np.ndarray, n: int) -> np.ndarray:
    return np.resize(order, n)  # repeats the order to length n


def _traced(
    config: LoadConfig,
    table: CalibrationTable,
    planned: list[str],
    labels: list[str | None],
    n_texts: int,
    gen: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """A trace's times and categories, replayed as ``config.trace_replay`` says with ``config.seed`` (as
    ``genedge simulate --trace`` replays it); each category's requests take the prompts labelled with it (any
    prompt where none is)."""
    from genedge.optimizer.model import read_trace

    trace = read_trace(
        config.trace, mapping=table.category_mapping, categories=planned, replay=config.trace_replay, rng=config.seed
    )
    num_prompts = config.num_prompts
    n = len(trace) if num_prompts is None else min(num_prompts, len(trace))
    times = np.asarray(trace.times_s[:n], dtype=float)
    wanted = [trace.categories[i] for i in trace.category[:n]]
    by_category = {c: np.flatnonzero([label == c for label in labels]) for c in set(wanted)}
    everything = gen.permutation(n_texts)
    rows = np.empty(n, dtype=int)
    for category in sorted(set(wanted)):
        at = [i for i, c in enumerate(wanted) if c == category]
        pool = by_category[category] if by_category[category].size else everything
        rows[at] = _cycle(gen.permutation(pool), len(at))
    return times, rows, list(wanted)


def _drawn(
    config: LoadConfig, labels: list[str | None], n_texts: int, gen: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Drawn times (Poisson, or gamma gaps of the burstiness) and the prompts in a shuffled cycle."""
    from genedge.optimizer.model import gamma_arrivals, poisson_arrivals

    n = _DEFAULT_REQUESTS if config.num_prompts is None else config.num_prompts
    if math.isinf(config.request_rate):
        times = np.zeros(n)
    elif config.burstiness == 1:
        times = poisson_arrivals({"all": config.request_rate}, n_requests=n, rng=gen).times_s
    else:
        times = gamma_arrivals(
            {"all": config.request_rate}, burstiness=config.burstiness, n_requests=n, rng=gen
        ).times_s
    rows = _cycle(gen.permutation(n_texts), n)
    return times, rows, [labels[r] for r in rows]


def _demand(
    plan: PlanDocument, sent: Sequence[str | None], timed: bool, duration: float
) -> tuple[dict[str, float], int]:
    """The demand offered per category (rates when ``timed``, else counts), and the requests sent without a
    category (spread in the plan's mix)."""
    from genedge.optimizer.model import Workload
    from genedge.serve.predict import plan_rates

    counts: dict[str, float] = {c: 0.0 for c in plan.routing}
    for category in sent:
        if category is not None:
            counts[category] += 1
    unplaced = sum(c is None for c in sent)
    if unplaced and timed:
        for category, share in plan_rates(plan, 1.0).items():
            counts[category] += unplaced * share
    elif unplaced:  # a window counts whole requests: split in the plan's mix by largest remainder
        for category, count in Workload.from_mix(plan.inputs.workload, unplaced).counts.items():
            counts[category] += count
    demand = {c: (v / duration if timed else v) for c, v in counts.items() if v > 0}
    return demand, unplaced


def build_schedule(config: LoadConfig, prompts: PromptTable, plan: PlanDocument, table: CalibrationTable) -> Schedule:
    """Every request of a load test, a pure function of the configuration and the files.

    Raises:
        ArtifactError: a prompt file without a ``Prompt`` column or prompts, or a trace naming a category
            the plan does not route (naming the file and column).
    """
    from genedge.optimizer.model import OPEN, WINDOW

    texts = _prompt_rows(prompts)
    planned = list(plan.routing)
    labels = _labels(prompts, table, planned)
    gen = np.random.default_rng(config.seed)
    if config.trace is not None:
        times, rows, categories = _traced(config, table, planned, labels, len(texts), gen)
    else:
        times, rows, categories = _drawn(config, labels, len(texts), gen)
    sent = [c if config.send_categories else None for c in categories]
    n = len(rows)
    requests = tuple(
        ScheduledRequest(
            index=i,
            time_s=float(times[i]),
            prompt=texts[rows[i]],
            category=sent[i],
            label_category=labels[rows[i]],
            seed=_request_seed(config.seed, i),
        )
        for i in range(n)
    )
    duration = float(times[-1]) if n else 0.0
    timed = duration > 0 and n > 1  # requests spread over time arrive as rates; else all at once, a window
    demand, unplaced = _demand(plan, sent, timed, duration)
    return Schedule(requests, (OPEN if timed else WINDOW).name, duration, demand, unplaced)
