"""Static plans against plans that switch, on GenTD26's busiest day compressed, through the real server on loopback.

The companion of ``benchmarks/trace_replay.py`` (the discrete-event simulation of the whole 23 days): the same
busiest day (day 17 from the trace's first request), the same law of images per request and the same rule for
the load (the trace's rate scaled so its busiest hour runs at :data:`~trace_replay.PEAK_LOAD` × the schedule's
SLO capacity), served by ``genedge serve`` and replayed by ``genedge loadtest`` on 127.0.0.1. The models are the
demo's two tiny CPU replicas (``genedge demo``: profiled, calibrated and planned here, in a few seconds), so the
day is compressed :data:`TIME_SCALE` times (one trace hour in 10 s) and the SLO is :data:`SLO_S` s.

A schedule is planned for the trace's images per request (``genedge plan --rates --images-per-request``), then
per policy one server and one load test of the whole day:

- ``static-mean``: ``genedge serve`` of the band's plan for the day's mean rate;
- ``static-peak``: of the band's plan for its busiest (compressed) hour's rate;
- ``adaptive``: ``genedge serve`` of the schedule, its controller's window, dwell, tick and horizon compressed
  (:data:`SWITCH`);
- ``oracle`` (each hour the plan for that hour's true rate, switched at the hour) cannot be served honestly: the
  server has no way to be told the next hour's rate. It is reported from the discrete-event simulation of the
  same compressed day (:func:`genedge.optimizer.simulation.simulate_switching`, the table's call times, the
  server's queue bounds), beside the simulation of the three served policies.

Per policy, from the load test's records: requests (one per image, as the server serves them), SLO attainment
(a rejection is a miss; the server's response time), mean CLIPScore (the table's mean for each served image's
category, model and steps, as ``trace_replay.py`` computes it), utility, rejections, switches (the server's
``genedge_plan_switches_total``), and the accounting of every request: sent, answered 200, answered 503 with
``Retry-After``, lost (no record), failed (an error or a timeout), served twice (a request id or a device count
off). While the load test runs, ``GET /metrics`` is scraped every :data:`SCRAPE_S` s; every :data:`STEP_S` s its
60-s window (the server's shortest: the windows are fixed at 60 and 300 s of the server's clock, and a compressed
day is shorter than 300 s) gives the server's published prediction (``genedge_recalibrated_response_seconds``:
the active plan's delay model at the window's observed rates with the served call times) and the plan's own
(``genedge_predicted_response_seconds``, at its planned rate), against the mean and p95 response of the
records completed in the same 60 s. The goal counts the windows that start after the first
:data:`WARMUP_SERVED` served requests.

Usage::

    python benchmarks/trace_replay_server.py [--trace PATH] [--dir DIR] [--out FILE] [--figure STEM]

The committed results (``benchmarks/results/trace-replay-server.txt``, ``docs/figures/trace-replay-server.png``)
are the default run's, about 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from _environment import ROOT, cpu_name, source_state
from trace_replay import (
    DAY_S,
    DEFAULT_TRACE,
    HOUR_S,
    PEAK_LOAD,
    POLICIES,
    SEED,
    PolicyFigures,
    Timeline,
    adaptive_timeline,
    band_of,
    busiest_day,
    clipscores,
    figures,
    hourly_rates,
    problem_maker,
    save_figure,
    slo_capacity,
    switches_in,
    trace_images,
)

from genedge.contract.table_file import load_table
from genedge.optimizer.model import Arrivals, ImagesPerRequest, Problem, TraceReplay, read_trace
from genedge.optimizer.plan_file import save_plan
from genedge.optimizer.schedule_file import PlanSchedule, load_plan_schedule
from genedge.optimizer.simulation import ServedPlan, SwitchingRecords, simulate_switching
from genedge.serve.background import serve_in_background
from genedge.serve.controller import ControllerSettings
from genedge.serve.loadtest_layout import read_records, read_sessions
from genedge.serve.spec import queue_bound

HOST = "127.0.0.1"
#: One trace hour in 10 s: the day in 240 s.
TIME_SCALE = 360.0
#: p95 of the response time at most this (s): a request of 8 images takes about 0.4 s on the larger tiny replica.
SLO_S, ATTAINMENT = 0.5, 0.95
#: The schedule's planned rates (images/s): low, high, count.
RATES = "1:40:40"
#: The controller's settings on the compressed clock (window 30 trace minutes, dwell an hour, horizon 6 hours).
SWITCH = ControllerSettings(window_s=5.0, dwell_s=10.0, tick_s=0.5, horizon_s=60.0)
#: Seconds between scrapes of /metrics, and between the windows compared (each the server's 60-s window).
SCRAPE_S, STEP_S, WINDOW_S = 5.0, 20.0, 60.0
#: Windows are judged once this many requests have been served, and with at least this many images in them.
WARMUP_SERVED, MIN_WINDOW_IMAGES = 100, 20
#: Predicted within this fraction of the measured.
TOLERANCE = 0.10
SERVED_POLICIES = ("static-mean", "static-peak", "adaptive")
PROMPTS = ROOT / "data" / "prompts" / "smoke.tsv"
_OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}


@dataclass(frozen=True)
class Setup:
    """What is replayed and how: the trace's slice (seconds from its first row), its compression and load."""

    trace: Path
    start_s: float
    end_s: float
    time_scale: float
    rate_scale: float
    table: Path
    schedule: Path
    settings: ControllerSettings = SWITCH
    slo_s: float = SLO_S

    @property
    def replay(self) -> TraceReplay:
        """The replay ``genedge loadtest`` makes of these options (and ``read_trace`` with them)."""
        return TraceReplay(start=self.start_s, end=self.end_s, time_scale=self.time_scale, rate_scale=self.rate_scale)

    def loadtest_args(self) -> list[str]:
        return [
            "--trace", str(self.trace), "--trace-start", f"{self.start_s:g}", "--trace-end", f"{self.end_s:g}",
            "--time-scale", f"{self.time_scale:g}", "--rate-scale", f"{self.rate_scale:g}", "--trace-images", "expand",
            "--seed", str(SEED),
        ]  # fmt: skip


