r"""The table's uncertain numbers as a parametric model, and seeded draws of them.

Every number the planner reads from a table is an estimate. A quality cell's mean comes from n
images (standard error ``mean_se``); a derived cell's from a rule whose width the table states; a
latency line's coefficients have standard errors of their own. :func:`parameter_model` lists these
uncertain parameters and how each moves the problem's arrays; :func:`draw_parameters` samples them
from their sampling distributions:

- a cell measured from n ≥ 2 images: σ*² = n·std² / χ²_{n−1} and μ* = mean + σ*·z/√n — jointly,
  the posterior of a Normal sample under the reference prior, so that (μ* − mean)/mean_se follows
  Student's t with n − 1 degrees of freedom, the exact pivot of a small sample; cells the table pairs
  (measured on the same prompts and seeds, :class:`~genedge.contract.table.PairedCells`) draw their z
  jointly, with the correlation of their means, so a difference between them errs as little as the
  shared prompts make it;
- a derived cell (n < 2): μ* ~ Normal(mean, mean_se²), σ* ~ Normal(std, std_se²) (kept above 5 % of std);
- a curve's ``b`` where the table states ``b_se``, and a latency line's overhead and per-step time
  where it states their standard errors: Normal. Energy lines are not sampled.

A grid step without a cell of its own moves with its neighbouring cells (linear interpolation of
their deviations; the nearest cell beyond the profiled range), plus ``−exp(−s/κ)·δb`` where the
curve's shape is uncertain: a curve refitted to perturbed cells moves the same way between them.
:func:`sample_arrays` turns draws into the problem's arrays and :func:`sample_problems` into problems;
:mod:`genedge.optimizer.analysis._uncertainty` assesses a plan on them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from genedge._seed import integer_seed
from genedge.optimizer.model import Problem

if TYPE_CHECKING:
    from genedge.contract.table import CalibrationTable, LatencyModel, ModelCalibration
    from genedge.optimizer.model import Workload

__all__ = [
    "DEFAULT_SAMPLES",
    "Parameter",
    "ParameterDraws",
    "ParameterModel",
    "SampleArrays",
    "draw_parameters",
    "parameter_model",
    "sample_arrays",
    "sample_problems",
]

#: Bootstrap samples of ``genedge plan`` by default: the Monte Carlo error of a probability is then
#: at most 0.5/√B ≈ 0.035.
DEFAULT_SAMPLES = 200
# A sampled spread is kept above this fraction of the table's (a Normal draw of a derived std can cross 0).
_MIN_STD_FRACTION = 0.05
# A sampled service time is kept above this fraction of the table's (a Normal draw can cross 0).
_MIN_SERVICE_FRACTION = 0.05


@dataclass(frozen=True)
class Parameter:
    """One uncertain number of the table behind a problem.

    Attributes:
        name: what it is, e.g. ``"sd15 Complex@50 mean"``, ``"sd15 Detail curve b"``, ``"sd21 per_step_s"``.
        kind: ``"cell"`` (a quality cell's mean and std), ``"curve_b"``, ``"overhead_s"`` or ``"per_step_s"``.
        model: the model's key.
        category: the cell's or curve's category, else None.
        steps: the cell's steps, else None.
        value: the table's estimate (a cell's mean).
        se: its standard error.
        n: images behind a cell (0 for a derived one); 0 for the other kinds.
        std: a cell's std (points), else None.
        std_se: a cell's standard error of std, else None.
    """

    name: str
    kind: str
    model: str
    category: str | None
    steps: int | None
    value: float
    se: float
    n: int = 0
    std: float | None = None
    std_se: float | None = None


@dataclass(frozen=True, eq=False)
class ParameterModel:
    """A problem's uncertain parameters and how each moves its arrays (all linear).

    Attributes:
        problem: the point-estimate problem.
        parameters: the uncertain parameters, length P.
        mean_weights: per model, ∂quality_mean[c, k] / ∂parameter, shape (C, K_m, P).
        service_weights: per model, ∂service_s[k] / ∂parameter, shape (K_m, P).
        fixed: what the bootstrap holds at the table's value because the table states no error for
            it, e.g. ``"sd15 latency"``; energy lines are always held.
        paired: cell parameters whose means err together (the table's paired cells, measured on the
            same prompts and seeds): each group's parameter indices and the correlation of their means.
    """

    problem: Problem
    parameters: tuple[Parameter, ...]
    mean_weights: tuple[np.ndarray, ...]
    service_weights: tuple[np.ndarray, ...]
    fixed: tuple[str, ...] = ()
    paired: tuple[tuple[tuple[int, ...], np.ndarray], ...] = ()

    def cells(self) -> list[int]:
        """Indices of the quality-cell parameters."""
        return [i for i, p in enumerate(self.parameters) if p.kind == "cell"]


def parameter_model(table: CalibrationTable, problem: Problem, workload: Workload | None = None) -> ParameterModel:
    """List the uncertain parameters of ``table`` that ``problem`` (built from it) reads.

    Args:
        table: the calibration table the problem was built from.
        problem: the problem (:meth:`Problem.from_table`).
        workload: its workload, where categories are served as mixtures of true ones (a router's
            errors); default: each category served as itself.
    """
    parameters = _ParameterList()
    # Per model: (served category, grid k) → {parameter: weight}, and grid k → {parameter: weight}.
    entries: list[dict[tuple[int, int], dict[int, float]]] = []
    services: list[dict[int, dict[int, float]]] = []
    fixed: list[str] = []
    for key, grid in zip(problem.models, problem.steps):
        model = table.models[key]
        mean_entries: dict[tuple[int, int], dict[int, float]] = {}
        for c, served in enumerate(problem.categories):
            shares = workload.true_shares(served) if workload is not None else {served: 1.0}
            for true, share in shares.items():
                _add_quality_weights(parameters, key, model, true, share, grid, mean_entries, c)
        entries.append(mean_entries)
        line = model.latency
        if not (line.overhead_se_s or line.per_step_se_s):
            fixed.append(f"{key} latency")
        services.append(_service_weights(parameters, key, line, grid))
    p = len(parameters.parameters)
    mean_weights = [
        _dense(entries_m, (len(problem.categories), grid.size), p) for grid, entries_m in zip(problem.steps, entries)
    ]
    service_weights = [_dense(service, (grid.size,), p) for grid, service in zip(problem.steps, services)]
    return ParameterModel(
        problem,
        tuple(parameters.parameters),
        tuple(mean_weights),
        tuple(service_weights),
        tuple(fixed),
        _paired_parameters(table, parameters),
    )


def _paired_parameters(
    table: CalibrationTable, parameters: _ParameterList
) -> tuple[tuple[tuple[int, ...], np.ndarray], ...]:
    """The table's paired cells among the problem's measured cell parameters (a group needs two)."""
    out = []
    for group in table.paired:
        found = {i: parameters.index((key, group.category, steps)) for i, (key, steps) in enumerate(group.cells)}
        measured = {i: j for i, j in found.items() if j is not None and parameters.parameters[j].n >= 2}
        if len(measured) >= 2:
            out.append((tuple(measured.values()), np.array(group.among(list(measured)).correlation)))
    return tuple(out)


class _ParameterList:
    """The parameters found so far, each once, in order of discovery."""

    def __init__(self) -> None:
        self.parameters: list[Parameter] = []
        self._index: dict[tuple, int] = {}

    def index(self, key: tuple) -> int | None:
        """The index of the parameter added under ``key``, or None."""
        return self._index.get(key)

    def add(self, key: tuple, parameter: Parameter) -> int:
        """``parameter``'s index, added under ``key`` unless it is there already."""
        if key not in self._index:
            self._index[key] = len(self.parameters)
            self.parameters.append(parameter)
        return self._index[key]


