"""genedge loadtest's records when they are damaged or their writer is killed: each damaged state is
made on purpose, then the command either refuses it with one clear error naming the file and the field,
or resumes to exactly the test's records, nothing lost and nothing counted twice.

The kills are real SIGKILLs of real processes, just before or just after a file is published
(:mod:`kill_points`), against :class:`loadtest_stub.StubServer` in this process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as parquet
import pytest
from kill_points import run_killed
from loadtest_stub import PROMPTS, StubServer, write_plan

from genedge.cli import main
from genedge.contract.files import ArtifactError
from genedge.contract.locks import hold_lock
from genedge.serve.loadtest import run_loadtest
from genedge.serve.loadtest_config import LoadConfig, LoadTestError
from genedge.serve.loadtest_layout import (
    LOCK_NAME,
    MANIFEST_NAME,
    audit_records,
    next_session,
    read_manifest,
    read_records,
    write_scores,
)

#: Requests of each test here: a few record files (RECORD_BATCH records each, but the last).
N = 40


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory):
    plan = json.loads(write_plan(tmp_path_factory.mktemp("plan") / "plan.json").read_text())
    server = StubServer(plan, service_s=0.005).start()
    yield server
    server.stop()


def _config(stub: StubServer, **changes) -> LoadConfig:
    return LoadConfig(**{"url": stub.url, "prompts": PROMPTS, "num_prompts": N, "seed": 1, **changes})


def _command(stub: StubServer, result: Path, seed: int = 1) -> list[str]:
    return [
        "loadtest", stub.url, "--prompts", str(PROMPTS), "--num-prompts", str(N), "--seed", str(seed),
        "--result-dir", str(result), "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def recorded(stub: StubServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole test of N requests (copy it before damaging it)."""
    result = tmp_path_factory.mktemp("recorded") / "result"
    run_loadtest(_config(stub), result)
    return result


def _copy(recorded: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(recorded, tmp_path / "result"))


def _parts(result: Path) -> list[Path]:
    return sorted((result / "records").glob("part-*.parquet"))


def _one_line_error(capsys: pytest.CaptureFixture[str], command: list[str]) -> str:
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------- one writer


def test_a_second_loadtest_on_the_same_directory_is_refused(stub, tmp_path, capsys):
    result = tmp_path / "result"
    with hold_lock(result / LOCK_NAME, "held by {holder}"):
        err = _one_line_error(capsys, _command(stub, result))
    assert f"{result}: another genedge loadtest (pid " in err and "choose another --result-dir" in err
    assert not (result / MANIFEST_NAME).exists()


