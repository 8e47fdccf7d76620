"""How many images a request asks for: the law the open-arrival queues see (DESIGN §3.2).

A request for k images is served as k one-image calls on the model its category is routed to, queued
together. Under open arrivals a model then sees Poisson *requests*, each bringing a random number X of
images: the M^X/D/1 queue of :mod:`~genedge.optimizer.model._queueing`, whose waits are longer than the
M/D/1 queue's at the same image rate (a request's last image waits behind its first ones). Demand
(λ_c, a model's load) is counted in images throughout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["ONE_IMAGE", "ImagesPerRequest"]

# The probabilities given must sum to 1 within this (they are then normalized).
_SUM_TOL = 1e-6
# Decimals a probability is held to.
_DIGITS = 12


@dataclass(frozen=True)
class ImagesPerRequest:
    """The law of X, the images one request asks for: ``pmf[k − 1]`` = P(X = k), k = 1..K.

    Attributes:
        pmf: probabilities of 1, 2, …, K images; nonnegative, summing to 1 (normalized, then held to 12
            decimals), the last one > 0.
    """

    pmf: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        values = np.asarray(self.pmf, dtype=float)
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"Expected probabilities of 1, 2, … images per request, but got {self.pmf!r}")
        if not np.isfinite(values).all() or (values < 0).any() or values[-1] <= 0:
            raise ValueError(
                f"Expected finite probabilities ≥ 0 of 1, 2, … images, the largest count's > 0, but got {self.pmf!r}"
            )
        if abs(float(values.sum()) - 1) > _SUM_TOL:
            raise ValueError(f"Expected probabilities of images per request summing to 1, but got {values.sum():.6g}")
        # Normalized, then held to _DIGITS decimals: the same law read back from a plan is equal to itself.
        object.__setattr__(self, "pmf", tuple(round(float(v), _DIGITS) for v in values / values.sum()))

    @classmethod
    def from_weights(cls, weights: Mapping[int, float]) -> ImagesPerRequest:
        """The law of images per request proportional to ``weights`` (images → weight, e.g. request counts).

        Raises:
            ValueError: a count of images that is not a whole number ≥ 1, a weight < 0 or not finite, or no
                weight > 0.
        """
        if not weights:
            raise ValueError("Expected at least one count of images per request, but got none")
        for k, w in weights.items():
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValueError(f"Expected images per request as whole numbers ≥ 1, but got {k!r}")
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"Expected a weight ≥ 0 for {k} images per request, but got {w!r}")
        total = float(sum(weights.values()))
        if total <= 0:
            raise ValueError("Expected some weight > 0 among the images per request, but all are 0")
        largest = max(k for k, w in weights.items() if w > 0)
        return cls(tuple(weights.get(k, 0.0) / total for k in range(1, largest + 1)))

    @classmethod
    def parse(cls, text: str) -> ImagesPerRequest:
        """``"1:0.6,2:0.2,4:0.15,8:0.05"`` (images:weight, weights normalized) or ``"4"`` (always 4 images).

        Raises:
            ValueError: the text is neither form (the message quotes it).
        """
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            if len(parts) == 1 and ":" not in parts[0]:
                return cls.from_weights({int(parts[0]): 1.0})
            pairs = [p.split(":") for p in parts]
            return cls.from_weights({int(k): float(w) for k, w in pairs})
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"Expected images per request as IMAGES:WEIGHT,… (e.g. 1:0.6,2:0.2,4:0.2) or one whole number, "
                f"but got {text!r} ({error})"
            ) from None

    @property
    def single(self) -> bool:
        """Every request asks for one image (the M/D/1 model)."""
        return len(self.pmf) == 1

    @property
    def mean(self) -> float:
        """E[X]."""
        return float(np.dot(np.arange(1, len(self.pmf) + 1), self.pmf))

    @property
    def second_moment(self) -> float:
        """E[X²]."""
        return float(np.dot(np.arange(1, len(self.pmf) + 1) ** 2, self.pmf))

    def array(self) -> np.ndarray:
        """P(X = k), k = 1..K, as a float array."""
        return np.asarray(self.pmf, dtype=float)

    def to_document(self) -> dict[str, float]:
        """``{"1": P(X = 1), …}`` for the counts with P > 0: the plan file's form."""
        return {str(k): p for k, p in enumerate(self.pmf, start=1) if p > 0}

    @classmethod
    def from_document(cls, document: Mapping[str, float]) -> ImagesPerRequest:
        """The inverse of :meth:`to_document` (keys are decimal image counts)."""
        try:
            weights = {int(k): float(v) for k, v in document.items()}
        except (TypeError, ValueError):
            raise ValueError(f"Expected images per request as {{count: probability}}, but got {document!r}") from None
        return cls.from_weights(weights)

    def describe(self) -> str:
        """``"1 image"`` or ``"1:0.60, 2:0.20, 4:0.20 images (mean 2.0)"``."""
        if self.single:
            return "1 image"
        spread = ", ".join(f"{k}:{p:.2f}" for k, p in self.to_document().items())
        return f"{spread} images (mean {self.mean:.2f})"


#: One image per every request: the open-arrival queues are M/D/1.
ONE_IMAGE = ImagesPerRequest()
