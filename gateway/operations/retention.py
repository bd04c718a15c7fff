"""Retention: past ``retention.days``, finished exchanges lose their bodies, in small batches.

``serve`` runs :class:`RetentionTask` in the background when ``retention.days`` is set;
``relais prune`` runs the same passes once. Each batch is its own short journal
transaction, so the writer thread interleaves the commits of incoming messages between
batches and an ACK never waits behind a whole retention pass. After the batches,
``PRAGMA incremental_vacuum`` gives the freed pages back to the file system (journals
created by this version have ``auto_vacuum=INCREMENTAL``; an older file is reported,
since switching needs a full ``VACUUM`` — ``relais prune --vacuum``, offline).

What stays: the summaries, events and audit rows (the hash chain needs every row). With
``retention.errors_only`` the exchanges that ended well are deleted entirely, so only
errors keep a summary. Held, queued and dead work is never pruned: it may still be sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from gateway.journal.base import Journal
from gateway.journal.rows import iso
from gateway.operations.periodic import PeriodicTask
from gateway.ports import Clock
from gateway.settings import Settings

__all__ = ["RetentionPolicy", "RetentionTask", "prune_once", "retention_policy"]

log = structlog.get_logger(__name__)

@dataclass(frozen=True)
class RetentionPolicy:
    """How much to keep and how to walk it."""

    older_than: timedelta
    errors_only: bool = False
    batch_size: int = 500
    vacuum_pages: int = 2048  # 8 MiB of 4 KiB pages per vacuum step (about 15 ms of writer time)

    def cutoff(self, now: datetime) -> str:
        return iso(now - self.older_than)


def retention_policy(settings: Settings, older_than: timedelta | None = None) -> RetentionPolicy:
    """The policy the settings describe (``older_than`` overrides ``retention.days``)."""
    r = settings.retention
    return RetentionPolicy(
        older_than=older_than if older_than is not None else timedelta(days=r.days),
        errors_only=r.errors_only, batch_size=max(1, r.batch_size),
    )


def _audit_detail(policy: RetentionPolicy, n: int) -> dict[str, Any]:
    return {"older_than_seconds": policy.older_than.total_seconds(), "exchanges": n,
            "errors_only": policy.errors_only}


async def prune_once(
    journal: Journal, policy: RetentionPolicy, *, now: datetime, actor: str, vacuum: bool, pause: float = 0.0,
    audit_empty: bool = False,
) -> int:
    """One retention pass, in batches; returns the exchanges pruned (one audit row for the pass).

    ``audit_empty``: record the pass even when it pruned nothing (an operator's command is
    an action to account for; the periodic task only audits what it did).
    """
    before, at = policy.cutoff(now), iso(now)
    total = 0
    while True:
        n = await journal.prune(before=before, at=at, limit=policy.batch_size, errors_only=policy.errors_only)
        total += n
        if n < policy.batch_size:
            break
        await asyncio.sleep(pause)  # let the messages that arrived meanwhile commit first
    if total or audit_empty:
        await journal.append_audit(at=at, actor=actor, action="prune", target=None,
                                   detail=_audit_detail(policy, total))
    # vacuum in steps too: one big step would hold the writer (and every ACK) for seconds
    while total and vacuum:
        freed = await journal.vacuum(policy.vacuum_pages)
        if freed < policy.vacuum_pages:
            break
        await asyncio.sleep(pause)
    return total


class RetentionTask(PeriodicTask):
    """Applies the policy every ``interval`` seconds until stopped."""

    failure_event = "retention.failed"

    def __init__(
        self, journal: Journal, policy: RetentionPolicy, clock: Clock, *, interval: float, vacuum: bool,
        on_pruned: Callable[[int], None] | None = None, holder: str = "retention",
    ) -> None:
        super().__init__("retention", interval)
        self._journal = journal
        self._holder = holder
        self.policy = policy
        self._clock = clock
        self._vacuum = vacuum
        self._on_pruned = on_pruned

    async def run_once(self) -> int:
        # several instances on one journal: one of them prunes at a time (a lease, not a lock a pooler can lose)
        if not await self._journal.hold_lease("retention", self._holder, max(self._interval * 2, 60.0)):
            return 0
        n = await prune_once(self._journal, self.policy, now=self._clock.now(), actor="retention",
                             vacuum=self._vacuum, pause=0.01)
        if n:
            log.info("retention.pruned", exchanges=n, errors_only=self.policy.errors_only)
            if self._on_pruned is not None:
                self._on_pruned(n)
        return n
