"""Every input bounded and refused clearly: the cases a fuzz of the CLI found, each ending in one line
that names the file or option and the field, with no traceback and nothing replaced.

- ``--out`` onto one of the command's own inputs (any spelling: a symbolic link, ``..``, a hard
  link, a file inside an input run) is refused before any work;
- a table with unbounded work (a batch size of a million, ``n`` of 1e30), silent garbage (standard
  errors of 1e308, a repeated ``models`` key, a model named ``''``, a profile run's guidance scale of
  1e308 or resolution in words), a trace in epoch seconds or at 1e308 s, a null prompt, a router
  intercept of 1e308: each refused by its reader;
- options out of range (``--rate 1e-300``, ``--slo 1e308``, ``--memory-gib 1e308`` or ``nan``,
  ``--seed -1``) name the option; a FIFO or a directory given as a prompt file says what it is;
  a write that the file system refuses names the path and what to do;
- plan files, category mappings and routers of the wrong shape name the field rather than raise a traceback.

One case per command runs the real CLI in a subprocess; the rest call the same entry point in-process.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from genedge.cli import main
from genedge.contract.bounds import MAX_BATCH_SIZE, MIN_RATE_PER_S
from genedge.contract.files import (
    ArtifactError,
    UnsafeTargetError,
    check_not_input,
    os_error_message,
    read_json,
    write_text_atomic,
)
from genedge.contract.prompts import read_prompt_file
from genedge.contract.table_file import TableError, load_table, save_table
from genedge.data import path as data_path
from genedge.data import resolve_router
from genedge.optimizer.model import read_trace
from genedge.router.model import RouterError, load_router

REFERENCE = data_path("tables", "reference-a100.json")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
PROMPTS = "Prompt\tChallenge\na red cube on a blue sphere\tBasic\nan old man reading\tImagination\n"


def _genedge(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genedge", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=120
    )


def _one_error_line(stderr: str, *fragments: str) -> str:
    """The single error line of a refused command, checked to contain every fragment."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _refused_in_process(argv: list[str], capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    """Run ``genedge ARGV`` in-process; it must stop with status 2 and one error line."""
    try:
        status = main(argv)
    except SystemExit as stop:  # argparse refuses an option's value this way
        status = stop.code
    assert status == 2
    return _one_error_line(capsys.readouterr().err, *fragments)


def _reference() -> dict[str, Any]:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


def _write_table(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return path


def _snapshot(path: Path) -> tuple[bytes, int, int]:
    info = os.stat(path)
    return path.read_bytes(), info.st_mtime_ns, info.st_mode


# --------------------------------------------------------------------------------------------------
# --out onto an input


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A profile run's layout (manifest and one records shard): the refusal comes before anything is read."""
    run = tmp_path / "run"
    (run / "records").mkdir(parents=True)
    (run / "manifest.json").write_text('{"schema_version": 1}\n', encoding="utf-8")
    (run / "records" / "shard-0-00000.parquet").write_bytes(b"PAR1 records PAR1")
    return run


def test_plan_out_onto_its_table_is_refused_and_the_table_kept(tmp_path: Path) -> None:
    table = tmp_path / "X.json"
    table.write_bytes(REFERENCE.read_bytes())
    before = _snapshot(table)
    done = _genedge("plan", "--table", table, "--out", table)
    assert done.returncode == 2
    _one_error_line(done.stderr, f"--out {table}", "the input --table", "write the output elsewhere")
    assert done.stdout == ""  # refused before any work
    assert _snapshot(table) == before


def test_plan_out_onto_a_read_only_prompt_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "P.tsv"
    prompts.write_text(PROMPTS, encoding="utf-8")
    prompts.chmod(0o444)
    before = _snapshot(prompts)
    _refused_in_process(
        ["plan", "--prompts", str(prompts), "--out", str(prompts)], capsys, "--out", "the input --prompts"
    )
    assert _snapshot(prompts) == before