def test_leftover_temporary_files_are_removed_when_a_run_starts(stub, recorded, tmp_path):
    result = _copy(recorded, tmp_path)
    leftovers = [
        result / f".{MANIFEST_NAME}.k1ll3d_0.tmp",
        result / "sessions" / ".session-001.json.abcdefgh.tmp",
        result / "records" / ".part-001-00000.parquet.x_y_z_12.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"half a file")
    kept = result / "records" / "notes.tmp"  # not a temporary file's name: not genedge's to remove
    kept.write_text("mine")
    assert run_loadtest(_config(stub), result).sent == 0
    assert not any(path.exists() for path in leftovers)
    assert kept.exists()


# --------------------------------------------------------------------------- sessions


def test_the_next_session_is_past_every_number_in_session_and_record_names(tmp_path):
    assert next_session(tmp_path) == 0
    (tmp_path / "sessions").mkdir()
    (tmp_path / "records").mkdir()
    (tmp_path / "sessions" / "session-002.json").write_text("{}")
    assert next_session(tmp_path) == 3
    (tmp_path / "records" / "part-007-00001.parquet").write_bytes(b"")
    (tmp_path / "records" / "part-x.parquet").write_bytes(b"")  # not a record file's name
    assert next_session(tmp_path) == 8


def test_a_resume_after_a_session_file_is_deleted_records_what_it_sends(stub, recorded, tmp_path):
    result = _copy(recorded, tmp_path)
    last = _parts(result)[-1]  # records not yet flushed when the run was killed ...
    unrecorded = set(parquet.read_table(last)["requested_seed"].to_pylist())
    last.unlink()
    (result / "sessions" / "session-000.json").unlink()  # ... and its session file lost
    stub.seen.clear()
    resumed = run_loadtest(_config(stub), result)
    assert (resumed.session, resumed.sent, resumed.skipped) == (1, len(unrecorded), N - len(unrecorded))
    assert [p.name for p in (result / "sessions").iterdir()] == ["session-001.json"]
    records = read_records(result)
    assert list(records["index"]) == list(range(N))
    assert set(records.loc[records["session"] == 1, "requested_seed"]) == unrecorded
    assert stub.seen == dict.fromkeys(unrecorded, 1)  # only the unrecorded ones were sent, once each


# --------------------------------------------------------------------------- other tests' files


@pytest.mark.parametrize("seed", [1, 2], ids=["same settings", "other settings"])
def test_a_record_file_of_another_test_is_named_and_not_counted(stub, recorded, tmp_path, capsys, seed):
    result = _copy(recorded, tmp_path)
    other = tmp_path / "other"
    run_loadtest(_config(stub, seed=seed), other)
    copied = result / "records" / "part-009-00000.parquet"
    shutil.copy(_parts(other)[-1], copied)  # the last batch of another test
    foreign = parquet.read_metadata(copied).num_rows
    assert len(read_records(result)) == N
    assert main(_command(stub, result)) == 0  # the command shows the warning on one line
    out, err = capsys.readouterr()
    assert f"requests {N}: {N} ok" in out
    assert f"warning: {copied}: {foreign} row(s) of another load test (test " in err
    audit = audit_records(result)
    assert audit.own == N
    assert [(f.path, f.rows) for f in audit.foreign] == [(copied, foreign)]


def test_a_session_file_of_another_test_is_named_and_left_out(stub, recorded, tmp_path):
    result = _copy(recorded, tmp_path)
    other = tmp_path / "other"
    run_loadtest(_config(stub, seed=2), other)
    copied = result / "sessions" / "session-005.json"
    shutil.copy(other / "sessions" / "session-000.json", copied)
    with pytest.warns(UserWarning, match=rf"{copied}: 1 row\(s\) of another load test"):
        resumed = run_loadtest(_config(stub), result)
    assert resumed.session == 6  # past the copied file's number, so it is never overwritten


def test_scores_of_another_test_are_named_and_not_merged(recorded, tmp_path):
    result = _copy(recorded, tmp_path)
    manifest = read_manifest(result)
    frame = pd.DataFrame({"index": [0, 1], "clip_score": [30.0, 31.0], "clip_truncated": [False, False]})
    theirs = write_scores(result, dataclasses.replace(manifest, test_id="another"), frame)
    mine = write_scores(result, manifest, frame.iloc[1:])
    records = read_records(result)
    assert math.isnan(records["clip_score"][0]) and records["clip_score"][1] == 31.0  # only the test's own
    assert [(f.path, f.rows) for f in audit_records(result).foreign] == [(theirs, 2)]
    assert mine != theirs


# --------------------------------------------------------------------------- the manifest


def test_a_deleted_manifest_is_not_taken_over_by_another_configuration(stub, recorded, tmp_path, capsys):
    result = _copy(recorded, tmp_path)
    (result / MANIFEST_NAME).unlink()
    err = _one_line_error(capsys, _command(stub, result, seed=2))
    assert f"{result / MANIFEST_NAME}: missing, and the {N} records in {result} carry other settings" in err
    assert "settings_sha256" in err and "choose another --result-dir" in err
    assert not (result / MANIFEST_NAME).exists()
    with pytest.raises(LoadTestError, match="carry other settings"):
        run_loadtest(_config(stub, seed=2), result)


def test_a_deleted_manifest_is_rebuilt_from_the_records_of_these_settings(stub, recorded, tmp_path):
    result = _copy(recorded, tmp_path)
    test_id = read_manifest(result).test_id
    (result / MANIFEST_NAME).unlink()
    with pytest.warns(UserWarning, match=f"was missing; rebuilt from the records of test {test_id}"):
        resumed = run_loadtest(_config(stub), result)
    assert (resumed.sent, resumed.skipped, resumed.rebuilt) == (0, N, True)
    assert read_manifest(result).test_id == test_id
    assert len(read_records(result)) == N


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["config"].update(seed=7), "settings_sha256"),
        (lambda d: d["plan"]["models"].clear(), "plan"),
        (lambda d: d["schedule"].update(duration_s=d["schedule"]["duration_s"] + 1), "schedule"),
    ],
    ids=["config", "plan", "schedule"],
)
def test_a_hand_edited_manifest_is_refused(stub, recorded, tmp_path, capsys, edit, field):
    result = _copy(recorded, tmp_path)
    path = result / MANIFEST_NAME
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    err = _one_line_error(capsys, _command(stub, result))
    assert f"{path}: {field}: " in err and "edited" in err


