"""NVML boundary: null-with-reason without a driver, and the background sampler against a fake NVML."""

from __future__ import annotations

import os
import threading
import time
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
    fake.nvmlSystemGetDriverVersion.return_value = "999.99"
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
