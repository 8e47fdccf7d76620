"""Latency lines updated from a served plan's records: ``genedge calibrate --served``.

A load test (``genedge loadtest``) stores what the server recorded of every image it generated: the model,
its steps, the device, the batch size of the call and the call's time ``service_s`` on the model's share
(:mod:`genedge.serve.loadtest_layout`). This module reads one or more such result directories and refits the
latency lines of a calibration table on them:

- Only ok (HTTP 200) records with the server's record count; rejected, failed and timed-out requests (and an
  ok answer without the server's record) are left out, and their count is logged.
- A call on share r is converted to the whole device by the plan's own rule, t_device = ``service_s`` · r
  (a model on share r runs as on a device r as fast, the share scheduler's reserved mode), with r the share
  the call started on as its record says (``share``: a server of a plan schedule changes shares with its band),
  or, for records written before they carried it, the replica's share in the server's notes in the manifest
  (``served.models``). The ratio of this to the
  table's call time is the server's own recalibration ratio (served / planned,
  :class:`genedge.serve.loop.ServedTimes`).
- The images of one call share one measurement, so records are grouped into calls (same test, model,
  device, steps, batch size and ``service_s``): one point per call, ``n`` counting calls, as a profile's
  batch lines are fitted.
- Per (model, batch size): where the calls cover two or more step counts and a line with a positive slope fits,
  the line is refitted on them by least squares (``measured:latency-served``). Otherwise the table's line at
  that batch size is scaled by the mean served/table ratio R over the calls, o' = R·o and τ' = R·τ, with
  standard errors SE(R·x)² = (R·SE(x))² + (x·SE(R))² (``derived:latency-served-ratio``): at the served steps the
  new line gives the served mean exactly.
- A batch size the table has no line for is left out (with a logged count): the planner answers no batch size
  it was not given. Lines the records do not cover, quality cells, curves, memory and energy are the input
  table's, unchanged.

Records of load tests against a table of another device (``table.device.name`` in the manifest), of a model
the input table does not have, or of a plan schedule's server written before records carried each call's share
are refused with an error naming the file and the field.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genedge.calibrate.fit import fit_line
from genedge.contract.files import ArtifactError, check_write_target
from genedge.contract.table import CalibrationTable, LatencyModel, ModelCalibration
from genedge.contract.table_file import load_table, save_table, table_from_dict, table_manifest_with, table_to_dict

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SERVED_SOURCES",
    "ServedCell",
    "ServedLine",
    "ServedRecords",
    "ServedCalibration",
    "read_served",
    "recalibrate",
    "calibrate_served",
    "served_summary",
]

logger = logging.getLogger(__name__)

#: The ``sources`` entries of lines updated from served records.
SERVED_SOURCES: dict[str, dict[str, str]] = {
    "measured:latency-served": {
        "kind": "measured",
        "rule": "served call time on the whole device (service_s x the replica's share) = overhead_s + "
        "per_step_s*steps by ordinary least squares over the served calls of this batch size, one point per call "
        "(its images share one measurement) and n counting calls; refitted through the origin if the intercept "
        "came out negative; standard errors from sigma^2 (X'X)^-1. Step percentiles and stages are the "
        "profile's.",
    },
    "derived:latency-served-ratio": {
        "kind": "derived",
        "rule": "the served calls cover one step count (or no line with a positive slope fits them), so the "
        "table's line at this batch size is scaled by R, the mean over the served calls of (service_s x the "
        "replica's share) / the table's call time at the call's steps: overhead_s = R*o, per_step_s = R*tau, "
        "SE(R*x)^2 = (R*SE(x))^2 + (x*SE(R))^2 with SE(R) the standard error of the mean ratio; n counts the "
        "served calls. Step percentiles and stages are the profile's.",
    },
}
# The columns that identify one pipeline call among a test's records.
_CALL_KEYS = ["test_id", "model", "device", "steps", "batch_size", "service_s"]
_SERVER_FIELDS = ("model", "steps", "device", "batch_size", "service_s")


@dataclass(frozen=True)
class ServedCell:
    """The served calls of one (model, steps, batch size) beside the input table's time.

    Attributes:
        calls: pipeline calls; images: the ok images they made.
        mean_s: mean call time on the whole device (s); se_s: its standard error (None from one call).
        table_s: the input table's call time at these steps and batch size (s).
        ratio: mean of the calls' served/table ratios; ratio_se: its standard error (None from one call).
    """

    model: str
    steps: int
    batch_size: int
    calls: int
    images: int
    mean_s: float
    se_s: float | None
    table_s: float
    ratio: float
    ratio_se: float | None


@dataclass(frozen=True)
class ServedLine:
    """One updated latency line: the model, batch size, the rule's ``sources`` key, and the line before and after."""

    model: str
    batch_size: int
    ref: str
    before: LatencyModel
    after: LatencyModel


