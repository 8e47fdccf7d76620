"""Jetson boundary: ``tegrastats`` sampled in a background subprocess, where NVML cannot measure.

On a Jetson the CPU and the integrated GPU share one RAM, NVML is absent or answers NOT_SUPPORTED,
and power comes from the board's INA3221 monitors, which ``tegrastats`` prints once per interval
as ``RAIL current/average`` in milliwatts. A window keeps the peak RAM in use and integrates the
board's total input rail (``VDD_IN``, or ``POM_5V_IN`` on a Nano) over its span into Joules.
"""

from __future__ import annotations

import itertools
import logging
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType

__all__ = [
    "TOTAL_POWER_RAILS",
    "TegrastatsSample",
    "TegrastatsReading",
    "TegrastatsSampler",
    "TegrastatsWindow",
    "find_tegrastats",
    "integrate_energy_j",
    "parse_tegrastats_line",
    "total_power_rail",
]

logger = logging.getLogger(__name__)

#: Rails that measure the whole module's input, in order of preference. AGX Xavier and AGX Orin
#: print only sub-rails (GPU, CPU, SOC, CV, VDDRQ, SYS5V / VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0):
#: their sum is not the input power, so those boards get no energy rather than a wrong one.
TOTAL_POWER_RAILS: tuple[str, ...] = ("VDD_IN", "POM_5V_IN")
_NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")
_MIB = 2**20

_TIMESTAMP = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%")
# "VDD_IN 4876mW/4876mW", "POM_5V_IN 2146/2146", "GPU 0/16", newer "VDD_IN 3034mW/3049mW/3412mW";
# the lookahead keeps "RAM 2262/3956MB" and "IRAM 0/252kB" out.
_RAIL = re.compile(r"(?<![\w@])([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/\d+(?:mW)?)?(?=\s|$)")
_NOT_RAILS = frozenset({"RAM", "SWAP", "IRAM"})


@dataclass(frozen=True)
class TegrastatsSample:
    """One ``tegrastats`` line.

    Attributes:
        ram_used_bytes: RAM in use (CPU and GPU together), bytes.
        ram_total_bytes: RAM available to applications, bytes.
        gpu_load_percent: ``GR3D_FREQ`` load of the integrated GPU, or ``None`` when not printed
            (tegrastats prints it only when run as root on some releases).
        rails: Power rail name → (current mW, average mW since tegrastats started).
        timestamp: The line's own time (JetPack 5 and later print one; second resolution), else ``None``.
    """

    ram_used_bytes: int
    ram_total_bytes: int
    gpu_load_percent: int | None
    rails: dict[str, tuple[int, int]] = field(default_factory=dict)
    timestamp: datetime | None = None


def parse_tegrastats_line(line: str) -> TegrastatsSample:
    """Parse one line of ``tegrastats`` output (Nano/TX1/TX2, Xavier and Orin formats).

    Raises:
        ValueError: When the line has no ``RAM used/totalMB`` field, i.e. is not a tegrastats line.

    Example:
        >>> s = parse_tegrastats_line("RAM 3514/7620MB (lfb 2x4MB) GR3D_FREQ 5% VDD_IN 4876mW/4870mW")
        >>> s.ram_used_bytes // 2**20, s.gpu_load_percent, s.rails["VDD_IN"]
        (3514, 5, (4876, 4870))
    """
    ram = _RAM.search(line)
    if ram is None:
        raise ValueError(f"Expected a tegrastats line with 'RAM <used>/<total>MB', but got {line.strip()!r}")
    gr3d = _GR3D.search(line)
    stamp = _TIMESTAMP.match(line)
    rails = {
        name: (int(current), int(average)) for name, current, average in _RAIL.findall(line) if name not in _NOT_RAILS
    }
    return TegrastatsSample(
        ram_used_bytes=int(ram.group(1)) * _MIB,
        ram_total_bytes=int(ram.group(2)) * _MIB,
        gpu_load_percent=int(gr3d.group(1)) if gr3d else None,
        rails=rails,
        timestamp=datetime.strptime(stamp.group(1), "%m-%d-%Y %H:%M:%S") if stamp else None,
    )


def total_power_rail(sample: TegrastatsSample) -> str | None:
    """The rail of ``sample`` that measures the module's whole input power, or ``None``."""
    return next((rail for rail in TOTAL_POWER_RAILS if rail in sample.rails), None)


