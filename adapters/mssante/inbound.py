"""Mail arriving in the application mailbox → the DPI, as the LPS volet's MDM^T02 (PFI → DPI).

Like any input, the mail is journaled first (raw bytes kept, listener ``mssante``), then
checked, then queued as an ``hl7`` delivery to the configured ``mllp`` destination (the DPI),
whose ACK the dispatcher expects (AA delivered, AR dead, AE / silence retried). A mail that
cannot be handled stays in the journal as ``rejected`` with a stable reason code, visible
to operators like any rejected message.

Checks, in order: one document attachment — an IHE XDM zip (ITI-32; structure, URI, hash
and size checked by ``read_xdm``) or a bare CDA (``text/xml`` / ``application/xml`` /
``*.xml``); the CDA passes the hardened parser and has a header; the patient carries a valid
INS (the volet's MDM identifies the patient by INS in PID-3). The same mail read twice (a
crash between the journal commit and the IMAP ``\\Seen`` flag) is recorded as a duplicate
by ``Message-ID`` and SHA-256, and not delivered twice.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any

import structlog

from adapters.mssante.config import MssanteConfig
from adapters.mssante.xdm import read_xdm
from gateway.core import cda as cda_mod
from gateway.core.identity.ins import validate_ins
from gateway.core.mss.lps import MailContext, build_lps_mdm
from gateway.errors import GatewayError
from gateway.journal.base import Journal
from gateway.journal.rows import InboundRecord, NewDelivery, NewEvent, NewExchange, iso
from gateway.model import CdaHeader, Finding
from gateway.ports import Clock
from gateway.settings import Settings

__all__ = ["MailIntake", "extract_document"]

log = structlog.get_logger(__name__)

_XML_TYPES = {"text/xml", "application/xml", "application/hl7-cda+xml"}


def extract_document(msg: EmailMessage, *, max_bytes: int = 64 * 1024 * 1024) -> tuple[bytes, str]:
    """The one CDA the mail carries and how (``xdm`` | ``cda``); raises GatewayError with a code."""
    zips, xmls = [], []
    for part in msg.iter_attachments():
        name = (part.get_filename() or "").lower()
        ctype = part.get_content_type()
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        if ctype in ("application/zip", "application/x-zip-compressed") or name.endswith(".zip"):
            zips.append(data)
        elif ctype in _XML_TYPES or name.endswith(".xml"):
            xmls.append(data)
    if zips:
        if len(zips) > 1:
            raise GatewayError("more than one XDM package in the mail", code="MSS_MANY_XDM")
        docs = [d for d in read_xdm(zips[0], max_bytes=max_bytes) if d.mime_type in _XML_TYPES]
        if len(docs) != 1:
            raise GatewayError(f"the XDM package holds {len(docs)} CDA documents, expected one",
                               code="MSS_XDM_DOCUMENTS")
        return docs[0].data, "xdm"
    if len(xmls) == 1:
        return xmls[0], "cda"
    if not xmls:
        raise GatewayError("no XDM package nor CDA attachment in the mail", code="MSS_NO_DOCUMENT")
    raise GatewayError("more than one CDA attachment in the mail", code="MSS_MANY_CDA")


class MailIntake:
    """Journal, check and queue one inbound mail (``ReportPoller.on_inbound``)."""

    def __init__(self, journal: Journal, settings: Settings, config: MssanteConfig, clock: Clock) -> None:
        self.journal = journal
        self.settings = settings
        self.config = config
        self.clock = clock

    async def handle(self, raw: bytes, uid: str) -> bool:
        now = self.clock.now()
        exchange_id = self.clock.new_id()
        msg: EmailMessage = email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[assignment]
        outcome: tuple[bytes, CdaHeader, str, str] | Finding
        try:
            outcome = self._analyse(msg, now, exchange_id)
        except GatewayError as exc:
            outcome = Finding(exc.code, exc.message, exc.location)
        except Exception as exc:  # a bug must not lose the mail: keep it and say so
            log.exception("mssante.inbound_crashed", exchange_id=exchange_id, error=type(exc).__name__)
            outcome = Finding("INTERNAL_ERROR", "the gateway could not process this mail", None)
        message_id = str(msg.get("Message-ID") or f"uid:{uid}")
        recorded = await self.journal.record_inbound(self._record(exchange_id, raw, message_id, outcome, now))
        status = recorded.status
        log.info("mssante.inbound", exchange_id=exchange_id, status=status,
                 reason=outcome.code if isinstance(outcome, Finding) else None)
        return True

    def _analyse(self, msg: EmailMessage, now: Any, exchange_id: str) -> tuple[bytes, CdaHeader, str, str]:
        if not self.config.inbound_destination:
            raise GatewayError("no inbound_destination (DPI) configured for this mailbox", code="MSS_NO_DPI")
        data, form = extract_document(msg, max_bytes=2 * self.settings.pipeline.max_cda_bytes)
        header = cda_mod.parse_header(cda_mod.parse_cda(data, max_size=self.settings.pipeline.max_cda_bytes))
        ins = header.patient.ins
        if ins is None:
            raise GatewayError("the CDA recordTarget carries no INS", code="INS_MISSING",
                               location="recordTarget/patientRole/id")
        verdict = validate_ins(ins.value, oid=ins.oid, sex=header.patient.gender,
                               birth_date=header.patient.birth_date, allow_test=self.settings.identity.allow_test_ins)
        if not verdict.valid:
            first = verdict.errors[0]
            raise GatewayError(first.message, code=first.code, location="recordTarget/patientRole/id")
        body_part = msg.get_body(("plain",))
        mail = MailContext(
            sender=parseaddr(str(msg.get("From", "")))[1], recipient=parseaddr(str(msg.get("To", "")))[1],
            reply_to=parseaddr(str(msg.get("Reply-To", "")))[1] or None, subject=str(msg.get("Subject", "")),
            body=body_part.get_content() if body_part is not None else "",
        )
        g = self.settings.gateway
        text = build_lps_mdm(
            data, header, mail, now=now, control_id="LPS" + exchange_id.replace("-", "")[:17],
            app=g.application, facility=g.facility, receiver_app=self.config.inbound_application,
            receiver_facility=self.config.inbound_facility,
        )
        return data, header, form, text

    def _record(self, exchange_id: str, raw: bytes, message_id: str,
                outcome: tuple[bytes, CdaHeader, str, str] | Finding, now: Any) -> InboundRecord:
        at = iso(now)
        sha = hashlib.sha256(raw).hexdigest()
        ex = NewExchange(id=exchange_id, received_at=at, listener="mssante", peer=self.config.mailbox, raw=raw,
                         sha256=sha, size=len(raw), status="received", sender_app="MSSANTE",
                         sender_facility=self.config.mailbox, control_id=message_id[:200], message_type="MAIL")
        # the same mail read twice (a crash before the IMAP \Seen flag) is recorded as a duplicate
        record = InboundRecord(ex, dedup=True)
        if isinstance(outcome, Finding):
            ex.status, ex.reason_code, ex.reason = "rejected", outcome.code, outcome.message
            ex.findings = {"errors": [outcome.as_dict()], "warnings": []}
            record.events += [NewEvent("received", {"listener": "mssante", "size": len(raw)}),
                              NewEvent("rejected", {"errors": [outcome.as_dict()]})]
            return record
        _data, header, form, text = outcome
        ex.status, ex.document_id = "queued", header.document_id
        ex.patient_ins = header.patient.ins.value if header.patient.ins else None
        ex.findings = {"errors": [], "warnings": []}
        record.events += [
            NewEvent("received", {"listener": "mssante", "size": len(raw), "sha256": sha}),
            NewEvent("parsed", {"kind": f"mail+{form}", "document": header.document_id}),
            NewEvent("queued", {"destinations": [self.config.inbound_destination], "as": "LPS MDM"}),
        ]
        record.deliveries.append(NewDelivery(
            id=self.clock.new_id(), exchange_id=exchange_id, destination=self.config.inbound_destination,
            kind="hl7", status="queued", next_attempt_at=at, patient_key=f"lps:{header.document_id}",
            unique_id=header.document_id, payload=text.encode("utf-8"), created_at=at,
        ))
        return record
