"""The journal port: every operation the gateway asks of its journal, named for what it does.

Each backend — in memory (tests), SQLite (embedded, one instance), PostgreSQL (several
instances on one database) — implements :class:`Journal`. Every write is durable when its
``await`` returns: an ACK or a 202 sent after ``record_inbound`` means the bytes are on disk.
Every operation that changes more than one row runs in one transaction. Rows come back as the
dataclasses of :mod:`gateway.journal.rows`; no caller sees SQL, a connection or a driver row.

Several instances: ``claim_due`` hands a delivery to one instance at a time under a lease
measured on the journal's clock; ``record_attempt`` is fenced by the attempt number the
claim gave (a stalled instance cannot overwrite a newer attempt); work with periodic
duties (hold expiry, lease recovery, retention) runs where ``hold_lease`` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from gateway.journal.migrate import SchemaStatus
from gateway.journal.rows import Attempt as AttemptRow
from gateway.journal.rows import (
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
)

__all__ = ["Journal"]


@runtime_checkable
class Journal(Protocol):
    backend: str  # "memory" | "sqlite" | "postgres"
    shared: bool  # several instances may use this journal at once (PostgreSQL)
    schema: SchemaStatus | None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def location(self) -> Path | None:
        """The directory of an embedded journal (free-space checks); None for a server."""

    @property
    def can_vacuum(self) -> bool:
        """Whether pruned space goes back to the file system while serving."""

    def stats(self) -> JournalStats: ...

    async def close(self) -> None: ...

    async def probe(self, at: str) -> None:
        """Commit a tiny write: proves the journal still takes transactions (readiness)."""

    def on_work(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (from the event loop) when another instance queued deliveries: a hint that
        saves a poll interval, never a guarantee (the dispatcher polls as well)."""

    # -- ingest --------------------------------------------------------------------------------
    async def identity_context(self, ipp_key: str | None, ins: str | None) -> IdentityContext: ...

    async def record_inbound(self, record: InboundRecord) -> InboundOutcome:
        """Record one inbound exchange with its raw bytes, findings, documents, deliveries and
        identity effects, in one durable transaction (see :class:`InboundRecord`)."""

    async def record_replay(self, original_id: str, new_id: str, *, actor: str, at: str) -> None: ...

    async def exchange_bodies(self, exchange_id: str) -> ExchangeBodies | None: ...

    async def held_exchanges(self) -> list[Exchange]: ...

    async def rejudge_hold(
        self, exchange_id: str, *, release: bool, code: str | None, message: str | None, cause: str, at: str
    ) -> str | None:
        """A held exchange judged again: released (``"released"``), held for a new reason
        (``"held"``), or None when it is no longer held with an identity reason."""

    # -- deliveries ------------------------------------------------------------------------------
    async def claim_due(self, worker: str, limit: int, lease_seconds: float) -> list[Delivery]:
        """Up to ``limit`` due deliveries for ``worker``, oldest first, each now ``in_flight`` with
        ``attempts`` incremented (the fencing token) and a lease of ``lease_seconds`` on the
        journal's clock. Per (destination, patient) only the oldest open delivery is ever due, so
        a replacement or a deletion never overtakes the submission it refers to."""

    async def extend_leases(self, worker: str, delivery_ids: Sequence[str], lease_seconds: float) -> int:
        """Heartbeat: push back the lease of in-flight deliveries this worker still holds."""

    async def recover_in_flight(self, *, expired_only: bool, worker: str | None = None) -> int:
        """In-flight deliveries whose outcome is unknown go back to ``failed`` (asked first before
        a resend). At start-up with ``worker``: this worker's own; ``expired_only``: any whose lease ran out."""

    async def requeue_known_destinations(self, names: Sequence[str], *, at: str) -> int: ...

    async def park_for_unknown_destination(self, delivery: Delivery, *, at: str) -> None: ...

    async def document(self, exchange_id: str, idx: int) -> Document | None: ...

    async def record_attempt(self, record: AttemptRecord) -> AttemptRecorded:
        """The outcome of one attempt, its events and audit, the exchange's resulting status and
        the ZAMs it calls for, in one transaction (see :class:`AttemptRecord` for the fencing)."""

    async def expire_hold(self, exchange_id: str, *, reason: str, code: str | None, at: str,
                          zam: NewDelivery | None) -> bool:
        """A hold past its bound: the exchange and its waiting deliveries become dead (with the
        negative ZAM, when one is given and none was queued yet). False if it is no longer held."""

    async def record_follow_up(self, exchange_id: str, *, at: str, events: Sequence[NewEvent],
                               zams: Sequence[ZamFollowUp] = ()) -> list[str]:
        """Events about an exchange (an MSSanté report) and the ZAMs they call for, each rule judged in
        the transaction (a Z02 / Z03 is queued once per mail); returns the ids of the ZAMs queued."""

    async def hold_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take or keep the lease ``name`` for ``holder``; False while another holder's is valid."""

    # -- operators -------------------------------------------------------------------------------
    async def release_exchange(self, exchange_id: str, *, operator: str, reason: str, at: str) -> Exchange: ...

    async def release_held(self, *, operator: str, reason: str, at: str, hold_code: str | None = None,
                           ids: Sequence[str] | None = None) -> BulkResult: ...

    async def retry_delivery(self, delivery_id: str, *, operator: str, reason: str, at: str) -> Delivery: ...

    async def retry_dead(self, *, operator: str, reason: str, at: str, destination: str | None = None,
                         ids: Sequence[str] | None = None) -> BulkResult: ...

    async def reroute(self, source: str, target: str, *, operator: str, reason: str, at: str) -> list[Delivery]: ...

    async def append_audit(self, *, at: str, actor: str, action: str, target: str | None,
                           detail: dict[str, Any]) -> str: ...

    # -- reads -----------------------------------------------------------------------------------
    async def get_exchange(self, exchange_id: str, *, bodies: bool = False) -> Exchange | None:
        """By id, or by a unique prefix of it (what an operator types)."""

    async def list_exchanges(self, **filters: Any) -> list[Exchange]:
        """Newest first; filters: status, message_type, sender, control_id, q, since, until, patient,
        document, control_or_id, before_seq (keyset cursor), limit, offset."""

    async def count_exchanges(self, *, cap: int = 10_000, **filters: Any) -> tuple[int, bool]: ...

    async def count_by_status(self) -> dict[str, int]: ...

    async def exchanges_per_minute(self, since: str) -> dict[str, int]:
        """Exchanges received since ``since`` per minute (``YYYY-MM-DDTHH:MM``): the dashboard's chart."""

    async def events(self, exchange_id: str) -> list[Event]: ...

    async def deliveries_for(self, exchange_id: str) -> list[Delivery]: ...

    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    async def attempts_for(self, delivery_id: str, *, bodies: bool = False) -> list[AttemptRow]: ...

    async def documents_for(self, exchange_id: str) -> list[Document]: ...

    async def outbound_by_control_id(self, control_id: str) -> Delivery | None: ...

    async def held_worklist(self, limit: int = 20) -> tuple[list[Exchange], int]: ...

    async def dead_worklist(self, limit: int = 20) -> tuple[list[DeadItem], int]: ...

    async def open_work(self) -> list[OpenWork]: ...

    async def attempt_tallies_since(self, since: str) -> list[AttemptTally]: ...

    async def last_success_since(self, since: str) -> dict[str, str]: ...

    async def oldest_held_since(self) -> str | None: ...

    async def zam_trouble(self) -> dict[str, int]: ...

    async def identities(self) -> list[Identity]: ...

    async def get_identity(self, ipp_key: str) -> Identity | None: ...

    async def linked_identities(self, ipp_key: str) -> list[str]: ...

    async def get_encounter(self, visit_key: str) -> Encounter | None: ...

    async def audit_entries(self) -> list[AuditEntry]: ...

    # -- retention -------------------------------------------------------------------------------
    async def prune(self, *, before: str, at: str, limit: int, errors_only: bool = False) -> int:
        """Retention for up to ``limit`` finished exchanges received before ``before``; how many."""

    async def vacuum(self, pages: int) -> int:
        """Give up to ``pages`` of pruned space back (embedded journals); pages freed."""
