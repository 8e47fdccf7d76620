"""Real data: the quality fit reproduces the per-Challenge SD3-Medium CLIPScore statistics of ditserving-sd3-parti.

The data set's README states mean ± SD per PartiPrompts Challenge (n = 20) for five
configurations, rounded to 2 decimals. Its SD is the sample SD (ddof = 1); the
table's std is the Normal MLE (ddof = 0), so the test compares
``std · √(n/(n−1))`` with the README's SD, and the means directly.
"""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from conftest import SHARED_DATA

from genedge.calibrate import fit_quality

DATA = SHARED_DATA / "ditserving-sd3-parti"
# README column → file.
FILES = {
    "diffusers_50step": "clip_scores_by_prompt_diffusers.json",
    "unlabelled": "clip_scores_by_prompt.json",
    "cache_1": "clip_scores_by_prompt_custom_1.json",
    "cache_2": "clip_scores_by_prompt_custom_2.json",
    "cache_4": "clip_scores_by_prompt_custom_4.json",
}
# The README rounds to 2 decimals.
TOLERANCE = 0.005 + 1e-9

pytestmark = pytest.mark.skipif(
    not DATA.is_dir(),
    reason=f"real data not present: {DATA} (the shared data folder "
    f"sits beside the repository in the development setup)",
)


def _readme_table() -> dict[str, dict[str, tuple[int, float, float]]]:
    """Challenge → column → (n, mean, sample SD), parsed from the README's summary table."""
    lines = (DATA / "README.md").read_text(encoding="utf-8").splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| Challenge | n |"))
    columns = [c.strip() for c in lines[header].strip("|").split("|")][2:]
    table = {}
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        values = [re.fullmatch(r"([\d.]+) ± ([\d.]+)", c).groups() for c in cells[2:]]
        table[cells[0]] = {col: (int(cells[1]), float(m), float(s)) for col, (m, s) in zip(columns, values)}
    return table


def _scores_by_challenge(file: str) -> dict[str, np.ndarray]:
    with (DATA / "DERIVED_p2_key_map.tsv").open(encoding="utf-8", newline="") as handle:
        # Quoting off: one PartiPrompts prompt begins with a double quote.
        challenge = {
            row["key"]: row["Challenge"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        }
    scores = json.loads((DATA / file).read_text(encoding="utf-8"))
    grouped: dict[str, list[float]] = {"All": []}
    for key, score in scores.items():
        # The cache-variant files suffix the key with the cache interval.
        base = re.sub(r"_cache_\d+$", "", key)
        grouped.setdefault(challenge[base], []).append(score)
        grouped["All"].append(score)
    return {name: np.asarray(values) for name, values in grouped.items()}


@pytest.mark.parametrize("column", list(FILES))
def test_fit_reproduces_the_readme_per_challenge_means_and_sds(column: str) -> None:
    expected = _readme_table()
    assert len(expected) == 12  # 11 Challenges and "All"
    scores = _scores_by_challenge(FILES[column])
    assert sorted(scores) == sorted(expected)
    for challenge, values in scores.items():
        n, mean, sample_sd = expected[challenge][column]
        fit = fit_quality(values)
        assert fit.n == n
        assert fit.mean == pytest.approx(mean, abs=TOLERANCE), challenge
        assert fit.std * np.sqrt(n / (n - 1)) == pytest.approx(sample_sd, abs=TOLERANCE), challenge
        # The MLE std itself is the population SD, smaller than the README's by √((n−1)/n).
        assert fit.std == pytest.approx(values.std(ddof=0))
