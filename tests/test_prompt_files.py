"""One prompt-file reader for the profiler and the planner: PartiPrompts as a user has it.

The TSV is read exactly; a CSV written by pandas (fields with commas and quotes quoted), with a
byte-order mark or CRLF line ends gives the same counts through the profiler and through
``genedge plan --prompts``; a Latin-1 file is refused naming the file and the byte offset.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from conftest import PARTIPROMPTS, genedge_in_process, needs_partiprompts

from genedge.contract import ArtifactError, read_prompt_file
from genedge.profiler import load_prompt_set

PAPER4 = {"Basic": 272, "Detail": 544, "Imagination": 150, "Complex": 113}


def _partiprompts() -> pd.DataFrame:
    # quoting=3 (QUOTE_NONE): one prompt begins with a double quote.
    return pd.read_csv(PARTIPROMPTS, sep="\t", quoting=3, dtype=str, keep_default_na=False)


def _variants(folder: Path) -> dict[str, Path]:
    frame = _partiprompts()
    files = {
        "csv": folder / "p2.csv",
        "bom": folder / "p2-bom.csv",
        "crlf": folder / "p2-crlf.csv",
        "tsv-crlf": folder / "p2-crlf.tsv",
    }
    frame.to_csv(files["csv"], index=False)
    frame.to_csv(files["bom"], index=False, encoding="utf-8-sig")
    frame.to_csv(files["crlf"], index=False, lineterminator="\r\n")
    files["tsv-crlf"].write_bytes(PARTIPROMPTS.read_bytes().replace(b"\n", b"\r\n"))
    return files


def _plan_counts(capsys: pytest.CaptureFixture[str], prompts: Path) -> subprocess.CompletedProcess[str]:
    return genedge_in_process(capsys, "plan", "--prompts", prompts, "--compare", "paper")


@needs_partiprompts
def test_pandas_csv_bom_and_crlf_count_like_the_tsv(tmp_path: Path) -> None:
    frame = _partiprompts()
    assert frame["Prompt"].str.contains(",").sum() > 50  # quoting matters in this file
    tsv = read_prompt_file(PARTIPROMPTS)
    for name, path in _variants(tmp_path).items():
        table = read_prompt_file(path)
        assert table.columns == tsv.columns and table.rows == tsv.rows, name
        prompts = load_prompt_set(str(path))
        assert Counter(p.category for p in prompts.prompts) == PAPER4, name
        assert prompts.sha256 == tsv.sha256(), name


@needs_partiprompts
@pytest.mark.slow
def test_genedge_plan_counts_each_variant_like_the_tsv(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    expected = [
        "1,632 prompts from",
        "1,079 labelled by Challenge, 553 routed by paper4-tfidf",
        "workload: 1632 requests — Basic 302, Detail 909, Imagination 233, Complex 188",
    ]
    for path in [PARTIPROMPTS, *_variants(tmp_path).values()]:
        done = _plan_counts(capsys, path)
        assert done.returncode == 0, (path, done.stderr)
        assert all(line in done.stdout for line in expected), path


def test_quoted_csv_fields_and_a_leading_quote_in_tsv(tmp_path: Path) -> None:
    rows = [["Prompt", "Challenge"], ['"G I G G L E" painted, with "quotes"', "Basic"], ["a, b and c", "Complex"]]
    tsv = tmp_path / "p.tsv"
    tsv.write_text("\n".join("\t".join(r) for r in rows) + "\n", encoding="utf-8")
    csv_file = tmp_path / "p.csv"
    pd.DataFrame(rows[1:], columns=rows[0]).to_csv(csv_file, index=False)
    assert read_prompt_file(tsv).rows == read_prompt_file(csv_file).rows == tuple(tuple(r) for r in rows[1:])


def test_latin1_file_is_refused_naming_file_and_byte(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("Prompt,Challenge\na caf\u00e9 at night,Basic\n".encode("latin-1"))
    with pytest.raises(ArtifactError, match=r"latin1.csv: byte 22: not UTF-8 text"):
        read_prompt_file(path)
    with pytest.raises(ArtifactError, match=r"latin1.csv: byte 22: not UTF-8 text"):
        load_prompt_set(str(path))
    done = _plan_counts(capsys, path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"genedge plan: error: {path}: byte 22: not UTF-8 text; expected a UTF-8 prompt file (save it as UTF-8)"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"line 1: expected a header row naming the columns, but the file is empty"),
        ("Prompt\tChallenge\na cat\n", r"line 2: expected 2 tab-separated fields as in the header, but got 1"),
        ("Prompt\tPrompt\na\tb\n", r"line 1: expected unique column names, but \['Prompt'\] repeat"),
    ],
)
def test_malformed_tsv_names_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ArtifactError, match=message):
        read_prompt_file(path)