def find_tegrastats() -> str | None:
    """Path of the ``tegrastats`` executable: on ``PATH``, else ``/usr/bin`` on a Jetson; else ``None``."""
    found = shutil.which("tegrastats")
    if found is None and _NV_TEGRA_RELEASE.is_file() and Path("/usr/bin/tegrastats").is_file():
        found = "/usr/bin/tegrastats"
    return found


def integrate_energy_j(points: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """Joules over ``[start, end]`` from ``(seconds, watts)`` points sorted by time.

    Power is linear between points (trapezoids) and held constant before the first point and
    after the last, so a window shorter than the sampling interval still gets its share.

    Example:
        >>> integrate_energy_j([(0.0, 10.0), (1.0, 20.0)], 0.0, 1.0)
        15.0
    """
    if not points or end <= start:
        return 0.0
    # Extend the first and last readings to the window's edges, then clip every piece to it.
    extended = [(min(start, points[0][0]), points[0][1]), *points, (max(end, points[-1][0]), points[-1][1])]
    energy = 0.0
    for (t0, p0), (t1, p1) in itertools.pairwise(extended):
        lo, hi = max(t0, start), min(t1, end)
        if hi <= lo or t1 <= t0:
            continue
        slope = (p1 - p0) / (t1 - t0)
        energy += (p0 + slope * (lo - t0) + p0 + slope * (hi - t0)) / 2 * (hi - lo)
    return energy


@dataclass(frozen=True)
class TegrastatsReading:
    """What one window saw.

    Attributes:
        system_memory_bytes: Peak RAM in use over the samples from just before to just after the window.
        energy_j: The total input rail integrated over the window, Joules.
        average_power_w: ``energy_j`` / ``seconds``.
        seconds: Window length, host monotonic clock.
        notes: ``"system_memory"`` / ``"energy"`` → why the value is ``None``.
    """

    system_memory_bytes: int | None
    energy_j: float | None
    average_power_w: float | None
    seconds: float
    notes: dict[str, str]


class TegrastatsWindow:
    """One window over a running :class:`TegrastatsSampler`; use through :meth:`TegrastatsSampler.window`.

    ``__enter__`` returns once a sample exists (the latest one, at most one interval old, stands
    for the window's start); ``__exit__`` waits for the first sample after the window's end, so
    the power is known across the whole window. Read ``reading`` after the ``with`` block.
    """

    def __init__(self, sampler: TegrastatsSampler) -> None:
        self._sampler = sampler
        self._points: list[tuple[float, TegrastatsSample]] = []
        self._start = 0.0
        self.reading = TegrastatsReading(None, None, None, 0.0, {})

    def _add(self, when: float, sample: TegrastatsSample) -> None:
        self._points.append((when, sample))

    def __enter__(self) -> TegrastatsWindow:
        self._sampler.wait_for_sample_after(None)
        self._start = time.monotonic()
        self._sampler.attach(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        end = time.monotonic()
        try:
            self._sampler.wait_for_sample_after(end)
        finally:
            points = self._sampler.detach(self)
        self.reading = self._read(points, end)

    def _read(self, points: list[tuple[float, TegrastatsSample]], end: float) -> TegrastatsReading:
        seconds = end - self._start
        notes: dict[str, str] = {}
        if not points:
            why = self._sampler.failure or "tegrastats printed no line during the window"
            return TegrastatsReading(None, None, None, seconds, {"system_memory": why, "energy": why})
        memory = max(sample.ram_used_bytes for _, sample in points)
        rail = self._sampler.rail
        energy = power = None
        if rail is None:
            notes["energy"] = self._sampler.rail_reason or "no total-input power rail"
        else:
            watts = [(when, sample.rails[rail][0] / 1000.0) for when, sample in points if rail in sample.rails]
            if not watts:
                notes["energy"] = f"tegrastats printed no {rail} reading during the window"
            else:
                energy = integrate_energy_j(watts, self._start, end)
                power = energy / seconds if seconds > 0 else None
                if power is None:
                    notes["energy"] = "the window lasted no measurable time"
        if energy is not None and points[-1][0] < end:
            why = self._sampler.failure or "it timed out"
            notes["energy"] = f"no tegrastats sample after the window ({why}); its end was extrapolated"
        return TegrastatsReading(memory, energy, power, seconds, notes)


class TegrastatsSampler:
    """``tegrastats --interval <ms>`` running in the background for a whole run.

    Args:
        executable: Path of ``tegrastats`` (see :func:`find_tegrastats`).
        interval_s: Sampling interval, seconds (tegrastats takes whole milliseconds).
        start_timeout_s: Longest wait for the first line.

    Attributes:
        rail: The total-input rail integrated for energy, or ``None`` (see ``rail_reason``).
        rail_reason: Why there is no rail.
        failure: Why tegrastats stopped early, or ``None`` while it runs.

    Raises:
        OSError: When the executable cannot be started.
    """

    def __init__(self, executable: str, *, interval_s: float = 0.1, start_timeout_s: float = 5.0) -> None:
        self.interval_s = max(interval_s, 0.001)
        self._timeout_s = start_timeout_s + 3 * self.interval_s
        self._lock = threading.Condition()
        self._latest: tuple[float, TegrastatsSample] | None = None
        self._windows: list[TegrastatsWindow] = []
        self.failure: str | None = None
        self.rail: str | None = None
        self.rail_reason: str | None = None
        # stderr goes to a file, read only when tegrastats exits: a pipe nobody drains would fill and block it.
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(
            [executable, "--interval", str(max(1, round(self.interval_s * 1000)))],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read_lines, name="genedge-tegrastats", daemon=True)
        self._reader.start()
        first = self.wait_for_sample_after(None)
        if first is None:
            self.rail_reason = self.failure or f"tegrastats printed no line within {self._timeout_s:g} s"
        else:
            self.rail = total_power_rail(first)
            if self.rail is None:
                self.rail_reason = (
                    f"tegrastats prints no total-input rail ({' or '.join(TOTAL_POWER_RAILS)}); "
                    f"its rails are {sorted(first.rails) or 'none (run as root?)'}, whose sum is not the board's input"
                )

    def _read_lines(self) -> None:
        assert self._proc.stdout is not None
        try:
            for line in self._proc.stdout:
                try:
                    sample = parse_tegrastats_line(line)
                except ValueError:
                    logger.debug("tegrastats: skipped %r", line)
                    continue
                now = time.monotonic()
                with self._lock:
                    self._latest = (now, sample)
                    for window in self._windows:
                        window._add(now, sample)
                    self._lock.notify_all()
        except (OSError, ValueError) as err:
            failure = f"reading tegrastats failed: {err}"
        else:
            code = self._proc.wait()
            self._stderr.seek(0)
            stderr = self._stderr.read().strip()
            failure = f"tegrastats exited with code {code}" + (f": {stderr}" if stderr else "")
        with self._lock:
            if self.failure is None:
                self.failure = failure
            self._lock.notify_all()

    def wait_for_sample_after(self, when: float | None) -> TegrastatsSample | None:
        """Block until a sample newer than ``when`` (any sample when ``None``) exists; ``None`` on timeout or exit."""
        deadline = time.monotonic() + self._timeout_s
        with self._lock:
            while True:
                if self._latest is not None and (when is None or self._latest[0] >= when):
                    return self._latest[1]
                left = deadline - time.monotonic()
                if self.failure is not None or left <= 0:
                    return None
                self._lock.wait(left)

    def attach(self, window: TegrastatsWindow) -> None:
        """Send every new sample to ``window``, starting with the latest one."""
        with self._lock:
            if self._latest is not None:
                window._add(*self._latest)
            self._windows.append(window)

    def detach(self, window: TegrastatsWindow) -> list[tuple[float, TegrastatsSample]]:
        """Stop feeding ``window``; returns its samples."""
        with self._lock:
            self._windows.remove(window)
            return list(window._points)

    def window(self) -> TegrastatsWindow:
        """A context manager over the samples of one window; read ``.reading`` after it."""
        return TegrastatsWindow(self)

    def close(self) -> None:
        """Stop tegrastats (idempotent)."""
        with self._lock:
            if self.failure is None:
                self.failure = "the tegrastats sampler was closed"
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reader.join(timeout=2)
        for stream in (self._proc.stdout, self._stderr):
            if stream is not None:
                stream.close()
