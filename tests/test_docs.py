"""The docs show only what the project runs: every command in README.md and docs/ is run by a test, and every
output they show is what the command prints now.

How a page is read (the conventions are written for authors in docs/development.md):

- Fenced ``bash`` and ``console`` blocks hold commands. In a ``console`` block a line starting with ``$ `` is a
  command (a trailing ``\\`` continues it) and the lines after it, up to the next ``$ ``, are its output; a
  line that is exactly ``...`` leaves lines of the output out. In a ``bash`` block every line is a command.
- The commands checked are ``genedge ...`` (and ``python -m genedge ...``), ``python benchmarks/...`` and
  ``python scripts/...``, also inside ``&&`` chains and pipes.
- ``<!-- needs: gpu -->`` (or ``cluster``) on the line before a block: its commands need hardware this
  project's machines lack, and nothing runs them here.
- ``<!-- output: not compared (why) -->`` before a block: its outputs are measurements of one machine or take
  minutes to regenerate; its commands must still be run by a test.

Every other command must be in ``RUN_HERE`` (run by this file, slow, with any output a page shows compared
after masking wall-clock figures) or in ``RUN_BY`` (run by another test that passes the same subcommand and
every option the page shows, on smaller inputs).
"""

from __future__ import annotations

import difflib
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import PARTIPROMPTS as SHARED_PROMPTS
from conftest import ROOT, genedge_env, run_python

DOCS = ROOT / "docs"
PAGES = (ROOT / "README.md", *sorted(DOCS.rglob("*.md")))
README_MAX_LINES = 200

#: What ``<!-- needs: X -->`` may name: hardware this project's machines lack.
NEEDS = {"gpu": "an NVIDIA GPU", "cluster": "several machines joined in a Ray cluster"}
_MARKER = re.compile(r"\s*<!--\s*(needs|output):\s*(.*?)\s*-->\s*")
_FENCE = re.compile(r"^```(\w*)\s*$")
_SEPARATORS = {"&&", "||", ";", "|", "&"}

#: Documented commands this file runs for real (slow tests). The value is what runs instead, with every option
#: the page shows but smaller inputs, or None: exactly as documented. Outputs pages show are compared.
RUN_HERE: dict[str, str | None] = {
    "genedge plan": None,
    "genedge plan --workload Basic=40,Detail=120,Complex=20 --budget 0.5 --weight 0.1 --out plan.json": None,
    "genedge plan --prompts PartiPrompts.tsv --weight 0.001": None,
    "genedge plan --prompts PartiPrompts.tsv --weight 0.001 --compare paper,exact": None,
    "genedge plan --min-clipscore 21 --max-shortfall 0.1": None,
    "genedge plan --memory-gib 14": None,
    "genedge plan --memory-gib 10": None,
    "genedge plan --table galaxy-s24 --rate 0.2 --slo 20": None,
    "genedge plan --table galaxy-s24 --rates 0.05:2:40 --out schedule.json --figures figures": None,
    "genedge plan --table galaxy-s24 --rates 0.15,0.3,0.45,0.6 --slo 10": None,
    "genedge plan --samples 1000 --seed 7": None,
    "genedge plan --robust quantile --quantile 0.1": None,
    "genedge plan --robust expected": None,
    "genedge tables": None,
    "genedge simulate --loads 10,25,50,100,150,200 --weights 0.02,0.05,0.1 --out simulate-out --figures": None,
    "genedge simulate --table galaxy-s24 --window-vs-open 600 --slo 30 --budgets 1": None,
    "python benchmarks/optimizer.py": "python benchmarks/optimizer.py --repeats 1",
    "python benchmarks/cli_startup.py": "python benchmarks/cli_startup.py --repeats 1 --no-simulate",
    # The offline recipe: the documented options, one small replica at one step count, one prompt per category.
    "genedge profile --model replica:bk-sdm-tiny --steps 2,3 --prompts PartiPrompts.tsv --per-category 2 "
    "--resolution 128 --clip-backbone replica:tiny --clip-pretrained none --out runs/smoke": (
        "genedge profile --model replica:tiny --steps 2 --prompts PartiPrompts.tsv --per-category 1 "
        "--resolution 64 --clip-backbone replica:tiny --clip-pretrained none --out runs/smoke --no-progress"
    ),
    "genedge profile show runs/smoke": None,
    # tables/a100.json is the shipped reference table here (the folder fixture copies it): a calibrated table.
    "genedge plan --table tables/a100.json --out plan.json": None,
}

