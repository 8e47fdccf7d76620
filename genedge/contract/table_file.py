"""Reading, validating and writing calibration tables (the JSON document of DESIGN §2.3).

Reading a table validates it completely, through the contract's one field reader
(:class:`~genedge.contract.fields.FieldReader`): a problem is reported as a :class:`TableError`
naming the file and the field, never as a stack trace from deep inside the planner. Every number
is checked against the physical ranges of :mod:`genedge.contract.bounds`. Writing is atomic, with
a stable key order, so the same table always gives the same bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from genedge.contract.bounds import (
    MAX_BATCH_SIZE,
    MAX_GUIDANCE_SCALE,
    MAX_JOULES,
    MAX_MEMORY_BYTES,
    MAX_PIXELS,
    MAX_SCORE_SE,
    MAX_SECONDS,
    MAX_STEPS,
    MAX_THREADS,
    MAX_WATTS,
)
from genedge.contract.clip import CLIPSCORE_RANGE, ClipConvention
from genedge.contract.fields import FieldReader
from genedge.contract.files import ArtifactError, check_input_file, parse_json, write_json_atomic
from genedge.contract.mappings import check_category_mapping
from genedge.contract.runs import DEFAULT_DTYPE, DEFAULT_GUIDANCE_SCALE, MEMORY_RUNGS
from genedge.contract.table import (
    HOST_MEMORY_FIELDS,
    CalibrationTable,
    CurveForm,
    EnergyModel,
    Exclusion,
    LatencyModel,
    MemoryPeak,
    ModelCalibration,
    PairedCells,
    ProfiledModel,
    ProfileRun,
    QualityCell,
    QualityCurve,
    Source,
    StageBreakdown,
    TableManifest,
    cell_error_problem,
    saturating_mean,
)

__all__ = [
    "SCHEMA_VERSION",
    "TableError",
    "load_table",
    "public_table_document",
    "read_table_file",
    "save_table",
    "table_from_dict",
    "table_manifest_from_dict",
    "table_manifest_with",
    "table_to_dict",
]

SCHEMA_VERSION = 1
_KIND = "genedge.calibration_table"


class TableError(ArtifactError):
    """A calibration table (or an input to one) is malformed.

    The message names the file, the field (as a dotted path) and what was
    expected.
    """


def _source(r: FieldReader, obj: Mapping[str, Any], path: str, sources: Mapping[str, Any]) -> tuple[Source, str]:
    """A sourced object's ``source`` (one of :data:`Source`) and ``ref`` (a key of ``sources``)."""
    source = r.get(obj, "source", path, str)
    allowed = get_args(Source)
    if source not in allowed:
        raise r.fail(f"{path}.source", f"expected one of {list(allowed)}, but got {source!r}")
    ref = r.get(obj, "ref", path, str)
    if ref not in sources:
        raise r.fail(f"{path}.ref", f"{ref!r} is not a key of 'sources' (have {sorted(sources)})")
    return source, ref


def _whole_key(text: str) -> int | None:
    """The positive integer a JSON object key spells canonically (``"20"``, not ``"020"``), else None."""
    # Seven digits already exceed every bound; the length check keeps int() from a megabyte of digits.
    if not (text.isascii() and text.isdigit() and len(text) <= 7) or str(int(text)) != text or int(text) < 1:
        return None
    return int(text)


def _step_key(r: FieldReader, text: str, path: str) -> int:
    """A step count written as an object key (a quality cell's or a stage breakdown's)."""
    steps = _whole_key(text)
    if steps is None:
        raise r.fail(path, f"expected a positive integer step count as key, but got {text!r}")
    return r.bounded(steps, path, maximum=MAX_STEPS, what="a step count")


