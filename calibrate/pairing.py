"""Which quality cells were measured on the same images' prompts and seeds, and how their means correlate.

A profile scores every model and step count on the same prompts with the same seeds. Two cells of a
category then share images: the pair (prompt, seed) names one image of each. Their per-image scores
correlate because a prompt's difficulty is the prompt's, whichever model draws it, so the cells' means
err together and the bootstrap must draw them jointly (:class:`~genedge.contract.table.PairedCells`).

For cells a and b with n_a and n_b images, of which k_ab share a (prompt, seed), and r_ab the
correlation of their scores over the shared images,

.. math:: \\operatorname{corr}(\\bar x_a, \\bar x_b) = r_{ab} \\, k_{ab} / \\sqrt{n_a n_b},

exact for cells whose images are drawn independently apart from the shared ones, each pair's
covariance r_ab σ_a σ_b. Fewer than :data:`MIN_SHARED_IMAGES` shared images give no correlation (0).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Mapping

import numpy as np

from genedge.contract.table import PairedCells

__all__ = ["MIN_SHARED_IMAGES", "Cell", "paired_cells"]

#: Images two cells must share for their correlation to be estimated (with fewer it is taken as 0).
MIN_SHARED_IMAGES = 3

#: A quality cell's address: (model key, category, steps).
Cell = tuple[str, str, int]


def paired_cells(scores: Mapping[Cell, Mapping[Hashable, float]]) -> tuple[PairedCells, ...]:
    """The paired cells of each category, from every cell's scores keyed by image (e.g. (prompt id, seed)).

    A category is listed where two or more of its cells share images with a nonzero correlation; its
    cells are those that pair with another, in the order of ``scores``.
    """
    by_category: dict[str, list[Cell]] = {}
    for cell in scores:
        by_category.setdefault(cell[1], []).append(cell)
    out = []
    for category, cells in by_category.items():
        correlation = np.eye(len(cells))
        for a, b in itertools.combinations(range(len(cells)), 2):
            correlation[a, b] = correlation[b, a] = _mean_correlation(scores[cells[a]], scores[cells[b]])
        paired = [i for i in range(len(cells)) if np.any(np.delete(correlation[i], i) != 0)]
        if len(paired) >= 2:
            matrix = correlation[np.ix_(paired, paired)]
            out.append(
                PairedCells(
                    category,
                    tuple((cells[i][0], cells[i][2]) for i in paired),
                    tuple(tuple(float(v) for v in row) for row in matrix),
                )
            )
    return tuple(out)


def _mean_correlation(a: Mapping[Hashable, float], b: Mapping[Hashable, float]) -> float:
    """corr of the two cells' means (module doc); 0 below :data:`MIN_SHARED_IMAGES` shared images or where
    either cell's shared scores do not vary."""
    shared = [key for key in a if key in b]
    if len(shared) < MIN_SHARED_IMAGES:
        return 0.0
    x = np.array([a[key] for key in shared], dtype=float)
    y = np.array([b[key] for key in shared], dtype=float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    r = float(np.corrcoef(x, y)[0, 1])
    return r * len(shared) / math.sqrt(len(a) * len(b))
