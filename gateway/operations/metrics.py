"""Prometheus metrics, one registry per running service (tests start several services).

Also the event-loop lag monitor: one asyncio task that sleeps a fixed interval and
records how late it woke up. Anything that holds the loop (a large document parsed on
it, a blocking call) shows up as oversleep, so the largest one since start is the
longest stall every other connection had to wait through.
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.registry import Collector

from gateway.model import EXCHANGE_STATUSES

__all__ = ["Metrics", "JournalHealth", "LoopLagMonitor"]

#: attempt outcomes that mean the document is at the destination
_SUCCESS = frozenset({"delivered", "found-existing"})
#: outcomes that end a delivery (a retry follows the others)
_FINAL = frozenset({"delivered", "found-existing", "dead"})


@dataclass
class JournalHealth:
    """What the metrics read from the journal at each scrape (one read transaction)."""

    by_status: dict[str, int] = field(default_factory=dict)
    depth: dict[str, int] = field(default_factory=dict)
    oldest_queued: dict[str, float] = field(default_factory=dict)  # destination -> seconds
    oldest_held: float = 0.0
    zam: dict[str, int] = field(default_factory=dict)  # failed|dead -> count


class _JournalCounters(Collector):
    """Commit and commit-failure counts kept by the journal itself, exported as counters."""

    def __init__(self, source: Callable[[], tuple[int, int]]) -> None:
        self._source = source

    def collect(self) -> Iterator[CounterMetricFamily]:
        commits, errors = self._source()
        yield CounterMetricFamily("relais_journal_commits", "Journal commits (each one fsync'd)", value=commits)
        yield CounterMetricFamily(
            "relais_journal_commit_errors", "Journal commits that failed (nothing was acknowledged)", value=errors
        )


def _version() -> str:
    try:
        return version("relais-sante")
    except PackageNotFoundError:  # running from a source tree without an install
        return "unknown"


class BoundedLabels:
    """Label values from input, at most ``limit`` of them: the first ones seen keep their name,
    later ones are counted as ``other`` (a Prometheus series per value costs memory forever)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def label(self, value: str) -> str:
        value = value[:64]  # MSH-3/MSH-4 are short; a long one is not a name
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value


