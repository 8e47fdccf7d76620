"""The host: what machine a run measured on, and this process's peak resident memory per window.

``host_info()`` describes the machine in plain JSON values for the run manifest. :class:`RssTracker`
measures the peak resident set size (RSS) of this process over a window, by the best means the
operating system offers:

1. ``clear_refs``: on Linux, writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's RSS
   high-water mark (``VmHWM`` in ``/proc/self/status``), which then reads as the exact peak of
   the window, however short the spike.
2. ``statm``: where that write is refused, ``/proc/self/statm`` is sampled by the caller's
   background thread; a spike between two samples is missed.
3. ``getrusage``: elsewhere, ``resource.getrusage`` gives the peak over the process's lifetime,
   not the window's; the window's note says so.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
from pathlib import Path
from typing import Any

__all__ = ["RSS_METHODS", "RssTracker", "host_info", "trim_heap"]

#: The ways :class:`RssTracker` measures, best first.
RSS_METHODS: tuple[str, ...] = ("clear_refs", "statm", "getrusage")

_PROC_SELF = Path("/proc/self")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            # x86 says "model name"; many ARM kernels (Jetson among them) only "Hardware" or "Model".
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _total_ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def host_info() -> dict[str, Any]:
    """The machine this process runs on, as plain JSON values.

    Returns:
        ``os`` (e.g. ``Linux``), ``os_release`` (kernel release), ``platform`` (``platform.platform()``),
        ``machine`` (e.g. ``x86_64``, ``aarch64``), ``cpu`` (model name), ``logical_cpus`` (``os.cpu_count()``),
        ``usable_cpus`` (CPUs this process may run on, from its affinity mask where the OS has one),
        ``total_ram_bytes`` (``None`` where the OS does not say) and ``python`` (version).

    Example:
        >>> info = host_info()
        >>> info["logical_cpus"] >= info["usable_cpus"] >= 1
        True
    """
    logical = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    return {
        "os": platform.system(),
        "os_release": platform.release(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "logical_cpus": logical,
        "usable_cpus": usable,
        "total_ram_bytes": _total_ram_bytes(),
        "python": platform.python_version(),
    }


@functools.cache
def _malloc_trim() -> Any:
    # glibc's malloc_trim among the symbols this process has loaded, or None where the C library has none
    # (musl, macOS, Windows).
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


def trim_heap() -> None:
    """Hand the C heap's free memory back to the OS (glibc's ``malloc_trim(0)``); nothing where there is none.

    Memory that work between pipeline calls (CLIPScore, writing records) frees stays in the heap and
    the resident set otherwise, and a later call may or may not reuse it: trimmed first, a resident
    set measured next counts what is live, wherever the allocator put it.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _status_kib(field: str) -> int:
    for line in (_PROC_SELF / "status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field} line")


def _reset_hwm() -> None:
    (_PROC_SELF / "clear_refs").write_text("5")


class RssTracker:
    """Peak RSS of this process over windows; the method is chosen once, at construction.

    Use per window: :meth:`begin`, then :meth:`sample` from a background thread when
    :attr:`needs_sampling`, then :meth:`end`.

    Attributes:
        method: One of :data:`RSS_METHODS`.
        reason: Why a better method is not used (``None`` for ``clear_refs``).
    """

    def __init__(self) -> None:
        self.method, self.reason = self._choose()
        self._peak: int | None = None
        self._page_size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    @staticmethod
    def _choose() -> tuple[str, str | None]:
        try:
            _reset_hwm()
            _status_kib("VmHWM")
            return "clear_refs", None
        except OSError as err:
            why = f"resetting the RSS high-water mark (/proc/self/clear_refs) failed: {err}"
        try:
            (_PROC_SELF / "statm").read_text()
            return "statm", f"{why}; sampling /proc/self/statm instead, which can miss a spike between samples"
        except OSError as err:
            why = f"{why}; /proc/self/statm is unreadable: {err}"
        if sys.platform == "win32":
            return "getrusage", f"{why}; no RSS measurement on Windows"
        return "getrusage", f"{why}; resource.getrusage gives the process's lifetime peak, not the window's"

    @property
    def needs_sampling(self) -> bool:
        """Whether :meth:`sample` must be called during the window."""
        return self.method == "statm"

    def begin(self) -> None:
        """Start a window: reset the high-water mark, or take the first sample."""
        self._peak = None
        if self.method == "clear_refs":
            _reset_hwm()
        elif self.method == "statm":
            self.sample()

    def sample(self) -> None:
        """Read the current RSS (``statm`` method only) and keep the largest."""
        pages = int((_PROC_SELF / "statm").read_text().split()[1])
        rss = pages * self._page_size
        self._peak = rss if self._peak is None else max(self._peak, rss)

    def end(self) -> tuple[int | None, str | None]:
        """End a window: the peak RSS in bytes and a note (why it is ``None``, or what it really is)."""
        if self.method == "clear_refs":
            return _status_kib("VmHWM") * 1024, None
        if self.method == "statm":
            self.sample()
            return self._peak, None
        if sys.platform == "win32":
            return None, self.reason
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Linux reports kilobytes, macOS bytes.
        return (maxrss if sys.platform == "darwin" else maxrss * 1024), self.reason
