"""CLIPScore: the per-pair formula, truncation flags, and an open_clip backbone with random weights."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from genedge.profiler import ClipScorer, clip_score_from_features


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
