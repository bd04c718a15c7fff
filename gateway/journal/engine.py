"""The :class:`~gateway.journal.base.Journal` operations on top of any transactional session.

A backend gives two things: ``_write(fn)`` — run ``fn(session)`` in one durable
transaction and return its result once committed — and ``_read(fn)`` — run it on a
consistent snapshot. Everything else, the operations themselves, is here once, so the
memory, SQLite and PostgreSQL journals cannot drift apart in what an operation means.

The journal's clock (``_now``) is the one leases are measured on: the gateway's clock for
an embedded journal (one machine), the database server's for PostgreSQL, so that instances
whose clocks differ still agree on when a lease has run out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from gateway.journal.migrate import SchemaStatus
from gateway.journal.ops import delivery, ingest
from gateway.journal.ops import operator as operator_ops
from gateway.journal.rows import (
    Attempt,
    AttemptRecord,
    AttemptRecorded,
    AttemptTally,
    AuditEntry,
    BulkResult,
    DeadItem,
    Delivery,
    Document,
    Encounter,
    Event,
    Exchange,
    ExchangeBodies,
    Identity,
    IdentityContext,
    InboundOutcome,
    InboundRecord,
    JournalStats,
    NewDelivery,
    NewEvent,
    OpenWork,
    ZamFollowUp,
    iso,
)
from gateway.journal.session import Session
from gateway.ports import Clock, SystemClock

__all__ = ["SessionJournal", "LARGE_WRITE"]

T = TypeVar("T")

#: raw bodies above this are committed on their own (the backend may give them their own fsync)
LARGE_WRITE = 1024 * 1024


def _maybe(cls: Any, row: Any) -> Any:
    return cls.of(row) if row is not None else None


class SessionJournal:
    """Every journal operation, given ``_write`` / ``_read`` from a backend."""

    backend = "abstract"
    shared = False  # several instances on this journal (claims and leases must hold across them)
    schema: SchemaStatus | None = None
    clock: Clock = SystemClock()

    # -- what a backend provides -------------------------------------------------------------
    async def _write(self, fn: Callable[[Session], T], *, large: bool = False) -> T:
        raise NotImplementedError

    async def _read(self, fn: Callable[[Session], T]) -> T:
        raise NotImplementedError

    def _now(self, s: Session) -> datetime:
        """The clock leases are measured on (see the module docstring)."""
        return self.clock.now()

    @property
    def location(self) -> Path | None:
        return None

    @property
    def can_vacuum(self) -> bool:
        return False

    def stats(self) -> JournalStats:
        return JournalStats(0, 0)

    def on_work(self, wake: Callable[[], None]) -> None:
        """One process: its own intake already wakes its dispatcher, nothing more to hear."""

    # -- lifecycle -----------------------------------------------------------------------------
    async def probe(self, at: str) -> None:
        await self._write(lambda s: s.probe(at))

    # -- ingest -----------------------------------------------------------------------------------
    async def identity_context(self, ipp_key: str | None, ins: str | None) -> IdentityContext:
        return await self._read(lambda s: ingest.identity_context(s, ipp_key, ins))

    async def record_inbound(self, record: InboundRecord) -> InboundOutcome:
        large = len(record.exchange.raw or b"") > LARGE_WRITE
        return await self._write(lambda s: ingest.record_inbound(s, record), large=large)

    async def record_replay(self, original_id: str, new_id: str, *, actor: str, at: str) -> None:
        await self._write(lambda s: ingest.record_replay(s, original_id, new_id, actor, at))

    async def exchange_bodies(self, exchange_id: str) -> ExchangeBodies | None:
        return await self._read(lambda s: _maybe(ExchangeBodies, s.exchange_bodies(exchange_id)))

    async def held_exchanges(self) -> list[Exchange]:
        return await self._read(lambda s: [Exchange.of(r) for r in s.held_exchanges()])

    async def rejudge_hold(
        self, exchange_id: str, *, release: bool, code: str | None, message: str | None, cause: str, at: str
    ) -> str | None:
        return await self._write(lambda s: ingest.rejudge_hold(s, exchange_id, release, code, message, cause, at))

    # -- deliveries -----------------------------------------------------------------------------
    async def claim_due(self, worker: str, limit: int, lease_seconds: float) -> list[Delivery]:
        def op(s: Session) -> list[Delivery]:
            now = self._now(s)
            return delivery.claim_due(s, worker, limit, iso(now), iso(now + timedelta(seconds=lease_seconds)))

        return await self._write(op)

    async def extend_leases(self, worker: str, delivery_ids: Sequence[str], lease_seconds: float) -> int:
        ids = list(delivery_ids)
        if not ids:
            return 0

        def op(s: Session) -> int:
            until = iso(self._now(s) + timedelta(seconds=lease_seconds))
            return s.extend_leases(worker, ids, until)

        return await self._write(op)

    async def recover_in_flight(self, *, expired_only: bool, worker: str | None = None) -> int:
        return await self._write(
            lambda s: s.recover_in_flight(now=iso(self._now(s)), expired_only=expired_only, worker=worker)
        )

    async def requeue_known_destinations(self, names: Sequence[str], *, at: str) -> int:
        return await self._write(lambda s: s.requeue_known_destinations(list(names), at=at))

    async def park_for_unknown_destination(self, d: Delivery, *, at: str) -> None:
        await self._write(lambda s: s.park_for_unknown_destination(d.as_dict(), at=at))

    async def document(self, exchange_id: str, idx: int) -> Document | None:
        return await self._read(lambda s: _maybe(Document, s.get_document(exchange_id, idx)))

    async def record_attempt(self, record: AttemptRecord) -> AttemptRecorded:
        return await self._write(lambda s: delivery.record_attempt(s, record))

    async def expire_hold(self, exchange_id: str, *, reason: str, code: str | None, at: str,
                          zam: NewDelivery | None) -> bool:
        return await self._write(lambda s: delivery.expire_hold(s, exchange_id, reason, code, at, zam))

    async def record_follow_up(self, exchange_id: str, *, at: str, events: Sequence[NewEvent],
                               zams: Sequence[ZamFollowUp] = ()) -> list[str]:
        return await self._write(lambda s: delivery.record_follow_up(s, exchange_id, at, events, zams))

    async def hold_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        def op(s: Session) -> bool:
            now = self._now(s)
            return s.hold_lease(name, holder, iso(now), iso(now + timedelta(seconds=ttl_seconds)))

        return await self._write(op)

    # -- operators ------------------------------------------------------------------------------
    async def release_exchange(self, exchange_id: str, *, operator: str, reason: str, at: str) -> Exchange:
        return await self._write(lambda s: operator_ops.release_exchange(s, exchange_id, operator, reason, at))

    async def release_held(self, *, operator: str, reason: str, at: str, hold_code: str | None = None,
                           ids: Sequence[str] | None = None) -> BulkResult:
        return await self._write(lambda s: operator_ops.release_held(s, operator, reason, at, hold_code, ids))

    async def retry_delivery(self, delivery_id: str, *, operator: str, reason: str, at: str) -> Delivery:
        return await self._write(lambda s: operator_ops.retry_delivery(s, delivery_id, operator, reason, at))

    async def retry_dead(self, *, operator: str, reason: str, at: str, destination: str | None = None,
                         ids: Sequence[str] | None = None) -> BulkResult:
        return await self._write(lambda s: operator_ops.retry_dead(s, operator, reason, at, destination, ids))

    async def reroute(self, source: str, target: str, *, operator: str, reason: str, at: str) -> list[Delivery]:
        return await self._write(lambda s: operator_ops.reroute(s, source, target, operator, reason, at))

    async def append_audit(self, *, at: str, actor: str, action: str, target: str | None,
                           detail: dict[str, Any]) -> str:
        return await self._write(
            lambda s: s.append_audit(at=at, actor=actor, action=action, target=target, detail=detail)
        )

    # -- reads -------------------------------------------------------------------------------------
    async def get_exchange(self, exchange_id: str, *, bodies: bool = False) -> Exchange | None:
        return await self._read(lambda s: _maybe(Exchange, s.get_exchange(exchange_id, bodies=bodies)))

    async def list_exchanges(self, **filters: Any) -> list[Exchange]:
        return await self._read(lambda s: [Exchange.of(r) for r in s.list_exchanges(**filters)])

    async def count_exchanges(self, *, cap: int = 10_000, **filters: Any) -> tuple[int, bool]:
        return await self._read(lambda s: s.count_exchanges(cap=cap, **filters))

    async def count_by_status(self) -> dict[str, int]:
        return await self._read(lambda s: s.count_exchanges_by_status())

    async def exchanges_per_minute(self, since: str) -> dict[str, int]:
        return await self._read(lambda s: s.exchanges_per_minute(since))

    async def events(self, exchange_id: str) -> list[Event]:
        return await self._read(lambda s: [Event.of(r) for r in s.events(exchange_id)])

    async def deliveries_for(self, exchange_id: str) -> list[Delivery]:
        return await self._read(lambda s: [Delivery.of(r) for r in s.deliveries_for(exchange_id)])

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        return await self._read(lambda s: _maybe(Delivery, s.get_delivery(delivery_id)))

    async def attempts_for(self, delivery_id: str, *, bodies: bool = False) -> list[Attempt]:
        return await self._read(lambda s: [Attempt.of(r) for r in s.attempts_for(delivery_id, bodies=bodies)])

    async def documents_for(self, exchange_id: str) -> list[Document]:
        return await self._read(lambda s: [Document.of(r) for r in s.documents_for(exchange_id)])

    async def outbound_by_control_id(self, control_id: str) -> Delivery | None:
        return await self._read(lambda s: _maybe(Delivery, s.outbound_by_control_id(control_id)))

    async def held_worklist(self, limit: int = 20) -> tuple[list[Exchange], int]:
        def op(s: Session) -> tuple[list[Exchange], int]:
            rows, total = s.held_worklist(limit)
            return [Exchange.of(r) for r in rows], total

        return await self._read(op)

    async def dead_worklist(self, limit: int = 20) -> tuple[list[DeadItem], int]:
        def op(s: Session) -> tuple[list[DeadItem], int]:
            rows, total = s.dead_worklist(limit)
            return [DeadItem.of(r) for r in rows], total

        return await self._read(op)

    async def open_work(self) -> list[OpenWork]:
        return await self._read(
            lambda s: [OpenWork(dest, n, oldest) for dest, (n, oldest) in s.open_work().items()]
        )

    async def attempt_tallies_since(self, since: str) -> list[AttemptTally]:
        return await self._read(lambda s: [AttemptTally.of(r) for r in s.attempt_outcomes_since(since)])

    async def last_success_since(self, since: str) -> dict[str, str]:
        return await self._read(lambda s: s.last_success_since(since))

    async def oldest_held_since(self) -> str | None:
        return await self._read(lambda s: s.oldest_held_since())

    async def zam_trouble(self) -> dict[str, int]:
        return await self._read(lambda s: s.zam_trouble())

    async def identities(self) -> list[Identity]:
        return await self._read(lambda s: [Identity.of(r) for r in s.list_identities()])

    async def get_identity(self, ipp_key: str) -> Identity | None:
        return await self._read(lambda s: _maybe(Identity, s.get_identity(ipp_key)))

    async def linked_identities(self, ipp_key: str) -> list[str]:
        return await self._read(lambda s: s.linked_identities(ipp_key))

    async def get_encounter(self, visit_key: str) -> Encounter | None:
        return await self._read(lambda s: _maybe(Encounter, s.get_encounter(visit_key)))

    async def audit_entries(self) -> list[AuditEntry]:
        return await self._read(lambda s: [AuditEntry.of(r) for r in s.audit_rows()])

    # -- retention ---------------------------------------------------------------------------------
    async def prune(self, *, before: str, at: str, limit: int, errors_only: bool = False) -> int:
        return await self._write(lambda s: s.prune_batch(before=before, at=at, limit=limit, errors_only=errors_only))

    async def vacuum(self, pages: int) -> int:
        return await self._write(lambda s: s.incremental_vacuum(pages))