#: Commands of RUN_HERE that read what another one wrote: that one runs first, in the same folder.
AFTER = {
    "genedge profile show runs/smoke": "genedge profile --model replica:bk-sdm-tiny --steps 2,3 --prompts "
    "PartiPrompts.tsv --per-category 2 --resolution 128 --clip-backbone replica:tiny --clip-pretrained none "
    "--out runs/smoke",
}

_DEMO = ("tests/test_demo.py::test_demo_runs_profile_calibrate_plan_offline_on_cpu",)
_SAVED_FOLDER = ("tests/test_profiler_real_models.py::test_profile_a_pipeline_saved_to_a_folder",)
_SERVE = ("tests/test_serve_http.py::test_routes_each_category_by_the_plans_fractions_with_the_planned_steps",)

#: Documented commands other tests run: each names tests whose files pass the same subcommand and every option.
RUN_BY: dict[str, tuple[str, ...]] = {
    "genedge demo --dir demo": _DEMO,
    "genedge demo --dir /tmp/genedge-demo": _DEMO,
    "genedge serve demo/plan.json --port 8000": _SERVE,
    "genedge profile save-replica tiny models/my-pipeline": _SAVED_FOLDER,
    "genedge profile --model models/my-pipeline --steps 2,3 --prompts PartiPrompts.tsv --per-category 2 "
    "--clip-backbone replica:tiny --clip-pretrained none --out runs/my-pipeline": _SAVED_FOLDER,
    "genedge loadtest http://127.0.0.1:8000 --prompts data/prompts/smoke.tsv --request-rate 2 --num-prompts 60 "
    "--save-result --result-dir load-2rps --figure load-2rps.png": (
        "tests/test_loadtest.py::test_cli_end_to_end_writes_parquet_result_and_figure",
        "tests/test_serve_http.py::test_loadtest_measures_the_served_plan",
    ),
    "genedge loadtest http://127.0.0.1:8000 --prompts data/prompts/smoke.tsv --trace lora_request_trace.csv "
    "--trace-start 2024-12-03 21:00 --trace-end 2024-12-03 23:00 --time-scale 4 --rate-scale 0.5 --trace-images one "
    "--seed 3 --result-dir gentd26-replay": (
        "tests/test_trace_replay.py::test_loadtest_replays_a_compressed_trace_against_a_server",
    ),
    "genedge simulate --table galaxy-s24 --window-vs-open 600 --budgets 1 --trace lora_request_trace.csv "
    "--trace-start 2024-12-03 21:00 --trace-end 2024-12-03 23:00 --time-scale 4 --rate-scale 0.5 --trace-images one "
    "--seed 3": ("tests/test_trace_replay.py::test_simulate_replays_a_busy_hour_of_the_real_trace",),
    "genedge router eval PartiPrompts.tsv --figure confusion.png": (
        "tests/test_cli_router.py::test_eval_of_both_backends_in_one_run_on_partiprompts",
        "tests/test_cli_router.py::test_eval_prints_backend_beside_the_majority_baseline_and_draws_the_confusion",
    ),
    "genedge calibrate runs/a100 --out tables/a100.json --figures figures/a100": (
        "tests/test_calibrate_cli.py::test_calibrate_writes_a_byte_stable_table_summary_and_figures",
    ),
    "genedge calibrate --served load-2rps --table demo/table.json --out demo/served-table.json": (
        "tests/test_calibrate_served.py::test_a_served_demo_recalibrates_its_table",
    ),
    "genedge compare tables/a100.json tables/h100.json": (
        "tests/test_compare.py::test_compare_reports_doubled_per_step_latency_and_the_plan_decisions_it_moves",
    ),
}