@dataclass(frozen=True)
class ServedRecords:
    """The served calls of one or more load tests, each converted to the whole device.

    Attributes:
        calls: one row per call: ``test_id``, ``model``, ``device``, ``steps``, ``batch_size``, ``service_s``,
            ``share``, ``images`` and ``device_s`` (``service_s`` · ``share``).
        result_dirs: the load-test directories read, in order; tests: their test ids.
        device: the device name of the tables they served.
        left_out: why → records left out (not ok, no server record, ...).
    """

    calls: pd.DataFrame
    result_dirs: tuple[Path, ...]
    tests: tuple[str, ...]
    device: str | None
    left_out: Mapping[str, int]


@dataclass(frozen=True)
class ServedCalibration:
    """A table recalibrated on served records: the new table, the served cells and the lines it updated."""

    table: CalibrationTable
    cells: tuple[ServedCell, ...]
    lines: tuple[ServedLine, ...]
    served: ServedRecords


def read_served(result_dirs: Iterable[str | os.PathLike[str]]) -> ServedRecords:
    """Read the server's records of load-test result directories, as calls on the whole device.

    Raises:
        FileNotFoundError: a directory without a load-test manifest (``loadtest.json``).
        ArtifactError: a malformed manifest or record file, a manifest without the server's replicas
            (``served.models``), a plan schedule's records without each call's share, load tests of tables of
            different devices,
            a record of a model no replica on its device serves, or no ok record at all, naming the file and the
            field.
    """
    import pandas as pd

    from genedge.serve.loadtest_layout import MANIFEST_NAME, read_manifest, read_records
    from genedge.serve.protocol import ServedNotes

    dirs = tuple(Path(d) for d in result_dirs)
    if not dirs:
        raise ValueError("Expected at least one load-test result directory")
    frames, tests, devices, left_out = [], [], {}, {}
    for result_dir in dirs:
        if not result_dir.is_dir():
            raise FileNotFoundError(f"{result_dir}: no such load-test result directory")
        where = str(result_dir / MANIFEST_NAME)
        manifest = read_manifest(result_dir)
        notes = ServedNotes.from_dict(manifest.served, f"{where}: served")
        devices[where] = table_from_dict(manifest.table, f"{where}: table").device.get("name")
        records = read_records(result_dir)
        frames.append(_calls(result_dir, records, notes, left_out))
        tests.append(manifest.test_id)
    if len(set(devices.values())) > 1:
        raise ArtifactError(
            next(iter(devices)),
            "table.device.name",
            f"the load tests served tables of different devices ({devices}); calibrate each device on its own",
        )
    for reason, count in left_out.items():
        logger.warning("Left out %d served record(s): %s", count, reason)
    if sum(len(frame) for frame in frames) == 0:
        raise ArtifactError(
            ", ".join(str(d / "records") for d in dirs),
            "status",
            f"no ok record with the server's record to calibrate from (left out: {left_out or 'no records at all'})",
        )
    return ServedRecords(
        calls=pd.concat(frames, ignore_index=True),
        result_dirs=dirs,
        tests=tuple(tests),
        device=next(iter(devices.values())),
        left_out=left_out,
    )


