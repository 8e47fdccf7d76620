"""Model specs, replica configs against published parameter counts, and the offline tokenizer."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import huggingface_hub.errors as hub_errors
import pytest
import torch
from tiny_pipelines import TINY_COMMIT, lay_out_hub_cache, use_hub_cache

from genedge.contract import JsonRegistry
from genedge.profiler import (
    add_replica_path,
    clip_bpe_tokenizer,
    get_replica_config,
    list_replicas,
    load_pipeline,
    parse_model_spec,
    scheduler_config,
    unet_param_count,
)
from genedge.profiler import models as models_module
from genedge.profiler.models import native_resolution, resolve_revision, vae_decode_dtype

SHIPPED = [
    "bk-sdm-base",
    "bk-sdm-small",
    "bk-sdm-tiny",
    "sd-turbo",
    "sd15",
    "sd21-base",
    "sdxl-base",
    "sdxl-turbo",
    "tiny",
    "tiny-xl",
]
# Published exact UNet counts (segmind/distill-sd README; PUBLISHED.md §1.1).
EXACT = {"sd15": 859_520_964, "bk-sdm-base": 579_384_964, "bk-sdm-tiny": 323_384_964}


def test_every_architecture_is_shipped() -> None:
    assert list_replicas() == SHIPPED


def _resident_peak_bytes() -> int:
    """This process's peak resident memory since the last reset (VmHWM)."""
    status = Path("/proc/self/status").read_text(encoding="utf-8")
    return 1024 * int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def _reset_resident_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")  # resets VmHWM to the current RSS


@pytest.mark.parametrize("name", SHIPPED)
def test_replica_unet_parameters_match_published(name: str) -> None:
    unet_param_count("replica:tiny")  # the first call pays diffusers' import
    try:
        _reset_resident_peak()
    except OSError:
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the resident peak")
    before = _resident_peak_bytes()
    count = unet_param_count(f"replica:{name}")
    # Built on the meta device: no weights allocated (SDXL's would be 10 GB at float32, SD 1.5's 3.4 GB).
    assert _resident_peak_bytes() - before < 4 * count * 0.05 + 64 * 2**20
    published = get_replica_config(name)["published_unet_params"]
    if name.startswith("tiny"):
        assert published is None and count < 200_000
        return
    if name in EXACT:
        assert published["rel_tol"] == 0.0 and count == EXACT[name] == published["value"]
    else:
        assert abs(count - published["value"]) <= published["rel_tol"] * published["value"]


def test_parse_model_specs(tmp_path: Path) -> None:
    assert parse_model_spec("replica:sd15").is_replica
    hub = parse_model_spec("stabilityai/stable-diffusion-2-1@v1.0")
    assert (hub.kind, hub.identifier, hub.revision, hub.key) == (
        "hub",
        "stabilityai/stable-diffusion-2-1",
        "v1.0",
        "stabilityai/stable-diffusion-2-1@v1.0",
    )
    assert parse_model_spec(str(tmp_path)).kind == "local"


@pytest.mark.parametrize("spec", ["replica:sd99", "not a model", "org/name@"])
def test_unknown_model_spec_lists_the_replicas(spec: str) -> None:
    with pytest.raises(ValueError, match=r"Expected .* but got .*sd15, .*sdxl-turbo"):
        parse_model_spec(spec)


def test_a_bad_replica_file_is_an_error_naming_file_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text(json.dumps({"name": "broken", "pipeline": "StableDiffusionPipeline"}), encoding="utf-8")
    monkeypatch.setattr(
        models_module,
        "_REPLICAS",
        JsonRegistry("replica config", "replica architecture", [], models_module._REQUIRED_REPLICA_FIELDS),
    )
    add_replica_path(bad)
    with pytest.raises(
        ValueError, match=r"broken.json: resolution: expected this field in a replica config, but it is missing"
    ):
        list_replicas()


