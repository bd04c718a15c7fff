"""Rows for the contract tests: one ``exchange(...)`` and one ``delivery(...)`` builder, plus the
few steps every test repeats (store, claim, record an attempt)."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from gateway.journal.rows import (
    AttemptRecord,
    AttemptRecorded,
    Delivery,
    InboundOutcome,
    InboundRecord,
    NewDelivery,
    NewDocument,
    NewEvent,
    NewExchange,
)

_EXCHANGE_FIELDS = {f.name for f in dataclasses.fields(NewExchange)}
_RECORD_FIELDS = {f.name for f in dataclasses.fields(InboundRecord)} - {"exchange", "deliveries", "documents"}


def delivery(clock: Any = None, *, destination: str = "dmp", kind: str = "document", status: str = "queued",
             patient_key: str | None = "P1", **fields: Any) -> NewDelivery:
    """A delivery: in ``exchange(deliveries=[...])`` its id, exchange and times are filled there;
    with ``clock`` (a ZAM to queue later, with ``exchange_id=``) they are filled now."""
    at = clock.stamp() if clock is not None else ""
    values: dict[str, Any] = dict(id=clock.new_id() if clock is not None else "", exchange_id="",
                                  destination=destination, kind=kind, status=status, next_attempt_at=at,
                                  created_at=at, patient_key=patient_key)
    values.update(fields)
    return NewDelivery(**values)


def exchange(clock: Any, *, status: str = "queued", raw: bytes | None = None, documents: int = 0,
             deliveries: list[NewDelivery] | tuple[NewDelivery, ...] = (), **fields: Any) -> InboundRecord:
    """An inbound record. ``fields`` are :class:`NewExchange` fields or :class:`InboundRecord` ones
    (``dedup``, ``adt``, ``ack``, ``events`` …); times come from ``clock``."""
    at = fields.pop("received_at", None) or clock.stamp()
    ex_id = fields.pop("id", None) or clock.new_id()
    raw = raw if raw is not None else f"MSH|^~\\&|APP|FAC|||{at}||MDM^T02|{ex_id}|P|2.5\r".encode()
    record_fields = {k: fields.pop(k) for k in list(fields) if k in _RECORD_FIELDS}
    unknown = set(fields) - _EXCHANGE_FIELDS
    assert not unknown, f"not an exchange or record field: {unknown}"
    values: dict[str, Any] = dict(
        id=ex_id, received_at=at, listener="mllp", sha256=hashlib.sha256(raw).hexdigest(), size=len(raw),
        status=status, raw=raw, sender_app="APP", sender_facility="FAC", control_id=f"C-{ex_id[:8]}",
        message_type="MDM^T02", version="2.5", charset="UNICODE UTF-8", ack_code="AA",
    )
    if status == "held":
        values.update(reason_code="INS_NOT_QUALIFIED", reason="INS not qualified", held_since=at)
    if status == "rejected":
        values.update(reason_code="PID_MISSING", reason="no PID segment", ack_code="AE")
    values.update(fields)
    docs = [NewDocument(idx=i, unique_id=f"1.2.250.{ex_id[:8]}.{i}", action="submit",
                        cda=f"<ClinicalDocument n='{i}'/>".encode(), xds={"title": f"doc {i}"},
                        fhir={"resourceType": "Bundle"} if i == 1 else None)
            for i in range(1, documents + 1)]
    filled = [dataclasses.replace(d, id=d.id or clock.new_id(), exchange_id=d.exchange_id or ex_id,
                                  next_attempt_at=d.next_attempt_at or at, created_at=d.created_at or at)
              for d in deliveries]
    record_fields.setdefault("events", [NewEvent("received", {"listener": "mllp"})])
    return InboundRecord(exchange=NewExchange(**values), documents=docs, deliveries=filled, **record_fields)


async def store(journal: Any, clock: Any, **kw: Any) -> tuple[InboundRecord, InboundOutcome]:
    record = exchange(clock, **kw)
    return record, await journal.record_inbound(record)


async def claim_one(journal: Any, worker: str = "w1", lease: float = 60) -> Delivery:
    claimed = await journal.claim_due(worker, 10, lease)
    assert len(claimed) == 1, claimed
    return claimed[0]


async def attempt(journal: Any, clock: Any, d: Delivery, status: str = "delivered", *, worker: str | None = None,
                  attempt_no: int | None = None, **fields: Any) -> AttemptRecorded:
    at = clock.stamp()
    outcome = fields.pop("outcome", {"delivered": "delivered", "failed": "failed", "dead": "dead"}[status])
    if status != "delivered":
        fields.setdefault("error", "HTTP_503: unavailable")
    return await journal.record_attempt(AttemptRecord(
        delivery_id=d.id, worker=worker or d.claimed_by or "w1", attempt=d.attempts if attempt_no is None else attempt_no,
        status=status, outcome=outcome, started_at=at, finished_at=at, **fields,  # type: ignore[arg-type]
    ))
