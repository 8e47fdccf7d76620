"""The pure fits recover known parameters (fixed seeds, stated tolerances) and refuse what they cannot fit."""

from __future__ import annotations

import numpy as np
import pytest

from genedge.calibrate import fit_line, fit_quality, fit_quality_curve, saturating_mean
from genedge.calibrate.fit import ZERO_SPREAD_STD


def test_fit_quality_recovers_normal_parameters() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(31.5, 3.2, size=2000)
    fit = fit_quality(x)
    # Tolerance: 4 standard errors (σ/√n ≈ 0.072 for the mean, σ/√(2n) ≈ 0.051 for the std).
    assert fit.mean == pytest.approx(31.5, abs=4 * 3.2 / np.sqrt(2000))
    assert fit.std == pytest.approx(3.2, abs=4 * 3.2 / np.sqrt(2 * 2000))
    assert fit.n == 2000
    assert fit.gof is not None and fit.gof > 0.05
    assert fit.flags == ()


def test_fit_quality_is_the_ddof0_mle_not_the_sample_sd() -> None:
    x = np.array([27.0, 29.5, 31.0, 35.5, 30.0])
    fit = fit_quality(x)
    assert fit.mean == pytest.approx(x.mean(), rel=1e-12)
    assert fit.std == pytest.approx(x.std(ddof=0), rel=1e-9)
    assert fit.std * np.sqrt(5 / 4) == pytest.approx(x.std(ddof=1), rel=1e-9)


def test_fit_quality_flags_few_samples_and_non_normal() -> None:
    two = fit_quality([30.0, 31.0])
    assert two.gof is None and two.flags == ("few_samples",)
    skewed = fit_quality(np.random.default_rng(1).exponential(3.0, size=500) + 20)
    assert skewed.gof < 0.05 and skewed.flags == ("non_normal",)


def test_fit_quality_flags_identical_scores_with_a_floor_spread() -> None:
    fit = fit_quality([0.0, 0.0, 0.0])
    assert (fit.mean, fit.std, fit.gof, fit.flags) == (0.0, ZERO_SPREAD_STD, None, ("zero_spread",))


@pytest.mark.parametrize(
    ("scores", "match"),
    [
        ([30.0], r"Expected at least 2 scores to fit a Normal, but got 1"),
        ([], r"Expected at least 2 scores to fit a Normal, but got 0"),
    ],
)
def test_fit_quality_refuses_unfittable_cells(scores: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_quality(scores)


def test_fit_line_recovers_a_noisy_latency_line() -> None:
    rng = np.random.default_rng(2)
    steps = np.repeat([10, 20, 30, 40, 50], 120)
    total = 0.8 + 0.12 * steps + rng.normal(0, 0.02, size=steps.size)
    fit = fit_line(steps, total)
    # Tolerance: 4 standard errors of each coefficient, and the SEs themselves near their theory.
    assert abs(fit.intercept - 0.8) < 4 * fit.intercept_se
    assert abs(fit.slope - 0.12) < 4 * fit.slope_se
    assert fit.slope_se == pytest.approx(0.02 / np.sqrt(((steps - steps.mean()) ** 2).sum()), rel=0.1)
    assert fit.residual_std == pytest.approx(0.02, rel=0.1)
    assert fit.r2 > 0.999 and fit.n == 600 and not fit.constrained


def test_fit_line_needs_two_step_counts() -> None:
    with pytest.raises(ValueError, match=r"two or more step counts .*per-step energy, but got only \[20\]"):
        fit_line([20, 20, 20], [1.0, 1.1, 0.9], quantity="energy", unit="J")


def test_fit_line_never_reports_a_negative_overhead() -> None:
    with pytest.warns(UserWarning, match=r"overhead is negative \(.* J\); refitting the energy line"):
        fit = fit_line([10, 20, 30], [0.9, 2.0, 3.1], quantity="energy", unit="J")
    assert fit.constrained and fit.intercept == 0.0 and fit.intercept_se is None
    assert fit.slope == pytest.approx((10 * 0.9 + 20 * 2.0 + 30 * 3.1) / (100 + 400 + 900))


def test_fit_quality_curve_recovers_a_saturating_curve() -> None:
    steps = [5, 10, 20, 30, 50]
    means = saturating_mean(np.array(steps), 34.0, 8.0, 9.0)
    curve = fit_quality_curve(steps, means, [3.0] * 5, [50] * 5)
    assert curve.form == "saturating_exp" and curve.valid_steps == (5, 50)
    assert (curve.a, curve.b, curve.kappa) == pytest.approx((34.0, 8.0, 9.0), rel=1e-4)
    assert curve.std == pytest.approx(3.0)


def test_fit_quality_curve_with_two_step_counts_interpolates_and_says_so() -> None:
    with pytest.warns(
        UserWarning,
        match=r"m/Basic: quality-versus-steps curve falls back to linear interpolation "
        r"between profiled cells on \[10, 30\] steps: only 2 step count",
    ):
        curve = fit_quality_curve([10, 30], [30.0, 32.0], [3.0, 3.0], [20, 20], label="m/Basic")
    assert curve.form == "linear_interpolation" and curve.a is None and curve.valid_steps == (10, 30)
