"""Prompt routers: prompt text → probabilities over the categories of a category mapping.

Two backends share one classifier (:mod:`.logistic`) and differ in their features:

- ``tfidf``: TF-IDF of the prompt's words (:mod:`.tfidf`); numpy and scipy only, so it installs
  with the planner, and a router trained on PartiPrompts ships with genedge (``paper4-tfidf``);
- ``embedding``: sentence embeddings (:mod:`.embedding`), all-MiniLM-L6-v2 by default
  (``paper4-minilm`` ships too; it needs ``genedge[router]``).

Both append the prompt's length features (:mod:`.length`), which neither TF-IDF nor an embedding keeps.
The classifier's C is chosen by nested cross-validation among :data:`~.evaluate.C_GRID` (inner k-fold
macro-F1), unless given.

A router file is JSON: plain numbers and strings, never pickle. It holds the category mapping it
was trained under, the features (vocabulary and idf, or the embedding model's name and probe), the
length features' standardization, the classifier's weights, where its training prompts came from and
the C chosen, and the confusion matrix of its own nested stratified k-fold cross-validation, from which
plans take P(true category | predicted category).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genedge._seed import integer_seed
from genedge.contract.bounds import MAX_COUNT, MAX_ROUTER_WEIGHT
from genedge.contract.fields import FieldReader
from genedge.contract.files import ArtifactError, read_json, write_text_atomic
from genedge.contract.mappings import check_category_mapping, label_to_category
from genedge.contract.prompts import PROMPT_COLUMN, PromptTable
from genedge.router.embedding import DEFAULT_EMBEDDING_MODEL, SentenceEncoder
from genedge.router.evaluate import (
    C_GRID,
    ClassificationReport,
    NestedCrossValidation,
    choose_c,
    majority_baseline,
    nested_cross_validation,
    stratified_folds,
)
from genedge.router.length import LENGTH_FEATURES, LengthFeatures
from genedge.router.logistic import LogisticClassifier, fit_logistic
from genedge.router.tfidf import TfidfFeatures

__all__ = [
    "BACKENDS",
    "LENGTH_BASELINE",
    "ROUTER_FORMAT",
    "ROUTER_SCHEMA_VERSION",
    "PromptRouter",
    "RouterError",
    "cross_validate",
    "default_router",
    "default_router_path",
    "evaluate_backends",
    "labelled_prompts",
    "load_router",
    "router_from_dict",
    "train_router",
]

ROUTER_FORMAT = "genedge.router"
#: 2: the length features and the nested cross-validation's chosen C (1 had neither).
ROUTER_SCHEMA_VERSION = 2
#: Backend name → what its features are.
BACKENDS: dict[str, str] = {
    "tfidf": "TF-IDF of words + prompt length + logistic regression",
    "embedding": "sentence embeddings + prompt length + logistic regression",
}
#: The baseline that :func:`evaluate_backends` reports beside the backends: logistic regression on the
#: length features alone, in the same nested cross-validation.
LENGTH_BASELINE = "length"
#: The TF-IDF vocabulary: words (no n-grams) in at least 2 training prompts; bigrams scored lower in CV.
TFIDF_NGRAM_MAX = 1
TFIDF_MIN_DF = 2
#: Prompts per chunk of a prediction, the unit of its progress reports.
PREDICT_CHUNK = 1024


class RouterError(ArtifactError):
    """A router file is malformed, or does not fit what it is used with."""


class PromptRouter:
    """A trained router (see the module docstring).

    Attributes:
        name: the router's name (shipped routers are found by it).
        backend: one of :data:`BACKENDS`.
        mapping: the category mapping it routes into.
        categories: the mapping's categories, the order of every probability vector.
        classifier: the fitted weights: the backend's features' rows, then the length features' two.
        length: the length features' standardization.
        tfidf: the TF-IDF features (``tfidf`` backend), else None.
        embedding_model: the sentence-transformers model (``embedding`` backend), else None.
        probe: the first coordinates of the probe sentence's embedding (``embedding`` backend).
        training: provenance: the prompt file and its hash, rows per category, the C fitted and how it
            was chosen, seed, folds.
        cross_validation: the nested k-fold cross-validation's report (its confusion matrix feeds plans).
    """

    def __init__(
        self,
        *,
        name: str,
        backend: str,
        mapping: Mapping[str, Any],
        classifier: LogisticClassifier,
        length: LengthFeatures,
        training: Mapping[str, Any],
        cross_validation: ClassificationReport,
        tfidf: TfidfFeatures | None = None,
        embedding_model: str | None = None,
        probe: Sequence[float] | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"Expected a router backend in {list(BACKENDS)}, but got {backend!r}")
        if (backend == "tfidf") != (tfidf is not None) or (backend == "embedding") != (embedding_model is not None):
            raise ValueError(f"A {backend!r} router needs exactly the features of its backend")
        self.name = name
        self.backend = backend
        self.mapping = dict(mapping)
        self.categories = tuple(mapping["labels"])
        self.classifier = classifier
        self.length = length
        self.training = dict(training)
        self.cross_validation = cross_validation
        self.tfidf = tfidf
        self.embedding_model = embedding_model
        self.probe = None if probe is None else [float(v) for v in probe]
        self._encoder: Any = None

    def __repr__(self) -> str:
        return f"PromptRouter(name={self.name!r}, backend={self.backend!r}, categories={list(self.categories)})"

    def _features(self, prompts: Sequence[str], progress: Callable[[int], Any] | None) -> tuple[Any, np.ndarray]:
        """The backend's features and the length features: the classifier's two column blocks."""
        if self.tfidf is not None:
            matrix = self.tfidf.transform(prompts)
            if progress is not None:
                progress(len(prompts))
            return matrix, self.length.transform(prompts)
        return self.encoder().encode(prompts, progress), self.length.transform(prompts)

    def encoder(self) -> Any:
        """The embedding backend's :class:`~genedge.router.embedding.SentenceEncoder`, loaded on first
        use and checked against the router's probe.

        Raises:
            RouterError: the model gives other embeddings than the one the router was trained on.
        """
        if self._encoder is None:
            encoder = SentenceEncoder(self.embedding_model)
            expected = self.classifier.coef.shape[0] - self.length.dimension
            if encoder.dimension != expected:
                raise RouterError(
                    f"router {self.name!r}",
                    "classifier.coef",
                    f"the model {self.embedding_model!r} embeds in {encoder.dimension} dimensions, but the router's "
                    f"weights expect {expected}: train the router again on this model",
                )
            probe = encoder.probe()
            if self.probe is not None and (
                len(probe) != len(self.probe) or not np.allclose(probe, self.probe, atol=1e-4)
            ):
                raise RouterError(
                    f"router {self.name!r}",
                    "embedding.probe",
                    f"the model {self.embedding_model!r} embeds the probe sentence as {probe}, but the router was "
                    f"trained on a model that gave {self.probe}: train the router again on this model",
                )
            self._encoder = encoder
        return self._encoder

    def predict_proba(self, prompts: Sequence[str], progress: Callable[[int], Any] | None = None) -> np.ndarray:
        """P(category | prompt), shape (n, K) in :attr:`categories` order.

        Args:
            prompts: the prompt texts.
            progress: called with the number of prompts done after each chunk, if given.
        """
        if not prompts:
            return np.zeros((0, len(self.categories)))
        chunks = [
            self.classifier.predict_proba(*self._features(prompts[i : i + PREDICT_CHUNK], progress))
            for i in range(0, len(prompts), PREDICT_CHUNK)
        ]
        return np.concatenate(chunks)

    def route(
        self, prompts: Sequence[str], progress: Callable[[int], Any] | None = None
    ) -> tuple[list[str], np.ndarray]:
        """The most probable category of each prompt and its probability."""
        proba = self.predict_proba(prompts, progress)
        best = proba.argmax(axis=1)
        return [self.categories[i] for i in best], proba[np.arange(len(best)), best]

    def served_mix(self) -> dict[str, dict[str, float]]:
        """P(true category | routed to category), from the cross-validation's confusion matrix."""
        return self.cross_validation.served_mix()

    def fits_mapping(self, mapping: Mapping[str, Any]) -> bool:
        """Whether the router routes into exactly this mapping's categories (same column, same labels)."""
        return self.mapping["column"] == mapping["column"] and {
            c: sorted(labels) for c, labels in self.mapping["labels"].items()
        } == {c: sorted(labels) for c, labels in mapping["labels"].items()}

    def to_dict(self) -> dict[str, Any]:
        """The router as JSON-ready data."""
        features: dict[str, Any]
        if self.tfidf is not None:
            features = {"tfidf": self.tfidf.to_dict()}
        else:
            features = {"embedding": {"model": self.embedding_model, "probe": self.probe}}
        return {
            "format": ROUTER_FORMAT,
            "schema_version": ROUTER_SCHEMA_VERSION,
            "name": self.name,
            "backend": self.backend,
            "category_mapping": self.mapping,
            "categories": list(self.categories),
            **features,
            "length": self.length.to_dict(),
            "classifier": {
                "kind": "multinomial logistic regression",
                "coef": self.classifier.coef.tolist(),
                "intercept": self.classifier.intercept.tolist(),
            },
            "training": self.training,
            "cross_validation": self.cross_validation.to_dict(),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the router as JSON, atomically."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")


