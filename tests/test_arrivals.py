"""Arrival generators keep their stated rate and burstiness; traces are read exactly or refused clearly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genedge.contract.files import ArtifactError
from genedge.optimizer.model._arrivals import (
    Arrivals,
    gamma_arrivals,
    mmpp_arrivals,
    poisson_arrivals,
    rates_from_counts,
)
from genedge.optimizer.model._trace import read_trace

# Agreement with a stated value is judged at this many standard errors (two-sided normal: ~6 in 100,000).
Z = 4.0
# Independent segments whose spread gives the standard error of a dispersion estimate.
SEGMENTS = 20


def _idc_by_segments(times: np.ndarray, duration: float, window: float) -> tuple[float, float]:
    """Index of dispersion of counts in windows of ``window`` s: mean and standard error over segments."""
    counts = np.bincount((times // window).astype(int), minlength=int(duration // window))[: int(duration // window)]
    per_segment = [part.var(ddof=1) / part.mean() for part in np.array_split(counts, SEGMENTS)]
    return float(np.mean(per_segment)), float(np.std(per_segment, ddof=1) / math.sqrt(SEGMENTS))


# ---------------------------------------------------------------------------------------------- Arrivals


def test_arrivals_rates_are_counts_over_the_window():
    arrivals = Arrivals(np.array([0.5, 1.0, 2.0, 3.5]), np.array([0, 1, 0, 0]), ("a", "b"), 4.0)
    assert len(arrivals) == 4
    assert arrivals.counts() == {"a": 3, "b": 1}
    assert arrivals.rates() == {"a": 0.75, "b": 0.25}
    with pytest.raises(ValueError):
        arrivals.times_s[0] = 9.0  # read-only


@pytest.mark.parametrize(
    ("times", "category", "duration", "match"),
    [
        ([1.0, 0.5], [0, 0], 2.0, "non-decreasing arrival times, but time 1"),
        ([0.5, 1.0], [0, 2], 2.0, r"category indices in \[0, 2\)"),
        ([0.5, 1.0], [0, 1], 0.9, "duration_s >= the last arrival"),
        ([-0.5, 1.0], [0, 1], 2.0, "finite arrival times >= 0"),
    ],
)
def test_arrivals_refuse_inconsistent_fields(times, category, duration, match):
    with pytest.raises(ValueError, match=match):
        Arrivals(np.array(times), np.array(category), ("a", "b"), duration)


def test_rates_from_counts_is_count_over_window():
    assert rates_from_counts({"a": 120, "b": 30}, 60.0) == {"a": 2.0, "b": 0.5}
    with pytest.raises(ValueError, match="window length > 0"):
        rates_from_counts({"a": 1}, 0.0)


# ---------------------------------------------------------------------------------------------- Poisson


def test_poisson_keeps_each_category_rate_and_is_reproducible():
    rates = {"people": 6.0, "animals": 3.0, "text": 1.0}
    arrivals = poisson_arrivals(rates, duration_s=20_000.0, rng=7)
    assert arrivals.categories == ("people", "animals", "text")
    assert arrivals.duration_s == 20_000.0
    for name, rate in arrivals.rates().items():
        # a Poisson count over T has variance λT, so the rate's standard error is √(λ/T)
        assert abs(rate - rates[name]) < Z * math.sqrt(rates[name] / arrivals.duration_s)
    gaps = np.diff(arrivals.times_s)
    assert gaps.var() / gaps.mean() ** 2 == pytest.approx(1.0, abs=0.03)  # exponential gaps: CV² = 1
    again = poisson_arrivals(rates, duration_s=20_000.0, rng=7)
    assert np.array_equal(again.times_s, arrivals.times_s) and np.array_equal(again.category, arrivals.category)


def test_poisson_with_a_request_count_ends_at_the_last_request():
    arrivals = poisson_arrivals({"a": 2.0, "b": 0.0}, n_requests=500, rng=1)
    assert len(arrivals) == 500
    assert arrivals.duration_s == arrivals.times_s[-1]
    assert arrivals.counts() == {"a": 500, "b": 0}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"duration_s": 1.0, "n_requests": 5}, "exactly one of duration_s and n_requests"),
        ({}, "exactly one of duration_s and n_requests"),
        ({"n_requests": 0}, "n_requests >= 1"),
        ({"duration_s": -1.0}, "duration_s > 0"),
    ],
)
def test_generators_need_one_extent(kwargs, match):
    with pytest.raises(ValueError, match=match):
        poisson_arrivals({"a": 1.0}, **kwargs)


def test_generators_refuse_bad_rates():
    with pytest.raises(ValueError, match="finite rate >= 0 for category 'b'"):
        poisson_arrivals({"a": 1.0, "b": -1.0}, n_requests=3)
    with pytest.raises(ValueError, match="positive total rate"):
        gamma_arrivals({"a": 0.0}, n_requests=3)


# ---------------------------------------------------------------------------------------------- gamma


@pytest.mark.parametrize("shape", [0.25, 1.0, 4.0])
def test_gamma_gaps_have_mean_one_over_rate_and_cv2_one_over_burstiness(shape):
    arrivals = gamma_arrivals({"a": 3.0, "b": 2.0}, burstiness=shape, n_requests=100_000, rng=3)
    gaps = np.diff(np.concatenate(([0.0], arrivals.times_s)))
    parts = np.array_split(gaps, SEGMENTS)
    means = np.array([p.mean() for p in parts])
    cv2 = np.array([p.var() / p.mean() ** 2 for p in parts])
    assert abs(means.mean() - 1 / 5.0) < Z * means.std(ddof=1) / math.sqrt(SEGMENTS)
    assert abs(cv2.mean() - 1 / shape) < Z * cv2.std(ddof=1) / math.sqrt(SEGMENTS)


def test_gamma_burstiness_is_the_long_window_dispersion_inverse():
    shape = 0.25
    arrivals = gamma_arrivals({"a": 10.0}, burstiness=shape, duration_s=40_000.0, rng=5)
    idc, se = _idc_by_segments(arrivals.times_s, arrivals.duration_s, window=20.0)
    assert abs(idc - 1 / shape) < Z * se  # renewal process: IDC(∞) = CV² of the gaps


def test_gamma_infinite_burstiness_spaces_requests_evenly():
    arrivals = gamma_arrivals({"a": 4.0}, burstiness=math.inf, n_requests=8, rng=0)
    assert np.allclose(arrivals.times_s, 0.25 * np.arange(1, 9))


def test_gamma_refuses_non_positive_burstiness():
    with pytest.raises(ValueError, match="burstiness > 0"):
        gamma_arrivals({"a": 1.0}, burstiness=0.0, n_requests=3)


# ---------------------------------------------------------------------------------------------- MMPP


def _switch_rate(rate: float, burstiness: float, peak: float, high: float) -> float:
    """Σ of the MMPP docstring."""
    return 2 * high * (peak - 1) ** 2 * rate / ((1 - high) * (burstiness - 1))


@pytest.mark.parametrize(("burstiness", "peak", "high"), [(5.0, 2.0, 0.5), (12.0, 4.0, 0.1)])
def test_mmpp_has_the_stated_rate_and_dispersion(burstiness, peak, high):
    rates = {"a": 7.0, "b": 3.0}
    total = sum(rates.values())
    arrivals = mmpp_arrivals(
        rates, burstiness=burstiness, duration_s=40_000.0, peak_to_mean=peak, high_fraction=high, rng=11
    )
    for name, rate in arrivals.rates().items():
        # a category's stream has IDC(∞) = 1 + (λ_c/Λ)(D − 1), so its rate has standard error √(IDC λ_c / T)
        idc_c = 1 + rates[name] / total * (burstiness - 1)
        assert abs(rate - rates[name]) < Z * math.sqrt(idc_c * rates[name] / arrivals.duration_s)
    # IDC(w) at windows short and long against the switching rate checks Σ (the sojourns) as well as D
    switch = _switch_rate(total, burstiness, peak, high)
    for window in (1 / switch, 10 / switch):
        stated = 1 + (burstiness - 1) * (1 - (1 - math.exp(-switch * window)) / (switch * window))
        idc, se = _idc_by_segments(arrivals.times_s, arrivals.duration_s, window)
        assert abs(idc - stated) < Z * se, (window, idc, stated, se)
    assert stated > 0.85 * burstiness  # the long windows see nearly IDC(∞) = D


def test_mmpp_with_burstiness_one_is_poisson():
    a = mmpp_arrivals({"a": 2.0}, burstiness=1.0, n_requests=100, rng=4)
    b = poisson_arrivals({"a": 2.0}, n_requests=100, rng=np.random.default_rng(4))
    assert np.array_equal(a.times_s, b.times_s)


def test_mmpp_with_slow_modulation_and_short_duration_stays_small():
    arrivals = mmpp_arrivals({"a": 10.0}, burstiness=1000.0, duration_s=30.0, rng=0)
    assert arrivals.times_s.size < 2_000 and arrivals.duration_s == 30.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"burstiness": 0.5}, "burstiness >= 1"),
        ({"burstiness": 2.0, "peak_to_mean": 1.0}, "peak_to_mean > 1"),
        ({"burstiness": 2.0, "peak_to_mean": 3.0, "high_fraction": 0.5}, r"high_fraction in \(0, 1/peak_to_mean\]"),
    ],
)
def test_mmpp_refuses_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mmpp_arrivals({"a": 1.0}, n_requests=10, **kwargs)


# ---------------------------------------------------------------------------------------------- traces


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_trace_keeps_times_and_categories(tmp_path):
    path = _write(tmp_path, "t.tsv", "time_s\tcategory\n0.0\tb\n0.25\ta\n0.25\tb\n1.5\ta\n")
    arrivals = read_trace(path)
    assert arrivals.times_s.tolist() == [0.0, 0.25, 0.25, 1.5]
    assert arrivals.categories == ("a", "b")  # sorted when nothing fixes the order
    assert arrivals.category.tolist() == [1, 0, 1, 0]
    assert arrivals.duration_s == 1.5
    ordered = read_trace(path, categories=["b", "a", "c"])
    assert ordered.categories == ("b", "a", "c") and ordered.category.tolist() == [0, 1, 0, 1]


def test_csv_trace_with_iso_timestamps_and_a_mapping(tmp_path):
    path = _write(
        tmp_path,
        "t.csv",
        "timestamp,Challenge,Prompt\n"
        '2024-05-01T12:00:00Z,Writing & Symbols,"a sign, saying hi"\n'
        "2024-05-01T12:00:01.5Z,Simple Detail,a cat\n"
        "2024-05-01T14:00:02+02:00,Writing & Symbols,a logo\n",
    )
    mapping = {"column": "Challenge", "labels": {"simple": ["Simple Detail"], "text": ["Writing & Symbols"]}}
    arrivals = read_trace(path, mapping=mapping)
    assert arrivals.times_s.tolist() == [0.0, 1.5, 2.0]
    assert arrivals.categories == ("simple", "text")
    assert arrivals.category.tolist() == [1, 0, 1]


def test_parquet_trace(tmp_path):
    pandas = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "t.parquet"
    pandas.DataFrame({"time_s": [0.1, 0.2, 0.7], "category": ["x", "y", "x"]}).to_parquet(path)
    arrivals = read_trace(path)
    assert arrivals.times_s.tolist() == [0.1, 0.2, 0.7] and arrivals.category.tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r"t\.tsv: line 1: .*the file is empty"),
        ("time_s\tcategory\n", r"t\.tsv: rows: expected at least one request row"),
        ("when\tcategory\n1\ta\n", r"t\.tsv: time_s: expected a 'time_s' column .* or a 'timestamp' column"),
        ("time_s\tcategory\n0\ta\n2\ta\n1\ta\n", r"t\.tsv: time_s: .*row 3 \('1'\) is earlier than row 2 \('2'\)"),
        ("time_s\tcategory\n0\ta\nsoon\ta\n", r"t\.tsv: time_s: .*row 2 has 'soon'"),
        ("time_s\tcategory\n0\ta\n-1\ta\n", r"t\.tsv: time_s: .*row 2 has '-1'"),
        (
            "time_s\tcategory\n0\ta\n1\t\n2\t\n",
            r"t\.tsv: category: .*2 of 3 rows have no category \(the first is row 2",
        ),
        ("time_s\tlabel\n0\ta\n", r"t\.tsv: category: expected a 'category' column, but the columns are"),
        (
            "timestamp\tcategory\n2024-01-01T00:00:00Z\ta\n2024-01-01T00:00:01\ta\n",
            r"t\.tsv: timestamp: .*row 1 and row 2 differ",
        ),
        ("timestamp\tcategory\nyesterday\ta\n", r"t\.tsv: timestamp: expected an ISO-8601 datetime .* row 1"),
    ],
)
def test_malformed_traces_are_refused_naming_file_column_and_row(tmp_path, text, match):
    with pytest.raises(ArtifactError, match=match):
        read_trace(_write(tmp_path, "t.tsv", text))


def test_unlabelled_prompts_need_the_router(tmp_path):
    path = _write(tmp_path, "p.tsv", "time_s\tPrompt\n0\ta cat\n")
    with pytest.raises(ArtifactError, match=r"p\.tsv: Prompt: .*column 'Prompt'.*needs the prompt router"):
        read_trace(path)


def test_labels_the_mapping_does_not_claim_are_counted(tmp_path):
    path = _write(tmp_path, "t.tsv", "time_s\tChallenge\n0\tA\n1\tB\n2\tC\n3\tB\n")
    mapping = {"column": "Challenge", "labels": {"first": ["A"]}}
    with pytest.raises(
        ArtifactError, match=r"Challenge: .*\['A'\].*3 of 4 rows have no category \(the first is row 2: 'B'\)"
    ):
        read_trace(path, mapping=mapping)


def test_categories_outside_the_callers_list_are_counted(tmp_path):
    path = _write(tmp_path, "t.tsv", "time_s\tcategory\n0\ta\n1\tz\n")
    with pytest.raises(ArtifactError, match=r"category: expected a category among \['a'\].*1 of 2 rows have another"):
        read_trace(path, categories=["a"])


def test_non_utf8_trace_is_refused(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_bytes(b"time_s\tcategory\n0\t\xff\n")
    with pytest.raises(ArtifactError, match=r"t\.tsv: byte 18: not UTF-8"):
        read_trace(path)
