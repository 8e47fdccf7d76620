"""``genedge autoprofile`` through real subprocesses: saved pipelines, a kill mid-run, the resume, the stop."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import genedge_env

from genedge.calibrate import load_table
from genedge.cli import main
from genedge.profiler import read_records

TIMEOUT_S = 600
PER_CATEGORY = 14


def _env() -> dict[str, str]:
    return genedge_env({"OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: pytest.TempPathFactory, tiny_folder: Path) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("autoprofile")
    rows = [f"a red cube number {i}\tArtifacts\tBasic\t" for i in range(PER_CATEGORY)]
    rows += [f"a small blue bird with a yellow beak, number {i}\tAnimals\tSimple Detail\t" for i in range(PER_CATEGORY)]
    prompts = root / "prompts.tsv"
    prompts.write_text("Prompt\tCategory\tChallenge\tNote\n" + "\n".join(rows) + "\n", encoding="utf-8")
    # Two models by folder: copies of one saved replica, as two saves of it would be.
    return shutil.copytree(tiny_folder, root / "small"), shutil.copytree(tiny_folder, root / "large"), prompts


def _args(pipelines: tuple[Path, Path, Path], out: Path, *extra: str) -> list[str]:
    small, large, prompts = pipelines
    return [
        "autoprofile",
        "--model",
        str(small),
        "--model",
        str(large),
        "--steps",
        "2,4",
        "--prompts",
        str(prompts),
        "--resolution",
        "64",
        "--device",
        "cpu",
        "--clip-backbone",
        "replica:tiny",
        "--clip-pretrained",
        "none",
        "--first-batch",
        "2",
        "--batch",
        "2",
        "--samples",
        "50",
        "--requests",
        "20",
        "--out",
        str(out),
        *extra,
    ]


def _rows(out: Path) -> dict[str, int]:
    """Recorded images per batch folder."""
    return {
        folder.name: len(read_records(folder / "run"))
        for folder in sorted((out / "batches").iterdir())
        if (folder / "run" / "records").is_dir()
    }


def _planned(out: Path) -> dict[str, int]:
    """Images each batch folder was created to hold."""
    return {
        folder.name: sum(count for *_, count in json.loads((folder / "cells.json").read_text()))
        for folder in sorted((out / "batches").iterdir())
    }


@pytest.mark.slow
def test_a_killed_run_resumes_without_measuring_twice_and_stops_at_its_budget(
    pipelines: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    argv = _args(pipelines, out, "--max-images", "24", "--target", "1.0")
    args = [sys.executable, "-m", "genedge", *argv]
    process = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    decisions = out / "decisions.jsonl"
    deadline = time.monotonic() + TIMEOUT_S
    # The first decision follows the first batch of every cell; the kill lands in the next batch.
    while not (decisions.exists() and decisions.read_text().count("\n") >= 1):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = _rows(out)
    assert sum(before.values()) >= 16  # 2 models × 2 categories × 2 step counts × 2 images
    # What a kill at another moment leaves: a decision line cut short, a batch folder with only its prompts.
    with decisions.open("a") as handle:
        handle.write('{"batch": 9, "conf')
    folders = sorted((out / "batches").iterdir())
    if (folders[-1] / "cells.json").exists():
        half_made = out / "batches" / f"{len(folders):04d}"
        half_made.mkdir()
        (half_made / "prompts.tsv").write_text("Prompt\tCategory\tChallenge\tNote\n")

    done = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    after, planned = _rows(out), _planned(out)
    # Nothing measured twice: every batch holds exactly the images it was created for, and what was
    # recorded before the kill is still there.
    assert after == planned
    assert all(after[name] >= count for name, count in before.items())
    lines = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert lines[-1]["stop"].startswith("budget spent") and lines[-1]["images"] == sum(after.values()) <= 24
    chosen = [line["choice"] for line in lines[:-1]]
    assert all(
        c is not None and c["reduction"] >= max(r["reduction"] for r in line["ranking"]) - 1e-12
        for c, line in zip(chosen, lines[:-1])
    )
    assert "stopped: budget spent" in done.stdout
    table = load_table(out / "table.json")
    assert {c.n for m in table.models.values() for cells in m.quality.values() for c in cells.values()} >= {2}

    # A finished run asked again measures nothing more and stops where it stopped (in this process: the
    # command's user path is the two runs above).
    assert main(argv) == 0
    assert _rows(out) == after


@pytest.mark.slow
def test_a_run_stops_once_its_target_is_reached(pipelines: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    # A target any plan reaches: the first decision stops, after the first batch only. In this process: the
    # test above runs the command as a user does.
    assert main(_args(pipelines, out, "--max-images", "200", "--target", "0.001")) == 0
    lines = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["stop"].startswith("target reached") and lines[0]["images"] == 16


def test_other_settings_on_the_same_run_are_refused(tmp_path: Path) -> None:
    pipelines = (tmp_path / "small", tmp_path / "large", tmp_path / "prompts.tsv")  # refused before they are read
    out = tmp_path / "run"
    out.mkdir()
    (out / "autoprofile.json").write_text(json.dumps({"batch": 8}))
    done = subprocess.run(
        [sys.executable, "-m", "genedge", *_args(pipelines, out, "--max-images", "20")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode != 0 and "batch = 8 (not 2)" in done.stderr
    assert "autoprofile.json: this run was started with" in done.stderr


def test_a_batch_keeps_prompts_with_quotes_and_commas_exactly(tmp_path: Path) -> None:
    from genedge.profiler.autoprofile import write_batch_prompts
    from genedge.profiler.prompts import load_prompt_set

    texts = ['"Hello," said the parrot', "a red cube, on a table", 'a sign that reads "open"']
    source = load_prompt_set(_p2_file(tmp_path / "source.tsv", texts))
    write_batch_prompts(tmp_path / "batch" / "prompts.tsv", source.prompts)
    batch = load_prompt_set(str(tmp_path / "batch" / "prompts.tsv"))
    assert [p.text for p in batch.prompts] == texts
    assert [(p.category, p.challenge) for p in batch.prompts] == [(p.category, p.challenge) for p in source.prompts]


def _p2_file(path: Path, texts: list[str]) -> str:
    rows = "".join(f"{text}\tArtifacts\tBasic\t\n" for text in texts)
    path.write_text("Prompt\tCategory\tChallenge\tNote\n" + rows, encoding="utf-8")
    return str(path)