@dataclass(frozen=True)
class Shown:
    """One command a page shows, with the output shown under it (console blocks) and the block's markers."""

    page: Path
    line: int
    command: str
    output: tuple[str, ...]
    needs: str | None
    compared: bool

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _tracked(words: list[str]) -> list[str] | None:
    """The words of a command this file checks (genedge, benchmarks, scripts), or None for any other."""
    if words[:3] in (["python", "-m", "genedge"], ["python3", "-m", "genedge"]):
        return ["genedge", *words[3:]]
    if words[:1] == ["genedge"]:
        return words
    if words[:1] in (["python"], ["python3"]) and len(words) > 1 and words[1].startswith(("benchmarks/", "scripts/")):
        return ["python", *words[1:]]
    return None


def _commands(line: str) -> list[str]:
    """The checked commands of one shell line: split at ``&&``, ``|``, ``;``; comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    found, words = [], []
    for token in [*lexer, ";"]:
        if token in _SEPARATORS:
            tracked = _tracked(words) if words else None
            if tracked:
                found.append(" ".join(tracked))
            words = []
        else:
            words.append(token)
    return found


def _joined(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Lines with a trailing backslash joined to the next, each with its first line number."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, text in lines:
        if pending is not None:
            number, text = pending[0], pending[1] + " " + text.strip()
        if text.rstrip().endswith("\\"):
            pending = (number, text.rstrip()[:-1].rstrip())
            continue
        pending = None
        out.append((number, text))
    return out


def _bash_block(page: Path, body: list[tuple[int, str]], needs: str | None, compared: bool) -> list[Shown]:
    """The checked commands of a ``bash`` block (comments and blank lines skipped)."""
    lines = [(n, t) for n, t in body if t.strip() and not t.lstrip().startswith("#")]
    return [Shown(page, number, c, (), needs, compared) for number, line in _joined(lines) for c in _commands(line)]


def _console_block(
    page: Path, body: list[tuple[int, str]], needs: str | None, compared: bool
) -> tuple[list[Shown], list[str]]:
    """The checked commands of a ``console`` block, each with the output after its ``$`` line."""
    entries: list[tuple[int, str, list[str]]] = []
    problems: list[str] = []
    for number, line in _joined(body):
        if line.startswith("$ "):
            entries.append((number, line[2:], []))
        elif entries:
            entries[-1][2].append(line)
        elif line.strip():
            problems.append(f"{page.relative_to(ROOT)}:{number}: output without a `$ command` before it")
    shown = []
    for number, line, output in entries:
        commands = _commands(line)
        for command in commands:
            # Output belongs to the pipeline's last checked command (what printed it).
            out = tuple(output) if command == commands[-1] else ()
            shown.append(Shown(page, number, command, out, needs, compared))
    return shown, problems


def shown_commands(page: Path, text: str) -> tuple[list[Shown], list[str]]:
    """Every checked command ``text`` shows, and the problems found reading it (output without a command)."""
    shown: list[Shown] = []
    problems: list[str] = []
    markers: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        marker = _MARKER.fullmatch(lines[i])
        if marker:
            markers[marker.group(1)] = marker.group(2)
        if not fence:
            if not marker and lines[i].strip():
                markers = {}
            i += 1
            continue
        language, start = fence.group(1), i + 1
        end = next(k for k in range(start, len(lines)) if lines[k].startswith("```"))
        body = [(k + 1, lines[k]) for k in range(start, end)]
        needs, compared = markers.get("needs"), not markers.get("output", "").startswith("not compared")
        markers = {}
        i = end + 1
        if language == "bash":
            shown += _bash_block(page, body, needs, compared)
        elif language == "console":
            block, found = _console_block(page, body, needs, compared)
            shown += block
            problems += found
    return shown, problems


def _all_shown() -> tuple[list[Shown], list[str]]:
    shown: list[Shown] = []
    problems: list[str] = []
    for page in PAGES:
        found, bad = shown_commands(page, page.read_text(encoding="utf-8"))
        shown += found
        problems += bad
    return shown, problems


def unrun(shown: list[Shown]) -> list[str]:
    """Why each command that no test runs and no marker excuses fails the docs."""
    failures = []
    for item in shown:
        if item.needs is not None:
            if item.needs not in NEEDS:
                failures.append(f"{item.where}: <!-- needs: {item.needs} --> names none of {sorted(NEEDS)}")
            continue
        if item.command not in RUN_HERE and item.command not in RUN_BY:
            failures.append(f"{item.where}: `{item.command}` is run by no test (add it to RUN_HERE or RUN_BY)")
        elif item.output and item.compared and item.command not in RUN_HERE:
            failures.append(
                f"{item.where}: the output of `{item.command}` is compared by nothing: run it in RUN_HERE, "
                "or mark the block <!-- output: not compared (why) -->"
            )
    return failures


# Wall-clock figures: the only parts of an output allowed to differ from the page.
_WALL_CLOCK = (
    re.compile(r"\d[\d,]*(?:\.\d+)? ms\b"),  # plan (genedge, 56 ms)
    re.compile(r"(?<=; )\d+(?:\.\d+)? s$"),  # how sure: ... optimal shares; 0.6 s
    re.compile(r"(?<=about )\d+(?:\.\d+)? s(?= a sample)"),  # re-planned ..., about 2.0 s a sample here
)
_TIMING_COLUMN = "plan ms"


def masked(lines: list[str] | tuple[str, ...]) -> list[str]:
    """Output lines with wall-clock figures (and the ``plan ms`` column) replaced by ``#``, spaces collapsed."""
    out = []
    column_end = None
    for line in lines:
        if not line.strip():
            column_end = None
        elif column_end is not None and len(line) >= column_end:
            head = line[:column_end].rstrip()
            line = head[: head.rfind(" ") + 1] + "#" + line[column_end:]
        if line.rstrip().endswith(_TIMING_COLUMN):
            column_end = len(line.rstrip())
        for pattern in _WALL_CLOCK:
            line = pattern.sub("#", line)
        out.append(" ".join(line.split()))
    return out


