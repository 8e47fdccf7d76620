r"""The system model: quality, FIFO delay and utility of a plan (DESIGN §3).

For routing probabilities p[c, m], steps s_m and compute shares r_m:

.. math::

    N_m = \sum_c p_{cm} n_c, \qquad
    t_m = \frac{o_m + \tau_m s_m}{r_m}, \qquad
    D_m = t_m \frac{N_m + 1}{2},

    U = \frac{1}{N} \sum_c \sum_m p_{cm} n_c \bigl(\mu_{mc}(s_m) - w D_m\bigr).

t_m is the service time of one image on model m's share (seconds), D_m the mean
response delay of the N_m requests served first-in first-out on it (the k-th
waits k·t_m), μ the mean CLIPScore (points) and w the weight in points per
second. U is in CLIPScore points; higher is better.

For fixed steps and routing the delay term Σ_m K_m / r_m with
K_m = (o_m + τ_m s_m) N_m (N_m + 1) / 2 is minimized under Σ r_m = R by
r_m = R √K_m / Σ_j √K_j, with minimum (Σ_m √K_m)² / R.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genedge.optimizer.problem import Problem

__all__ = [
    "BUDGET_RTOL",
    "DEPLOYED_MIN_REQUESTS",
    "ROW_SUM_TOL",
    "Evaluation",
    "deployed_mask",
    "evaluate",
    "fifo_delay_coefficient",
    "optimal_shares",
    "utility_with_optimal_shares",
    "fifo_delay_quantile",
]

#: Expected requests per planning window at or below which a model is not deployed: it gets no
#: compute share, holds no memory and adds no delay. Routings carry float residue far below one
#: request; this is where residue ends and traffic begins.
DEPLOYED_MIN_REQUESTS = 1e-9
#: Relative slack on Σ r_m ≤ R: shares computed as R·x / Σ x may sum to R plus round-off.
BUDGET_RTOL = 1e-9
#: Routing rows may drift from 1 by float round-off after many small moves; plans are read with the same slack.
ROW_SUM_TOL = 1e-6
# A routing probability this far below 0 is round-off, not a negative probability.
_NEGATIVE_PROBABILITY_TOL = 1e-12
# Expected loads within this of a whole number count as that whole number of requests.
_WHOLE_REQUEST_TOL = 1e-9
# Relative round-off allowed when a delay is compared with a multiple of a service time.
_DELAY_RTOL = 1e-12
# Relative distance below the bisection's end within which a request's delay is the quantile.
_SNAP_RTOL = 1e-9


def deployed_mask(loads: np.ndarray) -> np.ndarray:
    """Which models a plan deploys: expected requests N_m above :data:`DEPLOYED_MIN_REQUESTS`, shape (M,).

    This is the one definition of "deployed" (or "in use"): the system model, the planners, the
    plan file and the command line all decide it here.
    """
    return np.asarray(loads, dtype=float) > DEPLOYED_MIN_REQUESTS


@dataclass(frozen=True)
class Evaluation:
    """Predicted figures of one plan.

    Attributes:
        mean_quality: mean CLIPScore per request (points).
        mean_delay_s: mean response delay per request (s).
        p95_delay_s: 95th percentile of the per-request FIFO delays (s).
        utility: U = mean_quality − w · mean_delay_s (points).
        loads: requests per model N_m, shape (M,).
        service_s: service time per image on each model's share t_m (s), inf where unused.
        shortfall: P(score < θ) per category under the routing, shape (C,), where the
            problem has a quality floor θ; else None.
    """

    mean_quality: float
    mean_delay_s: float
    p95_delay_s: float
    utility: float
    loads: np.ndarray
    service_s: np.ndarray
    shortfall: np.ndarray | None = None


def fifo_delay_coefficient(full_share_s: np.ndarray | float, loads: np.ndarray | float) -> np.ndarray:
    """K_m = (o_m + τ_m s_m) · N_m (N_m + 1) / 2: total FIFO delay on model m is K_m / r_m (s · GPU)."""
    return full_share_s * loads * (loads + 1) / 2


def optimal_shares(full_share_s: np.ndarray, loads: np.ndarray, budget: float) -> np.ndarray:
    """Compute shares minimizing total FIFO delay for fixed steps and routing.

    Args:
        full_share_s: seconds per image on the whole device per model, o_m + τ_m·s_m, shape (..., M).
        loads: requests per model N_m, shape (..., M).
        budget: R, the total share to hand out.

    Returns:
        r_m = R √K_m / Σ_j √K_j with K_m = full_share_s · N_m (N_m + 1) / 2; models
        not deployed (:func:`deployed_mask`) get 0.
    """
    root = np.where(deployed_mask(loads), np.sqrt(fifo_delay_coefficient(full_share_s, loads)), 0.0)
    total = root.sum(axis=-1, keepdims=True)
    return np.divide(budget * root, total, out=np.zeros_like(root), where=total > 0)


def utility_with_optimal_shares(
    problem: Problem, requests: np.ndarray, full_share_s: np.ndarray, mean: np.ndarray
) -> np.ndarray:
    """Utility of request routings under optimal shares, vectorized over a batch.

    Args:
        problem: the problem (for n, R and w).
        requests: expected requests x[c, m] = p[c, m] n_c, shape (..., C, M).
        full_share_s: o_m + τ_m s_m, shape (M,).
        mean: μ[c, m] at the chosen steps, shape (C, M).

    Returns:
        U, shape (...): (Σ x μ − w (Σ_m √K_m)² / R) / N.
    """
    loads = requests.sum(axis=-2)
    quality = (requests * mean).sum(axis=(-2, -1))
    root = np.where(deployed_mask(loads), np.sqrt(fifo_delay_coefficient(full_share_s, loads)), 0.0)
    delay_total = root.sum(axis=-1) ** 2 / problem.budget
    return (quality - problem.weight * delay_total) / problem.n_requests


def fifo_delay_quantile(service_s: np.ndarray, loads: np.ndarray, q: float) -> float:
    """The q-quantile of per-request delays when model m serves N_m requests FIFO.

    The k-th request on model m waits k·t_m. Expected loads need not be whole
    numbers: the last, partial request of a model counts with its fraction. The
    quantile is found by bisection on the delay, so its cost does not grow with
    the number of requests.
    """
    used = deployed_mask(loads)  # as in evaluate: other models get no share and no requests
    t, n = service_s[used], loads[used]
    if t.size == 0:
        return 0.0
    whole = np.floor(n + _WHOLE_REQUEST_TOL)
    partial = n - whole  # weight of request number whole + 1

    def served_by(d: float) -> float:
        k = np.floor(d / t * (1 + _DELAY_RTOL))
        return float(np.minimum(k, whole).sum() + np.where(k > whole, partial, 0.0).sum())

    target = q * float(n.sum())
    lo, hi = 0.0, float((t * np.ceil(n - _WHOLE_REQUEST_TOL)).max())
    for _ in range(200):  # the interval halves each time: 200 halvings pass any float's precision
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if served_by(mid) >= target - _WHOLE_REQUEST_TOL:
            hi = mid
        else:
            lo = mid
    # hi sits just above the delay where the target is reached; snap it to that request's delay.
    candidates = np.ceil(hi / t * (1 - _DELAY_RTOL)) * t
    return float(candidates[candidates >= hi * (1 - _SNAP_RTOL)].min())


def evaluate(problem: Problem, routing: np.ndarray, step_index: Sequence[int], shares: np.ndarray) -> Evaluation:
    """Predict quality, delay and utility of a plan.

    Args:
        problem: the problem.
        routing: p[c, m], rows summing to 1, shape (C, M).
        step_index: index into each model's step grid, length M.
        shares: r_m ≥ 0 with Σ r_m ≤ R, shape (M,).

    Raises:
        ValueError: routing rows do not sum to 1, shares are negative or exceed the
            budget, a model with requests has no share, or the models in use do not
            fit in memory.
    """
    routing = np.asarray(routing, dtype=float)
    shares = np.asarray(shares, dtype=float)
    m = len(problem.models)
    if routing.shape != (len(problem.categories), m):
        raise ValueError(f"Expected routing of shape {(len(problem.categories), m)}, but got {routing.shape}")
    if (
        not np.isfinite(routing).all()
        or (routing < -_NEGATIVE_PROBABILITY_TOL).any()
        or np.abs(routing.sum(axis=1) - 1).max() > ROW_SUM_TOL
    ):
        raise ValueError(
            f"Expected routing rows of non-negative probabilities summing to 1, "
            f"but got row sums {routing.sum(axis=1).round(6).tolist()}"
        )
    if (
        shares.shape != (m,)
        or not np.isfinite(shares).all()
        or (shares < 0).any()
        or shares.sum() > problem.budget * (1 + BUDGET_RTOL)
    ):
        raise ValueError(f"Expected {m} shares >= 0 summing to at most {problem.budget}, but got {shares.tolist()}")
    loads = problem.counts @ routing
    in_use = deployed_mask(loads)
    starved = [k for k, used, r in zip(problem.models, in_use, shares) if used and r <= 0]
    if starved:
        raise ValueError(f"models {starved} receive requests but no compute share")
    if not problem.fits_in_memory(in_use):
        raise ValueError(
            f"models in use {[k for k, u in zip(problem.models, in_use) if u]} do not fit in "
            f"{problem.device_memory_bytes / 2**30:.2f} GiB of device memory"
        )
    full = problem.service_at(step_index)
    service = np.divide(full, shares, out=np.full(m, np.inf), where=in_use)
    n = problem.n_requests
    mean_quality = float((problem.counts[:, None] * routing * problem.mean_at(step_index)).sum() / n)
    delay_sum = float(fifo_delay_coefficient(np.where(in_use, service, 0.0), loads).sum())
    mean_delay = delay_sum / n
    floor = problem.shortfall_at(step_index)
    return Evaluation(
        mean_quality=mean_quality,
        mean_delay_s=mean_delay,
        p95_delay_s=fifo_delay_quantile(service, loads, 0.95),
        utility=mean_quality - problem.weight * mean_delay,
        loads=loads,
        service_s=service,
        shortfall=None if floor is None else (routing * floor).sum(axis=1),
    )
