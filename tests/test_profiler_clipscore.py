"""CLIPScore: the per-pair formula, truncation flags, an open_clip backbone, and weights checked before loading."""

from __future__ import annotations

import hashlib
from pathlib import Path

import huggingface_hub
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from genedge.profiler import ClipScorer, clip_score_from_features
from genedge.profiler.clipscore import resolve_clip_weights


@pytest.fixture(scope="module")
def profiler_tiny_clip() -> ClipScorer:
    return ClipScorer("replica:tiny", None, device=torch.device("cpu"))


def test_clamp_is_per_pair_not_of_the_mean() -> None:
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    text = torch.tensor([[1.0, 0.0], [-1.0, 0.2]])
    scores = clip_score_from_features(image, text)
    assert scores.tolist() == pytest.approx([100.0, 0.0])
    # Clamping the mean instead (torchmetrics' compute()) would give max(100·mean(cos), 0) ≈ 1.0, not 50.
    assert scores.mean().item() == pytest.approx(50.0)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(
        ValueError, match=r"Expected image and text features of the same shape, but got \(2, 3\) and \(1, 3\)"
    ):
        clip_score_from_features(torch.zeros(2, 3), torch.zeros(1, 3))


def test_scores_match_an_independent_computation_and_flag_truncation(profiler_tiny_clip: ClipScorer) -> None:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(5)]
    prompts = ["a red cube", "a blue sphere", "word " * 100, "a cat", "a dog on a skateboard"]
    with pytest.warns(UserWarning, match=r"1 of 5 prompts exceed 77 tokens and were truncated"):
        scores, truncated = profiler_tiny_clip.score(images, prompts)
    assert truncated == [False, False, True, False, False]
    model, preprocess, tokenizer = profiler_tiny_clip.model, profiler_tiny_clip.preprocess, profiler_tiny_clip.tokenizer
    with torch.no_grad():
        image_features = model.encode_image(torch.stack([preprocess(i) for i in images]))
        text_features = model.encode_text(tokenizer(prompts))
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    cosine = (image_features * text_features).sum(-1).double().numpy()
    assert scores == pytest.approx(list(100 * np.maximum(cosine, 0)), abs=1e-4)
    assert all(0.0 <= s <= 100.0 for s in scores)


def test_random_weights_are_reproducible_and_the_convention_is_recorded(profiler_tiny_clip: ClipScorer) -> None:
    again = ClipScorer("replica:tiny", None, device=torch.device("cpu"))
    for a, b in zip(profiler_tiny_clip.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
    convention = profiler_tiny_clip.convention
    assert (convention.backbone, convention.pretrained) == ("replica:tiny", "none")
    assert convention.formula == "100*max(cos(E_I, E_C), 0) per image"
    assert "77 tokens" in convention.truncation and "Normalize" in convention.preprocess


# --- weights are checked before anything loads ------------------------------------------------------

_HUB_REPO = "timm/vit_large_patch14_clip_224.openai"  # where open_clip fetches ViT-L-14-quickgelu/openai


@pytest.fixture()
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF cache, and open_clip forbidden to build anything (nothing may load before the check)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was built before the weights were checked")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", no_load)
    return cache


def test_offline_without_cached_weights_fails_before_loading_and_names_both_alternatives(
    empty_hub_cache: Path,
) -> None:
    with pytest.raises(ValueError) as caught:
        ClipScorer(device=torch.device("cpu"))
    message = str(caught.value)
    assert message == (
        "CLIP weights for ViT-L-14-quickgelu/openai are not in the local cache and the hub is offline: "
        "pass --clip-pretrained /path/to/open_clip_pytorch_model.bin (a local weights file), "
        "or --clip-backbone replica:tiny --clip-pretrained none for a smoke run whose scores mean nothing"
    )
    assert "\n" not in message


def test_cached_tag_weights_resolve_without_the_network(empty_hub_cache: Path) -> None:
    # The layout huggingface_hub writes: refs/main holds the commit, the file lies under snapshots/<commit>/.
    repo = empty_hub_cache / f"models--{_HUB_REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "open_clip_pytorch_model.bin").write_bytes(b"weights")
    weights = resolve_clip_weights("ViT-L-14-quickgelu", "openai")
    assert (weights.architecture, weights.pretrained, weights.label) == ("ViT-L-14-quickgelu", "openai", "openai")


def test_online_download_failure_fails_before_loading(empty_hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def unreachable(*args: object, **kwargs: object) -> str:
        raise OSError("Name or service not known\nmore detail")

    monkeypatch.setattr(open_clip, "download_pretrained", unreachable)
    with pytest.raises(
        ValueError,
        match=r"^CLIP weights for ViT-L-14-quickgelu/openai could not be downloaded "
        r"\(Name or service not known\): pass --clip-pretrained .* --clip-backbone replica:tiny",
    ):
        ClipScorer(device=torch.device("cpu"))


def test_unknown_tag_lists_the_known_tags(empty_hub_cache: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"--clip-pretrained: 'opena1' is not a pretrained tag of ViT-L-14-quickgelu nor a file; "
        r"pass one of openai, .*, or a local weights file",
    ):
        ClipScorer("ViT-L-14-quickgelu", "opena1", device=torch.device("cpu"))


def test_missing_local_file_is_an_error(empty_hub_cache: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "open_clip_pytorch_model.bin"
    with pytest.raises(ValueError, match=r"--clip-pretrained: '.*open_clip_pytorch_model.bin' is not a file"):
        ClipScorer("ViT-L-14-quickgelu", str(missing), device=torch.device("cpu"))


def test_a_replica_takes_no_tag_and_an_unknown_backbone_is_named(empty_hub_cache: Path) -> None:
    with pytest.raises(ValueError, match=r"replica backbone 'replica:tiny' takes no pretrained tag, but got 'openai'"):
        resolve_clip_weights("replica:tiny", "openai")
    with pytest.raises(ValueError, match=r"unknown CLIP replica 'replica:huge'; available: replica:tiny"):
        resolve_clip_weights("replica:huge", None)
    with pytest.raises(ValueError, match=r"unknown open_clip model 'ViT-X'; pass replica:tiny or one of .*ViT-L-14"):
        resolve_clip_weights("ViT-X", None)


def test_a_local_weights_file_loads_through_open_clip_and_is_labelled_by_content(
    profiler_tiny_clip: ClipScorer, tmp_path: Path
) -> None:
    # Perturbed weights, so that loading them cannot pass for the seeded random initialisation.
    state = {
        k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
        for k, v in profiler_tiny_clip.model.state_dict().items()
    }
    expected = ClipScorer("replica:tiny", None, device=torch.device("cpu"))
    expected.model.load_state_dict(state)
    first, second = tmp_path / "a" / "tiny.bin", tmp_path / "b" / "tiny.bin"
    for path in (first, second):
        path.parent.mkdir()
        torch.save(state, path)
    loaded = ClipScorer("replica:tiny", str(first), device=torch.device("cpu"))
    for (name, a), b in zip(loaded.model.state_dict().items(), state.values()):
        assert torch.equal(a, b), name
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]
    prompts = ["a red cube", "a cat", "a dog"]
    assert loaded.score(images, prompts) == expected.score(images, prompts)
    digest = hashlib.sha256(first.read_bytes()).hexdigest()[:16]
    assert loaded.convention.pretrained == f"file:tiny.bin#sha256:{digest}"
    # The same weights elsewhere on disk give the same convention: the label names content, not a path.
    assert resolve_clip_weights("replica:tiny", str(second)).label == loaded.convention.pretrained
