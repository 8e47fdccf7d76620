"""Kill a genedge command inside a publish window: at its N-th rename or link, just before or just after it.

Every file genedge writes is published by a rename (``os.replace``) or a hard link (``os.link``) of a
whole temporary file, and a folder by a rename; a kill just before the N-th such call leaves the
temporary file written and unpublished, a kill just after it leaves it published and the bookkeeping
that follows undone. A timed kill lands in those windows only by luck; this lands in each of them
on purpose, with a real SIGKILL of a real process.

Run as a script: ``python kill_points.py N before|after ARGS...`` runs ``genedge ARGS`` and kills it
at its N-th publish call; a command that makes fewer calls ends normally.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from conftest import genedge_env

#: The calls that publish a file or folder.
PUBLISHING = ("replace", "rename", "link")


def _arm(at: int, when: str) -> None:
    calls = 0

    def wrap(original):
        def publish(*args, **kwargs):
            nonlocal calls
            calls += 1
            if calls == at and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            result = original(*args, **kwargs)
            if calls == at and when == "after":
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        return publish

    for name in PUBLISHING:
        setattr(os, name, wrap(getattr(os, name)))


def run_killed(
    at: int, when: str, args: Sequence[str | Path], env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``genedge ARGS`` in a new process that kills itself at its ``at``-th publish call, ``when``
    (``before`` or ``after``) it; returncode ``-9`` when it was killed."""
    return subprocess.run(
        [sys.executable, __file__, str(at), when, *map(str, args)],
        env=genedge_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


if __name__ == "__main__":
    _arm(int(sys.argv[1]), sys.argv[2])
    from genedge.cli import main

    sys.exit(main(sys.argv[3:]))
