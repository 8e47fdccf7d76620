r"""How sure a plan is: a seeded parametric bootstrap of the calibration table behind it.

The table's uncertain numbers and their draws are :mod:`genedge.optimizer.analysis._table_parameters`.

:func:`assess` re-plans every sample (its optimum is the sample's own best plan) and evaluates the
chosen plan on it: the probability that each routing, steps and deployment decision is the one the
sample's optimum makes, and the expected regret E[U*(θ) − U(plan; θ)], each with its Monte Carlo
standard error. :func:`robust_plans` picks, on the same samples, the plan of highest expected
utility and the plan of highest lower quantile of utility among the samples' optima and the point
plan, so neither can be worse than the point plan on its own objective.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from genedge.optimizer.analysis._table_parameters import (
    DEFAULT_SAMPLES,
    ParameterDraws,
    ParameterModel,
    SampleArrays,
    draw_parameters,
    sample_arrays,
    sample_problems,
)
from genedge.optimizer.model import Problem, deployed_mask, evaluate, fifo_delay_coefficient, optimal_shares, score_plan

if TYPE_CHECKING:
    from genedge.optimizer.planners import PlanResult

__all__ = [
    "DEFAULT_QUANTILE",
    "FREQUENCY_CHECKED_IMAGES",
    "Assessment",
    "Bootstrap",
    "Decision",
    "RobustPlan",
    "assess",
    "assess_on",
    "bootstrap",
    "robust_plans",
    "whole_category_search_obstacle",
]

#: The lower quantile of utility a robust plan maximizes by default.
DEFAULT_QUANTILE = 0.10
#: Images per measured cell from which the claims have been checked as frequencies and held
#: (``tests/test_confidence_frequency.py``, ``benchmarks/confidence_frequency.py``). With fewer, on real
#: per-prompt scores, claims of 0.8–0.95 were right far less often and the expected regret was overstated.
FREQUENCY_CHECKED_IMAGES = 20
# Whole-category routings × step vectors the vectorized search enumerates at most.
_MAX_CONFIGURATIONS = 2_000_000


@dataclass(frozen=True, eq=False)
class Decision:
    """A plan's decisions, as the bootstrap compares them.

    Attributes:
        routing: p[c, m], shape (C, M).
        step_index: index into each model's step grid, length M.
        shares: compute share per model, shape (M,).
        batch_index: index into each model's batch sizes, or None for each model's base batch.
    """

    routing: np.ndarray
    step_index: tuple[int, ...]
    shares: np.ndarray
    batch_index: tuple[int, ...] | None = None

    @classmethod
    def of(cls, result: PlanResult) -> Decision:
        """The decisions of a planner's result."""
        plan = result.plan
        return cls(plan.routing_matrix, tuple(plan.step_index), plan.share_vector, tuple(plan.batch_index) or None)

    @classmethod
    def planned(cls, problem: Problem, routing: np.ndarray, step_index: Sequence[int]) -> Decision:
        """Routing and steps with the shares (and batches) the problem's objective gives them."""
        scored = score_plan(problem, problem.counts[:, None] * routing, step_index)
        return cls(
            np.asarray(routing, dtype=float), tuple(int(k) for k in step_index), scored.shares, scored.batch_index
        )

    def deployed(self, problem: Problem) -> np.ndarray:
        """Which models get requests, shape (M,)."""
        return deployed_mask(problem.counts @ self.routing)

    def key(self, problem: Problem) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The discrete decisions: each category's main model and each model's steps (−1 where not deployed)."""
        deployed = self.deployed(problem)
        main = tuple(int(m) for m in np.argmax(self.routing, axis=1))
        return main, tuple(int(k) if d else -1 for k, d in zip(self.step_index, deployed))


@dataclass(frozen=True)
class Assessment:
    """How sure one plan is, from B bootstrap samples of its table (module doc).

    Probabilities are fractions of samples; each carries the Monte Carlo standard error √(p(1−p)/B).

    Attributes:
        samples: B.
        seed: the seed of the draws.
        optimizer: how each sample's optimum was found.
        seconds: wall time of the whole assessment (s).
        point_utility: the plan's utility on the table's estimates.
        utility: the plan's utility on each sample, shape (B,).
        optimum: each sample's optimal utility, shape (B,) (at least ``utility``).
        optimism: each sample's optimal utility minus its optimal plan's utility on the table's
            estimates, shape (B,): how much a plan chosen as the best on noisy numbers flatters itself.
        routing: category → (model the plan sends most of it to, P(the sample's optimum does too)).
        steps: deployed model → (the plan's steps, P(the optimum deploys it at those steps)).
        alternatives: decision → (the samples' most frequent other choice, its probability), for each
            routing (``"routing <category>"``: a model key) and steps decision (``"steps <model>"``: steps,
            or ``"not deployed"``) that the samples ever decide otherwise.
        deployment: model → (the plan deploys it, P(the optimum decides the same)).
        plan_probability: P(the optimum makes every one of these decisions as the plan does).
        optimal_shares: model → (5th, 95th percentile) of the samples' optimal shares (a 90 % interval).
        feasible: fraction of samples in which the plan meets its SLO and quality floor, where it has one.
        optima: each sample's optimal decisions (:meth:`Decision.key`), length B.
        fixed: what was held at the table's value (:attr:`ParameterModel.fixed`).
        fewest_images: the fewest images of a measured cell the problem reads (None where none is measured):
            below :data:`FREQUENCY_CHECKED_IMAGES` the probabilities are the bootstrap's, not checked frequencies.
    """

    samples: int
    seed: int
    optimizer: str
    seconds: float
    point_utility: float
    utility: np.ndarray
    optimum: np.ndarray
    optimism: np.ndarray
    routing: Mapping[str, tuple[str, float]]
    steps: Mapping[str, tuple[int, float]]
    alternatives: Mapping[str, tuple[str, float]]
    deployment: Mapping[str, tuple[bool, float]]
    plan_probability: float
    optimal_shares: Mapping[str, tuple[float, float]]
    feasible: float | None
    optima: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    fixed: tuple[str, ...] = ()
    fewest_images: int | None = None

    @property
    def regret(self) -> np.ndarray:
        """U*(θ_b) − U(plan; θ_b) per sample, shape (B,), ≥ 0."""
        return self.optimum - self.utility

    @property
    def expected_regret(self) -> float:
        """Mean regret over the samples (points)."""
        return float(self.regret.mean())

    @property
    def regret_mc_se(self) -> float:
        """Monte Carlo standard error of :attr:`expected_regret` (points)."""
        return float(self.regret.std(ddof=1) / math.sqrt(self.samples))

    def probability_mc_se(self, p: float) -> float:
        """Monte Carlo standard error of a probability estimated from the samples."""
        return math.sqrt(p * (1 - p) / self.samples)

    def utility_interval(self, level: float = 0.90) -> tuple[float, float]:
        """A ``level`` interval of the plan's true utility (points).

        The plan was chosen as the best on the table's estimates, so its utility there is optimistic
        (the winner's curse). Each sample replays that choice with the sample as the estimates and
        the table as the truth: the interval is the central ``level`` range of point utility −
        :attr:`optimism`, the bootstrap's correction for selection and noise together.
        """
        tail = (1 - level) / 2
        lo, hi = np.quantile(self.point_utility - self.optimism, [tail, 1 - tail])
        return float(lo), float(hi)

    def to_dict(self) -> dict[str, object]:
        """The assessment as the plan file's ``uncertainty`` section (JSON types)."""
        lo, hi = self.utility_interval()
        return {
            "method": "parametric bootstrap of the calibration table",
            "samples": self.samples,
            "seed": self.seed,
            "sample_optimum": self.optimizer,
            "point_utility": self.point_utility,
            "utility_interval_90": [lo, hi],
            "expected_regret": self.expected_regret,
            "expected_regret_mc_se": self.regret_mc_se,
            "probability_mc_se_max": self.probability_mc_se(0.5),
            "routing": {
                c: {"model": m, "probability": p, **self._alternative(f"routing {c}")}
                for c, (m, p) in self.routing.items()
            },
            "steps": {
                k: {"steps": s, "probability": p, **self._alternative(f"steps {k}")} for k, (s, p) in self.steps.items()
            },
            "deployment": {k: {"deployed": d, "probability": p} for k, (d, p) in self.deployment.items()},
            "plan_probability": self.plan_probability,
            "optimal_share_interval_90": {k: list(v) for k, v in self.optimal_shares.items()},
            "feasible_fraction": self.feasible,
            "held_fixed": list(self.fixed),
            "fewest_images_per_cell": self.fewest_images,
            "seconds": self.seconds,
        }

    def _alternative(self, decision: str) -> dict[str, object]:
        if decision not in self.alternatives:
            return {}
        choice, p = self.alternatives[decision]
        return {"else": choice, "else_probability": p}

    @property
    def min_confidence(self) -> float:
        """The smallest probability of any routing, steps or deployment decision."""
        values = [p for _, p in self.routing.values()] + [p for _, p in self.steps.values()]
        return min(values + [p for _, p in self.deployment.values()])


def _most_frequent_other(choices: np.ndarray, chosen: int) -> tuple[int, float] | None:
    """The most frequent value of ``choices`` other than ``chosen``, and its frequency, or None."""
    values, counts = np.unique(choices[choices != chosen], return_counts=True)
    if values.size == 0:
        return None
    return int(values[np.argmax(counts)]), float(counts.max() / choices.size)


@functools.lru_cache(maxsize=2)
def _configurations(problem: Problem) -> _Configurations:
    """The problem's whole-category routings × step vectors, enumerated once per problem."""
    return _Configurations.enumerate(problem)


def whole_category_search_obstacle(problem: Problem) -> str | None:
    """Why each sample's optimum cannot be found by the vectorized whole-category search, or None if it can.

    That search scores every routing that sends each category to one model, at every step vector, with
    the closed-form optimal shares of the window model (DESIGN §3): the paper's objective, with an
    energy price, on deterministic routing. Elsewhere each sample is re-planned with a planner.
    """
    reasons = [
        *((name, True) for name in problem.delay.beyond_paper),
        ("an SLO", problem.slo is not None),
        ("a quality floor", problem.min_clipscore is not None),
        ("batching", problem.batch_sizes is not None),
        ("too many routings x step vectors", _configuration_count(problem) > _MAX_CONFIGURATIONS),
    ]
    found = [name for name, present in reasons if present]
    return None if not found else ", ".join(found)


def _configuration_count(problem: Problem) -> int:
    sizes = [g.size for g in problem.steps]
    # Σ over the sets S of models in use of (ways to route C categories onto exactly S) × Π_{m∈S} K_m,
    # bounded above by (Σ_m K_m)^C.
    return sum(sizes) ** len(problem.categories)


@dataclass(frozen=True)
class _Configurations:
    """Whole-category routings × step vectors.

    ``assign``: the model of each category, shape (n, C); ``steps``: each model's step index, −1
    where it serves nothing, shape (n, M).
    """

    assign: np.ndarray
    steps: np.ndarray

    @classmethod
    def enumerate(cls, problem: Problem) -> _Configurations:
        m, c = len(problem.models), len(problem.categories)
        assigns, steps = [], []
        for assign in itertools.product(range(m), repeat=c):
            used = np.zeros(m, dtype=bool)
            used[list(assign)] = True
            if not problem.fits_in_memory(used):
                continue
            ranges = [range(problem.steps[j].size) if used[j] else (-1,) for j in range(m)]
            for vector in itertools.product(*ranges):
                assigns.append(assign)
                steps.append(vector)
        return cls(np.array(assigns, dtype=int).reshape(-1, c), np.array(steps, dtype=int).reshape(-1, m))

    def utility(self, problem: Problem, arrays: SampleArrays, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Each sample's best configuration: (utility (B,), configuration index (B,))."""
        m, c = len(problem.models), len(problem.categories)
        counts = problem.counts
        energy = problem.energy_j if problem.energy_price > 0 else None
        value = [
            arrays.quality_mean[j] - (0.0 if energy is None else problem.energy_price * energy[j][None, None, :])
            for j in range(m)
        ]
        sizes = [g.size for g in problem.steps]
        offsets = np.concatenate([[0], np.cumsum([c * k for k in sizes])])[:-1]
        flat = np.concatenate([v.reshape(v.shape[0], -1) for v in value], axis=1)  # (B, Σ C·K_m)
        service_offsets = np.concatenate([[0], np.cumsum(sizes)])[:-1]
        service = np.concatenate(arrays.service_s, axis=1)  # (B, Σ K_m)
        samples = flat.shape[0]
        best = np.full(samples, -np.inf)
        where = np.zeros(samples, dtype=int)
        for start in range(0, self.assign.shape[0], chunk):
            assign, steps = self.assign[start : start + chunk], self.steps[start : start + chunk]
            k_of = np.take_along_axis(steps, assign, axis=1)  # (n, C): the step index of each category's model
            index = offsets[assign] + np.arange(c)[None, :] * np.asarray(sizes)[assign] + k_of
            quality = (flat[:, index] * counts).sum(axis=-1)  # (B, n): Σ_c n_c · value
            loads = (assign[..., None] == np.arange(m)).astype(float).transpose(0, 2, 1) @ counts  # (n, M)
            full = service[:, service_offsets[None, :] + np.maximum(steps, 0)]  # (B, n, M)
            root = np.where(steps >= 0, np.sqrt(fifo_delay_coefficient(full, loads[None])), 0.0)
            total = (quality - problem.weight * root.sum(axis=-1) ** 2 / problem.budget) / problem.n_requests
            chunk_best = total.argmax(axis=1)
            value_best = total[np.arange(samples), chunk_best]
            better = value_best > best
            best[better] = value_best[better]
            where[better] = start + chunk_best[better]
        return best, where

    def decision(self, problem: Problem, i: int, service_s: Sequence[np.ndarray]) -> Decision:
        """Configuration ``i`` as a plan, with the shares optimal at the given service times."""
        m = len(problem.models)
        routing = np.zeros((len(problem.categories), m))
        routing[np.arange(routing.shape[0]), self.assign[i]] = 1.0
        steps = tuple(int(k) if k >= 0 else problem.default_step_index[j] for j, k in enumerate(self.steps[i]))
        full = np.array([service_s[j][steps[j]] for j in range(m)])
        shares = optimal_shares(full, problem.counts @ routing, problem.budget)
        return Decision(routing, steps, shares)


def _plan_utilities(
    problem: Problem, decision: Decision, arrays: SampleArrays, problems: Callable[[], Sequence[Problem]]
) -> tuple[np.ndarray, np.ndarray]:
    """A fixed plan's utility and feasibility on each sample (``problems()`` gives them as problems).

    Where the whole-category search applies (:func:`whole_category_search_obstacle`), ``arrays`` gives
    the same figures as :func:`~genedge.optimizer.model.evaluate` in one vectorized pass: U = (Σ x·(μ − κe) − w Σ_m
    K_m / r_m) / N with K_m = t_m N_m (N_m + 1) / 2 (DESIGN §3).
    """
    if whole_category_search_obstacle(problem) is None:
        requests = problem.counts[:, None] * decision.routing  # (C, M)
        loads = requests.sum(axis=0)
        used = deployed_mask(loads)
        energy = problem.energy_at(decision.step_index) if problem.energy_price > 0 else np.zeros(len(loads))
        k = decision.step_index
        value = np.stack([arrays.quality_mean[j][:, :, k[j]] for j in range(len(loads))], axis=-1)  # (B, C, M)
        quality = ((value - problem.energy_price * energy[None, None, :]) * requests).sum(axis=(1, 2))
        full = np.stack([arrays.service_s[j][:, k[j]] for j in range(len(loads))], axis=-1)  # (B, M)
        shares = np.where(used, decision.shares, 1.0)
        delay = np.where(used, fifo_delay_coefficient(full, loads) / shares, 0.0).sum(axis=1)
        return (quality - problem.weight * delay) / problem.n_requests, np.ones(delay.shape[0], dtype=bool)
    samples = problems()
    utility = np.empty(len(samples))
    feasible = np.empty(len(samples), dtype=bool)
    for b, sample in enumerate(samples):
        e = evaluate(sample, decision.routing, decision.step_index, decision.shares, decision.batch_index)
        utility[b], feasible[b] = e.utility, e.feasible and (e.shortfall is None or _floor_met(sample, e))
    return utility, feasible


def _floor_met(problem: Problem, evaluation) -> bool:
    return bool((evaluation.shortfall <= problem.max_shortfall + 1e-9).all())


@dataclass(frozen=True, eq=False)
class Bootstrap:
    """Draws, their arrays, and each one's optimal utility and plan."""

    model: ParameterModel
    draws: ParameterDraws
    arrays: SampleArrays
    optimum: np.ndarray
    optima: list[Decision]
    optimizer: str

    @functools.cached_property
    def problems(self) -> list[Problem]:
        """Each draw as a :class:`Problem` (built when first asked for: the vectorized path needs none)."""
        return sample_problems(self.model.problem, self.arrays)

    def plan_utilities(self, decision: Decision) -> tuple[np.ndarray, np.ndarray]:
        """A fixed plan's utility and feasibility on each draw, shape (B,) each."""
        return _plan_utilities(self.model.problem, decision, self.arrays, lambda: self.problems)

    def regret(self, decision: Decision) -> np.ndarray:
        """U*(θ_b) − U(plan; θ_b) on each draw, shape (B,), ≥ 0 (the plan may beat the search's optimum)."""
        utility = self.plan_utilities(decision)[0]
        return np.maximum(self.optimum, utility) - utility


def bootstrap(
    model: ParameterModel,
    draws: ParameterDraws,
    method: str = "exact",
    progress: Callable[[int, int], None] | None = None,
) -> Bootstrap:
    """The draws' problems and each one's optimal plan (by the whole-category search where it applies,
    else re-planned with ``method``)."""
    problem = model.problem
    arrays = sample_arrays(model, draws)
    if whole_category_search_obstacle(problem) is None:
        configurations = _configurations(problem)
        optimum, where = configurations.utility(problem, arrays)
        optima = [
            configurations.decision(problem, int(i), [s[b] for s in arrays.service_s]) for b, i in enumerate(where)
        ]
        name = f"every whole-category routing x step vector ({configurations.assign.shape[0]:,}), optimal shares"
        return Bootstrap(model, draws, arrays, optimum, optima, name)
    from genedge.optimizer.planners import METHODS, check_methods

    check_methods([method])
    boot = Bootstrap(model, draws, arrays, np.empty(draws.samples), [], f"re-planned with {method!r}")
    problems = boot.problems
    optimum, optima = boot.optimum, boot.optima
    for b, sample in enumerate(problems):
        result = METHODS[method](sample, rng=draws.seed + b)
        optimum[b] = result.utility
        optima.append(Decision.of(result))
        if progress is not None:
            progress(b + 1, len(problems))
    return boot


def assess(
    model: ParameterModel,
    plan: PlanResult | Decision,
    *,
    samples: int = DEFAULT_SAMPLES,
    rng: int | np.random.Generator | None = 0,
    method: str = "exact",
    progress: Callable[[int, int], None] | None = None,
) -> Assessment:
    """How sure ``plan`` is, from a seeded parametric bootstrap of the table (module doc).

    Args:
        model: the uncertain parameters of the plan's problem (:func:`parameter_model`).
        plan: the plan, as a planner's result or a :class:`Decision`.
        samples: bootstrap samples B.
        rng: seed or generator of the draws; the same seed gives the same assessment.
        method: the planner that finds each sample's optimum where the vectorized whole-category
            search does not apply (SLOs, floors, open arrivals, batching).
        progress: called with (samples done, samples) while re-planning.
    """
    started = time.perf_counter()
    boot = bootstrap(model, draw_parameters(model, samples, rng), method, progress)
    return assess_on(boot, plan if isinstance(plan, Decision) else Decision.of(plan), time.perf_counter() - started)


def assess_on(boot: Bootstrap, decision: Decision, seconds_so_far: float = 0.0) -> Assessment:
    """Assess a plan on an existing bootstrap (so several plans compare on the same samples)."""
    started = time.perf_counter()
    problem = boot.model.problem
    utility, feasible = boot.plan_utilities(decision)
    optimum = np.maximum(boot.optimum, utility)
    main, steps = decision.key(problem)
    keys = [d.key(problem) for d in boot.optima]
    mains = np.array([k[0] for k in keys])
    stepss = np.array([k[1] for k in keys])
    routing = {
        c: (problem.models[main[i]], float((mains[:, i] == main[i]).mean())) for i, c in enumerate(problem.categories)
    }
    deployed = np.array(steps) >= 0
    step_p = {
        key: (int(problem.steps[j][steps[j]]), float((stepss[:, j] == steps[j]).mean()))
        for j, key in enumerate(problem.models)
        if deployed[j]
    }
    deployment = {
        key: (bool(deployed[j]), float(((stepss[:, j] >= 0) == deployed[j]).mean()))
        for j, key in enumerate(problem.models)
    }
    same = (mains == np.array(main)).all(axis=1) & (stepss == np.array(steps)).all(axis=1)
    alternatives = {}
    for i, c in enumerate(problem.categories):
        other = _most_frequent_other(mains[:, i], main[i])
        if other is not None:
            alternatives[f"routing {c}"] = (problem.models[other[0]], other[1])
    for j, key in enumerate(problem.models):
        other = _most_frequent_other(stepss[:, j], steps[j]) if deployed[j] else None
        if other is not None:
            label = "not deployed" if other[0] < 0 else str(int(problem.steps[j][other[0]]))
            alternatives[f"steps {key}"] = (label, other[1])
    shares = np.array([d.shares for d in boot.optima])
    constrained = problem.slo is not None or problem.min_clipscore is not None
    point = evaluate(problem, decision.routing, decision.step_index, decision.shares, decision.batch_index).utility
    # The point problem as a batch of one sample, for the vectorized utilities where they apply.
    point_arrays = SampleArrays(
        tuple(q[None] for q in problem.quality_mean),
        tuple(q[None] for q in problem.quality_std),
        tuple(q[None] for q in problem.service_s),
    )
    at_point: dict[tuple, float] = {}  # the samples' optima repeat: evaluate each distinct one once
    optimism = np.empty(len(boot.optima))
    for b, d in enumerate(boot.optima):
        key = (d.routing.tobytes(), d.step_index, d.shares.tobytes(), d.batch_index)
        if key not in at_point:
            at_point[key] = float(_plan_utilities(problem, d, point_arrays, lambda: [problem])[0][0])
        optimism[b] = boot.optimum[b] - at_point[key]
    return Assessment(
        samples=boot.draws.samples,
        seed=boot.draws.seed,
        optimizer=boot.optimizer,
        seconds=seconds_so_far + time.perf_counter() - started,
        point_utility=float(point),
        utility=utility,
        optimum=optimum,
        optimism=optimism,
        routing=routing,
        steps=step_p,
        alternatives=alternatives,
        deployment=deployment,
        plan_probability=float(same.mean()),
        optimal_shares={
            key: tuple(float(v) for v in np.quantile(shares[:, j], [0.05, 0.95]))
            for j, key in enumerate(problem.models)
        },
        feasible=float(feasible.mean()) if constrained else None,
        optima=tuple(keys),
        fixed=boot.model.fixed,
        fewest_images=min((p.n for p in boot.model.parameters if p.kind == "cell" and p.n >= 2), default=None),
    )


@dataclass(frozen=True)
class RobustPlan:
    """One plan's figures on the bootstrap samples, beside the others on the same samples.

    Attributes:
        objective: what it maximizes: ``"point estimate"``, ``"expected utility"`` or ``"q10 utility"``.
        decision: the plan.
        assessment: its figures on the samples (regret, decision probabilities, utility per sample).
        expected_utility: mean utility over the samples.
        quantile_utility: the ``quantile`` lower quantile of utility over the samples.
        quantile: that quantile's level.
    """

    objective: str
    decision: Decision
    assessment: Assessment
    expected_utility: float
    quantile_utility: float
    quantile: float


def robust_plans(
    model: ParameterModel,
    point: PlanResult | Decision,
    *,
    samples: int = DEFAULT_SAMPLES,
    rng: int | np.random.Generator | None = 0,
    quantile: float = DEFAULT_QUANTILE,
    method: str = "exact",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, RobustPlan]:
    """The point plan, the expected-utility plan and the lower-quantile plan, on the same samples.

    The candidates are the point plan and every sample's optimal routing and steps (with the shares
    the point estimates give them); each is evaluated on every sample, and the robust plans are the
    candidates of highest mean and of highest ``quantile`` lower quantile of utility. The point plan
    is a candidate, so neither is worse than it on its own objective over these samples.

    Returns:
        ``"point"``, ``"expected"`` and ``"quantile"`` → :class:`RobustPlan`, whose ``objective`` says
        what each maximizes (``"point estimate"``, ``"expected utility"``, ``"q<quantile·100> utility"``).
    """
    if not 0 < quantile < 1:
        raise ValueError(f"Expected a quantile in (0, 1), e.g. 0.1, but got {quantile}")
    started = time.perf_counter()
    problem = model.problem
    boot = bootstrap(model, draw_parameters(model, samples, rng), method, progress)
    point_decision = point if isinstance(point, Decision) else Decision.of(point)
    candidates = {point_decision.key(problem): point_decision}
    for optimum in boot.optima:
        key = optimum.key(problem)
        if key not in candidates:
            candidates[key] = Decision.planned(problem, optimum.routing, optimum.step_index)
    decisions = list(candidates.values())
    utilities = np.array([boot.plan_utilities(d)[0] for d in decisions])
    expected = utilities.mean(axis=1)
    lower = np.quantile(utilities, quantile, axis=1)
    # argmax takes the first of equals: the point plan (first) wins ties.
    chosen = {
        "point": ("point estimate", 0),
        "expected": ("expected utility", int(np.argmax(expected))),
        "quantile": (f"q{100 * quantile:g} utility", int(np.argmax(lower))),
    }
    elapsed = time.perf_counter() - started
    return {
        name: RobustPlan(
            objective=objective,
            decision=decisions[i],
            assessment=assess_on(boot, decisions[i], elapsed),
            expected_utility=float(expected[i]),
            quantile_utility=float(lower[i]),
            quantile=quantile,
        )
        for name, (objective, i) in chosen.items()
    }
