"""TF-IDF features of prompt text, in plain numbers.

The weighting is scikit-learn's ``TfidfVectorizer(sublinear_tf=True, min_df=...)`` with its default
analyzer, written out so a fitted vocabulary and idf vector load from JSON and transform without
scikit-learn (the tests check both agree):

- terms: the lower-cased text's words of two or more word characters (``(?u)\\b\\w\\w+\\b``), and
  their n-grams up to ``ngram_max`` joined by one space;
- tf(t, d) = 1 + ln(count of t in d) (sublinear);
- idf(t) = ln((1 + N) / (1 + df(t))) + 1 over the N training prompts (smoothed);
- each prompt's vector is tf × idf scaled to unit Euclidean length (a prompt without known terms
  stays zero and is routed by the classifier's intercepts alone).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TfidfFeatures", "terms"]

_WORD = re.compile(r"(?u)\b\w\w+\b")


def terms(text: str, ngram_max: int = 1) -> list[str]:
    """The terms of one prompt: its words, then its n-grams up to ``ngram_max``, in text order."""
    words = _WORD.findall(text.lower())
    out = list(words)
    for n in range(2, ngram_max + 1):
        out.extend(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    return out


@dataclass(frozen=True)
class TfidfFeatures:
    """A fitted TF-IDF vocabulary.

    Attributes:
        vocabulary: the terms, sorted; term i is column i.
        idf: idf of each term, shape (V,).
        ngram_max: longest n-gram counted as a term.
        min_df: the fewest training prompts a term appeared in to be kept.
    """

    vocabulary: tuple[str, ...]
    idf: np.ndarray
    ngram_max: int = 1
    min_df: int = 2

    def __post_init__(self) -> None:
        if self.idf.shape != (len(self.vocabulary),):
            raise ValueError(f"Expected one idf per term ({len(self.vocabulary)}), but got shape {self.idf.shape}")
        object.__setattr__(self, "_index", {term: i for i, term in enumerate(self.vocabulary)})

    @classmethod
    def fit(cls, prompts: Sequence[str], *, ngram_max: int = 1, min_df: int = 2) -> TfidfFeatures:
        """Learn the vocabulary and idf of ``prompts``.

        Raises:
            ValueError: no term appears in ``min_df`` prompts.
        """
        document_frequency: Counter[str] = Counter()
        for prompt in prompts:
            document_frequency.update(set(terms(prompt, ngram_max)))
        vocabulary = tuple(sorted(t for t, df in document_frequency.items() if df >= min_df))
        if not vocabulary:
            raise ValueError(
                f"Expected terms shared by at least {min_df} prompts, but {len(prompts)} prompts have none"
            )
        df = np.array([document_frequency[t] for t in vocabulary], dtype=float)
        idf = np.log((1.0 + len(prompts)) / (1.0 + df)) + 1.0
        return cls(vocabulary=vocabulary, idf=idf, ngram_max=ngram_max, min_df=min_df)

    @property
    def dimension(self) -> int:
        """Number of features (terms)."""
        return len(self.vocabulary)

    def transform(self, prompts: Iterable[str]) -> Any:
        """The prompts' unit-length TF-IDF vectors, a ``scipy.sparse.csr_matrix`` of shape (n, V)."""
        from scipy.sparse import csr_matrix

        index: Mapping[str, int] = self._index  # type: ignore[attr-defined]
        columns: list[int] = []
        values: list[float] = []
        pointers = [0]
        for prompt in prompts:
            counts = Counter(i for i in map(index.get, terms(prompt, self.ngram_max)) if i is not None)
            weights = [(1.0 + math.log(n)) * self.idf[i] for i, n in counts.items()]
            norm = math.sqrt(sum(w * w for w in weights)) or 1.0
            columns.extend(counts)
            values.extend(w / norm for w in weights)
            pointers.append(len(columns))
        return csr_matrix(
            (np.array(values, dtype=float), np.array(columns, dtype=np.int64), np.array(pointers, dtype=np.int64)),
            shape=(len(pointers) - 1, self.dimension),
        )

    def to_dict(self) -> dict[str, Any]:
        """The features as JSON-ready data."""
        return {
            "ngram_max": self.ngram_max,
            "min_df": self.min_df,
            "vocabulary": list(self.vocabulary),
            "idf": self.idf.tolist(),
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> TfidfFeatures:
        """Features from :meth:`to_dict`'s data (validated by the router reader)."""
        return cls(
            vocabulary=tuple(document["vocabulary"]),
            idf=np.asarray(document["idf"], dtype=float),
            ngram_max=int(document["ngram_max"]),
            min_df=int(document["min_df"]),
        )