def _read_steps(r: FieldReader, raw: list[Any], path: str) -> tuple[int, ...]:
    if not raw:
        raise r.fail(path, "expected a non-empty list of step counts, but got []")
    steps = tuple(
        r.bounded(
            r.check(s, f"{path}[{i}]", int),
            f"{path}[{i}]",
            minimum=0,
            strict=True,
            maximum=MAX_STEPS,
            what="a step count",
        )
        for i, s in enumerate(raw)
    )
    if len(set(steps)) != len(steps):
        dup = sorted({s for s in steps if steps.count(s) > 1})
        raise r.fail(path, f"expected unique step counts, but got duplicates {dup}")
    if list(steps) != sorted(steps):
        raise r.fail(path, f"expected step counts in increasing order, but got {list(steps)}")
    return steps


def _read_cell(r: FieldReader, raw: Mapping[str, Any], path: str, sources: Mapping[str, Any]) -> QualityCell:
    mean = r.number(raw, "mean", path, minimum=CLIPSCORE_RANGE[0], maximum=CLIPSCORE_RANGE[1])
    std = r.number(raw, "std", path, minimum=0.0, strict=True, maximum=CLIPSCORE_RANGE[1])
    n = r.count(raw, "n", path)
    gof = r.opt(raw, "gof", path, float)
    if gof is not None and not 0.0 <= gof <= 1.0:
        raise r.fail(f"{path}.gof", f"expected a p-value in [0, 1], but got {gof}")
    source, ref = _source(r, raw, path, sources)
    flags = tuple(r.check(f, f"{path}.flags[{i}]", str) for i, f in enumerate(r.opt(raw, "flags", path, list) or []))
    errors = {
        name: r.opt_number(raw, name, path, minimum=0.0, maximum=MAX_SCORE_SE, what="a finite standard error")
        for name in ("mean_se", "std_se")
    }
    problem = cell_error_problem(std, n, **errors)
    if problem is not None:
        raise r.fail(f"{path}.{problem[0]}", problem[1])
    return QualityCell(mean=mean, std=std, n=n, gof=gof, source=source, ref=ref, flags=flags, **errors)


def _read_curve(
    r: FieldReader, raw: Mapping[str, Any], path: str, sources: Mapping[str, Any], cells: Mapping[int, QualityCell]
) -> QualityCurve:
    form = r.get(raw, "form", path, str)
    if form not in get_args(CurveForm):
        raise r.fail(f"{path}.form", f"expected one of {list(get_args(CurveForm))}, but got {form!r}")
    bounds = r.get(raw, "valid_steps", path, list)
    if len(bounds) != 2:
        raise r.fail(f"{path}.valid_steps", f"expected [lo, hi], but got {bounds}")
    lo, hi = (
        r.bounded(r.check(v, f"{path}.valid_steps[{i}]", int), f"{path}.valid_steps[{i}]", maximum=MAX_STEPS)
        for i, v in enumerate(bounds)
    )
    if not 0 < lo <= hi:
        raise r.fail(f"{path}.valid_steps", f"expected 0 < lo <= hi, but got [{lo}, {hi}]")
    source, ref = _source(r, raw, path, sources)
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
    b_se = r.opt_number(raw, "b_se", path, minimum=0.0, maximum=MAX_SCORE_SE, what="a standard error")
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


def _read_quality(
    r: FieldReader, raw: Mapping[str, Any], path: str, categories: tuple[str, ...], sources: Mapping[str, Any]
) -> dict[str, dict[int, QualityCell]]:
    """A model's ``quality``: category → steps → cell, every category of the table and no other."""
    quality: dict[str, dict[int, QualityCell]] = {}
    for category in categories:
        cells: dict[int, QualityCell] = {}
        for s_text, cell in r.get(raw, category, path, dict).items():
            cpath = f"{path}.{category}.{s_text}"
            cells[_step_key(r, s_text, cpath)] = _read_cell(r, r.check(cell, cpath, dict), cpath, sources)
        if not cells:
            raise r.fail(f"{path}.{category}", "expected at least one step count, but got none")
        quality[category] = dict(sorted(cells.items()))
    extra = sorted(set(raw) - set(categories))
    if extra:
        raise r.fail(path, f"categories {extra} are not in the table's categories {list(categories)}")
    return quality