def _calls(result_dir: Path, records: pd.DataFrame, notes: Any, left_out: dict[str, int]) -> pd.DataFrame:
    """The ok records of one test grouped into calls, each with its replica's share and its device time."""
    not_ok = records[records["status"] != "ok"]
    for status, count in not_ok["status"].value_counts().sort_index().items():
        reason = f"status {status} (no image served)"
        left_out[reason] = left_out.get(reason, 0) + int(count)
    ok = records[records["status"] == "ok"]
    complete = ok[list(_SERVER_FIELDS)].notna().all(axis=1)
    if (~complete).any():
        reason = "ok answers without the server's record (model, steps, device, batch_size, service_s)"
        left_out[reason] = left_out.get(reason, 0) + int((~complete).sum())
    grouped = ok[complete].groupby(_CALL_KEYS, sort=True)
    calls = grouped.size().rename("images").reset_index()
    recorded = grouped["share"].first().to_numpy(dtype=float)  # the share the call ran on, where recorded
    shares = []
    for model, device, share in zip(calls["model"], calls["device"], recorded):
        if not np.isnan(share):
            shares.append(share)
            continue
        if notes.scheduled:
            raise ArtifactError(
                str(result_dir / "records"),
                "share",
                "the server served a plan schedule, whose shares change with its band, and these records (written "
                "before records carried the share of each call) do not say the share a call ran on",
            )
        share = notes.share(str(model), int(device))
        if share is None:
            raise ArtifactError(
                str(result_dir / "records"),
                "model",
                f"records of model {model!r} on device {int(device)}, but the server's notes list no such replica "
                f"(served.models: {sorted({(m.key, m.device) for m in notes.models})})",
            )
        shares.append(share)
    calls["share"] = np.asarray(shares, dtype=float)
    calls["device_s"] = calls["service_s"] * calls["share"]
    calls["result_dir"] = str(result_dir)
    return calls


def _table_line(model: ModelCalibration, batch_size: int) -> LatencyModel | None:
    """The table's line of one call of ``batch_size`` images, or None where it has none."""
    if batch_size in model.batch_latency:
        return model.batch_latency[batch_size]
    return model.latency if batch_size == model.base_batch_size else None


def _mean_se(values: np.ndarray) -> float | None:
    return float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else None


def _scaled_se(ratio: float, ratio_se: float | None, value: float, value_se: float | None) -> float | None:
    """SE(R·x) from SE(R) and SE(x) (independent errors; a missing one counts as 0, both missing as None)."""
    if ratio_se is None and value_se is None:
        return None
    return math.hypot(ratio * (value_se or 0.0), value * (ratio_se or 0.0))


def _fit(calls: pd.DataFrame, line: LatencyModel, model: str, batch_size: int) -> tuple[LatencyModel, str]:
    """The updated line of one (model, batch size) from its served calls, and its ``sources`` key."""
    steps = calls["steps"].to_numpy(dtype=float)
    seconds = calls["device_s"].to_numpy(dtype=float)
    if np.unique(steps).size >= 2:
        try:
            fit = fit_line(steps, seconds, quantity=f"served latency of {model} at batch size {batch_size}", unit="s")
        except ValueError as err:
            logger.warning(
                "%s at batch size %d: no line fits the served calls (%s); scaling the table's", model, batch_size, err
            )
        else:
            ref = "measured:latency-served"
            updated = replace(
                line,
                overhead_s=fit.intercept,
                per_step_s=fit.slope,
                n=fit.n,
                r2=fit.r2,
                source="measured",
                ref=ref,
                overhead_se_s=fit.intercept_se,
                per_step_se_s=fit.slope_se,
                residual_std_s=fit.residual_std,
            )
            return updated, ref
    ratios = seconds / np.array([line.seconds(s) for s in steps])
    ratio, ratio_se = float(ratios.mean()), _mean_se(ratios)
    ref = "derived:latency-served-ratio"
    updated = replace(
        line,
        overhead_s=ratio * line.overhead_s,
        per_step_s=ratio * line.per_step_s,
        n=len(calls),
        r2=None,
        source="derived",
        ref=ref,
        overhead_se_s=_scaled_se(ratio, ratio_se, line.overhead_s, line.overhead_se_s),
        per_step_se_s=_scaled_se(ratio, ratio_se, line.per_step_s, line.per_step_se_s),
        residual_std_s=None,
    )
    return updated, ref