def _add_quality_weights(
    parameters: _ParameterList,
    key: str,
    model: ModelCalibration,
    true: str,
    share: float,
    grid: np.ndarray,
    mean_entries: dict[tuple[int, int], dict[int, float]],
    c: int,
) -> None:
    """Add how the true category ``true``'s cells and curve move served category ``c``'s quality over
    the grid, weighted by its ``share`` of the served requests, to ``mean_entries``."""
    ids = {
        s: parameters.add(
            (key, true, s),
            Parameter(
                name=f"{key} {true}@{s} mean",
                kind="cell",
                model=key,
                category=true,
                steps=s,
                value=cell.mean,
                se=float(cell.mean_se),
                n=cell.n,
                std=cell.std,
                std_se=float(cell.std_se),
            ),
        )
        for s, cell in model.quality[true].items()
    }
    curve = model.curves.get(true)
    b_id = None
    if curve is not None and curve.b_se:
        b_id = parameters.add(
            (key, true, "b"),
            Parameter(
                name=f"{key} {true} curve b",
                kind="curve_b",
                model=key,
                category=true,
                steps=None,
                value=float(curve.b),
                se=float(curve.b_se),
            ),
        )
    for k, s in enumerate(int(v) for v in grid):
        weights = mean_entries.setdefault((c, k), {})
        for pid, w in _grid_weights(sorted(ids), s).items():
            weights[ids[pid]] = weights.get(ids[pid], 0.0) + share * w
        if b_id is not None and s not in ids:
            weights[b_id] = weights.get(b_id, 0.0) - share * math.exp(-s / curve.kappa)


