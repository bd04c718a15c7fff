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
from gateway.journal.tx import Tx, iso
from gateway.model import Finding, PatientIdentity
from gateway.ports import Clock
from gateway.settings import Settings

__all__ = ["Intake", "IntakeResult", "Router", "patient_from_traits", "traits_of"]

log = structlog.get_logger(__name__)

#: Raw bodies above this are committed on their own (see ``SqliteJournal.write``).
_LARGE_WRITE = 1024 * 1024



@dataclass(frozen=True)
class Router:
    """Which destinations get documents. ADT is never forwarded."""

    document_destinations: tuple[str, ...]
    mail_destination: str | None = None  # the ``mssante`` destination, when one is configured

    def for_analysis(self, an: Analysis) -> tuple[str, ...]:
        if an.kind in ("document", "cda") and an.dmp_bound:
            return self.document_destinations
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
        journal: Any,
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
        result = await self.journal.write(
            lambda tx: self._ingest(tx, exchange_id, raw, an, peer, listener, now, tls_subject=tls_subject),
            large=len(raw) > _LARGE_WRITE,
        )
        result.ack = self._ack(result, raw, now)
        self._log(result, started)
        return result

    async def handle_cda(
        self, data: bytes, flags: dict[str, bool], *, peer: str | None, tls_subject: str | None = None
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
        result = await self.journal.write(
            lambda tx: self._ingest(tx, exchange_id, data, an, peer, "http-cda", now, tls_subject=tls_subject),
            large=len(data) > _LARGE_WRITE,
        )
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

        def op(tx: Tx) -> None:
            at = iso(now)
            tx.insert_exchange(
                dict(
                    id=exchange_id, received_at=at, listener=listener, peer=peer, raw=raw,
                    sha256=hashlib.sha256(raw).hexdigest(), size=size, status="rejected",
                    reason_code=reason.code, reason=reason.message, ack_code="AR",
                    findings={"errors": [reason.as_dict()], "warnings": []},
                )
            )
            tx.add_event(exchange_id, at, "received", _received(size, tls_subject))
            tx.add_event(exchange_id, at, "rejected", {"code": reason.code})

        await self.journal.write(op)
        log.warning("mllp.frame_refused", exchange_id=exchange_id, code=reason.code, size=size)
        return build_ack_unreadable(raw, now=now, control_id=self.clock.new_id()[:20], reason=reason).encode("utf-8")

    async def replay(self, exchange_id: str, *, actor: str) -> IntakeResult:
        """Run the pipeline again from the stored raw bytes; a new exchange records the outcome.

        Delivery stays idempotent: a document already delivered is found at the destination
        by its uniqueId before anything is sent again.
        """
        bodies = await self.journal.read(lambda tx: tx.exchange_bodies(exchange_id))
        if bodies is None or bodies.get("raw") is None:
            raise KeyError(exchange_id)
        raw = bytes(bodies["raw"])
        if bodies["listener"] == "http-cda":
            result = await self.handle_cda(raw, {"DESTDMP": True}, peer=f"replay:{exchange_id}")
        else:
            result = await self._replay_hl7(raw, exchange_id)
        now = iso(self.clock.now())
        await self.journal.write(
            lambda tx: (
                tx.add_event(exchange_id, now, "replayed", {"new_exchange": result.exchange_id, "by": actor}),
                tx.add_event(result.exchange_id, now, "replay-of", {"exchange": exchange_id, "by": actor}),
                tx.append_audit(at=now, actor=actor, action="replay", target=exchange_id,
                                detail={"new_exchange": result.exchange_id}),
            )
        )
        return result

    async def reevaluate_holds(self) -> dict[str, int]:
        """At start-up: documents held by an identity rule are judged again with today's settings.

        A hold a configuration change resolves (``identity.allow_test_ins`` turned on for
        ``INS_OID_TEST``, a status convention …) or one the registry now satisfies is released;
        a hold whose reason changed gets the new reason. HL7 v2 exchanges only (their raw bytes
        are the whole input); a pruned one is left as it is.
        """
        held = await self.journal.read(lambda tx: [
            h for h in tx.held_exchanges() if str(h["reason_code"] or "").startswith("INS_")
        ])
        counts = {"released": 0, "changed": 0}
        for h in held:
            bodies = await self.journal.read(lambda tx, i=h["id"]: tx.exchange_bodies(i))
            raw = (bodies or {}).get("raw")
            if not raw or (bodies or {}).get("listener") in ("http-cda",):
                continue
            now = self.clock.now()
            ids = Ids(now=now, new_uuid=self.clock.new_id)
            an = await self._analyse(len(raw), analyse_hl7v2, raw, self.options, ids)
            if an.kind != "document":
                continue
            at = iso(now)
            outcome = await self.journal.write(lambda tx, h=h, an=an, at=at: self._judge_hold(tx, h, an, at))
            if outcome:
                counts[outcome] += 1
        if any(counts.values()):
            log.info("intake.holds_reevaluated", **counts)
        return counts

    def _judge_hold(self, tx: Tx, held: dict[str, Any], an: Analysis, at: str) -> str | None:
        ex = tx.get_exchange(held["id"])
        if ex is None or ex["status"] != "held":
            return None  # released meanwhile
        reason = self._gate(tx, an, at)
        if reason is None:
            tx.queue_waiting_deliveries(ex["id"], at)
            tx.update_exchange(ex["id"], at, status="queued", reason_code=None, reason=None, held_since=None)
            tx.add_event(ex["id"], at, "released", {"cause": "re-evaluated with the current settings",
                                                    "override": ex["reason_code"]})
            return "released"
        if reason.code != ex["reason_code"]:
            tx.update_exchange(ex["id"], at, reason_code=reason.code, reason=reason.message)
            tx.add_event(ex["id"], at, "held", {"code": reason.code, "message": reason.message,
                                                "was": ex["reason_code"]})
            return "changed"
        return None

    async def _replay_hl7(self, raw: bytes, original_id: str) -> IntakeResult:
        now = self.clock.now()
        exchange_id = self.clock.new_id()
        an = await self._analyse(len(raw), analyse_hl7v2, raw, self.options, Ids(now=now, new_uuid=self.clock.new_id))
        return await self.journal.write(
            lambda tx: self._ingest(tx, exchange_id, raw, an, f"replay:{original_id}", "replay", now, dedup=False)
        )

    # -- the journal transaction -------------------------------------------------------
    def _ingest(
        self, tx: Tx, exchange_id: str, raw: bytes, an: Analysis, peer: str | None, listener: str,
        now: datetime, *, dedup: bool = True, tls_subject: str | None = None,
    ) -> IntakeResult:
        """One exchange's rows; the raw bytes are written last, in the same transaction.

        SQLite rewrites a whole row, blob included, on every UPDATE: the row is inserted
        without its bytes and walks through its statuses while small, then gets them once.
        """
        result = self._ingest_rows(tx, exchange_id, raw, an, peer, listener, now, dedup=dedup,
                                   tls_subject=tls_subject)
        tx.set_exchange_raw(exchange_id, raw)
        return result

    def _ingest_rows(
        self, tx: Tx, exchange_id: str, raw: bytes, an: Analysis, peer: str | None, listener: str,
        now: datetime, *, dedup: bool = True, tls_subject: str | None = None,
    ) -> IntakeResult:
        at = iso(now)
        sha = hashlib.sha256(raw).hexdigest()
        s = an.summary
        base = dict(
            id=exchange_id, received_at=at, listener=listener, peer=peer, raw=b"", sha256=sha, size=len(raw),
            sender_app=s.get("sender_app"), sender_facility=s.get("sender_facility"),
            control_id=s.get("control_id"), message_type=s.get("message_type"), version=s.get("version"),
            charset=s.get("charset"),
        )
        if an.kind == "ack":
            return self._record_ack(tx, exchange_id, base, an, at)
        if dedup and listener != "http-cda" and s.get("control_id"):
            original = tx.find_duplicate(s.get("sender_app") or "", s.get("sender_facility") or "", s["control_id"], sha)
            if original is not None:
                prev = tx.get_exchange(original)
                ack_code = (prev or {}).get("ack_code") or "AA"
                tx.insert_exchange({**base, "status": "duplicate", "duplicate_of": original, "ack_code": ack_code})
                tx.add_event(exchange_id, at, "received", {"listener": listener, **_received(len(raw), tls_subject)})
                tx.add_event(exchange_id, at, "duplicate", {"of": original})
                return IntakeResult(exchange_id, "duplicate", ack_code, an, duplicate_of=original)

        first_doc = an.documents[0] if an.documents else None
        ident = an.identity
        rec = {
            **base,
            "status": "received",
            "ack_code": an.ack_code,
            "findings": an.findings_json(),
            "patient_ins": ident.ins,
            "patient_ipp": ident.ipp_key,
            "document_id": first_doc.unique_id if first_doc else None,
            "dmp_bound": int(an.dmp_bound),
            "ack_reception": int(an.ack_reception),
        }
        reason = None
        if an.ack_code != "AA":
            # with the row rather than by a later UPDATE (see _ingest)
            reason = an.errors[0] if an.errors else Finding("REJECTED", "rejected", None)
            rec.update(status="rejected", reason_code=reason.code, reason=reason.message)
        tx.insert_exchange(rec)
        tx.add_event(
            exchange_id, at, "received", {"listener": listener, **_received(len(raw), tls_subject), "sha256": sha}
        )
        result = IntakeResult(exchange_id, "received", an.ack_code, an)
        if reason is not None:
            tx.add_event(exchange_id, at, "rejected", {"errors": [f.as_dict() for f in an.errors]})
            result.status = "rejected"
            self._queue_application_ack(tx, result, now)
            return result
        result = self._accepted(tx, exchange_id, an, result, at)
        self._queue_application_ack(tx, result, now)
        return result

    def _accepted(self, tx: Tx, exchange_id: str, an: Analysis, result: IntakeResult, at: str) -> IntakeResult:
        ident = an.identity
        tx.add_event(exchange_id, at, "parsed", {"kind": an.kind, "warnings": len(an.warnings)})

        if an.kind == "adt":
            result.status = "accepted"
            tx.update_exchange(exchange_id, at, status="accepted")
            result.released = self._apply_adt(tx, exchange_id, an, at)
            return result

        self._content_type_from_encounter(tx, exchange_id, an, at)
        for doc in an.documents:
            tx.insert_document(exchange_id, doc.index, doc.unique_id, doc.action, doc.cda, doc.xds, doc.fhir)
        tx.add_event(exchange_id, at, "normalised", {"documents": [d.unique_id for d in an.documents]})
        destinations = self.router.for_analysis(an)
        mail = self._mail_orders(tx, exchange_id, an, at)
        if not destinations and not mail:
            tx.update_exchange(exchange_id, at, status="accepted")
            result.status = "accepted"
            return result

        # Patient-bound mail goes to an address derived from the INS: gated like the DMP.
        gated = bool(destinations) or any(o.audience == "patient" for o in mail)
        hold = self._gate(tx, an, at) if gated else None
        tx.add_event(
            exchange_id, at, "identity",
            {"qualified": ident.qualified, "hold": hold.code if hold else None},
        )
        patient_key = ident.ipp_key or ident.ins or exchange_id
        for doc in an.documents:
            for dest in destinations:
                tx.insert_delivery(
                    dict(
                        id=self.clock.new_id(), exchange_id=exchange_id, destination=dest, kind="document",
                        status="waiting" if hold else "queued", next_attempt_at=at, patient_key=patient_key,
                        unique_id=doc.unique_id, doc_index=doc.index, action=doc.action, created_at=at,
                    )
                )
            for order in mail:  # one delivery per (document, recipient): its own Message-ID and reports
                tx.insert_delivery(
                    dict(
                        id=self.clock.new_id(), exchange_id=exchange_id, destination=self.router.mail_destination,
                        kind="mail", status="waiting" if hold and order.audience == "patient" else "queued",
                        next_attempt_at=at, patient_key=f"{patient_key}|{order.recipient.lower()}",
                        unique_id=doc.unique_id, doc_index=doc.index, action=doc.action,
                        payload=order.to_json(), created_at=at,
                    )
                )
        if hold:
            tx.update_exchange(
                exchange_id, at, status="held", reason_code=hold.code, reason=hold.message, held_since=at
            )
            tx.add_event(exchange_id, at, "held", hold.as_dict())
            result.status = "held"
        else:
            tx.update_exchange(exchange_id, at, status="queued")
            tx.add_event(exchange_id, at, "queued", {"destinations": list(destinations) + (
                [f"{self.router.mail_destination} x{len(mail)}"] if mail else [])})
            result.status = "queued"
        self._remember_identity(tx, an, at)
        return result

    def _mail_orders(self, tx: Tx, exchange_id: str, an: Analysis, at: str) -> list[MailOrder]:
        """MSSanté mails this document message asks for (DESTMSSANTEPS / DESTMSSANTEPAT)."""
        dm = an.doc_message
        if self.router.mail_destination is None or dm is None or an.kind != "document":
            return []
        if not (dm.flags.get("DESTMSSANTEPS") or dm.flags.get("DESTMSSANTEPAT")):
            return []
        if dm.action == "delete":
            tx.add_event(exchange_id, at, "mss:skipped", {"reason": "a deletion is not mailed"})
            return []
        orders, findings = mail_orders(dm, an.identity.ins)
        tx.add_event(exchange_id, at, "mss:orders", {
            "recipients": len(orders), "patient": any(o.audience == "patient" for o in orders),
            "warnings": [f.code for f in findings],
        })
        return orders

    @staticmethod
    def _content_type_from_encounter(tx: Tx, exchange_id: str, an: Analysis, at: str) -> None:
        """A document message without PV1-2 takes the patient class of the encounter PAM-FR left.

        The volet maps PV1-2 to the submission-set contentTypeCode (mapping page: I→03,
        O→07, R→19, N→97, E→07); an ORU may omit PV1 (PATIENT_VISIT is RE), and then the
        hospital's ADT feed still knows where the patient is.
        """
        dm = an.doc_message
        if dm is None or dm.patient_class or not an.identity.ipp_key:
            return
        encounter = tx.current_encounter(an.identity.ipp_key)
        if encounter is None or not encounter.get("patient_class"):
            return
        from gateway.core.fhir.actors import codeable
        from gateway.core.fhir.pdsm import DESIGNATION_TYPE_URL
        from gateway.core.terminology import content_type_for_patient_class

        content_type = content_type_for_patient_class(encounter["patient_class"])
        for doc in an.documents:
            doc.xds["submissionSet"] = {**doc.xds["submissionSet"], "contentTypeCode": content_type}
            for entry in (doc.fhir or {}).get("entry", []):
                resource = entry.get("resource") or {}
                for ext in resource.get("extension") or [] if resource.get("resourceType") == "List" else []:
                    if ext.get("url") == DESIGNATION_TYPE_URL:
                        ext["valueCodeableConcept"] = codeable(content_type)
        tx.add_event(exchange_id, at, "encounter", {"contentTypeCode": content_type["code"],
                                                    "from": encounter["exchange_id"]})

    # -- identity gate and registry ------------------------------------------------------
    def _gate(self, tx: Tx, an: Analysis, at: str) -> Finding | None:
        """Why this DMP-bound document must wait, or None when it may go now."""
        ident = an.identity
        patient = an.patient or PatientIdentity()
        if ident.ipp_key:
            known = tx.get_identity(ident.ipp_key)
            if known and known.get("ins") and ident.ins and known["ins"] != ident.ins:
                return Finding("INS_CONFLICT", "this IPP is known with a different INS", "PID-3")
        if ident.ins:
            for known in tx.identities_with_ins(ident.ins):
                differing = strict_traits_differ(patient, patient_from_traits(known["traits"]))
                if differing:
                    return Finding(
                        "INS_TRAITS_MISMATCH",
                        f"strict traits differ from the identity registry: {', '.join(differing)}",
                        "PID-5",
                    )
        if ident.reason is None:
            return None
        if ident.reason.code == "INS_NOT_QUALIFIED" and ident.ins_valid and self._registry_qualified(tx, an):
            return None
        return ident.reason

    def _registry_qualified(self, tx: Tx, an: Analysis) -> bool:
        ident = an.identity
        rows = [tx.get_identity(ident.ipp_key)] if ident.ipp_key else []
        rows += tx.identities_with_ins(ident.ins) if ident.ins else []
        return any(r and r.get("qualified") and r.get("ins") == ident.ins for r in rows)

    def _remember_identity(self, tx: Tx, an: Analysis, at: str) -> None:
        """Documents feed the registry too, but never downgrade what an ADT established."""
        ident = an.identity
        if not ident.ipp_key or an.patient is None:
            return
        known = tx.get_identity(ident.ipp_key)
        if known is not None:
            return
        tx.upsert_identity(
            dict(
                ipp_key=ident.ipp_key, ins=ident.ins, ins_oid=ident.ins_oid, traits=traits_of(an.patient),
                status="~".join(an.patient.status), qualified=int(ident.qualified), updated_at=at,
            )
        )

    def _apply_adt(self, tx: Tx, exchange_id: str, an: Analysis, at: str) -> list[str]:
        event = an.adt
        assert event is not None and an.patient is not None
        ident = an.identity
        key = ident.ipp_key or (f"ins:{ident.ins}" if ident.ins else None)
        released: list[str] = []
        if key is None:
            tx.add_event(exchange_id, at, "identity", {"registry": "no IPP nor INS: nothing to record"})
            return released
        trigger = event.trigger
        if trigger == "A40":
            for old in event.merged_identifiers:
                old_key = ipp_key(old)
                if not old_key or old_key == key:
                    continue
                tx.merge_identity(old_key, key, at)
                moved = tx.exchanges_for_patient(ins=None, ipp=old_key, statuses=("held", "queued", "received"))
                for ex in moved:
                    tx.update_exchange(ex["id"], at, patient_ipp=key)
                    tx.add_event(ex["id"], at, "re-keyed", {"from": old_key, "to": key, "by": exchange_id})
                tx.rekey_open_deliveries(old_key, key, at)
        removed_ins = event.removed_ins.value if trigger == "A47" and event.removed_ins is not None else None
        qualified = ident.qualified and trigger != "A47"
        tx.upsert_identity(
            dict(
                ipp_key=key, ins=ident.ins if ident.ins_valid or ident.ins else None, ins_oid=ident.ins_oid,
                traits=traits_of(an.patient), status="~".join(an.patient.status), qualified=int(qualified),
                merged_into=None, updated_at=at,
            )
        )
        tx.add_event(exchange_id, at, "identity", {"registry": "updated", "qualified": qualified, "trigger": trigger})
        if trigger == "A47" or (trigger != "A40" and not qualified and removed_ins):
            self._rehold(tx, exchange_id, removed_ins or ident.ins, key, at)
        self._apply_link(tx, exchange_id, an, key, at)
        if event.is_encounter:
            self._apply_encounter(tx, exchange_id, an, key, at)
        # Every PAM-FR event carries the current identity in PID (a transfer as much as an
        # admission): a qualified one releases what waited for it. A47 never does.
        if qualified and trigger != "A47":
            released = self._release(tx, exchange_id, an, key, at)
        return released

    @staticmethod
    def _apply_link(tx: Tx, exchange_id: str, an: Analysis, key: str, at: str) -> None:
        """A24 links the two patients of the message; A37, its cancellation, removes the link."""
        event = an.adt
        assert event is not None
        if event.trigger not in ("A24", "A37") or event.other_patient is None:
            return
        other = event.other_patient
        other_key = ipp_key(other.ipp) or (f"ins:{other.ins.value}" if other.ins else None)
        if other_key is None or other_key == key:
            return
        if event.trigger == "A24":
            tx.link_identities(key, other_key, at, exchange_id)
            tx.add_event(exchange_id, at, "identity", {"registry": "linked", "to": other_key})
        else:
            removed = tx.unlink_identities(key, other_key)
            tx.add_event(exchange_id, at, "identity", {"registry": "unlinked", "from": other_key, "found": bool(removed)})

    @staticmethod
    def _apply_encounter(tx: Tx, exchange_id: str, an: Analysis, key: str, at: str) -> None:
        """Keep the encounter as the ITI-31 events leave it: PV1-2 feeds the DMP contentTypeCode."""
        event = an.adt
        assert event is not None
        visit_key = event.visit_number or f"patient:{key}"
        cancelled = event.trigger in ("A11", "A38", "A27")  # admission / pre-admission / pending admission undone
        tx.upsert_encounter(
            dict(
                visit_key=visit_key, ipp_key=key, patient_class=event.patient_class, trigger=event.trigger,
                cancelled=int(cancelled), updated_at=at, exchange_id=exchange_id,
            )
        )
        detail: dict[str, Any] = {"visit": visit_key, "class": event.patient_class, "trigger": event.trigger}
        if event.cancels:
            detail["cancels"] = event.cancels
        tx.add_event(exchange_id, at, "encounter", detail)

    def _release(self, tx: Tx, by_exchange: str, an: Analysis, key: str, at: str) -> list[str]:
        ident = an.identity
        released: list[str] = []
        candidates = tx.exchanges_for_patient(ins=ident.ins, ipp=key, statuses=("held",))
        for ex in candidates:
            if ex["reason_code"] not in ("INS_NOT_QUALIFIED",) or ex["patient_ins"] != ident.ins:
                continue  # conflicts and broken INS need an operator
            tx.queue_waiting_deliveries(ex["id"], at)
            tx.update_exchange(ex["id"], at, status="queued", reason_code=None, reason=None, held_since=None)
            tx.add_event(ex["id"], at, "released", {"by": by_exchange, "cause": "identity qualified by ADT"})
            released.append(ex["id"])
        return released

    def _rehold(self, tx: Tx, by_exchange: str, ins: str | None, key: str, at: str) -> None:
        """A47: documents not yet delivered for this patient go back on hold.

        Queued and failed deliveries wait again at once; an attempt already in flight
        cannot be recalled, but if it fails it waits instead of retrying (dispatcher).
        """
        reason = "INS removed or downgraded by ADT^A47"
        for ex in tx.exchanges_for_patient(ins=ins, ipp=key, statuses=("queued",)):
            tx.hold_open_document_deliveries(ex["id"], at)
            tx.update_exchange(
                ex["id"], at, status="held", reason_code="INS_NOT_QUALIFIED", reason=reason, held_since=at
            )
            tx.add_event(ex["id"], at, "held", {"code": "INS_NOT_QUALIFIED", "message": reason, "by": by_exchange})

    # -- acknowledgements ----------------------------------------------------------------------
    def _record_ack(self, tx: Tx, exchange_id: str, base: dict[str, Any], an: Analysis, at: str) -> IntakeResult:
        """An inbound ACK: journaled, matched to the ZAM / application ACK it answers, never answered.

        HL7 v2.5 ch. 2 §2.9.2: acknowledgements are not acknowledged (an ACK of an ACK
        would loop between two systems that both follow the rule).
        """
        tx.insert_exchange({**base, "status": "recorded", "ack_code": None, "findings": an.findings_json()})
        tx.add_event(exchange_id, at, "received", {"listener": base["listener"], "size": base["size"]})
        matched = tx.outbound_by_control_id(an.acknowledges) if an.acknowledges else None
        if matched is not None:
            tx.add_event(exchange_id, at, "ack:matched", {"delivery": matched["id"], "exchange": matched["exchange_id"]})
            tx.add_event(
                matched["exchange_id"], at, f"{matched['kind']}:acknowledged",
                {"by": exchange_id, "code": an.acknowledgement},
            )
        else:
            tx.add_event(exchange_id, at, "ack:unmatched", {"acknowledges_known": False})
        return IntakeResult(exchange_id, "recorded", "", an)

    def _queue_application_ack(self, tx: Tx, result: IntakeResult, now: datetime) -> None:
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
        from gateway.dispatcher import find_creator

        creator = find_creator(self.settings, s.get("sender_app") or "", s.get("sender_facility") or "")
        if creator is None:
            # kept in the journal for the operator: the sender asked for an answer we cannot send
            tx.add_event(result.exchange_id, at, "ack:no-return-address",
                         {"sender_app": s.get("sender_app"), "sender_facility": s.get("sender_facility")})
            log.warning("intake.application_ack_without_return_address", exchange_id=result.exchange_id)
            return
        control_id = "ACA" + self.clock.new_id().replace("-", "")[:17]
        g = self.settings.gateway
        text = build_ack(
            an.message, result.ack_code, errors=an.errors, now=now, control_id=control_id, app=g.application,
            facility=g.facility, text=self._ack_text(result), enhanced=False, charset=self._ack_charset(an),
            ack_types=("AL", "NE"),
        )
        tx.insert_delivery(
            dict(
                id=self.clock.new_id(), exchange_id=result.exchange_id,
                destination=f"zam:{creator.application}|{creator.facility}", kind="ack", status="queued",
                next_attempt_at=at, patient_key=f"ack:{result.exchange_id}", unique_id=control_id,
                payload=self._encode_ack(an, text), created_at=at,
            )
        )
        tx.add_event(result.exchange_id, at, "ack:queued", {"code": result.ack_code, "control_id": control_id})
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
