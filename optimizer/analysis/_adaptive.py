r"""Which measurement would make a plan surer: the next (model, category, steps) cell to profile.

After a first batch of images in every cell, each candidate cell j is scored by the expected regret
the plan would keep if j were measured with ``batch`` more images: the bootstrap's draws of j's
mean shrink by the factor its standard error would shrink, σ_j·√(1/(n_j+k)) / SE_j (a derived
cell's width becomes that of k measured images), and the expected regret
E[max_plan U(θ) − U(plan; θ)] is recomputed on the same draws. The cell of largest reduction is
measured next. Profiling stops when every routing, steps and deployment decision of the plan is
the sample optimum's with probability at least the target and every candidate cell holds the images
from which such probabilities were checked as frequencies (:data:`FREQUENCY_CHECKED_IMAGES`; with
fewer, the bootstrap's claims ran high: until then the cells short of them are measured, by the same
ranking), when (optionally) the expected regret is small enough to leave a near-tie undecided, or when
the budget of images is spent.

:func:`next_batch` decides one step; the command line (``genedge autoprofile``) measures, refits the
table and asks again; ``benchmarks/adaptive_profiling.py`` runs the same loop on ground truth.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from genedge.optimizer.analysis._table_parameters import DEFAULT_SAMPLES, ParameterModel, draw_parameters
from genedge.optimizer.analysis._uncertainty import (
    FREQUENCY_CHECKED_IMAGES,
    Assessment,
    Decision,
    assess_on,
    bootstrap,
)

__all__ = ["DEFAULT_TARGET", "CellValue", "BatchDecision", "next_batch"]

#: The decision confidence adaptive profiling stops at by default.
DEFAULT_TARGET = 0.95


@dataclass(frozen=True)
class CellValue:
    """What measuring one cell with ``images`` more images is expected to buy.

    Attributes:
        model, category, steps: the cell.
        n: images it holds now (0: derived).
        images: the batch it would get.
        regret_after: the plan's expected regret with the cell's error shrunk accordingly (points).
        reduction: the current expected regret minus ``regret_after`` (points).
    """

    model: str
    category: str
    steps: int
    n: int
    images: int
    regret_after: float
    reduction: float


@dataclass(frozen=True)
class BatchDecision:
    """One step of adaptive profiling: where the plan stands, and what to measure next (or why stop).

    Attributes:
        assessment: how sure the current plan is.
        confidence: the smallest probability of any of its decisions (:attr:`Assessment.min_confidence`).
        images: images measured so far (Σ n over the candidate cells).
        stop: why to stop (target reached, budget spent), or None to go on.
        ranking: every candidate cell's value, best first (empty when stopping).
    """

    assessment: Assessment
    confidence: float
    images: int
    stop: str | None
    ranking: tuple[CellValue, ...]

    @property
    def choice(self) -> CellValue | None:
        """The cell to measure next, or None when stopping."""
        return self.ranking[0] if self.ranking and self.stop is None else None

    def to_dict(self) -> dict[str, object]:
        """The decision as one line of an adaptive run's log (JSON types)."""
        a = self.assessment
        return {
            "images": self.images,
            "confidence": self.confidence,
            "plan_probability": a.plan_probability,
            "expected_regret": a.expected_regret,
            "expected_regret_mc_se": a.regret_mc_se,
            "stop": self.stop,
            "choice": None if self.choice is None else dataclasses.asdict(self.choice),
            "ranking": [dataclasses.asdict(v) for v in self.ranking[:5]],
        }


def next_batch(
    model: ParameterModel,
    plan: Decision,
    *,
    batch: int,
    budget: int,
    target: float = DEFAULT_TARGET,
    max_regret: float | None = None,
    min_images: int = FREQUENCY_CHECKED_IMAGES,
    samples: int = DEFAULT_SAMPLES,
    rng: int | np.random.Generator | None = 0,
) -> BatchDecision:
    """Decide whether to stop, and which cell to measure next with ``batch`` images.

    Args:
        model: the uncertain parameters of the plan's problem (the table fitted so far).
        plan: the plan on the table's estimates.
        batch: images per measured batch.
        budget: the most images (over all cells) to spend.
        target: stop when every decision's probability reaches this.
        max_regret: also stop once the plan's expected regret is at most this (points): a near-tie
            that no affordable number of images decides costs little either way.
        min_images: the target counts once every candidate cell holds this many images (module doc).
        samples, rng: of the bootstrap.

    Raises:
        ValueError: a target outside (0, 1] or a batch < 1.
    """
    if not 0 < target <= 1:
        raise ValueError(f"Expected a target confidence in (0, 1], but got {target}")
    if batch < 1:
        raise ValueError(f"Expected a batch of at least 1 image, but got {batch}")
    draws = draw_parameters(model, samples, rng=rng)
    boot = bootstrap(model, draws)
    assessment = assess_on(boot, plan)
    cells = model.cells()
    images = sum(model.parameters[j].n for j in cells)
    confidence = assessment.min_confidence
    stop = None
    regret = assessment.expected_regret
    short = [j for j in cells if model.parameters[j].n < min_images]
    if confidence >= target and not short:
        stop = (
            f"target reached: every decision's probability is at least {target:g} (smallest {confidence:.3f}), "
            f"every cell has at least {min_images} images"
        )
    elif max_regret is not None and regret <= max_regret:
        stop = f"regret small enough: the expected regret {regret:.4f} is at most {max_regret:g} points"
    elif images + batch > budget:
        stop = f"budget spent: {images} of {budget} images measured, a batch of {batch} would exceed it"
    if stop is not None:
        return BatchDecision(assessment, confidence, images, stop, ())
    values = []
    for j in short if confidence >= target else cells:
        p = model.parameters[j]
        after_se = p.std / math.sqrt(max(p.n + batch - 1, 1))
        factor = min(1.0, after_se / p.se) if p.se > 0 else 1.0
        after = float(bootstrap(model, draws.shrunk(j, factor)).regret(plan).mean())
        values.append(
            CellValue(
                model=p.model,
                category=p.category,
                steps=int(p.steps),
                n=p.n,
                images=batch,
                regret_after=after,
                reduction=regret - after,
            )
        )
    # Largest reduction first; among equals the cell with fewest images (then the table's order).
    order = sorted(range(len(values)), key=lambda i: (-round(values[i].reduction, 12), values[i].n, i))
    return BatchDecision(assessment, confidence, images, None, tuple(values[i] for i in order))