def genedge(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m genedge ARGS`` offline on the CPU, failing with its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "genedge", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **_OFFLINE},
    )
    if done.returncode != 0:
        raise RuntimeError(f"genedge {args[0]} exited {done.returncode}: {done.stderr[-3000:]}")
    return done


def images_option(images: ImagesPerRequest) -> str:
    """``--images-per-request``'s form of a law: ``1:0.58,2:0.08,...``."""
    return ",".join(f"{k}:{p:.6g}" for k, p in enumerate(images.pmf, start=1) if p > 0)


def plan_for_trace(
    folder: Path, images: ImagesPerRequest, rates: str = RATES, slo_s: float = SLO_S, name: str = "schedule.json"
) -> Path:
    """A schedule planned on ``folder``'s table (the demo's) for requests of ``images``, written there as ``name``."""
    table = (folder / "table.json").resolve()  # absolute: the plans name it, and are served from elsewhere
    genedge(
        "plan", "--table", table, "--arrivals", "open", "--rates", rates, "--slo", f"{slo_s:g}",
        "--images-per-request", images_option(images), "--out", name, cwd=folder,
    )  # fmt: skip
    return folder / name


def prepare(folder: Path, images: ImagesPerRequest) -> tuple[Path, Path]:
    """The demo's tiny replicas profiled and calibrated in ``folder``, and a schedule planned on its table (both
    kept from an earlier run where ``folder`` holds them)."""
    if (folder / "schedule.json").is_file():
        return folder / "table.json", folder / "schedule.json"
    genedge("demo", "--dir", folder, "--no-figures")
    return folder / "table.json", plan_for_trace(folder, images)


def replayed(setup: Setup) -> Arrivals:
    """The arrivals the load test sends (the same trace, options and seed), on the compressed clock."""
    table = load_table(setup.table)
    with contextlib.redirect_stderr(open(os.devnull, "w")):
        return read_trace(
            setup.trace, mapping=table.category_mapping, categories=table.categories, replay=setup.replay, rng=SEED
        )


def compressed_hourly_rates(arrivals: Arrivals, time_scale: float) -> np.ndarray:
    """Images per second in each trace hour of a compressed replay (``trace_replay.hourly_rates`` on its clock)."""
    stretched = Arrivals(arrivals.times_s * time_scale, arrivals.category, arrivals.categories,
                         arrivals.duration_s * time_scale)  # fmt: skip
    return hourly_rates(stretched) * time_scale


