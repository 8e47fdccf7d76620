"""Turn validated profile runs into one device's calibration table (DESIGN §2.3).

Per model: a CLIPScore Gaussian per (category, steps), a quality-versus-steps
curve per category, a latency line with its spread, per-step percentiles and
stage breakdown, the peaks of the memory ladder and of host memory, and, where
the run measured energy, an energy line. A model profiled at several batch sizes
also gets one latency line per batch size (seconds per pipeline call of that many
images), its ``latency`` being the smallest batch size's. Every number points at a
``sources`` entry that states how it was obtained. The same records always give
the same table, byte for byte (rows are sorted before fitting and nothing
time-dependent enters the table).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genedge.calibrate.fit import (
    MEASURED_QUALITY_REF,
    MEASURED_QUALITY_SOURCE,
    MIN_CURVE_STEPS,
    fit_line,
    fit_quality,
    fit_quality_curve,
)
from genedge.calibrate.pairing import paired_cells
from genedge.calibrate.records import ProfileRuns, manifests_as_provenance, read_runs
from genedge.contract.files import check_write_target
from genedge.contract.runs import HOST_MEMORY_COLUMNS, MEMORY_RUNGS, PROCESS_PEAK_COLUMNS, rung_column
from genedge.contract.table import (
    HOST_MEMORY_FIELDS,
    CalibrationTable,
    EnergyModel,
    Exclusion,
    LatencyModel,
    MemoryPeak,
    ModelCalibration,
    PairedCells,
    QualityCell,
    QualityCurve,
    StageBreakdown,
)
from genedge.contract.table_file import (
    TableError,
    save_table,
    table_from_dict,
    table_manifest_from_dict,
    table_to_dict,
)

__all__ = ["build_table", "calibrate_runs", "fit_and_write"]

logger = logging.getLogger(__name__)

# The MemoryPeak fields a model's peak is taken from, best first (the contract's process peaks).
_PROCESS_PEAKS = tuple(column.removeprefix("peak_") for column in PROCESS_PEAK_COLUMNS)
_DTYPE_BYTES = {"float16": 2, "fp16": 2, "bfloat16": 2, "bf16": 2, "float32": 4, "fp32": 4}
# The images of one pipeline call share its measurement: these columns are equal on every row of a call.
_CALL_COLUMNS = ["run_id", "steps", "seed", "total_s", "text_encode_s", "denoise_s", "decode_s"]

_SOURCES: dict[str, dict[str, str]] = {
    MEASURED_QUALITY_REF: MEASURED_QUALITY_SOURCE,
    "derived:quality-curve": {
        "kind": "derived",
        "rule": f"mean(s) = a - b*exp(-s/kappa) by weighted least squares (scipy.optimize.curve_fit, sigma = "
        f"std/sqrt(n) of each measured cell), std = pooled cell spread; valid on the profiled step range "
        f"only. With fewer than {MIN_CURVE_STEPS} profiled step counts: linear interpolation between "
        f"measured cells, never extrapolated.",
    },
    "measured:latency": {
        "kind": "measured",
        "rule": "total_s = overhead_s + per_step_s*steps by ordinary least squares over every successful image "
        "(refitted through the origin if the intercept came out negative); standard errors from "
        "sigma^2 (X'X)^-1; step_p50_s/step_p95_s over all per-step latencies; stages are per-steps means.",
    },
    "derived:latency-stages": {
        "kind": "derived",
        "rule": "no latency line could be fitted (one step count profiled, or no positive slope), so overhead and "
        "per-step time come from the stage timings: per_step_s = mean(denoise_s/steps), overhead_s = "
        "max(mean(total_s - per_step_s*steps), 0); their standard errors are those of the two means.",
    },
    "measured:latency-batch": {
        "kind": "measured",
        "rule": "a model profiled at several batch sizes has one line per batch size b (batch_latency): total_s "
        "of one pipeline call of b images = overhead_s + per_step_s*steps by ordinary least squares over that "
        "batch size's calls, one point per call (its images share one measurement: the same run, steps, seed "
        "and timings) and n counting calls; a call of fewer than b images (a short last batch) is left out and "
        "listed in exclusions; refitted through the origin if the intercept came out negative; standard "
        "errors from sigma^2 (X'X)^-1. The model's latency line is the smallest batch size's line, with "
        "step_p50_s/step_p95_s and stages over that batch size's images; its energy line is fitted from that "
        "batch size's images only; its memory peak is over every batch size. Quality pools every batch size.",
    },
    "derived:latency-batch-stages": {
        "kind": "derived",
        "rule": "no line could be fitted for a batch size (one step count profiled, or no positive slope), so "
        "over that batch size's calls: per_step_s = mean(denoise_s/steps), overhead_s = max(mean(total_s - "
        "per_step_s*steps), 0).",
    },
    "measured:memory": {
        "kind": "measured",
        "rule": "peak_bytes = the maximum over successful images of the highest per-process rung measured: NVML "
        "process memory, else torch reserved, else torch allocated (kind names it); every rung's "
        "maximum is listed, null where not measurable, and so are the host peaks (process RSS, and the "
        "machine's used memory where CPU and GPU share it).",
    },
    "measured:memory-rss": {
        "kind": "measured",
        "rule": "no GPU memory rung was measured (a CPU run), so peak_bytes = the maximum over successful images "
        "of the profiling process's peak resident set size (kind 'rss'): host memory, everything the "
        "process holds, interpreter and libraries included.",
    },
    "derived:memory-params": {
        "kind": "derived",
        "rule": "no memory rung nor RSS was measurable, so peak_bytes = denoiser parameters x bytes "
        "per parameter of the run's dtype: a lower bound that ignores text encoders, VAE and activations.",
    },
    "measured:energy": {
        "kind": "measured",
        "rule": "energy_j per image (the pipeline call's energy divided by its batch) = overhead_j + "
        "per_step_j*steps by ordinary least squares over every successful image with a measured energy "
        "(refitted through the origin if the intercept came out negative); standard errors from "
        "sigma^2 (X'X)^-1; average_power_w is the mean of the calls' average power.",
    },
    "derived:energy-power": {
        "kind": "derived",
        "rule": "no energy line could be fitted (one step count with energy, or no positive slope), so the "
        "latency line is scaled by the mean power: P = sum(energy_j)/sum(total_s) over the images with a "
        "measured energy, overhead_j = P*overhead_s, per_step_j = P*per_step_s.",
    },
}


def calibrate_runs(run_dirs: Iterable[str | os.PathLike[str]]) -> CalibrationTable:
    """Read profile runs and fit their calibration table.

    Args:
        run_dirs: run directories (``manifest.json`` + ``records/shard-*.parquet``) of one
            device and one CLIPScore convention.

    Returns:
        The validated table.

    Raises:
        FileNotFoundError, TableError: see :func:`~genedge.calibrate.records.read_runs`
            and :func:`build_table`.
    """
    return build_table(read_runs(run_dirs))


def fit_and_write(
    run_dirs: Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    figures_dir: str | os.PathLike[str] | None = None,
) -> tuple[CalibrationTable, Path, list[Path]]:
    """Fit the table of ``run_dirs``, write it to ``out`` and, when asked, its figures to ``figures_dir``.

    ``out`` is checked before any work (see :func:`genedge.contract.check_write_target`).

    Returns:
        (table, table path, figure paths).
    """
    check_write_target(out)
    runs = read_runs(run_dirs)
    table = build_table(runs)
    path = save_table(table, out)
    if figures_dir is None:
        return table, path, []
    from genedge.calibrate.figures import write_figures

    return table, path, write_figures(table, runs, figures_dir)


def build_table(runs: ProfileRuns) -> CalibrationTable:
    """Fit every model of ``runs`` and assemble the calibration table.

    Categories are those of the scored records, ordered as they first appear in the
    run's category mapping. Each model's step grid is the step counts with successful
    images; its default steps the largest of them.

    Raises:
        TableError: a model without successful images, a (model, category, steps) cell with
            fewer than 2 scores, a model with more than one resolution, or a model
            whose memory can be neither measured nor derived. The message names the runs and the cell.
    """
    where = ", ".join(str(d) for d in runs.run_dirs)
    ok, scored = runs.ok, runs.scored
    failed_only = sorted(set(runs.records["model_key"]) - set(ok["model_key"]))
    if failed_only:
        raise TableError(
            where,
            f"models.{failed_only[0]}",
            f"expected successful images for every model, but {failed_only} have none "
            f"(see the excluded rows: {[e.reason for e in runs.exclusions if e.model_key in failed_only]})",
        )
    categories = _category_order(runs.category_mapping, set(scored["category"]))
    used: set[str] = set()
    short_calls: list[Exclusion] = []
    models = {
        key: _model(where, str(key), rows, scored[scored["model_key"] == key], categories, runs, used, short_calls)
        for key, rows in ok.groupby("model_key", sort=True)
    }
    exclusions = tuple(
        sorted((*runs.exclusions, *short_calls), key=lambda e: (e.model_key, e.steps, e.reason))
        if short_calls
        else runs.exclusions
    )
    table = CalibrationTable(
        device=dict(runs.device),
        clip_convention=runs.clip_convention,
        categories=categories,
        category_mapping=dict(runs.category_mapping),
        models=models,
        sources={ref: {**_SOURCES[ref], "runs": ", ".join(runs.manifests)} for ref in sorted(used)},
        manifest=table_manifest_from_dict(manifests_as_provenance(runs.manifests), where),
        exclusions=exclusions,
        paired=_paired(scored, categories),
    )
    # Validate exactly what will be written (memory against the device, curves against cells, ...).
    return table_from_dict(table_to_dict(table), where=f"table calibrated from {where}")


def _paired(scored: pd.DataFrame, categories: tuple[str, ...]) -> tuple[PairedCells, ...]:
    """The cells measured on the same (prompt, seed) images, from each image's score (the mean over a key's
    repeats, e.g. the same image at two batch sizes); see :mod:`genedge.calibrate.pairing`."""
    per_image = scored.groupby(["model_key", "category", "steps", "prompt_id", "seed"], sort=True)["clip_score"].mean()
    scores: dict[tuple[str, str, int], dict[tuple[str, int], float]] = {}
    for (key, category, steps, prompt, seed), score in per_image.items():
        scores.setdefault((str(key), str(category), int(steps)), {})[(str(prompt), int(seed))] = float(score)
    order = {c: i for i, c in enumerate(categories)}
    return tuple(sorted(paired_cells(scores), key=lambda p: order[p.category]))


def _model(
    where: str,
    key: str,
    ok: pd.DataFrame,
    scored: pd.DataFrame,
    categories: tuple[str, ...],
    runs: ProfileRuns,
    used: set[str],
    short_calls: list[Exclusion],
) -> ModelCalibration:
    """Fit one model. Quality pools every batch size (a score does not depend on the batch)."""
    path = f"models.{key}"
    resolutions = sorted(int(v) for v in ok["resolution"].unique())
    if len(resolutions) > 1:
        raise TableError(
            where,
            f"{path}.resolution",
            f"expected one resolution per model in a table, but got {resolutions}; calibrate each "
            f"resolution into its own table",
        )
    grid = tuple(sorted(int(s) for s in ok["steps"].unique()))
    quality, curves = _quality(where, path, key, scored, categories, grid)
    used.update({MEASURED_QUALITY_REF, "derived:quality-curve"})
    manifest_model = next((m for run in runs.manifests.values() for m in run["models"] if m["key"] == key), {})
    is_replica = bool(ok["is_replica"].any())
    revision = manifest_model.get("revision")
    name = key + (f" @ {revision}" if revision else "") + (" (random-weight replica)" if is_replica else "")
    batches = sorted(int(b) for b in ok["batch_size"].unique())
    if len(batches) == 1:
        base, batch_latency = ok, {}
        latency = _latency(ok, used)
    else:
        base = ok[ok["batch_size"] == batches[0]]
        batch_latency = {b: _batch_line(where, key, b, ok[ok["batch_size"] == b], used, short_calls) for b in batches}
        latency = _latency(base, used, line=batch_latency[batches[0]])
    return ModelCalibration(
        key=key,
        name=name,
        resolution=int(ok["resolution"].iat[0]),
        steps=grid,
        default_steps=grid[-1],
        quality=quality,
        curves=curves,
        latency=latency,
        memory=_memory(where, path, ok, manifest_model, runs, used),
        is_replica=is_replica,
        energy=_energy(base, latency, used),
        batch_latency=batch_latency,
    )


def _quality(
    where: str, path: str, key: str, scored: pd.DataFrame, categories: tuple[str, ...], grid: tuple[int, ...]
) -> tuple[dict[str, dict[int, QualityCell]], dict[str, QualityCurve]]:
    """One model's quality cells (category → steps → cell) and curves (category → curve) from its
    scored images."""
    quality: dict[str, dict[int, QualityCell]] = {}
    curves: dict[str, QualityCurve] = {}
    for category in categories:
        cells = {}
        for steps in grid:
            scores = scored.loc[(scored["category"] == category) & (scored["steps"] == steps), "clip_score"]
            try:
                fit = fit_quality(scores.to_numpy())
            except ValueError as err:
                raise TableError(
                    where,
                    f"{path}.quality.{category}.{steps}",
                    f"{err} (scored, successful images of this model, category and step count; "
                    f"profile more prompts of the category)",
                ) from err
            cells[steps] = fit.cell()
        quality[category] = cells
        curve = fit_quality_curve(
            grid,
            [c.mean for c in cells.values()],
            [c.std for c in cells.values()],
            [c.n for c in cells.values()],
            label=f"{key}/{category}",
        )
        curves[category] = QualityCurve(
            form=curve.form,
            valid_steps=curve.valid_steps,
            source="derived",
            ref="derived:quality-curve",
            a=curve.a,
            b=curve.b,
            kappa=curve.kappa,
            std=curve.std,
        )
    return quality, curves


def _latency(ok: pd.DataFrame, used: set[str], line: LatencyModel | None = None) -> LatencyModel:
    """The latency line of ``ok`` (one batch size) with its step percentiles and stages.

    With ``line`` (the batch size's per-call line of a model profiled at several batch sizes),
    its coefficients are taken as they are and only the percentiles and stages come from ``ok``.
    """
    steps = ok["steps"].to_numpy(dtype=float)
    total = ok["total_s"].to_numpy(dtype=float)
    per_step = np.concatenate([np.asarray(v, dtype=float) for v in ok["step_latencies_s"]])
    stages = {
        int(s): StageBreakdown(
            text_encode_s=float(g["text_encode_s"].mean()),
            denoise_s=float(g["denoise_s"].mean()),
            decode_s=float(g["decode_s"].mean()),
        )
        for s, g in ok.groupby("steps", sort=True)
    }
    extra: dict[str, Any] = {
        "step_p50_s": float(np.percentile(per_step, 50)) if per_step.size else None,
        "step_p95_s": float(np.percentile(per_step, 95)) if per_step.size else None,
        "batch_size": int(ok["batch_size"].iat[0]),
        "stages": stages,
    }
    if line is not None:
        return replace(line, **extra)
    try:
        fit = fit_line(steps, total, quantity="latency", unit="s")
    except ValueError as err:
        # One step count, or a line that does not rise with steps (noisy timings): the stage
        # timings still give each image's own denoising rate.
        warnings.warn(
            f"{ok['model_key'].iat[0]}: no latency line can be fitted ({err}); overhead and per-step time "
            f"are derived from the stage timings. Profile two or more step counts, with enough warm-up, "
            f"for a fitted line.",
            UserWarning,
            stacklevel=3,
        )
        rates = (ok["denoise_s"] / ok["steps"]).to_numpy(dtype=float)
        rate = float(rates.mean())
        overheads = total - rate * steps
        used.add("derived:latency-stages")
        return LatencyModel(
            overhead_s=max(float(overheads.mean()), 0.0),
            per_step_s=rate,
            n=len(ok),
            r2=None,
            source="derived",
            ref="derived:latency-stages",
            # Both are means over the images: their standard errors are those of a mean.
            overhead_se_s=_mean_se(overheads),
            per_step_se_s=_mean_se(rates),
            **extra,
        )
    used.add("measured:latency")
    return LatencyModel(
        overhead_s=fit.intercept,
        per_step_s=fit.slope,
        n=fit.n,
        r2=fit.r2,
        source="measured",
        ref="measured:latency",
        overhead_se_s=fit.intercept_se,
        per_step_se_s=fit.slope_se,
        residual_std_s=fit.residual_std,
        **extra,
    )


def _mean_se(values: np.ndarray) -> float | None:
    """The standard error of the mean of ``values``, or None for fewer than two."""
    return float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else None


def _batch_line(
    where: str, key: str, batch_size: int, rows: pd.DataFrame, used: set[str], short_calls: list[Exclusion]
) -> LatencyModel:
    """The line of one pipeline call of ``batch_size`` images, fitted over calls (one point per call)."""
    calls = rows.groupby(_CALL_COLUMNS, sort=True).size().rename("images").reset_index()
    short = calls[calls["images"] != batch_size]
    for steps, group in short.groupby("steps", sort=True):
        for images, same in group.groupby("images", sort=True):
            reason = (
                f"short pipeline call: {images} of batch size {batch_size} images (left out of the batch-"
                f"{batch_size} latency line; kept for quality and memory)"
            )
            logger.warning("Excluded %d record(s) of %s at %d steps: %s", images * len(same), key, steps, reason)
            short_calls.append(Exclusion(model_key=key, steps=int(steps), reason=reason, rows=int(images * len(same))))
    calls = calls[calls["images"] == batch_size]
    if calls.empty:
        raise TableError(
            where,
            f"models.{key}.batch_latency.{batch_size}",
            f"expected at least one pipeline call of {batch_size} images, but every call at this batch size "
            f"was short; profile more prompts",
        )
    steps = calls["steps"].to_numpy(dtype=float)
    total = calls["total_s"].to_numpy(dtype=float)
    try:
        fit = fit_line(steps, total, quantity=f"latency at batch size {batch_size}", unit="s")
    except ValueError as err:
        warnings.warn(
            f"{key}: no latency line can be fitted at batch size {batch_size} ({err}); overhead and per-step "
            f"time are derived from the stage timings of its calls. Profile two or more step counts, with "
            f"enough warm-up, for a fitted line.",
            UserWarning,
            stacklevel=4,
        )
        rate = float((calls["denoise_s"] / calls["steps"]).mean())
        used.add("derived:latency-batch-stages")
        return LatencyModel(
            overhead_s=max(float((total - rate * steps).mean()), 0.0),
            per_step_s=rate,
            n=len(calls),
            r2=None,
            source="derived",
            ref="derived:latency-batch-stages",
            batch_size=batch_size,
        )
    used.add("measured:latency-batch")
    return LatencyModel(
        overhead_s=fit.intercept,
        per_step_s=fit.slope,
        n=fit.n,
        r2=fit.r2,
        source="measured",
        ref="measured:latency-batch",
        overhead_se_s=fit.intercept_se,
        per_step_se_s=fit.slope_se,
        residual_std_s=fit.residual_std,
        batch_size=batch_size,
    )


def _energy(ok: pd.DataFrame, latency: LatencyModel, used: set[str]) -> EnergyModel | None:
    """The energy line of a model's measured images, or None where none has an energy."""
    metered = ok[ok["energy_j"].notna()]
    if metered.empty:
        return None
    steps = metered["steps"].to_numpy(dtype=float)
    joules = metered["energy_j"].to_numpy(dtype=float)
    power = metered["average_power_w"].dropna()
    average_power = float(power.mean()) if len(power) else None
    try:
        fit = fit_line(steps, joules, quantity="energy", unit="J")
    except ValueError as err:
        # total_s is per call, shared by the images of its batch: per-image seconds pair with per-image joules.
        seconds = float((metered["total_s"] / metered["batch_size"]).sum())
        if not seconds > 0:
            warnings.warn(
                f"{ok['model_key'].iat[0]}: no energy line can be fitted ({err}) and the metered images "
                f"took no time to scale the latency line by; the table has no energy for this model.",
                UserWarning,
                stacklevel=3,
            )
            return None
        watts = float(joules.sum()) / seconds
        warnings.warn(
            f"{ok['model_key'].iat[0]}: no energy line can be fitted ({err}); the latency line is scaled "
            f"by the mean power ({watts:.4g} W). Profile two or more step counts with energy for a fitted line.",
            UserWarning,
            stacklevel=3,
        )
        used.add("derived:energy-power")
        return EnergyModel(
            overhead_j=watts * latency.overhead_s,
            per_step_j=watts * latency.per_step_s,
            n=len(metered),
            r2=None,
            source="derived",
            ref="derived:energy-power",
            average_power_w=average_power,
        )
    used.add("measured:energy")
    return EnergyModel(
        overhead_j=fit.intercept,
        per_step_j=fit.slope,
        n=fit.n,
        r2=fit.r2,
        source="measured",
        ref="measured:energy",
        overhead_se_j=fit.intercept_se,
        per_step_se_j=fit.slope_se,
        residual_std_j=fit.residual_std,
        average_power_w=average_power,
    )


def _memory(
    where: str, path: str, ok: pd.DataFrame, manifest_model: Mapping[str, Any], runs: ProfileRuns, used: set[str]
) -> MemoryPeak:
    columns = {
        **{rung: rung_column(rung) for rung in MEMORY_RUNGS},
        **dict(zip(HOST_MEMORY_FIELDS, HOST_MEMORY_COLUMNS)),
    }
    rungs = {rung: None if ok[column].isna().all() else int(ok[column].max()) for rung, column in columns.items()}
    measured = next((peak for peak in _PROCESS_PEAKS if rungs[peak]), None)
    if measured is not None:
        # The resident set is a CPU run's figure: the process's whole memory, not a GPU rung.
        ref = "measured:memory-rss" if measured == "rss_bytes" else "measured:memory"
        used.add(ref)
        return MemoryPeak(
            peak_bytes=rungs[measured],
            kind=measured.removesuffix("_bytes"),
            source="measured",
            ref=ref,
            **rungs,
        )
    params = manifest_model.get("unet_params")
    dtypes = {str(m.get("dtype")) for m in runs.manifests.values()}
    if not isinstance(params, int) or params <= 0 or len(dtypes) != 1 or next(iter(dtypes)) not in _DTYPE_BYTES:
        raise TableError(
            where,
            f"{path}.memory",
            f"no memory rung nor RSS was measured and the peak cannot be derived: expected the manifest's "
            f"models[].unet_params > 0 and one dtype of {sorted(_DTYPE_BYTES)}, but got "
            f"unet_params={params!r}, dtype={sorted(dtypes)}",
        )
    warnings.warn(
        f"{manifest_model['key']}: no memory rung nor RSS was measurable; peak_bytes is derived from the "
        f"denoiser's parameter count (a lower bound).",
        UserWarning,
        stacklevel=3,
    )
    used.add("derived:memory-params")
    return MemoryPeak(
        peak_bytes=params * _DTYPE_BYTES[next(iter(dtypes))],
        kind="denoiser_weights",
        source="derived",
        ref="derived:memory-params",
        **rungs,
    )


def _category_order(mapping: Mapping[str, Any], seen: set[str]) -> tuple[str, ...]:
    """Order categories as the mapping lists them (``labels`` keys); any others follow sorted."""
    order = [category for category in mapping.get("labels") or {} if category in seen]
    return tuple(order + sorted(seen - set(order)))
