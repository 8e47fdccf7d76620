"""Model specs, the random-weight replica registry, offline tokenizers and pipeline loading.

A model spec is one of:

* ``replica:<arch>`` — a random-weight replica of a real architecture, built from a JSON config
  under ``genedge/data/replicas`` (latency and memory are real, images and scores are noise);
* a local directory holding a diffusers pipeline;
* a hub id with an optional revision, ``org/name[@revision]`` (the ordinary ``from_pretrained`` path).
"""

from __future__ import annotations

import functools
import gzip
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from genedge.contract.mappings import JsonRegistry
from genedge.data import path as data_path
from genedge.profiler._imports import require

__all__ = [
    "REPLICA_SCHEME",
    "SUPPORTED_PIPELINES",
    "ModelSpec",
    "parse_model_spec",
    "list_replicas",
    "get_replica_config",
    "add_replica_path",
    "unet_param_count",
    "scheduler_config",
    "clip_bpe_tokenizer",
    "load_pipeline",
]

logger = logging.getLogger(__name__)

REPLICA_SCHEME = "replica:"
SUPPORTED_PIPELINES: tuple[str, ...] = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")
# CLIP BPE: 256 byte tokens, their 256 end-of-word forms, 48,894 merges, start and end tokens.
CLIP_VOCAB_SIZE = 49_408
_CLIP_NUM_MERGES = CLIP_VOCAB_SIZE - 2 * 256 - 2
CLIP_CONTEXT_LENGTH = 77

