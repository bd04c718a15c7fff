"""Prometheus metrics, one registry per running service (tests start several services).

Also the event-loop lag monitor: one asyncio task that sleeps a fixed interval and
records how late it woke up. Anything that holds the loop (a large document parsed on
it, a blocking call) shows up as oversleep, so the largest one since start is the
longest stall every other connection had to wait through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics", "LoopLagMonitor"]


class Metrics:
    """The gateway's metrics. Gauges that mirror the journal are refreshed before each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "relais_messages_received", "Inbound messages by listener and type", ["listener", "type"], registry=r
        )
        self.acks = Counter("relais_acks", "Acknowledgements sent by MSA-1 code", ["code"], registry=r)
        self.exchanges = Gauge("relais_exchanges", "Exchanges in the journal by status", ["status"], registry=r)
        self.deliveries = Counter(
            "relais_deliveries", "Delivery attempts by destination and outcome", ["destination", "outcome"], registry=r
        )
        self.attempt_seconds = Histogram(
            "relais_delivery_attempt_seconds", "Duration of one delivery attempt", ["destination"], registry=r
        )
        self.queue_depth = Gauge(
            "relais_queue_depth", "Deliveries waiting or in flight per destination", ["destination"], registry=r
        )
        self.held = Gauge("relais_held_documents", "Documents held by the identity gate", registry=r)
        self.pipeline_seconds = Histogram(
            "relais_pipeline_seconds", "Time spent per pipeline stage", ["stage"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.loop_lag_max = Gauge(
            "relais_event_loop_lag_max_seconds",
            "Longest event-loop oversleep since the service was ready (a stall of S reads between S - 10 ms and S)",
            registry=r,
        )

    def observe_delivery(self, destination: str, outcome: str, seconds: float) -> None:
        self.deliveries.labels(destination=destination, outcome=outcome).inc()
        self.attempt_seconds.labels(destination=destination).observe(seconds)

    def refresh(self, by_status: dict[str, int], depth: dict[str, int], destinations: list[str]) -> None:
        for status in ("received", "accepted", "rejected", "held", "queued", "delivered", "dead", "duplicate"):
            self.exchanges.labels(status=status).set(by_status.get(status, 0))
        for name in set(destinations) | set(depth):
            self.queue_depth.labels(destination=name).set(depth.get(name, 0))
        self.held.set(by_status.get("held", 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def sample(self, name: str, labels: dict[str, Any] | None = None) -> float | None:
        return self.registry.get_sample_value(name, labels or {})


class LoopLagMonitor:
    """Measures event-loop stalls as the oversleep of a periodic task; keeps the maximum.

    A stall of S seconds reads between ``S - interval`` and ``S``: the first tick due
    inside the stall wakes when it ends. At the default 10 ms interval that is a hundred
    wake-ups a second: about 1 % of a core on an idle loop of this project's VM (each
    idle wake-up costs ~100 µs, mostly the kernel's timer and epoll path), next to
    nothing under load, when the loop is awake anyway. ``clock`` and ``sleep`` are
    injectable so tests drive it without real time.
    """

    def __init__(
        self,
        on_max: Callable[[float], None],
        *,
        interval: float = 0.01,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = interval
        self.max_lag = 0.0
        self._on_max = on_max
        self._clock = clock
        self._sleep = sleep

    def observe(self, due: float, woke: float) -> None:
        """Record one wake-up at ``woke`` for a tick due at ``due`` (seconds, same clock)."""
        lag = woke - due
        if lag > self.max_lag:
            self.max_lag = lag
            self._on_max(lag)

    async def run(self, ticks: int | None = None) -> None:
        """Tick until cancelled (or ``ticks`` times, for tests)."""
        clock = self._clock or asyncio.get_running_loop().time
        done = 0
        while ticks is None or done < ticks:
            due = clock() + self.interval
            await self._sleep(self.interval)
            self.observe(due, clock())
            done += 1
