"""What every benchmark records beside its numbers: the processor and the source it ran from."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

__all__ = ["ROOT", "cpu_name", "source_state"]

ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    """The processor's model name where Linux tells it, else what :mod:`platform` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as lines:
            for line in lines:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_state(*paths: str) -> str:
    """The commit the code was run from, and whether the working tree differs from it under ``paths``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *paths], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown"
    where = " or ".join(f"{p}/" for p in paths)
    return f"commit {commit}" + (f" with uncommitted changes under {where}" if dirty else "")
