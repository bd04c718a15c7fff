"""Readiness: is the gateway able to take a message right now?

``/readyz`` must turn 503 when nothing can be stored — a full disk, a journal that no
longer commits — so that a load balancer sends senders elsewhere instead of to a
gateway that can only refuse. Two checks, run at most every ``interval`` seconds
(a probe costs one fsync):

* a real commit: the probe row of the journal is rewritten through the writer thread,
  with a timeout (a stuck writer is as bad as a failing one);
* free space on the journal's file system: SQLite can still commit a one-row update
  into pages it already owns on a full disk, while an incoming message needs room, so
  at least ``min_free_bytes`` must be free.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from gateway.journal.base import Journal

__all__ = ["Readiness", "ReadinessReport"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ReadinessReport:
    """The verdict and what each check said (no paths, no secrets: /readyz is open)."""

    ready: bool
    checks: dict[str, Any] = field(default_factory=dict)


class Readiness:
    """Probes the journal and its disk; results are cached for ``interval`` seconds."""

    def __init__(
        self,
        journal: Journal,
        directory: Path | None,
        *,
        min_free_bytes: int,
        interval: float = 5.0,
        timeout: float = 5.0,
        now: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._journal = journal
        self._directory = directory
        self._min_free = min_free_bytes
        self._interval = interval
        self._timeout = timeout
        self._monotonic = monotonic
        self._now = now
        self._last: tuple[float, ReadinessReport] | None = None
        self._lock = asyncio.Lock()

    async def check(self) -> ReadinessReport:
        """The current verdict, probing again when the cached one is older than ``interval``."""
        async with self._lock:  # concurrent /readyz calls share one probe
            if self._last is not None and self._monotonic() - self._last[0] < self._interval:
                return self._last[1]
            report = await self._probe()
            self._last = (self._monotonic(), report)
            if not report.ready:
                log.warning("readiness.not_ready", **report.checks)
            return report

    async def _probe(self) -> ReadinessReport:
        checks: dict[str, Any] = {}
        if self._directory is None:
            checks["disk"] = "ok"  # a journal on a server: its disk is the database's to watch
        else:
            try:
                st = await asyncio.to_thread(os.statvfs, self._directory)
                free = st.f_bavail * st.f_frsize
                checks["disk"] = "ok" if free >= self._min_free else "full"
                checks["disk_free_bytes"] = free
            except OSError as exc:
                checks["disk"] = f"error: {type(exc).__name__}"
        at = self._now().isoformat()
        try:
            async with asyncio.timeout(self._timeout):
                await self._journal.probe(at)
            checks["journal"] = "ok"
        except TimeoutError:
            checks["journal"] = "timeout"
        except Exception as exc:  # JournalError, sqlite3 errors, a closed journal
            checks["journal"] = f"error: {getattr(exc, 'code', None) or type(exc).__name__}"
        return ReadinessReport(checks.get("disk") == "ok" and checks["journal"] == "ok", checks)
