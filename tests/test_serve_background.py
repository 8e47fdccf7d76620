"""Waiting for a server started in a child process: its exit or its silence is an error quoting its output.

(``serve_in_background`` itself starts every served test's ``genedge serve``, through ``conftest.serve_plan``.)
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from genedge.serve.background import ServeStartError, free_port, wait_until_serving


def test_a_server_that_exits_before_serving_is_an_error_quoting_its_stderr() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stderr.write('no plan here'); sys.exit(3)"],
        stderr=subprocess.PIPE,
        text=True,
    )
    with pytest.raises(ServeStartError, match="genedge serve exited 3: no plan here"):
        wait_until_serving(process, f"http://127.0.0.1:{free_port()}", timeout_s=60)


def test_a_server_that_never_answers_is_killed_and_its_log_quoted(tmp_path) -> None:
    log = tmp_path / "serve.log"
    log.write_text("loading models\n")
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with pytest.raises(ServeStartError, match=r"did not answer within 1 s: loading models"):
        wait_until_serving(process, f"http://127.0.0.1:{free_port()}", timeout_s=1, log=log)
    assert process.poll() is not None  # killed, not left behind