def _cells(calls: pd.DataFrame, table: CalibrationTable) -> list[ServedCell]:
    cells = []
    for (model, steps, batch_size), group in calls.groupby(["model", "steps", "batch_size"], sort=True):
        line = _table_line(table.models[model], int(batch_size))
        if line is None:
            continue
        seconds = group["device_s"].to_numpy(dtype=float)
        ratios = seconds / line.seconds(int(steps))
        cells.append(
            ServedCell(
                model=str(model),
                steps=int(steps),
                batch_size=int(batch_size),
                calls=len(group),
                images=int(group["images"].sum()),
                mean_s=float(seconds.mean()),
                se_s=_mean_se(seconds),
                table_s=line.seconds(int(steps)),
                ratio=float(ratios.mean()),
                ratio_se=_mean_se(ratios),
            )
        )
    return cells


def _check_models(served: ServedRecords, table: CalibrationTable, where: str) -> None:
    """Refuse records of a model the table lacks, or load tests of another device than the table's."""
    from genedge.serve.loadtest_layout import MANIFEST_NAME

    device = table.device.get("name")
    if served.device != device:
        raise ArtifactError(
            str(served.result_dirs[0] / MANIFEST_NAME),
            "table.device.name",
            f"the load test served a table of device {served.device!r}, but {where} is of device {device!r}",
        )
    for result_dir, calls in served.calls.groupby("result_dir", sort=False):
        unknown = sorted(set(calls["model"]) - set(table.models))
        if unknown:
            raise ArtifactError(
                str(Path(result_dir) / "records"),
                "model",
                f"records of models {unknown} that {where} does not have (its models: {sorted(table.models)})",
            )


def recalibrate(table: CalibrationTable, served: ServedRecords, where: str = "the table") -> ServedCalibration:
    """Update ``table``'s latency lines from served records (module notes give the rule).

    Args:
        table: the input table (its quality cells, curves, memory and energy are kept as they are).
        served: what :func:`read_served` read.
        where: what to call the table in errors (its path).

    Raises:
        ArtifactError: records of another device or of a model the table does not have, naming the file and field.
    """
    _check_models(served, table, where)
    calls = served.calls
    known = np.array(
        [_table_line(table.models[m], int(b)) is not None for m, b in zip(calls["model"], calls["batch_size"])],
        dtype=bool,
    )
    if (~known).any():
        logger.warning(
            "Left out %d served call(s) at batch sizes the table has no line for: %s",
            int((~known).sum()),
            sorted({(str(m), int(b)) for m, b in zip(calls["model"][~known], calls["batch_size"][~known])}),
        )
    calls = calls[known]
    models = dict(table.models)
    lines = []
    for (key, batch_size), group in calls.groupby(["model", "batch_size"], sort=True):
        model = models[key]
        before = _table_line(model, int(batch_size))
        after, ref = _fit(group, before, str(key), int(batch_size))
        lines.append(ServedLine(str(key), int(batch_size), ref, before, after))
        models[key] = _with_line(model, int(batch_size), after)
    new = replace(
        table,
        models=models,
        sources={**table.sources, **_sources(lines, served)},
        manifest=table_manifest_with(table.manifest, {"served": _provenance(served, calls)}, where),
    )
    checked = table_from_dict(table_to_dict(new), where=f"table recalibrated from served records of {where}")
    return ServedCalibration(checked, tuple(_cells(calls, table)), tuple(lines), served)