#: How a weight beyond :data:`MAX_ROUTER_WEIGHT` is described in errors.
_WEIGHTS = "weights (a fitted weight stays far below where exp() overflows)"


def _finite_matrix(
    r: FieldReader, value: Any, shape: tuple[int, ...], field: str, bound: float | None = None, what: str = _WEIGHTS
) -> np.ndarray:
    """``value`` as a float array of ``shape``, every entry finite (and of magnitude at most ``bound``, where given)."""
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError, OverflowError) as err:
        raise r.fail(field, f"expected numbers, but got {str(value)[:60]!r}") from err
    if array.shape != shape or not np.isfinite(array).all():
        raise r.fail(field, f"expected finite numbers of shape {shape}, but got shape {array.shape}")
    if bound is not None and array.size and np.abs(array).max() > bound:
        raise r.fail(
            field,
            f"expected {what} within ±{bound:g}, but got {array.flat[int(np.abs(array).argmax())]:g}",
        )
    return array


def _read_tfidf(r: FieldReader, raw: Any) -> TfidfFeatures:
    """The ``tfidf`` features: string terms, their finite idf weights, and the settings (integers >= 1)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("vocabulary"), list):
        raise r.fail("tfidf.vocabulary", "expected a list of terms")
    if not all(isinstance(t, str) for t in raw["vocabulary"]):
        raise r.fail("tfidf.vocabulary", "expected every term to be a string")
    for field in ("ngram_max", "min_df"):
        if not isinstance(raw.get(field), int) or raw[field] < 1:
            raise r.fail(f"tfidf.{field}", f"expected an integer >= 1, but got {raw.get(field)!r}")
    _finite_matrix(r, raw.get("idf"), (len(raw["vocabulary"]),), "tfidf.idf", MAX_ROUTER_WEIGHT)
    return TfidfFeatures.from_dict(raw)


def _read_embedding(r: FieldReader, raw: Any) -> tuple[str, list[float] | None]:
    """The ``embedding`` features: the model's name and its probe coordinates (or None)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), str) or not raw["model"]:
        raise r.fail("embedding.model", "expected the sentence-transformers model's name")
    if raw.get("probe") is None:
        return raw["model"], None
    return raw["model"], _finite_matrix(r, raw["probe"], (len(raw["probe"]),), "embedding.probe").tolist()