def _service_weights(
    parameters: _ParameterList, key: str, line: LatencyModel, grid: np.ndarray
) -> dict[int, dict[int, float]]:
    """How the latency line's coefficients that state an error move each grid step's service time:
    grid k → {parameter: weight}."""
    service: dict[int, dict[int, float]] = {}
    for kind, se in (("overhead_s", line.overhead_se_s), ("per_step_s", line.per_step_se_s)):
        if se:
            pid = parameters.add(
                (key, kind),
                Parameter(
                    name=f"{key} {kind}",
                    kind=kind,
                    model=key,
                    category=None,
                    steps=None,
                    value=float(getattr(line, kind)),
                    se=float(se),
                ),
            )
            for k, s in enumerate(grid):
                service.setdefault(k, {})[pid] = 1.0 if kind == "overhead_s" else float(s)
    return service


def _dense(entries: Mapping[Any, Mapping[int, float]], shape: tuple[int, ...], p: int) -> np.ndarray:
    """Sparse weights (index → {parameter: weight}) as an array of ``shape`` + (P,)."""
    w = np.zeros((*shape, p))
    for at, weights in entries.items():
        for pid, value in weights.items():
            w[at][pid] = value
    return w


def _grid_weights(cell_steps: list[int], steps: int) -> dict[int, float]:
    """How a grid step's quality moves with the cells' deviations: cell steps → weight."""
    if steps in cell_steps:
        return {steps: 1.0}
    below = [s for s in cell_steps if s < steps]
    above = [s for s in cell_steps if s > steps]
    if not below:
        return {above[0]: 1.0}
    if not above:
        return {below[-1]: 1.0}
    lo, hi = below[-1], above[0]
    t = (steps - lo) / (hi - lo)
    return {lo: 1.0 - t, hi: t}


@dataclass(frozen=True)
class ParameterDraws:
    """B draws of a :class:`ParameterModel`'s parameters.

    Attributes:
        delta: sampled minus estimated value, shape (B, P).
        std_ratio: sampled over estimated std of each cell parameter (1 for the other kinds), shape (B, P).
        seed: the seed they were drawn with.
    """

    delta: np.ndarray
    std_ratio: np.ndarray
    seed: int

    @property
    def samples(self) -> int:
        return self.delta.shape[0]

    def shrunk(self, parameter: int, factor: float) -> ParameterDraws:
        """The same draws with one parameter's deviation scaled by ``factor`` (its error shrunk)."""
        delta = self.delta.copy()
        delta[:, parameter] *= factor
        return dataclasses.replace(self, delta=delta)


