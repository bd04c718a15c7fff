"""What the journal hands back and what it is asked to record: typed rows, never driver rows.

Every backend returns these dataclasses whatever its driver gives (``sqlite3.Row``, a
PostgreSQL record, a dict in memory). Item access (``row["status"]``) is kept beside
the attributes for the two places that shape rows generically — HTML templates and JSON
answers — and ``as_dict`` gives the JSON shape.

Times are ISO 8601 strings in UTC with microseconds (``iso``): they sort like the
instants they name on every backend, and they are what the API and the CLI print.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Self

__all__ = [
    "iso",
    "Row",
    "Exchange",
    "ExchangeBodies",
    "Delivery",
    "DeadItem",
    "Attempt",
    "Document",
    "Event",
    "Identity",
    "Encounter",
    "AuditEntry",
    "OpenWork",
    "AttemptTally",
    "IdentityContext",
    "NewExchange",
    "NewDocument",
    "NewDelivery",
    "NewEvent",
    "IdentityRecord",
    "EncounterRecord",
    "AdtEffects",
    "InboundRecord",
    "InboundOutcome",
    "ZamFollowUp",
    "AttemptRecord",
    "AttemptRecorded",
    "BulkResult",
    "JournalStats",
]


def iso(dt: datetime) -> str:
    """The journal's time format: ISO 8601 with microseconds, so strings sort like instants."""
    return dt.isoformat(timespec="microseconds")


class Row:
    """Base of the rows read from the journal."""

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Self:
        """A row from a column mapping; columns this row does not have are ignored, missing ones are None."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in values.items() if k in names})


# -- rows read -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exchange(Row):
    id: str
    seq: int | None = None
    received_at: str | None = None
    listener: str | None = None
    peer: str | None = None
    sha256: str | None = None
    size: int | None = None
    sender_app: str | None = None
    sender_facility: str | None = None
    control_id: str | None = None
    message_type: str | None = None
    version: str | None = None
    charset: str | None = None
    status: str | None = None
    reason_code: str | None = None
    reason: str | None = None
    ack_code: str | None = None
    duplicate_of: str | None = None
    document_id: str | None = None
    dmp_bound: int | None = None
    ack_reception: int | None = None
    held_since: str | None = None
    pruned_at: str | None = None
    updated_at: str | None = None
    findings: dict[str, Any] | None = None
    patient_ins: str | None = None
    patient_ipp: str | None = None
    raw: bytes | None = None  # only when asked for bodies


@dataclass(frozen=True)
class ExchangeBodies(Row):
    """The raw bytes of an exchange with its first document's CDA, Bundle and XDS metadata."""

    raw: bytes | None
    listener: str | None
    document: bytes | None = None
    fhir: dict[str, Any] | None = None
    xds: dict[str, Any] | None = None


@dataclass(frozen=True)
class Delivery(Row):
    id: str
    exchange_id: str | None = None
    destination: str | None = None
    kind: str | None = None  # document | mail | hl7 | zam | ack
    status: str | None = None
    attempts: int = 0
    seq: int | None = None
    next_attempt_at: str | None = None
    claimed_by: str | None = None
    lease_until: str | None = None
    last_error: str | None = None
    patient_key: str | None = None
    unique_id: str | None = None
    doc_index: int | None = None
    action: str | None = None
    payload: bytes | None = None
    created_at: str | None = None
    updated_at: str | None = None


@dataclass(frozen=True)
class DeadItem(Row):
    """A dead delivery with what an operator needs to recognise its exchange."""

    id: str
    exchange_id: str
    destination: str
    kind: str
    attempts: int
    last_error: str | None
    updated_at: str
    control_id: str | None = None
    message_type: str | None = None


@dataclass(frozen=True)
class Attempt(Row):
    id: int
    delivery_id: str
    number: int
    started_at: str
    finished_at: str | None = None
    outcome: str | None = None
    error: str | None = None
    duration: float | None = None
    request: str | None = None  # only when asked for bodies
    response: str | None = None