def _read_length(r: FieldReader, raw: Any) -> LengthFeatures:
    """The ``length`` features' standardization: the feature names, finite means and scales > 0."""
    if not isinstance(raw, dict) or raw.get("features") != list(LENGTH_FEATURES):
        raise r.fail("length.features", f"expected the length features {list(LENGTH_FEATURES)}")
    shape = (len(LENGTH_FEATURES),)
    _finite_matrix(r, raw.get("mean"), shape, "length.mean", MAX_ROUTER_WEIGHT)
    if not (_finite_matrix(r, raw.get("scale"), shape, "length.scale", MAX_ROUTER_WEIGHT) > 0).all():
        raise r.fail("length.scale", f"expected standard deviations > 0, but got {raw['scale']}")
    return LengthFeatures.from_dict(raw)


def _read_features(
    r: FieldReader, document: dict[str, Any], backend: str
) -> tuple[TfidfFeatures | None, str | None, list[float] | None, int]:
    """The backend's features: (TF-IDF or None, embedding model or None, probe or None, the classifier's
    rows: the features' and the length features'; an embedding's dimension is checked by the model on first use)."""
    if backend == "tfidf":
        tfidf = _read_tfidf(r, document.get("tfidf"))
        return tfidf, None, None, tfidf.dimension + len(LENGTH_FEATURES)
    embedding_model, probe = _read_embedding(r, document.get("embedding"))
    coef = document["classifier"].get("coef") if isinstance(document["classifier"], dict) else None
    return None, embedding_model, probe, (len(coef) if isinstance(coef, list) else -1)