def draw_parameters(
    model: ParameterModel, samples: int = DEFAULT_SAMPLES, rng: int | np.random.Generator | None = 0
) -> ParameterDraws:
    """Draw ``samples`` parameter vectors from their sampling distributions (module doc), seeded by ``rng``
    (a generator draws the integer seed the draws record)."""
    if samples < 2:
        raise ValueError(f"Expected at least 2 bootstrap samples, but got {samples}")
    seed = integer_seed(rng)
    gen = np.random.default_rng(seed)
    p = len(model.parameters)
    z = gen.standard_normal((samples, p))
    z_std = gen.standard_normal((samples, p))
    for indices, correlation in model.paired:
        z[:, indices] = z[:, indices] @ _correlation_root(correlation).T
    delta = np.empty((samples, p))
    ratio = np.ones((samples, p))
    for j, par in enumerate(model.parameters):
        if par.kind == "cell" and par.n >= 2:
            # One χ² per draw for both: σ*² = n·std²/χ²_{n−1}, μ* = mean + σ*·z/√n.
            chi2 = gen.chisquare(par.n - 1, samples)
            ratio[:, j] = np.sqrt(par.n / chi2)
            delta[:, j] = par.std * ratio[:, j] * z[:, j] / math.sqrt(par.n)
        else:
            delta[:, j] = par.se * z[:, j]
            if par.kind == "cell":
                ratio[:, j] = np.maximum(1.0 + par.std_se / par.std * z_std[:, j], _MIN_STD_FRACTION)
    return ParameterDraws(delta=delta, std_ratio=ratio, seed=seed)


def _correlation_root(correlation: np.ndarray) -> np.ndarray:
    """L with L Lᵀ the nearest correlation matrix to ``correlation`` with no negative eigenvalue (pairwise
    estimates need not be jointly consistent): its eigenvalues clipped at 0, rows rescaled to unit length."""
    values, vectors = np.linalg.eigh(correlation)
    root = vectors * np.sqrt(np.clip(values, 0.0, None))
    return root / np.linalg.norm(root, axis=1, keepdims=True)


@dataclass(frozen=True)
class SampleArrays:
    """The problem's arrays at each draw: per model quality mean and std (B, C, K_m), service (B, K_m)."""

    quality_mean: tuple[np.ndarray, ...]
    quality_std: tuple[np.ndarray, ...]
    service_s: tuple[np.ndarray, ...]


def sample_arrays(model: ParameterModel, draws: ParameterDraws) -> SampleArrays:
    """Apply the draws to the problem's arrays (linear in the deviations; module doc)."""
    problem = model.problem
    cell = np.array([p.kind == "cell" for p in model.parameters])
    rel = np.where(cell[None, :], draws.std_ratio - 1.0, 0.0)
    means, stds, services = [], [], []
    for m in range(len(problem.models)):
        w = model.mean_weights[m]
        means.append(problem.quality_mean[m][None] + np.einsum("ckp,bp->bck", w, draws.delta))
        # A std moves by the same weights, relative to itself.
        stretch = 1.0 + np.einsum("ckp,bp->bck", np.where(cell, w, 0.0), rel)
        stds.append(problem.quality_std[m][None] * np.maximum(stretch, _MIN_STD_FRACTION))
        base = problem.service_s[m]
        sampled = base[None] + draws.delta @ model.service_weights[m].T
        services.append(np.maximum(sampled, _MIN_SERVICE_FRACTION * base[None]))
    return SampleArrays(tuple(means), tuple(stds), tuple(services))


def sample_problems(problem: Problem, arrays: SampleArrays) -> list[Problem]:
    """One :class:`Problem` per draw: the point problem with its sampled arrays (:func:`sample_arrays`)."""
    out = []
    for b in range(arrays.service_s[0].shape[0]):
        service = tuple(s[b] for s in arrays.service_s)
        batch = None
        if problem.batch_service_s is not None:
            # Every batch line moves by the base line's relative change at each step count.
            batch = tuple(
                lines * (s / base)[None] for lines, s, base in zip(problem.batch_service_s, service, problem.service_s)
            )
        out.append(
            dataclasses.replace(
                problem,
                quality_mean=tuple(q[b] for q in arrays.quality_mean),
                quality_std=tuple(q[b] for q in arrays.quality_std),
                service_s=service,
                batch_service_s=batch,
            )
        )
    return out
