"""``genedge profile`` through real subprocesses: bad input, SIGKILL and resume, show, two processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genedge.profiler import read_manifest, read_records

P2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "PartiPrompts.tsv"  # ../shared beside the checkout
KILL_AFTER_SHARDS = 2
TIMEOUT_S = 240


def _env() -> dict[str, str]:
    # One thread per process: the machine has two cores and the two-process test shares them.
    return os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _prompts(folder: Path, n: int) -> list[str]:
    if P2.is_file():
        return ["--prompts", str(P2), "--limit", str(n)]
    path = folder / "prompts.tsv"
    rows = "".join(f"prompt {i} of a quiet street\tOutdoor Scenes\tBasic\t\n" for i in range(n))
    path.write_text("Prompt\tCategory\tChallenge\tNote\n" + rows, encoding="utf-8")
    return ["--prompts", str(path)]


def _profile_args(folder: Path, out: Path, n: int) -> list[str]:
    return [
        "profile",
        "--model",
        "replica:tiny",
        "--steps",
        "2",
        *_prompts(folder, n),
        "--resolution",
        "64",
        "--device",
        "cpu",
        "--clip-backbone",
        "replica:tiny",
        "--clip-pretrained",
        "none",
        "--flush-every",
        "2",
        "--out",
        str(out),
    ]


def _genedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genedge", *args], env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "replica:sd99", "--steps", "2"], "Available: bk-sdm-base, bk-sdm-small"),
        (["--model", "replica:tiny", "--steps", "10,0"], "Expected steps as positive integers, but got [10, 0]"),
        (["--model", "replica:tiny", "--steps", "ten"], "--steps: expected comma-separated integers"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = _genedge("profile", *args, *_prompts(tmp_path, 4), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_each_row_once(tmp_path: Path) -> None:
    n = 12
    out = tmp_path / "run"
    args = _profile_args(tmp_path, out, n)
    process = subprocess.Popen(
        [sys.executable, "-m", "genedge", *args, "--no-progress"],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + TIMEOUT_S
    while len(list((out / "records").glob("shard-*.parquet"))) < KILL_AFTER_SHARDS:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = len(read_records(out))
    assert 2 * KILL_AFTER_SHARDS - 2 <= before < n

    result = _genedge(*args)
    assert result.returncode == 0, result.stderr
    assert f"skipped {before} already recorded" in result.stdout
    frame = read_records(out)
    assert len(frame) == n and not frame.duplicated(["model_key", "steps", "seed", "prompt_id"]).any()
    assert (frame["status"] == "ok").all()

    shown = _genedge("profile", "show", str(out))
    assert shown.returncode == 0, shown.stderr
    manifest = read_manifest(out)
    assert f"run {manifest['run_id']}" in shown.stdout and "replica:tiny" in shown.stdout
    assert "NVML unavailable" in shown.stdout and "(no GPU driver)" in shown.stdout
    assert "None" not in shown.stdout


# The launcher installed beside this interpreter, found whether or not its environment is activated.
ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")


@pytest.mark.slow
@pytest.mark.skipif(ACCELERATE is None, reason="accelerate's launcher is not installed")
def test_accelerate_launch_splits_the_work_across_two_processes(tmp_path: Path) -> None:
    n = 6
    out = tmp_path / "run"
    # accelerate's multi-GPU launcher is torchrun: it starts the processes with RANK/WORLD_SIZE/LOCAL_RANK
    # and works on a CPU-only machine, where `--cpu` would start a single process.
    launch = [
        ACCELERATE,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "genedge",
        *_profile_args(tmp_path, out, n),
        "--no-progress",
    ]
    result = subprocess.run(launch, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rank 0 of 2" in result.stdout and "rank 1 of 2" in result.stdout
    ranks = {shard.name.split("-")[1] for shard in (out / "records").glob("shard-*.parquet")}
    assert ranks == {"0", "1"}
    frame = read_records(out)
    assert len(frame) == n and frame["prompt_id"].is_unique
