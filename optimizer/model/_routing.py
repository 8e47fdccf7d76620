r"""Realizing routing probabilities p[c, m]: which model serves each request.

A plan's routing matrix gives, per category c, the fraction p[c, m] of its requests that model m
serves. :class:`Router` realizes it either deterministically, with one smooth weighted round robin
per category (the planned loads then hold within about one request in every prefix of the
sequence), or by independent draws (each model's count is then Binomial(n_c, p[c, m]), and that
variance enters every delay model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from genedge.optimizer.model._delay import REALIZATIONS

__all__ = ["ROW_SUM_TOL", "Realization", "Router", "SmoothWeightedRoundRobin"]

#: Routing rows may drift from 1 by float round-off after many small moves; plans are read with the same slack.
ROW_SUM_TOL = 1e-6

Realization = Literal["deterministic", "random"]


def _check_weights(weights: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    values = np.array(weights, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"Expected a non-empty 1-D list of {what}, but got shape {values.shape}")
    if not np.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
        raise ValueError(f"Expected finite {what} >= 0 with a positive sum, but got {values.tolist()}")
    return values


class SmoothWeightedRoundRobin:
    r"""nginx's smooth weighted round robin over float weights: deterministic, interleaved picks.

    Each index i keeps a current weight c_i (initially 0). A pick adds every weight w_i to its c_i,
    chooses the index with the largest c_i (the lowest index on a tie) and subtracts the total
    W = Σ_i w_i from it. With p_i = w_i / W, let d_i(n) = (picks of i among the first n) − n·p_i.
    Then c_i = −W·d_i(n) and Σ_i c_i = 0 after every pick, and for every prefix n, with K the number
    of positive weights:

    .. math:: -\frac{(K-1)^2}{K} \le d_i(n) \le 1 - \frac{1}{K}.

    The upper bound holds because the chosen c_i is at least the mean W/K before W is subtracted;
    the lower bound because the others are then each above −W(1 − 1/K) and all sum to 0. For K = 2
    this is |d_i(n)| ≤ 1/2. For larger K an index can fall slightly more than one pick behind
    (searching random weights found d_i(n) ≈ −1.17 at K = 6); it is never more than 1 − 1/K ahead.
    With integer weights the sequence repeats every W picks, giving exactly w_i picks to i per
    period. An index of weight 0 is never picked.

    Args:
        weights: non-negative finite weights (probabilities or integers) with a positive sum.

    Raises:
        ValueError: empty, negative or non-finite weights, or a zero sum.

    Example:
        >>> swrr = SmoothWeightedRoundRobin([5, 1, 1])
        >>> [swrr.pick() for _ in range(7)]
        [0, 0, 1, 0, 2, 0, 0]
    """

    def __init__(self, weights: Sequence[float] | np.ndarray) -> None:
        values = _check_weights(weights, "weights")
        self.weights: tuple[float, ...] = tuple(float(w) for w in values)
        self._active = [int(i) for i in np.flatnonzero(values > 0)]
        self._weights = [float(values[i]) for i in self._active]
        self._current = [0.0] * len(self._active)
        self._total = float(sum(self._weights))

    def pick(self) -> int:
        """The next index."""
        return self._advance(1)[0]

    def picks(self, n: int) -> np.ndarray:
        """The next ``n`` indices, as ``n`` calls of :meth:`pick` would return them (int64 array)."""
        if n < 0:
            raise ValueError(f"Expected a number of picks >= 0, but got {n}")
        return np.array(self._advance(n), dtype=np.int64)

    def _advance(self, n: int) -> list[int]:
        active = self._active
        if len(active) == 1:
            return [active[0]] * n
        current, weights, total = self._current, self._weights, self._total
        k = len(weights)
        out = [0] * n
        for step in range(n):
            best, best_value = 0, current[0] + weights[0]
            current[0] = best_value
            for j in range(1, k):
                value = current[j] + weights[j]
                current[j] = value
                if value > best_value:
                    best, best_value = j, value
            current[best] = best_value - total
            out[step] = active[best]
        return out


class Router:
    """Route requests of each category to models with a plan's routing matrix.

    Args:
        routing_matrix: p[c, m] ≥ 0, shape (categories, models), each row summing to 1.
        realization: ``"deterministic"`` (one :class:`SmoothWeightedRoundRobin` per category: exact
            fractions, up to the bounds stated there, in every prefix of each category's requests) or
            ``"random"`` (each request draws its model independently with probabilities p[c, ·]).
        rng: a seed or generator, used by ``"random"`` only.

    Raises:
        ValueError: a matrix that is not 2-D, has negative or non-finite entries, or a row that does
            not sum to 1; an unknown realization.

    Example:
        >>> router = Router([[0.5, 0.5], [0.0, 1.0]])
        >>> router.route_all([0, 0, 1, 0]).tolist()
        [0, 1, 1, 0]
    """

    def __init__(
        self,
        routing_matrix: Sequence[Sequence[float]] | np.ndarray,
        *,
        realization: Realization = "deterministic",
        rng: int | np.random.Generator | None = None,
    ) -> None:
        matrix = np.array(routing_matrix, dtype=float)
        if matrix.ndim != 2 or 0 in matrix.shape:
            raise ValueError(f"Expected a 2-D routing matrix (categories × models), but got shape {matrix.shape}")
        if not np.isfinite(matrix).all() or (matrix < 0).any():
            raise ValueError("Expected finite routing probabilities >= 0")
        sums = matrix.sum(axis=1)
        off = np.abs(sums - 1) > ROW_SUM_TOL
        if off.any():
            row = int(np.argmax(off))
            raise ValueError(f"Expected each routing row to sum to 1, but row {row} sums to {sums[row]}")
        if realization not in REALIZATIONS:
            raise ValueError(f"Expected realization in {list(REALIZATIONS)}, but got {realization!r}")
        self.routing_matrix = matrix / sums[:, None]
        self.routing_matrix.setflags(write=False)
        self.realization = realization
        self._rng = np.random.default_rng(rng)
        self._cumulative = np.cumsum(self.routing_matrix, axis=1)
        self._rounds = [SmoothWeightedRoundRobin(row) for row in self.routing_matrix]
        self._route = {"deterministic": self._round_robin, "random": self._draw}[realization]

    @property
    def n_categories(self) -> int:
        """Rows of the routing matrix."""
        return int(self.routing_matrix.shape[0])

    @property
    def n_models(self) -> int:
        """Columns of the routing matrix."""
        return int(self.routing_matrix.shape[1])

    def _check_categories(self, categories: np.ndarray) -> None:
        if categories.size and (categories.min() < 0 or categories.max() >= self.n_categories):
            raise ValueError(
                f"Expected category indices in [0, {self.n_categories}), but got {categories.min()}..{categories.max()}"
            )

    def route(self, category: int) -> int:
        """The model serving the next request of ``category`` (an index)."""
        return int(self.route_all(np.array([category]))[0])

    def route_all(self, categories: Sequence[int] | np.ndarray) -> np.ndarray:
        """Models for a sequence of requests, in order; the same as calling :meth:`route` on each.

        Args:
            categories: category index of each request.

        Returns:
            The model index of each request (int64 array).
        """
        categories = np.asarray(categories)
        if categories.ndim != 1 or (categories.size and not np.issubdtype(categories.dtype, np.integer)):
            raise ValueError(f"Expected a 1-D sequence of category indices, but got {categories!r:.60}")
        self._check_categories(categories)
        return self._route(categories)

    def _draw(self, categories: np.ndarray) -> np.ndarray:
        """Each request's model drawn independently with probabilities p[c, ·]."""
        draws = self._rng.random(categories.size)
        models = (draws[:, None] >= self._cumulative[categories]).sum(axis=1)
        # a draw above a row's rounded total falls back to the last model with positive probability
        last = self.n_models - 1 - np.argmax(self.routing_matrix[:, ::-1] > 0, axis=1)
        return np.minimum(models, last[categories]).astype(np.int64)

    def _round_robin(self, categories: np.ndarray) -> np.ndarray:
        """Each category's requests in turn by its smooth weighted round robin."""
        models = np.empty(categories.size, dtype=np.int64)
        for c in np.unique(categories):
            where = np.flatnonzero(categories == c)
            models[where] = self._rounds[int(c)].picks(where.size)
        return models
