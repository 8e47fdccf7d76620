"""What a load test measured, beside what the plan predicted at the demand it offered.

Measured per group (all requests, each model's, each category's) from the records:

- count, ok, rejected (503), errors and timeouts;
- mean, p95 and p99 of the client's response time (sending to the whole body received) over the ok
  requests, percentiles as ``numpy.percentile`` (linear) takes them, as ``vllm bench serve`` does;
- the server's mean queue wait, service and response (its record, from ingress to the image);
- SLO attainment: the fraction of **all** the group's requests answered ok within the SLO (a rejected
  or failed request misses it);
- throughput: ok requests per second over the time the test ran (per session: first send to last
  answer, summed over sessions);
- mean CLIPScore of the scored images.

A request's model is the server's record's (rejected and failed requests have none: ``(none)``);
its category is the one it was served as (the server's record), else the one it was sent with,
else its prompt's label.

Realized shares come from ``GET /v1/stats`` before and after each session: per device and model,
Δdevice_s / Δbacklogged_s summed over sessions, beside the planned share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genedge.contract.files import write_figure
from genedge.optimizer.model import arrival_model
from genedge.serve.predict import GroupPrediction, Prediction

if TYPE_CHECKING:
    import pandas as pd

    from genedge.optimizer.plan_file import PlanDocument
    from genedge.serve.loadtest_document import ScheduleSummary, SessionDocument

__all__ = [
    "NO_GROUP",
    "Comparison",
    "GroupMeasurement",
    "Measurement",
    "ShareMeasurement",
    "compare_run",
    "comparison_figure",
    "comparison_to_dict",
    "format_comparison",
    "measure",
    "realized_shares",
]

#: The group of requests the server's record does not place (rejected, failed).
NO_GROUP = "(none)"


@dataclass(frozen=True)
class GroupMeasurement:
    """Measured figures of one group of requests; times in seconds, None where no request gives them."""

    count: int
    ok: int
    rejected: int
    errors: int
    timeouts: int
    mean_response_s: float | None
    p95_response_s: float | None
    p99_response_s: float | None
    mean_server_response_s: float | None
    mean_queue_wait_s: float | None
    mean_service_s: float | None
    slo_attainment: float | None
    throughput_per_s: float | None
    mean_clipscore: float | None


@dataclass(frozen=True)
class Measurement:
    """A load test's measured figures: all requests, per model and per category, over ``duration_s``."""

    overall: GroupMeasurement
    per_model: Mapping[str, GroupMeasurement]
    per_category: Mapping[str, GroupMeasurement]
    duration_s: float
    slo_s: float | None = None


@dataclass(frozen=True)
class ShareMeasurement:
    """One model's share of one device over the test: planned, and realized = device_s / backlogged_s."""

    device: int
    model: str
    planned_share: float | None
    realized_share: float | None
    device_s: float
    backlogged_s: float


@dataclass(frozen=True)
class Comparison:
    """A load test's measurement beside the plan's prediction at the offered demand.

    Attributes:
        measurement: what was measured.
        prediction: the plan at the offered demand, or None (``prediction_note`` says why).
        shares: realized beside planned shares (empty where the server gave no stats).
        config: the test's settings (from its manifest).
        prediction_note: why there is no prediction, else None.
    """

    measurement: Measurement
    prediction: Prediction | None
    shares: Sequence[ShareMeasurement] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    prediction_note: str | None = None