def shows(shown: list[str] | tuple[str, ...], printed: list[str]) -> bool:
    """Whether ``printed`` is what a page shows: equal, or, where ``...`` leaves lines out, in that order."""
    chunks: list[list[str]] = [[]]
    for line in shown:
        if line.strip() == "...":
            chunks.append([])
        else:
            chunks[-1].append(line)
    want = [masked(chunk) for chunk in chunks]
    have = masked(printed)
    while have and not have[-1]:
        have.pop()
    if len(want) == 1:
        return want[0] == have
    first, *middle, last = want
    if have[: len(first)] != first:
        return False
    position = len(first)
    for chunk in middle:
        found = next(
            (k for k in range(position, len(have) - len(chunk) + 1) if have[k : k + len(chunk)] == chunk), None
        )
        if found is None:
            return False
        position = found + len(chunk)
    return not last or (len(have) - len(last) >= position and have[len(have) - len(last) :] == last)


def _options(command: str) -> set[str]:
    return {word.split("=")[0] for word in command.split() if word.startswith("--")}


# --- fast checks -------------------------------------------------------------------------------------------


def test_every_command_the_docs_show_is_run_by_a_test_or_needs_hardware():
    shown, problems = _all_shown()
    assert len({item.page for item in shown}) > 5, "the pages' commands were not found"
    assert problems + unrun(shown) == []