def _with_line(model: ModelCalibration, batch_size: int, line: LatencyModel) -> ModelCalibration:
    """``model`` with its line at ``batch_size`` replaced (the base batch's in ``latency`` and ``batch_latency``)."""
    batch_latency = dict(model.batch_latency)
    if batch_size in batch_latency:
        batch_latency[batch_size] = replace(line, step_p50_s=None, step_p95_s=None, stages={})
    if batch_size != model.base_batch_size:
        return replace(model, batch_latency=batch_latency)
    base = replace(
        line,
        step_p50_s=model.latency.step_p50_s,
        step_p95_s=model.latency.step_p95_s,
        batch_size=model.latency.batch_size,
        stages=model.latency.stages,
    )
    return replace(model, latency=base, batch_latency=batch_latency)


def _sources(lines: Sequence[ServedLine], served: ServedRecords) -> dict[str, dict[str, str]]:
    tests = ", ".join(f"{test} ({d})" for test, d in zip(served.tests, served.result_dirs))
    return {ref: {**SERVED_SOURCES[ref], "loadtests": tests} for ref in sorted({line.ref for line in lines})}


def _provenance(served: ServedRecords, calls: pd.DataFrame) -> dict[str, Any]:
    """The table manifest's ``served`` entry: per load test its directory, and calls and images per model and steps."""
    tests = []
    for test, result_dir in zip(served.tests, served.result_dirs):
        mine = calls[calls["result_dir"] == str(result_dir)]
        counts: dict[str, dict[str, dict[str, int]]] = {}
        for (model, steps), group in mine.groupby(["model", "steps"], sort=True):
            counts.setdefault(str(model), {})[str(int(steps))] = {
                "calls": len(group),
                "images": int(group["images"].sum()),
            }
        tests.append({"test_id": test, "result_dir": str(result_dir), "records": counts})
    return {"loadtests": tests, "left_out": dict(served.left_out)}


def calibrate_served(
    result_dirs: Iterable[str | os.PathLike[str]], table_path: str | os.PathLike[str], out: str | os.PathLike[str]
) -> tuple[ServedCalibration, Path]:
    """Recalibrate the table at ``table_path`` on the served records of ``result_dirs`` and write it to ``out``
    atomically (``out`` is checked before any work).

    Returns:
        (the recalibration, the written table's path).

    Raises:
        FileNotFoundError, ArtifactError: see :func:`read_served`, :func:`recalibrate` and
            :func:`~genedge.contract.table_file.load_table`.
    """
    check_write_target(out)
    table = load_table(table_path)
    result = recalibrate(table, read_served(result_dirs), str(table_path))
    return result, save_table(result.table, out)


def served_summary(result: ServedCalibration) -> str:
    """Per model, batch size and served steps: the table's call time beside the served one, their ratio ± SE and
    the number of calls; then each updated line before and after."""
    served = result.served
    lines = [
        (
            f"served records: {len(served.tests)} load test(s), {int(served.calls['images'].sum())} ok images in "
            f"{len(served.calls)} calls on {served.device}"
        ),
        *(f"  left out: {count} x {reason}" for reason, count in served.left_out.items()),
        "",
        (
            f"  {'model':<20}{'batch':>6}{'steps':>6}{'calls':>7}{'table s':>10}{'served s':>10}{'± SE':>9}"
            f"{'ratio':>8}{'± SE':>8}"
        ),
    ]
    for c in result.cells:
        lines.append(
            f"  {c.model:<20}{c.batch_size:>6}{c.steps:>6}{c.calls:>7}{c.table_s:>10.4g}{c.mean_s:>10.4g}"
            f"{_number(c.se_s, 9)}{c.ratio:>8.3f}{_number(c.ratio_se, 8, '.3f')}"
        )
    lines.append("")
    for line in result.lines:
        b, a = line.before, line.after
        lines.append(
            f"  {line.model} batch {line.batch_size} ({line.ref}): {b.overhead_s:.4g} s + {b.per_step_s:.4g} s/step "
            f"-> {a.overhead_s:.4g} s + {a.per_step_s:.4g} s/step"
        )
    return "\n".join(lines)


def _number(value: float | None, width: int, spec: str = ".3g") -> str:
    return f"{'—':>{width}}" if value is None else f"{value:>{width}{spec}}"