# --------------------------------------------------------------------------- record files


def _damage(path: Path, column: str, row: int, value: object) -> int:
    """Set one value of a record file; returns the row's request index."""
    table = parquet.read_table(path)
    values = table[column].to_pylist()
    values[row] = value
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, table[column].type))
    parquet.write_table(table, path)
    return table["index"][row].as_py()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("client_response_s", float("nan")),
        ("client_response_s", None),
        ("response_s", -0.5),
        ("sent_s", float("inf")),
        ("queue_wait_s", float("nan")),
        ("retry_after_s", -1.0),
        ("status", "lost"),
        ("index", N),
    ],
)
def test_a_value_no_run_writes_is_named_with_its_file_row_and_field(stub, recorded, tmp_path, capsys, column, value):
    result = _copy(recorded, tmp_path)
    part = _parts(result)[1]
    index = _damage(part, column, 3, value)
    with pytest.raises(ArtifactError) as caught:
        read_records(result)
    assert (caught.value.where, caught.value.field_path) == (str(part), f"{column} row 3")
    assert f"request {index}: expected" in str(caught.value)
    err = _one_line_error(capsys, _command(stub, result))
    assert f"{part}: {column} row 3: request {index}" in err


def test_a_negative_clip_score_in_a_score_file_is_named_with_its_file_row_and_field(recorded, tmp_path):
    result = _copy(recorded, tmp_path)
    frame = pd.DataFrame({"index": [0, 1], "clip_score": [30.0, -2.0], "clip_truncated": [False, False]})
    scores = write_scores(result, read_manifest(result), frame)
    with pytest.raises(ArtifactError) as caught:
        read_records(result)
    assert (caught.value.where, caught.value.field_path) == (str(scores), "clip_score row 1")
    assert "request 1: expected a finite number >= 0, but got -2.0" in str(caught.value)


def test_a_bad_value_is_named_by_its_row_in_the_file_beside_another_tests_rows(recorded, tmp_path):
    result = _copy(recorded, tmp_path)
    part = _parts(result)[0]
    index = _damage(part, "service_s", 2, -1.0)
    own = parquet.read_table(part)
    foreign = own.set_column(own.schema.get_field_index("test_id"), "test_id", pa.array(["other"] * len(own)))
    parquet.write_table(pa.concat_tables([foreign, own]), part)  # the other test's rows first: not checked
    with pytest.raises(ArtifactError) as caught:
        read_records(result)
    assert caught.value.field_path == f"service_s row {len(own) + 2}"
    assert f"request {index}: expected a finite number >= 0, but got -1.0" in str(caught.value)


@pytest.mark.parametrize(
    ("change", "column", "message"),
    [
        (lambda t: t.drop_columns(["client_response_s"]), "client_response_s", "missing column"),
        (lambda t: t.drop_columns(["test_id"]), "test_id", "missing column"),
        (
            lambda t: t.set_column(t.schema.get_field_index("index"), "index", t["index"].cast(pa.string())),
            "index",
            "expected a column of int64, but got string",
        ),
        (
            lambda t: t.set_column(t.schema.get_field_index("sent_s"), "sent_s", t["sent_s"].cast(pa.float32())),
            "sent_s",
            "expected a column of double, but got float",
        ),
    ],
    ids=["missing time", "missing identity", "string index", "float32 time"],
)
def test_a_missing_or_mistyped_column_is_named_with_its_file(stub, recorded, tmp_path, capsys, change, column, message):
    result = _copy(recorded, tmp_path)
    part = _parts(result)[0]
    parquet.write_table(change(parquet.read_table(part)), part)
    with pytest.raises(ArtifactError) as caught:
        read_records(result)
    assert (caught.value.where, caught.value.field_path) == (str(part), column)
    assert message in str(caught.value)
    assert f"{part}: {column}: {message}" in _one_line_error(capsys, _command(stub, result))