def _read_memory(
    r: FieldReader, raw: Mapping[str, Any], mpath: str, sources: Mapping[str, Any], device_memory: int | None
) -> MemoryPeak:
    """A model's ``memory``: its peak (which must fit the device) and the rungs that were measured."""
    peak = r.get(raw, "peak_bytes", mpath, int)
    if not 0 < peak <= MAX_MEMORY_BYTES:
        raise r.fail(f"{mpath}.peak_bytes", f"expected bytes in (0, {MAX_MEMORY_BYTES}], but got {peak}")
    if device_memory is not None and peak > device_memory:
        raise r.fail(
            f"{mpath}.peak_bytes",
            f"model needs {peak / 2**30:.2f} GiB but the device has {device_memory / 2**30:.2f} GiB",
        )
    rungs = {}
    for rung in (*MEMORY_RUNGS, *HOST_MEMORY_FIELDS):
        value = r.opt(raw, rung, mpath, int)
        if value is not None and not 0 <= value <= MAX_MEMORY_BYTES:
            raise r.fail(f"{mpath}.{rung}", f"expected bytes in [0, {MAX_MEMORY_BYTES}], but got {value}")
        rungs[rung] = value
    return MemoryPeak(
        peak_bytes=peak,
        kind=r.get(raw, "kind", mpath, str),
        **dict(zip(("source", "ref"), _source(r, raw, mpath, sources))),
        **rungs,
    )


def _read_model(
    r: FieldReader,
    key: str,
    raw: Mapping[str, Any],
    categories: tuple[str, ...],
    sources: Mapping[str, Any],
    convention: ClipConvention,
    device_memory: int | None,
) -> ModelCalibration:
    path = f"models.{key}"
    name = r.get(raw, "name", path, str)
    resolution = r.bounded(
        r.get(raw, "resolution", path, int), f"{path}.resolution", minimum=1, maximum=MAX_PIXELS, what="pixels"
    )
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

    quality = _read_quality(r, r.get(raw, "quality", path, dict), f"{path}.quality", categories, sources)
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
    memory = _read_memory(r, r.get(raw, "memory", path, dict), f"{path}.memory", sources, device_memory)
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


def _read_latency(r: FieldReader, raw: Mapping[str, Any], path: str, sources: Mapping[str, Any]) -> LatencyModel:
    optional = {
        name: r.opt_number(raw, name, path, minimum=0.0, maximum=MAX_SECONDS, what="seconds")
        for name in ("overhead_se_s", "per_step_se_s", "residual_std_s", "step_p50_s", "step_p95_s")
    }
    batch_size = r.opt(raw, "batch_size", path, int)
    if batch_size is not None:
        r.bounded(batch_size, f"{path}.batch_size", minimum=0, strict=True, maximum=MAX_BATCH_SIZE, what="a batch size")
    stages = {}
    for s_text, stage in (r.opt(raw, "stages", path, dict) or {}).items():
        spath = f"{path}.stages.{s_text}"
        r.check(stage, spath, dict)
        stages[_step_key(r, s_text, spath)] = StageBreakdown(
            **{
                name: r.number(stage, name, spath, minimum=0.0, maximum=MAX_SECONDS)
                for name in ("text_encode_s", "denoise_s", "decode_s")
            }
        )
    return LatencyModel(
        overhead_s=r.number(raw, "overhead_s", path, minimum=0.0, maximum=MAX_SECONDS),
        per_step_s=r.number(raw, "per_step_s", path, minimum=0.0, strict=True, maximum=MAX_SECONDS),
        n=r.count(raw, "n", path),
        r2=r.opt_number(raw, "r2", path, maximum=1.0, what="a coefficient of determination"),
        **dict(zip(("source", "ref"), _source(r, raw, path, sources))),
        **optional,
        batch_size=batch_size,
        stages=dict(sorted(stages.items())),
    )


