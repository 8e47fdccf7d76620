r"""The step-level share scheduler: one device, several models, each at its planned share.

A plan gives model m a share r_m of a device (Σ r_m ≤ 1) and predicts its delays as if m ran alone
on a device r_m as fast. Inside the process that owns the device, :class:`ShareScheduler` makes
that true on any device, a CPU included: the models' work is cut into *slices* (text encoding, each
denoising step, VAE decoding), one slice runs at a time, and the next slice goes to the model
furthest behind its share: weighted fair queueing in which each slice is a packet whose length is
the device time it took.

Each model m keeps a virtual start tag S_m in seconds. When m becomes backlogged (work arrives
while it had none) S_m = max(S_m, now); after a slice that took d seconds, S_m ← S_m + d / r_m.

- **Reserved** (default): m may start a slice only when S_m ≤ now, and among the models that may,
  the one with the smallest S_m goes first. This is the virtual clock of Zhang (1990) with an
  eligibility test, so m receives exactly r_m of the device while it is backlogged, never more,
  whatever the others do: the plan's model (and CUDA MPS's cap on a process's SMs). A model whose
  slice had to wait behind another's keeps its tags, so it catches up in the slices that follow.
- **Work-conserving**: the eligibility test is dropped, and tags start from the system virtual time
  (the tag of the slice last granted) instead of the clock (start-time fair queueing, Goyal et al.
  1996): backlogged models still split the device in proportion r_m, and a model alone takes all
  of it, so delays come out below the plan's.

Slices are not preempted, so a model's realized share over an interval T is r_m within about one
slice: |device_s / T − r_m| ≤ d_max / T.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

__all__ = ["SHARE_REALIZATIONS", "ShareRealization", "SHARE_SUM_TOLERANCE", "ShareAccount", "ShareScheduler"]

#: How a server realizes the plan's shares: this module's step-level scheduler in the process that owns
#: each device, or one process per model under CUDA MPS (NVIDIA GPUs with the MPS daemon running).
ShareRealization = Literal["scheduler", "mps"]
SHARE_REALIZATIONS: tuple[str, ...] = ("scheduler", "mps")

#: Shares on one device may sum to 1 plus this (round-off in a plan's shares).
SHARE_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ShareAccount:
    """What one model received from the scheduler.

    Attributes:
        planned_share: r_m, the share the plan gives it.
        device_s: device time its slices took (s).
        backlogged_s: wall time during which it had work (s).
        slices: slices it ran.
    """

    planned_share: float
    device_s: float
    backlogged_s: float
    slices: int

    @property
    def realized_share(self) -> float | None:
        """device_s / backlogged_s: the share it got while it wanted the device; None before any work."""
        return self.device_s / self.backlogged_s if self.backlogged_s > 0 else None


class _Model:
    __slots__ = ("backlog_since", "backlogged_s", "device_s", "share", "slices", "tag", "waiting")

    def __init__(self, share: float) -> None:
        self.share = share
        self.tag = 0.0
        self.waiting = False
        self.backlog_since: float | None = None
        self.backlogged_s = 0.0
        self.device_s = 0.0
        self.slices = 0


class ShareScheduler:
    """Grant one device to one slice at a time so that each model gets its share.

    A model's worker brackets the time it has work with :meth:`backlogged` and :meth:`idle`, and
    runs each slice inside ``with scheduler.slice(model):``. One worker per model: a model has at
    most one slice waiting or running.

    Args:
        shares: model → share r_m of this device (in [0, 1], summing to at most 1, one at least > 0). A
            model at share 0 is loaded but not served (a plan schedule's model that the current plan
            leaves out): it may not ask for a slice until :meth:`set_shares` gives it a share.
        work_conserving: let a backlogged model use what others leave idle (see the module notes).
        clock: monotonic seconds (for tests).

    Raises:
        ValueError: no models, a share outside [0, 1], none above 0, or shares summing to more than 1.

    Example:
        >>> scheduler = ShareScheduler({"a": 0.75, "b": 0.25})
        >>> scheduler.backlogged("a")
        >>> with scheduler.slice("a"):
        ...     pass
        >>> scheduler.idle("a")
        >>> scheduler.accounts()["a"].slices
        1
    """

    def __init__(
        self,
        shares: Mapping[str, float],
        *,
        work_conserving: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_shares(shares)
        self.work_conserving = work_conserving
        self._clock = clock
        self._models = {key: _Model(float(r)) for key, r in shares.items()}
        self._condition = threading.Condition()
        self._running: str | None = None
        self._virtual = 0.0  # tag of the slice last granted (work-conserving mode's system virtual time)

    @property
    def shares(self) -> dict[str, float]:
        """model → planned share."""
        return {key: m.share for key, m in self._models.items()}

    def set_shares(self, shares: Mapping[str, float]) -> None:
        """Give every model a new share (a switch of plan), counted from now on.

        Raises:
            ValueError: models other than this scheduler's, or shares :class:`ShareScheduler` refuses.
        """
        _check_shares(shares)
        if set(shares) != set(self._models):
            raise ValueError(f"Expected shares for the models {sorted(self._models)}, but got {sorted(shares)}")
        with self._condition:
            floor = self._virtual if self.work_conserving else self._clock()
            for key, share in shares.items():
                model = self._models[key]
                model.share = float(share)
                # The new plan's account starts now: a model behind under the old shares (or idle at share 0
                # with a stale tag) is owed nothing under the new ones.
                model.tag = max(model.tag, floor)
            self._condition.notify_all()  # eligibility changed

    def _model(self, key: str) -> _Model:
        try:
            return self._models[key]
        except KeyError:
            raise KeyError(f"model {key!r} has no share on this device (it has {sorted(self._models)})") from None

    def backlogged(self, key: str) -> None:
        """``key`` has work from now on (no-op if it already had)."""
        with self._condition:
            model = self._model(key)
            if model.backlog_since is not None:
                return
            now = self._clock()
            model.backlog_since = now
            model.tag = max(model.tag, self._virtual if self.work_conserving else now)

    def idle(self, key: str) -> None:
        """``key`` has no more work (no-op if it had none)."""
        with self._condition:
            model = self._model(key)
            if model.backlog_since is not None:
                model.backlogged_s += self._clock() - model.backlog_since
                model.backlog_since = None

    def _next(self, now: float) -> tuple[str | None, float | None]:
        """The model to grant now (or None) and, if none may start yet, when the first one may."""
        best: str | None = None
        earliest: float | None = None
        for key, model in self._models.items():
            if not model.waiting or model.share <= 0:
                continue
            if not self.work_conserving and model.tag > now:
                earliest = model.tag if earliest is None else min(earliest, model.tag)
                continue
            if best is None or model.tag < self._models[best].tag:
                best = key
        return best, earliest

    def acquire(self, key: str) -> float:
        """Block until ``key`` holds the device; returns the clock reading at the grant."""
        with self._condition:
            model = self._model(key)
            if model.waiting or self._running == key:
                raise RuntimeError(f"model {key!r} already has a slice waiting or running (one worker per model)")
            if model.backlog_since is None:
                raise RuntimeError(f"model {key!r} asked for a slice without being backlogged")
            if model.share <= 0:
                raise RuntimeError(f"model {key!r} asked for a slice at share 0 (the current plan does not serve it)")
            model.waiting = True
            self._condition.notify_all()  # the others recompute who goes next
            try:
                while True:
                    now = self._clock()
                    if self._running is None:
                        chosen, earliest = self._next(now)
                        if chosen == key:
                            break
                        timeout = None if chosen is not None or earliest is None else max(earliest - now, 0.0)
                    else:
                        timeout = None
                    self._condition.wait(timeout)
            finally:
                model.waiting = False
            self._running = key
            self._virtual = model.tag
            return now

    def release(self, key: str, started: float) -> float:
        """``key`` gives the device back after a slice granted at ``started``; returns its duration (s)."""
        with self._condition:
            if self._running != key:
                raise RuntimeError(f"model {key!r} released a device it does not hold")
            model = self._models[key]
            duration = max(self._clock() - started, 0.0)
            model.tag += duration / model.share
            model.device_s += duration
            model.slices += 1
            self._running = None
            self._condition.notify_all()
            return duration

    @contextmanager
    def slice(self, key: str) -> Iterator[None]:
        """Run the body as one slice of ``key``'s work on the device."""
        started = self.acquire(key)
        try:
            yield
        finally:
            self.release(key, started)

    def accounts(self) -> dict[str, ShareAccount]:
        """Each model's account so far (a model still backlogged counts its time up to now)."""
        with self._condition:
            now = self._clock()
            return {
                key: ShareAccount(
                    planned_share=m.share,
                    device_s=m.device_s,
                    backlogged_s=m.backlogged_s + (now - m.backlog_since if m.backlog_since is not None else 0.0),
                    slices=m.slices,
                )
                for key, m in self._models.items()
            }


def _check_shares(shares: Mapping[str, float]) -> None:
    if not shares:
        raise ValueError("Expected at least one model with a share")
    bad = {k: r for k, r in shares.items() if not (isinstance(r, (int, float)) and 0 <= r <= 1)}
    if bad:
        raise ValueError(f"Expected shares in [0, 1], but got {bad}")
    total = sum(shares.values())
    if total <= 0:
        raise ValueError("Expected at least one share above 0")
    if total > 1 + SHARE_SUM_TOLERANCE:
        raise ValueError(f"Expected shares of one device summing to at most 1, but they sum to {total:.6g}")
