"""Model specs, the random-weight replica registry, offline tokenizers and pipeline loading.

A model spec is one of:

* ``replica:<arch>`` — a random-weight replica of a real architecture, built from a JSON config
  under ``genedge/data/replicas`` (latency and memory are real, images and scores are noise);
* a local directory holding a diffusers pipeline;
* a hub id with an optional revision, ``org/name[@revision]`` (the ordinary ``from_pretrained`` path,
  which works offline from the Hugging Face cache when ``HF_HUB_OFFLINE=1``).

Hub and local models are read through their config files wherever weights are not needed, so
counting parameters, naming the scheduler or the native resolution costs a few small JSON reads.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import logging
import re
import shutil
from collections.abc import Iterator, Mapping
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
    "native_resolution",
    "resolve_revision",
    "vae_decode_dtype",
    "clip_bpe_tokenizer",
    "import_pipeline_classes",
    "load_pipeline",
    "save_replica",
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
_NO_SAFETY_CHECKER = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
_HUB_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")
_COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")
# Pipelines whose decode upcasts a float16 VAE marked ``force_upcast`` to float32: diffusers'
# StableDiffusionXLPipeline does (``needs_upcasting = self.vae.dtype == torch.float16 and
# self.vae.config.force_upcast``); StableDiffusionPipeline decodes in the VAE's own dtype.
_UPCASTING_PIPELINES = frozenset({"StableDiffusionXLPipeline"})


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


def _as_spec(spec: ModelSpec | str) -> ModelSpec:
    return parse_model_spec(spec) if isinstance(spec, str) else spec


@contextlib.contextmanager
def _hub_errors(spec: ModelSpec) -> Iterator[None]:
    """Turn huggingface_hub's errors for ``spec`` into one-line ValueErrors that say what to do."""
    hub = require("huggingface_hub")
    errors = require("huggingface_hub.errors")
    revision = f"revision {spec.revision!r}" if spec.revision else "the default branch"
    try:
        yield
    except errors.RevisionNotFoundError as err:
        raise ValueError(
            f"{spec.key!r}: expected a branch, tag or commit of {spec.identifier!r}, but {revision} does not "
            "exist on the Hugging Face Hub"
        ) from err
    except errors.RepositoryNotFoundError as err:
        raise ValueError(
            f"{spec.key!r}: the Hugging Face Hub has no repository {spec.identifier!r} that this machine may read; "
            "check the id, log in with `hf auth login` for a private or gated one, or pass a local pipeline folder"
        ) from err
    except (errors.LocalEntryNotFoundError, errors.RevisionResolutionError) as err:
        where = f"the Hugging Face cache {hub.constants.HF_HUB_CACHE}"
        if hub.constants.is_offline_mode():
            raise ValueError(
                f"{spec.key!r}: {revision} of {spec.identifier!r} is not in {where} and HF_HUB_OFFLINE is set; "
                f"download it first (`hf download {spec.identifier}`, or rerun with HF_HUB_OFFLINE=0) "
                "or pass a local pipeline folder"
            ) from err
        raise ValueError(
            f"{spec.key!r}: the Hugging Face Hub could not be reached and {revision} of {spec.identifier!r} is not "
            f"in {where}; check the connection, download it first, or pass a local pipeline folder"
        ) from err
    except errors.EntryNotFoundError as err:
        raise ValueError(
            f"{spec.key!r}: expected a diffusers pipeline repository, but a file is missing: {err}".splitlines()[0]
        ) from err
    except errors.HfHubHTTPError as err:
        raise ValueError(f"{spec.key!r}: the Hugging Face Hub refused the request: {err}".splitlines()[0]) from err


def _read_json(spec: ModelSpec, subfolder: str, filename: str) -> dict[str, Any]:
    """One JSON file of a local or hub pipeline (for a hub model, from the cache or the Hub)."""
    if spec.kind == "local":
        path = Path(spec.identifier, subfolder, filename)
        if not path.is_file():
            raise ValueError(
                f"{path}: expected this file in the diffusers pipeline folder {spec.key!r}, but it is missing"
            )
    else:
        hub = require("huggingface_hub")
        with _hub_errors(spec):
            path = Path(
                hub.hf_hub_download(
                    spec.identifier,
                    filename,
                    subfolder=subfolder or None,
                    revision=spec.revision,
                    local_files_only=hub.constants.is_offline_mode(),
                )
            )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: expected a JSON file, but it does not parse ({err})") from err


