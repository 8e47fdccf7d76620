"""Monitor: one object per run combining NVML, tegrastats and the host's RSS, on this CPU machine and
with fakes only for what cannot exist here (an NVIDIA driver, a Jetson)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from genedge.profiler import nvml as nvml_module
from genedge.profiler.monitor import Monitor, WindowReading
from tests.test_profiler_nvml import UUID, install_fake_library, no_driver
from tests.test_profiler_tegrastats import fake_tegrastats

MIB = 2**20


@pytest.fixture
def no_tegrastats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("genedge.profiler.monitor.find_tegrastats", lambda: None)


@no_driver
def test_on_this_cpu_machine_nvml_and_energy_are_unavailable_with_reasons_and_rss_is_measured(
    no_tegrastats: None,
) -> None:
    with Monitor(None) as monitor:
        manifest = monitor.status.as_manifest()
        with monitor.window() as allocating:
            block = bytearray(200 * MIB)
            del block
        with monitor.window() as idle:
            pass
    assert json.loads(json.dumps(manifest)) == manifest
    assert manifest["nvml"] == {"available": False, "reason": manifest["nvml"]["reason"], "driver": None}
    assert "NVML could not initialise" in manifest["nvml"]["reason"]
    assert manifest["energy"]["available"] is False and manifest["energy"]["source"] is None
    assert "NVML:" in manifest["energy"]["reason"] and "tegrastats is not on PATH" in manifest["energy"]["reason"]
    for reading in (allocating.reading, idle.reading):
        assert isinstance(reading, WindowReading)
        assert reading.nvml_process_bytes is None and reading.nvml_device_bytes is None
        assert reading.energy_j is None and reading.average_power_w is None and reading.system_memory_bytes is None
        assert set(reading.notes) >= {
            "peak_nvml_process_bytes",
            "peak_nvml_device_bytes",
            "peak_system_memory_bytes",
            "energy_j",
            "average_power_w",
        }
        assert reading.notes["energy_j"] == manifest["energy"]["reason"]
    if manifest["host_memory"]["rss_method"] != "getrusage":
        assert allocating.reading.rss_bytes - idle.reading.rss_bytes >= 150 * MIB
        assert "peak_rss_bytes" not in idle.reading.notes


def test_exceptions_inside_the_window_still_stop_the_samplers(no_tegrastats: None) -> None:
    monitor = Monitor(None, interval_s=0.001)
    window = monitor.window()
    with pytest.raises(KeyError), window:
        raise KeyError("boom")
    assert window.reading is not None and window.reading.seconds >= 0
    monitor.close()
    monitor.close()  # idempotent
    with pytest.raises(RuntimeError, match="Expected an open Monitor"):
        monitor.window()


def test_energy_comes_from_nvml_where_the_driver_has_the_counter(
    monkeypatch: pytest.MonkeyPatch, no_tegrastats: None
) -> None:
    install_fake_library(monkeypatch, processes=((os.getpid(), 2**30),), energy_step_mj=250_000)
    with Monitor(UUID) as monitor:
        assert monitor.status.as_manifest()["energy"] == {"available": True, "source": "nvml", "reason": None}
        assert monitor.status.as_manifest()["nvml"] == {"available": True, "reason": None, "driver": "470.57.02"}
        with monitor.window() as window:
            time.sleep(0.02)
    reading = window.reading
    assert reading.energy_j == 250.0
    # Power is energy over the NVML sampler's own span of the window, which differs from the host's window
    # by however late the sampler thread ran: only its sign and scale are checked, not a timing.
    assert reading.average_power_w > 0 and 0 < reading.energy_j / reading.average_power_w < 10
    assert reading.nvml_process_bytes == 2**30 and reading.nvml_device_bytes == 2**30
    assert "energy_j" not in reading.notes and "peak_nvml_process_bytes" not in reading.notes


def test_on_a_jetson_tegrastats_gives_shared_ram_and_board_energy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tegrastats(tmp_path, "orin")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    # A Jetson's CUDA device has a UUID, but NVML answers nothing for it.
    monkeypatch.setattr(nvml_module, "_pynvml", _no_pynvml)
    with Monitor(UUID, tegrastats_interval_s=0.02) as monitor:
        manifest = monitor.status.as_manifest()
        with monitor.window() as window:
            time.sleep(0.1)
    assert manifest["energy"] == {"available": True, "source": "tegrastats VDD_IN", "reason": None}
    assert manifest["host_memory"]["system_memory_source"] == "tegrastats"
    reading = window.reading
    assert reading.system_memory_bytes in (6185 * MIB, 3452 * MIB)
    assert 4.824 <= reading.average_power_w <= 12.479 and reading.energy_j > 0
    assert "peak_system_memory_bytes" not in reading.notes and "energy_j" not in reading.notes
    assert reading.nvml_device_bytes is None and "pip install" in reading.notes["peak_nvml_device_bytes"]


def _no_pynvml() -> object:
    raise ImportError('NVML needs `pip install nvidia-ml-py` (or `pip install "genedge[profile]"`).')
