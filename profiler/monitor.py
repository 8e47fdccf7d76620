"""One monitor per run: everything the machine can say about a measured window.

:class:`Monitor` combines what the device offers: NVML (process and device memory, the energy
counter) on a discrete NVIDIA GPU, ``tegrastats`` (shared RAM, board power) on a Jetson, and this
process's peak RSS everywhere. A window yields a :class:`WindowReading` whose ``None`` values each
carry a note saying why, keyed by the record column they fill.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from genedge.profiler.host import RssTracker
from genedge.profiler.nvml import SAMPLING_INTERVAL_S, THREAD_TIMEOUT_S, NvmlMonitor, NvmlStatus, NvmlWindow
from genedge.profiler.tegrastats import TegrastatsSampler, TegrastatsWindow, find_tegrastats

__all__ = ["TEGRASTATS_INTERVAL_S", "Monitor", "MonitorStatus", "MonitorWindow", "WindowReading"]

logger = logging.getLogger(__name__)

#: tegrastats' sampling interval: each line costs it a pass over sysfs, so it runs slower than NVML.
TEGRASTATS_INTERVAL_S = 0.1


@dataclass(frozen=True)
class MonitorStatus:
    """What a :class:`Monitor` can measure on this machine, and why not where it cannot.

    Attributes:
        nvml: NVML's status for the profiled device.
        energy_available: Whether windows get ``energy_j``.
        energy_source: ``"nvml"`` or ``"tegrastats <rail>"``; ``None`` when unavailable.
        energy_reason: Why energy is unavailable.
        rss_method: How the peak RSS is measured (see :data:`genedge.profiler.host.RSS_METHODS`).
        rss_reason: Why a better method is not used.
        system_memory_source: ``"tegrastats"`` where CPU and GPU share RAM, else ``None``.
        system_memory_reason: Why system memory is not measured.
    """

    nvml: NvmlStatus
    energy_available: bool
    energy_source: str | None
    energy_reason: str | None
    rss_method: str
    rss_reason: str | None
    system_memory_source: str | None
    system_memory_reason: str | None

    def as_manifest(self) -> dict[str, dict[str, Any]]:
        """The status as the run manifest's ``nvml`` and ``energy`` fields, plus ``host_memory``."""
        return {
            "nvml": {"available": self.nvml.available, "reason": self.nvml.reason, "driver": self.nvml.driver},
            "energy": {"available": self.energy_available, "source": self.energy_source, "reason": self.energy_reason},
            "host_memory": {
                "rss_method": self.rss_method,
                "rss_reason": self.rss_reason,
                "system_memory_source": self.system_memory_source,
                "system_memory_reason": self.system_memory_reason,
            },
        }


@dataclass(frozen=True)
class WindowReading:
    """What a :class:`Monitor` saw over one window.

    Attributes:
        nvml_process_bytes: Peak device memory of the monitored process (NVML).
        nvml_device_bytes: Peak memory used on the whole device (NVML).
        rss_bytes: Peak resident memory of this process.
        system_memory_bytes: Peak RAM in use on the machine where CPU and GPU share it (a Jetson,
            from tegrastats); ``None`` elsewhere.
        energy_j: Energy of the whole window, Joules.
        average_power_w: ``energy_j`` over the energy source's own span of the window, Watts.
        seconds: Window length on the host's monotonic clock.
        notes: Record column (``peak_nvml_process_bytes``, ``peak_nvml_device_bytes``,
            ``peak_rss_bytes``, ``peak_system_memory_bytes``, ``energy_j``, ``average_power_w``) →
            why its value is ``None``, or what limits it (a lifetime RSS peak, an extrapolated end).
    """

    nvml_process_bytes: int | None
    nvml_device_bytes: int | None
    rss_bytes: int | None
    system_memory_bytes: int | None
    energy_j: float | None
    average_power_w: float | None
    seconds: float
    notes: dict[str, str]


