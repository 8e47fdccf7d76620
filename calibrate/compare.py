"""What changed between two calibration tables, cell by cell, with the uncertainty of each change.

Quality cells are compared with Welch's t-test on the two cells' Gaussians;
latency and energy coefficients with their least-squares standard errors; memory
peaks as they are. Which plan decisions the changes move is the planner's question, so
it is answered above this package (``genedge compare``), not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

from genedge.contract.table import CalibrationTable, EnergyModel, LatencyModel

__all__ = [
    "CoefficientChange",
    "MemoryChange",
    "QualityChange",
    "TableComparison",
    "compare_tables",
    "comparison_text",
    "welch_t",
]


@dataclass(frozen=True)
class QualityChange:
    """One (model, category, steps) cell in both tables.

    Attributes:
        diff: new mean − old mean (points).
        se: standard error of ``diff`` (points), None where a cell has n < 2.
        t, dof, p_value: Welch's t statistic, its Welch–Satterthwaite degrees of
            freedom and the two-sided p-value; None where ``se`` is.
    """

    model_key: str
    category: str
    steps: int
    old_mean: float
    new_mean: float
    old_n: int
    new_n: int
    diff: float
    se: float | None
    t: float | None
    dof: float | None
    p_value: float | None


@dataclass(frozen=True)
class CoefficientChange:
    """One coefficient of a model's latency line (``overhead_s``, ``per_step_s``) or energy line
    (``overhead_j``, ``per_step_j``) in both tables.

    Attributes:
        diff: new − old (s or J); ratio: new / old (None for a zero old value).
        se: √(se_old² + se_new²) (s or J), None where a table has no standard error.
        z, p_value: diff/se and its two-sided Normal p-value; None where ``se`` is.
    """

    model_key: str
    coefficient: str
    old: float
    new: float
    diff: float
    ratio: float | None
    se: float | None
    z: float | None
    p_value: float | None


@dataclass(frozen=True)
class MemoryChange:
    """A model's peak memory in both tables (bytes) and what each counts (its ``kind``)."""

    model_key: str
    old_bytes: int
    new_bytes: int
    old_kind: str
    new_kind: str


@dataclass(frozen=True)
class TableComparison:
    """Every change between two tables of the models and cells they share.

    Attributes:
        old_device, new_device: device names.
        quality: cell changes; empty where the CLIPScore conventions differ (scores
            under different conventions are not comparable; ``notes`` says so).
        latency, memory: per shared model.
        energy: per shared model with an energy line in both tables.
        only_old, only_new: model keys in one table only.
        notes: what was not compared and why.
    """

    old_device: str
    new_device: str
    quality: tuple[QualityChange, ...]
    latency: tuple[CoefficientChange, ...]
    memory: tuple[MemoryChange, ...]
    energy: tuple[CoefficientChange, ...]
    only_old: tuple[str, ...]
    only_new: tuple[str, ...]
    notes: tuple[str, ...]


def welch_t(
    mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int
) -> tuple[float, float, float, float] | None:
    """Welch's t-test of ``mean_b − mean_a`` from two cells' MLE fits.

    The cells store the MLE spread (ddof = 0), so the sample variance is
    s² = std²·n/(n−1) and the variance of a mean s²/n = std²/(n−1):

    .. math:: SE = \\sqrt{\\frac{\\sigma_a^2}{n_a-1} + \\frac{\\sigma_b^2}{n_b-1}}, \\quad
              t = \\frac{\\bar x_b - \\bar x_a}{SE}, \\quad
              \\nu = \\frac{SE^4}{\\frac{(\\sigma_a^2/(n_a-1))^2}{n_a-1} + \\frac{(\\sigma_b^2/(n_b-1))^2}{n_b-1}}

    Returns:
        ``(se, t, dof, two-sided p)``, or None where a cell has fewer than 2 images.
    """
    if n_a < 2 or n_b < 2:
        return None
    va, vb = std_a**2 / (n_a - 1), std_b**2 / (n_b - 1)
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    t = (mean_b - mean_a) / se
    return se, t, dof, float(2 * stats.t.sf(abs(t), dof))


