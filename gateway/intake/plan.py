"""What one inbound exchange leaves in the journal: the rows decided before its transaction.

From the pipeline's :class:`~gateway.core.pipeline.Analysis` and the registry's view of
the patient this builds the :class:`~gateway.journal.rows.InboundRecord`: the exchange row
and its events, the documents, one delivery per (document, destination) and per
(document, mail recipient) — waiting when the identity gate holds them
(:func:`gateway.core.identity.gate.judge`) — the identity to remember, and for PAM-FR the
registry effects (merge, link, re-hold, release) that the journal applies in the same
transaction. Nothing here reads or writes the journal.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.core.identity.gate import GateDecision, judge, traits_of
from gateway.core.mss.orders import MailOrder, mail_orders
from gateway.core.pipeline import Analysis, ipp_key
from gateway.core.routing import Route, choose_route
from gateway.journal.rows import (
    AdtEffects,
    EncounterRecord,
    IdentityContext,
    IdentityRecord,
    InboundRecord,
    NewDelivery,
    NewDocument,
    NewEvent,
    NewExchange,
    iso,
)
from gateway.model import Finding, PatientIdentity
from gateway.ports import Clock

__all__ = ["IntakeResult", "Planner", "Router", "adt_effects", "received_detail"]


@dataclass(frozen=True)
class Router:
    """Which destinations get documents. ADT is never forwarded."""

    document_destinations: tuple[str, ...]
    mail_destination: str | None = None  # the ``mssante`` destination, when one is configured
    routes: tuple[Route, ...] = ()  # [[route]] tables, tried in order

    def route_for(self, an: Analysis) -> Route | None:
        s = an.summary
        flags = dict(an.doc_message.flags) if an.doc_message is not None else {"DESTDMP": an.dmp_bound}
        return choose_route(self.routes, sender_application=s.get("sender_app"),
                            sender_facility=s.get("sender_facility"), http_client=s.get("http_client"),
                            message_type=s.get("message_type"), flags=flags)

    def for_analysis(self, an: Analysis) -> tuple[str, ...]:
        if an.kind in ("document", "cda") and an.dmp_bound:
            route = self.route_for(an)
            return route.destinations if route is not None else self.document_destinations
        return ()


@dataclass
class IntakeResult:
    exchange_id: str
    status: str
    ack_code: str
    analysis: Analysis
    ack: bytes = b""
    duplicate_of: str | None = None
    released: list[str] = field(default_factory=list)
    application_ack_queued: bool = False
    #: seconds spent per stage: ``analyse`` (the pure pipeline), ``journal`` (the durable
    #: transaction), ``ack`` (building the answer) — the ``relais_pipeline_seconds`` histogram
    timings: dict[str, float] = field(default_factory=dict)


def received_detail(size: int, tls_subject: str | None) -> dict[str, Any]:
    """The "received" event detail: who sent it is part of the trace (mutual TLS subject)."""
    detail: dict[str, Any] = {"size": size}
    if tls_subject:
        detail["tls_subject"] = tls_subject
    return detail


class Planner:
    """Builds the inbound record of one analysed exchange (ids from ``clock``)."""

    def __init__(self, clock: Clock, router: Router) -> None:
        self.clock = clock
        self.router = router

    def plan(
        self, exchange_id: str, raw: bytes, an: Analysis, peer: str | None, listener: str, now: datetime,
        ctx: IdentityContext, *, dedup: bool, tls_subject: str | None,
    ) -> tuple[InboundRecord, IntakeResult]:
        at = iso(now)
        sha = hashlib.sha256(raw).hexdigest()
        s = an.summary
        ex = NewExchange(
            id=exchange_id, received_at=at, listener=listener, peer=peer, raw=raw, sha256=sha, size=len(raw),
            status="received", sender_app=s.get("sender_app"), sender_facility=s.get("sender_facility"),
            control_id=s.get("control_id"), message_type=s.get("message_type"), version=s.get("version"),
            charset=s.get("charset"),
        )
        if an.kind == "ack":
            ex.findings = an.findings_json()
            record = InboundRecord(ex, events=[NewEvent("received", {"listener": listener, "size": len(raw)})],
                                   ack=True, acknowledges=an.acknowledges, acknowledgement_code=an.acknowledgement)
            return record, IntakeResult(exchange_id, "recorded", "", an)
        record = InboundRecord(
            ex, dedup=dedup and listener != "http-cda" and bool(s.get("control_id")),
            duplicate_events=[NewEvent("received", {"listener": listener, **received_detail(len(raw), tls_subject)})],
        )
        first_doc = an.documents[0] if an.documents else None
        ident = an.identity
        ex.ack_code, ex.findings = an.ack_code, an.findings_json()
        ex.patient_ins, ex.patient_ipp = ident.ins, ident.ipp_key
        ex.document_id = first_doc.unique_id if first_doc else None
        ex.dmp_bound, ex.ack_reception = int(an.dmp_bound), int(an.ack_reception)
        record.events.append(
            NewEvent("received", {"listener": listener, **received_detail(len(raw), tls_subject), "sha256": sha}))
        result = IntakeResult(exchange_id, "received", an.ack_code, an)
        if an.ack_code != "AA":
            reason = an.errors[0] if an.errors else Finding("REJECTED", "rejected", None)
            ex.status, ex.reason_code, ex.reason = "rejected", reason.code, reason.message
            record.events.append(NewEvent("rejected", {"errors": [f.as_dict() for f in an.errors]}))
            result.status = "rejected"
        else:
            self._accepted(record, an, result, at, ctx)
        return record, result

    def _accepted(self, record: InboundRecord, an: Analysis, result: IntakeResult, at: str,
                  ctx: IdentityContext) -> None:
        ex = record.exchange
        record.events.append(NewEvent("parsed", {"kind": an.kind, "warnings": len(an.warnings)}))
        if an.kind == "adt":
            ex.status = result.status = "accepted"
            record.adt = adt_effects(record, an, at)
            return
        _content_type_from_encounter(record, an, ctx)
        record.documents = [NewDocument(d.index, d.unique_id, d.action, d.cda, d.xds, d.fhir) for d in an.documents]
        record.events.append(NewEvent("normalised", {"documents": [d.unique_id for d in an.documents]}))
        destinations = self.router.for_analysis(an)
        route = self.router.route_for(an) if an.dmp_bound else None
        if route is not None:
            record.events.append(NewEvent("routed", {"route": route.name, "destinations": list(route.destinations)}))
        mail = self._mail_orders(record, an)
        if not destinations and not mail:
            ex.status = result.status = "accepted"
            return
        self._deliveries(record, an, result, at, ctx, destinations, mail)
        ident = an.identity
        if ident.ipp_key and an.patient is not None:
            record.remember_identity = IdentityRecord(
                ipp_key=ident.ipp_key, ins=ident.ins, ins_oid=ident.ins_oid, traits=traits_of(an.patient),
                status="~".join(an.patient.status), qualified=ident.qualified, updated_at=at,
            )

    def _deliveries(self, record: InboundRecord, an: Analysis, result: IntakeResult, at: str,
                    ctx: IdentityContext, destinations: tuple[str, ...], mail: list[MailOrder]) -> None:
        """One delivery per (document, destination) and per (document, recipient), held or queued."""
        ex = record.exchange
        ident = an.identity
        # Patient-bound mail goes to an address derived from the INS: gated like the DMP.
        gated = bool(destinations) or any(o.audience == "patient" for o in mail)
        decision = judge(ctx, ident, an.patient or PatientIdentity()) if gated else GateDecision()
        hold = decision.hold
        record.events.append(NewEvent("identity", {"qualified": ident.qualified, "hold": hold.code if hold else None}))
        patient_key = ident.ipp_key or ident.ins or ex.id
        for doc in an.documents:
            for dest in destinations:
                record.deliveries.append(NewDelivery(
                    id=self.clock.new_id(), exchange_id=ex.id, destination=dest, kind="document",
                    status="waiting" if hold else "queued", next_attempt_at=at, patient_key=patient_key,
                    unique_id=doc.unique_id, doc_index=doc.index, action=doc.action, created_at=at,
                ))
            for order in mail:  # one delivery per (document, recipient): its own Message-ID and reports
                record.deliveries.append(NewDelivery(
                    id=self.clock.new_id(), exchange_id=ex.id, destination=str(self.router.mail_destination),
                    kind="mail", status="waiting" if hold and order.audience == "patient" else "queued",
                    next_attempt_at=at, patient_key=f"{patient_key}|{order.recipient.lower()}",
                    unique_id=doc.unique_id, doc_index=doc.index, action=doc.action,
                    payload=order.to_json(), created_at=at,
                ))
        if hold:
            ex.status, ex.reason_code, ex.reason, ex.held_since = "held", hold.code, hold.message, at
            record.events.append(NewEvent("held", hold.as_dict()))
            result.status = "held"
            record.hold_unless_qualified = decision.unless_qualified  # an ADT may qualify it before we commit
        else:
            ex.status = result.status = "queued"
            record.events.append(NewEvent("queued", {"destinations": list(destinations) + (
                [f"{self.router.mail_destination} x{len(mail)}"] if mail else [])}))

    def _mail_orders(self, record: InboundRecord, an: Analysis) -> list[MailOrder]:
        """MSSanté mails this document message asks for (DESTMSSANTEPS / DESTMSSANTEPAT)."""
        dm = an.doc_message
        if self.router.mail_destination is None or dm is None or an.kind != "document":
            return []
        if not (dm.flags.get("DESTMSSANTEPS") or dm.flags.get("DESTMSSANTEPAT")):
            return []
        if dm.action == "delete":
            record.events.append(NewEvent("mss:skipped", {"reason": "a deletion is not mailed"}))
            return []
        orders, findings = mail_orders(dm, an.identity.ins)
        record.events.append(NewEvent("mss:orders", {
            "recipients": len(orders), "patient": any(o.audience == "patient" for o in orders),
            "warnings": [f.code for f in findings],
        }))
        return orders


def adt_effects(record: InboundRecord, an: Analysis, at: str) -> AdtEffects | None:
    """The PAM-FR registry effects of an ADT: the journal applies them in the same transaction."""
    event = an.adt
    assert event is not None and an.patient is not None
    ident = an.identity
    key = ident.ipp_key or (f"ins:{ident.ins}" if ident.ins else None)
    if key is None:
        record.events.append(NewEvent("identity", {"registry": "no IPP nor INS: nothing to record"}))
        return None
    trigger = event.trigger
    merged: tuple[str, ...] = ()
    if trigger == "A40":
        merged = tuple(k for k in (ipp_key(old) for old in event.merged_identifiers) if k and k != key)
    removed_ins = event.removed_ins.value if trigger == "A47" and event.removed_ins is not None else None
    qualified = ident.qualified and trigger != "A47"
    link_to = unlink_from = None
    other = event.other_patient if trigger in ("A24", "A37") else None
    if other is not None:  # A24 links the two patients of the message; A37, its cancellation, unlinks
        other_key = ipp_key(other.ipp) or (f"ins:{other.ins.value}" if other.ins else None)
        if other_key is not None and other_key != key:
            link_to, unlink_from = (other_key, None) if trigger == "A24" else (None, other_key)
    encounter = detail = None
    if event.is_encounter:  # PV1-2 as the ITI-31 events leave it feeds the DMP contentTypeCode
        visit_key = event.visit_number or f"patient:{key}"
        cancelled = trigger in ("A11", "A38", "A27")  # admission / pre-admission / pending admission undone
        encounter = EncounterRecord(visit_key, key, event.patient_class, trigger, cancelled)
        detail = {"visit": visit_key, "class": event.patient_class, "trigger": trigger}
        if event.cancels:
            detail["cancels"] = event.cancels
    return AdtEffects(
        key=key, trigger=trigger, merged_keys=merged,
        identity=IdentityRecord(key, ident.ins, ident.ins_oid, traits_of(an.patient),
                                "~".join(an.patient.status), qualified, at),
        rehold=trigger == "A47" or (trigger != "A40" and not qualified and bool(removed_ins)),
        rehold_ins=removed_ins or ident.ins, link_to=link_to, unlink_from=unlink_from,
        encounter=encounter, encounter_detail=detail,
        # every PAM-FR event carries the current identity in PID (a transfer as much as an
        # admission): a qualified one releases what waited for it. A47 never does.
        release=qualified, release_ins=ident.ins,
    )


def _content_type_from_encounter(record: InboundRecord, an: Analysis, ctx: IdentityContext) -> None:
    """A document message without PV1-2 takes the patient class of the encounter PAM-FR left.

    The volet maps PV1-2 to the submission-set contentTypeCode (mapping page: I→03,
    O→07, R→19, N→97, E→07); an ORU may omit PV1 (PATIENT_VISIT is RE), and then the
    hospital's ADT feed still knows where the patient is.
    """
    dm = an.doc_message
    encounter = ctx.encounter
    if dm is None or dm.patient_class or not an.identity.ipp_key or encounter is None:
        return
    if not encounter.patient_class:
        return
    from gateway.core.fhir.actors import codeable
    from gateway.core.fhir.pdsm import DESIGNATION_TYPE_URL
    from gateway.core.terminology import content_type_for_patient_class

    content_type = content_type_for_patient_class(encounter.patient_class)
    for doc in an.documents:
        doc.xds["submissionSet"] = {**doc.xds["submissionSet"], "contentTypeCode": content_type}
        for entry in (doc.fhir or {}).get("entry", []):
            resource = entry.get("resource") or {}
            for ext in resource.get("extension") or [] if resource.get("resourceType") == "List" else []:
                if ext.get("url") == DESIGNATION_TYPE_URL:
                    ext["valueCodeableConcept"] = codeable(content_type)
    record.events.append(NewEvent("encounter", {"contentTypeCode": content_type["code"],
                                                "from": encounter.exchange_id}))
