"""The CLI as a user meets it: light imports, clear errors for bad input, files written safely.

- ``genedge --help`` and ``genedge plan`` import no pandas, pyarrow, scipy.stats, matplotlib or torch;
- a command of the ``profile`` extra without torch ends with one line naming the install;
- workload strings with a repeated category, nothing, or a fractional count are clear errors;
- tables with implausible numbers name the file and field;
- ``--out`` onto a device node, a FIFO or a symlink is refused and nothing is replaced; plans are
  created with the umask's mode.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import run_genedge, run_python

from genedge.cli import main
from genedge.data import path as data_path

HEAVY = ("pandas", "pyarrow", "scipy.stats", "matplotlib", "torch")
REFERENCE = data_path("tables", "reference-a100.json")
LIGHT_COMMANDS = (["--help"], ["plan"], ["plan", "--help"], ["simulate", "--help"])


@pytest.fixture(scope="module")
def heavy_imports() -> list[list[str]]:
    """The heavy modules loaded after each light command, run one after another in one fresh interpreter.

    Modules only accumulate, so a command that loads a heavy module shows it in its own line (and in every
    later one); a fresh interpreter per command would find the same.
    """
    code = (
        "import contextlib, io, json, sys\n"
        "from genedge.cli import main\n"
        f"for argv in {list(LIGHT_COMMANDS)!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        f"    print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.strip().splitlines()[-len(LIGHT_COMMANDS) :]]


@pytest.mark.parametrize("index", range(len(LIGHT_COMMANDS)), ids=[" ".join(a) for a in LIGHT_COMMANDS])
def test_light_commands_import_nothing_heavy(heavy_imports: list[list[str]], index: int) -> None:
    assert heavy_imports[index] == []


def test_plan_builds_only_its_own_parser_and_the_top_level_help_lists_every_command() -> None:
    code = (
        "import contextlib, io, json, sys\n"
        "from genedge.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    status = main(['-v', 'plan'])\n"
        "stages = sorted(m for m in sys.modules if m.startswith(('genedge.profiler', 'genedge.serve')))\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['--help', 'plan'])\n"
        "print(json.dumps([status, stages, out.getvalue()]))\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    status, stages, top_help = json.loads(done.stdout.strip().splitlines()[-1])
    assert status == 0 and stages == []
    assert all(f"    {name}" in top_help for name in ("profile", "plan", "serve", "loadtest"))


def test_a_missing_profile_extra_is_one_line_naming_the_install(tmp_path: Path) -> None:
    # Blocking the import is what a light install looks like to genedge.
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from genedge.cli import main\n"
        f"prompts = {str(data_path('prompts', 'smoke.tsv'))!r}\n"
        "argv = ['profile', '--model', 'replica:tiny', '--steps', '2', '--prompts', prompts]\n"
        f"raise SystemExit(main([*argv, '--out', {str(tmp_path)!r}]))\n"
    )
    done = run_python(code)
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        "genedge profile: error: genedge.profiler needs 'torch'; install it with `pip install \"genedge[profile]\"`."
    ]


def test_a_missing_loadtest_extra_is_one_line_naming_the_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['aiohttp'] = None\n"
        "from genedge.cli import main\n"
        f"prompts = {str(data_path('prompts', 'smoke.tsv'))!r}\n"
        "raise SystemExit(main(['loadtest', 'http://127.0.0.1:9', '--num-prompts', '1', '--prompts', prompts]))\n"
    )
    done = run_python(code)
    assert done.returncode == 3
    hint = '`pip install "genedge[loadtest]"`.'
    assert done.stderr.strip().splitlines() == [
        f"genedge loadtest: error: genedge.loadtest needs 'aiohttp'; install it with {hint}"
    ]


@pytest.mark.parametrize(
    ("workload", "message"),
    [
        ("", "--workload: expected CATEGORY=COUNT items such as 'Basic=25,Detail=50', but got nothing"),
        ("Basic=3,Basic=4", "--workload: category 'Basic' is given twice"),
        ("Basic=2.5", "--workload: expected a whole number of requests for 'Basic', but got '2.5'"),
        ("Basic=-1", "--workload: expected a whole number of requests for 'Basic', but got '-1'"),
        ("=3", "--workload: expected CATEGORY=COUNT items, but got '=3'"),
        ("Basic=x", "--workload: expected a number for 'Basic', but got 'x'"),
    ],
)
def test_bad_workload_strings_are_clear_errors(capsys: pytest.CaptureFixture, workload: str, message: str) -> None:
    assert main(["plan", "--workload", workload]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"genedge plan: error: {message}"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (("quality", "Basic", "50", "mean"), 150.0, "expected a number <= 100, but got 150.0"),
        (("quality", "Basic", "50", "std"), 1e300, "expected a number <= 100, but got 1e+300"),
        (("latency", "per_step_s"), 1e9, "expected a number <= 3600, but got 1000000000.0"),
        (("memory", "peak_bytes"), 2**60, f"expected bytes in (0, {2**44}], but got {2**60}"),
    ],
)
def test_implausible_tables_name_the_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture, field: tuple[str, ...], value: float, message: str
) -> None:
    doc = json.loads(REFERENCE.read_text(encoding="utf-8"))
    node = doc["models"]["sd15"]
    for key in field[:-1]:
        node = node[key]
    node[field[-1]] = value
    table = tmp_path / "table.json"
    table.write_text(json.dumps(doc), encoding="utf-8")
    assert main(["plan", "--table", str(table)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"genedge plan: error: {table}: models.sd15.{'.'.join(field)}: {message}"


def test_plan_out_refuses_devices_fifos_and_symlinks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", "--compare", "paper", "--out", "/dev/null"]) == 2
    device = "genedge plan: error: /dev/null: is a device, not a regular file; refusing to replace it"
    assert capsys.readouterr().err.strip().endswith(device)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    kept = tmp_path / "kept.json"
    kept.write_text("keep", encoding="utf-8")
    link = tmp_path / "link.json"
    link.symlink_to(kept)
    for target, reason in (
        (fifo, "is a FIFO, not a regular file; refusing to replace it"),
        (link, "is a symbolic link; refusing to write through it"),
    ):
        assert main(["plan", "--compare", "paper", "--out", str(target)]) == 2
        assert f"genedge plan: error: {target}: {reason}" in capsys.readouterr().err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink() and kept.read_text(encoding="utf-8") == "keep"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_plans_are_created_with_the_umask_mode(tmp_path: Path, capsys: pytest.CaptureFixture, umask: int) -> None:
    out = tmp_path / "plan.json"
    old = os.umask(umask)
    try:
        assert main(["plan", "--compare", "paper", "--out", str(out)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_warnings_reach_the_user_as_one_readable_line_each(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from genedge.testing import QualityTruth, SyntheticModel, synthetic_run, write_run

    # No memory rung measured: calibrate derives the peak and warns.
    model = SyntheticModel(key="m", quality={"Basic": QualityTruth(30, 5, 10, 1)}, overhead_s=1, per_step_s=0.1)
    run = write_run(tmp_path / "run", *synthetic_run([model], prompts_per_category=4, rng=0))
    assert main(["calibrate", str(run), "--out", str(tmp_path / "table.json")]) == 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines and all(line.startswith("warning: ") for line in lines), lines
    assert any("peak_bytes is derived" in line for line in lines)
    assert "None" not in captured.out


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    # `genedge plan | head -0`: the reader is gone before the plan is printed.
    read, write = os.pipe()
    os.close(read)
    try:
        done = run_genedge("plan", "--compare", "paper", stdout=write, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 1
    assert done.stderr == ""