def test_offline_clip_tokenizer_matches_open_clip() -> None:
    import open_clip

    tokenizer = clip_bpe_tokenizer()
    assert len(tokenizer) == 49_408 and tokenizer.model_max_length == 77
    text = '"G I G G L E" painted on a café wall'
    ids = tokenizer(text, padding="max_length", max_length=77, truncation=True).input_ids
    reference = open_clip.get_tokenizer("ViT-L-14")([text])[0].tolist()
    length = reference.index(49_407) + 1
    assert ids[:length] == reference[:length]
    assert clip_bpe_tokenizer(pad_token="!").pad_token_id == 0


# --- local folders and hub ids (real diffusers files saved from the tiny replicas) -----------------

OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture
def hub_cache(tiny_folder: Path, tiny_xl_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline cache where ``org/tiny`` main is the SD pipeline and its branch ``xl`` the SDXL one."""
    cache = tmp_path / "hub"
    lay_out_hub_cache(tiny_folder, cache, "org/tiny")
    lay_out_hub_cache(tiny_xl_folder, cache, "org/tiny", commit=OTHER_COMMIT, branch="xl")
    use_hub_cache(monkeypatch, cache)
    return cache


def test_a_saved_folder_reads_like_its_replica(tiny_folder: Path) -> None:
    spec = str(tiny_folder)
    assert scheduler_config(spec) == scheduler_config("replica:tiny")
    assert scheduler_config(spec, "EulerDiscreteScheduler")["class"] == "EulerDiscreteScheduler"
    assert unet_param_count(spec) == unet_param_count("replica:tiny")
    # UNet sample_size 8 × VAE factor 2 (the replica's nominal 64 is not derived from its configs).
    assert native_resolution(spec) == 16
    assert resolve_revision(spec) is None and resolve_revision("replica:tiny") is None


@pytest.mark.parametrize(
    ("revision", "commit", "replica"),
    [
        ("", TINY_COMMIT, "tiny"),
        ("@main", TINY_COMMIT, "tiny"),
        (f"@{TINY_COMMIT}", TINY_COMMIT, "tiny"),
        ("@xl", OTHER_COMMIT, "tiny-xl"),
        (f"@{OTHER_COMMIT}", OTHER_COMMIT, "tiny-xl"),
    ],
)
def test_a_hub_id_reads_its_revision_from_the_offline_cache(
    hub_cache: Path, revision: str, commit: str, replica: str
) -> None:
    spec = "org/tiny" + revision
    assert resolve_revision(spec) == commit
    assert scheduler_config(spec) == scheduler_config(f"replica:{replica}")
    assert unet_param_count(spec) == unet_param_count(f"replica:{replica}")
    assert native_resolution(spec) == 16


def _load_on_cpu(spec: str) -> Any:
    return load_pipeline(spec, device=torch.device("cpu"), dtype=torch.float32)


@pytest.mark.parametrize(
    "call",
    [resolve_revision, scheduler_config, unet_param_count, native_resolution, _load_on_cpu],
    ids=lambda f: f.__name__,
)
@pytest.mark.parametrize("spec", ["org/missing", "org/tiny@no-such-branch"])
def test_a_hub_model_missing_offline_is_a_one_line_error(hub_cache: Path, spec: str, call: Any) -> None:
    with pytest.raises(ValueError) as info:
        call(spec)
    message = str(info.value)
    assert "\n" not in message and message.startswith(repr(spec))
    assert "not in the Hugging Face cache" in message and "HF_HUB_OFFLINE is set" in message
    assert "local pipeline folder" in message


def test_a_commit_not_in_the_cache_resolves_to_itself_but_does_not_load(hub_cache: Path) -> None:
    spec = "org/tiny@" + "a" * 40
    assert resolve_revision(spec) == "a" * 40
    with pytest.raises(ValueError, match=r"^'org/tiny@a{40}': revision 'a{40}' of 'org/tiny' is not in the"):
        load_pipeline(spec, device=torch.device("cpu"), dtype=torch.float32)


def _http_error(cls: type[Exception], status: int) -> Exception:
    # Built without the HTTP response their constructor wants: only the message matters here.
    error = cls.__new__(cls)
    Exception.__init__(error, f"{status} error\nsecond line")
    return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (lambda: _http_error(hub_errors.RepositoryNotFoundError, 404), "has no repository 'org/tiny'"),
        (lambda: _http_error(hub_errors.RevisionNotFoundError, 404), "but revision 'v9' does not exist"),
        (lambda: _http_error(hub_errors.RemoteEntryNotFoundError, 404), "expected a diffusers pipeline repository"),
        (lambda: _http_error(hub_errors.HfHubHTTPError, 500), "the Hugging Face Hub refused the request: 500"),
        (lambda: hub_errors.LocalEntryNotFoundError("connection refused"), "could not be reached"),
    ],
    ids=["repository", "revision", "file", "http", "unreachable"],
)
def test_hub_errors_online_become_one_line_errors(monkeypatch: pytest.MonkeyPatch, error: Any, expected: str) -> None:
    import huggingface_hub

    def fail(*args: Any, **kwargs: Any) -> None:
        raise error()

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    with pytest.raises(ValueError, match=r"^'org/tiny@v9': .*" + re.escape(expected)) as info:
        scheduler_config("org/tiny@v9")
    assert "\n" not in str(info.value)


def test_a_local_folder_missing_a_config_names_the_file(tiny_folder: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_folder, tmp_path / "pipeline")
    (folder / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(ValueError, match=r"scheduler_config.json: expected this file in the diffusers pipeline"):
        scheduler_config(str(folder))


def test_native_resolution_of_real_configs(tmp_path: Path) -> None:
    # SDXL's unet/config.json and vae/config.json (the two fields that matter), without weights.
    (tmp_path / "unet").mkdir()
    (tmp_path / "vae").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"sample_size": 128}), encoding="utf-8")
    (tmp_path / "vae" / "config.json").write_text(
        json.dumps({"block_out_channels": [128, 256, 512, 512]}), encoding="utf-8"
    )
    assert native_resolution(str(tmp_path)) == 1024
    assert [native_resolution(f"replica:{n}") for n in ("sdxl-base", "sd15", "sd21-base")] == [1024, 512, 512]
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"sample_size": [96, 64]}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"unet/config.json: field 'sample_size': expected one integer side"):
        native_resolution(str(tmp_path))


def _dtypes(pipe: Any) -> dict[str, frozenset[Any]]:
    """Parameter dtypes of each model component of a pipeline."""
    names = ["unet", "vae", "text_encoder", "text_encoder_2"]
    return {
        n: frozenset(p.dtype for p in getattr(pipe, n).parameters())
        for n in names
        if getattr(pipe, n, None) is not None
    }


def test_load_a_saved_folder_and_generate(tiny_folder: Path, capfd: pytest.CaptureFixture[str]) -> None:
    pipe = load_pipeline(
        str(tiny_folder), device=torch.device("cpu"), dtype=torch.float32, scheduler="EulerDiscreteScheduler"
    )
    assert type(pipe).__name__ == "StableDiffusionPipeline" and pipe.safety_checker is None
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert _dtypes(pipe) == {n: {torch.float32} for n in ("unet", "vae", "text_encoder")}
    latents = pipe("a red cube", num_inference_steps=2, height=16, width=16, output_type="latent").images
    assert latents.shape == (1, 4, 8, 8) and torch.isfinite(latents).all()
    assert "safety" not in capfd.readouterr().err.lower()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spec", "dtype", "pipeline", "vae_dtype"),
    [
        ("org/tiny", torch.float16, "StableDiffusionPipeline", torch.float16),  # force_upcast, but SD ignores it
        ("org/tiny@xl", torch.float16, "StableDiffusionXLPipeline", torch.float32),
        ("org/tiny@xl", torch.bfloat16, "StableDiffusionXLPipeline", torch.bfloat16),
        (f"org/tiny@{OTHER_COMMIT}", torch.float32, "StableDiffusionXLPipeline", torch.float32),
    ],
)
def test_load_a_hub_id_offline(
    hub_cache: Path, capfd: pytest.CaptureFixture[str], spec: str, dtype: Any, pipeline: str, vae_dtype: Any
) -> None:
    pipe = load_pipeline(spec, device=torch.device("cpu"), dtype=dtype)
    assert type(pipe).__name__ == pipeline
    assert pipe.vae.config.force_upcast
    dtypes = _dtypes(pipe)
    assert dtypes.pop("vae") == {vae_dtype} and set(dtypes.values()) == {frozenset({dtype})}
    # Offline, diffusers is never asked to reach the Hub (it would log a warning for each try).
    err = capfd.readouterr().err
    assert "connect to the Hub" not in err and "reach the Hub" not in err


def test_an_unsupported_pipeline_fails_before_loading_weights(tiny_folder: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_folder, tmp_path / "pipeline")
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "FluxPipeline"}), encoding="utf-8")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"pipeline is one of .* declares 'FluxPipeline' in model_index.json"):
        load_pipeline(str(folder), device=torch.device("cpu"), dtype=torch.float32)


@pytest.mark.parametrize(
    ("pipeline", "force_upcast", "dtype", "expected"),
    [
        ("StableDiffusionPipeline", True, torch.float16, torch.float16),
        ("StableDiffusionPipeline", False, torch.float16, torch.float16),
        ("StableDiffusionXLPipeline", True, torch.float16, torch.float32),
        ("StableDiffusionXLPipeline", False, torch.float16, torch.float16),
        ("StableDiffusionXLPipeline", True, torch.bfloat16, torch.bfloat16),
        ("StableDiffusionXLPipeline", True, torch.float32, torch.float32),
        ("StableDiffusionPipeline", True, torch.float32, torch.float32),
    ],
)
def test_vae_decode_dtype_follows_the_pipeline_class(
    pipeline: str, force_upcast: bool, dtype: Any, expected: Any
) -> None:
    assert vae_decode_dtype(pipeline, {"force_upcast": force_upcast}, dtype) == expected


def test_vae_decode_dtype_defaults_and_rejects() -> None:
    assert vae_decode_dtype("StableDiffusionXLPipeline", {}, torch.float16) == torch.float32  # AutoencoderKL default
    with pytest.raises(ValueError, match=r"Expected a pipeline class in .* but got 'FluxPipeline'"):
        vae_decode_dtype("FluxPipeline", {}, torch.float16)


@pytest.mark.parametrize(
    ("name", "dtype", "vae_dtype"),
    [("tiny", torch.bfloat16, torch.bfloat16), ("tiny-xl", torch.float16, torch.float32)],
)
def test_a_replica_is_built_in_the_target_dtype(name: str, dtype: Any, vae_dtype: Any) -> None:
    from torch.nn.modules.module import (
        register_module_buffer_registration_hook,
        register_module_parameter_registration_hook,
    )

    created: list[tuple[str, Any]] = []
    hooks = [
        register_module_parameter_registration_hook(lambda m, n, p: created.append((type(m).__name__, p.dtype))),
        register_module_buffer_registration_hook(lambda m, n, b: created.append((type(m).__name__, b.dtype))),
    ]
    state = torch.random.get_rng_state()
    try:
        pipe = load_pipeline(f"replica:{name}", device=torch.device("cpu"), dtype=dtype)
    finally:
        for hook in hooks:
            hook.remove()
    # Every floating tensor was created in its final dtype: nothing was built in float32 and cast.
    floating = {d for _, d in created if d is not None and d.is_floating_point}
    assert floating == {dtype, vae_dtype}
    dtypes = _dtypes(pipe)
    assert dtypes.pop("vae") == {vae_dtype} and set(dtypes.values()) == {frozenset({dtype})}
    assert torch.get_default_dtype() == torch.float32
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    again = load_pipeline(f"replica:{name}", device=torch.device("cpu"), dtype=dtype)
    assert all(torch.equal(a, b) for a, b in zip(pipe.unet.parameters(), again.unet.parameters(), strict=True))
