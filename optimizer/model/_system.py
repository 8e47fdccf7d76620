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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from genedge.optimizer.model._delay import (
    DelayFigures,
    DelayModel,
    GroupDelay,
    deployed_mask,
    fifo_delay_coefficient,
)
from genedge.optimizer.model._problem import Problem
from genedge.optimizer.model._routing import ROW_SUM_TOL

__all__ = [
    "BUDGET_RTOL",
    "Evaluation",
    "GroupFigures",
    "evaluate",
    "optimal_shares",
    "utility_with_optimal_shares",
]

#: Relative slack on Σ r_m ≤ R: shares computed as R·x / Σ x may sum to R plus round-off.
BUDGET_RTOL = 1e-9
# A routing probability this far below 0 is round-off, not a negative probability.
_NEGATIVE_PROBABILITY_TOL = 1e-12
# Attainment this far below the target still meets it (the figures come from bisections and sums).
_ATTAINMENT_TOL = 1e-9


@dataclass(frozen=True)
class GroupFigures:
    """Predicted figures of one group of a plan's requests: all of them, one model's, or one category's.

    Attributes:
        demand: the group's requests (per window, or per second under open arrivals).
        mean_delay_s: mean delay (s); inf where a queue the group uses is unstable.
        p95_delay_s / p99_delay_s: 95th / 99th percentile of the delay (s); inf only where the
            requests of unstable queues reach past it.
        attainment: P(delay ≤ SLO), where the problem has an SLO; else None.
        mean_quality: mean CLIPScore of the group's images (points).
    """

    demand: float
    mean_delay_s: float
    p95_delay_s: float
    p99_delay_s: float
    attainment: float | None
    mean_quality: float


@dataclass(frozen=True)
class Evaluation:
    """Predicted figures of one plan.

    Attributes:
        mean_quality: mean CLIPScore per request (points).
        mean_delay_s: mean delay per request under the problem's delay model (s); inf when a
            deployed queue is unstable.
        p95_delay_s / p99_delay_s: 95th / 99th percentile of the delays (s).
        utility: U = mean_quality − w · mean_delay_s − κ · mean_energy_j (points); −inf when unstable.
        loads: requests per model N_m (per window, or per second under open arrivals), shape (M,).
        service_s: time of one call (a batch of up to b_m images) on each model's share (s), inf where unused.
        shortfall: P(score < θ) per category under the routing, shape (C,), where the
            problem has a quality floor θ; else None.
        attainment: P(delay ≤ SLO) over all requests, where the problem has an SLO.
        category_attainment: P(delay ≤ SLO) per category, shape (C,), where it has one.
        mean_energy_j: mean energy per image (J), where the table carries energy.
        utilization: ρ_m per model under open arrivals, shape (M,); else None.
        stable: every deployed queue is stable (always True for a window).
        feasible: stable, and the SLO is met where there is one.
        max_batch: the batch size b_m each model runs, shape (M,).
        mg1_mean_delay_s: the M/G/1 (Pollaczek–Khinchine) mean beside the M/D/1 one, where the
            table gives the spread of per-image latency (open arrivals, no batching).
        overall: the figures of all requests, where asked for (``evaluate(..., groups=True)``): this
            evaluation's own where the plan is stable; for an unstable one its quantiles are those of
            the mixture in which only the overloaded queues' requests wait without bound.
        per_model: each deployed model's requests' figures, where asked for.
        per_category: each category's requests' figures, where asked for.
    """

    mean_quality: float
    mean_delay_s: float
    p95_delay_s: float
    utility: float
    loads: np.ndarray
    service_s: np.ndarray
    shortfall: np.ndarray | None = None
    p99_delay_s: float = np.nan
    attainment: float | None = None
    category_attainment: np.ndarray | None = None
    mean_energy_j: float | None = None
    utilization: np.ndarray | None = None
    stable: bool = True
    feasible: bool = True
    max_batch: np.ndarray | None = None
    mg1_mean_delay_s: float | None = None
    overall: GroupFigures | None = None
    per_model: Mapping[str, GroupFigures] | None = None
    per_category: Mapping[str, GroupFigures] | None = None


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