def _read_batch_latency(
    r: FieldReader, raw: Mapping[str, Any], path: str, sources: Mapping[str, Any], base: LatencyModel
) -> dict[int, LatencyModel]:
    """Read ``batch_latency``: batch size → line of one call of that many images."""
    base_batch = base.batch_size or 1
    lines: dict[int, LatencyModel] = {}
    for b_text, raw_line in raw.items():
        bpath = f"{path}.{b_text}"
        b = _whole_key(b_text)
        if b is None:
            raise r.fail(bpath, f"expected a batch size (an integer >= 1) as key, but got {b_text!r}")
        r.bounded(b, bpath, maximum=MAX_BATCH_SIZE, what="a batch size (images one call can hold on a device)")
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


def _read_energy(r: FieldReader, raw: Mapping[str, Any], path: str, sources: Mapping[str, Any]) -> EnergyModel:
    optional = {name: r.opt(raw, name, path, float) for name in ("overhead_se_j", "per_step_se_j", "residual_std_j")}
    for name, value in optional.items():
        if value is not None and not 0 <= value <= MAX_JOULES:
            raise r.fail(f"{path}.{name}", f"expected joules in [0, {MAX_JOULES:g}], but got {value}")
    power = r.opt(raw, "average_power_w", path, float)
    if power is not None and not 0 <= power <= MAX_WATTS:
        raise r.fail(f"{path}.average_power_w", f"expected watts in [0, {MAX_WATTS:g}], but got {power}")
    n = r.count(raw, "n", path)
    return EnergyModel(
        overhead_j=r.number(raw, "overhead_j", path, minimum=0.0, maximum=MAX_JOULES),
        per_step_j=r.number(raw, "per_step_j", path, minimum=0.0, maximum=MAX_JOULES),
        n=n,
        r2=r.opt_number(raw, "r2", path, maximum=1.0, what="a coefficient of determination"),
        **dict(zip(("source", "ref"), _source(r, raw, path, sources))),
        **optional,
        average_power_w=power,
    )


# A paired cells' correlation matrix is symmetric with a unit diagonal to this tolerance (JSON round-off).
_CORRELATION_ATOL = 1e-9


def _read_paired(
    r: FieldReader, raw: list[Any], categories: tuple[str, ...], models: Mapping[str, Any]
) -> tuple[PairedCells, ...]:
    paired, seen = [], set()
    for i, entry in enumerate(raw):
        path = f"paired_cells[{i}]"
        r.check(entry, path, dict)
        category = r.get(entry, "category", path, str)
        if category not in categories or category in seen:
            raise r.fail(f"{path}.category", f"expected one entry per category of {list(categories)}, got {category!r}")
        seen.add(category)
        cells = tuple(
            _read_paired_cell(r, cell, f"{path}.cells[{j}]", category, models)
            for j, cell in enumerate(r.get(entry, "cells", path, list))
        )
        if len(cells) < 2 or len(set(cells)) != len(cells):
            raise r.fail(f"{path}.cells", f"expected two or more distinct [model, steps] cells, but got {cells}")
        rows = r.get(entry, "correlation", path, list)
        matrix = [
            [
                r.check(v, f"{path}.correlation[{a}][{b}]", (int, float))
                for b, v in enumerate(r.check(row, f"{path}.correlation[{a}]", list))
            ]
            for a, row in enumerate(rows)
        ]
        _check_correlation(r, matrix, len(cells), f"{path}.correlation")
        paired.append(PairedCells(category, cells, tuple(tuple(float(v) for v in row) for row in matrix)))
    return tuple(paired)


