"""Prompt-length features, appended to every router backend's features.

How long a prompt is says much about its category: of PartiPrompts' 1,079 prompts labelled with the
paper's four categories, Basic prompts have a median of 2 words and Complex ones 23. Logistic regression
on length alone reaches 0.76 accuracy in nested 5-fold cross-validation, more than TF-IDF alone, because
TF-IDF vectors have unit length and sentence embeddings are averages: both backends discard length.

Two features per prompt:

- ``log_words`` = ln(1 + number of white-space separated words);
- ``log_characters`` = ln(1 + number of characters).

Logarithms, because the categories differ by ratios of length (2 words against 23), not by a fixed
number of words; characters beside words, because they tell long words and punctuation-heavy prompts
from short ones. Each feature is standardized with the mean and standard deviation of the training
prompts, so the classifier's L2 penalty weighs it on the scale of a typical prompt; the router file
keeps both numbers, so a loaded router computes exactly the features it was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LENGTH_FEATURES", "LengthFeatures", "prompt_lengths"]

#: The length features, in column order (see the module docstring).
LENGTH_FEATURES = ("log_words", "log_characters")


def prompt_lengths(prompts: Sequence[str]) -> np.ndarray:
    """The unstandardized length features of ``prompts``, shape (n, 2): ln(1 + words), ln(1 + characters)."""
    counts = np.array([(len(p.split()), len(p)) for p in prompts], dtype=float).reshape(-1, len(LENGTH_FEATURES))
    return np.log1p(counts)


@dataclass(frozen=True)
class LengthFeatures:
    """The length features' standardization, fitted on training prompts.

    Attributes:
        mean: each feature's mean over the training prompts, shape (2,).
        scale: each feature's standard deviation over them (1 where it is 0), shape (2,).
    """

    mean: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        shape = (len(LENGTH_FEATURES),)
        if self.mean.shape != shape or self.scale.shape != shape or not (self.scale > 0).all():
            raise ValueError(f"Expected mean and scale of shape {shape}, scale > 0, but got {self.mean}, {self.scale}")

    @classmethod
    def fit(cls, prompts: Sequence[str]) -> LengthFeatures:
        """The standardization of ``prompts``' length features."""
        lengths = prompt_lengths(prompts)
        scale = lengths.std(axis=0)
        return cls(mean=lengths.mean(axis=0), scale=np.where(scale > 0, scale, 1.0))

    @property
    def dimension(self) -> int:
        """Number of features (2)."""
        return len(LENGTH_FEATURES)

    def transform(self, prompts: Sequence[str]) -> np.ndarray:
        """The standardized length features of ``prompts``, shape (n, 2)."""
        return (prompt_lengths(prompts) - self.mean) / self.scale

    def append_to(self, features: Any, prompts: Sequence[str]) -> Any:
        """A backend's features of ``prompts`` (an (n, D) array, a sparse matrix, or None for length alone)
        with the length features as their last two columns; sparse stays sparse (CSR). Training fits on
        these; a trained router passes the two blocks to its classifier instead, which is the same product."""
        lengths = self.transform(prompts)
        if features is None:
            return lengths
        from scipy import sparse

        if sparse.issparse(features):
            return sparse.hstack([features, sparse.csr_matrix(lengths)], format="csr")
        return np.hstack([features, lengths])

    def to_dict(self) -> dict[str, Any]:
        """The standardization as JSON-ready data."""
        return {"features": list(LENGTH_FEATURES), "mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> LengthFeatures:
        """Features from :meth:`to_dict`'s data (validated by the router reader)."""
        return cls(mean=np.asarray(document["mean"], dtype=float), scale=np.asarray(document["scale"], dtype=float))
