"""Device accounts that survive a device replica's restart.

A device deployment's counters (device seconds, calls, images, ...) live in its replica's process; when Ray
restarts a replica that died, the new one counts from 0, and a load test reading ``GET /v1/stats`` before and
after would see counters go backwards. Each replica therefore reports an *incarnation* (an id drawn when it
starts). :class:`CarriedAccounts`, kept by the ingress, reads every device's accounts often
(:data:`READ_EVERY_S`), and when a device's incarnation changes it carries the last accounts the old one
reported into every later answer, counts the restart, and says so. The counters stay monotone; what the dead
replica counted after its last read (at most :data:`READ_EVERY_S` of work) is lost, and the restart is
visible in ``GET /v1/stats`` (``restarts`` per device) and ``/metrics`` (``genedge_device_restarts_total``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CARRIED_FIELDS", "READ_EVERY_S", "CarriedAccounts"]

#: How often the ingress reads the devices' accounts (s): the most work a dead replica's counters can lose.
READ_EVERY_S = 1.0
#: The counters a restart carries over (the rest describe the replica now: its plan, its queue).
CARRIED_FIELDS = ("device_s", "backlogged_s", "slices", "calls", "requests", "images", "rejected")


@dataclass
class _Device:
    incarnation: str
    last: Mapping[str, Mapping[str, Any]]
    carried: dict[str, dict[str, float]] = field(default_factory=dict)
    restarts: int = 0


class CarriedAccounts:
    """Each device's accounts with earlier incarnations' counters added (see the module's docstring)."""

    def __init__(self) -> None:
        self._devices: dict[int, _Device] = {}

    def update(self, unit: int, incarnation: str, models: Mapping[str, Mapping[str, Any]]) -> bool:
        """Record deployment ``unit``'s accounts as its replica ``incarnation`` reported them; True where that
        replica is new (the unit's replica restarted since the last read)."""
        known = self._devices.get(unit)
        if known is None:
            self._devices[unit] = _Device(incarnation, models)
            return False
        restarted = known.incarnation != incarnation
        if restarted:
            for name, stats in known.last.items():
                carried = known.carried.setdefault(name, dict.fromkeys(CARRIED_FIELDS, 0))
                for counter in CARRIED_FIELDS:
                    carried[counter] += stats.get(counter) or 0
            known.incarnation = incarnation
            known.restarts += 1
        known.last = models
        return restarted

    def known(self, unit: int) -> bool:
        """Whether ``unit``'s accounts were ever read."""
        return unit in self._devices

    def restarts(self, unit: int) -> int:
        """How many times ``unit``'s replica was replaced since the ingress started."""
        known = self._devices.get(unit)
        return 0 if known is None else known.restarts

    def merged(self, unit: int) -> dict[str, dict[str, Any]]:
        """``unit``'s latest accounts with the carried counters added; the realized share from the sums."""
        known = self._devices[unit]
        merged = {}
        for name, stats in known.last.items():
            carried = known.carried.get(name)
            if carried is None:
                merged[name] = dict(stats)
                continue
            total = {**stats, **{c: (stats.get(c) or 0) + carried[c] for c in CARRIED_FIELDS}}
            if total["backlogged_s"] > 0:
                total["realized_share"] = total["device_s"] / total["backlogged_s"]
            merged[name] = total
        return merged
