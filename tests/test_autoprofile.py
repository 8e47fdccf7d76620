"""``genedge autoprofile`` through real subprocesses: saved pipelines, kills mid-run and in every publish window,
the resume, the stop, the folder's lock."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
from pathlib import Path

import pytest
from conftest import genedge_in_process, run_genedge
from kill_points import run_killed

from genedge.calibrate import load_table
from genedge.cli import main
from genedge.contract.locks import hold_lock
from genedge.profiler import read_records
from genedge.profiler.autoprofile import LOCK_NAME

TIMEOUT_S = 600
PER_CATEGORY = 14


# One torch thread: the processes a test starts share a small machine.
_THREADS = {"OMP_NUM_THREADS": "1"}


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
    decisions = out / "decisions.jsonl"
    # The first decision follows autoprofile.json and the first batch of every cell (4 batches of 6 publishes:
    # prompts, cells, the folder's rename, the run's manifest, its shard, DONE); the kill lands in the next
    # batch, just after its shard's link.
    killed = run_killed(1 + 4 * 6 + 5, "after", argv, env=_THREADS, timeout=TIMEOUT_S)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert decisions.read_text().count("\n") == 1 and (out / "batches" / "0004" / "run" / "records").is_dir()
    before = _rows(out)
    assert sum(before.values()) >= 16  # 2 models × 2 categories × 2 step counts × 2 images
    # What a kill at another moment leaves: a decision line cut short, a batch folder never renamed into place
    # that holds a temporary file of an atomic write.
    with decisions.open("a") as handle:
        handle.write('{"batch": 9, "conf')
    half_made = out / "batches" / f".{len(list((out / 'batches').glob('[0-9]*'))):04d}.tmp"
    half_made.mkdir(exist_ok=True)
    (half_made / "prompts.tsv").write_text("Prompt\tCategory\tChallenge\tNote\n")
    (half_made / ".cells.json.a1b2c3d4.tmp").write_text("")

    done = run_genedge(*argv, env=_THREADS, timeout=TIMEOUT_S)
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

    assert not list(out.rglob("*.tmp"))

    # A finished run asked again measures nothing more and stops where it stopped, logging no second stop (in
    # this process: the command's user path is the two runs above).
    logged = decisions.read_text()
    assert main(argv) == 0
    assert _rows(out) == after and decisions.read_text() == logged


@pytest.mark.slow
def test_a_run_stops_once_its_target_is_reached(pipelines: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    # A target any plan reaches: the first decision, after the first batch of 2 images in each of the 8 cells,
    # has it, but the target counts from 4 images per cell: the cells short of them are measured first, one
    # batch of 2 each, and then the run stops. In this process: the test above runs the command as a user does.
    argv = _args(pipelines, out, "--max-images", "200", "--target", "0.001", "--min-images", "4")
    assert main(argv) == 0
    lines = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    assert [line["images"] for line in lines] == list(range(16, 34, 2))
    assert all(line["confidence"] >= 0.001 and line["choice"]["n"] == 2 for line in lines[:-1])
    assert lines[-1]["stop"].startswith("target reached") and "every cell has at least 4 images" in lines[-1]["stop"]


@pytest.mark.slow
def test_a_choice_logged_before_a_kill_is_measured_as_logged(
    pipelines: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = _args(pipelines, out, "--max-images", "18", "--target", "1.0")
    assert main(argv) == 0  # four first batches, one chosen, then the budget stops it
    decisions = out / "decisions.jsonl"
    chosen, stop = (json.loads(line) for line in decisions.read_text().splitlines())
    assert (chosen["batch"], stop["batch"]) == (4, 5) and stop["stop"].startswith("budget spent")
    # What a kill between logging a choice and making its batch leaves. The logged cell is the second best, so
    # that deciding again would show: the resume must measure what the log says.
    shutil.rmtree(out / "batches" / "0004")
    logged = {**chosen, "choice": chosen["ranking"][1]}
    decisions.write_text(json.dumps(logged, sort_keys=True) + "\n")
    capsys.readouterr()

    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    cell = logged["choice"]
    assert json.loads((out / "batches" / "0004" / "cells.json").read_text()) == [
        [cell["model"], cell["category"], cell["steps"], cell["images"]]
    ]
    lines = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert lines[0] == logged and [line["batch"] for line in lines] == [4, 5] and lines[1]["stop"] is not None
    assert printed[0].endswith("(logged before the interruption)") and printed[1].startswith("18 images:")
    assert _rows(out) == _planned(out)


def test_a_second_autoprofile_on_a_folder_in_use_is_refused_at_once(tmp_path: Path) -> None:
    pipelines = (tmp_path / "small", tmp_path / "large", tmp_path / "prompts.tsv")  # refused before they are read
    out = tmp_path / "run"
    with hold_lock(out / LOCK_NAME, "unused: the test holds it first"):
        done = run_genedge(*_args(pipelines, out, "--max-images", "20"), env=_THREADS, timeout=TIMEOUT_S)
    holder = f"pid {os.getpid()} on {platform.node() or 'this host'}"
    refusal = (
        f"genedge autoprofile: error: {out}: another genedge autoprofile process ({holder}) is writing this run; "
        "wait for it to end, or use another --out"
    )
    assert done.returncode == 2 and done.stderr.splitlines() == [refusal]
    assert sorted(path.name for path in out.iterdir()) == [LOCK_NAME]  # nothing written


# Where the soak below kills autoprofile, one process after another on one folder: (publish call, before or
# after it, what the kill leaves under OUT). A fresh run's publish calls are autoprofile.json; per batch its
# prompts.tsv, cells.json, the batch folder's rename, the profile run's manifest, its records shard (a link) and
# DONE; table.json last. A resumed process counts from its own start, so each number is aimed at what the
# process before it left; the patterns check that each kill landed where it was aimed.
SOAK_KILLS = [
    (3, "before", "batches/.0000.tmp/.cells.json.*.tmp"),  # a batch being written: a temporary file in its folder
    (3, "after", "batches/0000/cells.json"),  # the batch renamed into place, nothing measured
    (2, "before", "batches/0000/run/records/.shard-*.tmp"),  # its records written, not linked
    (2, "before", "batches/0000/.DONE.*.tmp"),  # measured; the (empty) DONE mark not renamed
    (6, "after", "batches/0001/run/records/.shard-*.tmp"),  # the next batch's records linked, the temporary kept
    (14, "before", "batches/.0004.tmp/.prompts.tsv.*.tmp"),  # the first choice logged, its batch not made
    (9, "before", "batches/.0005.tmp/cells.json"),  # a chosen batch whole, not renamed
    (19, "before", ".table.json.*.tmp"),  # the stop logged, the table not published
]


@pytest.mark.slow
def test_kills_in_every_publish_window_lose_nothing_and_count_nothing_twice(
    pipelines: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    argv = _args(pipelines, out, "--max-images", "24", "--target", "1.0")
    for at, when, leftover in SOAK_KILLS:
        killed = run_killed(at, when, argv, env=_THREADS, timeout=TIMEOUT_S)
        assert killed.returncode == -9, killed.stderr
        assert list(out.glob(leftover)), f"the kill {when} publish call {at} left no {leftover}"
    done = run_genedge(*argv, env=_THREADS, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    assert "stopped: budget spent" in done.stdout

    # Every batch holds exactly the images its cells planned, and no image is in two batches.
    assert _rows(out) == _planned(out)
    frames = [read_records(run) for run in sorted((out / "batches").glob("*/run"))]
    images = [(row.model_key, row.steps, row.prompt) for frame in frames for row in frame.itertuples()]
    assert len(images) == len(set(images)) == 24
    # One decision line per batch chosen, the last a stop; each chosen batch measured the logged cell.
    lines = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    batches = sorted((out / "batches").iterdir())
    assert [line["batch"] for line in lines] == list(range(4, len(batches) + 1))
    assert lines[-1]["stop"].startswith("budget spent") and all(line["stop"] is None for line in lines[:-1])
    for line in lines[:-1]:
        cell = line["choice"]
        cells = json.loads((batches[line["batch"]] / "cells.json").read_text())
        assert cells == [[cell["model"], cell["category"], cell["steps"], cell["images"]]]
    assert all((folder / "DONE").is_file() for folder in batches)
    assert not list(out.rglob("*.tmp"))


def test_other_settings_on_the_same_run_are_refused(tmp_path: Path) -> None:
    pipelines = (tmp_path / "small", tmp_path / "large", tmp_path / "prompts.tsv")  # refused before they are read
    out = tmp_path / "run"
    out.mkdir()
    (out / "autoprofile.json").write_text(json.dumps({"batch": 8}))
    done = run_genedge(*_args(pipelines, out, "--max-images", "20"), env=_THREADS, timeout=TIMEOUT_S)
    assert done.returncode != 0 and "batch = 8 (not 2)" in done.stderr
    assert "autoprofile.json: this run was started with" in done.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [('{"batch": ', "line 1: not valid JSON"), ("[2]", "document: expected a JSON object, but got list")],
)
def test_a_damaged_settings_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], text, message) -> None:
    pipelines = (tmp_path / "small", tmp_path / "large", tmp_path / "prompts.tsv")  # refused before they are read
    out = tmp_path / "run"
    out.mkdir()
    (out / "autoprofile.json").write_text(text)
    done = genedge_in_process(capsys, *_args(pipelines, out, "--max-images", "20"))
    assert done.returncode == 2 and f"{out / 'autoprofile.json'}: {message}" in done.stderr, done.stderr


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
