"""A plan for every rate: ``genedge plan --rates LO:HI:COUNT`` writes a plan schedule, a typed document whose bands
hold plans ``genedge plan --rate R`` makes, and whose ``plan_for_rate`` picks a plan by a stated policy."""

from __future__ import annotations

import copy
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import genedge_in_process, run_genedge

from genedge import data
from genedge.contract.table_file import load_table
from genedge.optimizer.analysis import plan_schedule, rate_grid, trace_rate_range
from genedge.optimizer.inputs import problem_from_options
from genedge.optimizer.model import Arrivals, workload_from_options
from genedge.optimizer.plan_file import load_plan
from genedge.optimizer.schedule_file import (
    SCHEDULE_POLICY,
    Decisions,
    ScheduleError,
    load_plan_schedule,
    plan_schedule_from_dict,
)

#: Four rates on the phone table: three below its capacity (about 0.595 requests/s), one beyond it.
RATES = "0.1:0.7:4"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``genedge plan --table galaxy-s24 --rates 0.1:0.7:4 --out --figures`` run once, as a user runs it."""
    folder = tmp_path_factory.mktemp("schedule")
    done = run_genedge(
        "plan", "--table", "galaxy-s24", "--rates", RATES, "--out", "schedule.json", "--figures", "figures", cwd=folder
    )
    assert done.returncode == 0, done.stderr
    return folder, done.stdout


def test_the_cli_writes_a_schedule_whose_bands_cover_every_servable_rate(written):
    folder, out = written
    schedule = load_plan_schedule(folder / "schedule.json")
    assert [p.rate for p in schedule.points] == [0.1, 0.3, 0.5, 0.7]
    assert schedule.max_stable_rate == pytest.approx(0.5952, abs=1e-4)
    assert [p.band is None for p in schedule.points] == [False, False, False, True]
    covered = {p.rate for band in schedule.bands for p in schedule.points if band.low_rate <= p.rate <= band.high_rate}
    assert covered == {0.1, 0.3, 0.5}
    assert schedule.method == "genedge" and schedule.seed == 0 and schedule.raw["policy"] == SCHEDULE_POLICY
    assert schedule.raw["inputs"]["rates"] == RATES and schedule.first_infeasible_rate is None
    assert sum(schedule.raw["inputs"]["mix"].values()) == pytest.approx(1)
    assert "genedge planned 3 of 4 rates, seed 0; " in out
    assert "     0.7: beyond capacity, not planned" in out
    assert "no plan keeps every queue stable from 0.5952 requests/s on" in out


def test_every_band_plan_is_the_plan_genedge_plan_makes_at_its_rates(written, capsys, tmp_path):
    folder, _ = written
    schedule = load_plan_schedule(folder / "schedule.json")
    for point in schedule.points:
        if point.band is None:
            continue
        band = schedule.bands[point.band]
        path = tmp_path / f"plan-{point.rate!r}.json"
        args = ("--table", "galaxy-s24", "--rate", repr(point.rate), "--compare", "genedge", "--out", path)
        done = genedge_in_process(capsys, "plan", *args)
        assert done.returncode == 0, done.stderr
        single = load_plan(path)
        assert Decisions.of(single) == band.decisions
        shares = {key: entry.share for key, entry in single.models.items()}
        assert shares == dict(point.shares) and single.routing == point.routing
        if point.rate == band.high_rate:  # the band's own plan: the same document, byte for byte once written
            assert single.raw == band.plan.raw


def test_the_figures_are_written_as_png_and_svg(written):
    folder, out = written
    png, svg = folder / "figures" / "schedule.png", folder / "figures" / "schedule.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and svg.read_text(encoding="utf-8").lstrip().startswith("<?xml")
    assert "wrote figures/schedule.png" in out and "wrote figures/schedule.svg" in out


# --- plan_for_rate ------------------------------------------------------------------------------------------


def _problems(table_name: str = "galaxy-s24", **options):
    table = load_table(data.resolve_table(table_name))

    def make_problem(rate: float):
        return problem_from_options(table, workload_from_options(table.categories, rate=rate), **options)

    return make_problem


@pytest.fixture(scope="module")
def schedule():
    """0.05, 0.1, ..., 0.55 requests/s on the phone table (no SLO), with 0.6 beyond its capacity."""
    return plan_schedule(_problems(), rate_grid(0.05, 0.6, 12))


def test_plan_for_rate_takes_a_band_at_its_edges_and_the_band_above_between_them(schedule):
    bands = schedule.bands
    assert len(bands) >= 3
    for band in bands:
        assert schedule.plan_for_rate(band.low_rate).band is band
        assert schedule.plan_for_rate(band.high_rate).band is band
        assert schedule.plan_for_rate(band.high_rate).note is None
    for below, above in itertools.pairwise(bands):
        between = (below.high_rate + above.low_rate) / 2
        assert schedule.plan_for_rate(between).band is above
    assert schedule.plan_for_rate(0.01).band is bands[0]


def test_plan_for_rate_beyond_the_bands_keeps_the_highest_plan_and_names_the_overload(schedule):
    top = schedule.bands[-1]
    assert top.high_rate == 0.55 and schedule.points[-1].band is None
    above = schedule.plan_for_rate(0.58)
    assert above.band is top and above.note.startswith("above the highest planned rate 0.55 requests/s")
    overload = schedule.plan_for_rate(5.0)
    assert overload.band is top and overload.plan is top.plan
    assert "no plan keeps every queue stable" in overload.note and "shed or refuse" in overload.note
    with pytest.raises(ValueError, match=r"Expected an arrival rate > 0 requests/s, but got -1"):
        schedule.plan_for_rate(-1)


def test_a_band_marked_infeasible_is_picked_with_a_note(schedule):
    document = copy.deepcopy(dict(schedule.raw))
    document["bands"][-1]["plan"]["predicted"]["feasible"] = False
    flagged = plan_schedule_from_dict(document, "schedule.json")
    top = flagged.bands[-1]
    assert (
        flagged.plan_for_rate(top.high_rate).note
        == f"the best plan at {top.high_rate:g} requests/s misses its SLO or quality floor"
    )


@pytest.mark.slow
def test_a_band_whose_best_plan_misses_the_slo_is_flagged_and_so_is_its_pick():
    schedule = plan_schedule(_problems(slo=_slo(10)), [0.3, 0.45])
    assert [band.feasible for band in schedule.bands] == [True, False]
    assert schedule.first_infeasible_rate == 0.45
    assert schedule.plan_for_rate(0.4).note == "the best plan at 0.45 requests/s misses its SLO or quality floor"


def _slo(seconds: float):
    from genedge.optimizer.inputs import slo_from_options

    return slo_from_options(seconds)


def test_planning_is_seeded_and_every_rate_is_planned_as_on_its_own(schedule):
    # Two rates at once, each in a process of its own: the same document.
    assert plan_schedule(_problems(), rate_grid(0.05, 0.6, 12), jobs=2).raw == schedule.raw
    # The rates in another order, and a subset of them, give each rate the same plan: nothing carries over.
    part = plan_schedule(_problems(), [0.4, 0.1, 0.25])
    mine = {p.rate: p for p in schedule.points}
    for point in part.points:
        assert (point.shares, point.routing, point.utility) == (
            mine[point.rate].shares,
            mine[point.rate].routing,
            mine[point.rate].utility,
        )


# --- the document ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.update(kind="genedge.plan"), "schema_version"),
        (lambda d: d["bands"][0].update(low_rate=1.0), "bands.0.low_rate"),
        (lambda d: d["bands"][0].update(high_rate=0.07), "bands.0.high_rate"),
        (lambda d: d["rates"][0].update(band=None), "rates.0.band"),
        (lambda d: d["rates"][-1].update(band=0), "rates.11"),
        (lambda d: d["rates"].reverse(), "rates"),
        (lambda d: d["bands"][0]["plan"].pop("routing"), "bands.0.plan"),
        (lambda d: d["rates"][0].pop("utility"), "rates.0.utility"),
    ],
)
def test_a_malformed_schedule_names_its_file_and_field(schedule, change, field):
    document = copy.deepcopy(dict(schedule.raw))
    change(document)
    with pytest.raises(ScheduleError, match=rf"^schedule\.json: {field}\b"):
        plan_schedule_from_dict(json.loads(json.dumps(document)), "schedule.json")


# --- options ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["0.05:2", "a:b:c", "0.05:2:0", "2:0.05:10", "0.1,x", "0.05:2:2.5", "0.05:2:5000"])
def test_a_bad_rates_value_is_one_line_naming_the_option_and_its_forms(capsys, text):
    done = genedge_in_process(capsys, "plan", "--table", "galaxy-s24", "--rates", text)
    assert done.returncode == 2 and done.stdout == ""
    line = done.stderr.strip()
    assert line.startswith("genedge plan: error: --rates: expected LO:HI:COUNT (COUNT total rates evenly spaced")
    assert "or a comma list of total rates (e.g. 0.1,0.5,1)" in line and f"but got {text!r}" in line
    assert "\n" not in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--rates", "0.1,0.2", "--compare", "exact"),
            "--compare: a plan schedule plans each rate with --method alone",
        ),
        (("--rate", "0.1", "--figures", "figures"), "--figures draws a plan schedule: give --rates LO:HI:COUNT"),
        (("--rate", "0.1", "--rate-count", "5"), "--rate-count: how many rates of --rates-from-trace to plan"),
        (("--rate", "0.1", "--jobs", "2"), "--jobs: how many rates of a plan schedule to plan at once"),
        (("--rates", "0.7,0.8"), "No plan can keep every queue stable"),
        (("--rates", "0.1,0.1"), "Expected distinct rates, but 0.1 is given twice"),
    ],
)
def test_schedule_options_out_of_place_are_refused(capsys, args, message):
    done = genedge_in_process(capsys, "plan", "--table", "galaxy-s24", *args)
    assert done.returncode == 2 and message in done.stderr


def test_a_comma_list_plans_exactly_those_rates(capsys, tmp_path):
    done = genedge_in_process(
        capsys, "plan", "--table", "galaxy-s24", "--rates", "0.3,0.1", "--out", tmp_path / "s.json"
    )
    assert done.returncode == 0, done.stderr
    assert [p.rate for p in load_plan_schedule(tmp_path / "s.json").points] == [0.1, 0.3]


def test_rates_from_a_trace_span_its_quietest_to_its_busiest_window(capsys, tmp_path):
    # Three windows of 100 s with 10, 30 and 20 requests: rates 0.1, 0.3 and 0.2 requests/s.
    times = np.concatenate([np.linspace(0, 99, 10), np.linspace(100, 199, 30), np.linspace(200, 300, 20)])
    path = tmp_path / "trace.csv"
    path.write_text("time_s,category\n" + "".join(f"{t:.3f},Basic\n" for t in times), encoding="utf-8")
    out = tmp_path / "s.json"
    args = ("--rates-from-trace", path, "--window-s", "100", "--rate-count", "3", "--out", out)
    done = genedge_in_process(capsys, "plan", "--table", "galaxy-s24", *args)
    assert done.returncode == 0, done.stderr
    schedule = load_plan_schedule(out)
    assert [p.rate for p in schedule.points] == pytest.approx([0.1, 0.2, 0.3])
    assert schedule.raw["inputs"]["rates"] == {"trace": str(path), "window_s": 100.0, "count": 3}
    assert "rates: 3 total rates, 0.1 to 0.3 requests/s (from " in done.stdout and "windows of 100 s)" in done.stdout


def test_window_rates_count_whole_windows_only():
    arrivals = Arrivals(np.array([0.5, 1.5, 1.7, 2.5, 3.2]), np.zeros(5, dtype=int), ("Basic",), 3.2)
    assert arrivals.window_rates(1.0).tolist() == [1.0, 2.0, 1.0]
    assert trace_rate_range(arrivals, 1.0) == (1.0, 2.0)
    with pytest.raises(ValueError, match=r"no longer than the arrivals' 3\.2 s"):
        arrivals.window_rates(5.0)


def test_the_capacity_is_where_the_problem_refuses_a_rate():
    make_problem = _problems()
    capacity = make_problem(0.1).max_stable_rate
    make_problem(capacity * (1 - 1e-9))
    with pytest.raises(ValueError, match=f"lower the rate below {capacity:.4g} requests/s"):
        make_problem(capacity * (1 + 1e-9))


# --- at paper scale ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("table", ["galaxy-s24", "reference-a100"])
def test_forty_rates_at_paper_scale(table):
    started = time.perf_counter()
    schedule = plan_schedule(_problems(table), rate_grid(0.05, 2, 40))
    took = time.perf_counter() - started
    servable = [p for p in schedule.points if p.rate < schedule.max_stable_rate]
    assert all(p.band is not None for p in servable) and len(schedule.points) == 40
    print(f"{table}: {len(servable)} of 40 rates planned in {took:.1f} s, {len(schedule.bands)} bands")


def test_the_planner_check_names_a_rate_whose_plan_the_next_rates_plan_beats():
    from genedge.optimizer.analysis._schedule import _higher_plan_utilities
    from genedge.optimizer.model import evaluate
    from genedge.optimizer.planners import direct, propose

    make_problem = _problems()
    low, high = make_problem(0.3), make_problem(0.35)
    weak, strong = direct(low), propose(high, rng=0)
    plan = strong.plan
    at_low = evaluate(low, plan.routing_matrix, plan.step_index, plan.share_vector, plan.batch_index).utility
    assert at_low > weak.utility
    assert _higher_plan_utilities([low, high], [weak, strong]) == [at_low, None]
    # The planner's own plans at the two rates: the lower one's is at least as good there.
    assert _higher_plan_utilities([low, high], [propose(low, rng=0), strong]) == [None, None]


def test_a_planner_whose_plan_leaves_a_queue_unstable_leaves_its_rate_without_a_band(capsys):
    schedule = plan_schedule(_problems(), [0.1, 0.2, 0.7], method="equal-allocation")
    assert [(p.band, p.unstable_plan) for p in schedule.points] == [(0, False), (None, True), (None, False)]
    assert plan_schedule_from_dict(json.loads(json.dumps(schedule.raw)), "s.json").points == schedule.points
    done = genedge_in_process(
        capsys, "plan", "--table", "galaxy-s24", "--rates", "0.1,0.2", "--method", "equal-allocation"
    )
    assert done.returncode == 0, done.stderr
    assert "     0.2    -  equal-allocation's plan leaves a queue unstable: no band" in done.stdout


def test_as_the_rate_rises_quality_gives_way_down_to_the_floor_and_no_further():
    """Overload, as a schedule meets it: each rate's plan trades quality (fewer steps, a faster model) for speed at
    the least utility cost, never below the quality floor; a rate no plan can serve keeps the last band's plan, and
    the server refuses what its queue bounds cannot hold (tests/test_serve_schedule.py)."""
    schedule = plan_schedule(_problems(slo=_slo(10), min_clipscore=20.0, max_shortfall=0.1), [0.05, 0.15, 0.35, 0.55])
    served = [p for p in schedule.points if p.band is not None]
    quality = [p.mean_clipscore for p in served]
    assert len(served) >= 2 and all(b <= a + 1e-9 for a, b in itertools.pairwise(quality)) and quality[-1] < quality[0]
    for band in schedule.bands:  # the floor holds in every band, where the SLO is met and where it is not
        assert max(band.plan.raw["predicted"]["shortfall_probability"].values()) <= 0.1 + 1e-9
    assert schedule.first_infeasible_rate is not None
    beyond = schedule.plan_for_rate(0.99 * schedule.max_stable_rate)
    assert beyond.band is schedule.bands[-1]