def evaluate(
    problem: Problem,
    routing: np.ndarray,
    step_index: Sequence[int],
    shares: np.ndarray,
    batch_index: Sequence[int] | None = None,
    *,
    groups: bool = False,
    demand_scale: float = 1.0,
) -> Evaluation:
    """Predict quality, delay, SLO attainment, energy and utility of a plan.

    Args:
        problem: the problem.
        routing: p[c, m], rows summing to 1, shape (C, M).
        step_index: index into each model's step grid, length M.
        shares: r_m ≥ 0 with Σ r_m ≤ R, shape (M,).
        batch_index: index into each model's batch sizes (default: each model's base batch).
        groups: also give the figures of all requests, of each model's and of each category's
            (:attr:`Evaluation.overall`, :attr:`~Evaluation.per_model`, :attr:`~Evaluation.per_category`).
        demand_scale: evaluate at this multiple of the problem's demand, in the same mix: a plan at a
            demand that no plan could serve (which a :class:`Problem` refuses) is evaluated on a problem
            at a lower demand. The quality does not depend on it; every other figure is at the scaled demand.

    Raises:
        ValueError: routing rows do not sum to 1, shares are negative or exceed the
            budget, a model with requests has no share, or the models in use do not
            fit in memory.
    """
    routing = np.asarray(routing, dtype=float)
    shares = np.asarray(shares, dtype=float)
    _check_plan(problem, routing, shares)
    batch_index = problem.base_batch_index if batch_index is None else tuple(int(b) for b in batch_index)
    routing = np.clip(routing, 0.0, None)
    requests, delay = _at_demand(problem, routing, demand_scale)
    loads = requests.sum(axis=0)
    in_use = deployed_mask(loads)
    _check_deployment(problem, in_use, shares)
    requests = np.where(in_use[None, :], requests, 0.0)  # residue below one request is no traffic
    batch = problem.max_batch_at(batch_index)
    service, spread = _service_times(problem, step_index, batch_index, shares, in_use)
    slo_s = None if problem.slo is None else problem.slo.seconds
    delays = delay.figures(requests, service, batch, slo_s=slo_s, spread_s=spread)
    n = float(requests.sum())
    mean_quality = float((requests * problem.mean_at(step_index)).sum() / n)
    energy = problem.energy_at(step_index)
    mean_energy = None if energy is None else float((loads * np.where(in_use, energy, 0.0)).sum() / n)
    utility = _utility(problem, delays, mean_quality, mean_energy)
    feasible = _meets_slo(problem, delays)
    floor = problem.shortfall_at(step_index)
    overall = per_model = per_category = None
    if groups:
        overall, per_model, per_category = _groups(
            problem, delay, requests, service, batch, step_index, delays, mean_quality
        )
    return Evaluation(
        mean_quality=mean_quality,
        mean_delay_s=delays.mean_s,
        p95_delay_s=delays.p95_s,
        utility=float(utility),
        loads=loads,
        service_s=service,
        shortfall=None if floor is None else (routing * floor).sum(axis=1),
        p99_delay_s=delays.p99_s,
        attainment=delays.attainment,
        category_attainment=delays.category_attainment,
        mean_energy_j=mean_energy,
        utilization=delays.utilization,
        stable=delays.stable,
        feasible=feasible,
        max_batch=batch,
        mg1_mean_delay_s=delays.mg1_mean_s,
        overall=overall,
        per_model=per_model,
        per_category=per_category,
    )


def _at_demand(problem: Problem, routing: np.ndarray, demand_scale: float) -> tuple[np.ndarray, DelayModel]:
    """Requests per category and model, shape (C, M), and the delay model, at ``demand_scale`` times the
    problem's demand."""
    requests = problem.counts[:, None] * routing
    delay = problem.delay
    if demand_scale != 1:
        requests = requests * demand_scale
        delay = delay.for_counts(problem.counts * demand_scale)
    return requests, delay


