r"""Requests over time: realized arrival sequences, their generators, and trace files.

An :class:`Arrivals` is one realized sequence of requests on the window ``[0, duration_s]``: sorted
arrival times and the prompt category of each. Three generators produce one from per-category mean
rates λ_c (requests/s), each keeping λ_c as the long-run rate of category c:

- :func:`poisson_arrivals`: independent Poisson streams (exponential gaps of the total rate
  Λ = Σ_c λ_c, each request's category drawn with probability λ_c / Λ: the same process).
- :func:`gamma_arrivals`: gamma-distributed gaps, as ``vllm bench serve --burstiness`` draws them.
- :func:`mmpp_arrivals`: a two-state Markov-modulated Poisson process with a stated index of
  dispersion, for bursts that last many requests.

Burstiness is measured by the index of dispersion of counts, IDC(w) = Var N(w) / E N(w) for the
number N(w) of arrivals in a window of w seconds, and its long-window limit IDC(∞). Poisson arrivals
have IDC(w) = 1 for every w. A renewal process whose gaps have squared coefficient of variation c²
has IDC(∞) = c², so gamma gaps of shape k have IDC(∞) = 1/k.

:func:`rates_from_counts` turns the paper's "N requests per planning window T" into the rate N/T; recorded
arrivals are read by :func:`genedge.optimizer.model.read_trace`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_HIGH_FRACTION",
    "DEFAULT_PEAK_TO_MEAN",
    "Arrivals",
    "gamma_arrivals",
    "mmpp_arrivals",
    "poisson_arrivals",
    "rates_from_counts",
]

#: MMPP default: the high state's rate is this multiple of the mean rate.
DEFAULT_PEAK_TO_MEAN = 2.0
#: MMPP default: long-run fraction of time in the high state (with the default peak, the low state is silent).
DEFAULT_HIGH_FRACTION = 0.5

# Extra gaps drawn per chunk beyond the expected count when filling a duration: mean + this many SDs (+ a floor).
_CHUNK_SDS = 6.0
_CHUNK_FLOOR = 64
# Most state sojourns simulated per MMPP chunk (bounds memory when the modulation is fast) ...
_MMPP_CHUNK = 1 << 18
# ... and fewer when few are needed: this multiple of the expected number still needed (+ the floor).
_CHUNK_MARGIN = 1.2


@dataclass(frozen=True, eq=False)
class Arrivals:
    """One realized arrival sequence on the window ``[0, duration_s]``.

    Attributes:
        times_s: arrival times in seconds, non-decreasing, in ``[0, duration_s]`` (float64, read-only).
        category: each request's category, an index into ``categories`` (int64, read-only).
        categories: category names; index i of ``category`` means ``categories[i]``.
        duration_s: length of the observed window in seconds (≥ the last arrival time).
        images: images each request asks for (int64 ≥ 1, read-only), or None where not recorded (one each).
        steps: denoising steps each request asked for (int64 ≥ 1, read-only), or None where not recorded; a
            plan chooses the steps it serves, so this is what the recorded service was asked, not what is served.
    """

    times_s: np.ndarray
    category: np.ndarray
    categories: tuple[str, ...]
    duration_s: float
    images: np.ndarray | None = None
    steps: np.ndarray | None = None

    def __post_init__(self) -> None:
        times = np.array(self.times_s, dtype=float)
        category = np.array(self.category)
        if times.ndim != 1 or category.shape != times.shape:
            raise ValueError(
                f"Expected 1-D times_s and category of equal length, but got shapes {times.shape} and {category.shape}"
            )
        if category.size and not np.issubdtype(category.dtype, np.integer):
            raise ValueError(f"Expected integer category indices, but got dtype {category.dtype}")
        categories = _category_names(self.categories)
        if times.size:
            if not np.isfinite(times).all() or times[0] < 0:
                raise ValueError("Expected finite arrival times >= 0")
            if (np.diff(times) < 0).any():
                first = int(np.argmax(np.diff(times) < 0)) + 1
                raise ValueError(
                    f"Expected non-decreasing arrival times, but time {first} is earlier than time {first - 1}"
                )
            if category.min() < 0 or category.max() >= len(categories):
                raise ValueError(
                    f"Expected category indices in [0, {len(categories)}), but got {category.min()}..{category.max()}"
                )
        last = float(times[-1]) if times.size else 0.0
        duration = float(self.duration_s)
        if not math.isfinite(duration) or duration < last:
            raise ValueError(f"Expected a finite duration_s >= the last arrival ({last}), but got {self.duration_s}")
        times.setflags(write=False)
        category = category.astype(np.int64)
        category.setflags(write=False)
        for name in ("images", "steps"):
            object.__setattr__(self, name, _per_request_counts(name, getattr(self, name), times.shape))
        object.__setattr__(self, "times_s", times)
        object.__setattr__(self, "category", category)
        object.__setattr__(self, "categories", categories)
        object.__setattr__(self, "duration_s", duration)

    def __len__(self) -> int:
        return int(self.times_s.size)

    def counts(self) -> dict[str, int]:
        """Requests per category."""
        counts = np.bincount(self.category, minlength=len(self.categories))
        return {name: int(n) for name, n in zip(self.categories, counts)}

    def rates(self) -> dict[str, float]:
        """Realized rate of each category over the window, N_c / duration_s (requests/s).

        Raises:
            ValueError: the window has zero length (every request at time 0).
        """
        if self.duration_s <= 0:
            raise ValueError("Expected a window of positive length to compute rates, but duration_s is 0")
        return {name: n / self.duration_s for name, n in self.counts().items()}

    def window_rates(self, window_s: float) -> np.ndarray:
        """The total arrival rate in each whole window of ``window_s`` seconds from time 0 (requests/s).

        A last window shorter than ``window_s`` is left out: its rate would count fewer seconds.

        Raises:
            ValueError: a window that is not > 0 seconds, or longer than the arrivals' duration.
        """
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"Expected a window length > 0 seconds, but got {window_s}")
        windows = int(self.duration_s // window_s)
        if windows < 1:
            raise ValueError(
                f"Expected a window no longer than the arrivals' {self.duration_s:g} s, but got {window_s:g} s"
            )
        counts, _ = np.histogram(self.times_s, bins=windows, range=(0.0, windows * window_s))
        return counts / window_s


def _category_names(categories: Sequence[str]) -> tuple[str, ...]:
    """``categories`` as a tuple of distinct non-empty names."""
    names = tuple(categories)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"Expected distinct category names, but got {list(names)}")
    if not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"Expected non-empty category names, but got {list(names)}")
    return names


def _per_request_counts(name: str, values: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """``values`` as read-only int64 counts ≥ 1, one per request (None stays None)."""
    if values is None:
        return None
    counts = np.array(values)
    if counts.shape != shape:
        raise ValueError(f"Expected one {name} count per request, shape {shape}, but got shape {counts.shape}")
    if counts.size and (not np.issubdtype(counts.dtype, np.integer) or counts.min() < 1):
        raise ValueError(f"Expected whole {name} counts >= 1, but got dtype {counts.dtype}, least {counts.min()}")
    counts = counts.astype(np.int64)
    counts.setflags(write=False)
    return counts


def rates_from_counts(counts: Mapping[str, float], window_s: float) -> dict[str, float]:
    """Rates from requests per planning window: N_c requests per window of T seconds is λ_c = N_c / T.

    Raises:
        ValueError: a non-positive window or a negative or non-finite count.
    """
    if not math.isfinite(window_s) or window_s <= 0:
        raise ValueError(f"Expected a window length > 0 seconds, but got {window_s}")
    for name, count in counts.items():
        if not math.isfinite(count) or count < 0:
            raise ValueError(f"Expected a request count >= 0 for category {name!r}, but got {count!r}")
    return {name: float(count) / window_s for name, count in counts.items()}


def _check_rates(rates: Mapping[str, float]) -> tuple[tuple[str, ...], np.ndarray]:
    names = tuple(rates)
    if not names:
        raise ValueError("Expected at least one category rate, but got none")
    values = np.array([rates[name] for name in names], dtype=float)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        name = names[int(np.argmax(bad))]
        raise ValueError(f"Expected a finite rate >= 0 for category {name!r}, but got {rates[name]!r}")
    if values.sum() <= 0:
        raise ValueError(f"Expected a positive total rate, but got {dict(rates)}")
    return names, values


def _check_extent(duration_s: float | None, n_requests: int | None) -> None:
    if (duration_s is None) == (n_requests is None):
        raise ValueError("Expected exactly one of duration_s and n_requests")
    if duration_s is not None and (not math.isfinite(duration_s) or duration_s <= 0):
        raise ValueError(f"Expected duration_s > 0, but got {duration_s}")
    if n_requests is not None and (isinstance(n_requests, bool) or int(n_requests) != n_requests or n_requests < 1):
        raise ValueError(f"Expected n_requests >= 1 (a whole number), but got {n_requests}")


def _renewal_times(
    draw_gaps: Callable[[int], np.ndarray], total_rate: float, duration_s: float | None, n_requests: int | None
) -> tuple[np.ndarray, float]:
    """Arrival times of a renewal process started at 0 (first arrival after one gap)."""
    if n_requests is not None:
        times = np.cumsum(draw_gaps(int(n_requests)))
        return times, float(times[-1])
    expected = total_rate * duration_s
    chunk = int(expected + _CHUNK_SDS * math.sqrt(expected) + _CHUNK_FLOOR)
    parts, last = [], 0.0
    while last <= duration_s:
        part = last + np.cumsum(draw_gaps(chunk))
        parts.append(part)
        last = float(part[-1])
    times = np.concatenate(parts)
    return times[: np.searchsorted(times, duration_s, side="right")], float(duration_s)


def _finish(
    times: np.ndarray, duration: float, names: tuple[str, ...], values: np.ndarray, gen: np.random.Generator
) -> Arrivals:
    category = gen.choice(len(names), size=times.size, p=values / values.sum())
    return Arrivals(times, category, names, duration)


def poisson_arrivals(
    rates: Mapping[str, float],
    *,
    duration_s: float | None = None,
    n_requests: int | None = None,
    rng: int | np.random.Generator | None = None,
) -> Arrivals:
    r"""Independent Poisson arrivals of each category.

    Gaps are exponential with mean 1/Λ, Λ = Σ_c λ_c, and each request's category is c with
    probability λ_c/Λ; this is the superposition of independent Poisson streams of rates λ_c.

    Args:
        rates: category → mean rate λ_c (requests/s, ≥ 0, total > 0); the order fixes ``categories``.
        duration_s: generate on ``[0, duration_s]`` (the count is then Poisson(Λ·duration_s)).
        n_requests: or generate exactly this many requests; the window ends at the last one.
        rng: a seed or generator.

    Raises:
        ValueError: invalid rates, or not exactly one of ``duration_s`` and ``n_requests``.
    """
    names, values = _check_rates(rates)
    _check_extent(duration_s, n_requests)
    gen = np.random.default_rng(rng)
    total = float(values.sum())
    times, duration = _renewal_times(lambda n: gen.exponential(1.0 / total, n), total, duration_s, n_requests)
    return _finish(times, duration, names, values, gen)


def gamma_arrivals(
    rates: Mapping[str, float],
    *,
    burstiness: float = 1.0,
    duration_s: float | None = None,
    n_requests: int | None = None,
    rng: int | np.random.Generator | None = None,
) -> Arrivals:
    r"""Arrivals with gamma-distributed gaps, as ``vllm bench serve --burstiness`` draws them.

    Gaps are Gamma(shape = k, scale = 1/(Λ k)) with k = ``burstiness`` and Λ = Σ_c λ_c: mean 1/Λ,
    squared coefficient of variation 1/k, so the long-window index of dispersion is IDC(∞) = 1/k.
    Each request's category is c with probability λ_c/Λ.

    ``burstiness`` means what vLLM's flag means: k = 1 is Poisson, k < 1 is burstier (gaps more
    variable), k > 1 is more regular, and k = ∞ gives evenly spaced requests (gaps exactly 1/Λ).
    Note the direction is opposite to :func:`mmpp_arrivals`, whose ``burstiness`` is IDC(∞) itself:
    ``gamma_arrivals(burstiness=k)`` and ``mmpp_arrivals(burstiness=1/k)`` have the same long-run
    count variance. Recent vLLM versions also rescale the whole schedule so the n-th request is
    sent at exactly n/Λ; here gaps are not rescaled, so the realized rate varies as a renewal
    process's does.

    Args:
        rates: category → mean rate λ_c (requests/s, ≥ 0, total > 0).
        burstiness: the gamma shape k (> 0, or ``math.inf``).
        duration_s: generate on ``[0, duration_s]``.
        n_requests: or generate exactly this many requests; the window ends at the last one.
        rng: a seed or generator.

    Raises:
        ValueError: invalid rates or burstiness, or not exactly one of ``duration_s`` and ``n_requests``.
    """
    names, values = _check_rates(rates)
    _check_extent(duration_s, n_requests)
    if math.isnan(burstiness) or burstiness <= 0:
        raise ValueError(f"Expected burstiness > 0 (the gamma shape; 1 = Poisson), but got {burstiness}")
    gen = np.random.default_rng(rng)
    total = float(values.sum())

    def draw(n: int) -> np.ndarray:
        if math.isinf(burstiness):
            return np.full(n, 1.0 / total)
        return gen.gamma(burstiness, 1.0 / (total * burstiness), n)

    times, duration = _renewal_times(draw, total, duration_s, n_requests)
    return _finish(times, duration, names, values, gen)


def mmpp_arrivals(
    rates: Mapping[str, float],
    *,
    burstiness: float,
    duration_s: float | None = None,
    n_requests: int | None = None,
    peak_to_mean: float = DEFAULT_PEAK_TO_MEAN,
    high_fraction: float = DEFAULT_HIGH_FRACTION,
    rng: int | np.random.Generator | None = None,
) -> Arrivals:
    r"""Bursty arrivals: a two-state Markov-modulated Poisson process (MMPP-2) of stated dispersion.

    One hidden state alternates between *high* and *low*, staying an exponential time in each; while
    in a state, requests arrive as a Poisson process of that state's rate, and each request's
    category is c with probability λ_c/Λ. With h = ``peak_to_mean``, π = ``high_fraction`` (the
    long-run fraction of time in the high state) and D = ``burstiness``:

    .. math::
        λ_H = hΛ, \quad λ_L = Λ\frac{1 - πh}{1 - π}, \quad
        Σ = \frac{2π(h-1)^2 Λ}{(1-π)(D-1)}, \quad
        \bar T_H = \frac{1}{(1-π)Σ}, \quad \bar T_L = \frac{1}{πΣ},

    where \bar T_H and \bar T_L are the mean sojourns in the high and low states (s). The long-run
    rate is πλ_H + (1−π)λ_L = Λ, and the index of dispersion of counts in a window of w seconds is

    .. math:: \mathrm{IDC}(w) = \frac{\operatorname{Var} N(w)}{E\,N(w)}
              = 1 + (D - 1)\Bigl(1 - \frac{1 - e^{-Σw}}{Σw}\Bigr) \to D \quad (w \to ∞).

    So ``burstiness`` is the long-window index of dispersion IDC(∞) of the total stream: 1 is
    Poisson (returned as :func:`poisson_arrivals`), larger is burstier. With the defaults (h = 2,
    π = 1/2) the low state is silent and each state lasts D − 1 mean gaps (1/Λ) on average. A
    category's own stream is the same process thinned, with IDC(∞) = 1 + (λ_c/Λ)(D − 1). The
    process starts in its stationary state (high with probability π).

    Args:
        rates: category → mean rate λ_c (requests/s, ≥ 0, total > 0).
        burstiness: D = IDC(∞) ≥ 1.
        duration_s: generate on ``[0, duration_s]``.
        n_requests: or generate exactly this many requests; the window ends at the last one.
        peak_to_mean: h > 1, the high state's rate over the mean rate.
        high_fraction: π in (0, 1/h], the fraction of time in the high state (so λ_L ≥ 0).
        rng: a seed or generator.

    Raises:
        ValueError: invalid rates, burstiness < 1, h ≤ 1, π outside (0, 1/h], or not exactly one of
            ``duration_s`` and ``n_requests``.
    """
    names, values = _check_rates(rates)
    _check_extent(duration_s, n_requests)
    _check_modulation(burstiness, peak_to_mean, high_fraction)
    gen = np.random.default_rng(rng)
    if burstiness == 1:
        return poisson_arrivals(rates, duration_s=duration_s, n_requests=n_requests, rng=gen)
    total = float(values.sum())
    h, pi = peak_to_mean, high_fraction
    state_rate = np.array([h * total, max(total * (1 - pi * h) / (1 - pi), 0.0)])  # high, low
    switch = 2 * pi * (h - 1) ** 2 * total / ((1 - pi) * (burstiness - 1))
    mean_sojourn = np.array([1 / ((1 - pi) * switch), 1 / (pi * switch)])
    times = _modulated_times(gen, state_rate, mean_sojourn, pi, total, duration_s, n_requests)
    if n_requests is not None:
        times = times[: int(n_requests)]
        return _finish(times, float(times[-1]), names, values, gen)
    return _finish(times[: np.searchsorted(times, duration_s, side="right")], float(duration_s), names, values, gen)


def _check_modulation(burstiness: float, peak_to_mean: float, high_fraction: float) -> None:
    """Refuse an MMPP-2's burstiness below 1, a peak-to-mean of at most 1, or a high fraction outside
    (0, 1/peak_to_mean] (:func:`mmpp_arrivals`)."""
    if not math.isfinite(burstiness) or burstiness < 1:
        raise ValueError(f"Expected burstiness >= 1 (the index of dispersion; 1 = Poisson), but got {burstiness}")
    if not math.isfinite(peak_to_mean) or peak_to_mean <= 1:
        raise ValueError(f"Expected peak_to_mean > 1, but got {peak_to_mean}")
    if not 0 < high_fraction <= 1 / peak_to_mean:
        raise ValueError(
            f"Expected high_fraction in (0, 1/peak_to_mean] = (0, {1 / peak_to_mean:g}] so the low rate is >= 0, "
            f"but got {high_fraction}"
        )


def _modulated_times(
    gen: np.random.Generator,
    state_rate: np.ndarray,
    mean_sojourn: np.ndarray,
    pi: float,
    total: float,
    duration_s: float | None,
    n_requests: int | None,
) -> np.ndarray:
    """Sorted arrival times of the MMPP-2 (high, low rates ``state_rate``, mean sojourns ``mean_sojourn``),
    started in its stationary state, drawn a chunk of sojourns at a time until they cover ``duration_s``
    or hold ``n_requests`` arrivals (possibly more)."""
    state = 0 if gen.random() < pi else 1
    clock, parts, count = 0.0, [], 0
    while (duration_s is not None and clock < duration_s) or (n_requests is not None and count < n_requests):
        remaining_s = duration_s - clock if duration_s is not None else (n_requests - count) / total
        chunk = min(_MMPP_CHUNK, int(_CHUNK_MARGIN * remaining_s / mean_sojourn.mean()) + _CHUNK_FLOOR)
        states = (state + np.arange(chunk)) % 2
        lengths = gen.exponential(mean_sojourn[states])
        starts = clock + np.concatenate(([0.0], np.cumsum(lengths[:-1])))
        counts = gen.poisson(state_rate[states] * lengths)
        parts.append(np.repeat(starts, counts) + np.repeat(lengths, counts) * gen.random(int(counts.sum())))
        clock, count, state = float(starts[-1] + lengths[-1]), count + int(counts.sum()), int(states[-1] ^ 1)
    return np.sort(np.concatenate(parts))