@dataclass(frozen=True)
class Document(Row):
    exchange_id: str
    idx: int
    unique_id: str
    action: str
    cda: bytes | None = None
    xds: dict[str, Any] | None = None
    fhir: dict[str, Any] | None = None


@dataclass(frozen=True)
class Event(Row):
    at: str
    stage: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Identity(Row):
    ipp_key: str
    ins: str | None = None
    ins_oid: str | None = None
    traits: dict[str, Any] = field(default_factory=dict)
    status: str | None = None
    qualified: int = 0
    merged_into: str | None = None
    updated_at: str | None = None


@dataclass(frozen=True)
class Encounter(Row):
    visit_key: str
    ipp_key: str | None
    patient_class: str | None
    trigger: str
    cancelled: int
    updated_at: str
    exchange_id: str


@dataclass(frozen=True)
class AuditEntry(Row):
    seq: int
    at: str
    actor: str
    action: str
    target: str | None
    detail: str | None
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class OpenWork(Row):
    """Per destination: deliveries not done yet, and when the oldest of them was created."""

    destination: str
    count: int
    oldest: str


@dataclass(frozen=True)
class AttemptTally(Row):
    """Attempts finished in one minute to one destination with one outcome."""

    destination: str
    outcome: str
    minute: str
    finished_at: str
    n: int


@dataclass(frozen=True)
class IdentityContext:
    """What the identity gate reads before judging a document: the registry's view of its patient."""

    by_ipp: Identity | None = None
    with_ins: tuple[Identity, ...] = ()
    encounter: Encounter | None = None  # the patient's current encounter (PAM-FR), for PV1-less documents


# -- rows written --------------------------------------------------------------------------------
@dataclass
class NewExchange:
    id: str
    received_at: str
    listener: str
    sha256: str
    size: int
    status: str
    raw: bytes | None = None
    peer: str | None = None
    sender_app: str | None = None
    sender_facility: str | None = None
    control_id: str | None = None
    message_type: str | None = None
    version: str | None = None
    charset: str | None = None
    reason_code: str | None = None
    reason: str | None = None
    ack_code: str | None = None
    duplicate_of: str | None = None
    patient_ins: str | None = None
    patient_ipp: str | None = None
    document_id: str | None = None
    dmp_bound: int = 0
    ack_reception: int = 0
    held_since: str | None = None
    findings: dict[str, Any] | None = None


@dataclass(frozen=True)
class NewDocument:
    idx: int
    unique_id: str
    action: str
    cda: bytes
    xds: dict[str, Any]
    fhir: dict[str, Any] | None = None


@dataclass(frozen=True)
class NewDelivery:
    id: str
    exchange_id: str
    destination: str
    kind: str
    status: str
    next_attempt_at: str
    created_at: str
    patient_key: str | None = None
    unique_id: str | None = None
    doc_index: int | None = None
    action: str | None = None
    payload: bytes | None = None


@dataclass(frozen=True)
class NewEvent:
    stage: str
    detail: dict[str, Any] = field(default_factory=dict)
    exchange_id: str | None = None  # None: the exchange the operation is about


@dataclass(frozen=True)
class IdentityRecord:
    ipp_key: str
    ins: str | None
    ins_oid: str | None
    traits: dict[str, Any]
    status: str
    qualified: bool
    updated_at: str


@dataclass(frozen=True)
class EncounterRecord:
    visit_key: str
    ipp_key: str
    patient_class: str | None
    trigger: str
    cancelled: bool


@dataclass(frozen=True)
class AdtEffects:
    """What one PAM-FR event does to the registry and to the work waiting on its patient.

    The journal applies them in one transaction with the exchange, in this order: merges
    (A40: old records point at the survivor, their open work is re-keyed), the identity
    itself, re-holds (A47, or an INS removed), links (A24/A37), the encounter, and last the
    release of what waited for this identity when it is qualified.
    """

    key: str  # the patient's registry key (IPP, or ins:<INS>)
    identity: IdentityRecord
    trigger: str
    merged_keys: tuple[str, ...] = ()
    rehold_ins: str | None = None  # set: queued documents of this patient go back on hold
    rehold: bool = False
    link_to: str | None = None  # A24
    unlink_from: str | None = None  # A37
    encounter: EncounterRecord | None = None
    encounter_detail: dict[str, Any] | None = None
    release: bool = False  # qualified: held INS_NOT_QUALIFIED documents of this patient are released
    release_ins: str | None = None  # … those whose INS is this one (None: those without an INS)


