"""Seeding shared by the stages: every randomized library function takes ``rng=``."""

from __future__ import annotations

import numpy as np


def integer_seed(rng: int | np.random.Generator | None) -> int:
    """``rng`` as an integer seed: an integer is itself; a generator (or OS entropy, for None) draws one.

    For results whose documents record an integer seed: seeding from it reproduces them.
    """
    if isinstance(rng, (int, np.integer)):
        return int(rng)
    return int(np.random.default_rng(rng).integers(2**63))
