r"""Discrete-event check of a plan: sample requests and compare with the analytic prediction.

Each replication routes every request independently with the plan's
probabilities p[c, ·] (as a deployment's router would), serves each model's
queue first-in first-out in a random arrival order on its share (service time
t_m per image), and draws each image's CLIPScore from Normal(μ[m,c], σ[m,c]²).

With random routing the requests per model N_m are random, so the expected mean
delay carries the variance of N_m:

.. math:: E\Bigl[\frac{1}{N}\sum_m t_m \frac{N_m(N_m+1)}{2}\Bigr]
          = \frac{1}{N}\sum_m t_m \frac{\bar N_m^2 + \operatorname{Var} N_m + \bar N_m}{2},
          \qquad \operatorname{Var} N_m = \sum_c n_c p_{cm}(1 - p_{cm}).

Mean quality is unbiased either way. Agreement is judged against the standard
error of the replications' means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genedge.optimizer.model import Arrivals, Problem, WindowRandom, mmpp_arrivals, poisson_arrivals
from genedge.optimizer.planners import PlanResult
from genedge.optimizer.simulation._des import DEFAULT_WARMUP, simulate_arrivals

__all__ = [
    "PROCESSES",
    "ArrivalModelComparison",
    "OpenSimulationCheck",
    "SimulationCheck",
    "compare_arrival_models",
    "simulate_open_plan",
    "simulate_plan",
]

# A standard error this close to 0 (every replication alike) is taken as this instead.
_TINY_SE = 1e-12


@dataclass(frozen=True)
class SimulationCheck:
    """Simulated versus analytic figures of one plan.

    Attributes:
        replications: number of simulated planning windows.
        mean_quality / mean_quality_se: simulated mean CLIPScore and its standard error.
        predicted_quality: analytic mean CLIPScore.
        mean_delay_s / mean_delay_se_s: simulated mean delay and its standard error (s).
        predicted_delay_s: analytic expected mean delay under random routing (s).
        plan_delay_s: the plan's mean delay at expected loads (s), as the planner predicts it.
        p95_delay_s: mean over replications of the 95th-percentile delay (s).
    """

    replications: int
    mean_quality: float
    mean_quality_se: float
    predicted_quality: float
    mean_delay_s: float
    mean_delay_se_s: float
    predicted_delay_s: float
    plan_delay_s: float
    p95_delay_s: float

    @property
    def quality_z(self) -> float:
        """(simulated − predicted) / standard error for quality."""
        return (self.mean_quality - self.predicted_quality) / max(self.mean_quality_se, _TINY_SE)

    @property
    def delay_z(self) -> float:
        """(simulated − predicted) / standard error for delay."""
        return (self.mean_delay_s - self.predicted_delay_s) / max(self.mean_delay_se_s, _TINY_SE)


def simulate_plan(
    problem: Problem, result: PlanResult, *, replications: int = 500, rng: int | np.random.Generator | None = None
) -> SimulationCheck:
    """Simulate ``replications`` planning windows of a plan.

    Args:
        problem: the problem the plan was made for (its counts must be whole numbers).
        result: the plan.
        replications: windows to simulate (> 1).
        rng: a seed or generator.

    Raises:
        ValueError: fewer than 2 replications, or fractional request counts.
    """
    if replications < 2:
        raise ValueError(f"Expected at least 2 replications, but got {replications}")
    if not np.allclose(problem.counts, np.round(problem.counts)):
        raise ValueError(f"Expected whole request counts to simulate, but got {problem.counts.tolist()}")
    gen = np.random.default_rng(rng)
    plan = result.plan
    p = plan.routing_matrix
    steps = plan.step_index
    mean, std = problem.mean_at(steps), problem.std_at(steps)
    in_use = result.deployed
    service = np.where(in_use, problem.service_at(steps) / np.where(in_use, plan.share_vector, 1.0), np.inf)
    category = np.repeat(np.arange(len(problem.categories)), problem.counts.astype(int))
    n = category.size
    cumulative = np.cumsum(p[category], axis=1)
    qualities, delays, p95s = np.empty(replications), np.empty(replications), np.empty(replications)
    for r in range(replications):
        model = (gen.random(n)[:, None] > cumulative).sum(axis=1)
        model = np.minimum(model, len(problem.models) - 1)
        score = gen.normal(mean[category, model], std[category, model])
        order = gen.permutation(n)  # arrival order
        position = np.empty(n)
        for m in np.unique(model):
            queue = order[model[order] == m]
            position[queue] = np.arange(1, queue.size + 1)
        delay = position * service[model]
        qualities[r], delays[r], p95s[r] = score.mean(), delay.mean(), np.quantile(delay, 0.95)
    # The windows above route each request by an independent draw: the random-routing window model's mean.
    requests = np.where(in_use[None, :], problem.counts[:, None] * p, 0.0)
    drawn = WindowRandom(problem.counts, "random")
    predicted_delay = float(drawn.mass(requests, service, np.ones(len(problem.models), dtype=int)).sum() / n)
    return SimulationCheck(
        replications=replications,
        mean_quality=float(qualities.mean()),
        mean_quality_se=float(qualities.std(ddof=1) / np.sqrt(replications)),
        predicted_quality=result.mean_quality,
        mean_delay_s=float(delays.mean()),
        mean_delay_se_s=float(delays.std(ddof=1) / np.sqrt(replications)),
        predicted_delay_s=predicted_delay,
        plan_delay_s=result.mean_delay_s,
        p95_delay_s=float(p95s.mean()),
    )


#: Arrival processes the open-arrival check can draw.
PROCESSES = ("poisson", "bursty", "trace")


@dataclass(frozen=True)
class OpenSimulationCheck:
    """Simulated versus analytic figures of one plan under open arrivals.

    Attributes:
        process: ``poisson``, ``bursty`` (a two-state MMPP of index of dispersion ``burstiness``) or ``trace``.
        burstiness: the MMPP's long-run index of dispersion of counts (1 for Poisson and traces).
        requests: simulated requests after the warm-up.
        mean_quality: simulated mean CLIPScore (scores drawn from the fitted Gaussians).
        mean_s / mean_se_s / p95_s / p99_s: simulated response time: mean, its batch-means standard
            error, 95th and 99th percentiles (s).
        attainment: simulated P(T ≤ SLO), where the problem has an SLO.
        predicted_mean_s / predicted_p95_s / predicted_p99_s / predicted_attainment: the analytic
            figures of the plan (M/D/1 or bulk service per model).
        utility: simulated mean quality − w · simulated mean delay − κ · energy.
        model_share: fraction of requests each model served, shape (M,).
    """

    process: str
    burstiness: float
    requests: int
    mean_quality: float
    mean_s: float
    mean_se_s: float | None
    p95_s: float
    p99_s: float
    attainment: float | None
    predicted_mean_s: float
    predicted_p95_s: float
    predicted_p99_s: float
    predicted_attainment: float | None
    utility: float
    model_share: np.ndarray

    @property
    def mean_error(self) -> float:
        """(analytic − simulated) / simulated mean response: > 0 when the analytic model is pessimistic."""
        return (self.predicted_mean_s - self.mean_s) / self.mean_s

    @property
    def p95_error(self) -> float:
        """(analytic − simulated) / simulated p95."""
        return (self.predicted_p95_s - self.p95_s) / self.p95_s

    @property
    def p99_error(self) -> float:
        """(analytic − simulated) / simulated p99."""
        return (self.predicted_p99_s - self.p99_s) / self.p99_s


def simulate_open_plan(
    problem: Problem,
    result: PlanResult,
    *,
    process: str = "poisson",
    burstiness: float = 1.0,
    n_requests: int = 50_000,
    arrivals: Arrivals | None = None,
    warmup: float = DEFAULT_WARMUP,
    rng: int | np.random.Generator | None = None,
) -> OpenSimulationCheck:
    """Serve a plan's requests as they arrive and compare with its analytic figures.

    Requests arrive at the problem's rates λ_c (Poisson, or a two-state Markov-modulated Poisson
    process with the same rates and index of dispersion ``burstiness``, or a given trace), are
    routed as the problem's realization says (smooth weighted round robin or independent draws),
    and each model serves its queue first-in first-out on its share, in batches of up to b_m
    (:func:`~genedge.optimizer.simulation.simulate_arrivals`). Each image's CLIPScore is drawn from
    Normal(μ[m,c], σ[m,c]²). The first ``warmup`` fraction of requests is left out, since the
    analytic figures are steady-state.

    Raises:
        ValueError: the problem is not an open-arrival one, the plan is unstable, or an unknown process.
    """
    gen = np.random.default_rng(rng)
    arrivals = _open_arrivals(problem, result, process, burstiness, n_requests, arrivals, gen)
    plan = result.plan
    routing = _routing_by_arrival_category(problem, result, arrivals)
    records = simulate_arrivals(
        arrivals,
        routing / routing.sum(axis=1, keepdims=True),
        result.service_s,
        max_batch=np.asarray(plan.batch_per_model),
        realization=problem.realization,
        rng=gen,
    )
    slo = None if problem.slo is None else problem.slo.seconds
    summary = records.summary(slo_s=slo, warmup=warmup)
    kept = np.zeros(len(records), dtype=bool)
    kept[summary.excluded :] = True
    index = {c: i for i, c in enumerate(problem.categories)}
    category = np.array([index.get(c, -1) for c in arrivals.categories])[records.category[kept]]
    model = records.model[kept]
    steps = plan.step_index
    scores = gen.normal(problem.mean_at(steps)[category, model], problem.std_at(steps)[category, model])
    overall = summary.overall
    energy = problem.energy_at(steps)
    utility = float(scores.mean()) - problem.weight * overall.mean_response_s
    if problem.energy_price > 0:
        utility -= problem.energy_price * float(energy[model].mean())
    return OpenSimulationCheck(
        process=process,
        burstiness=burstiness if process == "bursty" else 1.0,
        requests=int(kept.sum()),
        mean_quality=float(scores.mean()),
        mean_s=overall.mean_response_s,
        mean_se_s=overall.mean_response_se_s,
        p95_s=overall.p95_response_s,
        p99_s=overall.p99_response_s,
        attainment=overall.slo_attainment,
        predicted_mean_s=result.mean_delay_s,
        predicted_p95_s=result.p95_delay_s,
        predicted_p99_s=result.p99_delay_s,
        predicted_attainment=result.attainment,
        utility=utility,
        model_share=np.bincount(model, minlength=len(problem.models)) / model.size,
    )


def _open_arrivals(
    problem: Problem,
    result: PlanResult,
    process: str,
    burstiness: float,
    n_requests: int,
    arrivals: Arrivals | None,
    gen: np.random.Generator,
) -> Arrivals:
    """The arrivals :func:`simulate_open_plan` serves: the trace given, checked against the problem's
    categories, or ``n_requests`` drawn at the problem's rates from ``process``."""
    if not problem.delay.steady_state:
        raise ValueError("Expected an open-arrival problem (rates per category) to simulate arrivals")
    if not result.stable:
        raise ValueError("The plan cannot be stable: its queues grow without bound, there is nothing to simulate")
    if process not in PROCESSES:
        raise ValueError(f"Expected an arrival process among {list(PROCESSES)}, but got {process!r}")
    rates = dict(zip(problem.categories, problem.counts.tolist()))
    if process == "trace":
        if arrivals is None:
            raise ValueError("process 'trace' needs the arrivals to replay")
        present = {arrivals.categories[i] for i in np.unique(arrivals.category)}
        unknown = sorted(present - set(problem.categories))
        if unknown:
            raise ValueError(f"trace categories {unknown} are not planned for; expected {list(problem.categories)}")
        return arrivals
    if process == "poisson":
        return poisson_arrivals(rates, n_requests=n_requests, rng=gen)
    return mmpp_arrivals(rates, burstiness=burstiness, n_requests=n_requests, rng=gen)


