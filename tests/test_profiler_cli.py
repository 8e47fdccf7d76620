"""``genedge profile`` through real subprocesses: bad input, SIGKILL and resume, show, two processes."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PARTIPROMPTS, genedge_env, genedge_in_process, run_genedge

from genedge.profiler import read_manifest, read_records

KILL_AFTER_SHARDS = 2
TIMEOUT_S = 240


# One thread per process: the machine has two cores and the two-process test shares them.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _env() -> dict[str, str]:
    return genedge_env(ONE_THREAD)


def _prompts(folder: Path, n: int) -> list[str]:
    if PARTIPROMPTS.is_file():
        return ["--prompts", str(PARTIPROMPTS), "--limit", str(n)]
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
    return run_genedge(*args, env=ONE_THREAD, timeout=TIMEOUT_S)


@pytest.mark.parametrize(
    ("args", "message", "in_process"),
    [
        (["--model", "replica:sd99", "--steps", "2"], "Available: bk-sdm-base, bk-sdm-small", False),
        (["--model", "replica:tiny", "--steps", "10,0"], "Expected steps as positive integers, but got [10, 0]", True),
        (["--model", "replica:tiny", "--steps", "ten"], "--steps: expected comma-separated integers", True),
    ],
)
def test_bad_input_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str, in_process: bool
) -> None:
    # The first case runs as a user runs it; the others vary only the input, so they run in this process.
    argv = ("profile", *args, *_prompts(tmp_path, 4), "--out", str(tmp_path / "run"))
    result = genedge_in_process(capsys, *argv) if in_process else _genedge(*argv)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_each_row_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
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

    shown = genedge_in_process(capsys, "profile", "show", out)  # reading a run needs no fresh interpreter
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
