"""Prompt sets and category mappings (DESIGN §2.1)."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
from conftest import PARTIPROMPTS, needs_partiprompts

from genedge.profiler import get_category_mapping, list_category_mappings, load_prompt_set


def _write_tsv(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    lines = ["Prompt\tCategory\tChallenge\tNote"] + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@needs_partiprompts
def test_partiprompts_paper_mapping_counts_and_hash() -> None:
    prompts = load_prompt_set(str(PARTIPROMPTS))
    assert Counter(p.category for p in prompts.prompts) == {
        "Basic": 272,
        "Detail": 544,
        "Imagination": 150,
        "Complex": 113,
    }
    assert prompts.sha256 == hashlib.sha256(PARTIPROMPTS.read_bytes()).hexdigest()
    assert prompts.column == "Challenge" and prompts.category_mapping["name"] == "paper4"


@needs_partiprompts
def test_partiprompts_other_mappings_keep_the_leading_quote() -> None:
    challenges = load_prompt_set(str(PARTIPROMPTS), mapping="challenge")
    categories = load_prompt_set(str(PARTIPROMPTS), mapping="category")
    assert len(challenges.prompts) == len(categories.prompts) == 1632
    assert len(set(challenges.categories)) == 11 and len(set(categories.categories)) == 12
    quoted = [p.text for p in categories.prompts if p.text.startswith('"')]
    assert quoted == [
        (
            '"G I G G L E" painted in thick colorful lettering as graffiti on a faded red brick wall '
            "with a splotch of exploding white paint."
        )
    ]
    assert categories.prompts[0].prompt_id == "p2-00000"


def test_own_file_labels_ids_and_seeded_subsets(tmp_path: Path) -> None:
    rows = [
        (f'"quoted" prompt {i}', "Animals", ["Basic", "Complex", "Simple Detail", "Quantity"][i % 4], "")
        for i in range(40)
    ]
    source = str(_write_tsv(tmp_path / "own.tsv", rows))
    full = load_prompt_set(source)
    assert len(full.prompts) == 30  # Quantity is not one of the paper's four
    assert full.prompts[0].text == '"quoted" prompt 0' and full.prompts[0].p2_category == "Animals"
    assert {p.category for p in full.prompts if p.challenge == "Simple Detail"} == {"Detail"}
    subset = load_prompt_set(source, per_category=3, seed=7)
    assert Counter(p.category for p in subset.prompts) == {"Basic": 3, "Complex": 3, "Detail": 3}
    assert subset == load_prompt_set(source, per_category=3, seed=7)
    assert len(load_prompt_set(source, per_category=3, limit=4, seed=7).prompts) == 4


def test_registry_lists_and_copies() -> None:
    assert list_category_mappings() == ["category", "challenge", "paper4"]
    mapping = get_category_mapping("paper4")
    mapping["labels"].clear()
    assert get_category_mapping("paper4")["labels"]["Detail"] == ["Simple Detail", "Fine-grained Detail"]
    with pytest.raises(
        ValueError, match=r"Expected a known category mapping, but got 'nope'. Available: category, challenge, paper4"
    ):
        get_category_mapping("nope")


def test_file_without_the_mapped_column_is_an_error(tmp_path: Path) -> None:
    source = tmp_path / "no_challenge.csv"
    source.write_text("Prompt,Category\na cat,Animals\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no_challenge.csv: Challenge: category mapping 'paper4' reads this column"):
        load_prompt_set(str(source))


def test_empty_prompt_set_is_an_error(tmp_path: Path) -> None:
    source = _write_tsv(tmp_path / "empty.tsv", [("a cat", "Animals", "Quantity", "")])
    with pytest.raises(ValueError, match=r"expected at least one prompt .* but got an empty prompt set from 1 rows"):
        load_prompt_set(str(source))
    with pytest.raises(ValueError, match=r"Expected per_category ≥ 1, but got 0"):
        load_prompt_set(str(source), per_category=0)
