"""Intake: what happens to an inbound message between the socket and the ACK.

1. the pure pipeline analyses the bytes (``gateway.core.pipeline``);
2. **one** journal transaction stores the raw bytes with the outcome, applies the
   identity registry (duplicates, conflicts, hold / release, merges), and creates the
   deliveries — group-committed and fsync'd;
3. only then is the ACK built and returned.

If the pipeline itself fails on a bug, the raw bytes are still stored (status
``rejected``, reason ``INTERNAL_ERROR``) and the sender gets AE: nothing is lost and
nothing is acknowledged as accepted without being kept.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import structlog

from gateway.core.ack import build_ack, build_ack_unreadable
from gateway.core.charset import HL7_CHARSETS, encode_for
from gateway.core.hl7v2.limits import Limits
from gateway.core.hl7v2.reader import Message
from gateway.core.hl7v2.salvage import salvage_control_id
from gateway.core.identity.status import IdentityConvention
from gateway.core.identity.traits import strict_traits_differ
from gateway.core.mss.orders import MailOrder, mail_orders
from gateway.core.pipeline import Analysis, Ids, PipelineOptions, analyse_cda, analyse_hl7v2, ipp_key
from gateway.core.routing import Route, choose_route
from gateway.journal.base import Journal
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
from gateway.settings import Settings

__all__ = ["Intake", "IntakeResult", "Router", "patient_from_traits", "traits_of"]

log = structlog.get_logger(__name__)



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


def traits_of(p: PatientIdentity) -> dict[str, Any]:
    return {
        "birth_family": p.birth_family,
        "birth_given_list": p.birth_given_list,
        "first_given": p.first_given,
        "gender": p.gender,
        "birth_date": p.birth_date,
        "birthplace_cog": p.birthplace_cog,
    }


def patient_from_traits(traits: dict[str, Any]) -> PatientIdentity:
    return PatientIdentity(
        birth_family=traits.get("birth_family"),
        birth_given_list=traits.get("birth_given_list"),
        first_given=traits.get("first_given"),
        gender=traits.get("gender"),
        birth_date=traits.get("birth_date"),
        birthplace_cog=traits.get("birthplace_cog"),
    )


class Intake:
    """Turns inbound bytes into journal rows and an acknowledgement."""

    def __init__(
        self,
        journal: Journal,
        settings: Settings,
        clock: Clock,
        router: Router,
    ) -> None:
        self.journal = journal
        self.settings = settings
        self.clock = clock
        self.router = router
        self.options = pipeline_options(settings)
        # Large inputs are analysed here so that the event loop keeps answering other
        # senders meanwhile (the GIL is released every few milliseconds; lxml, regex and
        # hashing release it for longer). Small ones stay inline: a thread hop would cost
        # more than their analysis.
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, settings.pipeline.workers), thread_name_prefix="relais-pipeline"
        )

    def close(self) -> None:
        """Let running analyses finish and release the worker threads."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _analyse(self, size: int, fn: Callable[..., Analysis], *args: Any) -> Analysis:
        threshold = self.settings.pipeline.offload_bytes
        if threshold and size <= threshold:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))

    # -- entry points ----------------------------------------------------------------
    async def handle_hl7(
        self, raw: bytes, *, peer: str | None, listener: str, tls_subject: str | None = None
    ) -> IntakeResult:
        """Analyse, journal and acknowledge one HL7 v2 message; ``tls_subject`` is the client certificate's."""
        started = time.perf_counter()
        now = self.clock.now()
        exchange_id = self.clock.new_id()
        try:
            an = await self._analyse(
                len(raw), analyse_hl7v2, raw, self.options, Ids(now=now, new_uuid=self.clock.new_id)
            )
        except Exception as exc:  # a bug must not lose the message: keep it and say so
            log.exception("pipeline.crashed", exchange_id=exchange_id, error=type(exc).__name__)
            an = _crashed(raw)
        analysed = time.perf_counter()
        result = await self._record(exchange_id, raw, an, peer, listener, now, tls_subject=tls_subject)
        recorded = time.perf_counter()
        result.ack = self._ack(result, raw, now)
        result.timings = {"analyse": analysed - started, "journal": recorded - analysed,
                          "ack": time.perf_counter() - recorded}
        self._log(result, started)
        return result

    async def handle_cda(
        self, data: bytes, flags: dict[str, bool], *, peer: str | None, tls_subject: str | None = None,
        client: str | None = None,
    ) -> IntakeResult:
        started = time.perf_counter()
        now = self.clock.now()
        exchange_id = self.clock.new_id()
        try:
            an = await self._analyse(
                len(data), analyse_cda, data, flags, self.options, Ids(now=now, new_uuid=self.clock.new_id)
            )
        except Exception as exc:
            log.exception("pipeline.crashed", exchange_id=exchange_id, error=type(exc).__name__)
            an = Analysis(kind="cda", ack_code="AE")
            an.errors.append(Finding("INTERNAL_ERROR", "the gateway could not process this document", None))
        if client:
            an.summary["http_client"] = client  # routes can match on who posted it
        analysed = time.perf_counter()
        result = await self._record(exchange_id, data, an, peer, "http-cda", now, tls_subject=tls_subject)
        result.timings = {"analyse": analysed - started, "journal": time.perf_counter() - analysed}
        self._log(result, started)
        return result

    async def handle_oversize(
        self, size: int, *, peer: str | None, listener: str, tls_subject: str | None = None
    ) -> bytes:
        """A frame above the size limit: record the refusal (without the bytes) and answer AR."""
        reason = Finding(
            "MESSAGE_TOO_LARGE",
            f"message exceeds {self.settings.mllp.max_message_bytes} bytes (received at least {size})",
            "MSH",
        )
        return await self._refuse_frame(reason, b"", size, peer=peer, listener=listener, tls_subject=tls_subject)

    async def handle_refused(
        self, code: str, message: str, partial: bytes, *, peer: str | None, listener: str,
        tls_subject: str | None = None,
    ) -> bytes:
        """A frame we stopped receiving (too slow, buffers full): journal what came and answer AR."""
        reason = Finding(code, message, "MSH")
        return await self._refuse_frame(
            reason, partial, len(partial), peer=peer, listener=listener, tls_subject=tls_subject
        )

    async def _refuse_frame(
        self, reason: Finding, raw: bytes, size: int, *, peer: str | None, listener: str, tls_subject: str | None
    ) -> bytes:
        now = self.clock.now()
        exchange_id = self.clock.new_id()
        exchange = NewExchange(
            id=exchange_id, received_at=iso(now), listener=listener, peer=peer, raw=raw,
            sha256=hashlib.sha256(raw).hexdigest(), size=size, status="rejected",
            reason_code=reason.code, reason=reason.message, ack_code="AR",
            findings={"errors": [reason.as_dict()], "warnings": []},
        )
        await self.journal.record_inbound(InboundRecord(exchange, events=[
            NewEvent("received", _received(size, tls_subject)), NewEvent("rejected", {"code": reason.code})]))
        log.warning("mllp.frame_refused", exchange_id=exchange_id, code=reason.code, size=size)
        return build_ack_unreadable(raw, now=now, control_id=self.clock.new_id()[:20], reason=reason).encode("utf-8")

    async def replay(self, exchange_id: str, *, actor: str) -> IntakeResult:
        """Run the pipeline again from the stored raw bytes; a new exchange records the outcome.

        Delivery stays idempotent: a document already delivered is found at the destination
        by its uniqueId before anything is sent again.
        """
        bodies = await self.journal.exchange_bodies(exchange_id)
        if bodies is None or bodies.raw is None:
            raise KeyError(exchange_id)
        raw = bytes(bodies.raw)
        if bodies.listener == "http-cda":
            result = await self.handle_cda(raw, {"DESTDMP": True}, peer=f"replay:{exchange_id}")
        else:
            result = await self._replay_hl7(raw, exchange_id)
        await self.journal.record_replay(exchange_id, result.exchange_id, actor=actor, at=iso(self.clock.now()))
        return result

    async def reevaluate_holds(self) -> dict[str, int]:
        """At start-up: documents held by an identity rule are judged again with today's settings.

        A hold a configuration change resolves (``identity.allow_test_ins`` turned on for
        ``INS_OID_TEST``, a status convention …) or one the registry now satisfies is released;
        a hold whose reason changed gets the new reason. HL7 v2 exchanges only (their raw bytes
        are the whole input); a pruned one is left as it is.
        """
        held = [h for h in await self.journal.held_exchanges() if str(h.reason_code or "").startswith("INS_")]
        counts = {"released": 0, "changed": 0}
        for h in held:
            bodies = await self.journal.exchange_bodies(h.id)
            if bodies is None or not bodies.raw or bodies.listener == "http-cda":
                continue
            now = self.clock.now()
            ids = Ids(now=now, new_uuid=self.clock.new_id)
            an = await self._analyse(len(bodies.raw), analyse_hl7v2, bytes(bodies.raw), self.options, ids)
            if an.kind != "document":
                continue
            reason = self._gate(await self.journal.identity_context(an.identity.ipp_key, an.identity.ins), an)
            outcome = await self.journal.rejudge_hold(
                h.id, release=reason is None, code=reason.code if reason else None,
                message=reason.message if reason else None, cause="re-evaluated with the current settings",
                at=iso(now),
            )
            if outcome:
                counts[outcome] += 1
        if any(counts.values()):
            log.info("intake.holds_reevaluated", **counts)
        return counts

    async def _replay_hl7(self, raw: bytes, original_id: str) -> IntakeResult:
        now = self.clock.now()
        exchange_id = self.clock.new_id()
        an = await self._analyse(len(raw), analyse_hl7v2, raw, self.options, Ids(now=now, new_uuid=self.clock.new_id))
        return await self._record(exchange_id, raw, an, f"replay:{original_id}", "replay", now, dedup=False)

    # -- what the journal records ----------------------------------------------------------
    async def _record(
        self, exchange_id: str, raw: bytes, an: Analysis, peer: str | None, listener: str,
        now: datetime, *, dedup: bool = True, tls_subject: str | None = None,
    ) -> IntakeResult:
        """Judge the exchange on what the registry says, then record it in one transaction.

        The journal re-checks inside that transaction what may have changed since the
        registry was read (a duplicate arriving at once, an ADT qualifying the identity).
        """
        ctx = IdentityContext()
        if an.kind in ("document", "cda") and an.ack_code == "AA":
            ctx = await self.journal.identity_context(an.identity.ipp_key, an.identity.ins)
        record, result = self._plan(exchange_id, raw, an, peer, listener, now, ctx, dedup=dedup,
                                    tls_subject=tls_subject)
        outcome = await self.journal.record_inbound(record)
        result.status = outcome.status
        result.released = list(outcome.released)
        if outcome.duplicate_of is not None:
            result.duplicate_of = outcome.duplicate_of
            result.ack_code = outcome.ack_code or "AA"
            result.application_ack_queued = False  # a duplicate is answered like the first, not processed
        return result

    def _plan(
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
            duplicate_events=[NewEvent("received", {"listener": listener, **_received(len(raw), tls_subject)})],
        )
        first_doc = an.documents[0] if an.documents else None
        ident = an.identity
        ex.ack_code, ex.findings = an.ack_code, an.findings_json()
        ex.patient_ins, ex.patient_ipp = ident.ins, ident.ipp_key
        ex.document_id = first_doc.unique_id if first_doc else None
        ex.dmp_bound, ex.ack_reception = int(an.dmp_bound), int(an.ack_reception)
        record.events.append(
            NewEvent("received", {"listener": listener, **_received(len(raw), tls_subject), "sha256": sha}))
        result = IntakeResult(exchange_id, "received", an.ack_code, an)
        if an.ack_code != "AA":
            reason = an.errors[0] if an.errors else Finding("REJECTED", "rejected", None)
            ex.status, ex.reason_code, ex.reason = "rejected", reason.code, reason.message
            record.events.append(NewEvent("rejected", {"errors": [f.as_dict() for f in an.errors]}))
            result.status = "rejected"
        else:
            self._accepted(record, an, result, at, ctx)
        self._application_ack(record, result, now)
        return record, result

    def _accepted(self, record: InboundRecord, an: Analysis, result: IntakeResult, at: str,
                  ctx: IdentityContext) -> None:
        ex = record.exchange
        ident = an.identity
        record.events.append(NewEvent("parsed", {"kind": an.kind, "warnings": len(an.warnings)}))
        if an.kind == "adt":
            ex.status = result.status = "accepted"
            record.adt = self._adt_effects(record, an, at)
            return
        self._content_type_from_encounter(record, an, ctx)
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
        # Patient-bound mail goes to an address derived from the INS: gated like the DMP.
        gated = bool(destinations) or any(o.audience == "patient" for o in mail)
        hold = self._gate(ctx, an) if gated else None
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
            if hold is ident.reason and hold.code == "INS_NOT_QUALIFIED" and ident.ins_valid:
                record.hold_unless_qualified = ident.ins  # an ADT may qualify it before we commit
        else:
            ex.status = result.status = "queued"
            record.events.append(NewEvent("queued", {"destinations": list(destinations) + (
                [f"{self.router.mail_destination} x{len(mail)}"] if mail else [])}))
        if ident.ipp_key and an.patient is not None:
            record.remember_identity = IdentityRecord(
                ipp_key=ident.ipp_key, ins=ident.ins, ins_oid=ident.ins_oid, traits=traits_of(an.patient),
                status="~".join(an.patient.status), qualified=ident.qualified, updated_at=at,
            )

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

    @staticmethod
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

    # -- identity gate and registry ------------------------------------------------------
    def _gate(self, ctx: IdentityContext, an: Analysis) -> Finding | None:
        """Why this DMP-bound document must wait, or None when it may go now."""
        ident = an.identity
        patient = an.patient or PatientIdentity()
        known = ctx.by_ipp
        if ident.ipp_key and known and known.ins and ident.ins and known.ins != ident.ins:
            return Finding("INS_CONFLICT", "this IPP is known with a different INS", "PID-3")
        if ident.ins:
            for other in ctx.with_ins:
                differing = strict_traits_differ(patient, patient_from_traits(other.traits))
                if differing:
                    return Finding(
                        "INS_TRAITS_MISMATCH",
                        f"strict traits differ from the identity registry: {', '.join(differing)}",
                        "PID-5",
                    )
        if ident.reason is None:
            return None
        if ident.reason.code == "INS_NOT_QUALIFIED" and ident.ins_valid and _registry_qualified(ctx, ident.ins):
            return None
        return ident.reason

    def _adt_effects(self, record: InboundRecord, an: Analysis, at: str) -> AdtEffects | None:
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

    # -- acknowledgements ----------------------------------------------------------------------
    def _application_ack(self, record: InboundRecord, result: IntakeResult, now: datetime) -> None:
        """Enhanced mode: the application ACK goes to the sender's return address, durably.

        It is a delivery like a ZAM (kind ``ack``), to the ``[[creator]]`` matched on
        MSH-3 / MSH-4, so it survives a crash and is retried until the sender takes it.
        Our application ACK asks for an accept acknowledgement (MSH-15 ``AL``) and no
        application acknowledgement (MSH-16 ``NE``): the sender's CA is our receipt.
        """
        an = result.analysis
        if an.message is None or not an.ack_plan.application:
            return
        at = iso(now)
        s = an.summary
        from gateway.delivery.dispatcher import find_creator

        creator = find_creator(self.settings, s.get("sender_app") or "", s.get("sender_facility") or "")
        if creator is None:
            # kept in the journal for the operator: the sender asked for an answer we cannot send
            record.events.append(NewEvent("ack:no-return-address",
                                          {"sender_app": s.get("sender_app"), "sender_facility": s.get("sender_facility")}))
            log.warning("intake.application_ack_without_return_address", exchange_id=result.exchange_id)
            return
        control_id = "ACA" + self.clock.new_id().replace("-", "")[:17]
        g = self.settings.gateway
        text = build_ack(
            an.message, result.ack_code, errors=an.errors, now=now, control_id=control_id, app=g.application,
            facility=g.facility, text=self._ack_text(result), enhanced=False, charset=self._ack_charset(an),
            ack_types=("AL", "NE"),
        )
        record.deliveries.append(NewDelivery(
            id=self.clock.new_id(), exchange_id=result.exchange_id,
            destination=f"zam:{creator.application}|{creator.facility}", kind="ack", status="queued",
            next_attempt_at=at, patient_key=f"ack:{result.exchange_id}", unique_id=control_id,
            payload=self._encode_ack(an, text), created_at=at,
        ))
        record.events.append(NewEvent("ack:queued", {"code": result.ack_code, "control_id": control_id}))
        result.application_ack_queued = True

    @staticmethod
    def _ack_text(result: IntakeResult) -> str | None:
        if result.status == "held":
            return "stored; held by the identity gate"
        if result.status == "duplicate":
            return "duplicate of an already stored message"
        return None

    def _ack_charset(self, an: Analysis) -> str | None:
        """MSH-18 of our ACK when copying the sender's would be wrong.

        A message whose bytes do not fit its MSH-18 is read as ISO 8859-1 (every byte is
        one character), so the ACK is written in ISO 8859-1 and says ``8859/1``: MSA-2
        then holds the very bytes of MSH-10. A message without MSH-18 is answered in
        the default charset, declared as soon as the ACK is not plain ASCII.
        """
        if an.charset is None:
            return "8859/1"
        if not an.charset:
            default = self.options.default_charset.lower().replace("_", "-")
            for name, codec in HL7_CHARSETS.items():
                if codec == default and name != "ASCII":
                    return name if an.message is not None and not an.message.msh.field(10).raw.isascii() else None
        return None

    def _encode_ack(self, an: Analysis, text: str) -> bytes:
        if an.charset is None:
            return text.encode("latin-1", errors="replace")
        return encode_for(an.charset or "", text, self.options.default_charset)

    def _ack(self, result: IntakeResult, raw: bytes, now: datetime) -> bytes:
        """The bytes to write back on the connection; ``b""`` means send nothing.

        Never raises, and its MSA-1 is the ``ack_code`` journaled.
        """
        control_id = "ACK" + result.exchange_id.replace("-", "")[:17]
        try:
            return self._build_ack(result, raw, now, control_id)
        except Exception as exc:
            # The exchange is stored with its ack_code: answer with that code rather than
            # closing without a word (the sender would resend forever).
            log.exception("ack.build_failed", exchange_id=result.exchange_id, error=type(exc).__name__)
            internal = Finding("INTERNAL_ERROR", "the gateway could not build a detailed acknowledgement", None)
            ack = build_ack(None, result.ack_code or "AE", errors=[internal], now=now, control_id=control_id)
            return ack.encode("ascii", errors="replace")

    def _build_ack(self, result: IntakeResult, raw: bytes, now: datetime, control_id: str) -> bytes:
        an = result.analysis
        g = self.settings.gateway
        if an.kind == "ack":
            return b""
        if an.message is None:
            reason = an.errors[0] if an.errors else Finding("MSH_UNREADABLE", "MSH could not be read", "MSH")
            if result.ack_code != "AR":  # keep MSA-1 equal to what the journal says was sent
                return build_ack(None, result.ack_code, errors=[reason], now=now, control_id=control_id).encode()
            return _unparsed_ack(raw, now, control_id, reason)
        plan = an.ack_plan
        if plan.immediate is None:
            return b""
        errors: Any = an.errors
        code = result.ack_code
        if plan.enhanced:
            # the accept ACK says "stored" (CA) or "not for us" (CR); findings travel in the application ACK
            code, errors = ("AR", an.errors) if plan.immediate == "CR" else ("AA", ())
        ack = build_ack(
            an.message, code, errors=errors, now=now, control_id=control_id, app=g.application,
            facility=g.facility, text=self._ack_text(result), enhanced=plan.enhanced, charset=self._ack_charset(an),
        )
        return self._encode_ack(an, ack)

    def _log(self, result: IntakeResult, started: float) -> None:
        an = result.analysis
        elapsed = time.perf_counter() - started
        log.info(
            "intake.stored",
            exchange_id=result.exchange_id,
            control_id=an.summary.get("control_id"),
            message_type=an.summary.get("message_type"),
            status=result.status,
            ack=result.ack_code,
            errors=[f.code for f in an.errors],
            ms=round(elapsed * 1000, 2),
        )


