"""Device accounts carried across a replica's restart (:mod:`genedge.serve.accounts`): counters stay monotone."""

from __future__ import annotations

import pytest

from genedge.serve.accounts import CARRIED_FIELDS, CarriedAccounts


def _stats(device_s: float, backlogged_s: float, calls: int, queued: int = 0) -> dict:
    return {
        "planned_share": 0.5,
        "steps": 20,
        "device_s": device_s,
        "backlogged_s": backlogged_s,
        "realized_share": device_s / backlogged_s if backlogged_s else None,
        "slices": calls * 20,
        "calls": calls,
        "requests": calls,
        "images": calls,
        "queued": queued,
        "rejected": 0,
    }


def test_a_replaced_replica_s_counters_are_carried_and_the_restart_counted() -> None:
    accounts = CarriedAccounts()
    assert not accounts.update(0, "first", {"sd15": _stats(4.0, 8.0, 10, queued=3)})
    assert not accounts.update(0, "first", {"sd15": _stats(6.0, 10.0, 15, queued=2)})
    assert accounts.update(0, "second", {"sd15": _stats(1.0, 4.0, 2)})  # the new replica counts from 0
    merged = accounts.merged(0)["sd15"]
    assert merged["device_s"] == 7.0 and merged["backlogged_s"] == 14.0 and merged["calls"] == 17
    assert merged["slices"] == 340 and isinstance(merged["calls"], int)
    assert merged["realized_share"] == pytest.approx(0.5)  # from the sums, not the new replica's 0.25
    assert merged["queued"] == 0 and merged["planned_share"] == 0.5  # the replica now, not carried
    assert accounts.restarts(0) == 1
    assert not accounts.update(0, "second", {"sd15": _stats(2.0, 5.0, 4)})
    assert accounts.merged(0)["sd15"]["calls"] == 19 and accounts.restarts(0) == 1


def test_units_are_independent_and_unrestarted_ones_are_passed_through() -> None:
    accounts = CarriedAccounts()
    accounts.update(0, "a", {"sd15": _stats(1.0, 2.0, 1)})
    accounts.update(1, "b", {"sdxl": _stats(3.0, 3.0, 2)})
    accounts.update(1, "c", {"sdxl": _stats(1.0, 1.0, 1)})
    assert accounts.merged(0) == {"sd15": _stats(1.0, 2.0, 1)}
    assert accounts.restarts(0) == 0 and accounts.restarts(1) == 1
    assert {field: accounts.merged(1)["sdxl"][field] for field in ("device_s", "calls")} == {
        "device_s": 4.0,
        "calls": 3,
    }
    assert set(CARRIED_FIELDS) <= set(_stats(0.0, 0.0, 0))
