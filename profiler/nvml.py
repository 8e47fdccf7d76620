"""NVML boundary: the only module that imports ``pynvml`` (distribution ``nvidia-ml-py``).

GPU memory as NVML sees it is sampled in a background thread during each measured window:
the memory used by this process on the device and the memory used on the whole device. The
device's energy counter is read when the window opens and when it closes. Where NVML cannot
answer (no driver, NOT_SUPPORTED as on Jetson, the process invisible from a container's PID
namespace, a driver older than the wrapper, a hung driver call) the number is ``None`` with a
note saying why, never 0.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = [
    "SAMPLING_INTERVAL_S",
    "THREAD_TIMEOUT_S",
    "NvmlStatus",
    "NvmlPeaks",
    "NvmlMonitor",
    "NvmlWindow",
]

logger = logging.getLogger(__name__)

SAMPLING_INTERVAL_S = 0.01
#: Longest wait for the sampler's first sample and for the sampler to stop; a driver call that
#: takes longer is treated as hung, so a stuck NVML never hangs the profiler.
THREAD_TIMEOUT_S = 10.0
_OFFICIAL_DISTRIBUTION = "nvidia-ml-py"
# nvidia-ml-py maps the unversioned name to the newest C function (``_v3``); drivers older than
# the wrapper lack it, so the older ``_v2`` is tried next.
_PROCESS_QUERIES = ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetComputeRunningProcesses_v2")

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


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


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
    unobserved) and is stopped and joined in ``__exit__``, also on exceptions. After the window:
    ``peaks`` (memory), ``energy_j`` and ``seconds`` (energy counter delta and the host time between
    the two counter reads), and ``notes`` (``"process"``, ``"device"``, ``"energy"`` → why ``None``).
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
        # Set by the sampler thread when it dies, so the window says why its values are missing.
        self._failure: str | None = None
        self._energy_start_mj: int | None = None
        self._energy_note: str | None = None
        self._start_s = 0.0
        self.peaks = NvmlPeaks(None, None, monitor.status.reason)
        self.energy_j: float | None = None
        self.seconds = 0.0
        self.notes: dict[str, str] = {}

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
                processes = self._monitor.running_processes()
            except nvml.NVMLError as err:
                self._notes["process"] = f"nvmlDeviceGetComputeRunningProcesses failed: {err}"
                return
            mine = [p.usedGpuMemory for p in processes if p.pid == self._monitor.pid]
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
            self._ready.set()
            while not self._stop.wait(self._interval_s):
                self._sample()
        # Whatever kills the thread, not only NVMLError, must reach the window's notes.
        except BaseException as err:
            self._failure = f"the NVML sampler stopped: {_describe(err)}"
            logger.warning("%s", self._failure)
        finally:
            self._ready.set()

    def __enter__(self) -> NvmlWindow:
        if not self._monitor.status.available:
            return self
        self._energy_start_mj = self._monitor.energy_mj()
        self._start_s = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="genedge-nvml-sampler", daemon=True)
        self._thread.start()
        if not self._ready.wait(THREAD_TIMEOUT_S):
            self._failure = f"NVML's first sample did not return within {THREAD_TIMEOUT_S:g} s (a hung driver call?)"
            logger.warning("%s", self._failure)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is None:
            self.notes = {key: self._monitor.status.reason or "" for key in ("process", "device", "energy")}
            return
        self._stop.set()
        self._thread.join(THREAD_TIMEOUT_S)
        end_mj = self._monitor.energy_mj()
        self.seconds = time.monotonic() - self._start_s
        self._finish_energy(end_mj)
        if self._thread.is_alive() and self._failure is None:
            self._failure = (
                f"the NVML sampler was still blocked in a driver call {THREAD_TIMEOUT_S:g} s after the window"
            )
        if self._failure is not None:
            # A dead or stuck sampler saw only part of the window: its peaks would understate it.
            self._process = self._device = None
            self._notes = {"process": self._failure, "device": self._failure}
        else:
            # One last sample after the work: a short window may end between two polls.
            self._sample()
            if self._process is None and "process" not in self._notes:
                self._notes["process"] = (
                    f"pid {self._monitor.pid} is not visible to NVML (e.g. a container PID namespace)"
                )
        self.peaks = NvmlPeaks(self._process, self._device, "; ".join(dict.fromkeys(self._notes.values())) or None)
        self.notes = dict(self._notes) | ({"energy": self._energy_note} if self._energy_note else {})

    def _finish_energy(self, end_mj: int | None) -> None:
        if self._monitor.energy_reason is not None:
            self._energy_note = self._monitor.energy_reason
        elif self._energy_start_mj is None or end_mj is None:
            self._energy_note = "nvmlDeviceGetTotalEnergyConsumption failed during the window"
        else:
            self.energy_j = (end_mj - self._energy_start_mj) / 1000.0


class NvmlMonitor:
    """NVML for one device, initialised once per run.

    Args:
        device_uuid: UUID of the profiled CUDA device as torch reports it (without NVML's ``GPU-``
            or ``MIG-`` prefix; torch and NVML indices differ under ``CUDA_VISIBLE_DEVICES``, UUIDs do not),
            or ``None`` when the device is not a CUDA GPU.
        pid: Process whose memory is reported (default: this process).

    Attributes:
        status: Whether NVML can measure the device.
        energy_reason: Why the device's energy counter cannot be read (pre-Volta GPUs, MIG
            instances, NOT_SUPPORTED); ``None`` when it can.

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
        self._process_query: str | None = None
        self.status = self._open(device_uuid)
        self.energy_reason = self._probe_energy()
        logger.info("NVML: %s; energy: %s", self.status, self.energy_reason or "available")

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
        failures = []
        # torch gives a MIG instance's UUID without NVML's prefix too, and NVML names it ``MIG-``.
        for name in (f"GPU-{device_uuid}", f"MIG-{device_uuid}"):
            try:
                self.handle = nvml.nvmlDeviceGetHandleByUUID(name)
                break
            except nvml.NVMLError as err:
                failures.append(f"{name}: {err}")
        else:
            return NvmlStatus(False, f"NVML finds no device with torch's UUID ({'; '.join(failures)})", driver)
        try:
            nvml.nvmlDeviceGetMemoryInfo(self.handle)
        except nvml.NVMLError as err:
            return NvmlStatus(False, f"NVML cannot query device {device_uuid}: {err}", driver)
        return NvmlStatus(True, None, driver)

    def _probe_energy(self) -> str | None:
        if not self.status.available:
            return self.status.reason
        nvml = _pynvml()
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except nvml.NVMLError as err:
            return f"nvmlDeviceGetTotalEnergyConsumption failed (needs Volta or newer, not a MIG instance): {err}"
        return None

    def energy_mj(self) -> int | None:
        """The device's energy counter in millijoules since the driver loaded, or ``None`` when unreadable."""
        if self.energy_reason is not None:
            return None
        nvml = _pynvml()
        try:
            return int(nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except nvml.NVMLError as err:
            logger.warning("nvmlDeviceGetTotalEnergyConsumption failed: %s", err)
            return None

    def running_processes(self) -> list[Any]:
        """The device's compute processes, through the newest query this driver has.

        Raises:
            NVMLError: When every query fails; the last error.
        """
        nvml = _pynvml()
        if self._process_query is not None:
            return getattr(nvml, self._process_query)(self.handle)
        last: BaseException | None = None
        for name in _PROCESS_QUERIES:
            try:
                processes = getattr(nvml, name)(self.handle)
            except (nvml.NVMLLibraryMismatchError, nvml.NVMLError_FunctionNotFound) as err:
                # The wrapper raises the first (not an NVMLError) when the driver lacks ``_v3``.
                last = err
                continue
            self._process_query = name
            return processes
        raise nvml.NVMLError(nvml.NVML_ERROR_FUNCTION_NOT_FOUND) from last

    def window(self, interval_s: float = SAMPLING_INTERVAL_S) -> NvmlWindow:
        """A context manager sampling NVML every ``interval_s`` seconds; read ``.peaks`` after it."""
        return NvmlWindow(self, interval_s)

    def close(self) -> None:
        """Shut NVML down (idempotent)."""
        if self._initialised:
            _pynvml().nvmlShutdown()
            self._initialised = False
