"""Webhook notifier: the alert rules' conditions, for a site without Prometheus' Alertmanager.

Every ``notify.interval_seconds`` the same conditions as ``config/prometheus/relais-rules.yml``
are judged from the journal and the service — not ready, a destination failing, the oldest
queued delivery or held document too old, a ZAM being retried or given up, journal commit
errors, the disk almost full — and each change of state (``firing`` / ``resolved``) is POSTed
as JSON to ``notify.webhook_url``. Several instances on one journal: one of them notifies at a
time (a lease). A call that fails is tried again at the next tick; no patient data is sent,
only destination names, counts and ages.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from gateway.journal.base import Journal
from gateway.journal.rows import iso
from gateway.operations.health import DestinationHealth, destination_health
from gateway.operations.periodic import PeriodicTask
from gateway.settings import NotifySettings

__all__ = ["Notifier", "Condition", "judge"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Condition:
    key: str  # "destination_failing:dmp" — what fires and resolves
    summary: str
    labels: dict[str, Any]


async def judge(journal: Journal, cfg: NotifySettings, *, now: datetime, kinds: dict[str, str], ready: bool,
                commit_errors_grew: bool) -> dict[str, Condition]:
    """The conditions that hold now, by key."""
    found: list[Condition] = []
    if not ready:
        found.append(Condition("not_ready", "the gateway cannot take messages (journal or disk)", {}))
    found += _destination_conditions(await destination_health(journal, now=now, kinds=kinds), cfg)
    held = await journal.oldest_held_since()
    if held is not None and (now - datetime.fromisoformat(held)).total_seconds() > cfg.held_max_seconds:
        found.append(Condition("held_too_long", "a document has been held by the identity gate too long",
                               {"since": held}))
    found += _zam_conditions(await journal.zam_trouble())
    if commit_errors_grew:
        found.append(Condition("journal_commit_errors", "journal commits failed since the last check", {}))
    found += _disk_conditions(journal.location, cfg)
    return {c.key: c for c in found}


def _destination_conditions(health: list[DestinationHealth], cfg: NotifySettings) -> list[Condition]:
    out = []
    for d in health:
        if d.state == "failing":
            out.append(Condition(f"destination_failing:{d.name}", f"destination {d.name} is failing",
                                 {"destination": d.name, "failure_rate_5m": d.failure_rate_5m,
                                  "queue_depth": d.queue_depth}))
        waited = d.oldest_queued_seconds
        if waited is not None and waited > cfg.queued_max_seconds:
            out.append(Condition(f"oldest_queued:{d.name}", f"the oldest delivery to {d.name} waits for {waited:.0f} s",
                                 {"destination": d.name, "seconds": waited}))
    return out


def _zam_conditions(zam: Mapping[str, int]) -> list[Condition]:
    out = []
    if zam.get("failed"):
        out.append(Condition("zam_failing", f"{zam['failed']} business acknowledgement(s) being retried",
                             {"count": zam["failed"]}))
    if zam.get("dead"):
        out.append(Condition("zam_given_up", f"{zam['dead']} business acknowledgement(s) given up",
                             {"count": zam["dead"]}))
    return out


def _disk_conditions(location: Path | None, cfg: NotifySettings) -> list[Condition]:
    if location is None:
        return []
    usage = shutil.disk_usage(location)
    if usage.total and usage.free / usage.total < cfg.disk_min_free_ratio:
        return [Condition("disk_almost_full", "the journal's disk is almost full",
                          {"free_ratio": round(usage.free / usage.total, 3)})]
    return []


class Notifier(PeriodicTask):
    failure_event = "notify.tick_failed"

    def __init__(self, cfg: NotifySettings, journal: Journal, *, holder: str, now: Callable[[], datetime],
                 kinds: Callable[[], dict[str, str]], ready: Callable[[], Awaitable[bool]]) -> None:
        super().__init__("notifier", cfg.interval_seconds)
        self.cfg = cfg
        self.journal = journal
        self.holder = holder
        self._now = now
        self._kinds = kinds
        self._ready = ready
        self._firing: dict[str, Condition] = {}
        self._unsent: list[dict[str, Any]] = []
        self._commit_errors = journal.stats().commit_errors
        self.sent = 0

    async def run_once(self) -> None:
        await self.tick()

    async def tick(self) -> None:
        """Judge the conditions once and send what changed (and what an earlier tick could not send)."""
        if not await self.journal.hold_lease("notifier", self.holder, max(self.cfg.interval_seconds * 3, 10.0)):
            return
        errors = self.journal.stats().commit_errors
        now = self._now()
        current = await judge(self.journal, self.cfg, now=now, kinds=self._kinds(), ready=await self._ready(),
                              commit_errors_grew=errors > self._commit_errors)
        self._commit_errors = errors
        for key in current.keys() - self._firing.keys():
            self._unsent.append(self._event(current[key], "firing", now))
        for key in self._firing.keys() - current.keys():
            self._unsent.append(self._event(self._firing[key], "resolved", now))
        self._firing = current
        await self._flush()

    def _event(self, c: Condition, state: str, now: datetime) -> dict[str, Any]:
        return {"source": "relais", "instance": socket.gethostname(), "condition": c.key.split(":")[0],
                "key": c.key, "state": state, "summary": c.summary, "labels": c.labels, "at": iso(now)}

    async def _flush(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while self._unsent:
                event = self._unsent[0]
                try:
                    async with http.post(self.cfg.webhook_url, json=event) as r:
                        if r.status >= 300:
                            raise aiohttp.ClientResponseError(r.request_info, (), status=r.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("notify.failed", condition=event["key"], error=type(exc).__name__)
                    del self._unsent[:-100]  # a webhook down for days keeps the latest 100, not all
                    return
                self._unsent.pop(0)
                self.sent += 1
                log.info("notify.sent", condition=event["key"], state=event["state"])
