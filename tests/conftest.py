"""Helpers and fixtures shared by the test modules: the shared data, ``genedge`` as a user runs it, tiny pipelines.

Test modules import the helpers by name (``from conftest import PARTIPROMPTS, genedge``): ``tests/`` is on
``sys.path`` under pytest's default import mode, as it is for ``tiny_pipelines``. The session fixtures build
something expensive once; tests treat what they return as read-only and copy it before changing it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import pytest

from genedge.serve.background import ServerProcess, free_port

# This process reads models and data sets only from local caches. Set before any test module imports
# huggingface_hub, which reads these variables once, at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

__all__ = [
    "CLIENT_DIRS",
    "PACKAGE_FOLDERS",
    "PARTIPROMPTS",
    "ROOT",
    "SHARED_DATA",
    "DemoRun",
    "assert_every_request_answered",
    "free_port",
    "serve_plan",
    "start_genedge",
    "wait_while_running",
    "run_genedge",
    "genedge_env",
    "genedge_in_process",
    "needs_partiprompts",
    "needs_shared_data",
    "python_sources",
    "run_python",
]

#: The checkout.
ROOT = Path(__file__).resolve().parents[1]


#: Repository folder → the package installed from it (pyproject's package-dir; a test checks they agree).
PACKAGE_FOLDERS = {
    "genedge": "genedge",
    "profiler": "genedge.profiler",
    "calibrate": "genedge.calibrate",
    "optimizer": "genedge.optimizer",
    "data": "genedge.data",
    "router": "genedge.router",
    "serve": "genedge.serve",
}
#: Code that uses the package as a user does: the package itself, the benchmarks and the scripts.
CLIENT_DIRS = (*PACKAGE_FOLDERS, "benchmarks", "scripts")


def python_sources(folders: Iterable[str]) -> list[Path]:
    """Every ``.py`` file below ``folders`` of the checkout, folder by folder, each sorted."""
    return [path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))]


#: The public data sets, in ``../shared/data`` beside the checkout; tests that need them skip without them.
SHARED_DATA = ROOT.parent / "shared" / "data"
PARTIPROMPTS = SHARED_DATA / "PartiPrompts.tsv"

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason="the public data sets (../shared/data) are not present"
)
needs_partiprompts = pytest.mark.skipif(
    not PARTIPROMPTS.is_file(), reason="PartiPrompts.tsv (../shared/data) is not present"
)

# A subprocess reads models and data sets only from local caches, and draws figures without a display.
_OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MPLBACKEND": "Agg"}


@contextlib.contextmanager
def script_module(script: Path, name: str) -> Iterator[ModuleType]:
    """A script (a benchmark, a build script) imported as module ``name`` while the block runs."""
    sys.path.insert(0, str(script.parent))  # as when run as a script: its folder's helpers import by name
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
        sys.path.remove(str(script.parent))


def genedge_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, offline and headless, with ``extra`` on top: what a subprocess runs under."""
    return {**os.environ, **_OFFLINE, **(extra or {})}