def compare_tables(old: CalibrationTable, new: CalibrationTable) -> TableComparison:
    """Compare every model, cell, latency and energy coefficient and memory peak two tables share.

    Args:
        old, new: the tables (e.g. an old GPU and a new one, or two dates).

    Returns:
        The changes, in the old table's model and category order.
    """
    shared = [k for k in old.models if k in new.models]
    notes = []
    quality = []
    if old.clip_convention != new.clip_convention:
        notes.append(
            f"CLIPScore conventions differ ({old.clip_convention.backbone}/{old.clip_convention.pretrained} "
            f"vs {new.clip_convention.backbone}/{new.clip_convention.pretrained}): quality cells are not "
            f"comparable and are not compared"
        )
    else:
        for key in shared:
            a, b = old.models[key], new.models[key]
            for category in (c for c in old.categories if c in new.categories):
                for steps in (s for s in a.quality[category] if s in b.quality[category]):
                    ca, cb = a.quality[category][steps], b.quality[category][steps]
                    test = welch_t(ca.mean, ca.std, ca.n, cb.mean, cb.std, cb.n)
                    se, t, dof, p = test if test is not None else (None, None, None, None)
                    quality.append(
                        QualityChange(
                            key, category, steps, ca.mean, cb.mean, ca.n, cb.n, cb.mean - ca.mean, se, t, dof, p
                        )
                    )
    latency = [
        change
        for key in shared
        for change in _line_changes(key, old.models[key].latency, new.models[key].latency, "_s")
    ]
    energy = [
        change
        for key in shared
        if old.models[key].energy is not None and new.models[key].energy is not None
        for change in _line_changes(key, old.models[key].energy, new.models[key].energy, "_j")
    ]
    memory = tuple(
        MemoryChange(
            k,
            old.models[k].memory.peak_bytes,
            new.models[k].memory.peak_bytes,
            old.models[k].memory.kind,
            new.models[k].memory.kind,
        )
        for k in shared
    )
    return TableComparison(
        old_device=str(old.device.get("name")),
        new_device=str(new.device.get("name")),
        quality=tuple(quality),
        latency=tuple(latency),
        memory=memory,
        energy=tuple(energy),
        only_old=tuple(k for k in old.models if k not in new.models),
        only_new=tuple(k for k in new.models if k not in old.models),
        notes=tuple(notes),
    )


def _line_changes(
    key: str, old: LatencyModel | EnergyModel, new: LatencyModel | EnergyModel, unit: str
) -> list[CoefficientChange]:
    """The changes of a latency (``unit`` ``"_s"``) or energy (``"_j"``) line's two coefficients, with z-tests."""
    changes = []
    for coefficient in (f"overhead{unit}", f"per_step{unit}"):
        va, vb = getattr(old, coefficient), getattr(new, coefficient)
        se_name = coefficient.removesuffix(unit) + "_se" + unit
        sea, seb = getattr(old, se_name), getattr(new, se_name)
        se = math.hypot(sea, seb) if sea is not None and seb is not None and (sea or seb) else None
        z = (vb - va) / se if se else None
        p = None if z is None else float(2 * stats.norm.sf(abs(z)))
        changes.append(CoefficientChange(key, coefficient, va, vb, vb - va, vb / va if va else None, se, z, p))
    return changes


def comparison_text(comparison: TableComparison, *, alpha: float = 0.05) -> str:
    """Render a comparison; changes with p < ``alpha`` are marked ``*``."""

    def mark(p: float | None) -> str:
        return "*" if p is not None and p < alpha else " "

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    # Columns as wide as the longest model key (replica keys such as "replica:tiny-xl" are long).
    keys = [c.model_key for c in (*comparison.latency, *comparison.energy)] + [m.model_key for m in comparison.memory]
    keys += [q.model_key for q in comparison.quality]
    width = max([len("model"), *map(len, keys)]) + 2
    lines = [f"old: {comparison.old_device}   new: {comparison.new_device}   (* = p < {alpha})"]
    lines += [f"note: {note}" for note in comparison.notes]
    if comparison.only_old or comparison.only_new:
        lines.append(f"models only in old: {list(comparison.only_old)}; only in new: {list(comparison.only_new)}")
    lines += [
        "",
        "latency (s):",
        f"  {'model':<{width}}{'coefficient':<12}{'old':>10}{'new':>10}{'ratio':>8}{'diff':>10}{'se':>10}{'p':>9}",
    ]

    def coefficient_line(c: CoefficientChange) -> str:
        return (
            f"{mark(c.p_value)} {c.model_key:<{width}}{c.coefficient:<12}{c.old:>10.4g}{c.new:>10.4g}"
            f"{num(c.ratio, '.3f'):>8}{c.diff:>+10.4g}{num(c.se, '.2g'):>10}{num(c.p_value, '.2g'):>9}"
        )

    lines += [coefficient_line(c) for c in comparison.latency]
    if comparison.energy:
        lines += [
            "",
            "energy per image (J):",
            f"  {'model':<{width}}{'coefficient':<12}{'old':>10}{'new':>10}{'ratio':>8}{'diff':>10}{'se':>10}{'p':>9}",
        ]
        lines += [coefficient_line(c) for c in comparison.energy]
    lines += ["", "memory (GiB):"]
    lines += [
        f"  {m.model_key:<{width}}{m.old_bytes / 2**30:>8.3f} ({m.old_kind}) -> "
        f"{m.new_bytes / 2**30:.3f} ({m.new_kind})"
        for m in comparison.memory
    ]
    if comparison.quality:
        lines += [
            "",
            "quality (CLIPScore, Welch t):",
            f"  {'model':<{width}}{'category':<22}{'steps':>6}{'old':>9}{'new':>9}{'diff':>9}{'se':>8}{'p':>9}",
        ]
        for q in comparison.quality:
            lines.append(
                f"{mark(q.p_value)} {q.model_key:<{width}}{q.category:<22}{q.steps:>6}{q.old_mean:>9.3f}"
                f"{q.new_mean:>9.3f}{q.diff:>+9.3f}{num(q.se, '.3f'):>8}{num(q.p_value, '.2g'):>9}"
            )
    return "\n".join(lines)
