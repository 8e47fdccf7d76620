"""Random planning problems with realistic structure, for benchmarks and tests.

Models differ in speed and quality the way diffusion families do: a faster
model scores lower on average, categories shift every model's scores, and
quality saturates with steps as a − b·exp(−s/κ).
"""

from __future__ import annotations

import numpy as np

from genedge.optimizer.problem import Problem

__all__ = ["synthetic_problem"]

DEFAULT_STEP_GRID = (10, 15, 20, 25, 30, 40, 50)


def synthetic_problem(
    n_models: int,
    n_categories: int,
    n_requests: int,
    *,
    budget: float = 1.0,
    weight: float = 0.05,
    step_grid: tuple[int, ...] = DEFAULT_STEP_GRID,
    rng: int | np.random.Generator | None = None,
) -> Problem:
    """Draw a problem with ``n_models`` models, ``n_categories`` categories and ``n_requests`` requests.

    Per-step time is drawn log-uniformly in [15, 150] ms with 0.05–0.3 s overhead;
    mean CLIPScore at 50 steps grows with per-step time (slower models are
    better, with noise), categories add offsets of a few points, σ is 2.5–4.5.
    """
    gen = np.random.default_rng(rng)
    grid = np.asarray(step_grid, dtype=int)
    per_step = np.exp(gen.uniform(np.log(0.015), np.log(0.15), n_models))
    overhead = gen.uniform(0.05, 0.3, n_models)
    base = 30 + 2.0 * np.log(per_step / 0.015) + gen.normal(0, 0.5, n_models)
    offset = gen.normal(0, 2.0, n_categories)
    affinity = gen.normal(0, 0.7, (n_categories, n_models))
    drop = gen.uniform(0.1, 0.25, n_models)  # fraction of the score lost at very few steps
    kappa = gen.uniform(6, 14, n_models)
    means, stds, service = [], [], []
    for m in range(n_models):
        top = base[m] + offset[:, None] + affinity[:, m : m + 1]
        shape = (1 - drop[m] * np.exp(-grid / kappa[m])) / (1 - drop[m] * np.exp(-grid[-1] / kappa[m]))
        means.append(top * shape[None, :])
        stds.append(np.repeat(gen.uniform(2.5, 4.5, (n_categories, 1)), grid.size, axis=1))
        service.append(overhead[m] + per_step[m] * grid)
    counts = gen.dirichlet(np.ones(n_categories) * 2) * n_requests
    counts = np.maximum(np.round(counts), 1.0)
    return Problem(
        models=tuple(f"model{m}" for m in range(n_models)),
        categories=tuple(f"category{c}" for c in range(n_categories)),
        counts=counts,
        steps=tuple(grid.copy() for _ in range(n_models)),
        quality_mean=tuple(means),
        quality_std=tuple(stds),
        service_s=tuple(service),
        default_step_index=tuple(grid.size - 1 for _ in range(n_models)),
        memory_bytes=np.full(n_models, 4 * 2**30, dtype=float),
        budget=budget,
        weight=weight,
    )
