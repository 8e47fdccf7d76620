"""NVML boundary: null-with-reason without a driver, the background sampler against a fake NVML, and
the real nvidia-ml-py wrapper driven through a fake ``libnvidia-ml`` (version fallback, MIG, energy, failures)."""

from __future__ import annotations

import ctypes
import functools
import os
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from unittest import mock

import pynvml as real_pynvml
import pytest

from genedge.profiler import NvmlMonitor
from genedge.profiler import nvml as nvml_module

UUID = "00000000-1111-2222-3333-444444444444"


def _driver_present() -> bool:
    try:
        real_pynvml.nvmlInit()
    except real_pynvml.NVMLError:
        return False
    real_pynvml.nvmlShutdown()
    return True


no_driver = pytest.mark.skipif(
    _driver_present(), reason="an NVIDIA driver is present; the fake NVML is only for driverless machines"
)


@no_driver
def test_without_a_driver_fields_are_null_with_a_reason() -> None:
    monitor = NvmlMonitor(UUID)
    assert not monitor.status.available
    assert "NVML could not initialise" in monitor.status.reason
    with monitor.window() as window:
        time.sleep(0.01)
    assert window.peaks.process_bytes is None and window.peaks.device_bytes is None
    assert window.peaks.note == monitor.status.reason
    monitor.close()


class _Memory:
    """Device memory that grows during the window, so the peak is known: 1, 2, 3, ... GiB."""

    def __init__(self) -> None:
        self.reads = 0
        self.lock = threading.Lock()

    def info(self, handle: object) -> SimpleNamespace:
        with self.lock:
            self.reads += 1
            return SimpleNamespace(used=self.reads * 2**30, total=80 * 2**30)


@pytest.fixture
def profiler_fake_nvml() -> mock.MagicMock:
    fake = mock.create_autospec(real_pynvml, spec_set=False)
    fake.NVMLError = real_pynvml.NVMLError
    fake.NVMLLibraryMismatchError = real_pynvml.NVMLLibraryMismatchError
    fake.NVMLError_FunctionNotFound = real_pynvml.NVMLError_FunctionNotFound
    fake.nvmlSystemGetDriverVersion.return_value = "999.99"
    fake.nvmlDeviceGetTotalEnergyConsumption.side_effect = real_pynvml.NVMLError(real_pynvml.NVML_ERROR_NOT_SUPPORTED)
    with mock.patch.object(nvml_module, "pynvml", fake):
        yield fake


@no_driver
def test_sampler_reports_peaks_and_is_ready_before_the_work(profiler_fake_nvml: mock.MagicMock) -> None:
    memory = _Memory()
    profiler_fake_nvml.nvmlDeviceGetMemoryInfo.side_effect = memory.info
    me = os.getpid()
    profiler_fake_nvml.nvmlDeviceGetComputeRunningProcesses.return_value = [
        SimpleNamespace(pid=me, usedGpuMemory=3 * 2**30),
        SimpleNamespace(pid=me + 1, usedGpuMemory=5 * 2**30),
    ]
    monitor = NvmlMonitor(UUID)
    assert monitor.status.available and monitor.status.driver == "999.99"
    profiler_fake_nvml.nvmlDeviceGetHandleByUUID.assert_called_once_with(f"GPU-{UUID}")
    with monitor.window(interval_s=0.001) as window:
        assert memory.reads >= 2  # the probe in __init__ and the sampler's first sample
        time.sleep(0.05)
    assert window.peaks.device_bytes == memory.reads * 2**30
    assert window.peaks.process_bytes == 3 * 2**30 and window.peaks.note is None
    monitor.close()
    profiler_fake_nvml.nvmlShutdown.assert_called_once()


@no_driver
def test_invisible_process_and_not_supported_are_null_with_notes(profiler_fake_nvml: mock.MagicMock) -> None:
    profiler_fake_nvml.nvmlDeviceGetMemoryInfo.return_value = SimpleNamespace(used=2**30, total=2**33)
    profiler_fake_nvml.nvmlDeviceGetComputeRunningProcesses.return_value = [SimpleNamespace(pid=1, usedGpuMemory=2**30)]
    monitor = NvmlMonitor(UUID)
    with monitor.window() as window:
        pass
    assert window.peaks.process_bytes is None and window.peaks.device_bytes == 2**30
    assert "not visible to NVML" in window.peaks.note
    profiler_fake_nvml.nvmlDeviceGetComputeRunningProcesses.side_effect = real_pynvml.NVMLError(
        real_pynvml.NVML_ERROR_NOT_SUPPORTED
    )
    with monitor.window() as window:
        pass
    assert window.peaks.process_bytes is None and "Not Supported" in window.peaks.note


