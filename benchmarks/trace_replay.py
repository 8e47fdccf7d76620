"""Static plans against plans that switch with the rate, on the GenTD26 trace, in a discrete-event simulation.

GenTD26 (Alibaba's text-to-image request trace, ``../shared/data/gentd26``): 23 days, a strong daily cycle, a
third of the hours empty, the peak hour 9× the mean. Its text-to-image requests are replayed as
:func:`genedge.optimizer.model.read_trace` does by default (a request of k images as k one-image requests at
its time, as the server serves them; categories drawn in PartiPrompts' mix, seed 0). The plans are made for
the trace's own law of images per request (58 % ask for 1, 14 % for 8: each model an M^X/D/1 queue), and the
trace's rate is scaled by one factor so that its busiest hour runs at :data:`PEAK_LOAD` × the schedule's
capacity: the lowest planned rate at which no plan meets the SLO (on the Galaxy S24 table 0.25 images/s;
a request of 8 images alone takes most of the 20 s), or where every rate's plan does, the rate from which on
no plan keeps the queues stable.

A plan schedule over :data:`RATES` with p95 <= :data:`SLO_S` s, then four policies over the replay, each
served by :func:`genedge.optimizer.simulation.simulate_switching` (per-model FIFO queues on the plan's shares,
one request at a time, each model holding at most the server's queue bound, floor(SLO / call time)):

- ``static-mean``: the plan for the replay's mean rate, throughout;
- ``static-peak``: the plan for its busiest hour's rate, throughout;
- ``adaptive``: the server's controller (:class:`genedge.serve.controller.PlanController`, the server's default
  settings but one decision every :data:`TICK_S` s, load factor 1) fed every arrival on the simulated clock;
- ``oracle``: each hour (from the first request) the plan for that hour's true mean rate, switched at the hour.

Per policy: SLO attainment (requests served within the SLO over all requests: a rejection is a miss), mean
CLIPScore of the served images (the table's mean for the category, model and steps), utility (that mean
− w × mean response of the served requests, w the plans' weight), rejections and switches; over the whole
replay and over its busiest day, the replayed day the goals are judged on. Then the adaptive run per hour of
that day: the figures of the plan in force for most of the hour (its own delay model) at the hour's rate,
against the simulated ones.

Usage::

    python benchmarks/trace_replay.py [--trace PATH] [--quick] [--images expand|one] [--plan-images trace|one]
        [--out FILE] [--figure STEM]

``--quick`` replays the busiest day only; ``--images one`` replays a request of k images as one request
(the default, as the server is sent them: k one-image requests at once); ``--plan-images one`` plans for
requests of one image (M/D/1) whatever the replay sends. The committed results
(``benchmarks/results/trace-replay.txt``, ``docs/figures/trace-replay.png`` and ``.svg``) are the default
run's, about two minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _environment import ROOT, cpu_name, source_state

from genedge.contract.table_file import load_table
from genedge.data import resolve_table
from genedge.optimizer.analysis import plan_schedule, rate_grid
from genedge.optimizer.inputs import problem_from_options
from genedge.optimizer.model import (
    ONE_IMAGE,
    Arrivals,
    ImagesPerRequest,
    Problem,
    Slo,
    TraceReplay,
    read_trace,
    workload_from_options,
)
from genedge.optimizer.schedule_file import PlanSchedule
from genedge.optimizer.simulation import ServedPlan, SwitchingRecords, simulate_switching
from genedge.serve.controller import ControllerSettings, PlanController
from genedge.serve.predict import plan_rates, predict_at_rates
from genedge.serve.spec import queue_bound

#: The trace, beside the repository.
DEFAULT_TRACE = ROOT.parent / "shared" / "data" / "gentd26" / "lora_request_trace.csv"
TABLE = "galaxy-s24"
#: p95 of the response time at most this (s).
SLO_S, ATTAINMENT = 20.0, 0.95
#: The schedule's planned rates: low, high, count (requests/s), every 0.02 up to just below the capacity.
RATES = (0.01, 0.59, 30)
#: The busiest hour of the replay runs at this fraction of the table's capacity.
PEAK_LOAD = 0.8
#: Seconds between the controller's decisions (a server ticks every second; every 10 s keeps 23 days in minutes).
TICK_S = 10.0
HOUR_S, DAY_S = 3600.0, 86400.0
SEED = 0
UNITS = {"expand": "one per image", "one": "one per request"}
POLICIES = ("static-mean", "static-peak", "adaptive", "oracle")
#: Timeline of a policy: (from second, band) entries, the first at 0.
Timeline = list[tuple[float, int]]


def problem_maker(
    table_name: str = TABLE, images: ImagesPerRequest = ONE_IMAGE
) -> tuple[Callable[[float], Problem], object]:
    """The problem at a total rate of images (open arrivals, PartiPrompts' mix, the SLO, requests of ``images``),
    and the table."""
    table = load_table(resolve_table(table_name))

    def problem_at(rate: float) -> Problem:
        workload = workload_from_options(table.categories, rate=rate)
        return problem_from_options(table, workload, arrivals="open", slo=Slo(SLO_S, ATTAINMENT), images=images)

    return problem_at, table


def trace_images(path: Path) -> ImagesPerRequest:
    """The trace's law of images per request (its text-to-image requests as recorded)."""
    categories = load_table(resolve_table(TABLE)).categories
    with contextlib.redirect_stderr(io.StringIO()):  # the reader logs the 25 rows without steps
        recorded = read_trace(path, categories=categories, replay=TraceReplay(images="one"), rng=SEED)
    return ImagesPerRequest.from_weights(collections.Counter(recorded.images.tolist()))


def slo_capacity(schedule: PlanSchedule) -> float:
    """The rate from which on no plan of the schedule meets the SLO: its first infeasible rate, or where every
    planned rate is feasible, the rate from which on no plan keeps the queues stable."""
    infeasible = schedule.first_infeasible_rate
    return schedule.max_stable_rate if infeasible is None else infeasible


def hourly_rates(arrivals: Arrivals) -> np.ndarray:
    """Requests per second in each hour from time 0 (the last one possibly partial, counted as whole)."""
    hours = math.ceil(arrivals.duration_s / HOUR_S) or 1
    return np.bincount((arrivals.times_s // HOUR_S).astype(int), minlength=hours)[:hours] / HOUR_S


def scaled_trace(path: Path, capacity: float, images: str = "expand") -> tuple[Arrivals, float]:
    """The trace replayed with its rate scaled so its busiest hour runs at PEAK_LOAD × ``capacity``, and the scale.

    ``images``: ``"expand"``, a request of k images as k one-image requests at its time; ``"one"``, as one."""
    categories = load_table(resolve_table(TABLE)).categories
    with contextlib.redirect_stderr(io.StringIO()):  # the reader logs the 25 rows without steps
        recorded = read_trace(path, categories=categories, replay=TraceReplay(images=images), rng=SEED)
        scale = PEAK_LOAD * capacity / hourly_rates(recorded).max()
        replay = TraceReplay(rate_scale=scale, images=images)
        return read_trace(path, categories=categories, replay=replay, rng=SEED), scale


def day_slice(arrivals: Arrivals, day: int) -> Arrivals:
    """The requests of day ``day`` (24 h from time 0 on), their times from the day's start."""
    start = day * DAY_S
    kept = (arrivals.times_s >= start) & (arrivals.times_s < start + DAY_S)
    return Arrivals(arrivals.times_s[kept] - start, arrivals.category[kept], arrivals.categories, DAY_S)


def busiest_day(arrivals: Arrivals) -> int:
    return int(np.argmax(np.bincount((arrivals.times_s // DAY_S).astype(int))))


def band_of(schedule: PlanSchedule, rate: float) -> int:
    """The band :meth:`PlanSchedule.plan_for_rate` picks (the lowest band for no requests)."""
    return 0 if rate <= 0 else schedule.bands.index(schedule.plan_for_rate(rate).band)


def oracle_timeline(arrivals: Arrivals, schedule: PlanSchedule) -> Timeline:
    """Each hour the band for its true mean rate, switched at the hour."""
    timeline: Timeline = []
    for hour, rate in enumerate(hourly_rates(arrivals)):
        band = band_of(schedule, float(rate))
        if not timeline or timeline[-1][1] != band:
            timeline.append((hour * HOUR_S, band))
    return timeline


def adaptive_timeline(arrivals: Arrivals, schedule: PlanSchedule, settings: ControllerSettings) -> Timeline:
    """The server's controller fed every arrival on the simulated clock, deciding every ``settings.tick_s``."""
    controller = PlanController(schedule, settings, 0.0)
    timeline: Timeline = [(0.0, controller.band)]
    # The images of one request arrive at one instant, and the server counts them as one request of that many.
    times, images = (a.tolist() for a in np.unique(arrivals.times_s, return_counts=True))
    i, ticks = 0, math.ceil(arrivals.duration_s / settings.tick_s)
    for tick in range(1, ticks + 1):
        now = tick * settings.tick_s
        while i < len(times) and times[i] <= now:
            controller.arrived(times[i], images[i])
            i += 1
        if controller.tick(now) is not None:
            timeline.append((now, controller.band))
    return timeline


def served_plans(schedule: PlanSchedule, categories: Sequence[str], models: Sequence[str]) -> list[ServedPlan]:
    """Every band's plan on the simulation's axes, each model with the server's queue bound."""
    plans = []
    for band in schedule.bands:
        bounds = {
            key: queue_bound(entry.service_s, entry.batch, SLO_S, None) for key, entry in band.plan.deployed.items()
        }
        plans.append(ServedPlan.of(band.plan, categories, models, bounds))
    return plans


def clipscores(records: SwitchingRecords, problem: Problem) -> np.ndarray:
    """The table's mean CLIPScore of each served request's (category, model, steps); NaN where rejected."""
    scores = np.full(len(records), math.nan)
    for m, grid in enumerate(problem.steps):
        on = records.served & (records.model == m)
        k = np.searchsorted(grid, records.steps[on])
        scores[on] = problem.quality_mean[m][records.category[on], k]
    return scores


@dataclass(frozen=True)
class PolicyFigures:
    """One policy's figures over a set of requests (see the module's description)."""

    requests: int
    attainment: float
    mean_clipscore: float
    mean_response_s: float
    p95_response_s: float
    utility: float
    rejected: int
    switches: int


def figures(records: SwitchingRecords, scores: np.ndarray, weight: float, switches: int) -> PolicyFigures:
    served = records.served
    response = records.response_s[served]
    mean_clipscore = float(scores[served].mean()) if served.any() else math.nan
    mean_response = float(response.mean()) if served.any() else math.nan
    return PolicyFigures(
        requests=len(records),
        attainment=records.slo_attainment(SLO_S),
        mean_clipscore=mean_clipscore,
        mean_response_s=mean_response,
        p95_response_s=float(np.quantile(response, 0.95)) if served.any() else math.nan,
        utility=mean_clipscore - weight * mean_response,
        rejected=int(records.rejected.sum()),
        switches=switches,
    )


def subset(records: SwitchingRecords, kept: np.ndarray) -> SwitchingRecords:
    """The records of the requests ``kept`` (a mask)."""
    columns = ("arrival_s", "category", "plan", "model", "steps", "rejected", "wait_s", "service_s", "response_s")
    return SwitchingRecords(
        **{name: getattr(records, name)[kept] for name in columns},
        categories=records.categories,
        n_models=records.n_models,
    )


@dataclass(frozen=True)
class Replay:
    """The four policies served over one arrival sequence."""

    arrivals: Arrivals
    timelines: dict[str, Timeline]
    records: dict[str, SwitchingRecords]
    scores: dict[str, np.ndarray]


def replay(
    arrivals: Arrivals, schedule: PlanSchedule, problem: Problem, settings: ControllerSettings, peak_rate: float
) -> Replay:
    """Serve ``arrivals`` under each policy; ``peak_rate`` is the static peak plan's rate."""
    mean_rate = len(arrivals) / arrivals.duration_s
    timelines = {
        "static-mean": [(0.0, band_of(schedule, mean_rate))],
        "static-peak": [(0.0, band_of(schedule, peak_rate))],
        "adaptive": adaptive_timeline(arrivals, schedule, settings),
        "oracle": oracle_timeline(arrivals, schedule),
    }
    plans = served_plans(schedule, arrivals.categories, problem.models)
    records = {name: simulate_switching(arrivals, plans, timeline) for name, timeline in timelines.items()}
    scores = {name: clipscores(found, problem) for name, found in records.items()}
    return Replay(arrivals, timelines, records, scores)


def switches_in(timeline: Timeline, start: float = 0.0, end: float = math.inf) -> int:
    return sum(1 for at, _ in timeline[1:] if start <= at < end)


def policy_table(result: Replay, weight: float, start: float = 0.0, end: float = math.inf) -> list[str]:
    """One line per policy over the requests arriving in [start, end)."""
    lines = [
        (
            f"  {'policy':<12} {'requests':>8} {'SLO att.':>8} {'CLIPScore':>9} {'mean s':>7} {'p95 s':>7} "
            f"{'utility':>8} {'rejected':>8} {'switches':>8}"
        )
    ]
    for name in POLICIES:
        f = policy_figures(result, name, weight, start, end)
        lines.append(
            f"  {name:<12} {f.requests:>8} {f.attainment:>8.4f} {f.mean_clipscore:>9.3f} {f.mean_response_s:>7.2f} "
            f"{f.p95_response_s:>7.2f} {f.utility:>8.3f} {f.rejected:>8} {f.switches:>8}"
        )
    return lines


def band_in_force(timeline: Timeline, start: float, end: float) -> int:
    """The band in force for the longest part of [start, end)."""
    held: dict[int, float] = {}
    for i, (at, band) in enumerate(timeline):
        until = timeline[i + 1][0] if i + 1 < len(timeline) else math.inf
        overlap = min(until, end) - max(at, start)
        if overlap > 0:
            held[band] = held.get(band, 0.0) + overlap
    return max(held, key=held.__getitem__)


def window_table(result: Replay, schedule: PlanSchedule, table: object, day: int) -> list[str]:
    """The adaptive run per hour of day ``day``: predicted (the plan's delay model at the hour's rate) against
    simulated."""
    records = result.records["adaptive"]
    lines = [f"  {'hour':>4} {'req/s':>6} {'band':>4} {'pred mean':>9} {'DES mean':>8} {'pred p95':>8} {'DES p95':>8}"]
    for hour in range(24):
        start = day * DAY_S + hour * HOUR_S
        kept = (records.arrival_s >= start) & (records.arrival_s < start + HOUR_S)
        if kept.sum() < 2:
            lines.append(f"  {hour:>4} {kept.sum() / HOUR_S:>6.3f}    -  (no requests to compare)")
            continue
        rate = float(kept.sum() / HOUR_S)
        band = band_in_force(result.timelines["adaptive"], start, start + HOUR_S)
        plan = schedule.bands[band].plan
        predicted = predict_at_rates(plan, table, plan_rates(plan, rate), slo_s=SLO_S).overall
        response = records.response_s[kept & records.served]
        lines.append(
            f"  {hour:>4} {rate:>6.3f} {band:>4} {predicted.mean_response_s:>9.2f} {response.mean():>8.2f} "
            f"{predicted.p95_response_s:>8.2f} {np.quantile(response, 0.95):>8.2f}"
        )
    return lines


def policy_figures(result: Replay, name: str, weight: float, start: float, end: float) -> PolicyFigures:
    """A policy's figures over the requests arriving in [start, end)."""
    records = result.records[name]
    kept = (records.arrival_s >= start) & (records.arrival_s < end)
    switches = switches_in(result.timelines[name], start, end)
    return figures(subset(records, kept), result.scores[name][kept], weight, switches)


def goals(result: Replay, weight: float, start: float, end: float) -> list[str]:
    """The goals over the replayed day [start, end), each met or not."""
    f = {name: policy_figures(result, name, weight, start, end) for name in POLICIES}
    adaptive, oracle = f["adaptive"], f["oracle"]
    gap = (oracle.utility - adaptive.utility) / abs(oracle.utility)
    checks = [
        (f"adaptive SLO attainment {adaptive.attainment:.4f} >= {ATTAINMENT}", adaptive.attainment >= ATTAINMENT),
        (
            f"static-mean SLO attainment {f['static-mean'].attainment:.4f} < {ATTAINMENT}",
            f["static-mean"].attainment < ATTAINMENT,
        ),
        (
            f"adaptive CLIPScore {adaptive.mean_clipscore:.3f} > static-peak {f['static-peak'].mean_clipscore:.3f}",
            adaptive.mean_clipscore > f["static-peak"].mean_clipscore,
        ),
        (
            (
                f"adaptive utility {abs(gap) * 100:.2f} % {'below' if gap > 0 else 'above'} the oracle's "
                "(goal: at most 2 % below)"
            ),
            gap <= 0.02,
        ),
    ]
    return [f"  {'met    ' if ok else 'NOT met'}  {text}" for text, ok in checks]


def draw(result: Replay, schedule: PlanSchedule, day: int, stem: Path) -> list[Path]:
    """Rate per hour and the planned rate of the band adaptive and oracle serve: whole replay and busiest day."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = hourly_rates(result.arrivals)
    highs = np.array([band.high_rate for band in schedule.bands])
    fig, axes = plt.subplots(2, 1, figsize=(10, 6.5))
    for ax, (lo, hi, unit) in zip(
        axes, ((0.0, result.arrivals.duration_s, DAY_S), (day * DAY_S, (day + 1) * DAY_S, HOUR_S))
    ):
        hours = np.arange(rates.size) * HOUR_S
        ax.step((hours - lo) / unit, rates, where="post", color="0.6", label="arrival rate per hour")
        for name, color in (("adaptive", "tab:blue"), ("oracle", "tab:orange")):
            timeline = result.timelines[name] + [(result.arrivals.duration_s, result.timelines[name][-1][1])]
            at = np.array([t for t, _ in timeline])
            ax.step(
                (at - lo) / unit,
                highs[[b for _, b in timeline]],
                where="post",
                color=color,
                label=f"{name}: band's planned rate",
            )
        ax.set_xlim(0, (hi - lo) / unit)
        ax.set_ylabel("requests/s")
        ax.set_xlabel("day" if unit == DAY_S else f"hour of day {day}")
    axes[0].legend(loc="upper left", fontsize=8)
    axes[0].set_title(f"GenTD26 on {TABLE}: the plan in force against the rate")
    return save_figure(fig, stem, dpi=120)


def save_figure(fig: Any, stem: Path, dpi: int) -> list[Path]:
    """Write ``fig`` as STEM.png and STEM.svg (the SVG without a date, so a re-run changes nothing) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    paths = [stem.with_suffix(suffix) for suffix in (".png", ".svg")]
    stem.parent.mkdir(parents=True, exist_ok=True)
    for path in paths:
        fig.savefig(path, dpi=dpi, metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(fig)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="GenTD26's lora_request_trace.csv")
    parser.add_argument("--quick", action="store_true", help="replay the busiest day only")
    parser.add_argument(
        "--images", choices=("expand", "one"), default="expand", help="a request of k images as k requests, or one"
    )
    parser.add_argument(
        "--plan-images",
        choices=("trace", "one"),
        default="trace",
        help="with --images expand: plan for the trace's images per request (M^X/D/1 queues) or for one (M/D/1)",
    )
    parser.add_argument("--out", type=Path, help="also write the printed report here")
    parser.add_argument("--figure", type=Path, help="write the figure as STEM.png and STEM.svg")
    args = parser.parse_args()
    if not args.trace.is_file():
        sys.exit(f"error: the trace {args.trace} does not exist; give GenTD26's lora_request_trace.csv with --trace")
    started = time.perf_counter()
    images = trace_images(args.trace) if args.images == "expand" and args.plan_images == "trace" else ONE_IMAGE
    problem_at, table = problem_maker(images=images)
    schedule = plan_schedule(problem_at, rate_grid(*RATES), seed=SEED, jobs=os.cpu_count() or 1)
    capacity = slo_capacity(schedule)
    arrivals, scale = scaled_trace(args.trace, capacity, args.images)
    peak_rate = float(hourly_rates(arrivals).max())
    day = busiest_day(arrivals)
    if args.quick:
        arrivals, day = day_slice(arrivals, day), 0
    settings = ControllerSettings(tick_s=TICK_S)
    problem = problem_at(RATES[0])
    result = replay(arrivals, schedule, problem, settings, peak_rate)
    weight = problem.weight
    lines = [
        (
            f"{cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}; genedge "
            f"{source_state('optimizer', 'serve')}; seed {SEED}"
        ),
        (
            f"GenTD26 text-to-image requests ({UNITS[args.images]}), rate x {scale:.3f}: {len(arrivals)} requests over "
            f"{arrivals.duration_s / DAY_S:.2f} days, mean {len(arrivals) / arrivals.duration_s:.4f} requests/s, "
            f"busiest hour {peak_rate:.4f} ({PEAK_LOAD} x capacity {capacity:.4f}, the lowest planned rate no plan "
            f"serves within the SLO; stable up to {schedule.max_stable_rate:.4f})"
        ),
        (
            f"table {TABLE}; schedule {RATES[0]}:{RATES[1]}:{RATES[2]}, p95 <= {SLO_S:g} s, w = {weight}, "
            f"requests of {images.describe()}: "
            f"{len(schedule.bands)} bands; controller window {settings.window_s:g} s, alpha {settings.alpha:g}, "
            f"dwell {settings.dwell_s:g} s, margin {settings.margin:g}, tick {settings.tick_s:g} s"
        ),
        "Bands: "
        + "; ".join(
            f"{b.low_rate:g}-{b.high_rate:g}{'' if b.feasible else ' (misses the SLO)'} {b.decisions.describe()}"
            for b in schedule.bands
        ),
        "",
        "Policies over the whole replay (attainment over all requests: a rejection is a miss)",
        *policy_table(result, weight),
    ]
    if not args.quick:
        lines += [
            "",
            f"Policies over the busiest day (day {day})",
            *policy_table(result, weight, day * DAY_S, (day + 1) * DAY_S),
        ]
    lines += [
        "",
        (
            f"Adaptive per hour of day {day}: predicted ({'M/D/1' if images.single else 'M^X/D/1'}, the band in force "
            "most of the hour, the hour's rate) "
            "vs simulated response (s)"
        ),
        *window_table(result, schedule, table, day),
        "",
        f"Goals (the replayed day: day {day}, the busiest)",
        *goals(result, weight, day * DAY_S, (day + 1) * DAY_S),
        "",
        f"# whole run {time.perf_counter() - started:.0f} s",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out is not None:
        args.out.write_text(report + "\n", encoding="utf-8")
    if args.figure is not None:
        for path in draw(result, schedule, day, args.figure):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