def test_a_record_file_copied_twice_names_both_files(stub, recorded, tmp_path):
    result = _copy(recorded, tmp_path)
    first = _parts(result)[0]
    shutil.copy(first, result / "records" / "part-000-00007.parquet")
    with pytest.raises(ArtifactError, match=rf"request 0 is recorded twice \(in {first.name}, part-000-00007"):
        read_records(result)


# --------------------------------------------------------------------------- kills


def _own_rows(result: Path) -> pa.Table:
    """Every row of every record file (read_records's own check aside): all of them must be the test's."""
    manifest = read_manifest(result)
    table = pa.concat_tables(parquet.read_table(p) for p in _parts(result)) if _parts(result) else None
    if table is not None:
        assert set(table["test_id"].to_pylist()) == {manifest.test_id}
        assert set(table["settings_sha256"].to_pylist()) == {manifest.settings_sha256}
    return table


def _check_after_kill(result: Path, stub: StubServer, recorded_seen: dict[int, int]) -> None:
    """What a killed run leaves is readable, the test's own and recorded once; note the server's count of
    each newly recorded request."""
    if not (result / MANIFEST_NAME).exists():
        return
    records = read_records(result)  # refuses a malformed file or an index recorded twice
    _own_rows(result)
    for seed in records["requested_seed"]:
        recorded_seen.setdefault(seed, stub.seen[seed])


#: The publishes of a first run of N requests, at the least: the manifest, the session's start, three record
#: files, the session's end and the result (a slow machine flushes records more often, by time).
FIRST_RUN_PUBLISHES = 7
#: Where the kills stop whatever happens: a run never publishes this often.
MAX_PUBLISHES = 30
#: A first run killed at its first record file is resumed by a run killed in its turn, at its own first
#: record file (after its session's start).
FIRST_RECORD_FILE, RESUME_FIRST_RECORD_FILE = 3, 2


@pytest.mark.slow
@pytest.mark.parametrize("when", ["before", "after"])
def test_kills_in_every_publish_window_lose_no_record_and_count_none_twice(stub, tmp_path, when):
    """Kill a first run at each of its publishes in turn, just before or just after it (the one killed at its
    first record file resumed by a run killed in its turn), then resume to the end: every request
    recorded once, only the test's own rows, no temporary file left; a request recorded before a kill is
    never sent again (one sent but not yet recorded when killed is sent again)."""
    for at in range(1, MAX_PUBLISHES + 1):
        result = tmp_path / f"killed-at-{at}"
        command = _command(stub, result, seed=3)
        stub.seen.clear()
        recorded_seen: dict[int, int] = {}  # seed of each recorded request → times the server had seen it then
        killed = run_killed(at, when, command, timeout=120)
        if killed.returncode == 0:  # fewer publishes than `at`: every window has had its kill
            assert at > FIRST_RUN_PUBLISHES, at
            break
        assert killed.returncode == -9, killed.stderr
        _check_after_kill(result, stub, recorded_seen)
        if at == FIRST_RECORD_FILE:
            resume = run_killed(RESUME_FIRST_RECORD_FILE, when, command, timeout=120)
            assert resume.returncode == -9, resume.stderr
            _check_after_kill(result, stub, recorded_seen)
        assert main(command) == 0
        records = read_records(result)
        assert list(records["index"]) == list(range(N)), at
        assert len(_own_rows(result)) == N
        assert audit_records(result).foreign == ()
        assert not list(result.rglob("*.tmp"))
        assert set(stub.seen) == set(records["requested_seed"])  # the server saw the schedule's requests only
        assert {seed: stub.seen[seed] for seed in recorded_seen} == recorded_seen  # recorded: never sent again