def _mean(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(values.mean()) if len(values) else None


def _percentile(values: pd.Series, q: float) -> float | None:
    values = values.dropna()
    return float(np.percentile(values.to_numpy(dtype=float), q)) if len(values) else None


def _duration_s(records: pd.DataFrame) -> float:
    """Per session, first send to last answer; summed (a resumed test's pauses are not test time)."""
    if records.empty:
        return 0.0
    done = records["sent_s"] + records["client_response_s"].fillna(0.0)
    frame = records.assign(done=done)
    spans = frame.groupby("session").agg(first=("sent_s", "min"), last=("done", "max"))
    return float((spans["last"] - spans["first"]).sum())


def _group(records: pd.DataFrame, duration_s: float, slo_s: float | None) -> GroupMeasurement:
    status = records["status"]
    ok = records[status == "ok"]
    attainment = None
    if slo_s is not None and len(records):
        attainment = float((ok["client_response_s"] <= slo_s).sum() / len(records))
    clip = records["clip_score"] if "clip_score" in records else None
    return GroupMeasurement(
        count=len(records),
        ok=int((status == "ok").sum()),
        rejected=int((status == "rejected").sum()),
        errors=int((status == "error").sum()),
        timeouts=int((status == "timeout").sum()),
        mean_response_s=_mean(ok["client_response_s"]),
        p95_response_s=_percentile(ok["client_response_s"], 95),
        p99_response_s=_percentile(ok["client_response_s"], 99),
        mean_server_response_s=_mean(ok["response_s"]),
        mean_queue_wait_s=_mean(ok["queue_wait_s"]),
        mean_service_s=_mean(ok["service_s"]),
        slo_attainment=attainment,
        throughput_per_s=len(ok) / duration_s if duration_s > 0 else None,
        mean_clipscore=None if clip is None else _mean(clip[status == "ok"]),
    )


def _categories(records: pd.DataFrame) -> pd.Series:
    return records["category"].fillna(records["requested_category"]).fillna(records["label_category"]).fillna(NO_GROUP)


def measure(records: pd.DataFrame, *, slo_s: float | None = None) -> Measurement:
    """Summarize a load test's records (:func:`genedge.serve.loadtest_layout.read_records`) per group.

    Args:
        records: one row per request, with the client's and the server's fields.
        slo_s: the latency SLO (s) for the attainment figures, or None.
    """
    duration = _duration_s(records)
    models = records["model"].fillna(NO_GROUP)
    categories = _categories(records)
    return Measurement(
        overall=_group(records, duration, slo_s),
        per_model={k: _group(records[models == k], duration, slo_s) for k in sorted(models.unique())},
        per_category={c: _group(records[categories == c], duration, slo_s) for c in sorted(categories.unique())},
        duration_s=duration,
        slo_s=slo_s,
    )


def realized_shares(sessions: Sequence[SessionDocument]) -> list[ShareMeasurement]:
    """Realized against planned share per device and model, from each session's stats before and after.

    A session without both stats (a server without ``/v1/stats``, a killed run) adds nothing.
    """
    totals: dict[tuple[int, str], list[float]] = {}
    planned: dict[tuple[int, str], float | None] = {}
    for session in sessions:
        before, after = session.stats_before, session.stats_after
        if before is None or after is None:
            continue
        earlier = {(d.device, key): stats for d in before.devices for key, stats in d.models.items()}
        for device in after.devices:
            for key, stats in device.models.items():
                start = earlier.get((device.device, key))
                sums = totals.setdefault((device.device, key), [0.0, 0.0])
                sums[0] += stats.device_s - (0.0 if start is None else start.device_s)
                sums[1] += stats.backlogged_s - (0.0 if start is None else start.backlogged_s)
                planned[(device.device, key)] = stats.planned_share
    return [
        ShareMeasurement(
            device=device,
            model=key,
            planned_share=planned[(device, key)],
            realized_share=sums[0] / sums[1] if sums[1] > 0 else None,
            device_s=sums[0],
            backlogged_s=sums[1],
        )
        for (device, key), sums in sorted(totals.items())
    ]


def compare_run(result_dir: str | Path, *, slo_s: float | None = None) -> Comparison:
    """Measure a load test's directory and predict its plan at the demand the test offered.

    Args:
        result_dir: the load test's directory (:func:`genedge.serve.loadtest.run_loadtest`).
        slo_s: the SLO for the attainment figures (default: the plan's, if it has one).
    """
    from genedge.contract.table_file import table_from_dict
    from genedge.optimizer.plan_file import plan_from_dict
    from genedge.serve.loadtest_layout import read_manifest, read_records, read_sessions
    from genedge.serve.predict import predict_at_demand

    manifest = read_manifest(result_dir)
    plan = plan_from_dict(manifest.plan, f"{result_dir} plan")
    if slo_s is None and plan.inputs.slo is not None:
        slo_s = plan.inputs.slo.seconds
    schedule = manifest.schedule
    prediction, note = None, None
    table = table_from_dict(manifest.table, f"{result_dir} table")
    # Requests sent with their category are served as it; the plan's router mixture applies to the rest only.
    composition = None if schedule.unplaced else {}
    records = read_records(result_dir)
    demand = _served_demand(plan, schedule, records)
    try:
        prediction = predict_at_demand(
            plan, table, demand, arrivals=schedule.arrivals, slo_s=slo_s, composition=composition
        )
    except ValueError as err:  # e.g. a window of counts the plan's table cannot state; the measurement stands
        note = str(err)
    return Comparison(
        measurement=measure(records, slo_s=slo_s),
        prediction=prediction,
        shares=realized_shares(read_sessions(result_dir)),
        config=manifest.config.to_dict(),
        prediction_note=note,
    )


def _served_demand(plan: PlanDocument, schedule: ScheduleSummary, records: Any) -> dict[str, float]:
    """The offered demand by the category each request was served as.

    Requests sent without a category were split in the plan's mix when the schedule was made; once
    served, the server's record says which category the prompt router gave each, and that, not the
    plan's mix, is the demand its queues saw. Those with no served category (refused, failed) keep
    the plan's mix.
    """
    from genedge.serve.predict import plan_rates

    if not schedule.unplaced or records.empty or "category" not in records:
        return dict(schedule.demand)
    scale = 1.0 / schedule.duration_s if arrival_model(schedule.arrivals).per_second else 1.0
    counts: dict[str, float] = {}
    for category in records["requested_category"].fillna(records["category"]):
        if category is None or category != category:  # neither sent nor served: the plan's mix
            for name, share in plan_rates(plan, 1.0).items():
                counts[name] = counts.get(name, 0.0) + share
        else:
            counts[category] = counts.get(category, 0.0) + 1.0
    return {c: v * scale for c, v in counts.items() if v > 0}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def comparison_to_dict(comparison: Comparison) -> dict[str, Any]:
    """The comparison as JSON-ready data (an infinite prediction, an unstable queue's, is null)."""
    return _finite(asdict(comparison))


def _relative(measured: float | None, predicted: float | None) -> str:
    if measured is None or predicted is None or not math.isfinite(predicted) or predicted == 0:
        return "—"
    return f"{100 * (measured - predicted) / predicted:+.0f}%"


def _cell(value: float | None, width: int, digits: int = 2) -> str:
    if value is None:
        return f"{'—':>{width}}"
    if not math.isfinite(value):
        return f"{'inf':>{width}}"
    return f"{value:>{width}.{digits}f}"


def format_comparison(comparison: Comparison) -> str:
    """The measured figures beside the predicted ones, as a table an engineer reads at a glance."""
    m, p = comparison.measurement, comparison.prediction
    o = m.overall
    slo = m.slo_s is not None
    lines = ["============ genedge load test result ============"]
    throughput = "—" if o.throughput_per_s is None else f"{o.throughput_per_s:.3f}"
    lines.append(
        f"requests {o.count}: {o.ok} ok, {o.rejected} rejected (503), {o.errors} errors, {o.timeouts} timeouts; "
        f"{throughput} images/s over {m.duration_s:.1f} s"
    )
    if p is not None:
        demand = ", ".join(f"{c} {v:.4g}" for c, v in p.demand.items())
        lines.append(f"offered ({arrival_model(p.arrivals).demand_unit}): {demand}")
        state = "" if p.stable else "; the plan's queues are overloaded at this demand (ρ >= 1)"
        lines.append(f"predicted: the plan's routing, steps and shares at the offered demand; {p.description}{state}")
        planned = p.planned
        if planned is not None:
            lines.append(
                f"  the plan's own prediction ({p.planned_arrivals}, at its planned workload): mean "
                f"{planned.mean_delay_s:.2f} s, p95 {planned.p95_delay_s:.2f} s, CLIPScore {planned.mean_clipscore:.2f}"
            )
    else:
        lines.append(f"no prediction: {comparison.prediction_note}")
    head = (
        f"{'group':<22} {'n':>5} {'ok':>5} {'rej':>4} {'err':>4} {'mean s':>7} {'pred':>7} {'Δmean':>6} "
        f"{'p95 s':>7} {'pred':>7} {'p99 s':>7} {'pred':>7} {'wait s':>7} {'serv s':>7}"
        + (f" {'SLO':>5} {'pred':>5}" if slo else "")
        + f" {'CLIP':>6} {'pred':>6}"
    )
    lines.append(head)

    def row(name: str, g: GroupMeasurement, q: GroupPrediction | None) -> str:
        return (
            f"{name:<22} {g.count:>5} {g.ok:>5} {g.rejected:>4} {g.errors + g.timeouts:>4} "
            f"{_cell(g.mean_response_s, 7)} {_cell(q and q.mean_response_s, 7)} "
            f"{_relative(g.mean_response_s, q and q.mean_response_s):>6} "
            f"{_cell(g.p95_response_s, 7)} {_cell(q and q.p95_response_s, 7)} "
            f"{_cell(g.p99_response_s, 7)} {_cell(q and q.p99_response_s, 7)} "
            f"{_cell(g.mean_queue_wait_s, 7)} {_cell(g.mean_service_s, 7)}"
            + (f" {_cell(g.slo_attainment, 5)} {_cell(q and q.slo_attainment, 5)}" if slo else "")
            + f" {_cell(g.mean_clipscore, 6)} {_cell(q and q.mean_clipscore, 6)}"
        )

    lines.append(row("all", o, p and p.overall))
    for key, g in m.per_model.items():
        lines.append(row(f"model {key}", g, p.per_model.get(key) if p else None))
    for key, g in m.per_category.items():
        lines.append(row(f"category {key}", g, p.per_category.get(key) if p else None))
    if comparison.shares:
        lines.append("GPU shares (realized = device time / time with work waiting):")
        for s in comparison.shares:
            lines.append(
                f"  device {s.device} {s.model:<12} planned {_cell(s.planned_share, 5)}  "
                f"realized {_cell(s.realized_share, 5)}  ({s.device_s:.1f} s of {s.backlogged_s:.1f} s backlogged)"
            )
    if slo:
        lines.append(f"SLO: {m.slo_s:g} s; attainment counts every request (a rejected one misses it)")
    return "\n".join(lines)


def comparison_figure(comparison: Comparison, records: pd.DataFrame, path: str | Path) -> Path:
    """Measured response-time CDF per model with the predicted mean (dashed) and p95 (dotted) beside it,
    and bars of measured against predicted mean response per group; written with ``write_figure``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, p = comparison.measurement, comparison.prediction
    fig, (cdf_ax, bar_ax) = plt.subplots(1, 2, figsize=(12, 4.2))
    ok = records[records["status"] == "ok"]
    models = ok["model"].fillna(NO_GROUP)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, key in enumerate(sorted(models.unique())):
        color = colors[i % len(colors)]
        values = np.sort(ok.loc[models == key, "client_response_s"].dropna().to_numpy(dtype=float))
        if values.size:
            cdf_ax.step(values, np.arange(1, values.size + 1) / values.size, where="post", color=color, label=key)
        q = p.per_model.get(key) if p is not None else None
        if q is not None:
            for value, style in ((q.mean_response_s, "--"), (q.p95_response_s, ":")):
                if math.isfinite(value):
                    cdf_ax.axvline(value, color=color, linestyle=style, linewidth=1)
    if m.slo_s is not None:
        cdf_ax.axvline(m.slo_s, color="black", linewidth=1, label=f"SLO {m.slo_s:g} s")
    cdf_ax.set_xlabel("response time (s, client)")
    cdf_ax.set_ylabel("fraction of ok requests")
    cdf_ax.set_title("measured CDF; predicted mean -- and p95 ··")
    cdf_ax.legend(fontsize=8)
    groups = [("all", m.overall, p and p.overall)]
    groups += [(k, g, p.per_model.get(k) if p else None) for k, g in m.per_model.items() if k != NO_GROUP]
    x = np.arange(len(groups))
    measured = [g.mean_response_s or 0.0 for _, g, _ in groups]
    predicted = [q.mean_response_s if q is not None and math.isfinite(q.mean_response_s) else 0.0 for *_, q in groups]
    bar_ax.bar(x - 0.2, measured, 0.4, label="measured")
    bar_ax.bar(x + 0.2, predicted, 0.4, label="predicted")
    bar_ax.set_xticks(x, [name for name, *_ in groups])
    bar_ax.set_ylabel("mean response (s)")
    bar_ax.set_title("mean response: measured vs predicted")
    bar_ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        return write_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)