def _read_confusion(r: FieldReader, cv: Any, categories: list[str]) -> np.ndarray:
    """The cross-validation's confusion matrix over ``categories``: counts >= 0 with a positive sum."""
    if not isinstance(cv, dict) or cv.get("categories") != categories:
        raise r.fail("cross_validation.categories", f"expected the mapping's categories {categories}")
    k = len(categories)
    confusion = _finite_matrix(r, cv.get("confusion"), (k, k), "cross_validation.confusion", MAX_COUNT, "counts")
    if (confusion < 0).any() or (confusion != np.round(confusion)).any() or confusion.sum() <= 0:
        raise r.fail("cross_validation.confusion", "expected counts >= 0 with a positive sum")
    return confusion.astype(int)


def router_from_dict(document: Any, where: str = "<router>") -> PromptRouter:
    """Validate a router document and build the router.

    Raises:
        RouterError: naming ``where`` and the field: another format or schema version, an empty
            name, an unknown backend, categories that are not the mapping's, weights of the wrong
            shape or beyond :data:`~genedge.contract.bounds.MAX_ROUTER_WEIGHT`, or a confusion
            matrix that is not counts.
    """
    r = FieldReader(where, RouterError)
    if not isinstance(document, dict) or document.get("format") != ROUTER_FORMAT:
        raise r.fail("format", f"expected a genedge router ({ROUTER_FORMAT!r})")
    if document.get("schema_version") != ROUTER_SCHEMA_VERSION:
        raise r.fail(
            "schema_version",
            f"expected {ROUTER_SCHEMA_VERSION}, but got {document.get('schema_version')!r} (a router of another "
            "genedge release: train it again with genedge router train)",
        )
    fields = ("name", "backend", "category_mapping", "categories", "length", "classifier", "training")
    for field in (*fields, "cross_validation"):
        if field not in document:
            raise r.fail(field, "missing field")
    name = r.name(document["name"], "name")
    backend = document["backend"]
    if backend not in BACKENDS:
        raise r.fail("backend", f"expected one of {list(BACKENDS)}, but got {backend!r}")
    mapping = check_category_mapping(document["category_mapping"], where, RouterError)
    categories = list(mapping["labels"])
    if document["categories"] != categories:
        raise r.fail(
            "categories", f"expected the mapping's categories {categories}, but got {document['categories']!r}"
        )
    tfidf, embedding_model, probe, dimension = _read_features(r, document, backend)
    length = _read_length(r, document["length"])
    classifier_doc = document["classifier"]
    if not isinstance(classifier_doc, dict):
        raise r.fail("classifier", "expected an object with coef and intercept")
    k = len(categories)
    classifier = LogisticClassifier(
        coef=_finite_matrix(r, classifier_doc.get("coef"), (dimension, k), "classifier.coef", MAX_ROUTER_WEIGHT),
        intercept=_finite_matrix(r, classifier_doc.get("intercept"), (k,), "classifier.intercept", MAX_ROUTER_WEIGHT),
    )
    confusion = _read_confusion(r, document["cross_validation"], categories)
    r.get(document, "training", "", dict)
    return PromptRouter(
        name=name,
        backend=backend,
        mapping=mapping,
        classifier=classifier,
        length=length,
        training=document["training"],
        cross_validation=ClassificationReport(tuple(categories), confusion),
        tfidf=tfidf,
        embedding_model=embedding_model,
        probe=probe,
    )


