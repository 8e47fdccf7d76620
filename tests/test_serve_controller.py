"""The closed loop's decisions: a Poisson change detector and a plan picked from a schedule with hysteresis.

Driven by seeded Poisson arrivals on a simulated clock over a plan schedule of the shipped phone table
(bands from 0.05 to 0.55 requests/s), as the server drives it tick by tick.
"""

from __future__ import annotations

import numpy as np
import pytest

from genedge import data
from genedge.contract.table_file import load_table
from genedge.optimizer.analysis import plan_schedule, rate_grid
from genedge.optimizer.inputs import problem_from_options
from genedge.optimizer.model import workload_from_options
from genedge.serve.controller import CategoryMix, ControllerSettings, PlanController, RateEstimator

SETTINGS = ControllerSettings(window_s=120.0, alpha=1e-6, dwell_s=300.0, margin=0.1, tick_s=5.0, horizon_s=3600.0)


@pytest.fixture(scope="module")
def schedule():
    table = load_table(data.resolve_table("galaxy-s24"))

    def problem(rate: float):
        return problem_from_options(table, workload_from_options(table.categories, rate=rate))

    return plan_schedule(problem, rate_grid(0.05, 0.6, 12))


def _arrivals(segments: list[tuple[float, float]], seed: int) -> np.ndarray:
    """Poisson arrival times of consecutive (rate, seconds) segments."""
    gen = np.random.default_rng(seed)
    times, start = [], 0.0
    for rate, seconds in segments:
        if rate > 0:
            n = gen.poisson(rate * seconds)
            times.append(start + np.sort(gen.uniform(0, seconds, n)))
        start += seconds
    return np.concatenate(times) if times else np.zeros(0)


def _drive(controller: PlanController, arrivals: np.ndarray, end_s: float, load_factor: float = 1.0) -> list:
    """Feed arrivals and ticks in time order, as the server does; (time, band) after every tick."""
    bands, i = [], 0
    for now in np.arange(SETTINGS.tick_s, end_s + SETTINGS.tick_s / 2, SETTINGS.tick_s):
        while i < arrivals.size and arrivals[i] <= now:
            controller.arrived(float(arrivals[i]))
            i += 1
        controller.tick(float(now), load_factor)
        bands.append((float(now), controller.band))
    return bands


def _band(schedule, rate: float) -> int:
    return schedule.bands.index(schedule.plan_for_rate(rate).band)


@pytest.mark.parametrize("seed", range(5))
def test_a_rate_step_up_and_down_switches_up_at_once_and_down_after_the_dwell(schedule, seed) -> None:
    low, high = 0.2, 0.5  # inside bands (0.15, 0.25] and (0.4, 0.55]
    start = _band(schedule, low)
    controller = PlanController(schedule, SETTINGS, 0.0, band=start)
    arrivals = _arrivals([(low, 1800), (high, 1800), (low, 3600)], seed)
    bands = dict(_drive(controller, arrivals, 7200))
    switches = [s.to_dict() for s in controller.switches]
    ups = [s for s in controller.switches if s.to_band > s.from_band]
    downs = [s for s in controller.switches if s.to_band < s.from_band]
    # Up within two windows of the step (a window straddling it may first give a band between), never
    # down while the rate is high; down after the step back, the first move within two windows and two
    # dwells (a pick that wavers between bands restarts the dwell), and in the band of the low rate by the end.
    assert ups and all(1800 < s.at_s <= 1800 + 2 * SETTINGS.window_s for s in ups), switches
    assert bands[1800 + 2 * SETTINGS.window_s] == _band(schedule, high * (1 - SETTINGS.margin)), switches
    assert downs and all(s.at_s > 3600 for s in downs), switches
    assert downs[0].at_s <= 3600 + 2 * SETTINGS.window_s + 2 * SETTINGS.dwell_s, switches
    assert bands[7200] == start, switches
    assert ups[0].reason.startswith("up: ") and "arrivals in the last 120 s" in ups[0].reason
    assert downs[0].reason.startswith("down: ")
    first = ups[0].to_dict()
    assert first["before"]["rate"] < first["after"]["rate"] and first["after"]["decisions"]


def test_a_steady_rate_at_a_band_edge_does_not_flap(schedule) -> None:
    edge = schedule.bands[3].high_rate  # 0.25 requests/s: the band above starts just past it
    controller = PlanController(schedule, SETTINGS, 0.0, band=3)
    _drive(controller, _arrivals([(edge, 4 * 3600)], seed=11), 4 * 3600)
    assert len(controller.switches) <= 2, [s.to_dict() for s in controller.switches]


def test_the_load_factor_picks_the_band_of_the_rate_the_device_really_sees(schedule) -> None:
    controller = PlanController(schedule, SETTINGS, 0.0, band=_band(schedule, 0.1))
    _drive(controller, _arrivals([(0.1, 1800)], seed=3), 1800, load_factor=4.0)
    assert controller.band >= _band(schedule, 0.35)
    assert controller.switches[0].load_factor == 4.0
    assert controller.switches[0].effective_rate == pytest.approx(4 * controller.switches[0].rate)


