"""The event-loop lag monitor, driven by a fake clock (no real time passes)."""

from __future__ import annotations

from gateway.operations.metrics import LoopLagMonitor, Metrics


class _StallingClock:
    """A clock whose sleeps last the interval plus a scripted stall per tick."""

    def __init__(self, stalls: list[float]) -> None:
        self.now = 100.0
        self._stalls = iter(stalls)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds + next(self._stalls)


async def test_the_gauge_holds_the_longest_oversleep_seen() -> None:
    metrics = Metrics()
    clock = _StallingClock([0.0, 0.004, 0.250, 0.0, 0.030])
    monitor = LoopLagMonitor(metrics.loop_lag_max.set, interval=0.01, clock=clock, sleep=clock.sleep)
    await monitor.run(ticks=5)
    assert abs(monitor.max_lag - 0.250) < 1e-9
    assert abs((metrics.sample("relais_event_loop_lag_max_seconds") or 0.0) - 0.250) < 1e-9
    assert b"relais_event_loop_lag_max_seconds 0.25" in metrics.render()


async def test_no_stall_reads_zero() -> None:
    seen: list[float] = []
    clock = _StallingClock([0.0] * 3)
    monitor = LoopLagMonitor(seen.append, interval=0.01, clock=clock, sleep=clock.sleep)
    await monitor.run(ticks=3)
    assert monitor.max_lag == 0.0 and seen == []


def test_early_wake_is_not_negative_lag() -> None:
    monitor = LoopLagMonitor(lambda _v: None)
    monitor.observe(due=10.0, woke=9.999)
    assert monitor.max_lag == 0.0