def run_genedge(
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    check: bool = False,
    **kwargs,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m genedge ARGS`` in a new interpreter, as a user does, and capture its text output.

    ``env`` adds to :func:`genedge_env`; ``check=True`` raises on a non-zero exit; other keywords go to
    ``subprocess.run`` (``cwd``, ``stdout``, ...).
    """
    if "stdout" not in kwargs and "stderr" not in kwargs:
        kwargs["capture_output"] = True
    return subprocess.run(
        [sys.executable, "-m", "genedge", *map(str, args)],
        env=genedge_env(env),
        text=True,
        timeout=timeout,
        check=check,
        **kwargs,
    )


def start_genedge(*args: str | Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start ``python -m genedge ARGS`` in a new interpreter and return at once (:func:`run_genedge` waits): its
    text output piped, ``env`` on top of :func:`genedge_env`."""
    return subprocess.Popen(
        [sys.executable, "-m", "genedge", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=genedge_env(env),
    )


def wait_while_running(process: subprocess.Popen, reached: Callable[[], bool], timeout_s: float = 120) -> None:
    """Return once ``reached()`` is true; fail the test with ``process``'s stderr if it exits or ``timeout_s``
    passes first (e.g. until a load test started with :func:`start_genedge` is under way)."""
    deadline = time.monotonic() + timeout_s
    while not reached():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.5)


@contextlib.contextmanager
def serve_plan(plan: str | Path, *options: str | Path, env: Mapping[str, str] | None = None) -> Iterator[ServerProcess]:
    """``genedge serve PLAN OPTIONS`` as a user runs it, in a child process on a free loopback port, while the
    ``with`` block runs (:func:`genedge.serve.background.serve_in_background`, the test failed with the server's
    stderr if it does not start); its output piped, the CPU only, ``env`` on top of :func:`genedge_env`. Yields
    its :class:`~genedge.serve.background.ServerProcess`; on leaving, a server still running is stopped (SIGTERM:
    drained)."""
    from genedge.serve.background import ServeStartError, serve_in_background

    try:
        with serve_in_background(
            plan,
            *map(str, options),
            env=genedge_env({"CUDA_VISIBLE_DEVICES": "", **(env or {})}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_timeout_s=240,
        ) as server:
            yield server
    except ServeStartError as err:  # raised only before the block runs
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def serving_extras() -> None:
    """Skip a module that serves replicas where genedge[profile] or genedge[serve] is missing (``pytestmark =
    pytest.mark.usefixtures("serving_extras")``). Checked when a test runs, not at collection: importing Ray
    Serve costs seconds that a run deselecting the (slow) serving tests should not pay."""
    pytest.importorskip("diffusers", reason="serving replicas needs genedge[profile]")
    pytest.importorskip("ray.serve", reason="needs genedge[serve]")


def read_http_response(sock: Any) -> tuple[int, dict[str, str], bytes]:
    """The status, headers (lower-cased names) and body of the HTTP/1.1 answer read from socket ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without an answer after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(status_line.split()[1]), headers, body


def ray_workers_under(root: int) -> dict[int, str]:
    """The Ray worker processes among ``root``'s descendants, pid → title (``ray::...``): a ``genedge serve``'s
    actors are under the Ray it started, a node's under its raylet."""
    table = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    rows = [line.split(None, 2) for line in table.splitlines() if len(line.split(None, 2)) == 3]
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in rows:
        children.setdefault(int(ppid), []).append(int(pid))
    ours, stack = set(), [root]
    while stack:
        pid = stack.pop()
        ours.add(pid)
        stack.extend(children.get(pid, []))
    return {int(pid): args for pid, _, args in rows if int(pid) in ours and args.startswith("ray::")}


def assert_every_request_answered(records: Any, count: int) -> None:
    """``genedge loadtest``'s records (a DataFrame) hold each of ``count`` requests once, every one served or
    refused with 503 and a Retry-After: none unanswered, none failed."""
    assert len(records) == count and records["index"].is_unique
    assert set(records["status"]) <= {"ok", "rejected"}, records["error"].dropna().unique()
    rejected = records[records["status"] == "rejected"]
    assert (rejected["http_status"] == 503).all() and rejected["retry_after_s"].notna().all()
    assert (records["status"] == "ok").any()


def run_python(code: str, *, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run ``python -c CODE`` in a new interpreter (for what only a fresh process shows, such as its imports)."""
    return subprocess.run(
        [sys.executable, "-c", code], env=genedge_env(), capture_output=True, text=True, timeout=timeout, **kwargs
    )


def genedge_in_process(capsys: pytest.CaptureFixture[str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``genedge ARGS`` through ``genedge.cli.main`` in this process: the command's code without an
    interpreter start, for tests that vary only the input. Returns what :func:`run_genedge` would."""
    from genedge.cli import main

    try:
        status = main([str(arg) for arg in args])
    except SystemExit as stop:  # argparse rejects an option's value by exiting with status 2
        status = stop.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(["genedge", *map(str, args)], status, captured.out, captured.err)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` replica saved as a diffusers pipeline folder (read-only: copy it to change it)."""
    from tiny_pipelines import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipeline")


@pytest.fixture(scope="session")
def tiny_xl_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny-xl`` replica saved as a diffusers pipeline folder (read-only: copy it to change it)."""
    from tiny_pipelines import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny-xl") / "pipeline", xl=True)


@pytest.fixture(scope="session")
def default_plan() -> subprocess.CompletedProcess[str]:
    """``genedge plan`` with no arguments, run once as a user runs it, for every test that reads its output."""
    return run_genedge("plan", check=True)


class DemoRun(NamedTuple):
    """``genedge demo --dir FOLDER --no-figures`` run once: its folder and the finished process."""

    folder: Path
    done: subprocess.CompletedProcess[str]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The demo (profile, calibrate and plan two replicas on the CPU) run once for every test that needs it.

    Tests may add files to the folder but change none of the demo's own.
    """
    pytest.importorskip("diffusers", reason="the demo profiles replicas with torch and diffusers (genedge[profile])")
    folder = tmp_path_factory.mktemp("demo")
    done = run_genedge("demo", "--dir", folder, "--no-figures", env={"CUDA_VISIBLE_DEVICES": ""})
    return DemoRun(folder, done)
