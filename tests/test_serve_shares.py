"""The step-level share scheduler: each model gets its planned share of one device.

The first tests drive :class:`ShareScheduler` with slices of known length on a fake clock (exact
arithmetic); the last runs two tiny diffusers replicas through :class:`DeviceWorker` on this CPU and
measures the realized shares of real denoising steps.
"""

from __future__ import annotations

import threading
import time

import pytest

from genedge.serve.shares import ShareScheduler


class _FakeClock:
    """A clock that advances only when a slice 'runs' (so tests are exact and fast)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def run(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def _backlogged_run(shares: dict[str, float], slice_s: dict[str, float], slices: int, *, work_conserving: bool):
    """Serve ``slices`` slices in total, every model always backlogged, single-threaded on a fake clock.

    With one caller the scheduler's choice is read from ``_next``: the test plays the device.
    """
    clock = _FakeClock()
    scheduler = ShareScheduler(shares, work_conserving=work_conserving, clock=clock)
    for key in shares:
        scheduler.backlogged(key)
        scheduler._models[key].waiting = True  # every model always has its next slice waiting
    return scheduler, clock, _serve_backlogged(scheduler, clock, slice_s, slices)


def _serve_backlogged(scheduler: ShareScheduler, clock: _FakeClock, slice_s: dict[str, float], slices: int) -> list:
    """Play the device for ``slices`` slices of models whose next slice is always waiting; the order served."""
    order = []
    for _ in range(slices):
        chosen, earliest = scheduler._next(clock())
        if chosen is None:  # reserved: nobody may start yet, the device idles until the first may
            clock.run(earliest - clock())
            chosen, _ = scheduler._next(clock())
        model = scheduler._models[chosen]
        model.waiting = False
        scheduler._running = chosen
        started = clock()
        clock.run(slice_s[chosen])
        scheduler.release(chosen, started)
        model.waiting = True
        order.append(chosen)
    return order


@pytest.mark.parametrize("work_conserving", [False, True])
def test_backlogged_models_split_the_device_by_their_shares(work_conserving: bool) -> None:
    shares = {"big": 0.6, "small": 0.4}
    # Slices of different lengths: a share is of device time, not of slice counts.
    scheduler, clock, _ = _backlogged_run(shares, {"big": 0.030, "small": 0.011}, 3000, work_conserving=work_conserving)
    accounts = scheduler.accounts()
    for key, share in shares.items():
        realized = accounts[key].device_s / clock()
        assert realized == pytest.approx(share, rel=0.01), (key, realized)


def test_reserved_shares_never_exceed_the_plan_and_leave_the_rest_idle() -> None:
    # Shares summing to 0.5: reserved, each model gets its share and the device idles the other half.
    shares = {"a": 0.3, "b": 0.2}
    scheduler, clock, _ = _backlogged_run(shares, {"a": 0.01, "b": 0.01}, 2000, work_conserving=False)
    accounts = scheduler.accounts()
    assert accounts["a"].device_s / clock() == pytest.approx(0.3, rel=0.01)
    assert accounts["b"].device_s / clock() == pytest.approx(0.2, rel=0.01)
    # Work-conserving, the same two models share the whole device 3:2.
    scheduler, clock, _ = _backlogged_run(shares, {"a": 0.01, "b": 0.01}, 2000, work_conserving=True)
    accounts = scheduler.accounts()
    assert accounts["a"].device_s + accounts["b"].device_s == pytest.approx(clock())
    assert accounts["a"].device_s / accounts["b"].device_s == pytest.approx(1.5, rel=0.01)


def test_slices_interleave_smoothly_rather_than_in_runs() -> None:
    _, _, order = _backlogged_run({"a": 0.5, "b": 0.5}, {"a": 0.01, "b": 0.01}, 20, work_conserving=False)
    assert order == ["a", "b"] * 10


def test_a_model_that_waited_behind_a_long_slice_catches_up() -> None:
    # b's slices are 10x a's; a (share 0.5) must still get half the device over time.
    scheduler, clock, _ = _backlogged_run({"a": 0.5, "b": 0.5}, {"a": 0.002, "b": 0.02}, 4000, work_conserving=False)
    assert scheduler.accounts()["a"].device_s / clock() == pytest.approx(0.5, rel=0.02)


def test_invalid_shares_and_misuse_are_refused() -> None:
    with pytest.raises(ValueError, match=r"sum to 1\.2"):
        ShareScheduler({"a": 0.6, "b": 0.6})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ShareScheduler({"a": 1.5})
    with pytest.raises(ValueError, match="at least one share above 0"):
        ShareScheduler({"a": 0.0})
    with pytest.raises(ValueError, match="at least one"):
        ShareScheduler({})
    scheduler = ShareScheduler({"a": 1.0})
    with pytest.raises(RuntimeError, match="without being backlogged"):
        scheduler.acquire("a")
    with pytest.raises(KeyError, match="no share"):
        scheduler.backlogged("zzz")
    with pytest.raises(RuntimeError, match="does not hold"):
        scheduler.release("a", 0.0)


def test_new_shares_hold_from_the_switch_on_and_a_model_at_share_0_is_never_served() -> None:
    """A plan switch on a fake clock: before it a is served alone (b at share 0, though waiting); after it
    the device splits 1:3, measured over the slices after the switch alone."""
    scheduler, clock, order = _backlogged_run({"a": 0.5, "b": 0.0}, {"a": 0.01, "b": 0.01}, 200, work_conserving=False)
    assert set(order) == {"a"}
    assert scheduler.accounts()["a"].device_s / clock() == pytest.approx(0.5, rel=0.01)
    before = {key: account.device_s for key, account in scheduler.accounts().items()}
    switched_at = clock()
    scheduler.set_shares({"a": 0.25, "b": 0.75})
    _serve_backlogged(scheduler, clock, {"a": 0.01, "b": 0.01}, 2000)
    elapsed = clock() - switched_at
    for key, share in {"a": 0.25, "b": 0.75}.items():
        assert (scheduler.accounts()[key].device_s - before[key]) / elapsed == pytest.approx(share, rel=0.02)
    with pytest.raises(ValueError, match="Expected shares for the models"):
        scheduler.set_shares({"a": 1.0})
    with pytest.raises(ValueError, match=r"sum to 1\.5"):
        scheduler.set_shares({"a": 0.75, "b": 0.75})
    alone = ShareScheduler({"a": 1.0, "b": 0.0})
    alone.backlogged("b")
    with pytest.raises(RuntimeError, match="share 0"):
        alone.acquire("b")


def test_threads_on_the_real_clock_get_their_shares() -> None:
    """Two worker threads contending on the real clock (sleeping slices stand in for device work)."""
    shares = {"a": 0.7, "b": 0.3}
    scheduler = ShareScheduler(shares)
    stop = threading.Event()

    def work(key: str) -> None:
        scheduler.backlogged(key)
        while not stop.is_set():
            with scheduler.slice(key):
                time.sleep(0.002)
        scheduler.idle(key)

    threads = [threading.Thread(target=work, args=(key,)) for key in shares]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join()
    accounts = scheduler.accounts()
    # The scheduler's arithmetic is checked exactly on the fake clock above; here the operating system
    # decides when a thread runs, and on a loaded machine a descheduled slice runs long (0.657 for 0.7 seen),
    # so the real clock is held only to its shares' side of an even split.
    for key, share in shares.items():
        assert accounts[key].realized_share == pytest.approx(share, rel=0.15), (key, accounts[key])


@pytest.mark.slow
def test_tiny_replicas_realize_their_planned_step_shares_within_5_percent() -> None:
    """Real denoising steps of two diffusers replicas on this CPU, both always backlogged."""
    pytest.importorskip("diffusers", reason="needs genedge[profile]")
    from genedge.serve.spec import ServedModel
    from genedge.serve.worker import DeviceWorker

    def model(key: str, share: float, steps: int) -> ServedModel:
        return ServedModel(
            key=key,
            spec=key,
            replica=0,
            device=0,
            steps=steps,
            share=share,
            max_batch=1,
            service_s=1.0,
            queue_bound=10_000,
            resolution=64,
            guidance_scale=7.5,
            dtype="float32",
            scheduler=None,
        )

    shares = {"replica:tiny": 0.35, "replica:tiny-xl": 0.65}
    worker = DeviceWorker(
        [model("replica:tiny", shares["replica:tiny"], 4), model("replica:tiny-xl", shares["replica:tiny-xl"], 3)],
        device="cpu",
        threads=1,
    )
    try:
        futures = [worker.submit(key, "a red cube on a wooden table") for _ in range(40) for key in shares]
        # Measure while both are backlogged: stop reading before either queue runs dry.
        while min(s["images"] for s in worker.stats().values()) < 15:
            time.sleep(0.05)
        stats = worker.stats()
    finally:
        worker.close()
    for future in futures:
        assert future.result().png.startswith(b"\x89PNG")
    for key, share in shares.items():
        assert stats[key]["slices"] >= 15 * 5  # enough steps to say it: at least 75 slices each
        assert stats[key]["realized_share"] == pytest.approx(share, rel=0.05), (key, stats[key])