def _routing_by_arrival_category(problem: Problem, result: PlanResult, arrivals: Arrivals) -> np.ndarray:
    """The plan's routing rows in the arrival sequence's category order, over its deployed models.

    A category without arrivals, which the problem leaves out, gets any deployed model: no request
    reads its row.
    """
    spare = result.deployed / result.deployed.sum()
    routing = np.stack(
        [
            result.plan.routing_matrix[problem.categories.index(c)] if c in problem.categories else spare
            for c in arrivals.categories
        ]
    )
    return np.where(result.deployed[None, :], routing, 0.0)  # residue below one request is no traffic


@dataclass(frozen=True)
class ArrivalModelComparison:
    """One plan under open arrivals: analytic figures and simulated ones per arrival process.

    Attributes:
        planned_under: ``window`` or ``open``: the delay model the plan was made for.
        plan: the plan evaluated on the open-arrival problem (its analytic M/D/1 figures).
        checks: arrival process → the simulation of the plan (empty where the plan cannot be stable).
    """

    planned_under: str
    plan: PlanResult
    checks: dict[str, OpenSimulationCheck]


def compare_arrival_models(
    window_problem: Problem,
    open_problem: Problem,
    *,
    method: str = "genedge",
    burstiness: float | None = None,
    trace: Arrivals | None = None,
    n_requests: int = 50_000,
    rng: int | np.random.Generator | None = None,
) -> list[ArrivalModelComparison]:
    """Plan one demand under the window model and under open arrivals; serve both plans to arrivals.

    The two problems must describe the same demand (n_c requests per window of T seconds ≡ rates
    n_c / T) on the same table. Each plan is re-evaluated on the open-arrival problem and simulated
    with Poisson arrivals, with ``burstiness`` a bursty MMPP of that index of dispersion, and with
    ``trace`` a replay of those arrivals.
    """
    from genedge.optimizer.planners import METHODS, make_result

    if window_problem.delay.steady_state or not open_problem.delay.steady_state:
        raise ValueError("Expected a window problem and an open-arrival problem of the same demand")
    gen = np.random.default_rng(rng)
    out = []
    for problem in (window_problem, open_problem):
        planned = METHODS[method](problem, rng=gen)
        p = planned.plan
        plan = make_result(
            open_problem, method, p.routing_matrix, p.step_index, p.share_vector, batch_index=p.batch_index
        )
        checks = {}
        if plan.stable:
            checks["poisson"] = simulate_open_plan(open_problem, plan, n_requests=n_requests, rng=gen)
            if burstiness is not None:
                checks["bursty"] = simulate_open_plan(
                    open_problem, plan, process="bursty", burstiness=burstiness, n_requests=n_requests, rng=gen
                )
            if trace is not None:
                checks["trace"] = simulate_open_plan(open_problem, plan, process="trace", arrivals=trace, rng=gen)
        out.append(ArrivalModelComparison(planned_under=problem.arrivals, plan=plan, checks=checks))
    return out
