"""Model specs, replica configs against published parameter counts, and the offline tokenizer."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import json
from pathlib import Path

import pytest

from genedge.contract import JsonRegistry
from genedge.profiler import (
    add_replica_path,
    clip_bpe_tokenizer,
    get_replica_config,
    list_replicas,
    parse_model_spec,
    unet_param_count,
)
from genedge.profiler import models as models_module

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