OTHER = "other"


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
        # attempts, not deliveries: one delivery may take many attempts (relais_deliveries_finished counts those)
        self.deliveries = Counter(
            "relais_delivery_attempts", "Delivery attempts by destination and outcome", ["destination", "outcome"],
            registry=r,
        )
        self.attempt_seconds = Histogram(
            "relais_delivery_attempt_seconds", "Duration of one delivery attempt", ["destination"], registry=r
        )
        self.queue_depth = Gauge(
            "relais_queue_depth", "Deliveries waiting or in flight per destination", ["destination"], registry=r
        )
        self.deliveries_by_kind = Counter(
            "relais_deliveries_by_kind", "Delivery attempts by destination kind (dmp-xds, mssante, mllp, zam ...) "
            "and outcome", ["kind", "outcome"], registry=r,
        )
        self.destination_kinds: dict[str, str] = {}  # destination name → kind, set by the service
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

        # labels taken from input: a sender or a type a peer made up must not add series without end
        self.types = BoundedLabels(100)  # PAM-FR alone has some 40 ADT events
        self.senders = BoundedLabels(50)
        self.by_sender = Counter(
            "relais_messages_by_sender", "Inbound messages by sender (MSH-3|MSH-4; past 50 senders: other)",
            ["sender"], registry=r,
        )
        self._add_operations_metrics()

    def _add_operations_metrics(self) -> None:
        """What the shipped alert rules and dashboard read (config/prometheus, config/grafana)."""
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge(
            "relais_build_info", "Always 1; the labels say which Relais runs", ["version", "python"], registry=r
        )
        self.build_info.labels(version=_version(), python=platform.python_version()).set(1)
        self.ready = Gauge("relais_ready", "1 when the gateway accepts and can store messages", registry=r)
        self.finished = Counter(
            "relais_deliveries_finished", "Deliveries that ended, by destination and final status",
            ["destination", "status"], registry=r,
        )
        self.last_success = Gauge(
            "relais_last_success_timestamp_seconds", "When a delivery last reached the destination (Unix time)",
            ["destination"], registry=r,
        )
        self.oldest_queued = Gauge(
            "relais_oldest_queued_seconds", "Age of the oldest delivery not yet done, per destination",
            ["destination"], registry=r,
        )
        self.oldest_held = Gauge(
            "relais_oldest_held_seconds", "Age of the oldest document held by the identity gate", registry=r
        )
        self.zam = Gauge(
            "relais_zam_deliveries", "Business acknowledgements being retried (failed) or given up (dead)",
            ["status"], registry=r,
        )
        self.pruned = Counter(
            "relais_retention_pruned_exchanges", "Exchanges whose bodies retention dropped", registry=r
        )
        self.disk_free = Gauge("relais_disk_free_bytes", "Free bytes on the data directory's filesystem", registry=r)
        self.disk_size = Gauge("relais_disk_size_bytes", "Size of the data directory's filesystem", registry=r)

    def observe_message(self, result: Any, listener: str, seconds: float, *, message_type: str | None = None) -> None:
        """One inbound message: its stages, its type and sender (bounded), its ACK code."""
        self.pipeline_seconds.labels(stage="total").observe(seconds)
        for stage, spent in result.timings.items():
            self.pipeline_seconds.labels(stage=stage).observe(spent)
        summary = result.analysis.summary
        kind = message_type or self.types.label(summary.get("message_type") or "unknown")
        self.received.labels(listener=listener, type=kind).inc()
        sender = f"{summary.get('sender_app') or ''}|{summary.get('sender_facility') or ''}"
        self.by_sender.labels(sender=self.senders.label(sender)).inc()
        if message_type is None:
            self.acks.labels(code=result.ack_code or "none").inc()

    def watch_journal(self, source: Callable[[], tuple[int, int]]) -> None:
        """Export the journal's (commits, commit errors) counters, read at each scrape."""
        self.registry.register(_JournalCounters(source))

    def observe_delivery(self, destination: str, outcome: str, seconds: float) -> None:
        self.deliveries.labels(destination=destination, outcome=outcome).inc()
        self.attempt_seconds.labels(destination=destination).observe(seconds)
        if outcome in _FINAL:
            self.finished.labels(destination=destination, status="dead" if outcome == "dead" else "delivered").inc()
        if outcome in _SUCCESS:
            self.last_success.labels(destination=destination).set(time.time())
        kind = "zam" if destination.startswith("zam:") else self.destination_kinds.get(destination, "other")
        self.deliveries_by_kind.labels(kind=kind, outcome=outcome).inc()

    def refresh(
        self, health: JournalHealth, destinations: list[str], *, ready: bool = True, data_dir: Path | None = None
    ) -> None:
        for status in EXCHANGE_STATUSES:
            self.exchanges.labels(status=status).set(health.by_status.get(status, 0))
        for name in set(destinations) | set(health.depth) | set(health.oldest_queued):
            self.queue_depth.labels(destination=name).set(health.depth.get(name, 0))
            self.oldest_queued.labels(destination=name).set(health.oldest_queued.get(name, 0.0))
        self.held.set(health.by_status.get("held", 0))
        self.oldest_held.set(health.oldest_held)
        for status in ("failed", "dead"):
            self.zam.labels(status=status).set(health.zam.get(status, 0))
        self.ready.set(1 if ready else 0)
        if data_dir is not None:
            try:
                st = os.statvfs(data_dir)
            except OSError:  # the directory went away: say so through readiness, not a failed scrape
                return
            self.disk_free.set(st.f_bavail * st.f_frsize)
            self.disk_size.set(st.f_blocks * st.f_frsize)

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