@no_driver
def test_not_supported_device_makes_nvml_unavailable(profiler_fake_nvml: mock.MagicMock) -> None:
    profiler_fake_nvml.nvmlDeviceGetMemoryInfo.side_effect = real_pynvml.NVMLError(real_pynvml.NVML_ERROR_NOT_SUPPORTED)
    monitor = NvmlMonitor(UUID)
    assert not monitor.status.available and "Not Supported" in monitor.status.reason
    assert NvmlMonitor(None).status.reason == "the profiled device is not a CUDA GPU"


def test_the_unofficial_pynvml_package_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml_module, "pynvml", None)
    monkeypatch.setattr(nvml_module.importlib.metadata, "packages_distributions", lambda: {"pynvml": ["pynvml"]})
    with pytest.raises(ImportError, match=r"Expected the `pynvml` module from NVIDIA's 'nvidia-ml-py' distribution"):
        nvml_module._pynvml()
    assert not NvmlMonitor(UUID).status.available


class FakeNvmlLibrary:
    """Stands in for ``libnvidia-ml.so``: its C functions, taking the ctypes arguments nvidia-ml-py passes
    and returning NVML status codes, so the real wrapper code runs end to end.

    Args:
        uuids: Device UUIDs (with NVML's prefix) the driver knows.
        processes: ``(pid, used bytes)`` of the compute processes.
        has_v3: Whether ``nvmlDeviceGetComputeRunningProcesses_v3`` exists (drivers before 510 lack it).
        energy_step_mj: Energy counter increase per read; ``None`` for NOT_SUPPORTED.
    """

    def __init__(
        self,
        uuids: tuple[str, ...] = (f"GPU-{UUID}",),
        processes: tuple[tuple[int, int], ...] = (),
        *,
        has_v3: bool = False,
        energy_step_mj: int | None = 250_000,
    ) -> None:
        self.uuids = uuids
        self.processes = processes
        self.energy_step_mj = energy_step_mj
        self.energy_mj = 1_000_000
        self.calls: list[str] = []
        if has_v3:
            self.nvmlDeviceGetComputeRunningProcesses_v3 = self._processes

    def nvmlInitWithFlags(self, flags: int) -> int:
        return real_pynvml.NVML_SUCCESS

    def nvmlShutdown(self) -> int:
        return real_pynvml.NVML_SUCCESS

    def nvmlSystemGetDriverVersion(self, buffer: ctypes.Array, size: ctypes.c_uint) -> int:
        buffer.value = b"470.57.02"
        return real_pynvml.NVML_SUCCESS

    def nvmlDeviceGetHandleByUUID(self, uuid: ctypes.c_char_p, handle: object) -> int:
        self.calls.append(uuid.value.decode())
        return real_pynvml.NVML_SUCCESS if uuid.value.decode() in self.uuids else real_pynvml.NVML_ERROR_NOT_FOUND

    def nvmlDeviceGetMemoryInfo(self, handle: object, memory: object) -> int:
        memory._obj.used, memory._obj.total = 2**30, 2**34
        return real_pynvml.NVML_SUCCESS

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object, millijoules: object) -> int:
        if self.energy_step_mj is None:
            return real_pynvml.NVML_ERROR_NOT_SUPPORTED
        self.energy_mj += self.energy_step_mj
        millijoules._obj.value = self.energy_mj
        return real_pynvml.NVML_SUCCESS

    def _processes(self, handle: object, count: object, infos: object) -> int:
        if infos is None:  # the size query
            count._obj.value = len(self.processes)
            return real_pynvml.NVML_ERROR_INSUFFICIENT_SIZE if self.processes else real_pynvml.NVML_SUCCESS
        for info, (pid, used) in zip(infos, self.processes):
            info.pid, info.usedGpuMemory = pid, used
        count._obj.value = len(self.processes)
        return real_pynvml.NVML_SUCCESS

    nvmlDeviceGetComputeRunningProcesses_v2 = _processes


def install_fake_library(monkeypatch: pytest.MonkeyPatch, *args: object, **kwargs: object) -> FakeNvmlLibrary:
    """Install a :class:`FakeNvmlLibrary` under the real ``pynvml`` module for one test."""
    library = FakeNvmlLibrary(*args, **kwargs)
    monkeypatch.setattr(real_pynvml, "nvmlLib", library)
    monkeypatch.setattr(real_pynvml, "_nvmlGetFunctionPointer_cache", {})
    monkeypatch.setattr(nvml_module, "pynvml", real_pynvml)
    return library


@pytest.fixture
def fake_library(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeNvmlLibrary]:
    return functools.partial(install_fake_library, monkeypatch)


