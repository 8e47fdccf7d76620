"""Start-up wall time of the ``genedge`` command, side by side with the Python floor it stands on.

Measures, in one run and interleaved round by round, the wall time of:

  (a) ``python -c pass``                        the interpreter alone
  (b) ``python -c "import numpy, scipy.special"`` the planner's import floor
  (c) ``python -m genedge --help``
  (d) ``python -m genedge plan``                 default plan on the shipped reference table
  (e) ``python -m genedge simulate --loads 10 --budgets 1 --weights 0.05 --replications 10 --out TMP``
      (optional: reported as skipped if it fails, e.g. without matplotlib)

and, when the ``genedge`` console script sits next to the interpreter, ``genedge --help`` and ``genedge plan``
through it. ``python`` is this interpreter (``sys.executable``); every command runs in a temporary directory with
``HF_HUB_OFFLINE=1`` and a timeout. Each command runs once unmeasured (to warm the file cache), then ``--repeats``
times; the script prints the median (and min/max) per command, the difference (d) - (b), and whether the goal
"genedge plan within 0.5 s of `import numpy, scipy.special`" is met. It also lists which heavy modules (pandas,
pyarrow, scipy.stats, matplotlib, torch) ``genedge plan`` and ``genedge --help`` import, and the slowest
imports of ``genedge plan`` from ``-X importtime``.

It is a benchmark that prints; it asserts nothing. Numbers depend on the machine, the disk cache and the load.

Usage:
    python benchmarks/cli_startup.py [--repeats 5] [--timeout 120] [--no-simulate] [--importtime-top 12]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

GOAL_S = 0.5
HEAVY_MODULES = ("pandas", "pyarrow", "scipy.stats", "matplotlib", "torch")
# Run genedge's CLI in-process with its output discarded, then report which heavy modules got imported.
_HEAVY_SNIPPET = """
import contextlib, io, json, sys
from genedge.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    try:
        rc = main({argv!r})
    except SystemExit as stop:  # argparse's --help exits
        rc = stop.code
