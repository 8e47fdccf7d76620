"""The fits behind a calibration table: CLIPScore Gaussians, quality-versus-steps curves, latency and energy lines.

Pure functions of arrays; :mod:`genedge.calibrate.build` applies them to profile
records. Each states its model and estimator.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from genedge.contract.table import CurveForm, QualityCell, Source, saturating_mean

__all__ = [
    "GOF_ALPHA",
    "MIN_CELL_SAMPLES",
    "MIN_CURVE_STEPS",
    "MIN_GOF_SAMPLES",
    "ZERO_SPREAD_STD",
    "MEASURED_QUALITY_REF",
    "MEASURED_QUALITY_SOURCE",
    "CurveFit",
    "LineFit",
    "QualityFit",
    "fit_line",
    "fit_quality",
    "fit_quality_curve",
]

logger = logging.getLogger(__name__)

#: A Normal needs two images for a spread; with one the cell cannot be fitted.
MIN_CELL_SAMPLES = 2
#: Shapiro–Wilk is defined from three samples on.
MIN_GOF_SAMPLES = 3
#: A cell whose goodness-of-fit p-value falls below this is flagged ``non_normal``.
GOF_ALPHA = 0.05
#: The std (points) a cell of identical scores carries, flagged ``zero_spread``.
ZERO_SPREAD_STD = 1e-3
#: The saturating curve has three parameters, so it needs at least three step counts.
MIN_CURVE_STEPS = 3
#: Bounds on the curve's step scale kappa, relative to the profiled steps: below a fraction of the
#: first profiled step the curve is a step function the cells cannot support, and above ten times
#: the last one it is a straight line.
_KAPPA_MIN_FRACTION = 0.25
_KAPPA_MAX_SPANS = 10.0
_KAPPA_GRID = 64

#: The ``sources`` key of a quality cell fitted by :func:`fit_quality` from images genedge measured, and its entry.
MEASURED_QUALITY_REF = "measured:quality"
MEASURED_QUALITY_SOURCE: dict[str, str] = {
    "kind": "measured",
    "rule": f"CLIPScore ~ Normal(mean, std) by maximum likelihood (scipy.stats.norm.fit; std is the ddof=0 "
    f"MLE) over the successful, scored images of each (model, category, steps); n images; gof is the "
    f"Shapiro-Wilk p-value (null below {MIN_GOF_SAMPLES} images, flag 'few_samples'; flag "
    f"'non_normal' below {GOF_ALPHA}). A cell needs at least {MIN_CELL_SAMPLES} images; a cell of "
    f"identical scores gets std = {ZERO_SPREAD_STD} and flag 'zero_spread'.",
}


@dataclass(frozen=True)
class QualityFit:
    """CLIPScore ~ Normal(mean, std²) fitted to one cell's scores.

    Attributes:
        mean: maximum-likelihood mean (points).
        std: maximum-likelihood standard deviation (points; ddof = 0, i.e. √(Σ(x−x̄)²/n)).
        n: number of scores.
        gof: Shapiro–Wilk p-value for normality, or None below :data:`MIN_GOF_SAMPLES` scores.
        flags: ``"few_samples"`` when n < :data:`MIN_GOF_SAMPLES`, ``"non_normal"`` when
            gof < :data:`GOF_ALPHA`, ``"zero_spread"`` when every score is equal (std is then
            :data:`ZERO_SPREAD_STD` and gof None).
    """

    mean: float
    std: float
    n: int
    gof: float | None
    flags: tuple[str, ...]

    def cell(self, source: Source = "measured", ref: str | None = None) -> QualityCell:
        """The table's cell of this fit (its standard errors follow from n); ``ref`` defaults to
        :data:`MEASURED_QUALITY_REF` for measured scores."""
        ref = MEASURED_QUALITY_REF if ref is None else ref
        return QualityCell(
            mean=self.mean, std=self.std, n=self.n, gof=self.gof, source=source, ref=ref, flags=self.flags
        )


def fit_quality(scores: Sequence[float] | np.ndarray) -> QualityFit:
    """Fit a Normal distribution to CLIPScores by maximum likelihood.

    .. math:: \\hat\\mu = \\frac1n\\sum_i x_i, \\qquad \\hat\\sigma = \\sqrt{\\frac1n\\sum_i (x_i-\\hat\\mu)^2}

    (``scipy.stats.norm.fit``). The MLE spread is the population form (ddof = 0); a
    sample SD (ddof = 1) is larger by √(n/(n−1)).

    Args:
        scores: CLIPScores of one (model, category, steps) cell, shape ``(n,)``, finite.

    Returns:
        The fit, with a Shapiro–Wilk p-value where n ≥ 3.

    Raises:
        ValueError: fewer than :data:`MIN_CELL_SAMPLES` scores.

    Example:
        >>> fit = fit_quality([30.0, 32.0, 34.0])
        >>> round(fit.mean, 3), round(fit.std, 3), fit.n
        (32.0, 1.633, 3)
    """
    x = np.asarray(scores, dtype=float)
    if x.size < MIN_CELL_SAMPLES:
        raise ValueError(f"Expected at least {MIN_CELL_SAMPLES} scores to fit a Normal, but got {x.size}")
    mean, std = stats.norm.fit(x)
    if not std > 0:
        # Identical scores (e.g. a random-weight CLIP clamping every image to 0) have no spread to
        # test; the table needs std > 0, so the cell carries a floor and says so.
        return QualityFit(mean=float(mean), std=ZERO_SPREAD_STD, n=int(x.size), gof=None, flags=("zero_spread",))
    gof = None if x.size < MIN_GOF_SAMPLES else float(stats.shapiro(x).pvalue)
    flags = ("few_samples",) if gof is None else ("non_normal",) if gof < GOF_ALPHA else ()
    return QualityFit(mean=float(mean), std=float(std), n=int(x.size), gof=gof, flags=flags)


@dataclass(frozen=True)
class CurveFit:
    """A quality-versus-steps curve for one (model, category), valid on ``valid_steps`` only.

    Attributes:
        form: ``"saturating_exp"`` (a, b, kappa, std set) or ``"linear_interpolation"``
            between the profiled cells (parameters None).
        valid_steps: ``(lo, hi)`` — the profiled range; never extrapolated.
        a, b, kappa: parameters of :func:`saturating_mean`.
        std: pooled spread √(Σ nᵢσᵢ² / Σ nᵢ) of the cells (points).
        reason: why the saturating form was not used, or None.
    """

    form: CurveForm
    valid_steps: tuple[int, int]
    a: float | None = None
    b: float | None = None
    kappa: float | None = None
    std: float | None = None
    reason: str | None = None


def fit_quality_curve(
    steps: Sequence[int], means: Sequence[float], stds: Sequence[float], ns: Sequence[int], *, label: str = ""
) -> CurveFit:
    """Fit mean CLIPScore versus steps with a saturating exponential, or say why not.

    Model: mean(s) = a − b·exp(−s/kappa), fitted by weighted least squares
    (``scipy.optimize.curve_fit`` with σᵢ = stdᵢ/√nᵢ, the standard error of each
    cell mean), kappa bounded to [min(steps)/4, 10 × max(steps)]. The curve answers only
    inside the profiled range ``[min(steps), max(steps)]``.

    With fewer than :data:`MIN_CURVE_STEPS` step counts (or when the fit fails)
    the result is ``linear_interpolation`` between cells, and a ``UserWarning``
    says so; there is never an extrapolation.

    Args:
        steps: profiled step counts, shape ``(k,)``, unique.
        means, stds, ns: the cells' fitted means, spreads and sizes at those steps.
        label: what the curve is of (e.g. ``"sd15/Basic"``), for the warning.

    Returns:
        The curve over the profiled range.
    """
    s = np.asarray(steps, dtype=float)
    order = np.argsort(s)
    s, m = s[order], np.asarray(means, dtype=float)[order]
    sd, n = np.asarray(stds, dtype=float)[order], np.asarray(ns, dtype=float)[order]
    valid = (int(s[0]), int(s[-1]))
    if s.size < MIN_CURVE_STEPS:
        return _interpolation(
            label,
            valid,
            f"only {s.size} step count(s) {[int(v) for v in s]} were profiled; the "
            f"saturating curve needs at least {MIN_CURVE_STEPS}; profile more step counts",
        )
    sigma = sd / np.sqrt(n)
    kappa_min, kappa_max = _KAPPA_MIN_FRACTION * float(s[0]), _KAPPA_MAX_SPANS * float(s[-1])
    try:
        with warnings.catch_warnings():
            # Three points and three parameters leave no covariance; only the parameters are used.
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            (a, b, kappa), _ = optimize.curve_fit(
                saturating_mean,
                s,
                m,
                p0=_curve_start(s, m, sigma, kappa_min, kappa_max),
                sigma=sigma,
                bounds=([-np.inf, -np.inf, kappa_min], [np.inf, np.inf, kappa_max]),
            )
    except (RuntimeError, ValueError) as err:
        return _interpolation(label, valid, f"the saturating fit failed ({err})")
    pooled = float(np.sqrt(np.sum(n * sd**2) / np.sum(n)))
    return CurveFit(form="saturating_exp", valid_steps=valid, a=float(a), b=float(b), kappa=float(kappa), std=pooled)


def _curve_start(
    s: np.ndarray, m: np.ndarray, sigma: np.ndarray, kappa_min: float, kappa_max: float
) -> tuple[float, float, float]:
    """Starting point for curve_fit: for a fixed kappa the model is linear in (a, b), so scan kappa.

    A poor start sends the non-linear fit to a far corner of the (a, b, kappa) space; solving
    the weighted linear problem on a log grid of kappa gives a start near the optimum.
    """
    best: tuple[float, tuple[float, float, float]] | None = None
    for kappa in np.geomspace(kappa_min, kappa_max, _KAPPA_GRID):
        design = np.column_stack([np.ones_like(s), -np.exp(-s / kappa)]) / sigma[:, None]
        (a, b), *_ = np.linalg.lstsq(design, m / sigma, rcond=None)
        cost = float(np.sum((design @ (a, b) - m / sigma) ** 2))
        if best is None or cost < best[0]:
            best = (cost, (float(a), float(b), float(kappa)))
    return best[1]


def _interpolation(label: str, valid: tuple[int, int], reason: str) -> CurveFit:
    warnings.warn(
        f"{label + ': ' if label else ''}quality-versus-steps curve falls back to linear interpolation "
        "between profiled cells on "
        f"{list(valid)} steps: {reason}.",
        UserWarning,
        stacklevel=3,
    )
    return CurveFit(form="linear_interpolation", valid_steps=valid, reason=reason)


@dataclass(frozen=True)
class LineFit:
    """A per-image quantity fitted as a line in the step count: ``value = intercept + slope · steps``.

    The latency line (seconds per image) and the energy line (joules per image) are both this fit.

    Attributes:
        intercept, slope: the line (unit, unit/step): the overhead and the per-step cost.
        intercept_se, slope_se: their standard errors (unit), None without residual
            degrees of freedom (and ``intercept_se`` None where the line was forced through 0).
        r2: coefficient of determination 1 − SS_res/SS_tot, None where SS_tot = 0.
        residual_std: √(SS_res/dof) (unit), None without residual degrees of freedom.
        n: number of measurements.
        constrained: True where the unconstrained intercept was negative and the
            line was refitted through the origin (intercept = 0).
    """

    intercept: float
    slope: float
    intercept_se: float | None
    slope_se: float | None
    r2: float | None
    residual_std: float | None
    n: int
    constrained: bool


def fit_line(
    steps: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    *,
    quantity: str = "latency",
    unit: str = "s",
) -> LineFit:
    """Fit a per-image quantity (seconds, joules) as a line in the step count by least squares.

    .. math:: y_i = o + \\tau s_i + \\varepsilon_i, \\qquad
              (\\hat o, \\hat\\tau) = \\arg\\min \\sum_i (y_i - o - \\tau s_i)^2

    with standard errors from σ̂²(XᵀX)⁻¹, σ̂² = SS_res/(n−2). An overhead cannot be
    negative: where the unconstrained intercept is, the line is refitted through the
    origin (τ̂ = Σsᵢyᵢ/Σsᵢ²) and a warning says so.

    Args:
        steps: step count of each measured image, shape ``(n,)``.
        values: its measured quantity, shape ``(n,)``.
        quantity, unit: what is fitted, for messages (``"latency"``, ``"s"``; ``"energy"``, ``"J"``).

    Raises:
        ValueError: fewer than two distinct step counts (overhead and per-step cost
            cannot be told apart), or a non-positive fitted per-step cost.

    Example:
        >>> fit = fit_line([10, 20, 30], [1.5, 2.5, 3.5])
        >>> round(fit.intercept, 6), round(fit.slope, 6)
        (0.5, 0.1)
    """
    s = np.asarray(steps, dtype=float)
    t = np.asarray(values, dtype=float)
    if np.unique(s).size < 2:
        raise ValueError(
            f"Expected measurements at two or more step counts to separate the overhead from the per-step "
            f"{quantity}, but got only {sorted({int(v) for v in s})}"
        )
    x = np.column_stack([np.ones_like(s), s])
    (overhead, per_step), *_ = np.linalg.lstsq(x, t, rcond=None)
    constrained = overhead < 0
    if constrained:
        warnings.warn(
            f"The least-squares overhead is negative ({overhead:.4g} {unit}); refitting the {quantity} line "
            f"through the origin (overhead = 0). Measure more step counts or more images if this is "
            f"unexpected.",
            UserWarning,
            stacklevel=2,
        )
        x = x[:, 1:]
        overhead, per_step = 0.0, float(s @ t / (s @ s))
    if not per_step > 0:
        raise ValueError(f"Expected a per-step {quantity} > 0, but the fit gave {per_step:.4g} {unit}")
    residual = t - (overhead + per_step * s)
    ss_res = float(residual @ residual)
    ss_tot = float(((t - t.mean()) ** 2).sum())
    dof = s.size - x.shape[1]  # one parameter fewer when the line is forced through the origin
    residual_std = float(np.sqrt(ss_res / dof)) if dof > 0 else None
    se: list[float | None] = [None, None]
    if dof > 0:
        cov = np.linalg.inv(x.T @ x) * ss_res / dof
        diag = [float(v) for v in np.sqrt(np.diag(cov))]
        se = [None, diag[0]] if constrained else diag
    return LineFit(
        intercept=float(overhead),
        slope=float(per_step),
        intercept_se=se[0],
        slope_se=se[1],
        r2=1 - ss_res / ss_tot if ss_tot > 0 else None,
        residual_std=residual_std,
        n=int(s.size),
        constrained=bool(constrained),
    )