class MonitorWindow:
    """One measured window; use through :meth:`Monitor.window`.

    Every sampler has taken its first sample before ``__enter__`` returns; ``__exit__`` stops them
    all (also when the window raised), takes their last samples and sets :attr:`reading`.
    """

    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor
        self._stack = contextlib.ExitStack()
        self._nvml: NvmlWindow | None = None
        self._tegrastats: TegrastatsWindow | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss_failure: str | None = None
        self._start = 0.0
        self.reading: WindowReading | None = None

    def _sample_rss(self) -> None:
        try:
            while not self._stop.wait(self._monitor.interval_s):
                self._monitor._rss.sample()
        # Any failure, not only OSError: a dead sampler must show in the window's notes.
        except Exception as err:
            self._rss_failure = f"RSS sampling stopped: {type(err).__name__}: {err}"

    def __enter__(self) -> MonitorWindow:
        monitor = self._monitor
        with self._stack:
            self._nvml = self._stack.enter_context(monitor._nvml.window(monitor.interval_s))
            if monitor._tegrastats is not None:
                self._tegrastats = self._stack.enter_context(monitor._tegrastats.window())
            monitor._rss.begin()
            if monitor._rss.needs_sampling:
                self._thread = threading.Thread(target=self._sample_rss, name="genedge-rss-sampler", daemon=True)
                self._thread.start()
            self._start = time.monotonic()
            # Every sampler started: keep them running past this block.
            self._stack = self._stack.pop_all()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        seconds = time.monotonic() - self._start
        monitor = self._monitor
        try:
            if self._thread is not None:
                self._stop.set()
                self._thread.join(THREAD_TIMEOUT_S)
            rss, rss_note = monitor._rss.end()
            if self._rss_failure is not None:
                rss, rss_note = None, self._rss_failure
        finally:
            self._stack.close()
        assert self._nvml is not None
        notes = {
            "peak_nvml_process_bytes": self._nvml.notes.get("process"),
            "peak_nvml_device_bytes": self._nvml.notes.get("device"),
            "peak_rss_bytes": rss_note,
        }
        status = monitor.status
        system_memory = energy = power = None
        if self._tegrastats is not None:
            tegra = self._tegrastats.reading
            system_memory = tegra.system_memory_bytes
            notes["peak_system_memory_bytes"] = tegra.notes.get("system_memory")
        else:
            notes["peak_system_memory_bytes"] = status.system_memory_reason
        if status.energy_source == "nvml":
            energy = self._nvml.energy_j
            power = energy / self._nvml.seconds if energy is not None and self._nvml.seconds > 0 else None
            energy_note = self._nvml.notes.get("energy")
        elif self._tegrastats is not None and status.energy_available:
            tegra = self._tegrastats.reading
            energy, power, energy_note = tegra.energy_j, tegra.average_power_w, tegra.notes.get("energy")
        else:
            energy_note = status.energy_reason
        notes["energy_j"] = notes["average_power_w"] = energy_note
        self.reading = WindowReading(
            nvml_process_bytes=self._nvml.peaks.process_bytes,
            nvml_device_bytes=self._nvml.peaks.device_bytes,
            rss_bytes=rss,
            system_memory_bytes=system_memory,
            energy_j=energy,
            average_power_w=power,
            seconds=seconds,
            notes={column: note for column, note in notes.items() if note},
        )


class Monitor:
    """Memory and energy of one device and this process, for a whole run.

    Args:
        device_uuid: UUID of the profiled CUDA device as torch reports it, or ``None`` when the
            device is not a CUDA GPU (see :class:`genedge.profiler.nvml.NvmlMonitor`).
        pid: Process whose NVML device memory is reported (default: this process). The RSS is
            always this process's.
        interval_s: NVML and RSS sampling interval, seconds.
        tegrastats_interval_s: tegrastats' interval, seconds, where it runs (a Jetson).

    Attributes:
        status: What can be measured here, and why not (JSON for the manifest via ``as_manifest()``).

    Example:
        >>> with Monitor(None) as monitor:
        ...     with monitor.window() as window:
        ...         data = bytearray(10**6)
        >>> window.reading.nvml_device_bytes is None and "peak_nvml_device_bytes" in window.reading.notes
        True
    """

    def __init__(
        self,
        device_uuid: str | None,
        *,
        pid: int | None = None,
        interval_s: float = SAMPLING_INTERVAL_S,
        tegrastats_interval_s: float = TEGRASTATS_INTERVAL_S,
    ) -> None:
        self.interval_s = interval_s
        self._nvml = NvmlMonitor(device_uuid, pid=pid)
        self._tegrastats: TegrastatsSampler | None = None
        self._closed = False
        try:
            self._rss = RssTracker()
            tegrastats_reason = self._start_tegrastats(tegrastats_interval_s)
            self.status = self._status(tegrastats_reason)
        except BaseException:
            self.close()
            raise
        logger.info("monitor: %s", self.status.as_manifest())

    def _start_tegrastats(self, interval_s: float) -> str | None:
        executable = find_tegrastats()
        if executable is None:
            return "tegrastats is not on PATH (not a Jetson)"
        try:
            self._tegrastats = TegrastatsSampler(executable, interval_s=interval_s)
        except OSError as err:
            return f"{executable} could not start: {err}"
        return self._tegrastats.failure

    def _status(self, tegrastats_reason: str | None) -> MonitorStatus:
        tegra = self._tegrastats
        if self._nvml.energy_reason is None:
            energy = (True, "nvml", None)
        elif tegra is not None and tegra.rail is not None:
            energy = (True, f"tegrastats {tegra.rail}", None)
        else:
            why_tegra = tegrastats_reason or (tegra.rail_reason if tegra is not None else None)
            energy = (False, None, f"NVML: {self._nvml.energy_reason}; tegrastats: {why_tegra}")
        if tegra is not None and tegrastats_reason is None:
            system = ("tegrastats", None)
        else:
            system = (None, f"measured only where CPU and GPU share RAM (a Jetson's tegrastats): {tegrastats_reason}")
        return MonitorStatus(
            nvml=self._nvml.status,
            energy_available=energy[0],
            energy_source=energy[1],
            energy_reason=energy[2],
            rss_method=self._rss.method,
            rss_reason=self._rss.reason,
            system_memory_source=system[0],
            system_memory_reason=system[1],
        )

    def window(self) -> MonitorWindow:
        """A context manager measuring one window; read ``.reading`` after it.

        Raises:
            RuntimeError: When the monitor is closed.
        """
        if self._closed:
            raise RuntimeError("Expected an open Monitor, but it was closed; create a new one")
        return MonitorWindow(self)

    def close(self) -> None:
        """Stop tegrastats and shut NVML down (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._tegrastats is not None:
                self._tegrastats.close()
        finally:
            self._nvml.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