def test_the_wrapper_raises_a_mismatch_error_that_is_not_an_nvml_error(fake_library: Callable) -> None:
    fake_library()
    real_pynvml.nvmlInit()
    # What an old driver does to nvidia-ml-py's unversioned query: the reason a fallback is needed.
    with pytest.raises(real_pynvml.NVMLLibraryMismatchError) as caught:
        real_pynvml.nvmlDeviceGetComputeRunningProcesses(None)
    assert not isinstance(caught.value, real_pynvml.NVMLError)


def test_a_driver_without_v3_falls_back_to_v2_and_remembers(fake_library: Callable) -> None:
    fake_library(processes=((os.getpid(), 3 * 2**30), (1, 5 * 2**30)))
    monitor = NvmlMonitor(UUID)
    assert monitor.status == nvml_module.NvmlStatus(True, None, "470.57.02")
    with monitor.window(interval_s=0.001) as window:
        time.sleep(0.02)
    assert window.peaks == nvml_module.NvmlPeaks(3 * 2**30, 2**30, None)
    assert monitor._process_query == "nvmlDeviceGetComputeRunningProcesses_v2"
    monitor.close()


def test_a_driver_with_v3_uses_it(fake_library: Callable) -> None:
    fake_library(processes=((os.getpid(), 2**30),), has_v3=True)
    monitor = NvmlMonitor(UUID)
    with monitor.window() as window:
        pass
    assert window.peaks.process_bytes == 2**30
    assert monitor._process_query == "nvmlDeviceGetComputeRunningProcesses"
    monitor.close()


def test_a_mig_instance_is_found_by_its_mig_uuid(fake_library: Callable) -> None:
    library = fake_library(uuids=(f"MIG-{UUID}",))
    monitor = NvmlMonitor(UUID)
    assert monitor.status.available
    assert library.calls == [f"GPU-{UUID}", f"MIG-{UUID}"]
    fake_library(uuids=())
    status = NvmlMonitor(UUID).status
    assert not status.available and f"GPU-{UUID}" in status.reason and f"MIG-{UUID}" in status.reason
    assert "Not Found" in status.reason


def test_energy_is_the_counter_difference_over_the_window(fake_library: Callable) -> None:
    fake_library(processes=((os.getpid(), 2**30),), energy_step_mj=250_000)
    monitor = NvmlMonitor(UUID)
    assert monitor.energy_reason is None
    with monitor.window() as window:
        time.sleep(0.01)
    # One read when the window opens, one when it closes: 250 000 mJ apart.
    assert window.energy_j == 250.0 and "energy" not in window.notes
    assert window.seconds >= 0.01
    monitor.close()


def test_energy_not_supported_is_none_with_the_reason(fake_library: Callable) -> None:
    fake_library(processes=((os.getpid(), 2**30),), energy_step_mj=None)
    monitor = NvmlMonitor(UUID)
    assert "Not Supported" in monitor.energy_reason
    with monitor.window() as window:
        pass
    assert window.energy_j is None and window.notes["energy"] == monitor.energy_reason
    assert window.peaks.process_bytes == 2**30


def test_a_sampler_exception_becomes_the_windows_note(fake_library: Callable) -> None:
    library = fake_library(processes=((os.getpid(), 2**30),))

    def wedged(*args: object) -> int:
        raise RuntimeError("driver wedged")

    library.nvmlDeviceGetComputeRunningProcesses_v2 = wedged
    monitor = NvmlMonitor(UUID)
    with monitor.window() as window:
        pass
    assert window.peaks.process_bytes is None and window.peaks.device_bytes is None
    assert window.peaks.note == "the NVML sampler stopped: RuntimeError: driver wedged"
    assert window.notes["process"] == window.notes["device"] == window.peaks.note
    assert window.energy_j == 250.0  # read outside the sampler thread, so still measured


def test_a_hung_driver_call_does_not_hang_the_window(fake_library: Callable, monkeypatch: pytest.MonkeyPatch) -> None:
    library = fake_library(processes=((os.getpid(), 2**30),))
    monitor = NvmlMonitor(UUID)
    release = threading.Event()

    def hung(*args: object) -> int:
        release.wait(10)
        return real_pynvml.NVML_SUCCESS

    library.nvmlDeviceGetMemoryInfo = hung
    # nvidia-ml-py caches function pointers; the probe in NvmlMonitor cached the working one.
    real_pynvml._nvmlGetFunctionPointer_cache.pop("nvmlDeviceGetMemoryInfo")
    monkeypatch.setattr(nvml_module, "THREAD_TIMEOUT_S", 0.1)
    try:
        with monitor.window() as window:
            pass
    finally:
        release.set()
    assert window.peaks.process_bytes is None
    assert "did not return within 0.1 s" in window.peaks.note
