r"""Model assignment rules: which model serves which prompt category, with what probability.

* :func:`probabilistic_assignment` — the rule of Gao et al. (arXiv 2409.09072):
  from each category's fitted CLIPScore Gaussians, route a category-c request to
  model m with the probability that m's score is the highest,

  .. math:: p_{cm} = \int \phi\!\left(\tfrac{x-\mu_{mc}}{\sigma_{mc}}\right)\tfrac{1}{\sigma_{mc}}
            \prod_{j \ne m} \Phi\!\left(\tfrac{x-\mu_{jc}}{\sigma_{jc}}\right) dx,

  so categories where a cheap model scores nearly as well share their load with
  it, and categories where one model clearly wins go to that model.
* :func:`direct_assignment` — each category to the model with the highest mean.
* :func:`uniform_assignment` — each request to a uniformly random model.
* :func:`price_directed_assignment` — genedge's rule: the routing that maximizes
  utility for fixed steps, solved exactly on a convex relaxation of the delay.
* :func:`polish_requests` — a local search on the exact (unrelaxed) utility.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from genedge.optimizer.problem import Problem
from genedge.optimizer.system import utility_with_optimal_shares

__all__ = [
    "probabilistic_assignment",
    "direct_assignment",
    "uniform_assignment",
    "price_directed_assignment",
    "polish_requests",
]

# Quadrature for P(best): points over [min μ − 8σ, max μ + 8σ]; the integrand is smooth,
# so this grid puts the error far below the 1e-6 that routing probabilities are reported to.
_QUADRATURE_POINTS = 2001
_TAIL_SIGMAS = 8.0
# Line search of polish_requests: a coarse grid over the movable amount, then a fine one around its best.
_POLISH_GRID = 33
_POLISH_PASSES = 4


def probabilistic_assignment(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """P(model m gives the highest CLIPScore) per category, the paper's routing.

    Args:
        mean: μ[c, m], shape (C, M).
        std: σ[c, m] > 0, shape (C, M).

    Returns:
        p[c, m], rows summing to 1.
    """
    lo = (mean - _TAIL_SIGMAS * std).min(axis=1, keepdims=True)
    hi = (mean + _TAIL_SIGMAS * std).max(axis=1, keepdims=True)
    x = lo + (hi - lo) * np.linspace(0.0, 1.0, _QUADRATURE_POINTS)[None, :]  # (C, X)
    z = (x[:, :, None] - mean[:, None, :]) / std[:, None, :]  # (C, X, M)
    log_cdf = norm.logcdf(z)
    others = log_cdf.sum(axis=2, keepdims=True) - log_cdf
    integrand = norm.pdf(z) / std[:, None, :] * np.exp(others)
    p = np.trapezoid(integrand, x[:, :, None], axis=1)
    return p / p.sum(axis=1, keepdims=True)


def direct_assignment(mean: np.ndarray) -> np.ndarray:
    """Each category entirely to the model with the highest mean score."""
    p = np.zeros_like(mean)
    p[np.arange(mean.shape[0]), mean.argmax(axis=1)] = 1.0
    return p


def uniform_assignment(n_categories: int, n_models: int) -> np.ndarray:
    """Each request to one of the models uniformly at random."""
    return np.full((n_categories, n_models), 1.0 / n_models)


def price_directed_assignment(problem: Problem, mean: np.ndarray, full_share_s: np.ndarray,
                              allowed: np.ndarray) -> tuple[np.ndarray, float]:
    r"""Utility-maximizing request routing for fixed steps, on a relaxation of the delay.

    With optimal shares the total delay is (Σ_m a_m √(N_m(N_m+1)))² / R with
    a_m = √((o_m + τ_m s_m)/2). Replacing √(N_m(N_m+1)) by its lower bound N_m
    gives a concave problem in the requests x[c, m],

    .. math:: \max_x\; \sum_{c,m} x_{cm}\mu_{cm} - \lambda \Bigl(\sum_m a_m N_m\Bigr)^2,
              \qquad \lambda = \frac{w}{R},

    whose dual, min over a delay price ν ≥ 0 of
    ν²/(4λ) + Σ_c n_c max_m (μ_cm − ν a_m), is one-dimensional and piecewise
    quadratic. It is solved exactly by walking the price breakpoints: each
    category goes to the model with the best quality minus priced delay, and at
    most the categories tied at the optimal price are split.

    Because √(N(N+1)) ≥ N, the returned relaxed value is an upper bound on the
    utility (times N) of every routing at these steps; the routing itself is
    feasible and is evaluated exactly by the caller.

    Args:
        problem: the problem (n, R, w).
        mean: μ[c, m] at the chosen steps, shape (C, M).
        full_share_s: o_m + τ_m s_m, shape (M,).
        allowed: models that may receive requests, shape (M,) bool.

    Returns:
        (x, bound): requests x[c, m] (rows summing to n_c) and the relaxed utility,
        an upper bound on U for any routing over the allowed models at these steps.
    """
    n = problem.counts
    lam = problem.weight / problem.budget
    a = np.sqrt(full_share_s / 2)
    value = np.where(allowed[None, :], mean, -np.inf)
    c_idx = np.arange(mean.shape[0])
    if lam == 0:
        x = np.zeros_like(mean)
        x[c_idx, value.argmax(axis=1)] = n
        return x, float((x * mean).sum() / problem.n_requests)

    cols = np.flatnonzero(allowed)
    i, j = np.triu_indices(cols.size, k=1)
    i, j = cols[i], cols[j]
    with np.errstate(divide="ignore", invalid="ignore"):
        crossings = (mean[:, i] - mean[:, j]) / (a[i] - a[j])
    crossings = crossings[np.isfinite(crossings) & (crossings > 0)]
    t = np.unique(np.concatenate([[0.0], crossings]))
    probes = np.append((t[:-1] + t[1:]) / 2, t[-1] + 1.0)  # one price inside each segment
    choice = (value[None, :, :] - probes[:, None, None] * a[None, None, :]).argmax(axis=2)  # (K, C)
    slope = (n[None, :] * a[choice]).sum(axis=1)  # S_k = Σ_c n_c a_{choice}
    right = np.append(t[1:], np.inf)
    k = int(np.argmax(right / (2 * lam) - slope >= 0))  # first segment whose right end has h(ν) ≥ 0
    x = np.zeros_like(mean)
    x[c_idx, choice[k]] = n
    if t[k] / (2 * lam) > slope[k] and k > 0:
        # The optimal price sits on breakpoint t[k]: move tied categories towards the
        # previous segment's (slower, better) models until Σ a_m N_m reaches ν*/(2λ).
        need = t[k] / (2 * lam) - slope[k]
        for c in np.flatnonzero(choice[k] != choice[k - 1]):
            old, new = choice[k, c], choice[k - 1, c]
            gain = n[c] * (a[new] - a[old])
            if need <= 0 or gain <= 0:
                continue
            theta = min(1.0, need / gain)
            x[c, old] -= theta * n[c]
            x[c, new] += theta * n[c]
            need -= theta * gain
    bound = ((x * mean).sum() - lam * ((a * x.sum(axis=0)).sum()) ** 2) / problem.n_requests
    return x, float(bound)


def polish_requests(problem: Problem, requests: np.ndarray, mean: np.ndarray, full_share_s: np.ndarray,
                    allowed: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Improve a routing on the exact utility.

    Two kinds of move, repeated until neither helps:

    * pairwise: for each category and ordered pair of models in use (i, j), the
      amount of category-c requests moved from i to j, searched on a coarse grid
      and then a fine one around its best;
    * retire: close one model and re-route its requests by
      :func:`price_directed_assignment` over the others. At small loads a model
      with few requests costs more delay than its quality is worth, and no single
      pairwise move can empty a model that serves several categories.

    Returns:
        (requests, utility, evaluations).
    """
    x = requests.copy()
    best = float(utility_with_optimal_shares(problem, x, full_share_s, mean))
    nfev = 1
    while True:
        x, best, evaluations = _pairwise_moves(problem, x, best, mean, full_share_s)
        nfev += evaluations
        retired = None
        for i in np.flatnonzero(x.sum(axis=0) > 0):
            remaining = allowed & (x.sum(axis=0) > 0)
            remaining[i] = False
            if not remaining.any():
                continue
            candidate, _ = price_directed_assignment(problem, mean, full_share_s, remaining)
            u = float(utility_with_optimal_shares(problem, candidate, full_share_s, mean))
            nfev += 1
            if u > best + 1e-12 * max(1.0, abs(best)):
                best, retired = u, candidate
        if retired is None:
            return x, best, nfev
        x = retired


def _pairwise_moves(problem: Problem, x: np.ndarray, best: float, mean: np.ndarray,
                    full_share_s: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Pairwise request moves between models in use (see :func:`polish_requests`)."""
    nfev = 0
    fractions = np.linspace(0.0, 1.0, _POLISH_GRID)
    for _ in range(_POLISH_PASSES):
        improved = False
        cols = np.flatnonzero(x.sum(axis=0) > 0)
        for c in range(x.shape[0]):
            for i in cols:
                for j in cols:
                    if i == j or x[c, i] <= 0:
                        continue
                    lo, hi = 0.0, x[c, i]
                    for _refine in range(2):
                        amounts = lo + (hi - lo) * fractions
                        batch = np.repeat(x[None], amounts.size, axis=0)
                        batch[:, c, i] -= amounts
                        batch[:, c, j] += amounts
                        u = utility_with_optimal_shares(problem, batch, full_share_s, mean)
                        nfev += amounts.size
                        b = int(u.argmax())
                        step = (hi - lo) / (_POLISH_GRID - 1)
                        lo, hi = max(0.0, amounts[b] - step), min(x[c, i], amounts[b] + step)
                    if u[b] > best + 1e-12 * max(1.0, abs(best)):
                        best = float(u[b])
                        x = np.maximum(batch[b], 0.0)
                        improved = True
        if not improved:
            break
    return x, best, nfev
