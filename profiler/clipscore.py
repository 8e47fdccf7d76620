r"""CLIPScore with an open_clip backbone: one pure function and a small class holding the backbone.

.. math:: \text{CLIPScore}(I, C) = 100 \cdot \max(\cos(E_I, E_C), 0)

per image–caption pair, so each score lies in [0, 100] (higher is better). Captions longer than the
77-token context are truncated by open_clip's tokenizer, keeping the end token; whether a prompt
was truncated is returned per image because open_clip does not say.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from typing import Any

from genedge.contract.clip import ClipConvention
from genedge.data import path as data_path
from genedge.profiler._imports import require

__all__ = [
    "DEFAULT_CLIP_BACKBONE",
    "DEFAULT_CLIP_PRETRAINED",
    "CLIP_FORMULA",
    "ClipConvention",
    "clip_score_from_features",
    "clip_scores",
    "ClipScorer",
]

logger = logging.getLogger(__name__)

# OpenAI's ViT-L/14 weights were trained with QuickGELU; the plain ViT-L-14 config would shift every score.
DEFAULT_CLIP_BACKBONE = "ViT-L-14-quickgelu"
DEFAULT_CLIP_PRETRAINED = "openai"
CLIP_FORMULA = "100*max(cos(E_I, E_C), 0) per image"
_REPLICA_SCHEME = "replica:"
_RANDOM_INIT = "none"
_DEFAULT_BATCH_SIZE = 32


def clip_score_from_features(image_features: Any, text_features: Any) -> Any:
    r"""CLIPScore of paired embeddings: :math:`100 \cdot \max(\cos(E_I, E_C), 0)`, clamped per pair.

    Args:
        image_features: ``(N, D)`` image embeddings (need not be normalized).
        text_features: ``(N, D)`` caption embeddings, row ``i`` paired with image ``i``.

    Returns:
        ``(N,)`` float tensor of scores in [0, 100].

    Raises:
        ValueError: When the shapes differ.

    Example:
        >>> import torch
        >>> clip_score_from_features(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 1.0], [-1.0, 0.0]]))
        tensor([70.7107,  0.0000])
    """
    if image_features.shape != text_features.shape:
        raise ValueError(
            "Expected image and text features of the same shape, "
            f"but got {tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    functional = require("torch.nn.functional")
    cosine = functional.cosine_similarity(image_features.float(), text_features.float(), dim=-1)
    return 100.0 * cosine.clamp(min=0.0)


def clip_scores(
    images: Sequence[Any],
    prompts: Sequence[str],
    *,
    model: Any,
    preprocess: Any,
    tokenizer: Any,
    device: Any,
    batch_size: int = _DEFAULT_BATCH_SIZE,
) -> tuple[list[float], list[bool]]:
    """Score each image against its prompt, in batches.

    Args:
        images: ``N`` PIL images.
        prompts: ``N`` captions, ``prompts[i]`` describing ``images[i]``.
        model: An open_clip model (``encode_image``/``encode_text``) on ``device``.
        preprocess: open_clip's evaluation transform (PIL image → ``(C, H, W)`` tensor).
        tokenizer: open_clip tokenizer (truncates to its context length, keeping the end token).
        device: ``torch.device`` of ``model``.
        batch_size: Images per forward pass.

    Returns:
        ``(scores, truncated)``: ``N`` CLIPScores in [0, 100] and ``N`` flags telling whether the
        prompt was longer than the context and truncated.

    Raises:
        ValueError: When the numbers of images and prompts differ.
    """
    if len(images) != len(prompts):
        raise ValueError(f"Expected as many images as prompts, but got {len(images)} and {len(prompts)}")
    torch = require("torch")
    context = tokenizer.context_length
    truncated = [len(tokenizer.encode(p)) > context - 2 for p in prompts]
    if any(truncated):
        warnings.warn(
            f"{sum(truncated)} of {len(prompts)} prompts exceed {context} tokens and were truncated for CLIPScore "
            "(recorded per image as prompt_truncated)",
            UserWarning,
            stacklevel=2,
        )
    scores: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            pixels = torch.stack([preprocess(image) for image in images[start : start + batch_size]]).to(device)
            tokens = tokenizer(list(prompts[start : start + batch_size])).to(device)
            image_features = model.encode_image(pixels)
            text_features = model.encode_text(tokens)
            scores.extend(clip_score_from_features(image_features, text_features).tolist())
    return scores, truncated


class ClipScorer:
    """An open_clip backbone loaded once, with its convention.

    Args:
        backbone: open_clip model name (default ``ViT-L-14-quickgelu``) or ``replica:<name>`` for a
            random-weight config shipped under ``genedge/data/replicas/clip`` (tests).
        pretrained: open_clip pretrained tag (default ``openai``); ``None`` for random weights.
        device: ``torch.device`` to score on.
        offload: Keep the backbone on the CPU between calls to :meth:`score`, so that its weights
            do not inflate the GPU memory measured during generation.

    Raises:
        RuntimeError: When open_clip warns of a QuickGELU mismatch (every score would shift).
    """

    higher_is_better = True
    lower_bound = 0.0
    upper_bound = 100.0

    def __init__(
        self,
        backbone: str = DEFAULT_CLIP_BACKBONE,
        pretrained: str | None = DEFAULT_CLIP_PRETRAINED,
        *,
        device: Any,
        offload: bool = False,
    ) -> None:
        open_clip = require("open_clip")
        torch = require("torch")
        if backbone.startswith(_REPLICA_SCHEME):
            if pretrained is not None:
                raise ValueError(
                    f"Expected pretrained=None for the random-weight backbone {backbone!r}, but got {pretrained!r}"
                )
            config = json.loads(
                data_path("replicas", "clip", f"{backbone[len(_REPLICA_SCHEME) :]}.json").read_text(encoding="utf-8")
            )
            name, overrides = config["base_model"], config["overrides"]
        else:
            name, overrides = backbone, {}
        self.device = device
        self._home = torch.device("cpu") if offload else device
        # Random weights come from a forked RNG with a fixed seed: reproducible, caller's RNG untouched.
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.filterwarnings("error", message=".*QuickGELU mismatch.*")
            torch.manual_seed(0)
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name, pretrained=pretrained, device=self._home, **overrides
                )
            except UserWarning as err:
                raise RuntimeError(
                    f"Expected a QuickGELU-consistent CLIP backbone, but {backbone!r} + {pretrained!r}: {err}"
                ) from err
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(name)
        self.convention = ClipConvention(
            backbone=backbone,
            pretrained=_RANDOM_INIT if pretrained is None else pretrained,
            formula=CLIP_FORMULA,
            truncation=f"open_clip tokenizer, {self.tokenizer.context_length} tokens, end token kept",
            preprocess=" ".join(repr(preprocess).split()),
        )

    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> tuple[list[float], list[bool]]:
        """Per-image CLIPScores and truncation flags; see :func:`clip_scores`."""
        self.model.to(self.device)
        try:
            return clip_scores(
                images,
                prompts,
                model=self.model,
                preprocess=self.preprocess,
                tokenizer=self.tokenizer,
                device=self.device,
            )
        finally:
            if self._home != self.device:
                self.model.to(self._home)
                require("torch").cuda.empty_cache()
