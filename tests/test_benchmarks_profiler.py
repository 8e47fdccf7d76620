"""benchmarks/profiler_overhead.py: a short run prints time, each part of a call, memory and load (no speed goal)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT, genedge_env

SCRIPT = ROOT / "benchmarks" / "profiler_overhead.py"


@pytest.mark.slow
def test_a_short_run_prints_each_part_of_a_call_and_the_fresh_process_figures_beside_the_plain_loops() -> None:
    args = ["--steps", "2", "--resolution", "64", "--rounds", "1", "--processes", "1"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, env=genedge_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f"# python benchmarks/profiler_overhead.py {' '.join(args)} — ")
    assert "median ratio: " in out and "median step latency: " in out
    number = r"-?\d+\.\d+"
    for part in ("text encoding", "denoise outside steps", "steps", "decode", "outside the stages", "whole call"):
        assert re.search(rf"^  {part} +{number} +{number} +[+-]\d+\.\d%$", out, re.MULTILINE), part
    for figure in ("imports left for the load, s", "model load, s", "pipeline peak, MiB", "whole-process peak, MiB"):
        assert re.search(rf"^  {re.escape(figure)} +{number} +{number} +{number}$", out, re.MULTILINE), figure