def test_calibrate_out_into_its_run_is_refused(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = run_dir / "manifest.json"
    shard = next((run_dir / "records").iterdir())
    before = {path: _snapshot(path) for path in (manifest, shard)}
    done = _genedge("calibrate", run_dir, "--out", manifest)
    assert done.returncode == 2
    _one_error_line(done.stderr, f"--out {manifest}", "inside the input folder RUN")
    _refused_in_process(["calibrate", str(run_dir), "--out", str(shard)], capsys, "inside the input folder RUN")
    _refused_in_process(
        ["calibrate", str(run_dir), "--out", str(tmp_path / "t.json"), "--figures", str(run_dir / "fig")],
        capsys,
        "--figures",
        "inside the input folder RUN",
    )
    assert {path: _snapshot(path) for path in before} == before
    assert not (run_dir / "fig").exists()


def test_router_train_and_predict_onto_their_prompts_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "P.tsv"
    prompts.write_text(PROMPTS, encoding="utf-8")
    before = _snapshot(prompts)
    done = _genedge("router", "train", prompts, "--out", prompts)
    assert done.returncode == 2
    _one_error_line(done.stderr, "--out", "the input PROMPTS")
    _refused_in_process(["router", "predict", str(prompts), "--out", str(prompts)], capsys, "the input PROMPTS")
    assert _snapshot(prompts) == before


def test_every_spelling_of_an_input_is_refused(tmp_path: Path, run_dir: Path) -> None:
    table = tmp_path / "t.json"
    table.write_text("{}", encoding="utf-8")
    link = tmp_path / "link.json"
    link.symlink_to(table)
    hard = tmp_path / "hard.json"
    os.link(table, hard)
    (tmp_path / "sub").mkdir()
    for out in (table, link, tmp_path / "sub" / ".." / "t.json", hard):
        with pytest.raises(UnsafeTargetError, match="the input --table"):
            check_not_input({"--out": out}, {"--table": table})
    with pytest.raises(UnsafeTargetError, match="the input --table"):  # the input given through the link
        check_not_input({"--out": table}, {"--table": link})
    with pytest.raises(UnsafeTargetError, match="inside the input folder RUN"):
        check_not_input({"--out": run_dir / "records" / "new.json"}, {"RUN": [tmp_path / "sub", run_dir]})
    # Outputs elsewhere, and outputs not given, pass.
    check_not_input({"--out": tmp_path / "plan.json", "--figures": None}, {"--table": table, "--prompts": None})


# --------------------------------------------------------------------------------------------------
# Tables: unbounded work and silent garbage


def test_a_batch_size_of_a_million_is_refused_before_planning(tmp_path: Path) -> None:
    document = _reference()
    model = document["models"]["sd15"]
    model["batch_latency"] = {"1": dict(model["latency"]), "1000000": dict(model["latency"])}
    table = _write_table(tmp_path / "batch.json", document)
    done = _genedge("plan", "--table", table, "--batching", "--samples", "0")
    assert done.returncode == 2
    _one_error_line(done.stderr, str(table), "models.sd15.batch_latency.1000000", f"<= {MAX_BATCH_SIZE}")


def _cells(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [cell for cells in document["models"]["sd15"]["quality"].values() for cell in cells.values()]


def _huge_n(document: dict[str, Any]) -> None:
    cell = next(cell for cell in _cells(document) if cell["n"] >= 2)
    cell["n"] = 10**30
    del cell["mean_se"], cell["std_se"]


def _huge_standard_errors(document: dict[str, Any]) -> None:
    for cell in _cells(document):
        if cell["n"] < 2:
            cell["mean_se"] = cell["std_se"] = 1e308


def _blank_model(document: dict[str, Any]) -> None:
    document["models"][""] = document["models"].pop("sd15")


def _huge_latency_n(document: dict[str, Any]) -> None:
    document["models"]["sd15"]["latency"]["n"] = 10**400


def _huge_step_key(document: dict[str, Any]) -> None:
    cells = document["models"]["sd15"]["quality"]["Basic"]
    cells["9" * 5000] = cells.pop(next(iter(cells)))


def _huge_guidance_scale(document: dict[str, Any]) -> None:
    run = {"guidance_scale": 1e308, "models": [{"key": "sd15", "resolution": 512}]}
    document["manifest"]["runs"] = {"run-a": run}


def _resolution_as_text(document: dict[str, Any]) -> None:
    document["manifest"]["runs"] = {"run-a": {"models": [{"key": "sd15", "resolution": "512px"}]}}


@pytest.mark.parametrize(
    "edit, field, expected",
    [
        (_huge_n, ".n", "expected a count <= 1e+09"),
        (_huge_standard_errors, ".mean_se", "expected a finite standard error <= 100, but got 1e+308"),
        (_blank_model, "models", "expected a non-empty name"),
        (_huge_latency_n, "models.sd15.latency.n", "expected a count <= 1e+09"),
        (_huge_step_key, "models.sd15.quality.Basic.999", "expected a positive integer step count as key"),
        (
            _huge_guidance_scale,
            "manifest.runs.run-a.guidance_scale",
            "expected a guidance scale <= 100, but got 1e+308",
        ),
        (_resolution_as_text, "manifest.runs.run-a.models[0].resolution", "expected an integer, but got str"),
    ],
    ids=["n-1e30", "se-1e308", "blank-model", "n-1e400", "step-key-5000-digits", "guidance-1e308", "resolution-text"],
)
def test_tables_with_garbage_are_refused_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, field: str, expected: str
) -> None:
    document = _reference()
    edit(document)
    table = _write_table(tmp_path / "bad.json", document)
    with pytest.raises(TableError) as err:
        load_table(table)
    assert str(table) in str(err.value) and field in err.value.field_path and expected in str(err.value)
    _refused_in_process(["plan", "--table", str(table)], capsys, str(table), expected)


def test_a_repeated_models_key_is_refused_not_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = _reference()
    text = json.dumps(document, indent=1)
    first = json.dumps({"sd15": document["models"]["sd15"]})
    table = tmp_path / "twice.json"
    table.write_text(text.replace('"models": {', f'"models": {first},\n "models": {{', 1), encoding="utf-8")
    assert len(json.loads(table.read_text())["models"]) == 3  # what json alone silently keeps
    with pytest.raises(TableError, match="key 'models': given twice in one object"):
        load_table(table)
    _refused_in_process(["plan", "--table", str(table)], capsys, str(table), "key 'models'", "given twice")


def test_a_blank_category_name_is_refused_in_a_mapping() -> None:
    from genedge.contract.mappings import check_category_mapping

    with pytest.raises(ArtifactError) as err:
        check_category_mapping({"column": "Challenge", "labels": {" ": ["Basic"]}}, "mapping.json")
    assert err.value.field_path == "category_mapping.labels" and "expected a non-empty name" in str(err.value)


def test_every_json_reader_refuses_repeated_keys(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    path.write_text('{"a": {"x": 1, "y": 2, "x": 3}}', encoding="utf-8")
    with pytest.raises(ArtifactError) as err:
        read_json(path, "a document")
    assert err.value.field_path == "key 'x'"


def test_an_integer_too_long_to_read_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text('{"n": ' + "9" * 5000 + "}", encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"big\.json: document: holds an integer too long to read"):
        read_json(path, "a document")


def test_shipped_tables_round_trip_byte_identical(tmp_path: Path) -> None:
    for source in sorted(REFERENCE.parent.glob("*.json")):
        written = save_table(load_table(source), tmp_path / source.name)
        assert written.read_bytes() == source.read_bytes(), source.name


# --------------------------------------------------------------------------------------------------
# Traces, prompt files and routers


def _trace(tmp_path: Path, times: list[str]) -> Path:
    path = tmp_path / "trace.tsv"
    categories = ["Basic", "Detail", "Complex"]
    rows = "".join(f"{t}\t{categories[i % 3]}\n" for i, t in enumerate(times))
    path.write_text("time_s\tcategory\n" + rows, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "times, expected",
    [
        (["1733500000", "1733500010", "1733500020"], "row 1 has '1733500000'"),
        (["36000", "36010", "36020"], "expected times that start near 0 s"),
        (["90", "100"], "expected times that start near 0 s"),
        (["0", "1e308"], "row 2 has '1e308'"),
        (["0", "3e7"], f"expected at least {MIN_RATE_PER_S:g} requests/s"),
    ],
    ids=["epoch", "time-of-day", "late-start", "1e308", "too-slow"],
)
def test_traces_that_do_not_start_near_zero_or_run_too_long_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], times: list[str], expected: str
) -> None:
    path = _trace(tmp_path, times)
    with pytest.raises(ArtifactError) as err:
        read_trace(path)
    assert err.value.field_path == "time_s" and expected in str(err.value)
    line = _refused_in_process(["plan", "--trace", str(path)], capsys, str(path), "time_s", expected)
    if times[0] != "0":
        assert "subtract the first row's time" in line  # says how to fix it


