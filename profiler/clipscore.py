r"""CLIPScore with an open_clip backbone: one pure function and a small class holding the backbone.

.. math:: \text{CLIPScore}(I, C) = 100 \cdot \max(\cos(E_I, E_C), 0)

per image–caption pair, so each score lies in [0, 100] (higher is better). Captions longer than the
77-token context are truncated by open_clip's tokenizer, keeping the end token; whether a prompt
was truncated is returned per image because open_clip does not say.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genedge.contract.clip import ClipConvention
from genedge.data import path as data_path
from genedge.profiler._imports import require

__all__ = [
    "DEFAULT_CLIP_BACKBONE",
    "DEFAULT_CLIP_PRETRAINED",
    "CLIP_FORMULA",
    "SCORING_BATCH_SIZE",
    "ClipConvention",
    "ClipWeights",
    "clip_score_from_features",
    "clip_scores",
    "ClipScorer",
    "resolve_clip_weights",
]

logger = logging.getLogger(__name__)

# OpenAI's ViT-L/14 weights were trained with QuickGELU; the plain ViT-L-14 config would shift every score.
DEFAULT_CLIP_BACKBONE = "ViT-L-14-quickgelu"
DEFAULT_CLIP_PRETRAINED = "openai"
CLIP_FORMULA = "100*max(cos(E_I, E_C), 0) per image"
_REPLICA_SCHEME = "replica:"
_RANDOM_INIT = "none"
#: Images CLIPScore encodes at once: a flush of more images is scored in chunks of this many.
SCORING_BATCH_SIZE = 32
# Suffixes open_clip's load_checkpoint reads; a `pretrained` value ending in one is a path, not a misspelt tag.
_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".npz", ".npy")
_HASH_CHUNK_BYTES = 1 << 24
_HASH_PREFIX_HEX = 16
_OFFLINE_ALTERNATIVES = (
    "pass --clip-pretrained /path/to/open_clip_pytorch_model.bin (a local weights file), "
    "or --clip-backbone replica:tiny --clip-pretrained none for a smoke run whose scores mean nothing"
)


@dataclass(frozen=True)
class ClipWeights:
    """Where a CLIP backbone's weights come from, checked before any model loads.

    Attributes:
        architecture: open_clip model name to build (a replica's base model).
        overrides: Keyword overrides of that model's config (a replica's shrunken towers; empty otherwise).
        pretrained: What to pass as open_clip's ``pretrained``: a tag, a local file path, or ``None``
            for random initialisation.
        label: The convention's ``pretrained``: the tag, ``file:<name>#sha256:<16 hex>`` for a local
            file (the same on every machine holding the same weights), or ``"none"``.
    """

    architecture: str
    overrides: dict[str, Any]
    pretrained: str | None
    label: str


def _replica_architecture(backbone: str) -> tuple[str, dict[str, Any]]:
    name = backbone[len(_REPLICA_SCHEME) :]
    config_path = data_path("replicas", "clip", f"{name}.json")
    if not config_path.is_file():
        available = sorted(p.stem for p in config_path.parent.glob("*.json"))
        raise ValueError(
            f"--clip-backbone: unknown CLIP replica {backbone!r}; available: "
            + ", ".join(f"{_REPLICA_SCHEME}{a}" for a in available)
        )
    config = json.loads(config_path.read_text(encoding="utf-8"))
    return config["base_model"], config["overrides"]


def _file_label(path: str) -> str:
    stat = os.stat(path)
    return _content_label(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _content_label(path: str, size: int, mtime_ns: int) -> str:
    # Hashing a ViT-L checkpoint takes seconds: once per file version (size and mtime key the cache).
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return f"file:{Path(path).name}#sha256:{digest.hexdigest()[:_HASH_PREFIX_HEX]}"


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants
    except ImportError:
        return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    # What hf_hub_download itself obeys (read when huggingface_hub was imported); models.py asks the same.
    return constants.is_offline_mode()


def _cached_tag_file(open_clip: Any, cfg: dict[str, Any]) -> str | None:
    """The local file open_clip would load for a tag's config without any network access, if there is one.

    Mirrors ``open_clip.pretrained.download_pretrained``: an explicit ``file``; else the hf-hub
    entry (``org/repo/[filename]``, default ``open_clip_pytorch_model.bin``, a ``.safetensors``
    twin preferred) when huggingface_hub is installed; else the URL's basename under ``~/.cache/clip``.
    """
    if "file" in cfg:
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    if cfg.get("hf_hub") and open_clip.pretrained.has_hf_hub():
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or open_clip.constants.HF_WEIGHTS_NAME
        candidates = [filename]
        if filename == open_clip.constants.HF_WEIGHTS_NAME:
            candidates.insert(0, open_clip.constants.HF_SAFE_WEIGHTS_NAME)
        elif filename.endswith((".bin", ".pth")):
            candidates.insert(0, f"{filename[:-4]}.safetensors")
        for candidate in candidates:
            cached = try_to_load_from_cache(repo_id, candidate)
            if isinstance(cached, str):
                return cached
        return None
    if cfg.get("url"):
        target = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
        return target if os.path.isfile(target) else None
    return None


def _check_weights_file(backbone: str, pretrained: str, tags: list[str]) -> None:
    # ``pretrained`` is no tag of the backbone, so it must be a local weights file.
    if os.path.isfile(pretrained):
        return
    if os.sep in pretrained or "/" in pretrained or pretrained.endswith(_WEIGHT_SUFFIXES):
        raise ValueError(f"--clip-pretrained: {pretrained!r} is not a file; pass the path of a local weights file")
    if not tags:
        raise ValueError(
            f"--clip-pretrained: the replica backbone {backbone!r} takes no pretrained tag, "
            f"but got {pretrained!r}; pass --clip-pretrained none or a local weights file"
        )
    raise ValueError(
        f"--clip-pretrained: {pretrained!r} is not a pretrained tag of {backbone} nor a file; "
        f"pass one of {', '.join(tags)}, or a local weights file"
    )


def _download_tag(open_clip: Any, cfg: dict[str, Any], what: str) -> None:
    # A tag's weights missing from the cache: download them now, or say why not and what to pass.
    if _hub_offline():
        raise ValueError(f"{what} are not in the local cache and the hub is offline: {_OFFLINE_ALTERNATIVES}")
    try:
        open_clip.download_pretrained(cfg)
    except Exception as err:  # any download failure gets the same advice
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{what} could not be downloaded ({reason}): {_OFFLINE_ALTERNATIVES}") from err


def resolve_clip_weights(backbone: str, pretrained: str | None) -> ClipWeights:
    """Check that a CLIP backbone's weights are reachable, before anything loads.

    A ``replica:<name>`` backbone takes random weights (``pretrained=None``) or a local weights
    file. Any other backbone is an open_clip model name and takes ``None``, a local weights file,
    or one of that model's pretrained tags. A tag's file must be in the local cache when the hub
    is offline (``HF_HUB_OFFLINE=1``); online, a missing file is downloaded here through open_clip,
    into the cache open_clip reads, so a failed download stops the run before any model loads.

    Args:
        backbone: open_clip model name or ``replica:<name>``.
        pretrained: open_clip pretrained tag, path of a local weights file, or ``None`` for random weights.

    Returns:
        The architecture to build and the weights to load, with the convention's label.

    Raises:
        ValueError: When the backbone is unknown, the tag is not one of the model's, the local file
            does not exist, or a tag's weights are neither cached nor downloadable; the message
            says what to pass instead.
    """
    open_clip = require("open_clip")
    if backbone.startswith(_REPLICA_SCHEME):
        architecture, overrides = _replica_architecture(backbone)
        tags: list[str] = []
    else:
        if backbone not in open_clip.list_models():
            raise ValueError(
                f"--clip-backbone: unknown open_clip model {backbone!r}; pass replica:tiny or one of "
                + ", ".join(open_clip.list_models())
            )
        architecture, overrides = backbone, {}
        tags = open_clip.list_pretrained_tags_by_model(backbone)
    if pretrained is None:
        return ClipWeights(architecture, overrides, None, _RANDOM_INIT)
    # open_clip tries `pretrained` as a tag of the model first, then as a file path; so does this.
    cfg = open_clip.get_pretrained_cfg(architecture, pretrained) if tags else {}
    if not cfg:
        _check_weights_file(backbone, pretrained, tags)
        return ClipWeights(architecture, overrides, pretrained, _file_label(pretrained))
    if _cached_tag_file(open_clip, cfg) is None:
        _download_tag(open_clip, cfg, f"CLIP weights for {backbone}/{pretrained}")
    return ClipWeights(architecture, overrides, pretrained, pretrained)


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
    batch_size: int = SCORING_BATCH_SIZE,
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


class _RandomInitFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init(pretrained: str | None) -> Iterator[None]:
    """Silence open_clip's root-logger warning that random weights are random, when they are asked for."""
    if pretrained is not None:
        yield
        return
    quiet = _RandomInitFilter()
    logging.getLogger().addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(quiet)


