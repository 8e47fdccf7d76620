"""NVML boundary: the only module that imports ``pynvml`` (distribution ``nvidia-ml-py``).

GPU memory as NVML sees it is sampled in a background thread during each measured window:
the memory used by this process on the device and the memory used on the whole device. Where
NVML cannot answer (no driver, NOT_SUPPORTED as on Jetson, the process invisible from a
container's PID namespace) the number is ``None`` with a note saying why, never 0.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = [
    "SAMPLING_INTERVAL_S",
    "NvmlStatus",
    "NvmlPeaks",
    "NvmlMonitor",
    "NvmlWindow",
]

logger = logging.getLogger(__name__)

SAMPLING_INTERVAL_S = 0.01
_OFFICIAL_DISTRIBUTION = "nvidia-ml-py"

# The official ``pynvml`` module, imported on first use (tests patch this name with a fake).
pynvml: Any = None


def _pynvml() -> Any:
    global pynvml
    if pynvml is None:
        providers = importlib.metadata.packages_distributions().get("pynvml", [])
        if providers and _OFFICIAL_DISTRIBUTION not in providers:
            raise ImportError(
                f"Expected the `pynvml` module from NVIDIA's {_OFFICIAL_DISTRIBUTION!r} distribution, but it comes "
                f"from {providers}; run `pip uninstall pynvml && pip install {_OFFICIAL_DISTRIBUTION}`."
            )
        try:
            pynvml = importlib.import_module("pynvml")
        except ImportError as err:
            raise ImportError(
                f'NVML needs `pip install {_OFFICIAL_DISTRIBUTION}` (or `pip install "genedge[profile]"`).'
            ) from err
    return pynvml


@dataclass(frozen=True)
class NvmlStatus:
    """Whether NVML can measure the profiled device.

    Attributes:
        available: True when NVML answered a memory query for the device.
        reason: Why not, when ``available`` is False.
        driver: NVIDIA driver version when NVML is initialised, else ``None``.
    """

    available: bool
    reason: str | None
    driver: str | None = None


@dataclass(frozen=True)
class NvmlPeaks:
    """Peak NVML memory over one window, in bytes.

    Attributes:
        process_bytes: Peak device memory used by this process (``nvmlDeviceGetComputeRunningProcesses``).
        device_bytes: Peak memory used on the whole device (``nvmlDeviceGetMemoryInfo().used``).
        note: Why a field is ``None``; ``None`` when both were measured.
    """

    process_bytes: int | None
    device_bytes: int | None
    note: str | None


class NvmlWindow:
    """A background sampler over one window; use through :meth:`NvmlMonitor.window`.

    The thread takes its first sample before ``__enter__`` returns (so the timed work never starts
    unobserved) and is stopped and joined in ``__exit__``, also on exceptions.
    """

    def __init__(self, monitor: NvmlMonitor, interval_s: float) -> None:
        self._monitor = monitor
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: int | None = None
        self._device: int | None = None
        self._notes: dict[str, str] = {}
        self.peaks = NvmlPeaks(None, None, monitor.status.reason)

    def _sample(self) -> None:
        nvml = _pynvml()
        handle = self._monitor.handle
        if "device" not in self._notes:
            try:
                used = int(nvml.nvmlDeviceGetMemoryInfo(handle).used)
                self._device = used if self._device is None else max(self._device, used)
            except nvml.NVMLError as err:
                self._notes["device"] = f"nvmlDeviceGetMemoryInfo failed: {err}"
        if "process" not in self._notes:
            try:
                mine = [
                    p.usedGpuMemory
                    for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)
                    if p.pid == self._monitor.pid
                ]
            except nvml.NVMLError as err:
                self._notes["process"] = f"nvmlDeviceGetComputeRunningProcesses failed: {err}"
                return
            if any(used is None for used in mine):
                self._notes["process"] = (
                    "NVML reports no per-process memory for this process (NVML_VALUE_NOT_AVAILABLE)"
                )
            elif mine:
                used = int(sum(mine))
                self._process = used if self._process is None else max(self._process, used)

    def _run(self) -> None:
        try:
            self._sample()
        finally:
            self._ready.set()
        while not self._stop.wait(self._interval_s):
            self._sample()

    def __enter__(self) -> NvmlWindow:
        if self._monitor.status.available:
            self._thread = threading.Thread(target=self._run, name="genedge-nvml-sampler", daemon=True)
            self._thread.start()
            self._ready.wait()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        # One last sample after the work: a short window may end between two polls.
        self._sample()
        if self._process is None and "process" not in self._notes:
            self._notes["process"] = f"pid {self._monitor.pid} is not visible to NVML (e.g. a container PID namespace)"
        self.peaks = NvmlPeaks(self._process, self._device, "; ".join(self._notes.values()) or None)


class NvmlMonitor:
    """NVML for one device, initialised once per run.

    Args:
        device_uuid: UUID of the profiled CUDA device as torch reports it (without NVML's ``GPU-``
            prefix; torch and NVML indices differ under ``CUDA_VISIBLE_DEVICES``, UUIDs do not),
            or ``None`` when the device is not a CUDA GPU.
        pid: Process whose memory is reported (default: this process).

    Example:
        >>> monitor = NvmlMonitor(None)
        >>> monitor.status.available
        False
        >>> with monitor.window() as window:
        ...     pass
        >>> window.peaks.device_bytes is None
        True
        >>> monitor.close()
    """

    def __init__(self, device_uuid: str | None, *, pid: int | None = None) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.handle: Any = None
        self._initialised = False
        self.status = self._open(device_uuid)
        logger.info("NVML: %s", self.status)

    def _open(self, device_uuid: str | None) -> NvmlStatus:
        try:
            nvml = _pynvml()
        except ImportError as err:
            return NvmlStatus(False, str(err))
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as err:
            return NvmlStatus(False, f"NVML could not initialise (no NVIDIA driver?): {err}")
        self._initialised = True
        driver = nvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else str(driver)
        if device_uuid is None:
            return NvmlStatus(False, "the profiled device is not a CUDA GPU", driver)
        try:
            self.handle = nvml.nvmlDeviceGetHandleByUUID(f"GPU-{device_uuid}")
            nvml.nvmlDeviceGetMemoryInfo(self.handle)
        except nvml.NVMLError as err:
            return NvmlStatus(False, f"NVML cannot query device GPU-{device_uuid}: {err}", driver)
        return NvmlStatus(True, None, driver)

    def window(self, interval_s: float = SAMPLING_INTERVAL_S) -> NvmlWindow:
        """A context manager sampling NVML every ``interval_s`` seconds; read ``.peaks`` after it."""
        return NvmlWindow(self, interval_s)

    def close(self) -> None:
        """Shut NVML down (idempotent)."""
        if self._initialised:
            _pynvml().nvmlShutdown()
            self._initialised = False