def test_a_trace_near_zero_still_reads(tmp_path: Path) -> None:
    arrivals = read_trace(_trace(tmp_path, ["0.5", "1", "2"]))
    assert len(arrivals) == 3 and arrivals.duration_s == 2.0
    assert len(read_trace(_trace(tmp_path, ["30"]))) == 1  # a minute of quiet is still near zero


def test_a_null_prompt_in_parquet_is_not_counted_as_a_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow
    import pyarrow.parquet as parquet

    path = tmp_path / "prompts.parquet"
    columns = {"Prompt": ["a cat", None, "a dog"], "Challenge": ["Basic", "Basic", None]}
    parquet.write_table(pyarrow.table(columns), path)
    with pytest.raises(ArtifactError) as err:
        read_prompt_file(path)
    assert err.value.field_path == "Prompt row 2" and "1 rows have none" in str(err.value)
    _refused_in_process(["plan", "--prompts", str(path)], capsys, str(path), "Prompt row 2")
    # A null elsewhere (an unlabelled row) is still a prompt.
    columns["Prompt"][1] = "a bird"
    parquet.write_table(pyarrow.table(columns), path)
    assert read_prompt_file(path).column("Challenge") == ["Basic", "Basic", ""]


def test_a_fifo_or_a_directory_is_not_reported_as_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "fifo.tsv"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.tsv"
    folder.mkdir()
    with pytest.raises(ArtifactError, match="is a FIFO, not a regular file; expected a prompt file"):
        read_prompt_file(fifo)
    with pytest.raises(IsADirectoryError, match="is a directory; expected a prompt file"):
        read_prompt_file(folder)
    line = _refused_in_process(["plan", "--prompts", str(folder)], capsys, str(folder), "is a directory")
    assert "no such file" not in line
    _refused_in_process(["plan", "--table", str(fifo)], capsys, str(fifo), "is not a regular file (a FIFO")


