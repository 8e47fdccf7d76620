"""The calibration table: schema, validation, loading and atomic saving.

A calibration table is one JSON document per device (DESIGN §2.3). Per model it
holds the CLIPScore distribution of each prompt category at each profiled step
count, a quality-versus-steps curve for step counts in between, a latency model
at full device share (and, for a model profiled at several batch sizes, one latency line per
batch size), peak memory and, where it was measured, an energy model. Every number carries a ``source``:
``measured`` (by genedge on this device), ``published`` (measured by others, with
a citation) or ``derived`` (by a rule written in the table's ``sources``).

Reading a table validates it completely; a problem is reported as a
:class:`TableError` naming the file and the field, never as a stack trace from
deep inside the planner.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from genedge.contract.clip import CLIPSCORE_RANGE, ClipConvention
from genedge.contract.files import ArtifactError, read_json, write_text_atomic
from genedge.contract.mappings import check_category_mapping
from genedge.contract.runs import HOST_MEMORY_COLUMNS, MEMORY_RUNGS

__all__ = [
    "HOST_MEMORY_FIELDS",
    "MAX_JOULES",
    "MAX_MEMORY_BYTES",
    "MAX_SECONDS",
    "MAX_WATTS",
    "SCHEMA_VERSION",
    "Source",
    "TableError",
    "QualityCell",
    "QualityCurve",
    "StageBreakdown",
    "LatencyModel",
    "EnergyModel",
    "MemoryPeak",
    "Exclusion",
    "ModelCalibration",
    "CalibrationTable",
    "load_table",
    "save_table",
    "table_from_dict",
    "table_to_dict",
    "saturating_mean",
    "cell_error_problem",
    "cell_standard_errors",
    "SE_RTOL",
]

SCHEMA_VERSION = 1
#: Plausibility bounds a table's numbers must respect; no text-to-image pipeline on any device
#: spends an hour on one step or its overhead, or needs more than 16 TiB.
MAX_SECONDS = 3600.0
MAX_MEMORY_BYTES = 2**44
#: No single device draws 10 kW, so no image costs more than that for :data:`MAX_SECONDS`.
MAX_WATTS = 10_000.0
MAX_JOULES = MAX_WATTS * MAX_SECONDS
#: The host memory peaks of a model (:class:`MemoryPeak` fields), one per host memory record column.
HOST_MEMORY_FIELDS: tuple[str, ...] = tuple(column.removeprefix("peak_") for column in HOST_MEMORY_COLUMNS)
_KIND = "genedge.calibration_table"

Source = Literal["measured", "published", "derived"]
CurveForm = Literal["saturating_exp", "linear_interpolation"]


class TableError(ArtifactError):
    """A calibration table (or an input to one) is malformed.

    The message names the file, the field (as a dotted path) and what was
    expected.
    """


#: Relative tolerance within which a cell's stated standard errors must equal those its n implies.
SE_RTOL = 1e-6


def cell_standard_errors(std: float, n: int) -> tuple[float, float]:
    """Standard errors of a cell's mean and std fitted from ``n`` ≥ 2 images: ``(mean_se, std_se)``.

    ``std`` is the maximum-likelihood spread (ddof = 0) of :func:`~genedge.calibrate.fit.fit_quality`,
    so the sample SD is s = std·√(n/(n−1)) and

    .. math:: \\mathrm{SE}(\\bar x) = \\frac{s}{\\sqrt n} = \\frac{\\mathrm{std}}{\\sqrt{n-1}}, \\qquad
              \\mathrm{SE}(\\hat\\sigma) \\approx \\frac{\\mathrm{std}}{\\sqrt{2(n-1)}}.

    (x̄ − μ)/SE(x̄) follows Student's t with n − 1 degrees of freedom for Normal scores, which
    is how :mod:`genedge.optimizer.uncertainty` samples a cell's mean.
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
        manifest: provenance of the measurements (free-form, copied from run manifests).
        exclusions: records left out of the fits, counted by model, steps and reason.
            Written only when non-empty.
    """

    device: Mapping[str, Any]
    clip_convention: ClipConvention
    categories: tuple[str, ...]
    category_mapping: Mapping[str, Any]
    models: Mapping[str, ModelCalibration]
    sources: Mapping[str, Mapping[str, str]]
    manifest: Mapping[str, Any] = field(default_factory=dict)
    exclusions: tuple[Exclusion, ...] = ()

    @property
    def device_memory_bytes(self) -> int | None:
        """Device memory (bytes), or None where the table does not say."""
        return self.device.get("memory_bytes")

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


# --------------------------------------------------------------------------- validation


class _Reader:
    """Typed field access on a JSON document that reports the file and field path."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: str, message: str) -> TableError:
        return TableError(self.where, path, message)

    def get(self, obj: Mapping[str, Any], key: str, path: str, kind: type | tuple[type, ...]) -> Any:
        if not isinstance(obj, Mapping):
            raise self.fail(path, f"expected an object, but got {type(obj).__name__}")
        full = f"{path}.{key}" if path else key
        if key not in obj:
            raise self.fail(full, "missing field")
        return self.check(obj[key], full, kind)

    def opt(self, obj: Mapping[str, Any], key: str, path: str, kind: type | tuple[type, ...]) -> Any:
        value = obj.get(key)
        return None if value is None else self.check(value, f"{path}.{key}", kind)

    def check(self, value: Any, path: str, kind: type | tuple[type, ...]) -> Any:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a JSON true is never a valid number here.
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(path, f"expected {_kind_name(kinds)}, but got a boolean")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise self.fail(path, f"expected {_kind_name(kinds)}, but got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(path, f"expected a finite number, but got {value}")
        return value

    def number(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        minimum: float | None = None,
        strict: bool = False,
        maximum: float | None = None,
    ) -> float:
        value = self.get(obj, key, path, float)
        if minimum is not None and (value < minimum or (strict and value == minimum)):
            bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
            raise self.fail(f"{path}.{key}", f"expected a number {bound}, but got {value}")
        if maximum is not None and value > maximum:
            raise self.fail(f"{path}.{key}", f"expected a number <= {maximum:g}, but got {value}")
        return value

    def source(self, obj: Mapping[str, Any], path: str, sources: Mapping[str, Any]) -> tuple[Source, str]:
        source = self.get(obj, "source", path, str)
        allowed = get_args(Source)
        if source not in allowed:
            raise self.fail(f"{path}.source", f"expected one of {list(allowed)}, but got {source!r}")
        ref = self.get(obj, "ref", path, str)
        if ref not in sources:
            raise self.fail(f"{path}.ref", f"{ref!r} is not a key of 'sources' (have {sorted(sources)})")
        return source, ref


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
        Mapping: "an object",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _read_steps(r: _Reader, raw: list[Any], path: str) -> tuple[int, ...]:
    if not raw:
        raise r.fail(path, "expected a non-empty list of step counts, but got []")
    steps = tuple(r.check(s, f"{path}[{i}]", int) for i, s in enumerate(raw))
    for i, s in enumerate(steps):
        if s <= 0:
            raise r.fail(f"{path}[{i}]", f"expected a step count > 0, but got {s}")
    if len(set(steps)) != len(steps):
        dup = sorted({s for s in steps if steps.count(s) > 1})
        raise r.fail(path, f"expected unique step counts, but got duplicates {dup}")
    if list(steps) != sorted(steps):
        raise r.fail(path, f"expected step counts in increasing order, but got {list(steps)}")
    return steps


def _read_cell(r: _Reader, raw: Mapping[str, Any], path: str, sources: Mapping[str, Any]) -> QualityCell:
    mean = r.number(raw, "mean", path, minimum=CLIPSCORE_RANGE[0], maximum=CLIPSCORE_RANGE[1])
    std = r.number(raw, "std", path, minimum=0.0, strict=True, maximum=CLIPSCORE_RANGE[1])
    n = r.get(raw, "n", path, int)
    if n < 0:
        raise r.fail(f"{path}.n", f"expected a count >= 0, but got {n}")
    gof = r.opt(raw, "gof", path, float)
    if gof is not None and not 0.0 <= gof <= 1.0:
        raise r.fail(f"{path}.gof", f"expected a p-value in [0, 1], but got {gof}")
    source, ref = r.source(raw, path, sources)
    flags = tuple(r.check(f, f"{path}.flags[{i}]", str) for i, f in enumerate(r.opt(raw, "flags", path, list) or []))
    errors = {name: r.opt(raw, name, path, float) for name in ("mean_se", "std_se")}
    problem = cell_error_problem(std, n, **errors)
    if problem is not None:
        raise r.fail(f"{path}.{problem[0]}", problem[1])
    return QualityCell(mean=mean, std=std, n=n, gof=gof, source=source, ref=ref, flags=flags, **errors)


def _read_curve(
    r: _Reader, raw: Mapping[str, Any], path: str, sources: Mapping[str, Any], cells: Mapping[int, QualityCell]
) -> QualityCurve:
    form = r.get(raw, "form", path, str)
    if form not in get_args(CurveForm):
        raise r.fail(f"{path}.form", f"expected one of {list(get_args(CurveForm))}, but got {form!r}")
    bounds = r.get(raw, "valid_steps", path, list)
    if len(bounds) != 2:
        raise r.fail(f"{path}.valid_steps", f"expected [lo, hi], but got {bounds}")
    lo, hi = (r.check(v, f"{path}.valid_steps[{i}]", int) for i, v in enumerate(bounds))
    if not 0 < lo <= hi:
        raise r.fail(f"{path}.valid_steps", f"expected 0 < lo <= hi, but got [{lo}, {hi}]")
    source, ref = r.source(raw, path, sources)
    if form == "linear_interpolation":
        if lo < min(cells) or hi > max(cells):
            raise r.fail(
                f"{path}.valid_steps",
                f"interpolation cannot leave the profiled range [{min(cells)}, {max(cells)}], but got [{lo}, {hi}]",
            )
        return QualityCurve(form=form, valid_steps=(lo, hi), source=source, ref=ref)
    a = r.number(raw, "a", path)
    b = r.number(raw, "b", path)
    kappa = r.number(raw, "kappa", path, minimum=0.0, strict=True)
    std = r.number(raw, "std", path, minimum=0.0, strict=True, maximum=CLIPSCORE_RANGE[1])
    b_se = r.opt(raw, "b_se", path, float)
    if b_se is not None and b_se < 0:
        raise r.fail(f"{path}.b_se", f"expected a standard error >= 0, but got {b_se}")
    for steps in (lo, hi):  # the curve is monotone in steps, so its ends bound it
        mean = float(saturating_mean(steps, a, b, kappa))
        if not CLIPSCORE_RANGE[0] <= mean <= CLIPSCORE_RANGE[1]:
            raise r.fail(
                f"{path}.a",
                f"expected means within {list(CLIPSCORE_RANGE)} on [{lo}, {hi}], but {steps} steps give {mean:g}",
            )
    return QualityCurve(
        form=form, valid_steps=(lo, hi), source=source, ref=ref, a=a, b=b, kappa=kappa, std=std, b_se=b_se
    )


def _read_model(
    r: _Reader,
    key: str,
    raw: Mapping[str, Any],
    categories: tuple[str, ...],
    sources: Mapping[str, Any],
    convention: ClipConvention,
    device_memory: int | None,
) -> ModelCalibration:
    path = f"models.{key}"
    name = r.get(raw, "name", path, str)
    resolution = r.get(raw, "resolution", path, int)
    steps = _read_steps(r, r.get(raw, "steps", path, list), f"{path}.steps")
    default_steps = r.get(raw, "default_steps", path, int)
    if default_steps not in steps:
        raise r.fail(f"{path}.default_steps", f"expected one of the step grid {list(steps)}, but got {default_steps}")
    if "clip_convention" in raw:
        own = _read_convention(r, r.get(raw, "clip_convention", path, dict), f"{path}.clip_convention")
        if own != convention:
            raise r.fail(
                f"{path}.clip_convention",
                f"mixed CLIPScore conventions: the table uses {convention.backbone}/{convention.pretrained} "
                f"({convention.formula}), this model {own.backbone}/{own.pretrained} ({own.formula})",
            )

    raw_quality = r.get(raw, "quality", path, dict)
    quality: dict[str, dict[int, QualityCell]] = {}
    for category in categories:
        per_steps = r.get(raw_quality, category, f"{path}.quality", dict)
        cells: dict[int, QualityCell] = {}
        for s_text, cell in per_steps.items():
            cpath = f"{path}.quality.{category}.{s_text}"
            if not s_text.isdigit() or int(s_text) <= 0:
                raise r.fail(cpath, f"expected a positive integer step count as key, but got {s_text!r}")
            cells[int(s_text)] = _read_cell(r, r.check(cell, cpath, dict), cpath, sources)
        if not cells:
            raise r.fail(f"{path}.quality.{category}", "expected at least one step count, but got none")
        quality[category] = dict(sorted(cells.items()))
    extra = sorted(set(raw_quality) - set(categories))
    if extra:
        raise r.fail(f"{path}.quality", f"categories {extra} are not in the table's categories {list(categories)}")

    raw_curves = r.opt(raw, "curves", path, dict) or {}
    curves = {}
    for category, raw_curve in raw_curves.items():
        if category not in categories:
            raise r.fail(f"{path}.curves.{category}", f"unknown category; expected one of {list(categories)}")
        curves[category] = _read_curve(
            r,
            r.check(raw_curve, f"{path}.curves.{category}", dict),
            f"{path}.curves.{category}",
            sources,
            quality[category],
        )

    latency = _read_latency(r, r.get(raw, "latency", path, dict), f"{path}.latency", sources)
    memory_raw = r.get(raw, "memory", path, dict)
    mpath = f"{path}.memory"
    peak = r.get(memory_raw, "peak_bytes", mpath, int)
    if not 0 < peak <= MAX_MEMORY_BYTES:
        raise r.fail(f"{mpath}.peak_bytes", f"expected bytes in (0, {MAX_MEMORY_BYTES}], but got {peak}")
    if device_memory is not None and peak > device_memory:
        raise r.fail(
            f"{mpath}.peak_bytes",
            f"model needs {peak / 2**30:.2f} GiB but the device has {device_memory / 2**30:.2f} GiB",
        )
    rungs = {}
    for rung in (*MEMORY_RUNGS, *HOST_MEMORY_FIELDS):
        value = r.opt(memory_raw, rung, mpath, int)
        if value is not None and not 0 <= value <= MAX_MEMORY_BYTES:
            raise r.fail(f"{mpath}.{rung}", f"expected bytes in [0, {MAX_MEMORY_BYTES}], but got {value}")
        rungs[rung] = value
    memory = MemoryPeak(
        peak_bytes=peak,
        kind=r.get(memory_raw, "kind", mpath, str),
        **dict(zip(("source", "ref"), r.source(memory_raw, mpath, sources))),
        **rungs,
    )
    is_replica = r.opt(raw, "is_replica", path, bool) or False
    energy_raw = r.opt(raw, "energy", path, dict)
    energy = None if energy_raw is None else _read_energy(r, energy_raw, f"{path}.energy", sources)
    batch_raw = r.opt(raw, "batch_latency", path, dict) or {}
    batch_latency = _read_batch_latency(r, batch_raw, f"{path}.batch_latency", sources, latency)

    model = ModelCalibration(
        key=key,
        name=name,
        resolution=resolution,
        steps=steps,
        default_steps=default_steps,
        quality=quality,
        curves=curves,
        latency=latency,
        memory=memory,
        is_replica=is_replica,
        energy=energy,
        batch_latency=batch_latency,
    )
    for category in categories:
        for s in steps:
            try:
                model.quality_at(category, s)
            except KeyError as err:
                raise r.fail(
                    f"{path}.quality.{category}", f"step {s} of the grid has no cell and no curve covering it"
                ) from err
    return model


def _read_latency(r: _Reader, raw: Mapping[str, Any], path: str, sources: Mapping[str, Any]) -> LatencyModel:
    optional = {
        name: r.opt(raw, name, path, float)
        for name in ("overhead_se_s", "per_step_se_s", "residual_std_s", "step_p50_s", "step_p95_s")
    }
    for name, value in optional.items():
        if value is not None and value < 0:
            raise r.fail(f"{path}.{name}", f"expected seconds >= 0, but got {value}")
    batch_size = r.opt(raw, "batch_size", path, int)
    if batch_size is not None and batch_size <= 0:
        raise r.fail(f"{path}.batch_size", f"expected a batch size > 0, but got {batch_size}")
    stages = {}
    for s_text, stage in (r.opt(raw, "stages", path, dict) or {}).items():
        spath = f"{path}.stages.{s_text}"
        if not s_text.isdigit() or int(s_text) <= 0:
            raise r.fail(spath, f"expected a positive integer step count as key, but got {s_text!r}")
        r.check(stage, spath, dict)
        stages[int(s_text)] = StageBreakdown(
            **{
                name: r.number(stage, name, spath, minimum=0.0, maximum=MAX_SECONDS)
                for name in ("text_encode_s", "denoise_s", "decode_s")
            }
        )
    return LatencyModel(
        overhead_s=r.number(raw, "overhead_s", path, minimum=0.0, maximum=MAX_SECONDS),
        per_step_s=r.number(raw, "per_step_s", path, minimum=0.0, strict=True, maximum=MAX_SECONDS),
        n=r.get(raw, "n", path, int),
        r2=r.opt(raw, "r2", path, float),
        **dict(zip(("source", "ref"), r.source(raw, path, sources))),
        **optional,
        batch_size=batch_size,
        stages=dict(sorted(stages.items())),
    )


def _read_batch_latency(
    r: _Reader, raw: Mapping[str, Any], path: str, sources: Mapping[str, Any], base: LatencyModel
) -> dict[int, LatencyModel]:
    """Read ``batch_latency``: batch size → line of one call of that many images."""
    base_batch = base.batch_size or 1
    lines: dict[int, LatencyModel] = {}
    for b_text, raw_line in raw.items():
        bpath = f"{path}.{b_text}"
        if not (b_text.isascii() and b_text.isdigit()) or int(b_text) < 1 or str(int(b_text)) != b_text:
            raise r.fail(bpath, f"expected a batch size (an integer >= 1) as key, but got {b_text!r}")
        b = int(b_text)
        if b < base_batch:
            raise r.fail(
                bpath,
                f"expected batch sizes >= {base_batch}, the batch size of the model's latency line (the "
                f"smallest measured), but got {b}",
            )
        line = _read_latency(r, r.check(raw_line, bpath, dict), bpath, sources)
        if line.batch_size is not None and line.batch_size != b:
            raise r.fail(f"{bpath}.batch_size", f"expected {b}, the line's key, but got {line.batch_size}")
        if b == base_batch:
            for name in ("overhead_s", "per_step_s"):
                own, expected = getattr(line, name), getattr(base, name)
                if not math.isclose(own, expected, rel_tol=1e-9, abs_tol=1e-12):
                    raise r.fail(
                        f"{bpath}.{name}",
                        f"expected {expected!r} as in the model's latency line (batch size {base_batch}), "
                        f"but got {own!r}",
                    )
        lines[b] = line
    return dict(sorted(lines.items()))


def _read_energy(r: _Reader, raw: Mapping[str, Any], path: str, sources: Mapping[str, Any]) -> EnergyModel:
    optional = {name: r.opt(raw, name, path, float) for name in ("overhead_se_j", "per_step_se_j", "residual_std_j")}
    for name, value in optional.items():
        if value is not None and not 0 <= value <= MAX_JOULES:
            raise r.fail(f"{path}.{name}", f"expected joules in [0, {MAX_JOULES:g}], but got {value}")
    power = r.opt(raw, "average_power_w", path, float)
    if power is not None and not 0 <= power <= MAX_WATTS:
        raise r.fail(f"{path}.average_power_w", f"expected watts in [0, {MAX_WATTS:g}], but got {power}")
    n = r.get(raw, "n", path, int)
    if n < 0:
        raise r.fail(f"{path}.n", f"expected a count >= 0, but got {n}")
    return EnergyModel(
        overhead_j=r.number(raw, "overhead_j", path, minimum=0.0, maximum=MAX_JOULES),
        per_step_j=r.number(raw, "per_step_j", path, minimum=0.0, maximum=MAX_JOULES),
        n=n,
        r2=r.opt(raw, "r2", path, float),
        **dict(zip(("source", "ref"), r.source(raw, path, sources))),
        **optional,
        average_power_w=power,
    )


def _read_exclusions(r: _Reader, raw: list[Any], models: Mapping[str, Any]) -> tuple[Exclusion, ...]:
    exclusions = []
    for i, entry in enumerate(raw):
        path = f"exclusions[{i}]"
        r.check(entry, path, dict)
        model_key = r.get(entry, "model_key", path, str)
        if model_key not in models:
            raise r.fail(
                f"{path}.model_key", f"expected one of the table's models {sorted(models)}, but got {model_key!r}"
            )
        rows = r.get(entry, "rows", path, int)
        if rows <= 0:
            raise r.fail(f"{path}.rows", f"expected a count > 0, but got {rows}")
        exclusions.append(
            Exclusion(
                model_key=model_key,
                steps=r.get(entry, "steps", path, int),
                reason=r.get(entry, "reason", path, str),
                rows=rows,
            )
        )
    return tuple(exclusions)


def _read_convention(r: _Reader, raw: Mapping[str, Any], path: str) -> ClipConvention:
    return ClipConvention(
        **{
            name: r.get(raw, name, path, str)
            for name in ("backbone", "pretrained", "formula", "truncation", "preprocess")
        }
    )


def table_from_dict(doc: Mapping[str, Any], where: str = "<table>") -> CalibrationTable:
    """Validate a parsed table document and build a :class:`CalibrationTable`.

    Args:
        doc: the parsed JSON document.
        where: what to call the document in errors (usually its path).

    Raises:
        TableError: naming ``where`` and the offending field.
    """
    r = _Reader(where)
    version = r.get(doc, "schema_version", "", int)
    if version != SCHEMA_VERSION:
        raise r.fail("schema_version", f"expected {SCHEMA_VERSION}, but got {version}")
    kind = r.get(doc, "kind", "", str)
    if kind != _KIND:
        raise r.fail("kind", f"expected {_KIND!r}, but got {kind!r}")
    device = r.get(doc, "device", "", dict)
    r.get(device, "name", "device", str)
    device_memory = r.opt(device, "memory_bytes", "device", int)
    convention = _read_convention(r, r.get(doc, "clip_convention", "", dict), "clip_convention")
    raw_categories = r.get(doc, "categories", "", list)
    if not raw_categories:
        raise r.fail("categories", "expected a non-empty list of category names, but got []")
    categories = tuple(r.check(c, f"categories[{i}]", str) for i, c in enumerate(raw_categories))
    if len(set(categories)) != len(categories):
        raise r.fail("categories", f"expected unique names, but got {list(categories)}")
    sources = r.get(doc, "sources", "", dict)
    for ref, entry in sources.items():
        r.get(r.check(entry, f"sources.{ref}", dict), "kind", f"sources.{ref}", str)
    raw_models = r.get(doc, "models", "", dict)
    if not raw_models:
        raise r.fail("models", "expected at least one model, but got none")
    models = {
        key: _read_model(r, key, r.check(raw, f"models.{key}", dict), categories, sources, convention, device_memory)
        for key, raw in raw_models.items()
    }
    return CalibrationTable(
        device=dict(device),
        clip_convention=convention,
        categories=categories,
        category_mapping=check_category_mapping(r.get(doc, "category_mapping", "", dict), where, TableError),
        models=models,
        sources={k: dict(v) for k, v in sources.items()},
        manifest=dict(r.opt(doc, "manifest", "", dict) or {}),
        exclusions=_read_exclusions(r, r.opt(doc, "exclusions", "", list) or [], models),
    )


def _sourced(obj: Any, **fields: Any) -> dict[str, Any]:
    return {**fields, "source": obj.source, "ref": obj.ref}


def _present(**fields: Any) -> dict[str, Any]:
    """The optional fields that carry a value; absent ones are not written, so older tables keep their bytes."""
    return {k: v for k, v in fields.items() if v is not None and v != {} and v != [] and v is not False}


def _latency_to_dict(lat: LatencyModel) -> dict[str, Any]:
    stages = {
        str(s): {"text_encode_s": b.text_encode_s, "denoise_s": b.denoise_s, "decode_s": b.decode_s}
        for s, b in lat.stages.items()
    }
    return _sourced(
        lat,
        overhead_s=lat.overhead_s,
        per_step_s=lat.per_step_s,
        n=lat.n,
        r2=lat.r2,
        **_present(
            overhead_se_s=lat.overhead_se_s,
            per_step_se_s=lat.per_step_se_s,
            residual_std_s=lat.residual_std_s,
            step_p50_s=lat.step_p50_s,
            step_p95_s=lat.step_p95_s,
            batch_size=lat.batch_size,
            stages=stages,
        ),
    )


def _energy_to_dict(energy: EnergyModel) -> dict[str, Any]:
    return _sourced(
        energy,
        overhead_j=energy.overhead_j,
        per_step_j=energy.per_step_j,
        n=energy.n,
        r2=energy.r2,
        **_present(
            overhead_se_j=energy.overhead_se_j,
            per_step_se_j=energy.per_step_se_j,
            residual_std_j=energy.residual_std_j,
            average_power_w=energy.average_power_w,
        ),
    )


def table_to_dict(table: CalibrationTable) -> dict[str, Any]:
    """Serialize a table to the JSON document :func:`table_from_dict` reads."""
    models = {}
    for key, m in table.models.items():
        curves = {}
        for category, c in m.curves.items():
            extra = (
                {}
                if c.form == "linear_interpolation"
                else {"a": c.a, "b": c.b, "kappa": c.kappa, "std": c.std, **_present(b_se=c.b_se)}
            )
            curves[category] = _sourced(c, form=c.form, valid_steps=list(c.valid_steps), **extra)
        models[key] = {
            "name": m.name,
            "resolution": m.resolution,
            "steps": list(m.steps),
            "default_steps": m.default_steps,
            "quality": {
                cat: {
                    str(s): _sourced(
                        cell,
                        mean=cell.mean,
                        std=cell.std,
                        n=cell.n,
                        mean_se=cell.mean_se,
                        std_se=cell.std_se,
                        gof=cell.gof,
                        **_present(flags=list(cell.flags)),
                    )
                    for s, cell in cells.items()
                }
                for cat, cells in m.quality.items()
            },
            "curves": curves,
            "latency": _latency_to_dict(m.latency),
            "memory": _sourced(
                m.memory,
                peak_bytes=m.memory.peak_bytes,
                kind=m.memory.kind,
                **_present(**{rung: getattr(m.memory, rung) for rung in (*MEMORY_RUNGS, *HOST_MEMORY_FIELDS)}),
            ),
            **_present(
                is_replica=m.is_replica,
                energy=None if m.energy is None else _energy_to_dict(m.energy),
                batch_latency={str(b): _latency_to_dict(line) for b, line in sorted(m.batch_latency.items())},
            ),
        }
    conv = table.clip_convention
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": _KIND,
        "device": dict(table.device),
        "clip_convention": {
            "backbone": conv.backbone,
            "pretrained": conv.pretrained,
            "formula": conv.formula,
            "truncation": conv.truncation,
            "preprocess": conv.preprocess,
        },
        "categories": list(table.categories),
        "category_mapping": dict(table.category_mapping),
        "models": models,
        "sources": {k: dict(v) for k, v in table.sources.items()},
        "manifest": dict(table.manifest),
        **_present(
            exclusions=[
                {"model_key": e.model_key, "steps": e.steps, "reason": e.reason, "rows": e.rows}
                for e in table.exclusions
            ]
        ),
    }


def load_table(path: str | os.PathLike[str]) -> CalibrationTable:
    """Read and validate a calibration table JSON file.

    Raises:
        FileNotFoundError: the file does not exist.
        TableError: the file is not valid JSON or violates the schema (names file and field).
    """
    path = Path(path)
    return table_from_dict(read_json(path, "a JSON calibration table", TableError), where=str(path))


def save_table(table: CalibrationTable, path: str | os.PathLike[str]) -> Path:
    """Write a table atomically (temporary file + rename), with stable key order.

    The same table always produces the same bytes, so re-running a fit on the
    same records gives a byte-identical file.
    """
    path = Path(path)
    text = json.dumps(table_to_dict(table), indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_text_atomic(path, text)
    return path
