"""``genedge serve`` in a child process, for a script that drives it over HTTP (a benchmark, a test, a notebook).

:func:`serve_in_background` starts ``genedge serve PLAN`` on a free loopback port, waits until it answers
``GET /v1/health`` and, on leaving, stops it as Ctrl-C does (SIGTERM: it drains the requests in flight, then
exits). :func:`wait_until_serving` is the wait alone, for a server started otherwise.

Example::

    >>> from genedge.serve.background import serve_in_background
    >>> with serve_in_background("demo/plan.json", "--router", "none") as server:  # doctest: +SKIP
    ...     print(server.url)
    http://127.0.0.1:41234
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["ServeStartError", "ServerProcess", "free_port", "serve_in_background", "server_url", "wait_until_serving"]

#: How long a server may take to load its models and answer (s): a cold start of Ray and the replicas.
DEFAULT_START_TIMEOUT_S = 300.0
#: How long it may take to drain and exit once stopped (s), before it is killed.
DEFAULT_STOP_TIMEOUT_S = 150.0


class ServeStartError(RuntimeError):
    """The server exited, or did not answer, before it was serving; the message ends with its output's tail."""


@dataclass(frozen=True)
class ServerProcess:
    """A ``genedge serve`` child process and where it listens."""

    process: subprocess.Popen
    url: str
    port: int


def server_url(host: str, port: int) -> str:
    """The base URL of a server listening on ``host:port`` (an IPv6 address in brackets)."""
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_until_serving(
    process: subprocess.Popen, url: str, *, timeout_s: float = DEFAULT_START_TIMEOUT_S, log: Path | None = None
) -> None:
    """Return once the server at ``url`` answers ``GET /v1/health`` with ``ok``.

    Args:
        process: the server's process.
        url: its base URL.
        timeout_s: the longest wait.
        log: the file its output goes to (else its piped stderr, if any), whose tail an error quotes.

    Raises:
        ServeStartError: the process exited first, or did not answer within ``timeout_s`` (it is then killed).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServeStartError(f"genedge serve exited {process.returncode}: {_tail(process, log)}")
        with contextlib.suppress(OSError, ValueError):
            wait_s = min(30.0, max(deadline - time.monotonic(), 0.1))
            with urllib.request.urlopen(f"{url}/v1/health", timeout=wait_s) as response:
                if json.loads(response.read()).get("status") == "ok":
                    return
        time.sleep(0.5)
    process.kill()
    process.wait(30)
    raise ServeStartError(f"genedge serve did not answer within {timeout_s:g} s: {_tail(process, log)}")


def _tail(process: subprocess.Popen, log: Path | None) -> str:
    """The last 3,000 characters of what the server wrote, where they can be read."""
    if log is not None:
        return log.read_text(errors="replace")[-3000:]
    if process.stderr is not None and process.poll() is not None:
        text = process.stderr.read()
        return (text.decode(errors="replace") if isinstance(text, bytes) else text)[-3000:]
    return "(its output is not captured)"


@contextlib.contextmanager
def serve_in_background(
    plan: str | Path,
    *options: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    stdout: int | IO | None = None,
    stderr: int | IO | None = None,
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
) -> Iterator[ServerProcess]:
    """``genedge serve PLAN OPTIONS`` in a child process while the ``with`` block runs, once it is serving.

    Args:
        plan: the plan (or plan schedule) file.
        options: more of ``genedge serve``'s options, as on its command line.
        host: where it listens (default: loopback).
        port: its port (default: a free one).
        env: variables added to this process's environment for it.
        log: a file for its output, both streams (it replaces ``stdout`` and ``stderr``).
        stdout: where its standard output goes, as for ``subprocess.Popen`` (default: this process's).
        stderr: where its standard error goes, likewise.
        start_timeout_s: the longest wait for it to serve.
        stop_timeout_s: the longest wait for it to drain and exit on leaving, before it is killed.

    Raises:
        ServeStartError: it exited, or did not answer, before it was serving.
    """
    port = free_port(host) if port is None else port
    url = server_url(host, port)
    command = [sys.executable, "-m", "genedge", "serve", str(plan), "--host", host, "--port", str(port), *options]
    with contextlib.ExitStack() as stack:
        if log is not None:
            stdout = stack.enter_context(open(log, "w"))
            stderr = subprocess.STDOUT
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, env={**os.environ, **(env or {})})
        try:
            wait_until_serving(process, url, timeout_s=start_timeout_s, log=log)
            yield ServerProcess(process, url, port)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(stop_timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(30)
