"""The CLIPScore convention: how every score in a record, manifest and table was computed."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CLIPSCORE_RANGE", "ClipConvention"]

#: CLIPScore = 100·max(cos, 0) lies in [0, 100]; anything else is a broken number.
CLIPSCORE_RANGE: tuple[float, float] = (0.0, 100.0)


@dataclass(frozen=True)
class ClipConvention:
    """How a CLIPScore was computed; records, manifests and tables never mix conventions.

    Attributes:
        backbone: open_clip model name (e.g. ``"ViT-L-14-quickgelu"``), or ``replica:<name>`` for a
            shipped random-weight config.
        pretrained: open_clip pretrained tag (e.g. ``"openai"``); ``"none"`` for random initialisation.
        formula: the per-image score, e.g. ``"100*max(cos(E_I, E_C), 0) per image"``.
        truncation: how long captions are handled, e.g. ``"77 tokens, end token kept"``.
        preprocess: the image preprocessing before the image tower.
    """

    backbone: str
    pretrained: str
    formula: str
    truncation: str
    preprocess: str
