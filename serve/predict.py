r"""What a plan predicts at the rates a load test actually offered.

A plan's own ``predicted`` figures were made for the workload it was planned for. A load test
offers other rates (a chosen ``--request-rate``, a realized draw of categories), so the served plan
is measured against the same fixed decisions evaluated at those rates: routing p[c, m], steps s_m
and shares r_m from the plan document, the delay model of DESIGN §3.2 (one M/D/1, or bulk-service,
queue per model under open arrivals; a window of requests served FIFO when every request arrives at
once), and the quality of the calibration table.

The figures are the optimizer's own: the plan is stated as a problem at the offered demand and
evaluated by :func:`genedge.optimizer.model.evaluate` under the problem's delay model, with the
figures of each model's and each category's requests (a category's are the mixture of the models'
laws weighted p[c, m] λ_c). A plan whose queues cannot be stable at the offered rates
(ρ_m = λ_m S_m / b_m ≥ 1) predicts infinite delay for their requests; its quality is still predicted
(it depends on the rates' mix, not their level).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from genedge.optimizer.model import (
    ArrivalModel,
    GroupFigures,
    Problem,
    Slo,
    Workload,
    arrival_model,
    delay_model_class,
    evaluate,
    utilization,
)

if TYPE_CHECKING:
    from genedge.contract.table import CalibrationTable
    from genedge.optimizer.plan_file import PlanDocument, PlanFigures

__all__ = [
    "GroupPrediction",
    "Prediction",
    "plan_rates",
    "predict_at_demand",
    "predict_at_rates",
    "predict_for_window",
]

# Load at which a plan overloaded at the offered rates is stated as a problem (no problem can state rates
# that no plan could serve); it is evaluated at the offered rates (``evaluate``'s ``demand_scale``).
_STATED_LOAD = 0.5


@dataclass(frozen=True)
class GroupPrediction:
    """Predicted figures of one group of requests (all of them, one model's, or one category's).

    Attributes:
        rate: requests per second offered to the group (requests per window for a window).
        mean_response_s: mean response time (s); inf where a queue the group uses is unstable.
        p95_response_s / p99_response_s: 95th / 99th percentile of the response time (s).
        slo_attainment: P(response ≤ SLO), where an SLO is given; else None.
        mean_clipscore: mean CLIPScore (points) of the group's images.
        utilization: ρ_m = λ_m S_m / b_m (one model's group under open arrivals); else None.
        service_s: S_m, one call on the model's share (one model's group); else None.
    """

    rate: float
    mean_response_s: float
    p95_response_s: float
    p99_response_s: float
    slo_attainment: float | None
    mean_clipscore: float
    utilization: float | None = None
    service_s: float | None = None


@dataclass(frozen=True)
class Prediction:
    """The plan's fixed decisions evaluated at the offered demand.

    Attributes:
        arrivals: ``open`` (rates, requests/s) or ``window`` (every request at once).
        demand: category → offered rate (requests/s), or requests in the window.
        overall / per_model / per_category: the figures of all requests, of each deployed model's
            and of each offered category's.
        stable: every queue is stable at the offered demand (always True for a window).
        feasible: stable, and the plan's SLO (if any) is met at the offered demand.
        utility: U = mean CLIPScore − w · mean delay (− the energy term), in points.
        slo_s: the SLO the attainments are for, or None.
        planned: the plan's own ``predicted`` figures, made at its planned workload.
        planned_arrivals: the delay model those were made under (the plan's ``inputs.arrivals``).
        planned_demand: the workload the plan was made for (``inputs.workload``).
        description: the delay model the figures are made under, in words.
    """

    arrivals: str
    demand: Mapping[str, float]
    overall: GroupPrediction
    per_model: Mapping[str, GroupPrediction]
    per_category: Mapping[str, GroupPrediction]
    stable: bool
    feasible: bool
    utility: float
    slo_s: float | None = None
    planned: PlanFigures | None = None
    planned_arrivals: str = "window"
    planned_demand: Mapping[str, float] = field(default_factory=dict)
    description: str = ""


def plan_rates(plan: PlanDocument, total_rate: float) -> dict[str, float]:
    """Split ``total_rate`` (requests/s) over the plan's categories in its planned workload's mix.

    This is the demand of requests sent without a category: the server's prompt router places them, and
    the plan was made for the mix it expects.
    """
    workload = plan.inputs.workload
    total = sum(workload.values())
    return {c: total_rate * n / total for c, n in workload.items()}


def predict_at_rates(
    plan: PlanDocument,
    table: CalibrationTable,
    rates: Mapping[str, float],
    *,
    slo_s: float | None = None,
    composition: Mapping[str, Mapping[str, float]] | None = None,
) -> Prediction:
    """Evaluate a plan's routing, steps and shares at offered rates, under open arrivals.

    Args:
        plan: the plan (:func:`genedge.optimizer.plan_file.load_plan`).
        table: the calibration table it was made from.
        rates: category → offered rate λ_c (requests/s, ≥ 0); categories at 0 are left out.
        slo_s: the latency SLO (s) the attainments are for (default: the plan's, if it has one).
        composition: what the requests of each category truly are, where a prompt router places them
            (see :class:`~genedge.optimizer.model.Workload`); default: the plan's own, where it was
            made for routed prompts and ``None`` otherwise.

    Returns:
        A :class:`Prediction` with ``arrivals="open"``.

    Raises:
        ValueError: a category the plan does not route, a rate that is negative or not finite, no
            positive rate, or steps of the plan that are not on the table's step grid.
    """
    return predict_at_demand(plan, table, rates, arrivals="open", slo_s=slo_s, composition=composition)


def predict_for_window(
    plan: PlanDocument,
    table: CalibrationTable,
    counts: Mapping[str, float],
    *,
    slo_s: float | None = None,
    composition: Mapping[str, Mapping[str, float]] | None = None,
) -> Prediction:
    """Evaluate a plan when ``counts`` requests per category all arrive at once (``--request-rate inf``).

    The window delay model (DESIGN §3): model m serves its N_m requests FIFO, the i-th done at
    ⌈i / b_m⌉ S_m. Arguments and errors as :func:`predict_at_rates`, with whole request counts.
    """
    return predict_at_demand(plan, table, counts, arrivals="window", slo_s=slo_s, composition=composition)


def predict_at_demand(
    plan: PlanDocument,
    table: CalibrationTable,
    demand: Mapping[str, float],
    *,
    arrivals: str,
    slo_s: float | None = None,
    composition: Mapping[str, Mapping[str, float]] | None = None,
) -> Prediction:
    """Evaluate a plan's routing, steps and shares at an offered demand under an arrival model.

    Args:
        arrivals: how the demand arrives (:data:`~genedge.optimizer.model.ARRIVAL_MODELS`): ``open``
            for rates (:func:`predict_at_rates`), ``window`` for requests all at once
            (:func:`predict_for_window`).
        plan, table, demand, slo_s, composition: as :func:`predict_at_rates`.

    Raises:
        ValueError: an unknown arrival model, or as :func:`predict_at_rates`.
    """
    how = arrival_model(arrivals)
    demand = _demand(plan, demand, how)
    if composition is None:
        composition = plan.inputs.composition
    slo = _slo(plan, slo_s)
    realization = plan.inputs.routing_realization
    rho = _offered_utilization(plan, demand) if delay_model_class(arrivals, realization).steady_state else {}
    # A plan overloaded at the offered demand is stated at a load it can hold and evaluated at the offered one.
    scale = _STATED_LOAD / max(rho.values()) if max(rho.values(), default=0.0) >= 1 else 1.0
    problem = _problem(plan, table, {c: v * scale for c, v in demand.items()}, how, slo, composition)
    routing, steps, shares, batches = _decisions(plan, problem)
    result = evaluate(problem, routing, steps, shares, batches, groups=True, demand_scale=1 / scale)
    index = {key: m for m, key in enumerate(problem.models)}
    per_model = {
        key: _group(
            figures,
            utilization=None if result.utilization is None else float(result.utilization[index[key]]),
            service_s=float(result.service_s[index[key]]),
        )
        for key, figures in result.per_model.items()
    }
    return Prediction(
        arrivals=arrivals,
        demand=dict(demand),
        overall=_group(result.overall),
        per_model=per_model,
        per_category={c: _group(figures) for c, figures in result.per_category.items()},
        stable=bool(result.stable),
        feasible=bool(result.feasible),
        utility=float(result.utility),
        slo_s=None if slo is None else slo.seconds,
        planned=plan.predicted,
        planned_arrivals=plan.inputs.arrivals,
        planned_demand=dict(plan.inputs.workload),
        description=problem.delay.description,
    )


def _group(figures: GroupFigures, utilization: float | None = None, service_s: float | None = None) -> GroupPrediction:
    return GroupPrediction(
        rate=figures.demand,
        mean_response_s=figures.mean_delay_s,
        p95_response_s=figures.p95_delay_s,
        p99_response_s=figures.p99_delay_s,
        slo_attainment=figures.attainment,
        mean_clipscore=figures.mean_quality,
        utilization=utilization,
        service_s=service_s,
    )


def _demand(plan: PlanDocument, demand: Mapping[str, float], arrivals: ArrivalModel) -> dict[str, float]:
    routed = plan.routing
    unknown = sorted(set(demand) - set(routed))
    if unknown:
        raise ValueError(f"categories {unknown} are not routed by the plan; it routes {sorted(routed)}")
    for category, value in demand.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            what = "a rate >= 0 (requests/s)" if arrivals.per_second else "a request count >= 0"
            raise ValueError(f"Expected {what} for category {category!r}, but got {value!r}")
    positive = {c: float(v) for c, v in demand.items() if v > 0}
    if not positive:
        raise ValueError(f"Expected a positive demand in some category, but got {dict(demand)}")
    return positive


def _problem(
    plan: PlanDocument,
    table: CalibrationTable,
    demand: Mapping[str, float],
    arrivals: ArrivalModel,
    slo: Slo | None,
    composition: Mapping[str, Mapping[str, float]] | None,
) -> Problem:
    inputs = plan.inputs
    kept = None if composition is None else {c: composition[c] for c in demand if c in composition}
    workload = (
        Workload.from_rates(demand, kept or None)
        if arrivals.per_second
        else Workload(counts=dict(demand), composition=kept or None)
    )
    return Problem.from_table(
        table,
        workload,
        budget=inputs.budget_gpu,
        weight=inputs.weight_points_per_s,
        models=list(plan.models),
        device_memory_bytes=inputs.device_memory_bytes,
        table_sha256=inputs.table_sha256,
        min_clipscore=inputs.min_clipscore,
        max_shortfall=inputs.max_shortfall or 0.05,
        arrivals=arrivals.name,
        realization=inputs.routing_realization,
        slo=slo,
        energy_price=inputs.energy_price_points_per_j,
        batching=inputs.batching,
        images=inputs.images,
    )


def _decisions(plan: PlanDocument, problem: Problem) -> tuple[np.ndarray, list[int], np.ndarray, list[int] | None]:
    """The plan's routing, step indices, shares and batch indices on ``problem``'s axes."""
    models = plan.models
    routing = np.array([[plan.routed(c, k) for k in problem.models] for c in problem.categories])
    steps, batches = [], []
    for i, key in enumerate(problem.models):
        entry = models[key]
        grid = problem.steps[i]
        if entry.steps is None:
            steps.append(problem.default_step_index[i])
        else:
            k = int(np.searchsorted(grid, entry.steps))
            if k >= grid.size or grid[k] != entry.steps:
                raise ValueError(
                    f"plan: models.{key}.steps: {entry.steps} is not on the table's step grid {grid.tolist()}"
                )
            steps.append(k)
        if problem.batch_sizes is not None:
            sizes = problem.batch_sizes[i].tolist()
            batch = sizes[0] if entry.max_batch is None else entry.max_batch
            if batch not in sizes:
                raise ValueError(f"plan: models.{key}.max_batch: {batch} is not among the table's batch sizes {sizes}")
            batches.append(sizes.index(batch))
    shares = np.array([models[k].share for k in problem.models])
    return routing, steps, shares, batches if problem.batch_sizes is not None else None


def _slo(plan: PlanDocument, slo_s: float | None) -> Slo | None:
    planned = plan.inputs.slo
    if slo_s is None:
        return planned
    # Only the seconds matter to the attainment figures; the target fraction is the plan's where it has one.
    attainment = 0.95 if planned is None else planned.attainment
    scope = "overall" if planned is None else planned.scope
    return Slo(float(slo_s), attainment, scope)


def _offered_utilization(plan: PlanDocument, demand: Mapping[str, float]) -> dict[str, float]:
    """ρ_m = λ_m S_m / b_m of each deployed model at the offered rates, from the plan's own call times."""
    deployed = plan.deployed
    keys = list(deployed)
    rates = np.array([sum(plan.routed(c, key) * v for c, v in demand.items()) for key in keys])
    calls = np.array([deployed[key].service_s for key in keys])
    batches = np.array([deployed[key].batch for key in keys])
    return dict(zip(keys, utilization(rates, calls, batches).tolist()))
