"""Host description and the peak RSS of a window, on this machine."""

from __future__ import annotations

import json
import os
import platform

import pytest

from genedge.profiler.host import RSS_METHODS, RssTracker, host_info


def test_host_info_describes_this_machine_in_plain_json() -> None:
    info = host_info()
    assert json.loads(json.dumps(info)) == info
    assert info["os"] == platform.system() and info["os_release"] == platform.release()
    assert info["machine"] == platform.machine() and info["python"] == platform.python_version()
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert info["logical_cpus"] == os.cpu_count()
    assert 1 <= info["usable_cpus"] <= info["logical_cpus"]
    assert info["total_ram_bytes"] > 2**27


def peak_of_window(tracker: RssTracker, allocate_bytes: int) -> int:
    tracker.begin()
    block = bytearray(allocate_bytes)  # zero-filled, so every page is touched and resident
    if tracker.needs_sampling:
        tracker.sample()
    del block
    peak, note = tracker.end()
    assert note is None or tracker.method == "getrusage"
    return peak


def test_rss_peak_rises_in_a_window_that_allocates_and_not_in_one_that_does_not() -> None:
    tracker = RssTracker()
    assert tracker.method in RSS_METHODS
    big = peak_of_window(tracker, 200 * 2**20)
    small = peak_of_window(tracker, 0)
    if tracker.method == "getrusage":
        assert big is not None and "lifetime peak" in tracker.reason
    else:
        # The allocation was freed before the window ended: only a per-window peak sees it.
        assert big - small >= 150 * 2**20


def test_the_method_and_why_a_better_one_is_not_used() -> None:
    tracker = RssTracker()
    assert (tracker.reason is None) == (tracker.method == "clear_refs")


def test_where_clear_refs_is_refused_statm_is_sampled(monkeypatch: pytest.MonkeyPatch) -> None:
    from genedge.profiler import host

    def refused() -> None:
        raise PermissionError(13, "Permission denied", "/proc/self/clear_refs")

    monkeypatch.setattr(host, "_reset_hwm", refused)
    tracker = RssTracker()
    assert tracker.method == "statm" and tracker.needs_sampling
    assert "clear_refs" in tracker.reason and "Permission denied" in tracker.reason
    assert peak_of_window(tracker, 200 * 2**20) - peak_of_window(tracker, 0) >= 150 * 2**20