def test_a_planted_command_that_no_test_runs_is_caught():
    page = DOCS / "planted.md"
    text = (
        "```bash\ngenedge plan --table tables/a100.json --out plan.json\ngenedge plan --brand-new-option 3\n```\n\n"
        "<!-- needs: gpu -->\n```bash\ngenedge profile --model org/big --out runs/gpu\n```\n\n"
        "```console\n$ pip install -e . && genedge tables --all \\\n    --wide\nname\n```\n\n"
        "```console\nan output line\n```\n\n"
        "<!-- needs: tpu -->\n```bash\ngenedge plan\n```\n\n"
        "```console\n$ genedge router eval PartiPrompts.tsv --figure confusion.png\n1,079 labelled prompts\n```\n"
    )
    shown, problems = shown_commands(page, text)
    assert [item.command for item in shown] == [
        "genedge plan --table tables/a100.json --out plan.json",
        "genedge plan --brand-new-option 3",
        "genedge profile --model org/big --out runs/gpu",
        "genedge tables --all --wide",
        "genedge plan",
        "genedge router eval PartiPrompts.tsv --figure confusion.png",
    ]
    assert problems == ["docs/planted.md:18: output without a `$ command` before it"]
    assert unrun(shown) == [
        "docs/planted.md:3: `genedge plan --brand-new-option 3` is run by no test (add it to RUN_HERE or RUN_BY)",
        "docs/planted.md:12: `genedge tables --all --wide` is run by no test (add it to RUN_HERE or RUN_BY)",
        "docs/planted.md:23: <!-- needs: tpu --> names none of ['cluster', 'gpu']",
        (
            "docs/planted.md:27: the output of `genedge router eval PartiPrompts.tsv --figure confusion.png` is "
            "compared by nothing: run it in RUN_HERE, or mark the block <!-- output: not compared (why) -->"
        ),
    ]


def test_masking_hides_wall_clock_figures_only():
    printed = [
        "plan (genedge, 517 ms):",
        "method             CLIPScore   mean s  utility  plan ms",
        "genedge                29.56     8.31   29.141      517",
        "exact                  29.56     8.31   29.141     4264  (optimum ≤ 30.212, gap 3.54%)",
        "",
        "how sure: ... optimal shares; 0.6 s",
        "re-planned with the exact planner, about 2.0 s a sample here: --samples N computes it",
        "SLO p95 <= 20 s (overall); budget 0.5 GPU",
    ]
    assert masked(printed) == [
        "plan (genedge, #):",
        "method CLIPScore mean s utility plan ms",
        "genedge 29.56 8.31 29.141 #",
        "exact 29.56 8.31 29.141 # (optimum ≤ 30.212, gap 3.54%)",
        "",
        "how sure: ... optimal shares; #",
        "re-planned with the exact planner, about # a sample here: --samples N computes it",
        "SLO p95 <= 20 s (overall); budget 0.5 GPU",
    ]
    changed = [line.replace("29.141", "29.142") for line in printed]
    assert shows(printed, printed) and not shows(printed, changed)
    # An excerpt shows the header of the plan ms column with its rows, so that the column is known.
    excerpt = ["...", printed[1], printed[2], "..."]
    assert shows(excerpt, printed) and not shows(excerpt, changed)
    assert shows([printed[0], "..."], printed) and not shows([printed[2], "..."], printed)


def test_other_tests_named_in_the_registry_run_the_subcommand_with_every_documented_option():
    for command, tests in RUN_BY.items():
        sources = []
        for test in tests:
            path, name = test.split("::")
            source = (ROOT / path).read_text(encoding="utf-8")
            assert f"def {name}(" in source, f"{test} (named for `{command}`) does not exist"
            sources.append(source)
        words = command.split()
        needed = {f'"{words[1]}"'} | {f'"{option}"' for option in _options(command)}
        missing = sorted(word for word in needed if not any(word in source for source in sources))
        assert not missing, f"`{command}`: {', '.join(tests)} never pass {', '.join(missing)}"


def test_commands_run_here_keep_every_documented_option():
    for command, instead in RUN_HERE.items():
        if instead is not None:
            assert _options(command) <= _options(instead), f"`{instead}` leaves out options of `{command}`"
    assert set(AFTER) <= set(RUN_HERE) and set(AFTER.values()) <= set(RUN_HERE)


def test_every_registered_command_is_still_shown():
    shown = {item.command for item in _all_shown()[0]}
    assert sorted((set(RUN_HERE) | set(RUN_BY)) - shown) == []


