"""benchmarks/router_speed.py: its quick mode runs on any prompt file and prints every section (no speed asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
from conftest import ROOT

from genedge import data

SCRIPT = ROOT / "benchmarks" / "router_speed.py"
PROMPTS = [
    "a red apple on a wooden table",
    "an astronaut riding a horse on the moon, oil painting",
    "the word 'genedge' written in neon letters above a city street at night",
    "a cat",
    "two dogs playing chess in a library, one wearing glasses",
    "a photograph of a bowl of ramen with a soft-boiled egg",
    "an abstract painting of love",
    "a blue bicycle leaning against a yellow wall",
]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_quick_run_on_a_small_prompt_file_prints_throughput_and_budget(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.csv"
    pd.DataFrame({"Prompt": PROMPTS, "Category": ["Basic"] * len(PROMPTS)}).to_csv(prompts, index=False)
    proc = _run("--quick", "--prompts", str(prompts))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f"# python benchmarks/router_speed.py --quick --prompts {prompts} — ")
    assert f"({len(PROMPTS)} rows of its Prompt column" in out
    assert "1. One-time costs" in out and "paper4-tfidf" in out
    assert "TF-IDF throughput: " in out and "prompts/s batched" in out and "goal >= 10,000" in out
    assert "paper4-minilm" not in out.split("3. Router share")[0]  # quick mode: TF-IDF only
    budget = out.split("3. Router share", 1)[1]
    assert "TF-IDF med %" in budget and "MiniLM p99 %" in budget
    for name in (*data.shipped_tables(), "SLO 1 s", "SLO 20 s"):
        assert f"\n  {name} " in budget


def test_a_missing_prompt_file_is_a_clear_error(tmp_path: Path) -> None:
    proc = _run("--quick", "--prompts", str(tmp_path / "absent.tsv"))
    assert proc.returncode == 2
    assert "no prompt file at" in proc.stderr and "--prompts FILE" in proc.stderr