def load_router(name_or_path: str | os.PathLike[str]) -> PromptRouter:
    """Load a router: a JSON file, or the name of a shipped router (see :func:`genedge.data.shipped_routers`).

    Raises:
        ValueError: neither a file nor a shipped name.
        RouterError: the file is not a valid router (naming the field).
    """
    from genedge.data import resolve_router

    path = resolve_router(name_or_path)
    return router_from_dict(read_json(path, "a JSON genedge router", RouterError), str(path))


def default_router_path(mapping: Mapping[str, Any]) -> Path | None:
    """The file of the shipped TF-IDF router that routes into ``mapping`` (same column and labels), or None."""
    from genedge.data import shipped_routers

    for path in shipped_routers().values():
        router = load_router(path)
        if router.backend == "tfidf" and router.fits_mapping(mapping):
            return path
    return None


def default_router(mapping: Mapping[str, Any]) -> PromptRouter | None:
    """The shipped TF-IDF router that routes into ``mapping`` (same column and labels), or None."""
    path = default_router_path(mapping)
    return None if path is None else load_router(path)


def labelled_prompts(table: PromptTable, mapping: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The prompts of a prompt table whose label the mapping knows, and their categories.

    Raises:
        ArtifactError: the table lacks the prompt column or the mapping's column.
    """
    to_category = label_to_category(mapping)
    prompts, labels = table.column(PROMPT_COLUMN), table.column(mapping["column"])
    pairs = [(p, to_category[label]) for p, label in zip(prompts, labels) if label in to_category]
    return [p for p, _ in pairs], [c for _, c in pairs]


class _FeatureCache:
    """The features of the training prompts for a backend (or :data:`LENGTH_BASELINE`: length alone),
    fitted on a subset of rows where the featurization is itself learned (TF-IDF's vocabulary, the length
    features' standardization), fixed where it is not (embeddings, computed once)."""

    def __init__(self, kind: str, prompts: Sequence[str], embedding_model: str | None) -> None:
        self.kind = kind
        self.prompts = list(prompts)
        self.encoder = None
        self.embeddings = None
        if kind == "embedding":
            self.encoder = SentenceEncoder(embedding_model)
            self.embeddings = self.encoder.encode(self.prompts)

    def fit(self, rows: np.ndarray) -> tuple[tuple[TfidfFeatures | None, LengthFeatures], Any]:
        """((the fitted TF-IDF features or None, the length standardization), the feature matrix of ``rows``)."""
        texts = [self.prompts[i] for i in rows]
        tfidf = None
        if self.kind == "tfidf":
            tfidf = TfidfFeatures.fit(texts, ngram_max=TFIDF_NGRAM_MAX, min_df=TFIDF_MIN_DF)
        fitted = (tfidf, LengthFeatures.fit(texts))
        return fitted, self.transform(fitted, rows)

    def transform(self, fitted: tuple[TfidfFeatures | None, LengthFeatures], rows: np.ndarray) -> Any:
        tfidf, length = fitted
        texts = [self.prompts[i] for i in rows]
        if self.embeddings is not None:
            return length.append_to(self.embeddings[rows], texts)
        return length.append_to(None if tfidf is None else tfidf.transform(texts), texts)


def _fewest_prompts(folds: int, nested: bool) -> int:
    """The fewest prompts a category needs: one per fold, and with nested cross-validation one per inner
    fold among the outer training rows (an outer test fold holds at most ceil(n / folds) of them)."""
    n = folds
    while nested and n - -(-n // folds) < folds:
        n += 1
    return n


def _checked_labels(
    prompts: Sequence[str], categories: Sequence[str], mapping: Mapping[str, Any], folds: int, nested: bool
) -> np.ndarray:
    """Each prompt's category index in the mapping, after every check training needs."""
    names = list(mapping["labels"])
    if len(prompts) != len(categories):
        raise ValueError(f"Expected one category per prompt, but got {len(prompts)} prompts, {len(categories)} labels")
    unknown = sorted(set(categories) - set(names))
    if unknown:
        raise ValueError(f"Expected categories of the mapping {names}, but got {unknown}")
    labels = np.array([names.index(c) for c in categories], dtype=int)
    # Checked here rather than by the folds, which see only the categories that have prompts.
    per_category = np.bincount(labels, minlength=len(names))
    fewest = _fewest_prompts(folds, nested)
    if (per_category < fewest).any():
        small = {name: int(n) for name, n in zip(names, per_category) if n < fewest}
        how = "nested " if nested else ""
        raise ValueError(
            f"Expected at least {fewest} prompts in every category of the mapping for {how}{folds}-fold "
            f"cross-validation{' (or a fixed C)' if nested else ''}, but got {small}"
        )
    return labels


def _check_backend(backend: str, allowed: Sequence[str]) -> None:
    if backend not in allowed:
        raise ValueError(f"Expected a router backend in {list(allowed)}, but got {backend!r}")


def _fit_predict(features: _FeatureCache, labels: np.ndarray, n_classes: int) -> Any:
    """The ``fit_predict(train, test, c)`` of nested cross-validation on these features."""

    def fit_predict(train: np.ndarray, test: np.ndarray, c: float) -> np.ndarray:
        fitted, x_train = features.fit(train)
        classifier = fit_logistic(x_train, labels[train], n_classes, c=c)
        return classifier.predict_proba(features.transform(fitted, test)).argmax(axis=1)

    return fit_predict


def _c_grid(c: float | None) -> tuple[float, ...]:
    return C_GRID if c is None else (float(c),)


def _embedding_model(backend: str, embedding_model: str | None) -> str | None:
    return (embedding_model or DEFAULT_EMBEDDING_MODEL) if backend == "embedding" else None


def cross_validate(
    prompts: Sequence[str],
    categories: Sequence[str],
    mapping: Mapping[str, Any],
    backend: str,
    *,
    folds: int = 5,
    rng: int | np.random.Generator | None = 0,
    c: float | None = None,
    embedding_model: str | None = None,
) -> NestedCrossValidation:
    """Nested stratified k-fold cross-validation of a backend (or :data:`LENGTH_BASELINE`) on labelled prompts.

    Args:
        prompts, categories, mapping, embedding_model: as for :func:`train_router`.
        backend: one of :data:`BACKENDS`, or :data:`LENGTH_BASELINE` for length features alone.
        folds: k of the outer and the inner cross-validation.
        rng: seed or generator of the outer folds (the inner folds derive from it).
        c: a fixed C (plain k-fold cross-validation), or None to choose C among :data:`~.evaluate.C_GRID`
            in every outer fold.

    Raises:
        ValueError: an unknown backend or category, or a category with too few prompts for the folds.
    """
    _check_backend(backend, (*BACKENDS, LENGTH_BASELINE))
    labels = _checked_labels(prompts, categories, mapping, folds, nested=c is None)
    features = _FeatureCache(backend, prompts, _embedding_model(backend, embedding_model))
    fit_predict = _fit_predict(features, labels, len(mapping["labels"]))
    return nested_cross_validation(list(mapping["labels"]), labels, folds, integer_seed(rng), fit_predict, _c_grid(c))


def evaluate_backends(
    prompts: Sequence[str],
    categories: Sequence[str],
    mapping: Mapping[str, Any],
    backends: Sequence[str],
    *,
    folds: int = 5,
    rng: int | np.random.Generator | None = 0,
    embedding_model: str | None = None,
) -> Iterator[tuple[str, NestedCrossValidation]]:
    """Nested cross-validation of each backend, then of the baselines on the same outer folds:
    :data:`LENGTH_BASELINE` (length features alone) and ``"majority"`` (the training folds' most frequent
    category; no C). Yields (name, result) as each is known, so a later backend that fails loses nothing.

    Raises:
        ValueError: see :func:`cross_validate`.
    """
    for backend in backends:
        _check_backend(backend, BACKENDS)
    seed = integer_seed(rng)
    for backend in (*backends, LENGTH_BASELINE):
        nested = cross_validate(
            prompts, categories, mapping, backend, folds=folds, rng=seed, embedding_model=embedding_model
        )
        yield backend, nested
    labels = _checked_labels(prompts, categories, mapping, folds, nested=True)
    majority = majority_baseline(list(mapping["labels"]), labels, stratified_folds(labels, folds, seed))
    yield "majority", NestedCrossValidation(majority, (), ())


def train_router(
    prompts: Sequence[str],
    categories: Sequence[str],
    mapping: Mapping[str, Any],
    backend: str = "tfidf",
    *,
    name: str | None = None,
    folds: int = 5,
    rng: int | np.random.Generator | None = 0,
    c: float | None = None,
    embedding_model: str | None = None,
    source: Mapping[str, Any] | None = None,
) -> PromptRouter:
    """Train a router on labelled prompts: nested cross-validation (the confusion matrix plans use), then
    C chosen by k-fold cross-validation over every prompt, and the fit on every prompt with it.

    Args:
        prompts: training prompt texts.
        categories: each prompt's category under ``mapping``.
        mapping: the category mapping routed into.
        backend: ``tfidf`` or ``embedding``.
        name: the router's name (default: the mapping's name and the backend).
        folds: k of the (outer and inner) stratified k-fold cross-validation.
        rng: seed or generator of the fold assignment (a generator draws the integer seed the router
            records; the fit itself is deterministic).
        c: a fixed C, or None (the default) to choose it among :data:`~.evaluate.C_GRID`.
        embedding_model: the sentence-transformers model (``embedding``; default all-MiniLM-L6-v2).
        source: provenance of the prompts, recorded in the router (e.g. the file and its sha256).

    Raises:
        ValueError: see :func:`cross_validate`.
    """
    check_category_mapping(mapping, "category mapping")
    _check_backend(backend, BACKENDS)
    labels = _checked_labels(prompts, categories, mapping, folds, nested=c is None)
    names = list(mapping["labels"])
    model = _embedding_model(backend, embedding_model)
    features = _FeatureCache(backend, prompts, model)  # embeds every prompt once, for the folds and the fit
    seed = integer_seed(rng)
    fit_predict = _fit_predict(features, labels, len(names))
    nested = nested_cross_validation(names, labels, folds, seed, fit_predict, _c_grid(c))
    # The outer folds' own split of every prompt chooses the C fitted on every prompt.
    every = np.arange(len(prompts))
    chosen_c = choose_c(labels, every, folds, seed, fit_predict, _c_grid(c))
    (tfidf, length), x_all = features.fit(every)
    training = {
        **(dict(source) if source else {}),
        "prompts": len(prompts),
        "per_category": {cat: int((labels == i).sum()) for i, cat in enumerate(names)},
        "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest(),
        "c": chosen_c,
        "c_grid": list(nested.c_grid),
        "c_per_fold": list(nested.c_per_fold),
        "folds": folds,
        "seed": seed,
    }
    short = mapping.get("name", "custom")
    router = PromptRouter(
        name=name or (f"{short}-tfidf" if backend == "tfidf" else f"{short}-{_model_short_name(model)}"),
        backend=backend,
        mapping=mapping,
        classifier=fit_logistic(x_all, labels, len(names), c=chosen_c),
        length=length,
        training=training,
        cross_validation=nested.report,
        tfidf=tfidf,
        embedding_model=model,
        probe=features.encoder.probe() if features.encoder is not None else None,
    )
    router._encoder = features.encoder  # already loaded, and the probe is its own
    return router


def _model_short_name(model: str | None) -> str:
    if model == DEFAULT_EMBEDDING_MODEL:
        return "minilm"
    return Path(str(model)).name.lower().replace("_", "-") or "embedding"