def test_readme_stays_two_screens_and_keeps_what_a_newcomer_needs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < README_MAX_LINES
    assert "python -m pytest -q" in readme and "torch==2.14.1" in readme
    assert "../shared" not in readme and "## License" in readme
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"


def test_ci_builds_the_site_strictly_then_runs_readmes_test_command_last():
    commands = [
        line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]  # fmt: skip
    built = [k for k, line in enumerate(commands) if line.split()[-3:] == ["mkdocs", "build", "--strict"]]
    installs = [line for line in commands if "pip install" in line and "-e" in line.split()]
    assert commands[-1] == "python -m pytest -q"
    assert built and built[0] < len(commands) - 1
    assert installs and all(",docs]" in line for line in installs)


def test_the_site_navigation_lists_every_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(nav: object) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, dict):
            return [page for value in nav.values() for page in pages(value)]
        return [page for item in nav for page in pages(item)]

    listed = pages(config["nav"])
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(str(page.relative_to(DOCS)) for page in DOCS.rglob("*.md"))


# --- the documented commands, run ----------------------------------------------------------------------------

_runs: dict[str, subprocess.CompletedProcess[str]] = {}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One working folder for the documented commands, with PartiPrompts.tsv where the pages expect it."""
    path = tmp_path_factory.mktemp("docs")
    if SHARED_PROMPTS.is_file():
        (path / "PartiPrompts.tsv").symlink_to(SHARED_PROMPTS)
    (path / "tables").mkdir()
    shutil.copyfile(ROOT / "data" / "tables" / "reference-a100.json", path / "tables" / "a100.json")
    return path


def _run(command: str, folder: Path) -> subprocess.CompletedProcess[str]:
    if command not in _runs:
        if command in AFTER:
            _run(AFTER[command], folder)
        words = shlex.split(RUN_HERE[command] or command)
        argv = (
            [sys.executable, "-m", *words]
            if words[0] == "genedge"
            else [sys.executable, str(ROOT / words[1]), *words[2:]]
        )
        env = genedge_env({"CUDA_VISIBLE_DEVICES": ""})
        _runs[command] = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    return _runs[command]


@pytest.mark.slow
@pytest.mark.parametrize("command", list(RUN_HERE), ids=[c if len(c) <= 100 else c[:97] + "..." for c in RUN_HERE])
def test_documented_command_runs_and_prints_what_the_docs_show(command: str, folder: Path):
    if "PartiPrompts.tsv" in command + AFTER.get(command, "") and not SHARED_PROMPTS.is_file():
        pytest.skip("PartiPrompts.tsv (../shared/data) is not present")
    done = _run(command, folder)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout.splitlines()
    for item in _all_shown()[0]:
        if item.command == command and item.output and item.compared:
            diff = "\n".join(difflib.unified_diff(masked(item.output), masked(printed), "page", "printed", lineterm=""))
            assert shows(item.output, printed), (
                f"{item.where}: the page's output of `{command}` is not what it prints\n{diff}"
            )


def python_blocks() -> list[object]:
    """Each fenced ``python`` block of README.md and docs/: its source, with ``page:line`` as its id."""
    blocks = []
    for page in PAGES:
        body: list[str] | None = None
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            fence = _FENCE.match(line)
            if fence and body is None and fence.group(1) == "python":
                body, start = [], number
            elif fence and body is not None:
                where = f"{page.relative_to(ROOT)}:{start}"
                blocks.append(pytest.param(where, "\n".join(body) + "\n", id=where))
                body = None
            elif body is not None:
                body.append(line)
    return blocks


@pytest.mark.slow
@pytest.mark.parametrize(("where", "source"), python_blocks())
def test_documented_python_runs(where: str, source: str, tmp_path: Path):
    # A block that talks to a server needs one started first (tests/test_serve_http.py does that with the
    # same client calls); here its imports must still resolve. Any other block runs whole, in an empty folder.
    if "http://" in source:
        source = "".join(line + "\n" for line in source.splitlines() if line.startswith(("import ", "from ")))
    done = run_python(source, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, f"{where}: {done.stderr[-2000:]}"