class ClipScorer:
    """An open_clip backbone loaded once, with its convention.

    Args:
        backbone: open_clip model name (default ``ViT-L-14-quickgelu``) or ``replica:<name>`` for a
            small config shipped under ``genedge/data/replicas/clip`` (tests).
        pretrained: open_clip pretrained tag (default ``openai``), path of a local weights file, or
            ``None`` for random weights; checked by :func:`resolve_clip_weights` before anything loads.
        device: ``torch.device`` to score on.
        offload: Keep the backbone on the CPU between calls to :meth:`score`, so that its weights
            do not inflate the GPU memory measured during generation.

    Raises:
        ValueError: When the weights are unreachable (see :func:`resolve_clip_weights`).
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
        weights = resolve_clip_weights(backbone, pretrained)
        open_clip = require("open_clip")
        torch = require("torch")
        self.device = device
        self._home = torch.device("cpu") if offload else device
        # Random weights come from a forked RNG with a fixed seed: reproducible, caller's RNG untouched.
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]), _quiet_random_init(weights.pretrained):
            warnings.filterwarnings("error", message=".*QuickGELU mismatch.*")
            torch.manual_seed(0)
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    weights.architecture, pretrained=weights.pretrained, device=self._home, **weights.overrides
                )
            except UserWarning as err:
                raise RuntimeError(
                    f"Expected a QuickGELU-consistent CLIP backbone, but {backbone!r} + {pretrained!r}: {err}"
                ) from err
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(weights.architecture)
        self.convention = ClipConvention(
            backbone=backbone,
            pretrained=weights.label,
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
                # Hand the backbone's cached blocks back so that reserved memory measured during the next
                # generation is the pipeline's; the profiler re-warms afterwards, so the lost cache costs no timing.
                require("torch").cuda.empty_cache()