def _registry_qualified(ctx: IdentityContext, ins: str | None) -> bool:
    rows = [ctx.by_ipp, *ctx.with_ins]
    return any(r is not None and r.qualified and r.ins == ins for r in rows)


def _received(size: int, tls_subject: str | None) -> dict[str, Any]:
    """The "received" event detail: who sent it is part of the trace (mutual TLS subject)."""
    detail: dict[str, Any] = {"size": size}
    if tls_subject:
        detail["tls_subject"] = tls_subject
    return detail


def _crashed(raw: bytes) -> Analysis:
    """The verdict when the pipeline raised: AE naming the message when its MSH reads, else AR."""
    internal = Finding("INTERNAL_ERROR", "the gateway could not process this message", None)
    an = Analysis(kind="unreadable", ack_code="AR", errors=[internal])
    try:
        msg = Message.parse(raw.decode("latin-1"))  # latin-1 decodes any bytes
        summary = {"sender_app": msg.msh.value(3), "sender_facility": msg.msh.value(4),
                   "control_id": msg.control_id, "message_type": msg.message_type}
    except Exception:
        return an
    an.message, an.ack_code, an.kind, an.summary = msg, "AE", "unsupported", summary
    return an


def _unparsed_ack(raw: bytes, now: datetime, control_id: str, reason: Finding) -> bytes:
    """AR for an MSH the reader refused; MSA-2 carries MSH-10 when it can still be read.

    HL7 v2.5 ch. 2 §2.9.2 wants MSA-2 = the original MSH-10: with a malformed MSH-2 the
    fields still split on MSH-1, so the bytes of MSH-10 are echoed (in an ACK written
    in ISO 8859-1 and declared so, which keeps every byte as it came).
    """
    ack = build_ack_unreadable(raw, now=now, control_id=control_id, reason=reason)
    received = salvage_control_id(raw)
    if received is None:
        return ack.encode("utf-8")
    segments = ack.split("\r")
    fields = segments[0].split("|")
    fields += [""] * (18 - len(fields))
    fields[17] = "8859/1"  # MSH-18 (fields[0] is "MSH", fields[1] is MSH-2)
    segments[0] = "|".join(fields)
    value = received.decode("latin-1")
    # Copied as received; only our own field separator could break the ACK (possible when
    # the sender's MSH-1 is another character), and it is written as the escape \F\.
    value = value.replace("|", "\\F\\")
    segments = [("MSA|AR|" + value + seg[len("MSA|AR|"):]) if seg.startswith("MSA|") else seg for seg in segments]
    return "\r".join(segments).encode("latin-1", errors="replace")


def pipeline_options(settings: Settings) -> PipelineOptions:
    from pathlib import Path

    return PipelineOptions(
        default_charset=settings.pipeline.default_charset,
        allow_test_ins=settings.identity.allow_test_ins,
        convention=cast(IdentityConvention, settings.identity.convention),
        cda_xsd=Path(settings.pipeline.cda_xsd) if settings.pipeline.cda_xsd else None,
        source_id=settings.gateway.source_id,
        max_cda_bytes=settings.pipeline.max_cda_bytes,
        max_cda_elements=settings.pipeline.max_cda_elements,
        max_cda_depth=settings.pipeline.max_cda_depth,
        limits=Limits(
            max_segments=settings.pipeline.max_segments,
            max_repetitions=settings.pipeline.max_repetitions,
            max_field_chars=settings.pipeline.max_field_chars,
        ),
    )