print(json.dumps({{"rc": rc, "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


@dataclass
class Command:
    """One measured command line and its timings."""

    key: str
    label: str
    argv: list[str]
    optional: bool = False
    per_run_out: bool = False  # append a fresh ``--out`` directory to each run
    times: list[float] = field(default_factory=list)
    error: str | None = None

    def run(self, env: dict[str, str], cwd: Path, timeout: float) -> None:
        """Run once and record the wall time; on failure record why (later runs are skipped)."""
        if self.error is not None:
            return
        argv = list(self.argv)
        if self.per_run_out:
            argv += ["--out", tempfile.mkdtemp(prefix="out-", dir=cwd)]
        start = time.perf_counter()
        try:
            proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.error = f"timed out after {timeout:g} s"
            return
        except OSError as err:
            self.error = f"could not start: {err}"
            return
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
            self.error = f"exit status {proc.returncode}: {last[0][:160]}"
            return
        self.times.append(elapsed)

    def median(self) -> float | None:
        return statistics.median(self.times) if self.times and self.error is None else None


def build_commands(python: str, console: Path | None) -> list[Command]:
    """The commands to measure, in the order they are printed."""
    commands = [
        Command("a", "python -c pass", [python, "-c", "pass"]),
        Command("b", 'python -c "import numpy, scipy.special"', [python, "-c", "import numpy, scipy.special"]),
        Command("c", "python -m genedge --help", [python, "-m", "genedge", "--help"]),
        Command("d", "python -m genedge plan", [python, "-m", "genedge", "plan"]),
    ]
    if console is not None:
        commands += [
            Command("c'", "genedge --help (console script)", [str(console), "--help"]),
            Command("d'", "genedge plan (console script)", [str(console), "plan"]),
        ]
    return commands


def simulate_command(python: str) -> Command:
    argv = [python, "-m", "genedge", "simulate", "--loads", "10", "--budgets", "1", "--weights", "0.05"]
    argv += ["--replications", "10"]
    return Command("e", "python -m genedge simulate (1 point, 10 replications)", argv, optional=True, per_run_out=True)


def heavy_imports(python: str, argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> str:
    """Which of HEAVY_MODULES ``genedge.cli.main(argv)`` imports, run in a fresh interpreter."""
    code = _HEAVY_SNIPPET.format(argv=argv, heavy=HEAVY_MODULES)
    try:
        proc = subprocess.run([python, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"(timed out after {timeout:g} s)"
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"(could not run: exit status {proc.returncode}: {tail[:160]})"
    heavy = ", ".join(result["heavy"]) or "none"
    return f"{heavy}  (exit status {result['rc']})"


def import_times(python: str, argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> list[tuple]:
    """Imports of one ``-X importtime`` run: (cumulative µs, self µs, depth, module), slowest first.

    Depth 0 is an import made by the command itself; deeper rows are counted again in their parents' cumulative
    time, so the rows overlap: read them as "where the time goes", not as a sum.
    """
    try:
        proc = subprocess.run(
            [python, "-X", "importtime", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return []
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue  # the header line
        name = parts[2].rstrip()[1:]  # one space after the bar, then two more per level of nesting
        depth = (len(name) - len(name.lstrip(" "))) // 2
        rows.append((int(parts[1]), int(parts[0]), depth, name.strip()))
    return sorted(rows, reverse=True)


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def fmt(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:8.0f} ms"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="measured runs per command (default: 5)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds before one run of a command is stopped (default: 120)"
    )
    parser.add_argument("--no-simulate", action="store_true", help="leave out the optional `genedge simulate` command")
    parser.add_argument(
        "--importtime-top",
        type=int,
        default=12,
        help="list this many slowest imports (any depth) of `genedge plan` from -X importtime; 0: skip (default: 12)",
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def console_script(python: str) -> Path | None:
    """The ``genedge`` console script next to the interpreter, if there is one."""
    console = Path(python).with_name("genedge.exe" if os.name == "nt" else "genedge")
    return console if console.is_file() else None


def print_header(python: str, console: Path | None, repeats: int) -> None:
    print("genedge CLI start-up benchmark")
    print(f"  python     {platform.python_version()} ({python})")
    print(f"  console    {console if console else 'no genedge console script next to the interpreter'}")
    print(f"  packages   genedge {version('genedge')}, numpy {version('numpy')}, scipy {version('scipy')}")
    print(f"  machine    {platform.platform()}, {os.cpu_count()} CPUs")
    print(f"  runs       1 warm-up + {repeats} measured per command, interleaved; HF_HUB_OFFLINE=1")


def measure(commands: list[Command], env: dict[str, str], cwd: Path, repeats: int, timeout: float) -> None:
    """Run the commands round by round; round 0 warms the cache and is dropped."""
    for _ in range(1 + repeats):
        for command in commands:
            command.run(env, cwd, timeout)
    for command in commands:
        command.times = command.times[1:]


def print_timings(commands: list[Command]) -> None:
    print(f"\n  {'':3} {'command':<52} {'median':>11} {'min':>11} {'max':>11}")
    for command in commands:
        if command.error is not None:
            state = "skipped (optional)" if command.optional else "FAILED"
            print(f"  {command.key:<3} {command.label:<52} {state}: {command.error}")
            continue
        low, high = min(command.times), max(command.times)
        print(f"  {command.key:<3} {command.label:<52} {fmt(command.median())} {fmt(low)} {fmt(high)}")


def print_goal(commands: list[Command]) -> None:
    """(d) - (b) and whether it is within :data:`GOAL_S`."""
    by_key = {command.key: command for command in commands}
    floor, plan = by_key["b"].median(), by_key["d"].median()
    print()
    if floor is not None and plan is not None:
        delta = plan - floor
        verdict = "met" if delta <= GOAL_S else "NOT met"
        print(f"  (d) - (b) = {delta * 1000:.0f} ms: genedge plan over `import numpy, scipy.special` (medians)")
        print(f"  goal: genedge plan within {GOAL_S} s of `import numpy, scipy.special` -> {verdict}")
    else:
        print(f"  goal: genedge plan within {GOAL_S} s of `import numpy, scipy.special` -> not measured")


def print_heavy_imports(python: str, env: dict[str, str], cwd: Path, timeout: float) -> None:
    print(f"\n  heavy modules imported (of {', '.join(HEAVY_MODULES)}):")
    for argv in (["plan"], ["--help"]):
        print(f"    genedge {' '.join(argv):<8} {heavy_imports(python, argv, env, cwd, timeout)}")


def print_import_times(python: str, env: dict[str, str], cwd: Path, timeout: float, top: int) -> None:
    rows = import_times(python, ["-m", "genedge", "plan"], env, cwd, timeout)
    print("\n  slowest imports of `python -X importtime -m genedge plan` (one run; nested rows overlap):")
    if not rows:
        print("    (no importtime output)")
    for cumulative, own, depth, name in rows[:top]:
        print(f"    {cumulative / 1000:8.1f} ms cumulative {own / 1000:7.1f} ms self  depth {depth}  {name}")


def main() -> None:
    args = parse_args()
    python = sys.executable
    console = console_script(python)
    env = dict(os.environ, HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    commands = build_commands(python, console)
    if not args.no_simulate:
        commands.append(simulate_command(python))
    print_header(python, console, args.repeats)

    with tempfile.TemporaryDirectory(prefix="genedge-startup-") as tmp:
        cwd = Path(tmp)
        measure(commands, env, cwd, args.repeats, args.timeout)
        print_timings(commands)
        print_goal(commands)
        print_heavy_imports(python, env, cwd, args.timeout)
        if args.importtime_top > 0:
            print_import_times(python, env, cwd, args.timeout, args.importtime_top)


if __name__ == "__main__":
    main()
