"""Workloads: requests per prompt category, in one planning window or per second."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

__all__ = ["DEFAULT_MIX", "DEFAULT_REQUESTS", "Workload", "default_mix", "workload_from_options"]

# PartiPrompts' prompts per category of the paper's mapping (DESIGN §2.1).
DEFAULT_MIX = {"Basic": 272, "Detail": 544, "Imagination": 150, "Complex": 113}
#: Requests per planning window when no workload is given.
DEFAULT_REQUESTS = 100


@dataclass(frozen=True)
class Workload:
    """Requests per prompt category: in one planning window, or per second.

    Attributes:
        counts: category → number of requests per window (whole numbers ≥ 0), or, with
            ``per_second``, arrival rate λ_c in requests per second (≥ 0); at least one > 0.
        per_second: whether ``counts`` are rates (the open-arrival delay model plans for them).
        composition: what the requests served as each category truly are: served category →
            {true category: share}, shares summing to 1; None (the default) when every request is
            served as its own category. A prompt router's errors make it otherwise: the requests it
            routes to category c are a mixture of true categories, and score as that mixture.
    """

    counts: Mapping[str, float]
    per_second: bool = False
    composition: Mapping[str, Mapping[str, float]] | None = None

    def __post_init__(self) -> None:
        if not self.counts:
            raise ValueError("Expected at least one category in the workload, but got none")
        for category, count in self.counts.items():
            if not isinstance(category, str) or not category.strip():
                raise ValueError(f"Expected category names, but got {category!r}")
            if not isinstance(count, (int, float)) or isinstance(count, bool) or not math.isfinite(count) or count < 0:
                raise ValueError(f"Expected a request count >= 0 for category {category!r}, but got {count!r}")
            if not self.per_second and not float(count).is_integer():
                raise ValueError(f"Expected a whole number of requests for category {category!r}, but got {count!r}")
        if sum(self.counts.values()) <= 0:
            raise ValueError(f"Expected at least one request in the workload, but got {dict(self.counts)}")
        if self.composition is not None:
            self._check_composition()

    def _check_composition(self) -> None:
        for served, shares in self.composition.items():
            if served not in self.counts:
                raise ValueError(f"composition: category {served!r} is not among the workload's {list(self.counts)}")
            values = list(shares.values())
            if not values or any(not (math.isfinite(v) and v >= 0) for v in values) or abs(sum(values) - 1) > 1e-9:
                raise ValueError(
                    f"composition: expected shares >= 0 summing to 1 for category {served!r}, but got {dict(shares)}"
                )

    def by_true_category(self) -> Workload:
        """The same requests counted by their true category, each served as its own (no composition).

        Rates move exactly; counts per window are rounded to whole requests with the total kept
        (largest remainder, as :meth:`from_mix`).
        """
        if self.composition is None:
            return self
        truth: dict[str, float] = {}
        for served, n in self.counts.items():
            for true, share in self.true_shares(served).items():
                truth[true] = truth.get(true, 0.0) + n * share
        if self.per_second:
            return Workload.from_rates(truth)
        return Workload.from_mix(truth, round(sum(self.counts.values())))

    def true_shares(self, served: str) -> Mapping[str, float]:
        """What the requests served as category ``served`` truly are: {true category: share}."""
        if self.composition is None or served not in self.composition:
            return {served: 1.0}
        return self.composition[served]

    @classmethod
    def from_rates(
        cls, rates: Mapping[str, float], composition: Mapping[str, Mapping[str, float]] | None = None
    ) -> Workload:
        """Build a workload of arrival rates ``{category: requests per second}``."""
        return cls(counts=dict(rates), per_second=True, composition=composition)

    def as_rates(self, window_s: float) -> Workload:
        """The same demand as rates: N requests per window of ``window_s`` seconds is N / window_s per second."""
        if self.per_second:
            return self
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"Expected a window length > 0 seconds, but got {window_s}")
        return Workload.from_rates({c: n / window_s for c, n in self.counts.items()}, self.composition)

    @classmethod
    def from_counts(cls, counts: Mapping[str, float]) -> Workload:
        """Build a workload from ``{category: count}``."""
        return cls(counts=dict(counts))

    @classmethod
    def from_mix(cls, mix: Mapping[str, float], total: int) -> Workload:
        """Split ``total`` requests over categories in proportion to ``mix``, as integers.

        Uses largest-remainder rounding, so the counts add up to ``total`` exactly.
        """
        if total <= 0:
            raise ValueError(f"Expected a total number of requests > 0, but got {total}")
        names = list(mix)
        weights = np.array([mix[n] for n in names], dtype=float)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"Expected non-negative category weights with a positive sum, but got {dict(mix)}")
        exact = weights / weights.sum() * total
        counts = np.floor(exact).astype(int)
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[: total - counts.sum()]] += 1
        return cls(counts={n: int(c) for n, c in zip(names, counts)})

    def scaled(self, total: int) -> Workload:
        """The same category mix with ``total`` requests."""
        if self.per_second:
            raise ValueError("Expected a workload of counts to scale, but this one gives rates")
        return replace(Workload.from_mix(self.counts, total), composition=self.composition)

    def sha256(self) -> str:
        """Hash of the workload, written into plans to identify their inputs."""
        document: dict[str, Any] = dict(self.counts)
        if self.per_second:  # counts keep their old hash; rates are told apart from counts
            document = {"per_second": document}
        if self.composition is not None:
            document = {"counts": document, "composition": self.composition}
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def default_mix(categories: Sequence[str]) -> dict[str, float]:
    """PartiPrompts' category proportions (:data:`DEFAULT_MIX`) over ``categories`` (1 each for others)."""
    return {c: DEFAULT_MIX.get(c, 1) for c in categories}


