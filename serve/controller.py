r"""The closed loop of a served plan schedule: estimate the arrival rate, detect its changes, pick the plan.

A server started on a plan schedule (:mod:`genedge.optimizer.schedule_file`) holds one plan per band of
rates. :class:`RateEstimator` estimates the total arrival rate as the mean rate since the last detected
change (over at most ``horizon_s``), and detects a change with an exact Poisson test: every tick, the
requests n of the last ``window_s`` seconds are compared with what the request rate from before that window
predicts, μ = λ̂·w; where P(N ≥ n) or P(N ≤ n) under Poisson(μ) is below ``alpha`` the rate has changed, and the estimate
restarts from the most likely time of the change within the window (a moving average would lag a step by its
whole length, and a short one would chase the noise: within an hour GenTD26's requests are close to Poisson,
between hours the rate moves 9×). The test counts requests, the rate counts images: a request for 8 images
arrives as 8 at once, a burst no Poisson stream of images has, which a test on images would read as a change.

:class:`PlanController` picks the band for the estimate by the schedule's own policy
(:meth:`~genedge.optimizer.schedule_file.PlanSchedule.plan_for_rate`), at the *effective* rate: the estimate
times the load factor, the ratio of the device time the server's calls take to the plan's (a device twice
as slow as its table serves rate λ as the table's device serves 2λ). With hysteresis, so it does not flap:

* **up** at once where the detector saw a change (within two windows, while the estimate settles on the new
  level) and the effective rate lowered by ``margin`` is past the band's highest planned rate: a higher band's
  plan is the one that keeps the queues stable and the SLO at the new rate; where the estimate drifted past it
  without a detected change, only once the band above has been the pick for ``dwell_s`` seconds without a
  break (a drift is as often noise as load);
* **down** only once the band below has been the pick for ``dwell_s`` seconds without a break, judged at the
  effective rate raised by ``margin``.

A rate hovering at a band's edge so stays in its band: the margin is a dead band of ±``margin`` around each edge.

Every switch is a :class:`Switch`: when, from which band to which, why, and the figures the schedule gives
both plans at their planned rates.

:class:`CategoryMix` estimates the category mix of the requests of the last ``horizon_s`` and tests it against
the mix the plan was made for (a G-test, each request counted once however many images it asks for): a
schedule's bands differ in total rate only, so a mix that moved is a reason to re-plan, which the server
reports (log, ``GET /v1/plan``, ``/metrics``) rather than guesses at.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from genedge.optimizer.schedule_file import PlanSchedule

__all__ = ["CategoryMix", "ControllerSettings", "MixEstimate", "PlanController", "RateEstimator", "Switch"]


@dataclass(frozen=True)
class ControllerSettings:
    """How the controller estimates and decides.

    Attributes:
        window_s: the change detector's window (s): a step in the rate is seen within about one window.
        alpha: the detector's false-alarm probability per test and side. Ticks test overlapping windows, so
            a stationary stream raises alarms more often than ``2 alpha`` per tick (a scan statistic): the
            default keeps them rare over days of ticks, while a step of 2× or a drop to no arrivals at a
            few tenths of a request per second is still seen within a window.
        dwell_s: seconds a lower band must be the pick, without a break, before the plan moves down.
        margin: a move up is judged at the effective rate times ``1 − margin``, a move down at ``1 + margin``.
        tick_s: seconds between decisions.
        horizon_s: the estimate's longest memory: the mean rate since the last change, over at most this long
            (a slow ramp that no window's test flags is still followed, at most half a horizon behind).
    """

    window_s: float = 60.0
    alpha: float = 1e-6
    dwell_s: float = 120.0
    margin: float = 0.1
    tick_s: float = 1.0
    horizon_s: float = 1800.0

    def __post_init__(self) -> None:
        if not self.horizon_s >= 2 * self.window_s:
            raise ValueError(
                f"horizon_s: expected at least two windows ({2 * self.window_s:g} s), but got {self.horizon_s!r}"
            )
        for name in ("window_s", "dwell_s", "tick_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a number of seconds > 0, but got {value!r}")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha: expected a probability in (0, 0.5), but got {self.alpha!r}")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin: expected a fraction >= 0, but got {self.margin!r}")


class RateEstimator:
    """The total arrival rate since the last detected change (module notes).

    Args:
        settings: the window and the detector's alpha.
        start: the clock reading at which counting starts.
    """

    def __init__(self, settings: ControllerSettings, start: float) -> None:
        self.settings = settings
        self.since = start
        # (time, images) of each request of the last horizon, oldest first.
        self._arrivals: collections.deque[tuple[float, int]] = collections.deque()

    def arrived(self, at: float, images: int = 1) -> None:
        """One request for ``images`` images arrived at clock reading ``at`` (non-decreasing)."""
        self._arrivals.append((at, images))

    def _start(self, now: float) -> float:
        """Where the estimate's memory starts: the last change, or one horizon back."""
        return max(self.since, now - self.settings.horizon_s)

    def rate(self, now: float) -> float:
        """Images per second since the last change, over at most the horizon and at least one window: the load
        a plan serves, each image a request of its own to the planner."""
        start = self._start(now)
        images = sum(n for t, n in self._arrivals if t >= start)
        # Over one window at least: right after a change the new segment may hold one request of a few seconds.
        return images / max(now - start, self.settings.window_s)

    def update(self, now: float) -> tuple[float, str | None]:
        """The estimate at ``now``, and why it restarted, where the detector saw a change this tick."""
        window = self.settings.window_s
        start, cut = self._start(now), now - window
        while self._arrivals and self._arrivals[0][0] < start:
            self._arrivals.popleft()
        if cut - start < window:  # too little history before the window to test it against
            return self.rate(now), None
        from scipy.stats import poisson  # scipy.stats costs a second to import: only a server ticking pays it

        times = np.fromiter((t for t, _ in self._arrivals), float, len(self._arrivals))
        recent = int((times >= cut).sum())
        # Half a request of prior before the window: after an empty stretch one request is not a change (μ = 0
        # would make any arrival one), three within a window are.
        mu = (times.size - recent + 0.5) / (cut - start) * window
        high, low = poisson.sf(recent - 1, mu), poisson.cdf(recent, mu)
        if min(high, low) >= self.settings.alpha:
            return self.rate(now), None
        self.since = _change_point(times, start, cut, now)
        reason = (
            f"{recent} arrivals in the last {window:g} s where {mu:.3g} were expected at "
            f"{mu / window:.4g} requests/s (P = {min(high, low):.2g} < {self.settings.alpha:g}); "
            f"the rate changed {now - self.since:.0f} s ago"
        )
        return self.rate(now), reason


@dataclass(frozen=True)
class MixEstimate:
    """The observed category mix against the plan's.

    Attributes:
        observed / planned: category → share of the requests (observed over the last horizon; planned: the
            plan's demand).
        requests: the requests the observed mix counts.
        p_value: the G-test's P(G ≥ g) under the planned mix (χ² with one degree fewer than the categories),
            or None with fewer than :data:`MIX_MIN_EXPECTED` expected requests in some category.
        moved: the test rejects the planned mix at the controller's ``alpha``.
    """

    observed: Mapping[str, float]
    planned: Mapping[str, float]
    requests: float
    p_value: float | None
    moved: bool

    def to_dict(self) -> dict[str, Any]:
        """As JSON (``GET /v1/plan``'s ``served.category_mix``)."""
        return dataclasses.asdict(self)


#: The G-test's χ² law holds once every category expects this many requests; with fewer it is not run.
MIX_MIN_EXPECTED = 5.0


class CategoryMix:
    """The category mix of the requests of the last ``horizon_s``, tested against the plan's (module notes).

    Args:
        planned: category → the plan's demand (any unit: shares are taken).
        settings: the horizon and the test's ``alpha``.
    """

    def __init__(self, planned: Mapping[str, float], settings: ControllerSettings) -> None:
        total = sum(planned.values())
        self.planned = {c: v / total for c, v in planned.items() if v > 0}
        self.settings = settings
        self._arrivals: collections.deque[tuple[float, str, float]] = collections.deque()

    def arrived(self, at: float, category: str, weight: float = 1.0) -> None:
        """``weight`` of a request of ``category`` arrived at clock reading ``at`` (one image of a request of n
        counts 1/n, so a request counts once)."""
        self._arrivals.append((at, category, weight))

    def update(self, now: float) -> MixEstimate:
        """The mix of the last horizon and its test against the planned mix."""
        from scipy.special import gammaincc, xlogy  # the χ² survival function without scipy.stats

        while self._arrivals and self._arrivals[0][0] < now - self.settings.horizon_s:
            self._arrivals.popleft()
        counts = dict.fromkeys(self.planned, 0.0)
        for _, category, weight in self._arrivals:
            counts[category] = counts.get(category, 0.0) + weight
        n = sum(counts.values())
        observed = {c: (v / n if n > 0 else 0.0) for c, v in counts.items()}
        expected = {c: n * self.planned.get(c, 0.0) for c in counts}
        p_value = None
        if any(v > 0 and c not in self.planned for c, v in counts.items()):
            p_value = 0.0  # requests of a category the plan expects none of
        elif len(self.planned) > 1 and n > 0 and min(expected[c] for c in self.planned) >= MIX_MIN_EXPECTED:
            g = 2 * sum(float(xlogy(counts[c], counts[c] / expected[c])) for c in self.planned)
            p_value = float(gammaincc((len(self.planned) - 1) / 2, max(g, 0.0) / 2))
        moved = p_value is not None and p_value < self.settings.alpha
        return MixEstimate(observed, dict(self.planned), n, p_value, moved)


def _change_point(times: np.ndarray, start: float, cut: float, now: float) -> float:
    """The most likely time of a change in [cut, now]: the split of the requests at ``times`` over [start, now]
    into two Poisson segments of constant rates with the largest likelihood (candidates: ``cut`` and each
    arrival after it)."""
    candidates = np.concatenate([[cut], times[times >= cut]])
    after = np.array([(times >= c).sum() for c in candidates])
    before = times.size - after
    likelihood = _log_likelihood(before, candidates - start) + _log_likelihood(after, now - candidates)
    return float(candidates[np.argmax(likelihood)])


def _log_likelihood(count: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """max over λ of the Poisson log-likelihood of ``count`` arrivals in ``seconds``: n log(n / T) − n (0 at n = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, count * np.log(count / seconds) - count, 0.0)


@dataclass(frozen=True)
class Switch:
    """One change of the served plan.

    Attributes:
        at_s: seconds since the server started.
        from_band / to_band: indices into the schedule's bands.
        rate: the estimated arrival rate (requests/s); effective_rate: times the load factor.
        load_factor: the device time the server's calls took over the plan's.
        reason: why, in words.
        before / after: the schedule's figures for each band's plan at its highest planned rate.
    """

    at_s: float
    from_band: int
    to_band: int
    rate: float
    effective_rate: float
    load_factor: float
    reason: str
    before: Mapping[str, Any]
    after: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """As JSON (``GET /v1/plan``'s ``served.schedule.switches``)."""
        return dataclasses.asdict(self)


class PlanController:
    """Which band of ``schedule`` to serve, decided tick by tick (module notes).

    Args:
        schedule: the plan schedule served.
        settings: estimator and hysteresis settings.
        start: the clock reading at the start; the first band is the one for the schedule's lowest rate
            unless ``band`` says otherwise.
        band: the band served at the start.
    """

    def __init__(
        self, schedule: PlanSchedule, settings: ControllerSettings, start: float, band: int | None = None
    ) -> None:
        self.schedule = schedule
        self.settings = settings
        self.start = start
        self.band = 0 if band is None else band
        self.estimator = RateEstimator(settings, start)
        self.switches: list[Switch] = []
        self.rate = 0.0
        self._held: dict[str, float] = {}  # direction → since when a move that way has been the pick
        self._changed_at: float | None = None  # when the detector last saw a change
        self._step = ""  # its finding, kept for the moves it allows at once
        self._change: str | None = None  # the detector's last finding, until a switch reports it

    def _band_for(self, rate: float) -> int:
        if rate <= 0:
            return 0
        return self.schedule.bands.index(self.schedule.plan_for_rate(rate).band)

    def _figures(self, band: int) -> dict[str, Any]:
        """The schedule's figures for a band's plan at its highest planned rate."""
        chosen = self.schedule.bands[band]
        point = next(p for p in self.schedule.points if p.rate == chosen.high_rate)
        return {
            "rate": chosen.high_rate,
            "utility": point.utility,
            "mean_delay_s": point.mean_delay_s,
            "p95_delay_s": point.p95_delay_s,
            "slo_attainment": point.slo_attainment,
            "decisions": chosen.decisions.describe(),
        }

    def arrived(self, at: float, images: int = 1) -> None:
        """One request for ``images`` images arrived at clock reading ``at``."""
        self.estimator.arrived(at, images)

    def tick(self, now: float, load_factor: float = 1.0) -> Switch | None:
        """Decide at ``now`` (from two detector windows after the start on): the switch to make, or None."""
        self.rate, change = self.estimator.update(now)
        self._change = change or self._change
        if change is not None:
            self._changed_at, self._step = now, change
        if now - self.start < 2 * self.settings.window_s:  # a first estimate from a few arrivals is noise
            return None
        effective = self.rate * load_factor
        up = self._band_for(effective * (1 - self.settings.margin))
        down = self._band_for(effective * (1 + self.settings.margin))
        if up > self.band and self._settling(now):  # a detected step, the estimate still rising to it: at once
            self._held.clear()
            return self._switch(now, up, effective, load_factor, f"up: {self._step}")
        target = up if up > self.band else down if down < self.band else None
        if target is None:
            self._held.clear()
            return None
        if not self._lasted("up" if target > self.band else "down", now):
            return None
        why = f"band {target}'s plan was the pick for {self.settings.dwell_s:g} s" + (
            f"; {self._change}" if self._change else ""
        )
        return self._switch(now, target, effective, load_factor, f"{'up' if target > self.band else 'down'}: {why}")

    def _settling(self, now: float) -> bool:
        """Whether the detector saw a change within the last two windows (the estimate is still settling)."""
        return self._changed_at is not None and now - self._changed_at <= 2 * self.settings.window_s

    def _lasted(self, direction: str, now: float) -> bool:
        """Whether a move in ``direction`` has been the pick for ``dwell_s`` without a break (a pick the other
        way, or none, breaks it)."""
        since = self._held.setdefault(direction, now)
        for other in [d for d in self._held if d != direction]:
            del self._held[other]
        if now - since < self.settings.dwell_s:
            return False
        self._held.clear()
        return True

    def _switch(self, now: float, band: int, effective: float, load_factor: float, reason: str) -> Switch:
        switch = Switch(
            at_s=now - self.start,
            from_band=self.band,
            to_band=band,
            rate=self.rate,
            effective_rate=effective,
            load_factor=load_factor,
            reason=reason,
            before=self._figures(self.band),
            after=self._figures(band),
        )
        self.band = band
        self._change = None
        self.switches.append(switch)
        return switch
