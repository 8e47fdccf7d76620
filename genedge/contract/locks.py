"""One writer per output folder: an OS file lock held for as long as a command writes there.

Every command that writes records into a folder (a profile run's rank, an adaptive profiling run, a
load test) holds the folder's lock file for the whole run. The lock is the operating system's
(``flock``, or ``msvcrt.locking`` on Windows), so it is released when the process ends however it
ends, a kill included, and a stale lock file never blocks anyone. While the lock is held, the
folder's leftover temporary files (:func:`genedge.contract.files.remove_temporaries`) belong to no
live writer and may be removed.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["FolderBusyError", "hold_lock"]


class FolderBusyError(ValueError):
    """Another process holds the lock of the folder a command would write."""


@contextlib.contextmanager
def hold_lock(lock_file: str | os.PathLike[str], busy: str) -> Iterator[None]:
    """Hold ``lock_file``'s exclusive lock for the block; the file records who holds it.

    Args:
        lock_file: the lock file (created, with its folder, when missing; never deleted).
        busy: the refusal's message, with ``{holder}`` where the holder's pid and host go.

    Raises:
        FolderBusyError: another process holds the lock (``busy``, formatted).
    """
    path = Path(lock_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # held open, and so locked, for the whole block
    try:
        try:
            _lock(handle)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FolderBusyError(busy.format(holder=holder)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {platform.node() or 'this host'}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


def _lock(handle: IO[str]) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