def unet_param_count(spec: ModelSpec | str) -> int:
    """Count the denoiser (UNet) parameters of a model without allocating its weights.

    The UNet is built from its config on PyTorch's meta device, so counting SDXL's 2.6 B
    parameters takes well under a second and no memory.

    Args:
        spec: A model spec (replica, local directory or hub id; the latter two read only
            ``unet/config.json``).

    Returns:
        The number of UNet parameters.

    Raises:
        ValueError: When the config cannot be read (missing file, hub repository not cached offline).
    """
    spec = _as_spec(spec)
    torch = require("torch")
    if spec.is_replica:
        config = get_replica_config(spec.identifier)["unet"]
    else:
        config = _read_json(spec, "unet", "config.json")
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
        ValueError: For an unknown scheduler class name, listing the available ones, or when the
            config cannot be read.
    """
    spec = _as_spec(spec)
    diffusers = require("diffusers")
    if spec.is_replica:
        own = get_replica_config(spec.identifier)["scheduler"]
        name, config = own["class"], own["config"]
    else:
        config = _read_json(spec, "scheduler", "scheduler_config.json")
        name = config.get("_class_name", "")
    scheduler = _scheduler_class(diffusers, override or name).from_config(config)
    return {
        "class": type(scheduler).__name__,
        "config": {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")},
    }


def native_resolution(spec: ModelSpec | str) -> int:
    """The side in pixels of the square images a model was trained for.

    For hub and local models this is the UNet's ``sample_size`` (latent side) times the VAE's
    downscaling factor ``2 ** (len(block_out_channels) - 1)``, as diffusers pipelines compute their
    default height and width: 1024 for SDXL, 512 for SD 1.5 and SD 2.1-base. Replicas give their
    config's ``resolution``.

    Args:
        spec: Model spec (hub and local models read ``unet/config.json`` and ``vae/config.json``).

    Returns:
        The native image side in pixels.

    Raises:
        ValueError: When a config cannot be read, or its UNet ``sample_size`` is not one square side.
    """
    spec = _as_spec(spec)
    if spec.is_replica:
        return int(get_replica_config(spec.identifier)["resolution"])
    sample_size = _read_json(spec, "unet", "config.json").get("sample_size")
    if isinstance(sample_size, list) and len(set(sample_size)) == 1:
        sample_size = sample_size[0]
    if not isinstance(sample_size, int):
        raise ValueError(
            f"{spec.key!r}: unet/config.json: field 'sample_size': expected one integer side, but got {sample_size!r}"
        )
    vae_blocks = _read_json(spec, "vae", "config.json").get("block_out_channels")
    if not isinstance(vae_blocks, list) or not vae_blocks:
        raise ValueError(
            f"{spec.key!r}: vae/config.json: field 'block_out_channels': expected a non-empty list, "
            f"but got {vae_blocks!r}"
        )
    return sample_size * 2 ** (len(vae_blocks) - 1)


def resolve_revision(spec: ModelSpec | str) -> str | None:
    """The commit a hub model spec stands for, so records name exactly the weights that were measured.

    A branch or tag (or no revision: the default branch) is resolved through the Hub, or offline
    (``HF_HUB_OFFLINE=1``) through the cache's ``refs/``; a 40-hex commit is returned as given.

    Args:
        spec: Model spec.

    Returns:
        The 40-hex commit hash for a hub model; ``None`` for a replica or a local folder.

    Raises:
        ValueError: In one line naming the spec and the remedy, when the repository or revision does
            not exist, or is not in the cache while offline.
    """
    spec = _as_spec(spec)
    if spec.kind != "hub":
        return None
    if spec.revision is not None and _COMMIT_HASH.match(spec.revision):
        return spec.revision
    hub = require("huggingface_hub")
    with _hub_errors(spec):
        resolved = hub.resolve_revision(
            spec.identifier, revision=spec.revision, local_files_only=hub.constants.is_offline_mode()
        )
    return resolved.resolved


def vae_decode_dtype(pipeline_class: str, vae_config: Mapping[str, Any], dtype: Any) -> Any:
    """The dtype the VAE decodes in when the rest of a pipeline runs in ``dtype``, as diffusers does it.

    SDXL's pipeline upcasts a float16 VAE whose config sets ``force_upcast`` (its VAE overflows in
    float16); SD 1.x/2.x pipelines decode in the pipeline dtype, even though ``AutoencoderKL``
    defaults to ``force_upcast=True``. genedge keeps an upcast VAE in float32 once instead of
    casting it on every call.

    Args:
        pipeline_class: Pipeline class name, one of ``SUPPORTED_PIPELINES``.
        vae_config: The VAE's config (a missing ``force_upcast`` means ``AutoencoderKL``'s default, true).
        dtype: ``torch.dtype`` of the pipeline.

    Returns:
        ``torch.float32`` or ``dtype``.

    Raises:
        ValueError: For a pipeline class genedge cannot drive.
    """
    if pipeline_class not in SUPPORTED_PIPELINES:
        raise ValueError(f"Expected a pipeline class in {SUPPORTED_PIPELINES}, but got {pipeline_class!r}")
    torch = require("torch")
    upcast = pipeline_class in _UPCASTING_PIPELINES and dtype == torch.float16 and vae_config.get("force_upcast", True)
    return torch.float32 if upcast else dtype


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


@contextlib.contextmanager
def _default_dtype(dtype: Any) -> Iterator[None]:
    torch = require("torch")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _build_replica(name: str, device: Any, dtype: Any) -> Any:
    torch = require("torch")
    diffusers = require("diffusers")
    config = get_replica_config(name)
    scheduler_cls = _scheduler_class(diffusers, config["scheduler"]["class"])
    xl = config["pipeline"] == "StableDiffusionXLPipeline"
    # Build directly on the target device and in the target dtype: a 2.6 B-parameter UNet initialised
    # on a CPU takes minutes, and one built in float32 and then cast needs twice the memory at its
    # peak (about 14 GB for SDXL). Fork the RNG so a replica is reproducible without touching the
    # caller's seed.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.device(device):
        torch.manual_seed(0)
        with _default_dtype(dtype):
            components = {"unet": _build_unet(config["unet"]), "text_encoder": _text_encoder(config["text_encoder"])}
            if xl:
                components["text_encoder_2"] = _text_encoder(config["text_encoder_2"])
        with _default_dtype(vae_decode_dtype(config["pipeline"], config["vae"], dtype)):
            components["vae"] = diffusers.AutoencoderKL.from_config(config["vae"])
    components["scheduler"] = scheduler_cls.from_config(config["scheduler"]["config"])
    components["tokenizer"] = clip_bpe_tokenizer(**config["tokenizer"])
    if xl:
        components["tokenizer_2"] = clip_bpe_tokenizer(**config["tokenizer_2"])
        return diffusers.StableDiffusionXLPipeline(**components, add_watermarker=False)
    return diffusers.StableDiffusionPipeline(**components, **_NO_SAFETY_CHECKER)


@contextlib.contextmanager
def _library_bars_off() -> Iterator[None]:
    """Hide diffusers' and transformers' loading bars: the profiler shows its own progress."""
    libraries = [require(name).utils.logging for name in ("diffusers", "transformers")]
    enabled = [library.is_progress_bar_enabled() for library in libraries]
    for library in libraries:
        library.disable_progress_bar()
    try:
        yield
    finally:
        for library, was in zip(libraries, enabled):
            if was:
                library.enable_progress_bar()


def _load_pretrained(spec: ModelSpec, dtype: Any) -> Any:
    diffusers = require("diffusers")
    hub = require("huggingface_hub")
    # Read the pipeline class and VAE config first: an unsupported model fails before any weights
    # load, and the VAE loads straight into the dtype it decodes in.
    pipeline_class = _read_json(spec, "", "model_index.json").get("_class_name")
    if pipeline_class not in SUPPORTED_PIPELINES:
        raise ValueError(
            f"Expected a model whose pipeline is one of {SUPPORTED_PIPELINES}, but {spec.key!r} declares "
            f"{pipeline_class!r} in model_index.json"
        )
    vae_dtype = vae_decode_dtype(pipeline_class, _read_json(spec, "vae", "config.json"), dtype)
    # genedge decodes latents itself and never runs the safety checker or the watermarker, so
    # neither is loaded (the checker alone would add 1.2 GB to the measured memory).
    extra = _NO_SAFETY_CHECKER if pipeline_class == "StableDiffusionPipeline" else {"add_watermarker": False}
    # Pin every file to one commit, and stay off the network when offline (otherwise diffusers
    # first tries the Hub and logs a warning for each failed call).
    revision = resolve_revision(spec)
    with _hub_errors(spec), _library_bars_off():
        return diffusers.DiffusionPipeline.from_pretrained(
            spec.identifier,
            revision=revision,
            dtype={"default": dtype, "vae": vae_dtype},
            local_files_only=hub.constants.is_offline_mode(),
            **extra,
        )


def _component_classes(spec: ModelSpec) -> list[tuple[str, str]]:
    # (library, class) of the pipeline and each component it is built from, as its configs name them.
    if spec.is_replica:
        config = get_replica_config(spec.identifier)
        encoders = [config[key]["architecture"] for key in ("text_encoder", "text_encoder_2") if key in config]
        return [
            ("diffusers", config["pipeline"]),
            ("diffusers", "UNet2DConditionModel"),
            ("diffusers", "AutoencoderKL"),
            ("diffusers", config["scheduler"]["class"]),
            ("transformers", "CLIPTokenizer"),
            *(("transformers", encoder) for encoder in encoders),
            ("open_clip.tokenizer", "default_bpe"),  # a replica's tokenizer is built from open_clip's BPE file
        ]
    index = _read_json(spec, "", "model_index.json")
    components = [
        tuple(value)
        for value in index.values()
        if isinstance(value, list) and len(value) == 2 and value[0] in ("diffusers", "transformers")
    ]
    return [("diffusers", str(index.get("_class_name"))), *components]


def import_pipeline_classes(spec: ModelSpec | str, *, scheduler: str | None = None) -> None:
    """Import the classes loading ``spec`` uses: its pipeline's and its components', as its configs name them,
    and the ``scheduler`` class replacing its own (see :func:`load_pipeline`).

    diffusers and transformers import a class's module on first use; done first, a load timer that
    starts after this times loading alone, as peer benchmarks do (one-time imports timed apart).
    A class a library lacks is left to the load, which names it.
    """
    classes = _component_classes(_as_spec(spec)) + ([("diffusers", scheduler)] if scheduler else [])
    for module, name in classes:
        getattr(require(module), name, None)


def load_pipeline(spec: ModelSpec | str, *, device: Any, dtype: Any, scheduler: str | None = None) -> Any:
    """Load (or, for a replica, build) a diffusers pipeline on ``device`` in ``dtype``.

    The VAE is kept in the dtype the pipeline decodes in (:func:`vae_decode_dtype`): float32 for
    SDXL in float16, ``dtype`` otherwise. Stable Diffusion 1.x/2.x pipelines load without their
    safety checker, SDXL ones without the watermarker.

    Args:
        spec: Model spec.
        device: ``torch.device`` to run on.
        dtype: ``torch.dtype`` of the weights, or its name (``"float16"``).
        scheduler: Name of a diffusers scheduler class to use instead of the model's own, built
            from the model's scheduler config.

    Returns:
        The pipeline, with its progress bar disabled (the caller draws its own).

    Raises:
        ValueError: For a pipeline class genedge cannot drive, an unknown scheduler name, or a hub
            model that cannot be found (in one line, naming the remedy).
    """
    spec = _as_spec(spec)
    diffusers = require("diffusers")
    dtype = getattr(require("torch"), dtype) if isinstance(dtype, str) else dtype
    if spec.is_replica:
        pipe = _build_replica(spec.identifier, device, dtype)
    else:
        pipe = _load_pretrained(spec, dtype).to(device)
    if scheduler is not None:
        pipe.scheduler = _scheduler_class(diffusers, scheduler).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_replica(arch: str, folder: str | Path) -> Path:
    """Write the random-weight replica ``arch`` as a diffusers folder, in ``save_pretrained``'s layout.

    ``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/`` (and the SDXL
    second encoder), weights in safetensors: what a user's own saved pipeline looks like, so the paths that
    load a folder (``genedge profile --model FOLDER``, ``genedge serve --model KEY=FOLDER``) run offline. The
    folder is written beside and renamed into place, so an interrupted write leaves nothing that loads.

    Args:
        arch: a replica's name (:func:`list_replicas`), without ``replica:``.
        folder: a new (or empty) folder.

    Returns:
        ``folder`` as a ``Path``.

    Raises:
        ValueError: an unknown replica (listing them), or a ``folder`` that exists and is not an empty folder.
    """
    spec = parse_model_spec(REPLICA_SCHEME + arch)
    folder = Path(folder)
    if folder.exists() and not (folder.is_dir() and not any(folder.iterdir())):
        raise ValueError(f"{folder}: expected a new or empty folder to write the pipeline to, but it holds files")
    torch = require("torch")
    pipe = load_pipeline(spec, device=torch.device("cpu"), dtype=torch.float32)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pipe.save_pretrained(partial, safe_serialization=True)
    if folder.exists():
        folder.rmdir()
    partial.rename(folder)
    return folder