def _service_times(
    problem: Problem,
    step_index: Sequence[int],
    batch_index: Sequence[int],
    shares: np.ndarray,
    in_use: np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Seconds per call at each model's share (∞ for a model not in use), and the latency standard
    deviation at that share (None where the problem has none), shape (M,)."""
    m = len(problem.models)
    full = problem.call_service_at(step_index, batch_index)
    service = np.divide(full, shares, out=np.full(m, np.inf), where=in_use)
    spread = None
    if problem.service_std_s is not None:
        spread = np.divide(problem.service_std_s, shares, out=np.zeros(m), where=in_use)
    return service, spread


def _check_plan(problem: Problem, routing: np.ndarray, shares: np.ndarray) -> None:
    """Refuse a routing whose rows are not probabilities summing to 1, or shares that are negative or
    exceed the budget."""
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


def _check_deployment(problem: Problem, in_use: np.ndarray, shares: np.ndarray) -> None:
    """Refuse a plan that sends requests to a model without a share, or whose models in use do not fit in
    device memory together."""
    starved = [k for k, used, r in zip(problem.models, in_use, shares) if used and r <= 0]
    if starved:
        raise ValueError(f"models {starved} receive requests but no compute share")
    if not problem.fits_in_memory(in_use):
        raise ValueError(
            f"models in use {[k for k, u in zip(problem.models, in_use) if u]} do not fit in "
            f"{problem.device_memory_bytes / 2**30:.2f} GiB of device memory"
        )


def _utility(problem: Problem, delays: DelayFigures, mean_quality: float, mean_energy: float | None) -> float:
    """Mean quality less the weighted mean delay and the priced mean energy; −∞ where a queue is unstable."""
    utility = -np.inf
    if delays.stable:
        utility = mean_quality - problem.weight * delays.mean_s
        if problem.energy_price > 0:
            utility -= problem.energy_price * mean_energy
    return utility


def _meets_slo(problem: Problem, delays: DelayFigures) -> bool:
    """Whether every queue is stable and the attainment (overall or each category's) reaches the SLO's."""
    feasible = delays.stable
    if problem.slo is not None and delays.stable:
        attained = np.array([delays.attainment]) if problem.slo.scope == "overall" else delays.category_attainment
        feasible = bool((attained >= problem.slo.attainment - _ATTAINMENT_TOL).all())
    return feasible


def _groups(
    problem: Problem,
    delay: DelayModel,
    requests: np.ndarray,
    service: np.ndarray,
    batch: np.ndarray,
    step_index: Sequence[int],
    delays: DelayFigures,
    mean_quality: float,
) -> tuple[GroupFigures, dict[str, GroupFigures], dict[str, GroupFigures]]:
    """The figures of all requests (``delays`` and ``mean_quality``, the evaluation's own), of each deployed
    model's and of each category's (see :func:`evaluate`)."""
    quality = problem.mean_at(step_index)
    used = np.flatnonzero(deployed_mask(requests.sum(axis=0)))
    columns = [np.where(np.arange(requests.shape[1]) == m, requests, 0.0) for m in used]
    rows = [np.where(np.arange(requests.shape[0])[:, None] == c, requests, 0.0) for c in range(requests.shape[0])]
    slo_s = None if problem.slo is None else problem.slo.seconds
    everyone, *parts = delay.groups(requests, service, batch, [requests, *columns, *rows], slo_s)

    def figures(members: np.ndarray, law: GroupDelay, attainment: float | None) -> GroupFigures:
        total = float(members.sum())
        return GroupFigures(
            demand=total,
            mean_delay_s=law.mean_s,
            p95_delay_s=law.p95_s,
            p99_delay_s=law.p99_s,
            attainment=attainment,
            mean_quality=float((members * quality).sum() / total),
        )

    overall = GroupFigures(
        demand=float(requests.sum()),
        mean_delay_s=delays.mean_s,
        p95_delay_s=delays.p95_s if delays.stable else everyone.p95_s,
        p99_delay_s=delays.p99_s if delays.stable else everyone.p99_s,
        attainment=delays.attainment,
        mean_quality=mean_quality,
    )
    per_model = {problem.models[m]: figures(c, law, law.attainment) for m, c, law in zip(used, columns, parts)}
    by_category = [None] * len(rows) if delays.category_attainment is None else delays.category_attainment.tolist()
    per_category = {
        name: figures(r, law, attained)
        for name, r, law, attained in zip(problem.categories, rows, parts[len(columns) :], by_category)
    }
    return overall, per_model, per_category
