"""``genedge calibrate`` through a real subprocess: table, summary, figures, and clear input errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_genedge

from genedge.calibrate import load_table
from genedge.cli import main
from genedge.testing import QualityTruth, SyntheticModel, synthetic_run, write_run

MODELS = [
    SyntheticModel(
        key="tiny",
        quality={c: QualityTruth(a=30.0 + i, b=4.0, kappa=6.0, std=2.5) for i, c in enumerate(("Basic", "Detail"))},
        overhead_s=0.2,
        per_step_s=0.03,
        step_noise_s=0.002,
        is_replica=True,
        memory_bytes={"peak_torch_allocated_bytes": 300_000_000, "peak_torch_reserved_bytes": 400_000_000},
    ),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest, records = synthetic_run(MODELS, steps=(5, 10, 20), prompts_per_category=8, rng=4)
    records.loc[0, ["status", "error"]] = ["oom", "CUDA out of memory"]
    return write_run(tmp_path_factory.mktemp("run") / "run", manifest, records, shards=2)


@pytest.mark.slow
def test_calibrate_writes_a_byte_stable_table_summary_and_figures(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "table.json"
    done = run_genedge("calibrate", run_dir, "--out", out, "--figures", tmp_path / "fig")
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout
    assert "model tiny: tiny (random-weight replica)" in done.stdout
    assert "CLIPScores are NOT image quality" in done.stdout
    assert "tiny @ 5 steps: 1 x status=oom: CUDA out of memory" in done.stdout
    table = load_table(out)
    assert table.models["tiny"].is_replica and table.models["tiny"].steps == (5, 10, 20)
    figures = {p.name for p in (tmp_path / "fig").iterdir()}
    assert figures == {
        f"{name}.{fmt}"
        for name in ("scores_tiny", "quality_vs_steps", "latency_vs_steps", "memory_ladder")
        for fmt in ("png", "svg")
    }
    again = tmp_path / "again.json"  # written in this process: the same bytes whichever process writes them
    assert main(["calibrate", str(run_dir), "--out", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_calibrate_reports_bad_input_as_one_clear_line(tmp_path: Path) -> None:
    done = run_genedge("calibrate", tmp_path / "missing", "--out", tmp_path / "t.json")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"genedge calibrate: error: {tmp_path / 'missing' / 'manifest.json'}: expected a "
        f"profile run manifest, but the file does not exist"
    )
    assert not (tmp_path / "t.json").exists()
