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

from genedge.optimizer.problem import Problem
from genedge.optimizer.result import PlanResult

__all__ = ["SimulationCheck", "simulate_plan"]

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
    loads = result.loads
    variance = (problem.counts[:, None] * p * (1 - p)).sum(axis=0)
    finite = np.where(in_use, service, 0.0)
    predicted_delay = float((finite * (loads**2 + variance + loads) / 2).sum() / n)
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
