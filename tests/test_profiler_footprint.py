"""What a run says about the pipeline itself: its own memory peak, its load without one-time imports, and
every part of a call in a column."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import run_genedge, run_python

from genedge.contract import PROCESS_PEAK_COLUMNS
from genedge.data import path as data_path
from genedge.profiler import Clock, Monitor, load_pipeline, measure_call
from genedge.profiler.pipeline import MemoryBaseline, memory_baseline, pipeline_peak

MIB = 2**20
# How far two rows' memory figures of one configuration may differ on a CPU: what the C allocator keeps or
# hands back between calls moves the resident set by several MiB (up to 9.6 MiB seen on a 2-core machine
# under load; the flush-time jump this guards against was 64–77 MiB; the larger CLIP model below adds about
# 600 MiB to the process).
FLAT_TOLERANCE_BYTES = 24 * MIB
LINUX_ONLY = pytest.mark.skipif(sys.platform != "linux", reason="the resident set's window peak is Linux's")


def test_the_pipeline_peak_is_the_first_measured_process_peak_less_its_baseline() -> None:
    baseline = MemoryBaseline({"peak_torch_reserved_bytes": 100, "peak_rss_bytes": 5_000}, {})
    peaks = {"peak_nvml_process_bytes": None, "peak_torch_reserved_bytes": 900, "peak_rss_bytes": 9_000}
    assert pipeline_peak(peaks, baseline) == (800, "peak_torch_reserved_bytes", None)
    assert pipeline_peak({"peak_rss_bytes": 4_000}, baseline) == (0, "peak_rss_bytes", None)  # never negative
    # NVML saw the call but not the process before the load: the next process peak with a baseline is taken.
    peaks["peak_nvml_process_bytes"] = 10_000
    assert pipeline_peak(peaks, baseline)[1] == "peak_torch_reserved_bytes"
    assert PROCESS_PEAK_COLUMNS.index("peak_nvml_process_bytes") < PROCESS_PEAK_COLUMNS.index("peak_rss_bytes")


def test_without_a_baseline_or_a_peak_the_pipeline_peak_says_why() -> None:
    lifetime = "resource.getrusage gives the process's lifetime peak, not the window's"
    baseline = MemoryBaseline({}, {"peak_rss_bytes": lifetime})
    assert pipeline_peak({"peak_rss_bytes": 9_000}, baseline) == (
        None,
        None,
        f"no baseline of peak_rss_bytes: {lifetime}",
    )
    assert pipeline_peak({"peak_rss_bytes": None}, baseline)[2] == "no process memory peak was measured"


@LINUX_ONLY
def test_a_baseline_on_a_cpu_is_the_resident_set_now() -> None:
    with Monitor(None) as monitor:
        baseline = memory_baseline(torch.device("cpu"), monitor)
    assert set(baseline.bytes) == {"peak_rss_bytes"}  # no torch allocator, no NVML off CUDA
    assert baseline.bytes["peak_rss_bytes"] > 50 * MIB  # this process holds torch at least
    assert "peak_nvml_process_bytes" in baseline.notes


def test_the_stages_and_the_overhead_make_the_whole_call(tiny_folder: Path) -> None:
    device = torch.device("cpu")
    pipe = load_pipeline(str(tiny_folder), device=device, dtype=torch.float32)
    with Monitor(None) as monitor:
        start = time.perf_counter()
        _, m = measure_call(
            pipe, ["a red cube"], steps=2, seed=0, resolution=64, guidance_scale=7.5, device=device,
            clock=Clock(device), monitor=monitor,
        )  # fmt: skip
        outside = time.perf_counter() - start
    stages = m.text_encode_s + m.denoise_s + m.decode_s
    # On one clock (a CPU's) the stages lie within total_s, and overhead_s holds the rest of the call: genedge's
    # measuring before and after total_s. The four fit in the time the caller saw around the call.
    assert 0 < stages <= m.total_s
    assert m.overhead_s >= m.total_s - stages and m.overhead_s > 0
    assert stages + m.overhead_s <= outside


def test_a_baseline_on_a_gpu_holds_torchs_allocator_figures_after_a_synchronize(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No CUDA device here: torch's CUDA calls are stood in for, NVML and the resident set are real.
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: calls.append(("synchronize", device)))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 6 * MIB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 2 * MIB)
    cuda = torch.device("cuda", 0)
    with Monitor(None) as monitor:
        baseline = memory_baseline(cuda, monitor)
    assert calls == [("synchronize", cuda)]  # the CUDA context exists before the figures are read
    assert baseline.bytes["peak_torch_reserved_bytes"] == 6 * MIB
    assert baseline.bytes["peak_torch_allocated_bytes"] == 2 * MIB
    assert "peak_nvml_process_bytes" not in baseline.bytes and baseline.notes["peak_nvml_process_bytes"]
    peaks = {"peak_nvml_process_bytes": None, "peak_torch_reserved_bytes": 70 * MIB, "peak_rss_bytes": 10**9}
    assert pipeline_peak(peaks, baseline) == (64 * MIB, "peak_torch_reserved_bytes", None)


@pytest.mark.slow
def test_a_load_after_the_class_imports_imports_no_pipeline_or_model_module(tiny_folder: Path) -> None:
    # A fresh interpreter: what the load still imports is what model_load_s would otherwise time.
    code = f"""