def _read_paired_cell(r: FieldReader, raw: Any, path: str, category: str, models: Mapping[str, Any]) -> tuple[str, int]:
    cell = r.check(raw, path, list)
    if len(cell) != 2 or not isinstance(cell[0], str) or type(cell[1]) is not int:
        raise r.fail(path, f"expected [model key, steps], but got {cell!r}")
    key, steps = cell
    if key not in models or steps not in models[key].quality.get(category, {}):
        raise r.fail(path, f"expected a quality cell of the table, but {key!r} has no {category} cell at {steps} steps")
    return key, steps


def _check_correlation(r: FieldReader, matrix: list[list[float]], size: int, path: str) -> None:
    if len(matrix) != size or any(len(row) != size for row in matrix):
        raise r.fail(path, f"expected a {size} x {size} matrix (one row and column per cell)")
    for a in range(size):
        for b in range(size):
            value = matrix[a][b]
            if not (math.isfinite(value) and -1 <= value <= 1):
                raise r.fail(f"{path}[{a}][{b}]", f"expected a correlation in [-1, 1], but got {value}")
            if abs(value - (1.0 if a == b else matrix[b][a])) > _CORRELATION_ATOL:
                expected = "1 on the diagonal" if a == b else f"symmetric ({matrix[b][a]} at [{b}][{a}])"
                raise r.fail(f"{path}[{a}][{b}]", f"expected {expected}, but got {value}")


def _read_exclusions(r: FieldReader, raw: list[Any], models: Mapping[str, Any]) -> tuple[Exclusion, ...]:
    exclusions = []
    for i, entry in enumerate(raw):
        path = f"exclusions[{i}]"
        r.check(entry, path, dict)
        model_key = r.get(entry, "model_key", path, str)
        if model_key not in models:
            raise r.fail(
                f"{path}.model_key", f"expected one of the table's models {sorted(models)}, but got {model_key!r}"
            )
        rows = r.count(entry, "rows", path, minimum=1)
        exclusions.append(
            Exclusion(
                model_key=model_key,
                steps=r.count(entry, "steps", path, maximum=MAX_STEPS),
                reason=r.get(entry, "reason", path, str),
                rows=rows,
            )
        )
    return tuple(exclusions)


def _read_convention(r: FieldReader, raw: Mapping[str, Any], path: str) -> ClipConvention:
    return ClipConvention(
        **{
            name: r.get(raw, name, path, str)
            for name in ("backbone", "pretrained", "formula", "truncation", "preprocess")
        }
    )


def _read_profiled_model(r: FieldReader, raw: Any, path: str) -> ProfiledModel:
    """One entry of a profile run's ``models``: its key, resolution and scheduler class."""
    r.check(raw, path, dict)
    scheduler = r.opt(raw, "scheduler", path, dict)
    scheduler_class = None if scheduler is None else r.opt(scheduler, "class", f"{path}.scheduler", str)
    resolution = r.get(raw, "resolution", path, int)
    return ProfiledModel(
        key=r.name(r.get(raw, "key", path, str), f"{path}.key"),
        resolution=r.bounded(resolution, f"{path}.resolution", minimum=1, maximum=MAX_PIXELS, what="pixels"),
        scheduler=None if scheduler_class is None else r.name(scheduler_class, f"{path}.scheduler.class"),
    )


def _read_profile_run(r: FieldReader, run_id: str, raw: Any, path: str) -> ProfileRun:
    """One embedded run manifest; an older run without a guidance scale or dtype gets the run defaults here."""
    r.check(raw, path, dict)
    guidance_scale = r.opt_number(
        raw, "guidance_scale", path, minimum=0.0, maximum=MAX_GUIDANCE_SCALE, what="a guidance scale"
    )
    dtype = r.opt(raw, "dtype", path, str)
    host = r.opt(raw, "host", path, dict) or {}
    threads = r.opt(host, "threads", f"{path}.host", int)
    if threads is not None:
        r.bounded(threads, f"{path}.host.threads", minimum=1, maximum=MAX_THREADS, what="a thread count")
    models = r.get(raw, "models", path, list)
    return ProfileRun(
        run_id=run_id,
        models=tuple(_read_profiled_model(r, model, f"{path}.models[{i}]") for i, model in enumerate(models)),
        guidance_scale=DEFAULT_GUIDANCE_SCALE if guidance_scale is None else guidance_scale,
        dtype=DEFAULT_DTYPE if dtype is None else r.name(dtype, f"{path}.dtype"),
        threads=threads,
    )