def busy_day_setup(trace: Path, table: Path, schedule_path: Path) -> Setup:
    """The busiest day of the trace (``trace_replay.busiest_day``), compressed, its busiest hour at PEAK_LOAD × the
    schedule's SLO capacity."""
    with contextlib.redirect_stderr(open(os.devnull, "w")):
        recorded = read_trace(trace, replay=TraceReplay(), rng=SEED)
    day = busiest_day(recorded)
    kept = (recorded.times_s >= day * DAY_S) & (recorded.times_s < (day + 1) * DAY_S)
    peak = np.bincount(((recorded.times_s[kept] - day * DAY_S) // HOUR_S).astype(int)).max() / HOUR_S
    capacity = slo_capacity(load_plan_schedule(schedule_path))
    rate_scale = round(float(PEAK_LOAD * capacity / (peak * TIME_SCALE)), 4)
    return Setup(trace, day * DAY_S, (day + 1) * DAY_S, TIME_SCALE, rate_scale, table, schedule_path)


def policy_plans(setup: Setup, schedule: PlanSchedule, folder: Path) -> dict[str, Path]:
    """The file each served policy's server serves: a band's plan, or the schedule."""
    arrivals = replayed(setup)
    rates = {
        "static-mean": len(arrivals) / arrivals.duration_s,
        "static-peak": float(compressed_hourly_rates(arrivals, setup.time_scale).max()),
    }
    files = {"adaptive": setup.schedule}
    for name, rate in rates.items():
        files[name] = save_plan(schedule.bands[band_of(schedule, rate)].plan.raw, folder / f"plan-{name}.json")
    return files


# --- one served policy ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    """One read of ``GET /metrics``: the band (None for a single plan), the switches so far and the 60-s window."""

    at_unix: float
    band: int | None
    switches: int
    plan_mean: float
    plan_p95: float
    recalibrated_mean: float
    recalibrated_p95: float
    observed_mean: float
    observed_p95: float


def scrape(url: str) -> Scrape:
    """The server's metrics now (prometheus_client's own parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        text = response.read().decode()
    at = time.time()
    values: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, sample.labels.get("window", ""), sample.labels.get("statistic", ""))
            values[key] = values.get(key, 0.0) + sample.value if sample.name.endswith("_total") else sample.value
    band = values.get(("genedge_schedule_band", "", ""))
    window = f"{WINDOW_S:g}s"
    return Scrape(
        at_unix=at,
        band=None if band is None else int(band),
        switches=int(values.get(("genedge_plan_switches_total", "", ""), 0)),
        plan_mean=values.get(("genedge_predicted_response_seconds", "", "mean"), math.nan),
        plan_p95=values.get(("genedge_predicted_response_seconds", "", "p95"), math.nan),
        recalibrated_mean=values.get(("genedge_recalibrated_response_seconds", window, "mean"), math.nan),
        recalibrated_p95=values.get(("genedge_recalibrated_response_seconds", window, "p95"), math.nan),
        observed_mean=values.get(("genedge_observed_response_seconds", window, "mean"), math.nan),
        observed_p95=values.get(("genedge_observed_response_seconds", window, "p95"), math.nan),
    )


@contextlib.contextmanager
def serving(plan: Path, settings: ControllerSettings | None, log: Path) -> Iterator[str]:
    """``genedge serve PLAN`` on a free loopback port (a schedule's controller with ``settings``), stopped (drained)
    after."""
    switch = [
        "--switch-window-s", f"{settings.window_s:g}", "--switch-dwell-s", f"{settings.dwell_s:g}",
        "--switch-tick-s", f"{settings.tick_s:g}", "--switch-horizon-s", f"{settings.horizon_s:g}",
    ] if settings is not None else []  # fmt: skip
    with serve_in_background(plan, *switch, host=HOST, env=_OFFLINE, log=log) as server:
        yield server.url


@dataclass(frozen=True)
class ServedRun:
    """One policy served: the load test's records (one row per request index), its start, the scrapes, and the
    devices' counts (accepted, finished, refused) after it."""

    records: pd.DataFrame
    to_send: int
    started_unix: float
    scrapes: list[Scrape]
    device_counts: tuple[int, int, int]


def run_policy(setup: Setup, plan: Path, folder: Path) -> ServedRun:
    """Serve ``plan``, replay the day against it with ``genedge loadtest`` while scraping /metrics, and read back."""
    folder.mkdir(parents=True, exist_ok=True)
    result = folder / "loadtest"
    shutil.rmtree(result, ignore_errors=True)  # a fresh test, not a resumed one
    settings = setup.settings if plan == setup.schedule else None
    with serving(plan, settings, folder / "serve.log") as url:
        command = [sys.executable, "-m", "genedge", "loadtest", url, "--prompts", str(PROMPTS), *setup.loadtest_args(),
                   "--result-dir", str(result), "--no-progress"]  # fmt: skip
        with open(folder / "loadtest.log", "w") as out:
            load = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **_OFFLINE})
            scrapes = []
            try:
                while load.poll() is None:
                    scrapes.append(scrape(url))
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        load.wait(SCRAPE_S)
            finally:
                if load.poll() is None:  # interrupted: the load test goes with the benchmark
                    load.kill()
                    load.wait()
        scrapes.append(scrape(url))
        if load.returncode != 0:
            raise RuntimeError(f"genedge loadtest exited {load.returncode}: {(folder / 'loadtest.log').read_text()}")
    session = read_sessions(result)[-1]
    counts = [0, 0, 0]
    for device in session.stats_after.devices if session.stats_after else ():
        for stats in device.models.values():
            counts = [c + (v or 0) for c, v in zip(counts, (stats.requests, stats.images, stats.rejected))]
    return ServedRun(read_records(result), session.to_send, session.started_unix, scrapes, tuple(counts))


# --- what a run measured ----------------------------------------------------------------------------------------


def as_switching_records(records: pd.DataFrame, problem: Problem) -> SwitchingRecords:
    """The load test's records on the simulation's axes, so ``trace_replay``'s figures and CLIPScores apply."""
    ok = (records["status"] == "ok").to_numpy()
    category = records["category"].where(ok, records["requested_category"])
    model = records["model"].map({m: i for i, m in enumerate(problem.models)}).where(ok, -1)
    return SwitchingRecords(
        arrival_s=records["scheduled_s"].to_numpy(float),
        category=category.map({c: i for i, c in enumerate(problem.categories)}).to_numpy(int),
        plan=np.zeros(len(records), int),
        model=model.to_numpy(int),
        steps=records["steps"].fillna(0).to_numpy(int),
        rejected=~ok,
        wait_s=records["queue_wait_s"].to_numpy(float, na_value=math.nan),
        service_s=records["service_s"].to_numpy(float, na_value=math.nan),
        response_s=records["response_s"].to_numpy(float, na_value=math.nan),
        categories=problem.categories,
        n_models=len(problem.models),
    )


@dataclass(frozen=True)
class Accounting:
    """Every request answered exactly once? Counts from the records and the devices' counters."""

    sent: int
    ok: int
    rejected_with_retry: int
    rejected_without_retry: int
    lost: int
    failed: int
    duplicated: int

    @property
    def clean(self) -> bool:
        return self.lost == self.failed == self.duplicated == self.rejected_without_retry == 0


def accounting(run: ServedRun) -> Accounting:
    records = run.records
    status = records["status"]
    rejected = status == "rejected"
    retry = records["retry_after_s"].notna() & (records["retry_after_s"] >= 1)
    ok = records[status == "ok"]
    accepted, finished, refused = run.device_counts
    # Served twice: a request id answered twice, or the devices counting more (or fewer) than the answers.
    duplicated = int(ok["request_id"].duplicated().sum()) + abs(accepted - len(ok)) + abs(finished - len(ok))
    duplicated += abs(refused - int(rejected.sum()))
    return Accounting(
        sent=run.to_send,
        ok=len(ok),
        rejected_with_retry=int((rejected & retry).sum()),
        rejected_without_retry=int((rejected & ~retry).sum()),
        lost=run.to_send - records["index"].nunique(),
        failed=int(status.isin(["error", "timeout"]).sum()),
        duplicated=duplicated,
    )


def replay_time(run: ServedRun, unix: float) -> float:
    """A wall-clock time as seconds on the replay's clock (the load test's clock starts at its first request's)."""
    return unix - run.started_unix + float(run.records["scheduled_s"].min())


def response_parts(run: ServedRun) -> tuple[float, float, float]:
    """The served images' mean queue wait, call time, and the rest of their response (the ingress's part)."""
    ok = run.records[run.records["status"] == "ok"]
    wait, call = float(ok["queue_wait_s"].mean()), float(ok["service_s"].mean())
    return wait, call, float(ok["response_s"].mean()) - wait - call


def completed_unix(run: ServedRun) -> np.ndarray:
    """Each record's completion on the wall clock: the load test's clock starts at its first scheduled request."""
    records = run.records
    shift = float(records["scheduled_s"].min())
    return run.started_unix + (records["sent_s"] - shift + records["client_response_s"]).to_numpy(float)


@dataclass(frozen=True)
class Window:
    """One 60-s window ending at a scrape: elapsed seconds, images served in it, band, predicted and measured."""

    end_s: float
    images: int
    band: int | None
    scrape: Scrape
    measured_mean: float
    measured_p95: float
    judged: bool


def windows(run: ServedRun) -> list[Window]:
    """Every STEP_S s from the first full window on: the scrape's figures against the records completed in the
    window; judged where it starts after WARMUP_SERVED served requests and holds MIN_WINDOW_IMAGES."""
    done = completed_unix(run)
    ok = (run.records["status"] == "ok").to_numpy()
    response = run.records["response_s"].to_numpy(float, na_value=math.nan)
    served_at = np.sort(done[ok])
    warm = served_at[WARMUP_SERVED - 1] if served_at.size >= WARMUP_SERVED else math.inf
    found, next_end = [], run.started_unix + WINDOW_S
    for s in run.scrapes:
        if s.at_unix < next_end:
            continue
        next_end = s.at_unix + STEP_S
        inside = ok & (done > s.at_unix - WINDOW_S) & (done <= s.at_unix)
        n = int(inside.sum())
        mean = float(response[inside].mean()) if n else math.nan
        p95 = float(np.quantile(response[inside], 0.95)) if n else math.nan
        judged = s.at_unix - WINDOW_S >= warm and n >= MIN_WINDOW_IMAGES
        found.append(Window(replay_time(run, s.at_unix), n, s.band, s, mean, p95, judged))
    return found


def within(predicted: float, measured: float) -> bool:
    return math.isfinite(predicted) and abs(predicted - measured) <= TOLERANCE * measured


# --- the discrete-event simulation of the same day ----------------------------------------------------------


def compressed_oracle(arrivals: Arrivals, schedule: PlanSchedule, time_scale: float) -> Timeline:
    """Each (compressed) trace hour the band for its true rate, switched at the hour."""
    timeline: Timeline = []
    for hour, rate in enumerate(compressed_hourly_rates(arrivals, time_scale)):
        band = band_of(schedule, float(rate))
        if not timeline or timeline[-1][1] != band:
            timeline.append((hour * HOUR_S / time_scale, band))
    return timeline


def simulated(setup: Setup, schedule: PlanSchedule, problem: Problem) -> dict[str, tuple[SwitchingRecords, Timeline]]:
    """The four policies over the same arrivals in the switching simulation, each model at the server's bound."""
    arrivals = replayed(setup)
    rates = compressed_hourly_rates(arrivals, setup.time_scale)
    timelines = {
        "static-mean": [(0.0, band_of(schedule, len(arrivals) / arrivals.duration_s))],
        "static-peak": [(0.0, band_of(schedule, float(rates.max())))],
        "adaptive": adaptive_timeline(arrivals, schedule, setup.settings),
        "oracle": compressed_oracle(arrivals, schedule, setup.time_scale),
    }
    plans = []
    for band in schedule.bands:
        bounds = {k: queue_bound(e.service_s, e.batch, setup.slo_s, None) for k, e in band.plan.deployed.items()}
        plans.append(ServedPlan.of(band.plan, arrivals.categories, problem.models, bounds))
    return {name: (simulate_switching(arrivals, plans, t), t) for name, t in timelines.items()}


def policy_figures(records: SwitchingRecords, problem: Problem, slo_s: float, switches: int) -> PolicyFigures:
    """``trace_replay.figures`` with the attainment at this SLO."""
    found = figures(records, clipscores(records, problem), problem.weight, switches)
    return replace(found, attainment=records.slo_attainment(slo_s))


# --- the report -------------------------------------------------------------------------------------------------


def _figures_line(name: str, f: PolicyFigures) -> str:
    return (
        f"  {name:<12} {f.requests:>8} {f.attainment:>8.4f} {f.mean_clipscore:>9.3f} {f.mean_response_s:>7.3f} "
        f"{f.p95_response_s:>7.3f} {f.utility:>8.3f} {f.rejected:>8} {f.switches:>8}"
    )


_HEADER = (
    f"  {'policy':<12} {'requests':>8} {'SLO att.':>8} {'CLIPScore':>9} {'mean s':>7} {'p95 s':>7} {'utility':>8} "
    f"{'rejected':>8} {'switches':>8}"
)


def window_lines(name: str, found: Sequence[Window]) -> list[str]:
    lines = [
        (
            f"  {name}: {'end s':>5} {'images':>6} {'band':>4} {'plan mean':>9} {'recal mean':>10} {'meas mean':>9} "
            f"{'plan p95':>8} {'recal p95':>9} {'meas p95':>8} {'server p95':>10}"
        )
    ]
    pad = " " * (len(name) + 2)
    for w in found:
        s = w.scrape
        band = "-" if w.band is None else str(w.band)
        mark = "" if w.judged else "  (not judged)"
        lines.append(
            f"  {pad}{w.end_s:>5.0f} {w.images:>6} {band:>4} {s.plan_mean:>9.3f} {s.recalibrated_mean:>10.3f} "
            f"{w.measured_mean:>9.3f} {s.plan_p95:>8.3f} {s.recalibrated_p95:>9.3f} {w.measured_p95:>8.3f} "
            f"{s.observed_p95:>10.3f}{mark}"
        )
    return lines


def share_within(found: Sequence[Window]) -> tuple[int, int, int, int, int]:
    """Judged windows, and how many have the published (recalibrated) and the plan's mean and p95 within 10 %."""
    judged = [w for w in found if w.judged]
    return (
        len(judged),
        sum(within(w.scrape.recalibrated_mean, w.measured_mean) for w in judged),
        sum(within(w.scrape.recalibrated_p95, w.measured_p95) for w in judged),
        sum(within(w.scrape.plan_mean, w.measured_mean) for w in judged),
        sum(within(w.scrape.plan_p95, w.measured_p95) for w in judged),
    )


@dataclass(frozen=True)
class Benchmark:
    """Everything measured and simulated."""

    setup: Setup
    schedule: PlanSchedule
    problem: Problem
    runs: dict[str, ServedRun]
    simulation: dict[str, tuple[SwitchingRecords, Timeline]]

    def served_figures(self, name: str) -> PolicyFigures:
        switches = max((s.switches for s in self.runs[name].scrapes), default=0)
        return policy_figures(as_switching_records(self.runs[name].records, self.problem), self.problem,
                              self.setup.slo_s, switches)  # fmt: skip

    def simulated_figures(self, name: str) -> PolicyFigures:
        records, timeline = self.simulation[name]
        return policy_figures(records, self.problem, self.setup.slo_s, switches_in(timeline))


def measure(setup: Setup, folder: Path, policies: Sequence[str] = SERVED_POLICIES) -> Benchmark:
    """Serve and replay each policy, and simulate all four."""
    schedule = load_plan_schedule(setup.schedule)
    problem = problem_maker(str(setup.table), trace_images(setup.trace))[0](1.0)
    plans = policy_plans(setup, schedule, folder)
    runs = {name: run_policy(setup, plans[name], folder / name) for name in policies}
    return Benchmark(setup, schedule, problem, runs, simulated(setup, schedule, problem))


def goal_lines(bench: Benchmark) -> list[str]:
    served = {name: bench.served_figures(name) for name in bench.runs}
    checks = []
    if "adaptive" in served:
        a = served["adaptive"]
        checks.append((f"adaptive SLO attainment {a.attainment:.4f} >= {ATTAINMENT}", a.attainment >= ATTAINMENT))
        if "static-mean" in served:
            m = served["static-mean"].attainment
            checks.append((f"static-mean SLO attainment {m:.4f} < {ATTAINMENT}", m < ATTAINMENT))
        if "static-peak" in served:
            p = served["static-peak"].mean_clipscore
            checks.append((f"adaptive CLIPScore {a.mean_clipscore:.3f} > static-peak {p:.3f}", a.mean_clipscore > p))
        oracle = bench.simulated_figures("oracle").utility
        for kind, utility in (("simulated", bench.simulated_figures("adaptive").utility), ("served", a.utility)):
            gap = (oracle - utility) / abs(oracle)
            side = "below" if gap > 0 else "above"
            text = (
                f"adaptive ({kind}) utility {abs(gap) * 100:.2f} % {side} the oracle's (simulated; goal: <= 2 % below)"
            )
            checks.append((text, gap <= 0.02))
    judged = [share_within(windows(run)) for run in bench.runs.values()]
    n, mean_ok, p95_ok = (sum(j[i] for j in judged) for i in range(3))
    checks.append((
        (f"published prediction within {TOLERANCE:.0%} of the measured in {mean_ok}/{n} windows (mean) and "
        f"{p95_ok}/{n} (p95) after {WARMUP_SERVED} served"),
        n > 0 and mean_ok == p95_ok == n,
    ))  # fmt: skip
    clean = all(accounting(run).clean for run in bench.runs.values())
    checks.append(("0 requests lost, failed or served twice (the records and the devices' counters)", clean))
    return [f"  {'met    ' if ok else 'NOT met'}  {text}" for text, ok in checks]


def report(bench: Benchmark, seconds: float) -> list[str]:
    setup, schedule = bench.setup, bench.schedule
    arrivals = replayed(setup)
    rates = compressed_hourly_rates(arrivals, setup.time_scale)
    lines = [
        (
            f"{cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}; genedge "
            f"{source_state('optimizer', 'serve')}; seed {SEED}"
        ),
        (
            f"GenTD26 text-to-image requests (one per image), day {setup.start_s / DAY_S:.0f} (the busiest) compressed "
            f"x {setup.time_scale:g}, rate x {setup.rate_scale:g}: {len(arrivals)} requests over "
            f"{arrivals.duration_s:.0f} s, mean {len(arrivals) / arrivals.duration_s:.2f} images/s, busiest hour "
            f"{rates.max():.2f} ({PEAK_LOAD} x SLO capacity {slo_capacity(schedule):g}), {int((rates == 0).sum())} "
            "empty hours"
        ),
        (
            f"demo's tiny replicas on this CPU; schedule {RATES}, p95 <= {SLO_S:g} s, w = {bench.problem.weight}, "
            f"{len(schedule.bands)} bands; controller window {setup.settings.window_s:g} s, dwell "
            f"{setup.settings.dwell_s:g} s, tick {setup.settings.tick_s:g} s, horizon {setup.settings.horizon_s:g} s"
        ),
        "Bands: "
        + "; ".join(
            f"{i}: {b.low_rate:g}-{b.high_rate:g}{'' if b.feasible else ' (misses the SLO)'} {b.decisions.describe()}"
            for i, b in enumerate(schedule.bands)
        ),
        "",
        "Served on loopback (genedge serve + genedge loadtest; attainment over all requests, a rejection a miss)",
        _HEADER,
        *(_figures_line(name, bench.served_figures(name)) for name in bench.runs),
        "",
        "The same day in the discrete-event simulation (the table's call times; the oracle is simulated only)",
        _HEADER,
        *(_figures_line(name, bench.simulated_figures(name)) for name in POLICIES),
        "",
        "Every request answered once (records; devices' counters), and the mean served response's parts (s): queue",
        "wait, call, and the rest (the ingress: HTTP, routing, Ray's handles), which no delay model holds",
        (
            f"  {'policy':<12} {'sent':>6} {'200':>6} {'503+RA':>6} {'503-RA':>6} {'lost':>5} {'failed':>6} "
            f"{'twice':>5} {'wait':>6} {'call':>6} {'rest':>6}"
        ),
    ]
    for name, run in bench.runs.items():
        a = accounting(run)
        lines.append(
            f"  {name:<12} {a.sent:>6} {a.ok:>6} {a.rejected_with_retry:>6} {a.rejected_without_retry:>6} "
            f"{a.lost:>5} {a.failed:>6} {a.duplicated:>5} " + " ".join(f"{v:>6.3f}" for v in response_parts(run))
        )
    lines += ["", (f"Per {WINDOW_S:g}-s window every {STEP_S:g} s (s): plan's prediction, the server's published "
              "(recalibrated) prediction, measured from the records, and the server's own observed p95")]  # fmt: skip
    for name, run in bench.runs.items():
        found = windows(run)
        n, mean_ok, p95_ok, plan_mean_ok, plan_p95_ok = share_within(found)
        lines += window_lines(name, found)
        lines.append(
            f"  {name}: judged windows {n}; published within {TOLERANCE:.0%}: mean {mean_ok}/{n}, p95 {p95_ok}/{n}; "
            f"plan's: mean {plan_mean_ok}/{n}, p95 {plan_p95_ok}/{n}"
        )
    return [*lines, "", "Goals (served; the oracle simulated)", *goal_lines(bench), "", f"# whole run {seconds:.0f} s"]


def draw(bench: Benchmark, stem: Path) -> list[Path]:
    """Top: images/s per trace hour and the planned rate of the band in force (served adaptive, simulated
    adaptive and oracle). Bottom: published prediction against measured, per window and policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setup, schedule = bench.setup, bench.schedule
    arrivals = replayed(setup)
    highs = np.array([band.high_rate for band in schedule.bands])
    hour_s = HOUR_S / setup.time_scale
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8))
    rates = compressed_hourly_rates(arrivals, setup.time_scale)
    top.step(
        np.arange(rates.size + 1) * hour_s,
        [*rates, rates[-1]],
        where="post",
        color="0.6",
        label="arrival rate per trace hour",
    )
    if "adaptive" in bench.runs:
        run = bench.runs["adaptive"]
        served = [(replay_time(run, s.at_unix), s.band) for s in run.scrapes if s.band is not None]
        top.step([t for t, _ in served], highs[[b for _, b in served]], where="post", color="tab:blue",
                 label="adaptive, served: band's planned rate")  # fmt: skip
    for name, color in (("adaptive", "tab:cyan"), ("oracle", "tab:orange")):
        timeline = [*bench.simulation[name][1], (arrivals.duration_s, bench.simulation[name][1][-1][1])]
        top.step([t for t, _ in timeline], highs[[b for _, b in timeline]], where="post", color=color,
                 linestyle="--", label=f"{name}, simulated: band's planned rate")  # fmt: skip
    top.set_xlim(0, arrivals.duration_s)
    top.set_xlabel(f"seconds (one trace hour = {hour_s:g} s)")
    top.set_ylabel("images/s")
    top.legend(loc="upper right", fontsize=8)
    top.set_title(f"GenTD26's busiest day x {setup.time_scale:g} through genedge serve on loopback")
    for (name, run), color in zip(bench.runs.items(), ("tab:red", "tab:green", "tab:blue")):
        found = [w for w in windows(run) if w.judged]
        bottom.scatter([w.measured_mean for w in found], [w.scrape.recalibrated_mean for w in found], color=color,
                       marker="o", label=f"{name}: mean")  # fmt: skip
        bottom.scatter([w.measured_p95 for w in found], [w.scrape.recalibrated_p95 for w in found], color=color,
                       marker="^", label=f"{name}: p95")  # fmt: skip
    lim = bottom.get_xlim()[1]
    line = np.array([0, lim])
    bottom.plot(line, line, color="0.3", linewidth=0.8)
    bottom.fill_between(line, line * (1 - TOLERANCE), line * (1 + TOLERANCE), color="0.85", label="within 10 %")
    bottom.set_xlabel(f"measured response over the window (s), {WINDOW_S:g}-s windows")
    bottom.set_ylabel("published prediction (s)")
    bottom.legend(fontsize=8)
    return save_figure(fig, stem, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="GenTD26's lora_request_trace.csv")
    parser.add_argument(
        "--dir",
        type=Path,
        help="keep the demo, plans, logs and records here, reusing a demo and schedule found (default: a temp dir)",
    )
    parser.add_argument("--out", type=Path, help="also write the printed report here")
    parser.add_argument("--figure", type=Path, help="write the figure as STEM.png and STEM.svg")
    args = parser.parse_args()
    if not args.trace.is_file():
        sys.exit(f"error: the trace {args.trace} does not exist; give GenTD26's lora_request_trace.csv with --trace")
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        folder = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trace-replay-server-")))
        folder.mkdir(parents=True, exist_ok=True)
        table, schedule = prepare(folder / "demo", trace_images(args.trace))
        setup = busy_day_setup(args.trace, table, schedule)
        bench = measure(setup, folder)
        text = "\n".join(report(bench, time.perf_counter() - started))
        print(text)
        if args.out is not None:
            args.out.write_text(text + "\n", encoding="utf-8")
        if args.figure is not None:
            for path in draw(bench, args.figure):
                print(f"wrote {path}")


if __name__ == "__main__":
    main()