def test_an_empty_hour_is_detected_as_a_change_and_the_plan_moves_down(schedule) -> None:
    controller = PlanController(schedule, SETTINGS, 0.0, band=_band(schedule, 0.3))
    _drive(controller, _arrivals([(0.3, 1800), (0.0, 3600)], seed=5), 5400)
    assert controller.band == 0
    down = next(s for s in controller.switches if s.at_s > 1800)
    assert down.to_band == 0 and down.at_s <= 1800 + SETTINGS.window_s + SETTINGS.dwell_s
    assert "arrivals in the last 120 s where" in down.reason and "the rate changed" in down.reason


def test_the_estimate_restarts_from_the_window_at_a_change() -> None:
    estimator = RateEstimator(SETTINGS, 0.0)
    for t in _arrivals([(0.1, 1200), (1.0, 120)], seed=2):
        estimator.arrived(float(t))
    rate, reason = estimator.update(1320.0)
    assert reason is not None and estimator.since == pytest.approx(1200.0, abs=10.0)
    assert rate == pytest.approx(1.0, rel=0.3)  # one window of a rate-1 stream: 120 ± 11 arrivals


@pytest.mark.parametrize(
    ("field", "value"), [("window_s", 0.0), ("alpha", 0.5), ("dwell_s", float("nan")), ("margin", -0.1)]
)
def test_settings_out_of_range_name_the_field(field, value) -> None:
    with pytest.raises(ValueError, match=field):
        ControllerSettings(**{field: value})


def test_requests_of_many_images_are_one_arrival_to_the_detector_and_many_to_the_rate(schedule) -> None:
    """Requests for 8 images at a steady 0.025 requests/s: 0.2 images/s, a burst of 8 at each arrival. The
    detector counts requests, so the bursts raise no change; the rate counts images."""
    controller = PlanController(schedule, SETTINGS, 0.0, band=_band(schedule, 0.2))
    arrivals = _arrivals([(0.025, 4 * 3600)], seed=4)
    i = 0
    for now in np.arange(SETTINGS.tick_s, 4 * 3600 + SETTINGS.tick_s / 2, SETTINGS.tick_s):
        while i < arrivals.size and arrivals[i] <= now:
            controller.arrived(float(arrivals[i]), images=8)
            i += 1
        controller.tick(float(now))
    assert controller.estimator.since == 0.0  # no change was ever detected
    # The estimate of a stream of 8-image bursts is noisier (8x the variance of single images over an hour):
    # at most a brief excursion past the band's edge.
    assert len(controller.switches) <= 2, [s.to_dict() for s in controller.switches]
    end = 4 * 3600
    last_hour = ((arrivals > end - SETTINGS.horizon_s) & (arrivals <= end)).sum()
    assert controller.rate == pytest.approx(8 * last_hour / SETTINGS.horizon_s)  # images over the horizon


PLANNED_MIX = {"Basic": 272, "Detail": 544, "Imagination": 150, "Complex": 113}


def _mix_stream(mix: CategoryMix, shares: dict[str, float], requests: int, seed: int, start: float = 0.0) -> float:
    """``requests`` requests one second apart, categories drawn in ``shares``; each of 1 to 8 images, every image
    fed as the server feeds it (1/n of a request). Returns the clock after the last."""
    gen = np.random.default_rng(seed)
    names = list(shares)
    for i in range(requests):
        category = names[gen.choice(len(names), p=np.array(list(shares.values())) / sum(shares.values()))]
        images = int(gen.choice([1, 2, 4, 8]))
        for _ in range(images):
            mix.arrived(start + i, category, 1 / images)
    return start + requests


@pytest.mark.parametrize("seed", range(5))
def test_the_planned_mix_is_not_a_move_and_a_moved_mix_is(seed) -> None:
    mix = CategoryMix(PLANNED_MIX, SETTINGS)
    now = _mix_stream(mix, PLANNED_MIX, 1500, seed)
    held = mix.update(now)
    assert not held.moved and held.p_value is not None and held.requests == pytest.approx(1500)
    assert held.observed["Detail"] == pytest.approx(544 / 1079, abs=0.05)
    # Complex grows from a tenth to a third of the requests: within the horizon the test sees it.
    moved = {**PLANNED_MIX, "Complex": 544}
    now = _mix_stream(mix, moved, 1500, seed + 100, start=now)
    found = mix.update(now)
    assert found.moved and found.p_value < SETTINGS.alpha
    assert found.observed["Complex"] > 0.2 and found.planned["Complex"] == pytest.approx(113 / 1079)


def test_the_mix_forgets_past_its_horizon_and_waits_for_enough_requests() -> None:
    mix = CategoryMix(PLANNED_MIX, SETTINGS)
    assert mix.update(0.0).p_value is None  # nothing yet
    _mix_stream(mix, {"Complex": 1.0}, 30, 0)
    assert mix.update(30.0).p_value is None  # 30 requests expect under 5 Imagination ones: no test
    assert mix.update(30.0 + SETTINGS.horizon_s + 1).requests == 0  # forgotten
    mix.arrived(0.0, "Unplanned")
    mix.arrived(SETTINGS.horizon_s + 2, "Unplanned")
    assert mix.update(SETTINGS.horizon_s + 3).p_value == 0.0  # a category the plan expects none of