def _read_manifest(r: FieldReader, raw: Mapping[str, Any], path: str) -> TableManifest:
    """The ``manifest`` object: its ``runs`` typed, the object itself kept to be written back unchanged."""
    runs = r.opt(raw, "runs", path, dict) or {}
    return TableManifest(
        runs={
            r.name(run_id, f"{path}.runs"): _read_profile_run(r, run_id, run, f"{path}.runs.{run_id}")
            for run_id, run in runs.items()
        },
        document=dict(raw),
    )


def table_manifest_from_dict(raw: Mapping[str, Any], where: str = "<table>") -> TableManifest:
    """Validate a table's ``manifest`` object and build its :class:`~genedge.contract.table.TableManifest`.

    The object is free-form but for ``runs`` (run id → the run's manifest fields), whose runs are read
    into typed :class:`~genedge.contract.table.ProfileRun` records: each must list its ``models`` with a
    ``key`` and an integer ``resolution``, and a stated ``guidance_scale``, ``dtype`` or ``host.threads``
    must be in range.

    Args:
        raw: the ``manifest`` object (as read, or as a builder assembles it).
        where: what to call the table in errors (usually its path).

    Raises:
        TableError: naming ``where`` and the field, e.g. ``manifest.runs.RUN.models[0].resolution``.
    """
    r = FieldReader(where, TableError)
    return _read_manifest(r, r.check(raw, "manifest", dict), "manifest")


def table_manifest_with(manifest: TableManifest, entries: Mapping[str, Any], where: str = "<table>") -> TableManifest:
    """``manifest`` with free-form ``entries`` set in its document (e.g. ``served``: the served records a table's
    latency lines were updated from), validated as :func:`table_manifest_from_dict` validates a manifest.

    Raises:
        TableError: ``entries`` set ``runs`` to something that is not a valid run map, naming ``where`` and the field.
    """
    return table_manifest_from_dict({**manifest.document, **entries}, where)


#: The fields of a profile run's ``host`` that a table is read by (the rest describe the machine that measured).
_PUBLIC_HOST_FIELDS = ("threads",)


