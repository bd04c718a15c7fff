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
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from gateway.journal.tx import Tx, iso
from gateway.ports import Clock
from gateway.settings import Settings

__all__ = ["RetentionPolicy", "RetentionTask", "prune_once", "prune_once_sync", "retention_policy"]

log = structlog.get_logger(__name__)

Write = Callable[[Callable[[Tx], Any]], Awaitable[Any]]


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


def _batch(policy: RetentionPolicy, before: str, at: str) -> Callable[[Tx], int]:
    def op(tx: Tx) -> int:
        return tx.prune_batch(before=before, at=at, limit=policy.batch_size, errors_only=policy.errors_only)

    return op


def _audit(policy: RetentionPolicy, actor: str, at: str, n: int) -> Callable[[Tx], None]:
    def op(tx: Tx) -> None:
        tx.append_audit(at=at, actor=actor, action="prune", target=None, detail={
            "older_than_seconds": policy.older_than.total_seconds(), "exchanges": n,
            "errors_only": policy.errors_only,
        })

    return op


async def prune_once(
    write: Write, policy: RetentionPolicy, *, now: datetime, actor: str, vacuum: bool, pause: float = 0.0
) -> int:
    """One retention pass through ``write`` (the journal's async write); returns exchanges pruned."""
    before, at = policy.cutoff(now), iso(now)
    total = 0
    while True:
        n = await write(_batch(policy, before, at))
        total += n
        if n < policy.batch_size:
            break
        await asyncio.sleep(pause)  # let the messages that arrived meanwhile commit first
    if total:
        await write(_audit(policy, actor, at, total))
        # vacuum in steps too: one big step would hold the writer (and every ACK) for seconds
        while vacuum:
            freed = await write(lambda tx: tx.incremental_vacuum(policy.vacuum_pages))
            if freed < policy.vacuum_pages:
                break
            await asyncio.sleep(pause)
    return total


def prune_once_sync(
    write: Callable[[Callable[[Tx], Any]], Any], policy: RetentionPolicy, *, now: datetime, actor: str, vacuum: bool
) -> int:
    """:func:`prune_once` for the CLI (a journal's ``write_sync``); one audit row for the pass."""
    before, at = policy.cutoff(now), iso(now)
    total = 0
    while True:
        n = write(_batch(policy, before, at))
        total += n
        if n < policy.batch_size:
            break
    write(_audit(policy, actor, at, total))
    while total and vacuum and write(lambda tx: tx.incremental_vacuum(policy.vacuum_pages)) >= policy.vacuum_pages:
        pass
    return total


class RetentionTask:
    """Applies the policy every ``interval`` seconds until stopped."""

    def __init__(
        self, write: Write, policy: RetentionPolicy, clock: Clock, *, interval: float, vacuum: bool,
        on_pruned: Callable[[int], None] | None = None,
    ) -> None:
        self._write = write
        self.policy = policy
        self._clock = clock
        self._interval = interval
        self._vacuum = vacuum
        self._on_pruned = on_pruned
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> int:
        n = await prune_once(self._write, self.policy, now=self._clock.now(), actor="retention",
                             vacuum=self._vacuum, pause=0.01)
        if n:
            log.info("retention.pruned", exchanges=n, errors_only=self.policy.errors_only)
            if self._on_pruned is not None:
                self._on_pruned(n)
        return n

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed pass is retried at the next interval, never fatal
                log.error("retention.failed", error=type(exc).__name__)
            await asyncio.sleep(self._interval)