import json, sys, torch
from genedge.profiler.models import import_pipeline_classes, load_pipeline
for spec in ({str(tiny_folder)!r}, "replica:tiny"):
    import_pipeline_classes(spec)
    before = set(sys.modules)
    load_pipeline(spec, device=torch.device("cpu"), dtype=torch.float32)
    print(json.dumps(sorted(set(sys.modules) - before)))
"""
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    heavy = ("diffusers.pipelines", "diffusers.models", "transformers")
    for line in out.stdout.strip().splitlines():
        assert [module for module in json.loads(line) if module.startswith(heavy)] == []


def _profile(folder: Path, out: Path, clip_backbone: str) -> pd.DataFrame:
    # 8 images flushed 4 at a time: the first shard's images were measured before any flush, the second's after.
    done = run_genedge(
        "profile", "--model", folder, "--steps", "2", "--resolution", "64", "--threads", "1",
        "--prompts", data_path("prompts", "smoke.tsv"), "--clip-backbone", clip_backbone, "--clip-pretrained",
        "none", "--flush-every", "4", "--no-progress", "--out", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shards = sorted((out / "records").glob("shard-*.parquet"))
    assert len(shards) == 2
    return pd.concat([pd.read_parquet(shard) for shard in shards], ignore_index=True)


@LINUX_ONLY
@pytest.mark.slow
def test_memory_does_not_move_at_the_first_flush_and_the_pipeline_peak_leaves_genedge_out(
    tiny_folder: Path, tmp_path: Path
) -> None:
    small = _profile(tiny_folder, tmp_path / "small-clip", "replica:tiny")
    large = _profile(tiny_folder, tmp_path / "large-clip", "ViT-B-32")  # random weights: ~150 M parameters
    for frame in (small, large):
        assert (frame["pipeline_memory"] == "peak_rss_bytes").all()
        assert frame["import_s"].notna().all() and frame["overhead_s"].gt(0).all()
        before, after = frame.iloc[:4], frame.iloc[4:]
        for column in ("peak_rss_bytes", "pipeline_peak_bytes"):
            assert abs(after[column].median() - before[column].median()) <= FLAT_TOLERANCE_BYTES, column
            assert after[column].max() - after[column].min() <= FLAT_TOLERANCE_BYTES, column
    # The larger CLIP model is in the process, not in the pipeline's peak.
    assert large["peak_rss_bytes"].median() - small["peak_rss_bytes"].median() > 300 * MIB
    assert abs(large["pipeline_peak_bytes"].median() - small["pipeline_peak_bytes"].median()) <= FLAT_TOLERANCE_BYTES
    assert (small["pipeline_peak_bytes"] < small["peak_rss_bytes"] - 300 * MIB).all()