def public_table_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A table document with each profile run's ``host`` cut to what a table is read by (``threads``).

    What a server shows its clients: the numbers, the device and the settings the measurements were made
    with, without the kernel release, platform string, CPU model or memory of the profiling machine. The
    table's identity is its file's sha256, which the server reports beside it. A document that is not a
    table's shape is returned as it is (it was validated when the server read it).
    """
    public = dict(doc)
    manifest = doc.get("manifest")
    runs = manifest.get("runs") if isinstance(manifest, Mapping) else None
    if not isinstance(runs, Mapping):
        return public
    kept = {}
    for run_id, run in runs.items():
        host = run.get("host") if isinstance(run, Mapping) else None
        if isinstance(host, Mapping):
            run = {**run, "host": {key: value for key, value in host.items() if key in _PUBLIC_HOST_FIELDS}}
        kept[run_id] = run
    public["manifest"] = {**manifest, "runs": kept}
    return public


def table_from_dict(doc: Mapping[str, Any], where: str = "<table>") -> CalibrationTable:
    """Validate a parsed table document and build a :class:`CalibrationTable`.

    Args:
        doc: the parsed JSON document.
        where: what to call the document in errors (usually its path).

    Raises:
        TableError: naming ``where`` and the offending field.
    """
    r = FieldReader(where, TableError)
    version = r.get(doc, "schema_version", "", int)
    if version != SCHEMA_VERSION:
        raise r.fail("schema_version", f"expected {SCHEMA_VERSION}, but got {version}")
    kind = r.get(doc, "kind", "", str)
    if kind != _KIND:
        raise r.fail("kind", f"expected {_KIND!r}, but got {kind!r}")
    device = r.get(doc, "device", "", dict)
    r.name(r.get(device, "name", "device", str), "device.name")
    device_memory = r.opt(device, "memory_bytes", "device", int)
    if device_memory is not None:
        r.bounded(device_memory, "device.memory_bytes", minimum=0, strict=True, maximum=MAX_MEMORY_BYTES, what="bytes")
    convention = _read_convention(r, r.get(doc, "clip_convention", "", dict), "clip_convention")
    raw_categories = r.get(doc, "categories", "", list)
    if not raw_categories:
        raise r.fail("categories", "expected a non-empty list of category names, but got []")
    categories = tuple(r.name(c, f"categories[{i}]") for i, c in enumerate(raw_categories))
    if len(set(categories)) != len(categories):
        raise r.fail("categories", f"expected unique names, but got {list(categories)}")
    sources = r.get(doc, "sources", "", dict)
    for ref, entry in sources.items():
        r.get(r.check(entry, f"sources.{ref}", dict), "kind", f"sources.{ref}", str)
    raw_models = r.get(doc, "models", "", dict)
    if not raw_models:
        raise r.fail("models", "expected at least one model, but got none")
    models = {
        r.name(key, "models"): _read_model(
            r, key, r.check(raw, f"models.{key}", dict), categories, sources, convention, device_memory
        )
        for key, raw in raw_models.items()
    }
    return CalibrationTable(
        device=dict(device),
        clip_convention=convention,
        categories=categories,
        category_mapping=check_category_mapping(r.get(doc, "category_mapping", "", dict), where, TableError),
        models=models,
        sources={k: dict(v) for k, v in sources.items()},
        manifest=_read_manifest(r, r.opt(doc, "manifest", "", dict) or {}, "manifest"),
        exclusions=_read_exclusions(r, r.opt(doc, "exclusions", "", list) or [], models),
        paired=_read_paired(r, r.opt(doc, "paired_cells", "", list) or [], categories, models),
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
        "manifest": dict(table.manifest.document),
        **_present(
            exclusions=[
                {"model_key": e.model_key, "steps": e.steps, "reason": e.reason, "rows": e.rows}
                for e in table.exclusions
            ],
            paired_cells=[
                {
                    "category": p.category,
                    "cells": [list(c) for c in p.cells],
                    "correlation": [list(r) for r in p.correlation],
                }
                for p in table.paired
            ],
        ),
    }


def read_table_file(path: str | os.PathLike[str]) -> tuple[CalibrationTable, bytes]:
    """Read and validate a calibration table JSON file; return the table and the bytes it was read from.

    The file is read once, so the bytes a plan hashes (``table_sha256``) are the ones the table was parsed
    from, even if the file changes meanwhile.

    Raises:
        FileNotFoundError: the file does not exist.
        TableError: the file is not valid JSON or violates the schema (names file and field).
        ArtifactError: it is not a regular file (a FIFO, a device).
    """
    what = "a JSON calibration table"
    path = check_input_file(path, what)
    data = path.read_bytes()
    return table_from_dict(parse_json(data, str(path), what, TableError), where=str(path)), data


def load_table(path: str | os.PathLike[str]) -> CalibrationTable:
    """Read and validate a calibration table JSON file (:func:`read_table_file`, without the bytes)."""
    return read_table_file(path)[0]


def save_table(table: CalibrationTable, path: str | os.PathLike[str]) -> Path:
    """Write a table atomically (temporary file + rename), with stable key order.

    The same table always produces the same bytes, so re-running a fit on the
    same records gives a byte-identical file.
    """
    return write_json_atomic(path, table_to_dict(table))
