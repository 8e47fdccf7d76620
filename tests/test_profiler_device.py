"""Device selection and CUDA clocks on a faked two-GPU torch.cuda: the measured device is made current."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from genedge.profiler.device import check_device_string, select_device
from genedge.profiler.timing import Clock


@dataclass
class FakeCuda:
    """Records what the code under test asks of torch.cuda on a machine with ``count`` GPUs."""

    count: int = 2
    current: int = 0
    set_calls: list[torch.device] = field(default_factory=list)
    recorded_on: list[Any] = field(default_factory=list)
    synchronized: list[Any] = field(default_factory=list)
    streams: dict[int, object] = field(default_factory=dict)

    def set_device(self, device: torch.device) -> None:
        self.set_calls.append(device)
        self.current = device.index

    def current_stream(self, device: torch.device | None = None) -> object:
        index = self.current if device is None or device.index is None else device.index
        return self.streams.setdefault(index, object())

    def event_class(self) -> type:
        fake = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                assert enable_timing

            def record(self, stream: object | None = None) -> None:
                fake.recorded_on.append(fake.current_stream() if stream is None else stream)

        return Event


@pytest.fixture()
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    fake = FakeCuda()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: fake.count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: fake.current)
    monkeypatch.setattr(torch.cuda, "set_device", fake.set_device)
    monkeypatch.setattr(torch.cuda, "current_stream", fake.current_stream)
    monkeypatch.setattr(torch.cuda, "synchronize", fake.synchronized.append)
    monkeypatch.setattr(torch.cuda, "Event", fake.event_class())
    return fake


def test_local_rank_wraps_onto_the_visible_devices_and_is_made_current(fake_cuda: FakeCuda) -> None:
    device = select_device(None, 3)
    assert device == torch.device("cuda:1")
    assert fake_cuda.set_calls == [torch.device("cuda:1")]


def test_an_explicit_device_is_made_current(fake_cuda: FakeCuda) -> None:
    assert select_device("cuda:1", 0) == torch.device("cuda:1")
    assert fake_cuda.set_calls == [torch.device("cuda:1")]


def test_bare_cuda_follows_local_rank_like_the_default(fake_cuda: FakeCuda) -> None:
    fake_cuda.current = 0
    assert select_device("cuda", 3) == torch.device("cuda:1")  # 2 visible devices


def test_a_device_the_machine_lacks_is_an_error(fake_cuda: FakeCuda) -> None:
    with pytest.raises(
        ValueError, match=r"--device cuda:5: this machine has 2 visible CUDA device\(s\), cuda:0 to cuda:1"
    ):
        select_device("cuda:5", 0)
    assert fake_cuda.set_calls == []


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "CUDA:0", "cuda:1 ", "cpu:0"])
def test_malformed_device_strings_name_the_flag_and_the_syntax(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^--device: expected cpu, cuda or cuda:N, but got "):
        check_device_string(bad)


def test_without_cuda_the_default_is_cpu_and_cuda_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device(None, 2) == torch.device("cpu")
    assert select_device("cpu", 0) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"--device cuda:0: CUDA is not available on this machine; pass --device cpu"):
        select_device("cuda:0", 0)


def test_cuda_clock_records_on_the_stream_of_its_device_not_the_current_one(fake_cuda: FakeCuda) -> None:
    device = torch.device("cuda:1")
    clock = Clock(device)
    marks = [clock.mark() for _ in range(3)]
    clock.synchronize()
    assert len(marks) == 3
    assert fake_cuda.current == 0  # the clock does not rely on its device being current
    assert fake_cuda.recorded_on == [fake_cuda.current_stream(device)] * 3
    assert fake_cuda.recorded_on[0] is not fake_cuda.current_stream(torch.device("cuda:0"))
    assert fake_cuda.synchronized == [device]


def test_cpu_clock_touches_no_cuda(fake_cuda: FakeCuda) -> None:
    clock = Clock(torch.device("cpu"))
    start, end = clock.mark(), clock.mark()
    clock.synchronize()
    assert isinstance(start, float) and clock.elapsed_s(start, end) >= 0.0
    assert fake_cuda.recorded_on == [] and fake_cuda.synchronized == [] and fake_cuda.set_calls == []
