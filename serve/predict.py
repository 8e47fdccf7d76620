r"""What a plan predicts at the rates a load test actually offered.

A plan's own ``predicted`` figures were made for the workload it was planned for. A load test
offers other rates (a chosen ``--request-rate``, a realized draw of categories), so the served plan
is measured against the same fixed decisions evaluated at those rates: routing p[c, m], steps s_m
and shares r_m from the plan document, the delay model of DESIGN §3.2 (one M/D/1, or bulk-service,
queue per model under open arrivals; a window of requests served FIFO when every request arrives at
once), and the quality of the calibration table.

Per model m with arrival rate λ_m = Σ_c p[c, m] λ_c and call time S_m on its share (a batch of up to
b_m images), the response time T_m has mean E[T_m], the exact M/D/1 (or bulk-service) quantiles, and
P(T_m ≤ SLO); a category's requests are the mixture of the models' laws weighted p[c, m] λ_c. A plan
whose queues cannot be stable at the offered rates (ρ_m = λ_m S_m / b_m ≥ 1) predicts infinite delay;
its quality is still predicted (it depends on the rates' mix, not their level).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from genedge.optimizer import queueing
from genedge.optimizer.delay import model_served_within, model_window_coefficient
from genedge.optimizer.problem import Problem, Slo, deployed_mask
from genedge.optimizer.system import evaluate
from genedge.optimizer.workload import Workload

if TYPE_CHECKING:
    from genedge.calibrate.table import CalibrationTable

__all__ = ["GroupPrediction", "Prediction", "plan_rates", "predict_at_rates", "predict_for_window"]

# Load to which the rates are scaled when the plan is unstable at the offered ones: only the quality is
# read from that evaluation, and it depends on the mix of the rates, not their level.
_QUALITY_ONLY_LOAD = 0.5
# A mixture's quantile is found by bisection, to this relative width or this many halvings.
_QUANTILE_RTOL = 1e-12
_BISECTIONS = 200


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
    planned: Mapping[str, Any] = field(default_factory=dict)
    planned_arrivals: str = "window"
    planned_demand: Mapping[str, float] = field(default_factory=dict)


def plan_rates(plan: Mapping[str, Any], total_rate: float) -> dict[str, float]:
    """Split ``total_rate`` (requests/s) over the plan's categories in its planned workload's mix.

    This is the demand of requests sent without a category: the server's prompt router places them, and
    the plan was made for the mix it expects.
    """
    workload = plan["inputs"]["workload"]
    total = sum(workload.values())
    return {c: total_rate * n / total for c, n in workload.items()}


def predict_at_rates(
    plan: Mapping[str, Any],
    table: CalibrationTable,
    rates: Mapping[str, float],
    *,
    slo_s: float | None = None,
    composition: Mapping[str, Mapping[str, float]] | None = None,
) -> Prediction:
    """Evaluate a plan's routing, steps and shares at offered rates, under open arrivals.

    Args:
        plan: the plan document (:func:`genedge.optimizer.plan_file.plan_to_dict`).
        table: the calibration table it was made from.
        rates: category → offered rate λ_c (requests/s, ≥ 0); categories at 0 are left out.
        slo_s: the latency SLO (s) the attainments are for (default: the plan's, if it has one).
        composition: what the requests of each category truly are, where a prompt router places them
            (see :class:`~genedge.optimizer.workload.Workload`); default: the plan's own, where it was
            made for routed prompts and ``None`` otherwise.

    Returns:
        A :class:`Prediction` with ``arrivals="open"``.

    Raises:
        ValueError: a category the plan does not route, a rate that is negative or not finite, no
            positive rate, or steps of the plan that are not on the table's step grid.
    """
    return _predict(plan, table, rates, "open", slo_s, composition)


def predict_for_window(
    plan: Mapping[str, Any],
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
    return _predict(plan, table, counts, "window", slo_s, composition)


def _demand(plan: Mapping[str, Any], demand: Mapping[str, float], arrivals: str) -> dict[str, float]:
    routed = plan["routing"]
    unknown = sorted(set(demand) - set(routed))
    if unknown:
        raise ValueError(f"categories {unknown} are not routed by the plan; it routes {sorted(routed)}")
    for category, value in demand.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            what = "a rate >= 0 (requests/s)" if arrivals == "open" else "a request count >= 0"
            raise ValueError(f"Expected {what} for category {category!r}, but got {value!r}")
    positive = {c: float(v) for c, v in demand.items() if v > 0}
    if not positive:
        raise ValueError(f"Expected a positive demand in some category, but got {dict(demand)}")
    return positive


def _problem(
    plan: Mapping[str, Any],
    table: CalibrationTable,
    demand: Mapping[str, float],
    arrivals: str,
    slo: Slo | None,
    composition: Mapping[str, Mapping[str, float]] | None,
) -> Problem:
    inputs = plan["inputs"]
    kept = None if composition is None else {c: composition[c] for c in demand if c in composition}
    workload = (
        Workload.from_rates(demand, kept or None)
        if arrivals == "open"
        else Workload(counts=dict(demand), composition=kept or None)
    )
    return Problem.from_table(
        table,
        workload,
        budget=inputs["budget_gpu"],
        weight=inputs["weight_points_per_s"],
        models=list(plan["models"]),
        device_memory_bytes=inputs.get("device_memory_bytes"),
        table_sha256=inputs.get("table_sha256"),
        min_clipscore=inputs.get("min_clipscore"),
        max_shortfall=inputs.get("max_shortfall") or 0.05,
        arrivals=arrivals,
        realization=inputs.get("routing_realization", "deterministic"),
        slo=slo,
        energy_price=inputs.get("energy_price_points_per_j", 0.0),
        batching=bool(inputs.get("batching", False)),
    )


def _decisions(plan: Mapping[str, Any], problem: Problem) -> tuple[np.ndarray, list[int], np.ndarray, list[int] | None]:
    """The plan's routing, step indices, shares and batch indices on ``problem``'s axes."""
    models = plan["models"]
    routing = np.array([[float(plan["routing"][c].get(k, 0.0)) for k in problem.models] for c in problem.categories])
    steps, batches = [], []
    for i, key in enumerate(problem.models):
        entry = models[key]
        grid = problem.steps[i]
        if entry.get("steps") is None:
            steps.append(problem.default_step_index[i])
        else:
            k = int(np.searchsorted(grid, entry["steps"]))
            if k >= grid.size or grid[k] != entry["steps"]:
                raise ValueError(
                    f"plan: models.{key}.steps: {entry['steps']} is not on the table's step grid {grid.tolist()}"
                )
            steps.append(k)
        if problem.batch_sizes is not None:
            sizes = problem.batch_sizes[i].tolist()
            batch = int(entry.get("max_batch", sizes[0]))
            if batch not in sizes:
                raise ValueError(f"plan: models.{key}.max_batch: {batch} is not among the table's batch sizes {sizes}")
            batches.append(sizes.index(batch))
    shares = np.array([float(models[k]["share"]) for k in problem.models])
    return routing, steps, shares, batches if problem.batch_sizes is not None else None


def _slo(plan: Mapping[str, Any], slo_s: float | None) -> Slo | None:
    planned = plan["inputs"].get("slo")
    if slo_s is None:
        return None if planned is None else Slo(planned["seconds"], planned["attainment"], planned["scope"])
    # Only the seconds matter to the attainment figures; the target fraction is the plan's where it has one.
    attainment = 0.95 if planned is None else planned["attainment"]
    scope = "overall" if planned is None else planned["scope"]
    return Slo(float(slo_s), attainment, scope)


def _offered_utilization(plan: Mapping[str, Any], demand: Mapping[str, float]) -> dict[str, float]:
    """ρ_m = λ_m S_m / b_m of each deployed model at the offered rates, from the plan's own call times."""
    out = {}
    for key, entry in plan["models"].items():
        if not entry.get("deployed"):
            continue
        rate = sum(float(plan["routing"][c].get(key, 0.0)) * v for c, v in demand.items())
        out[key] = rate * float(entry["service_s"]) / int(entry.get("max_batch", 1))
    return out


def _predict(
    plan: Mapping[str, Any],
    table: CalibrationTable,
    demand: Mapping[str, float],
    arrivals: str,
    slo_s: float | None,
    composition: Mapping[str, Mapping[str, float]] | None,
) -> Prediction:
    demand = _demand(plan, demand, arrivals)
    if composition is None:
        composition = (plan["inputs"].get("prompts") or {}).get("composition")
    slo = _slo(plan, slo_s)
    rho = _offered_utilization(plan, demand) if arrivals == "open" else {}
    overloaded = max(rho.values(), default=0.0) >= 1
    # An overloaded plan cannot be stated as a Problem at those rates (no queue can be stable): its
    # quality is read at rates scaled to a stable load, and its delays are infinite.
    scale = _QUALITY_ONLY_LOAD / max(rho.values()) if overloaded else 1.0
    problem = _problem(plan, table, {c: v * scale for c, v in demand.items()}, arrivals, slo, composition)
    routing, steps, shares, batches = _decisions(plan, problem)
    result = evaluate(problem, routing, steps, shares, batches)
    requests = problem.counts[:, None] * np.clip(routing, 0.0, None)
    requests = np.where(deployed_mask(requests.sum(axis=0))[None, :], requests, 0.0)
    quality = problem.mean_at(steps)
    laws = _Laws(problem, requests / scale, result.service_s, result.max_batch)
    per_model = {}
    for m, key in enumerate(problem.models):
        column = np.zeros(len(problem.models))
        column[m] = float(requests[:, m].sum()) / scale
        if not deployed_mask(column[m]):
            continue
        per_model[key] = GroupPrediction(
            rate=float(column[m]),
            mean_response_s=laws.mean(column),
            p95_response_s=laws.quantile(column, 0.95),
            p99_response_s=laws.quantile(column, 0.99),
            slo_attainment=None if slo is None else laws.attainment(column, slo.seconds),
            mean_clipscore=float((requests[:, m] * quality[:, m]).sum() / requests[:, m].sum()),
            utilization=rho.get(key) if arrivals == "open" else None,
            service_s=float(result.service_s[m]),
        )
    per_category = {}
    for c, category in enumerate(problem.categories):
        row = requests[c] / scale
        per_category[category] = GroupPrediction(
            rate=float(row.sum()),
            mean_response_s=laws.mean(row),
            p95_response_s=laws.quantile(row, 0.95),
            p99_response_s=laws.quantile(row, 0.99),
            slo_attainment=None if slo is None else laws.attainment(row, slo.seconds),
            mean_clipscore=float((requests[c] * quality[c]).sum() / requests[c].sum()),
        )
    total = requests.sum(axis=0) / scale
    # The optimizer's own figures where it can state them; an overloaded plan's from each queue's law.
    overall = GroupPrediction(
        rate=float(total.sum()),
        mean_response_s=laws.mean(total) if overloaded else float(result.mean_delay_s),
        p95_response_s=laws.quantile(total, 0.95) if overloaded else float(result.p95_delay_s),
        p99_response_s=laws.quantile(total, 0.99) if overloaded else float(result.p99_delay_s),
        slo_attainment=None if slo is None else laws.attainment(total, slo.seconds),
        mean_clipscore=float(result.mean_quality),
    )
    return Prediction(
        arrivals=arrivals,
        demand=dict(demand),
        overall=overall,
        per_model=per_model,
        per_category=per_category,
        stable=bool(result.stable and not overloaded),
        feasible=bool(result.feasible and not overloaded),
        utility=-np.inf if overloaded else float(result.utility),
        slo_s=None if slo is None else slo.seconds,
        planned=dict(plan.get("predicted", {})),
        planned_arrivals=plan["inputs"].get("arrivals", "window"),
        planned_demand=dict(plan["inputs"].get("workload", {})),
    )


class _Laws:
    """Each deployed model's response-time law under the problem's delay model, and mixtures of them.

    ``requests`` are the offered requests x[c, m] (per second, or per window); under open arrivals
    each model's law is its queue's at λ_m = Σ_c x[c, m], so an overloaded queue (ρ_m ≥ 1) has an
    infinite mean, a CDF of 0 and contributes its weight to no quantile below it.
    """

    def __init__(self, problem: Problem, requests: np.ndarray, call_s: np.ndarray, batch: np.ndarray) -> None:
        self.problem = problem
        self.requests = requests
        self.loads = requests.sum(axis=0)
        self.used = deployed_mask(self.loads)
        self.call_s = call_s
        self.batch = batch
        self.open = problem.arrivals == "open"

    def _stable(self, m: int) -> bool:
        return not self.open or self.loads[m] * self.call_s[m] / self.batch[m] < 1

    def _model_mean(self, m: int) -> float:
        load, call, b = float(self.loads[m]), float(self.call_s[m]), int(self.batch[m])
        if not self._stable(m):
            return np.inf
        if self.open:
            return float(
                queueing.md1_mean_response(load, call) if b == 1 else queueing.bulk_mean_response(load, call, b)
            )
        return model_window_coefficient(self.problem, self.requests, m, b) * call / load

    def _model_cdf(self, m: int, d: float) -> float:
        load, call, b = float(self.loads[m]), float(self.call_s[m]), int(self.batch[m])
        if not self._stable(m):
            return 0.0
        if self.open:
            return float(
                queueing.md1_response_cdf(d, load, call) if b == 1 else queueing.bulk_response_cdf(d, load, call, b)
            )
        return float(model_served_within(self.problem, self.requests, m, call, b, d)) / load

    def _weights(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        models = np.flatnonzero(self.used & (weights > 0))
        return models, weights[models] / weights[models].sum()

    def mean(self, weights: np.ndarray) -> float:
        """Mean response of requests spread over the models by ``weights`` (requests per model)."""
        models, share = self._weights(weights)
        return float(sum(w * self._model_mean(m) for w, m in zip(share, models)))

    def attainment(self, weights: np.ndarray, slo_s: float) -> float:
        """P(response ≤ ``slo_s``) of requests spread over the models by ``weights``."""
        models, share = self._weights(weights)
        return float(sum(w * self._model_cdf(m, slo_s) for w, m in zip(share, models)))

    def quantile(self, weights: np.ndarray, q: float) -> float:
        """The q-quantile of the response of requests spread over the models by ``weights``; inf where
        the overloaded queues' weight reaches past it."""
        models, share = self._weights(weights)
        if share[[self._stable(m) for m in models]].sum() < q:
            return np.inf
        if self.open and models.size == 1:  # one queue: its exact quantile
            m = int(models[0])
            load, call, b = float(self.loads[m]), float(self.call_s[m]), int(self.batch[m])
            if b == 1:
                return float(queueing.md1_response_quantile(q, load, call))
            return float(queueing.bulk_response_quantile(q, load, call, b))

        def cdf(d: float) -> float:
            return float(sum(w * self._model_cdf(m, d) for w, m in zip(share, models)))

        lo, hi = 0.0, float(self.call_s[models].max())
        while cdf(hi) < q:  # the stable queues' weight reaches q, so the bracket closes
            lo, hi = hi, 2 * hi
        for _ in range(_BISECTIONS):
            if hi - lo <= _QUANTILE_RTOL * hi:
                break
            mid = (lo + hi) / 2
            if cdf(mid) >= q:
                hi = mid
            else:
                lo = mid
        return hi
