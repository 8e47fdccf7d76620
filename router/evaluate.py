"""How well a router puts prompts into categories: stratified k-fold cross-validation.

A :class:`ClassificationReport` is built from a confusion matrix ``confusion[t, p]`` (prompts of
true category t predicted as p), with the usual formulas:

- accuracy = Σ_t confusion[t, t] / Σ confusion;
- precision_p = confusion[p, p] / Σ_t confusion[t, p]; recall_t = confusion[t, t] / Σ_p confusion[t, p];
- F1 = 2·P·R / (P + R) per category (0 where P + R = 0), macro-F1 their unweighted mean;
- a category never predicted has precision 0 (scikit-learn's ``zero_division=0``).

The same confusion matrix, read by column, is what planning needs: P(true t | predicted p).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ClassificationReport", "majority_baseline", "plot_confusion", "stratified_folds"]


@dataclass(frozen=True)
class ClassificationReport:
    """Classification figures from a confusion matrix (see the module docstring).

    Attributes:
        categories: category names, the confusion matrix's row and column order.
        confusion: counts, shape (K, K), rows true, columns predicted.
    """

    categories: tuple[str, ...]
    confusion: np.ndarray

    def __post_init__(self) -> None:
        k = len(self.categories)
        if self.confusion.shape != (k, k) or (self.confusion < 0).any() or self.confusion.sum() <= 0:
            raise ValueError(f"Expected a ({k}, {k}) confusion matrix of counts with a positive sum")

    @classmethod
    def from_predictions(
        cls, categories: Sequence[str], truth: np.ndarray, predicted: np.ndarray
    ) -> ClassificationReport:
        """The report of predicted category indices against true ones."""
        k = len(categories)
        confusion = np.zeros((k, k), dtype=int)
        np.add.at(confusion, (np.asarray(truth), np.asarray(predicted)), 1)
        return cls(tuple(categories), confusion)

    @property
    def support(self) -> np.ndarray:
        """Prompts per true category."""
        return self.confusion.sum(axis=1)

    @property
    def accuracy(self) -> float:
        """Share of prompts put in their true category."""
        return float(np.trace(self.confusion) / self.confusion.sum())

    @property
    def precision(self) -> np.ndarray:
        """Per predicted category: the share of its prompts that truly belong to it (0 if never predicted)."""
        predicted = self.confusion.sum(axis=0)
        return np.divide(np.diag(self.confusion), predicted, out=np.zeros(len(predicted)), where=predicted > 0)

    @property
    def recall(self) -> np.ndarray:
        """Per true category: the share of its prompts predicted as it."""
        return np.diag(self.confusion) / np.maximum(self.support, 1)

    @property
    def f1(self) -> np.ndarray:
        """Per category: the harmonic mean of precision and recall (0 where both are 0)."""
        p, r = self.precision, self.recall
        return np.divide(2 * p * r, p + r, out=np.zeros(len(p)), where=(p + r) > 0)

    @property
    def macro_f1(self) -> float:
        """The unweighted mean of the per-category F1."""
        return float(self.f1.mean())

    def served_mix(self) -> dict[str, dict[str, float]]:
        """P(true category | predicted category), from the columns of the confusion matrix.

        A category the router never predicted keeps its own label (its column is empty, so nothing
        is known of its errors; it receives no routed prompts in this evaluation either).
        """
        mix = {}
        for p, predicted in enumerate(self.categories):
            column = self.confusion[:, p].astype(float)
            if column.sum() == 0:
                mix[predicted] = {predicted: 1.0}
            else:
                mix[predicted] = {t: float(n / column.sum()) for t, n in zip(self.categories, column) if n > 0}
        return mix

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (the confusion matrix and the figures derived from it)."""
        return {
            "categories": list(self.categories),
            "confusion": self.confusion.astype(int).tolist(),
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "precision": dict(zip(self.categories, self.precision.tolist())),
            "recall": dict(zip(self.categories, self.recall.tolist())),
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> ClassificationReport:
        """A report from :meth:`to_dict`'s data (its derived figures are recomputed)."""
        return cls(tuple(document["categories"]), np.asarray(document["confusion"], dtype=int))


def stratified_folds(labels: np.ndarray, folds: int, rng: int | np.random.Generator | None) -> list[np.ndarray]:
    """Split row indices into ``folds`` test folds that keep each class's share.

    Each class's rows are shuffled with ``numpy.random.default_rng(rng)`` and dealt to the folds in
    turn, continuing from fold to fold across classes, so fold sizes differ by at most one.

    Raises:
        ValueError: fewer than 2 folds, or a class with fewer rows than folds.
    """
    labels = np.asarray(labels)
    if folds < 2:
        raise ValueError(f"Expected at least 2 folds, but got {folds}")
    classes, counts = np.unique(labels, return_counts=True)
    if (counts < folds).any():
        small = {str(c): int(n) for c, n in zip(classes, counts) if n < folds}
        raise ValueError(f"Expected at least {folds} prompts in every category for {folds}-fold CV, but got {small}")
    rng = np.random.default_rng(rng)
    members: list[list[int]] = [[] for _ in range(folds)]
    dealt = 0
    for cls in classes:
        rows = rng.permutation(np.flatnonzero(labels == cls))
        for row in rows:
            members[dealt % folds].append(int(row))
            dealt += 1
    return [np.sort(np.array(m, dtype=int)) for m in members]


def majority_baseline(
    categories: Sequence[str], labels: np.ndarray, folds: Sequence[np.ndarray]
) -> ClassificationReport:
    """The report of predicting, in each test fold, the most frequent category of its training folds."""
    labels = np.asarray(labels)

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        return np.full(test.size, np.bincount(labels[train], minlength=len(categories)).argmax())

    return ClassificationReport.from_predictions(
        categories, labels, cross_validated_predictions(labels, folds, fit_predict)
    )


def cross_validated_predictions(
    labels: np.ndarray, folds: Sequence[np.ndarray], fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """Each row's prediction by a model fitted on the other folds: ``fit_predict(train, test)`` returns
    the predicted class indices of the ``test`` rows."""
    predicted = np.empty_like(np.asarray(labels))
    for test in folds:
        train = np.setdiff1d(np.arange(len(labels)), test)
        predicted[test] = fit_predict(train, test)
    return predicted


def plot_confusion(reports: Mapping[str, ClassificationReport], path: str) -> Any:
    """A figure with one panel per report: the confusion matrix as shares of each true category, with
    counts written in the cells; saved to ``path`` (PNG or SVG by its suffix)."""
    import matplotlib.pyplot as plt

    from genedge.contract.files import write_figure

    fig, axes = plt.subplots(1, len(reports), figsize=(4.2 * len(reports), 4.0), squeeze=False)
    for ax, (name, report) in zip(axes[0], reports.items()):
        shares = report.confusion / np.maximum(report.confusion.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        k = len(report.categories)
        for t in range(k):
            for p in range(k):
                ax.text(
                    p, t, str(int(report.confusion[t, p])), ha="center", va="center",
                    color="white" if shares[t, p] > 0.5 else "black", fontsize=9,
                )  # fmt: skip
        ax.set_xticks(range(k), report.categories, rotation=30, ha="right")
        ax.set_yticks(range(k), report.categories)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name}\naccuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f}", fontsize=10)
    fig.tight_layout()
    write_figure(fig, path)
    plt.close(fig)
    return path
