"""How well a router puts prompts into categories: stratified k-fold cross-validation.

A :class:`ClassificationReport` is built from a confusion matrix ``confusion[t, p]`` (prompts of
true category t predicted as p), with the usual formulas:

- accuracy = Σ_t confusion[t, t] / Σ confusion;
- precision_p = confusion[p, p] / Σ_t confusion[t, p]; recall_t = confusion[t, t] / Σ_p confusion[t, p];
- F1 = 2·P·R / (P + R) per category (0 where P + R = 0), macro-F1 their unweighted mean;
- a category never predicted has precision 0 (scikit-learn's ``zero_division=0``).

The same confusion matrix, read by column, is what planning needs: P(true t | predicted p).

The classifier's regularization C is chosen by nested cross-validation (:func:`nested_cross_validation`):
in each outer fold an inner stratified k-fold over the outer training rows alone picks C, and the
reported figures are the outer folds' predictions, so no test prompt helps choose the C that predicts it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "C_GRID",
    "ClassificationReport",
    "NestedCrossValidation",
    "choose_c",
    "majority_baseline",
    "nested_cross_validation",
    "plot_confusion",
    "stratified_folds",
]

#: The classifier's C values nested cross-validation chooses among: half-decades around the C = 3 … 10 that
#: PartiPrompts favours for both backends (TF-IDF scores lower at 100, embeddings lower from 30 on).
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)

#: ``fit_predict(train, test, c)``: the class indices that a model with C = ``c``, fitted on rows ``train``,
#: predicts for rows ``test``.
FitPredict = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


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
    labels: np.ndarray,
    folds: Sequence[np.ndarray],
    fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Each row's prediction by a model fitted on the other folds: ``fit_predict(train, test)`` returns
    the predicted class indices of the ``test`` rows.

    Args:
        labels: every row's class index.
        folds: the test folds (row indices), which together make up ``rows``.
        fit_predict: as above.
        rows: the rows cross-validated (default: all); the others are neither trained on nor predicted
            (their entries of the result are meaningless).
    """
    rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
    predicted = np.zeros_like(np.asarray(labels))
    for test in folds:
        predicted[test] = fit_predict(np.setdiff1d(rows, test), test)
    return predicted


def choose_c(
    labels: np.ndarray,
    rows: np.ndarray,
    folds: int,
    rng: int | Sequence[int] | np.random.Generator | None,
    fit_predict: FitPredict,
    c_grid: Sequence[float] = C_GRID,
) -> float:
    """The C of ``c_grid`` whose stratified k-fold cross-validation over ``rows`` alone has the highest
    macro-F1 (the first such C on ties: in :data:`C_GRID`, the stronger penalty). A one-value grid is
    returned without fitting.

    Macro-F1 rather than accuracy, so that C is not chosen for the two large categories alone.
    """
    if len(c_grid) == 1:
        return float(c_grid[0])
    rows = np.asarray(rows)
    inner = [rows[fold] for fold in stratified_folds(labels[rows], folds, rng)]
    names = [str(k) for k in range(int(labels.max()) + 1)]
    scores = []
    for c in c_grid:
        predicted = cross_validated_predictions(
            labels, inner, lambda train, test, c=c: fit_predict(train, test, c), rows
        )
        scores.append(ClassificationReport.from_predictions(names, labels[rows], predicted[rows]).macro_f1)
    return float(c_grid[int(np.argmax(scores))])


@dataclass(frozen=True)
class NestedCrossValidation:
    """What nested cross-validation found.

    Attributes:
        report: the outer folds' predictions against the truth.
        c_per_fold: the C chosen, by the inner cross-validation, for each outer fold (empty for a
            baseline without C).
        c_grid: the values C was chosen among (one: a fixed C; none: no C).
    """

    report: ClassificationReport
    c_per_fold: tuple[float, ...]
    c_grid: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """The outer folds' report as JSON-ready data, with the C chosen per outer fold and the grid."""
        return {**self.report.to_dict(), "c_per_fold": list(self.c_per_fold), "c_grid": list(self.c_grid)}


def nested_cross_validation(
    categories: Sequence[str],
    labels: np.ndarray,
    folds: int,
    seed: int,
    fit_predict: FitPredict,
    c_grid: Sequence[float] = C_GRID,
) -> NestedCrossValidation:
    """Stratified k-fold cross-validation whose every outer fold chooses C by an inner k-fold (:func:`choose_c`)
    over its own training rows, never its test rows.

    Args:
        categories: the class names, in label order.
        labels: each row's class index.
        folds: k, of the outer and the inner cross-validation.
        seed: the outer folds are ``stratified_folds(labels, folds, seed)``; outer fold i's inner folds
            draw from ``numpy.random.default_rng([seed, i + 1])``.
        fit_predict: fits on some rows with a C and predicts others (see :data:`FitPredict`).
        c_grid: the C values.

    Raises:
        ValueError: see :func:`stratified_folds` (a class with fewer rows than folds, outer or inner).
    """
    labels = np.asarray(labels)
    outer = stratified_folds(labels, folds, seed)
    chosen: list[float] = []
    predicted = np.empty_like(labels)
    for i, test in enumerate(outer):
        train = np.setdiff1d(np.arange(len(labels)), test)
        c = choose_c(labels, train, folds, np.random.default_rng([seed, i + 1]), fit_predict, c_grid)
        chosen.append(c)
        predicted[test] = fit_predict(train, test, c)
    report = ClassificationReport.from_predictions(categories, labels, predicted)
    return NestedCrossValidation(report, tuple(chosen), tuple(float(c) for c in c_grid))


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