def test_a_router_intercept_of_1e308_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = json.loads(resolve_router("paper4-tfidf").read_text(encoding="utf-8"))
    document["classifier"]["intercept"][0] = 1e308
    path = tmp_path / "router.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(RouterError) as err:
        load_router(path)
    assert err.value.field_path == "classifier.intercept" and "within ±1000, but got 1e+308" in str(err.value)
    prompts = tmp_path / "P.tsv"
    prompts.write_text(PROMPTS, encoding="utf-8")
    _refused_in_process(
        ["router", "predict", str(prompts), "--router", str(path)], capsys, str(path), "classifier.intercept"
    )
    blank = copy.deepcopy(document)
    blank["classifier"]["intercept"][0] = 0.0
    blank["name"] = " "
    path.write_text(json.dumps(blank), encoding="utf-8")
    with pytest.raises(RouterError, match="name: expected a non-empty name"):
        load_router(path)


# --------------------------------------------------------------------------------------------------
# Options and file-system refusals


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--rate", "1e-300"], "argument --rate: expected requests per second >= 1e-06, but got 1e-300"),
        (["--slo", "1e308"], "argument --slo: expected seconds <= 604800, but got 1e+308"),
        (["--memory-gib", "1e308"], "argument --memory-gib: expected GiB <= 16384, but got 1e+308"),
        (["--memory-gib", "nan"], "argument --memory-gib: expected a finite number, but got nan"),
        (["--seed", "-1"], "argument --seed: expected a seed >= 0, but got -1"),
        (["--window-s", "0"], "argument --window-s: expected seconds > 0, but got 0.0"),
        (["--budget", "1e308"], "argument --budget: expected GPUs <= 1024, but got 1e+308"),
        (["--weight", "1e308"], "argument --weight: expected points per second <= 1e+06, but got 1e+308"),
        (["--requests", "1e12"], "argument --requests: expected requests (int), but got '1e12'"),
        (["--requests", "2000000000"], "argument --requests: expected requests <= 1e+09, but got 2000000000"),
        (["--quantile", "nan"], "argument --quantile: expected a finite number, but got nan"),
        (["--rates", "Basic=1e-300"], "--rates: expected values summing to at least 1e-06, but they sum to 1e-300"),
        (["--workload", "Basic=1e300"], "--workload: 'Basic': expected a number <= 1e+09, but got 1e+300"),
    ],
)
def test_options_out_of_range_name_the_option(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused_in_process(["plan", *argv], capsys, expected)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--budgets", "0.5,1e308"], "argument --budgets: expected GPUs <= 1024, but got 1e+308"),
        (["--weights", "nan"], "argument --weights: expected a finite number, but got nan"),
        (["--loads", "0,10"], "argument --loads: expected requests >= 1, but got 0"),
    ],
)
def test_simulate_lists_are_bounded_item_by_item(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused_in_process(["simulate", *argv], capsys, expected)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--batch-size", "1000000"], "argument --batch-size: expected images per call <= 1024, but got 1000000"),
        (["--seeds", "0,-1"], "argument --seeds: expected a seed >= 0, but got -1"),
        (["--guidance-scale", "750"], "argument --guidance-scale: expected a guidance scale <= 100, but got 750.0"),
        (["--threads", "0"], "argument --threads: expected a thread count >= 1, but got 0"),
        (["--threads", "8193"], "argument --threads: expected a thread count <= 8192, but got 8193"),
    ],
)
def test_profile_options_are_bounded_before_any_model_loads(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused_in_process(["profile", "--model", "replica:tiny", "--steps", "2", *argv], capsys, expected)


def test_router_seed_is_bounded_in_a_real_process(tmp_path: Path) -> None:
    done = _genedge("router", "train", tmp_path / "P.tsv", "--out", tmp_path / "r.json", "--seed", "-1")
    assert done.returncode == 2
    _one_error_line(done.stderr, "argument --seed: expected a seed >= 0")


def test_writes_the_file_system_refuses_name_the_path_and_the_remedy(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("keep", encoding="utf-8")
    for target in (blocker / "plan.json", blocker / "deeper" / "plan.json"):
        with pytest.raises(OSError) as err:
            write_text_atomic(target, "{}")
        assert (
            str(err.value)
            == f"{target}: cannot create its folder: {blocker} is a file, not a folder; choose another path"
        )
        assert "Errno" not in str(err.value)
    assert blocker.read_text(encoding="utf-8") == "keep"
    try:
        write_text_atomic("/sys/genedge-plan.json", "{}")
    except PermissionError as refused:
        err = refused
    else:
        pytest.skip("/sys takes new files here, so there is no folder that refuses a write")
    assert str(err).startswith("/sys/genedge-plan.json: no permission to write in /sys (")
    assert "choose a folder you can write to" in str(err)


def test_raw_file_system_errors_say_which_path_and_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("keep", encoding="utf-8")
    line = _refused_in_process(
        ["demo", "--dir", str(blocker)], capsys, f"{blocker}: File exists", "choose another path"
    )
    assert "Errno" not in line and blocker.read_text(encoding="utf-8") == "keep"
    try:
        os.mkdir("/sys/genedge-test")
    except PermissionError as err:  # EPERM or EACCES, even for root
        message = os_error_message(err)
    else:
        os.rmdir("/sys/genedge-test")
        pytest.skip("/sys takes new folders here, so there is no folder that refuses one")
    assert message.startswith("/sys/genedge-test: ") and "change its permissions" in message
    assert "Errno" not in message


@pytest.fixture(scope="module")
def plan_document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("plan") / "plan.json"
    assert main(["plan", "--samples", "0", "--compare", "paper", "--out", str(out)]) == 0
    return json.loads(out.read_text(encoding="utf-8"))


def _plan_edit(path: str, value: Any) -> Any:
    def edit(document: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = document
        for key in parents:
            node = node[key] if key in node else node[next(iter(node))]
        node[last] = value

    return edit


@pytest.mark.parametrize(
    "edit, field",
    [
        (_plan_edit("routing", [1]), "routing"),
        (_plan_edit("routing/*/sd15", "x"), ".sd15"),
        (_plan_edit("models/sd15", [1]), "models.sd15"),
        (_plan_edit("inputs", []), "inputs"),
        (_plan_edit("models/sd15/share", float("nan")), "models.sd15.share"),
        (_plan_edit("models/*/max_batch", 0), ".max_batch"),
        (_plan_edit("models/*/service_s", None), ".service_s"),
    ],
    ids=["routing-list", "probability-text", "model-list", "inputs-list", "share-nan", "batch-0", "no-call-time"],
)
def test_malformed_plans_name_the_field_instead_of_a_traceback(
    tmp_path: Path, plan_document: dict[str, Any], edit: Any, field: str
) -> None:
    from genedge.optimizer.plan_file import PlanError, load_plan

    document = copy.deepcopy(plan_document)
    edit(document)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(PlanError) as err:
        load_plan(path)
    assert str(path) in str(err.value) and field in err.value.field_path