_REQUIRED_REPLICA_FIELDS = (
    "name",
    "pipeline",
    "resolution",
    "guidance_scale",
    "default_steps",
    "unet",
    "vae",
    "text_encoder",
    "tokenizer",
    "scheduler",
    "published_unet_params",
    "sources",
)
_XL_FIELDS = ("text_encoder_2", "tokenizer_2")
_HUB_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    Attributes:
        key: The spec exactly as given (the ``model_key`` of every record).
        kind: ``"replica"``, ``"local"`` or ``"hub"``.
        identifier: Replica architecture name, local directory, or hub repository id.
        revision: Hub revision (branch, tag or commit); ``None`` for the default branch and for
            replicas and local paths.
    """

    key: str
    kind: Literal["replica", "local", "hub"]
    identifier: str
    revision: str | None = None

    @property
    def is_replica(self) -> bool:
        """Whether the weights are random (images and CLIPScores mean nothing)."""
        return self.kind == "replica"


def parse_model_spec(spec: str) -> ModelSpec:
    """Parse a model spec; the one place that knows the spec syntax.

    Args:
        spec: ``replica:<arch>``, a local pipeline directory, or ``org/name[@revision]``.

    Returns:
        The parsed spec.

    Raises:
        ValueError: For an unknown replica or a string that is none of the three forms; the
            message lists the available replicas.
    """
    if spec.startswith(REPLICA_SCHEME):
        arch = spec[len(REPLICA_SCHEME) :]
        if arch not in list_replicas():
            raise ValueError(
                f"Expected a known replica architecture after {REPLICA_SCHEME!r}, but got {arch!r}. "
                f"Available: {', '.join(list_replicas())}"
            )
        return ModelSpec(key=spec, kind="replica", identifier=arch)
    if Path(spec).is_dir():
        return ModelSpec(key=spec, kind="local", identifier=spec)
    repo, _, revision = spec.partition("@")
    if not _HUB_ID.match(repo) or (_ and not revision):
        raise ValueError(
            f"Expected a model spec 'replica:<arch>', a local pipeline directory or a hub id "
            f"'org/name[@revision]', but got {spec!r}. Available replicas: "
            f"{', '.join(REPLICA_SCHEME + name for name in list_replicas())}"
        )
    return ModelSpec(key=spec, kind="hub", identifier=repo, revision=revision or None)


def _check_replica(config: dict[str, Any], file: Path) -> None:
    if config["pipeline"] not in SUPPORTED_PIPELINES:
        raise ValueError(
            f"{file}: field 'pipeline': expected one of {SUPPORTED_PIPELINES}, but got {config['pipeline']!r}"
        )
    if config["pipeline"] == "StableDiffusionXLPipeline":
        for field in _XL_FIELDS:
            if field not in config:
                raise ValueError(f"{file}: expected field {field!r} in an SDXL replica config, but it is missing")
    if config["name"] != file.stem:
        raise ValueError(f"{file}: field 'name': expected {file.stem!r} (the file name), but got {config['name']!r}")


_REPLICAS = JsonRegistry(
    "replica config", "replica architecture", [data_path("replicas")], _REQUIRED_REPLICA_FIELDS, _check_replica
)


def list_replicas() -> list[str]:
    """Names of the registered replica architectures, sorted."""
    return _REPLICAS.names()


def get_replica_config(name: str) -> dict[str, Any]:
    """A copy of one replica config (callers may mutate it).

    Raises:
        ValueError: For an unknown name, listing the available ones.
    """
    return _REPLICAS.get(name)


def add_replica_path(path: str | Path) -> None:
    """Register another replica config file or folder of ``*.json`` files (validated on next use)."""
    _REPLICAS.add_path(path)


def _build_unet(config: dict[str, Any]) -> Any:
    return require("diffusers").UNet2DConditionModel.from_config(config)


def unet_param_count(spec: ModelSpec | str) -> int:
    """Count the denoiser (UNet) parameters of a model without allocating its weights.

    The UNet is built from its config on PyTorch's meta device, so counting SDXL's 2.6 B
    parameters takes well under a second and no memory.

    Args:
        spec: A model spec (replica, local directory or hub id; the latter two read only
            ``unet/config.json``).

    Returns:
        The number of UNet parameters.
    """
    spec = parse_model_spec(spec) if isinstance(spec, str) else spec
    torch = require("torch")
    if spec.is_replica:
        config = get_replica_config(spec.identifier)["unet"]
    else:
        config = require("diffusers").UNet2DConditionModel.load_config(
            spec.identifier, subfolder="unet", revision=spec.revision
        )
    with torch.device("meta"):
        unet = _build_unet(config)
    return sum(p.numel() for p in unet.parameters())


def _scheduler_class(diffusers: Any, name: str) -> Any:
    scheduler_cls = getattr(diffusers, name, None)
    if not (isinstance(scheduler_cls, type) and issubclass(scheduler_cls, diffusers.SchedulerMixin)):
        available = sorted(n for n in dir(diffusers) if n.endswith("Scheduler"))
        raise ValueError(
            f"Expected a diffusers scheduler class name, but got {name!r}. Available: {', '.join(available)}"
        )
    return scheduler_cls


def scheduler_config(spec: ModelSpec | str, override: str | None = None) -> dict[str, Any]:
    """The scheduler a model runs with, without loading weights: ``{"class": name, "config": dict}``.

    Args:
        spec: Model spec (hub and local models read only ``scheduler/scheduler_config.json``).
        override: A diffusers scheduler class name replacing the model's own (built from its config).

    Raises:
        ValueError: For an unknown scheduler class name, listing the available ones.
    """
    spec = parse_model_spec(spec) if isinstance(spec, str) else spec
    diffusers = require("diffusers")
    if spec.is_replica:
        own = get_replica_config(spec.identifier)["scheduler"]
        name, config = own["class"], own["config"]
    else:
        config = diffusers.SchedulerMixin.load_config(spec.identifier, subfolder="scheduler", revision=spec.revision)
        name = config["_class_name"]
    scheduler = _scheduler_class(diffusers, override or name).from_config(config)
    return {
        "class": type(scheduler).__name__,
        "config": {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")},
    }


@functools.lru_cache(maxsize=1)
def _clip_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    # open_clip ships the CLIP BPE merges; the vocabulary is derived from them exactly as OpenAI's
    # tokenizer (and the vocab.json of SD 1.5 / SDXL) does, so no hub download is needed.
    tokenizer_module = require("open_clip.tokenizer")
    with gzip.open(tokenizer_module.default_bpe()) as f:
        lines = f.read().decode("utf-8").split("\n")[1 : _CLIP_NUM_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    byte_tokens = list(tokenizer_module.bytes_to_unicode().values())
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def clip_bpe_tokenizer(pad_token: str = "<|endoftext|>") -> Any:
    """Build the CLIP BPE tokenizer of SD 1.x/2.x/XL offline from open_clip's vocabulary file.

    Args:
        pad_token: ``"<|endoftext|>"`` (SD 1.x/2.x, SDXL's first encoder) or ``"!"`` (SDXL's second).

    Returns:
        A ``transformers.CLIPTokenizer`` with 49,408 tokens and a 77-token context.

    Raises:
        RuntimeError: When the built tokenizer does not have 49,408 tokens (transformers 5 silently
            builds a 2-token tokenizer from file paths; this guards against such changes).
    """
    vocab, merges = _clip_bpe()
    tokenizer = require("transformers").CLIPTokenizer(
        vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=CLIP_CONTEXT_LENGTH
    )
    if len(tokenizer) != CLIP_VOCAB_SIZE:
        raise RuntimeError(
            f"Expected a CLIP tokenizer with {CLIP_VOCAB_SIZE} tokens, but got {len(tokenizer)} "
            f"(transformers {require('transformers').__version__})"
        )
    return tokenizer


def _text_encoder(config: dict[str, Any]) -> Any:
    transformers = require("transformers")
    config = dict(config)
    architecture = config.pop("architecture")
    return getattr(transformers, architecture)(transformers.CLIPTextConfig(**config))


def _build_replica(name: str, device: Any) -> Any:
    torch = require("torch")
    diffusers = require("diffusers")
    config = get_replica_config(name)
    scheduler_cls = _scheduler_class(diffusers, config["scheduler"]["class"])
    # Build directly on the target device (a 2.6 B-parameter UNet initialised on a CPU takes
    # minutes); fork the RNG so a replica is reproducible without touching the caller's seed.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.device(device):
        torch.manual_seed(0)
        components = {
            "unet": _build_unet(config["unet"]),
            "vae": diffusers.AutoencoderKL.from_config(config["vae"]),
            "text_encoder": _text_encoder(config["text_encoder"]),
        }
        if config["pipeline"] == "StableDiffusionXLPipeline":
            components["text_encoder_2"] = _text_encoder(config["text_encoder_2"])
    components["scheduler"] = scheduler_cls.from_config(config["scheduler"]["config"])
    components["tokenizer"] = clip_bpe_tokenizer(**config["tokenizer"])
    if config["pipeline"] == "StableDiffusionXLPipeline":
        components["tokenizer_2"] = clip_bpe_tokenizer(**config["tokenizer_2"])
        return diffusers.StableDiffusionXLPipeline(**components, add_watermarker=False)
    return diffusers.StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


def load_pipeline(spec: ModelSpec | str, *, device: Any, dtype: Any, scheduler: str | None = None) -> Any:
    """Load (or, for a replica, build) a diffusers pipeline on ``device`` in ``dtype``.

    Args:
        spec: Model spec.
        device: ``torch.device`` to run on.
        dtype: ``torch.dtype`` of the weights.
        scheduler: Name of a diffusers scheduler class to use instead of the model's own, built
            from the model's scheduler config.

    Returns:
        The pipeline, with its progress bar disabled (the caller draws its own).

    Raises:
        ValueError: For a pipeline class genedge cannot drive or an unknown scheduler name.
    """
    spec = parse_model_spec(spec) if isinstance(spec, str) else spec
    diffusers = require("diffusers")
    if spec.is_replica:
        pipe = _build_replica(spec.identifier, device)
    else:
        pipe = diffusers.DiffusionPipeline.from_pretrained(spec.identifier, revision=spec.revision, torch_dtype=dtype)
    if type(pipe).__name__ not in SUPPORTED_PIPELINES:
        raise ValueError(
            f"Expected a model whose pipeline is one of {SUPPORTED_PIPELINES}, "
            f"but {spec.key!r} loads {type(pipe).__name__}"
        )
    if scheduler is not None:
        pipe.scheduler = _scheduler_class(diffusers, scheduler).from_config(pipe.scheduler.config)
    pipe.to(device)
    if spec.is_replica and dtype != require("torch").float32:
        pipe.to(dtype=dtype)
    if pipe.vae.config.get("force_upcast", False) and dtype == require("torch").float16:
        # The SDXL VAE overflows in float16 (diffusers upcasts it per call); keep it in float32 once.
        pipe.vae.to(dtype=require("torch").float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe
