"""Multinomial logistic regression with an L2 penalty: the classifier of every router backend.

For features x_i (rows of X), classes y_i ∈ {0..K−1}, weights W (D × K) and intercepts b (K):

    p_i = softmax(x_i W + b)
    minimize  C · Σ_i −ln p_i[y_i]  +  ½ ‖W‖²      (the intercepts are not penalized)

scikit-learn's ``LogisticRegression(C=C)`` minimizes the same objective (the tests compare the two).
Solved with L-BFGS from zero, which is deterministic: the same data give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LogisticClassifier", "fit_logistic", "softmax"]


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of an (n, K) array, stable for large scores."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class LogisticClassifier:
    """Fitted weights: ``coef`` (D, K) and ``intercept`` (K,)."""

    coef: np.ndarray
    intercept: np.ndarray

    def __post_init__(self) -> None:
        if self.coef.ndim != 2 or self.intercept.shape != (self.coef.shape[1],):
            raise ValueError(
                f"Expected coef of shape (D, K) and intercept of shape (K,), but got {self.coef.shape} and "
                f"{self.intercept.shape}"
            )

    def predict_proba(self, *blocks: Any) -> np.ndarray:
        """Class probabilities, shape (n, K), of features: an (n, D) array or sparse matrix, or several
        whose columns, in order, make up the D. Each block multiplies its own rows of ``coef``, so a
        router never copies sparse and dense features into one matrix (building one costs more than
        the product, for one prompt).

        Raises:
            ValueError: the blocks' columns do not add up to D.
        """
        scores = np.zeros((blocks[0].shape[0], self.coef.shape[1])) + self.intercept
        start = 0
        for block in blocks:
            scores += np.asarray(block @ self.coef[start : start + block.shape[1]])
            start += block.shape[1]
        if start != self.coef.shape[0]:
            raise ValueError(f"Expected features of {self.coef.shape[0]} columns in all, but got {start}")
        return softmax(scores)


def fit_logistic(
    features: Any,
    labels: np.ndarray,
    n_classes: int,
    *,
    c: float = 10.0,
    ftol: float = 1e-12,
    gtol: float = 1e-6,
    max_iter: int = 5000,
) -> LogisticClassifier:
    """Fit the penalized multinomial logistic regression above.

    Args:
        features: (n, D) array or scipy sparse matrix.
        labels: class index of each row, shape (n,).
        n_classes: K.
        c: C, the inverse penalty strength.
        ftol: L-BFGS stops when an iteration lowers the objective by less than this share of it ...
        gtol: ... or when every gradient component is below this; the defaults agree with scikit-learn's
            solution at ``tol=1e-12`` to 1e-6 in probability on PartiPrompts.
        max_iter: L-BFGS's iteration limit.

    Raises:
        ValueError: labels out of range or not one per row, or C not > 0.
        RuntimeError: L-BFGS stopped without meeting either tolerance.
    """
    from scipy.optimize import minimize

    labels = np.asarray(labels)
    n, d = features.shape
    if labels.shape != (n,) or labels.size == 0 or labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"Expected {n} class indices in [0, {n_classes}), but got {labels!r:.80}")
    if not c > 0:
        raise ValueError(f"Expected C > 0, but got {c}")
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), labels] = 1.0
    features_t = features.T

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef = theta[: d * n_classes].reshape(d, n_classes)
        intercept = theta[d * n_classes :]
        scores = np.asarray(features @ coef) + intercept
        top = scores.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(scores - top).sum(axis=1))
        value = c * float((log_norm - scores[np.arange(n), labels]).sum()) + 0.5 * float((coef * coef).sum())
        residual = c * (np.exp(scores - log_norm[:, None]) - onehot)
        grad_coef = np.asarray(features_t @ residual) + coef
        return value, np.concatenate([grad_coef.ravel(), residual.sum(axis=0)])

    result = minimize(
        loss,
        np.zeros(d * n_classes + n_classes),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "ftol": ftol, "gtol": gtol},
    )
    if not result.success:
        raise RuntimeError(f"logistic regression did not converge ({result.nit} L-BFGS iterations): {result.message}")
    return LogisticClassifier(coef=result.x[: d * n_classes].reshape(d, n_classes), intercept=result.x[d * n_classes :])