@dataclass
class InboundRecord:
    """One inbound exchange and everything it causes, recorded atomically by ``record_inbound``.

    ``dedup``: when set and an earlier exchange has the same (sender application, sender
    facility, control id, SHA-256), the journal records this one as a ``duplicate`` of it
    instead (with its received events only) and reports the original's ACK code; the
    documents, deliveries and effects are then not recorded. ``hold_unless_qualified``: the
    exchange was held ``INS_NOT_QUALIFIED`` on what the registry said when it was judged; if,
    inside the transaction, the registry now holds that INS as qualified (an ADT committed
    meanwhile, possibly by another instance), it is queued instead.
    """

    exchange: NewExchange
    events: list[NewEvent] = field(default_factory=list)
    documents: list[NewDocument] = field(default_factory=list)
    deliveries: list[NewDelivery] = field(default_factory=list)
    dedup: bool = False
    duplicate_events: list[NewEvent] = field(default_factory=list)  # recorded instead, on a duplicate
    adt: AdtEffects | None = None
    remember_identity: IdentityRecord | None = None  # recorded unless the registry already knows the IPP
    ack: bool = False  # an inbound ACK: recorded and matched, nothing else
    acknowledges: str | None = None  # its MSA-2: the MSH-10 of the ZAM / application ACK it answers
    acknowledgement_code: str | None = None
    hold_unless_qualified: str | None = None  # the INS whose qualification would lift the hold


@dataclass(frozen=True)
class InboundOutcome:
    exchange_id: str
    status: str
    ack_code: str | None
    duplicate_of: str | None = None
    released: tuple[str, ...] = ()  # exchanges this ADT released


@dataclass(frozen=True)
class ZamFollowUp:
    """A business acknowledgement to queue with an outcome, if its rule still holds in the transaction.

    * ``z01``: the DMP receipt, one per exchange — positive only once every DMP document
      delivery of the exchange (``dmp_destinations``) is delivered, negative at the first dead one;
    * ``once``: one per ``delivery.unique_id`` (the MSSanté Z02 / Z03 of one mail).
    """

    delivery: NewDelivery
    rule: Literal["z01", "once"]
    positive: bool
    dmp_destinations: frozenset[str] = frozenset()
    event: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttemptRecord:
    """The outcome of one claimed attempt. ``worker`` and ``attempt`` fence it: if the delivery
    is no longer this worker's attempt ``attempt`` (its lease expired and another instance took
    it), nothing is written and ``record_attempt`` raises ``JournalError(JOURNAL_STALE_CLAIM)``."""

    delivery_id: str
    worker: str
    attempt: int
    status: Literal["delivered", "failed", "dead"]
    outcome: str  # delivered | found-existing | failed | dead | crashed
    started_at: str
    finished_at: str
    next_attempt_at: str | None = None
    error: str | None = None
    request: str | None = None
    response: str | None = None
    duration: float = 0.0
    audit: bool = False  # a document submission: also recorded in the audit trail
    follow_ups: tuple[ZamFollowUp, ...] = ()


@dataclass(frozen=True)
class AttemptRecorded:
    status: str  # what the delivery became (``failed`` may have become ``waiting``: its exchange is held)
    exchange_status: str | None
    zams: tuple[str, ...] = ()  # ids of the ZAM deliveries queued


@dataclass(frozen=True)
class BulkResult:
    done: tuple[str, ...]
    refused: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class JournalStats:
    commits: int  # transactions made durable
    commit_errors: int  # transactions that failed to commit (their callers got a JournalError)