def workload_from_options(
    categories: Sequence[str],
    *,
    counts: Mapping[str, float] | None = None,
    prompts: Workload | None = None,
    requests: int = DEFAULT_REQUESTS,
    rates: Mapping[str, float] | None = None,
    rate: float | None = None,
    arrivals: str | None = None,
    window_s: float | None = None,
) -> Workload:
    """The workload ``genedge plan`` builds from its options, for a table's ``categories``.

    Demand is given one way, first match wins: ``rates`` (requests/s per category, e.g. an arrival
    trace's :meth:`~genedge.optimizer.model.Arrivals.rates`); ``rate`` (a total in requests/s,
    split in the mix of ``prompts`` if given, else PartiPrompts' mix); ``counts`` (requests per
    window); ``prompts`` (a prompt file's counted workload, see
    :func:`genedge.router.count_routed`); else ``requests`` requests in PartiPrompts' mix.

    Args:
        categories: the calibration table's categories (the default mix is over them).
        counts: requests per category in one window.
        prompts: a prompt file's workload, with its router's composition where it has one.
        requests: the number of requests in PartiPrompts' mix when nothing else is given.
        rates: arrival rates per category (requests/s).
        rate: a total arrival rate (requests/s).
        arrivals: the delay model, ``"window"`` or ``"open"``; None: ``"open"`` when rates are given,
            else ``"window"`` (the model :func:`genedge.optimizer.inputs.problem_from_options` then
            takes from the workload).
        window_s: with open arrivals and counts, the window length (s) that turns N requests per
            window into the rate N / window_s.

    Raises:
        ValueError: a rate that is not > 0; rates under the window model; open arrivals with counts
            but no ``window_s``. Messages name the ``genedge plan`` options these come from.

    Example:
        >>> w = workload_from_options(["Basic", "Detail"], rate=0.3)
        >>> round(w.counts["Detail"], 3), w.per_second
        (0.2, True)
    """
    from genedge.optimizer.model._delay import arrival_model

    given = _rates(categories, prompts, rates, rate)
    per_second = given is not None if arrivals is None else arrival_model(arrivals).per_second
    if given is not None:
        if not per_second:
            raise ValueError("--rates, --rate and --trace give requests per second: plan them with --arrivals open")
        return given
    workload = _counts(categories, counts, prompts, requests)
    if per_second:
        if window_s is None:
            raise ValueError(
                "--arrivals open needs rates: give --rates, --rate or --trace, or --window-s SECONDS to turn the "
                "workload's requests per window into a rate"
            )
        return workload.as_rates(window_s)
    return workload


def _rates(
    categories: Sequence[str], prompts: Workload | None, rates: Mapping[str, float] | None, rate: float | None
) -> Workload | None:
    """Rates from ``rates`` or ``rate``, where given."""
    if rates is not None:
        return Workload.from_rates(rates)
    if rate is None:
        return None
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"--rate: expected requests per second > 0, but got {rate:g}")
    weights = prompts.counts if prompts is not None else default_mix(categories)
    total = sum(weights.values())
    split = {c: rate * n / total for c, n in weights.items()}
    return Workload.from_rates(split, None if prompts is None else prompts.composition)


def _counts(
    categories: Sequence[str], counts: Mapping[str, float] | None, prompts: Workload | None, requests: int
) -> Workload:
    """Counts per window from ``counts``, ``prompts`` or ``requests``."""
    if counts is not None:
        return Workload.from_counts(counts)
    if prompts is not None:
        return prompts
    return Workload.from_mix(default_mix(categories), requests)
