"""The calibration table's types and model maths: what the planner knows about each model on a device.

A calibration table is one JSON document per device (DESIGN §2.3). Per model it
holds the CLIPScore distribution of each prompt category at each profiled step
count, a quality-versus-steps curve for step counts in between, a latency model
at full device share (and, for a model profiled at several batch sizes, one latency line per
batch size), peak memory and, where it was measured, an energy model. Every number carries a ``source``:
``measured`` (by genedge on this device), ``published`` (measured by others, with
a citation) or ``derived`` (by a rule written in the table's ``sources``).

Reading, validating and writing a table live in :mod:`genedge.contract.table_file`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from genedge.contract.bounds import MAX_JOULES, MAX_MEMORY_BYTES, MAX_SECONDS, MAX_WATTS
from genedge.contract.clip import ClipConvention
from genedge.contract.runs import HOST_MEMORY_COLUMNS

__all__ = [
    "HOST_MEMORY_FIELDS",
    "MAX_JOULES",
    "MAX_MEMORY_BYTES",
    "MAX_SECONDS",
    "MAX_WATTS",
    "Source",
    "QualityCell",
    "QualityCurve",
    "StageBreakdown",
    "LatencyModel",
    "EnergyModel",
    "MemoryPeak",
    "Exclusion",
    "PairedCells",
    "ModelCalibration",
    "ProfiledModel",
    "ProfileRun",
    "TableManifest",
    "ProfileSettings",
    "CalibrationTable",
    "saturating_mean",
    "cell_error_problem",
    "cell_standard_errors",
    "SE_RTOL",
]

#: The host memory peaks of a model (:class:`MemoryPeak` fields), one per host memory record column.
HOST_MEMORY_FIELDS: tuple[str, ...] = tuple(column.removeprefix("peak_") for column in HOST_MEMORY_COLUMNS)

Source = Literal["measured", "published", "derived"]
CurveForm = Literal["saturating_exp", "linear_interpolation"]


#: Relative tolerance within which a cell's stated standard errors must equal those its n implies.
SE_RTOL = 1e-6


def cell_standard_errors(std: float, n: int) -> tuple[float, float]:
    """Standard errors of a cell's mean and std fitted from ``n`` ≥ 2 images: ``(mean_se, std_se)``.

    ``std`` is the maximum-likelihood spread (ddof = 0) of :func:`~genedge.calibrate.fit.fit_quality`,
    so the sample SD is s = std·√(n/(n−1)) and

    .. math:: \\mathrm{SE}(\\bar x) = \\frac{s}{\\sqrt n} = \\frac{\\mathrm{std}}{\\sqrt{n-1}}, \\qquad
              \\mathrm{SE}(\\hat\\sigma) \\approx \\frac{\\mathrm{std}}{\\sqrt{2(n-1)}}.

    (x̄ − μ)/SE(x̄) follows Student's t with n − 1 degrees of freedom for Normal scores, which
    is how :mod:`genedge.optimizer.analysis._table_parameters` samples a cell's mean.
    """
    if n < 2:
        raise ValueError(f"Expected n >= 2 images for a standard error, but got {n}")
    return std / math.sqrt(n - 1), std / math.sqrt(2 * (n - 1))


@dataclass(frozen=True)
class QualityCell:
    """CLIPScore ~ Normal(mean, std²) for one (model, category, steps) cell, and how sure it is.

    Attributes:
        mean: mean CLIPScore (points, 0–100 scale).
        std: standard deviation (points, > 0), the maximum-likelihood (ddof = 0) spread.
        n: number of images behind the fit (0 for a derived cell).
        gof: goodness-of-fit p-value of the Normal fit (KS or Shapiro–Wilk), or
            None where it was not computed (published or derived cells).
        source: provenance of the numbers.
        ref: key into the table's ``sources`` that cites or states the rule.
        flags: reasons to read the cell with care (e.g. ``"few_samples"``: too few
            images for a goodness-of-fit test; ``"non_normal"``: the test rejects
            normality); empty for a clean cell. Written only when non-empty.
        mean_se: standard error of ``mean`` (points). With n ≥ 2 it is the one n implies
            (:func:`cell_standard_errors`, filled in when not given); with n < 2 (a derived cell) it
            is the width the cell's rule implies, stated in ``sources``, and must be given.
        std_se: standard error of ``std`` (points), the same way.
    """

    mean: float
    std: float
    n: int
    gof: float | None
    source: Source
    ref: str
    flags: tuple[str, ...] = ()
    mean_se: float | None = None
    std_se: float | None = None

    def __post_init__(self) -> None:
        if self.n >= 2:
            implied = cell_standard_errors(self.std, self.n)
            object.__setattr__(self, "mean_se", implied[0] if self.mean_se is None else self.mean_se)
            object.__setattr__(self, "std_se", implied[1] if self.std_se is None else self.std_se)
        problem = cell_error_problem(self.std, self.n, self.mean_se, self.std_se)
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")


def cell_error_problem(std: float, n: int, mean_se: float | None, std_se: float | None) -> tuple[str, str] | None:
    """What is wrong with a cell's stated standard errors, as ``(field, message)``, or None.

    With n ≥ 2 they must equal :func:`cell_standard_errors` (within :data:`SE_RTOL`); with n < 2
    they must be given (the width of the cell's rule), and they are never negative.
    """
    for name, value in (("mean_se", mean_se), ("std_se", std_se)):
        if value is None:
            if n < 2:
                return name, f"a cell from n = {n} images must state its {name} (the width its rule implies)"
        elif not (math.isfinite(value) and value >= 0):
            return name, f"expected a finite standard error >= 0, but got {value}"
    if n >= 2:
        for name, value, implied in zip(("mean_se", "std_se"), (mean_se, std_se), cell_standard_errors(std, n)):
            if value is not None and not math.isclose(value, implied, rel_tol=SE_RTOL):
                return name, f"{value:g} contradicts n = {n} and std = {std:g}, which imply {implied:g}"
    return None


def saturating_mean(steps: np.ndarray | float, a: float, b: float, kappa: float) -> np.ndarray | float:
    """Mean CLIPScore at ``steps`` denoising steps on a ``saturating_exp`` curve: ``a − b·exp(−steps/kappa)``.

    ``a`` is the level quality saturates at, ``b`` how far below it quality starts,
    ``kappa`` (steps) how fast it gets there.
    """
    return a - b * np.exp(-np.asarray(steps, dtype=float) / kappa)


@dataclass(frozen=True)
class QualityCurve:
    """Quality versus denoising steps for one (model, category), for steps between cells.

    ``saturating_exp``: mean(s) = a − b·exp(−s/kappa), std(s) = std. It is valid on
    ``valid_steps = [lo, hi]`` only; outside it the table refuses to answer.

    ``linear_interpolation``: mean and std interpolate linearly between the
    neighbouring profiled cells (used when too few step counts were profiled to
    fit the saturating form); also only inside the profiled range.

    ``b_se`` (saturating form only, optional): the standard error of ``b`` where the curve's shape
    is uncertain beyond its cells, e.g. a shape carried over from another model by a rule (the rule
    in ``sources`` states it). A curve fitted to its own cells has none: between cells, its
    uncertainty is that of the neighbouring cells.
    """

    form: CurveForm
    valid_steps: tuple[int, int]
    source: Source
    ref: str
    a: float | None = None
    b: float | None = None
    kappa: float | None = None
    std: float | None = None
    b_se: float | None = None


@dataclass(frozen=True)
class StageBreakdown:
    """Mean seconds per image in each pipeline stage at one step count (full device share)."""

    text_encode_s: float
    denoise_s: float
    decode_s: float


@dataclass(frozen=True)
class LatencyModel:
    """Seconds per pipeline call at full device share: ``overhead_s + per_step_s · steps``.

    One call generates ``batch_size`` images (one image where ``batch_size`` is 1 or None), so
    the line is the service time of one image only at batch size 1.

    Attributes:
        overhead_s: text encoding, VAE decoding and launch overhead (s).
        per_step_s: one denoising step, guidance included (s).
        n: number of measurements behind the fit (0 if derived).
        r2: coefficient of determination of the fit, or None.
        source: provenance; ref: key into ``sources``.
        overhead_se_s: standard error of ``overhead_s`` (s), or None.
        per_step_se_s: standard error of ``per_step_s`` (s), or None.
        residual_std_s: standard deviation of the fit's residuals (s, ddof = 2), or None.
        step_p50_s: median of the individual denoising-step latencies (s), or None.
        step_p95_s: 95th percentile of the individual denoising-step latencies (s), or None.
        batch_size: images per pipeline call in the measurements, or None.
        stages: steps → mean stage breakdown at that step count (empty where not measured).

    The optional fields are written only when present, so a table without them
    keeps its bytes.
    """

    overhead_s: float
    per_step_s: float
    n: int
    r2: float | None
    source: Source
    ref: str
    overhead_se_s: float | None = None
    per_step_se_s: float | None = None
    residual_std_s: float | None = None
    step_p50_s: float | None = None
    step_p95_s: float | None = None
    batch_size: int | None = None
    stages: Mapping[int, StageBreakdown] = field(default_factory=dict)

    def seconds(self, steps: int | float) -> float:
        """Service time of one pipeline call (one image at batch size 1) at ``steps`` steps, whole device (s)."""
        return self.overhead_s + self.per_step_s * steps


@dataclass(frozen=True)
class EnergyModel:
    """Joules per image at full device share: ``overhead_j + per_step_j · steps``.

    The energy of a pipeline call per image of its batch, as the power meter measured it (e.g. the
    GPU's NVML energy counter), fitted like :class:`LatencyModel`.

    Attributes:
        overhead_j: text encoding, VAE decoding and launch overhead (J).
        per_step_j: one denoising step, guidance included (J).
        n: number of measured images behind the fit.
        r2: coefficient of determination of the fit, or None.
        source: provenance; ref: key into ``sources``.
        overhead_se_j, per_step_se_j: standard errors of the coefficients (J), or None.
        residual_std_j: standard deviation of the fit's residuals (J), or None.
        average_power_w: mean of the calls' average power (W), or None.

    The optional fields are written only when present.
    """

    overhead_j: float
    per_step_j: float
    n: int
    r2: float | None
    source: Source
    ref: str
    overhead_se_j: float | None = None
    per_step_se_j: float | None = None
    residual_std_j: float | None = None
    average_power_w: float | None = None

    def joules(self, steps: int | float) -> float:
        """Energy of one image at ``steps`` steps on the whole device (J)."""
        return self.overhead_j + self.per_step_j * steps


@dataclass(frozen=True)
class MemoryPeak:
    """Peak memory of one pipeline process (bytes) and what it counts.

    The GPU rungs are the peaks of the memory ladder (DESIGN §4:
    torch allocated ≤ torch reserved ≤ NVML process ≤ NVML device), each None
    where it was not measurable. The host peaks are the process's resident set
    (``rss_bytes``) and, where CPU and GPU share memory (a Jetson), the memory used on
    the whole machine (``system_memory_bytes``). ``kind`` names what ``peak_bytes`` is:
    a GPU rung, ``"rss"`` on a run without a GPU rung (a CPU run), or how it was derived.
    """

    peak_bytes: int
    kind: str
    source: Source
    ref: str
    torch_allocated_bytes: int | None = None
    torch_reserved_bytes: int | None = None
    nvml_process_bytes: int | None = None
    nvml_device_bytes: int | None = None
    rss_bytes: int | None = None
    system_memory_bytes: int | None = None


@dataclass(frozen=True)
class Exclusion:
    """Profile records left out of a table's fits, and why (nothing is dropped silently).

    Attributes:
        model_key: the model whose records were left out.
        steps: their step count.
        reason: why, e.g. ``"status=oom"`` or ``"clip_score is null (quality fits only)"``.
        rows: how many records.
    """

    model_key: str
    steps: int
    reason: str
    rows: int


@dataclass(frozen=True)
class PairedCells:
    """Quality cells of one category measured on the same images' prompts and seeds, so their means err together.

    A profile generates every model and step count from the same prompts and seeds, and a prompt that is
    hard for one model is hard for the others: per-image scores of two cells correlate (0.2–0.9 between
    SD3-Medium variants on PartiPrompts). Their cell means then err together, and a difference between
    them is known far better than two independent errors say. The bootstrap draws the means of paired
    cells jointly with this correlation.

    Attributes:
        category: the cells' category.
        cells: (model key, steps) of each paired cell.
        correlation: corr(mean_a, mean_b) of each pair of cells, r_ab · k_ab / √(n_a n_b), where r_ab is the
            correlation of their scores over the k_ab images they share (same prompt and seed), n their
            image counts; 1 on the diagonal.
    """

    category: str
    cells: tuple[tuple[str, int], ...]
    correlation: tuple[tuple[float, ...], ...]

    def among(self, keep: list[int]) -> PairedCells:
        """The pairing of the cells at positions ``keep`` alone (their rows and columns of the correlation)."""
        matrix = tuple(tuple(self.correlation[a][b] for b in keep) for a in keep)
        return PairedCells(self.category, tuple(self.cells[i] for i in keep), matrix)


@dataclass(frozen=True)
class ModelCalibration:
    """Everything the planner knows about one model on the table's device.

    Attributes:
        key: short model key, e.g. ``"sd15"``.
        name: human-readable name and hub id.
        resolution: output image side (px).
        steps: the step grid the planner may choose from (sorted, unique, > 0).
        default_steps: steps used by plans that do not choose (in ``steps``).
        quality: category → steps → cell.
        curves: category → quality-versus-steps curve.
        latency: latency model at full share.
        memory: peak memory.
        is_replica: True for a random-weight replica of the architecture: its latency
            and memory are real, its CLIPScores are not quality. Written only when True.
        energy: energy model at full share, or None where no energy was measured.
            Written only when present.
        batch_latency: batch size b → latency line of one pipeline call of b images at full share:
            ``call_seconds(steps, b) = o(b) + τ(b)·steps`` seconds for all b images together (per
            image: divide by b). Present only for a model profiled at several batch sizes, and
            then holding every measured batch size. ``latency`` is always the line of the smallest
            batch size measured (its ``batch_size``; 1 where unspecified), so a reader that knows
            only ``latency`` reads what it always did; where that batch size is also a key here,
            both lines have the same coefficients. Batch lines carry no step percentiles or stage
            breakdown (those stay on ``latency``) and ``energy`` is per image at ``latency``'s batch
            size. No batch size between or beyond the measured ones is answered. Written (as
            ``"batch_latency": {"<b>": {latency line}}``) only when non-empty.
    """

    key: str
    name: str
    resolution: int
    steps: tuple[int, ...]
    default_steps: int
    quality: Mapping[str, Mapping[int, QualityCell]]
    curves: Mapping[str, QualityCurve]
    latency: LatencyModel
    memory: MemoryPeak
    is_replica: bool = False
    energy: EnergyModel | None = None
    batch_latency: Mapping[int, LatencyModel] = field(default_factory=dict)

    @property
    def base_batch_size(self) -> int:
        """Images per call of the ``latency`` line (1 where the table does not say)."""
        return self.latency.batch_size or 1

    def batch_sizes(self) -> tuple[int, ...]:
        """Every batch size this model has a latency line for, ascending (always ``latency``'s)."""
        return tuple(sorted({self.base_batch_size, *self.batch_latency}))

    def call_seconds(self, steps: int | float, batch_size: int) -> float:
        """Service time of one pipeline call of ``batch_size`` images at ``steps`` steps, full device (s).

        Raises:
            KeyError: no line was measured at ``batch_size`` (the message lists :meth:`batch_sizes`).
        """
        line = self.batch_latency.get(batch_size)
        if line is None:
            if batch_size != self.base_batch_size:
                raise KeyError(
                    f"model {self.key!r}: no latency line at batch size {batch_size} "
                    f"(measured: {list(self.batch_sizes())})"
                )
            line = self.latency
        return line.seconds(steps)

    def quality_at(self, category: str, steps: int) -> tuple[float, float]:
        """Return ``(mean, std)`` of CLIPScore for ``category`` at ``steps`` steps.

        A profiled cell answers directly; otherwise the category's curve does,
        inside its valid range only.

        Raises:
            KeyError: unknown category, or steps outside every cell and curve.
        """
        cells = self.quality[category]
        if steps in cells:
            cell = cells[steps]
            return cell.mean, cell.std
        curve = self.curves.get(category)
        if curve is None or not curve.valid_steps[0] <= steps <= curve.valid_steps[1]:
            raise KeyError(
                f"model {self.key!r}, category {category!r}: no cell at {steps} steps and no curve "
                f"covering it (profiled: {sorted(cells)})"
            )
        if curve.form == "saturating_exp":
            return float(saturating_mean(steps, curve.a, curve.b, curve.kappa)), curve.std
        grid = sorted(cells)
        hi = next(s for s in grid if s > steps)
        lo = max(s for s in grid if s < steps)
        t = (steps - lo) / (hi - lo)
        mean = (1 - t) * cells[lo].mean + t * cells[hi].mean
        std = (1 - t) * cells[lo].std + t * cells[hi].std
        return mean, std


@dataclass(frozen=True)
class ProfiledModel:
    """One model as a profile run generated with it.

    Attributes:
        key: the model key (its key in the table's ``models`` where the run's records calibrated it).
        resolution: image side the run generated at (px).
        scheduler: the diffusers scheduler class the run used, or None where the run does not say.
    """

    key: str
    resolution: int
    scheduler: str | None


@dataclass(frozen=True)
class ProfileRun:
    """One profile run a table's measured numbers came from: the settings serving them must repeat.

    Attributes:
        run_id: the run's identity (its manifest's ``run_id``).
        models: the models it profiled, in its manifest's order.
        guidance_scale: classifier-free guidance scale; an older run that does not state it is read as
            run with :data:`~genedge.contract.runs.DEFAULT_GUIDANCE_SCALE`.
        dtype: the weights' dtype; an older run that does not state it is read as run with
            :data:`~genedge.contract.runs.DEFAULT_DTYPE`.
        threads: the torch CPU threads it ran with, or None where it does not say.
    """

    run_id: str
    models: tuple[ProfiledModel, ...]
    guidance_scale: float
    dtype: str
    threads: int | None


@dataclass(frozen=True)
class TableManifest:
    """Where a table's numbers came from: the profile runs it was built from, and the document as written.

    Built by :func:`~genedge.contract.table_file.table_manifest_from_dict`, which reads ``runs`` out
    of ``document``, so the two always agree.

    Attributes:
        runs: run id → the run (empty for a table of published or derived numbers only).
        document: the table's ``manifest`` object, written back unchanged so a table keeps its bytes.
            Besides ``runs`` it holds free-form notes (``built_by``, ``note``, ...) and every run's other
            manifest fields, for people to read; code reads the runs from ``runs``, never from here.
    """

    runs: Mapping[str, ProfileRun] = field(default_factory=dict)
    document: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfileSettings:
    """The generation settings a model's profile ran with (so serving it reproduces its latencies).

    Attributes:
        resolution: image side in pixels.
        scheduler: the diffusers scheduler class, or None where the profile did not say (the model's own).
        guidance_scale: classifier-free guidance scale.
        dtype: the weights' dtype.
    """

    resolution: int
    scheduler: str | None
    guidance_scale: float
    dtype: str


@dataclass(frozen=True)
class CalibrationTable:
    """One device's calibration table (DESIGN §2.3).

    Attributes:
        device: device name, memory and software versions (``device["memory_bytes"]`` is used
            for the memory-fit check).
        clip_convention: the single CLIPScore convention of every quality number.
        categories: prompt category names, in display order.
        category_mapping: how prompt labels map to categories (column and labels).
        models: model key → calibration.
        sources: reference key → {"kind", "citation" or "rule"}.
        manifest: provenance of the measurements: the profile runs they came from.
        exclusions: records left out of the fits, counted by model, steps and reason.
            Written only when non-empty.
        paired: per category, the cells measured on the same prompts and seeds and how their means
            correlate (:class:`PairedCells`). Written only when non-empty.
    """

    device: Mapping[str, Any]
    clip_convention: ClipConvention
    categories: tuple[str, ...]
    category_mapping: Mapping[str, Any]
    models: Mapping[str, ModelCalibration]
    sources: Mapping[str, Mapping[str, str]]
    manifest: TableManifest = field(default_factory=TableManifest)
    exclusions: tuple[Exclusion, ...] = ()
    paired: tuple[PairedCells, ...] = ()

    @property
    def device_memory_bytes(self) -> int | None:
        """Device memory (bytes), or None where the table does not say."""
        return self.device.get("memory_bytes")

    def profile_settings(self) -> dict[str, ProfileSettings]:
        """Model key → the settings its profile ran with, from the profile runs in :attr:`manifest`.

        A model no run profiled (its numbers published or derived) has no entry; a model that several
        runs profiled has those of the last of them (a table lists its runs by run id).
        """
        return {
            model.key: ProfileSettings(
                resolution=model.resolution,
                scheduler=model.scheduler,
                guidance_scale=run.guidance_scale,
                dtype=run.dtype,
            )
            for run in self.manifest.runs.values()
            for model in run.models
        }

    def profile_threads(self) -> int | None:
        """The torch CPU thread count of the table's profile runs, or None when they differ or do not say."""
        threads = {run.threads for run in self.manifest.runs.values()} - {None}
        return threads.pop() if len(threads) == 1 else None

    def source_counts(self) -> dict[str, int]:
        """Count every sourced number of the table by its ``source``."""
        counts = {kind: 0 for kind in get_args(Source)}
        for model in self.models.values():
            for cells in model.quality.values():
                for cell in cells.values():
                    counts[cell.source] += 2  # mean and std
            for curve in model.curves.values():
                counts[curve.source] += 1
            counts[model.latency.source] += 2
            for b, line in model.batch_latency.items():
                if b != model.base_batch_size:  # the base batch's line repeats ``latency``
                    counts[line.source] += 2
            counts[model.memory.source] += 1
            if model.energy is not None:
                counts[model.energy.source] += 2
        return counts
