"""The acknowledgements intake writes: what goes back on the connection, and the durable one.

* the **connection ACK** (original mode, or the enhanced-mode accept ACK) is built once the
  exchange is journaled; its MSA-1 is always the ``ack_code`` the journal holds, and
  building it never raises: a failure still answers with that code;
* the **application ACK** of enhanced mode is a delivery (kind ``ack``) to the sender's
  ``[[creator]]`` return address, recorded in the exchange's transaction;
* a **refused frame** (too large, too slow) gets AR naming what could be read of MSH.

Charset: the ACK follows the sender's MSH-18, so that MSA-2 holds the very bytes of MSH-10.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog

from gateway.core.ack import build_ack, build_ack_unreadable
from gateway.core.charset import HL7_CHARSETS, encode_for
from gateway.core.hl7v2.salvage import salvage_control_id
from gateway.core.pipeline import Analysis
from gateway.delivery.zam import creator_destination, find_creator
from gateway.intake.plan import IntakeResult
from gateway.journal.rows import InboundRecord, NewDelivery, NewEvent, iso
from gateway.model import Finding
from gateway.ports import Clock
from gateway.settings import Settings

__all__ = ["Acks"]

log = structlog.get_logger(__name__)


class Acks:
    """Builds intake's acknowledgements; ``clock`` gives the control ids."""

    def __init__(self, settings: Settings, clock: Clock, default_charset: str) -> None:
        self.settings = settings
        self.clock = clock
        self.default_charset = default_charset

    def application_ack(self, record: InboundRecord, result: IntakeResult, now: datetime) -> None:
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
        creator = find_creator(self.settings, s.get("sender_app") or "", s.get("sender_facility") or "")
        if creator is None:
            # kept in the journal for the operator: the sender asked for an answer we cannot send
            record.events.append(NewEvent("ack:no-return-address",
                                          {"sender_app": s.get("sender_app"), "sender_facility": s.get("sender_facility")}))
            log.warning("intake.application_ack_without_return_address")
            return
        control_id = "ACA" + self.clock.new_id().replace("-", "")[:17]
        g = self.settings.gateway
        text = build_ack(
            an.message, result.ack_code, errors=an.errors, now=now, control_id=control_id, app=g.application,
            facility=g.facility, text=_ack_text(result), enhanced=False, charset=self._charset(an),
            ack_types=("AL", "NE"),
        )
        record.deliveries.append(NewDelivery(
            id=self.clock.new_id(), exchange_id=result.exchange_id,
            destination=creator_destination(creator), kind="ack", status="queued",
            next_attempt_at=at, patient_key=f"ack:{result.exchange_id}", unique_id=control_id,
            payload=self._encode(an, text), created_at=at,
        ))
        record.events.append(NewEvent("ack:queued", {"code": result.ack_code, "control_id": control_id}))
        result.application_ack_queued = True

    def connection_ack(self, result: IntakeResult, raw: bytes, now: datetime) -> bytes:
        """The bytes to write back on the connection; ``b""`` means send nothing.

        Never raises, and its MSA-1 is the ``ack_code`` journaled.
        """
        control_id = "ACK" + result.exchange_id.replace("-", "")[:17]
        try:
            return self._build(result, raw, now, control_id)
        except Exception as exc:
            # The exchange is stored with its ack_code: answer with that code rather than
            # closing without a word (the sender would resend forever).
            log.exception("ack.build_failed", error=type(exc).__name__)
            internal = Finding("INTERNAL_ERROR", "the gateway could not build a detailed acknowledgement", None)
            ack = build_ack(None, result.ack_code or "AE", errors=[internal], now=now, control_id=control_id)
            return ack.encode("ascii", errors="replace")

    def refusal(self, raw: bytes, now: datetime, reason: Finding) -> bytes:
        """AR for a frame refused before it was analysed (MSA-2 from what MSH could be read)."""
        return build_ack_unreadable(raw, now=now, control_id=self.clock.new_id()[:20], reason=reason).encode("utf-8")

    def _build(self, result: IntakeResult, raw: bytes, now: datetime, control_id: str) -> bytes:
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
            facility=g.facility, text=_ack_text(result), enhanced=plan.enhanced, charset=self._charset(an),
        )
        return self._encode(an, ack)

    def _charset(self, an: Analysis) -> str | None:
        """MSH-18 of our ACK when copying the sender's would be wrong.

        A message whose bytes do not fit its MSH-18 is read as ISO 8859-1 (every byte is
        one character), so the ACK is written in ISO 8859-1 and says ``8859/1``: MSA-2
        then holds the very bytes of MSH-10. A message without MSH-18 is answered in
        the default charset, declared as soon as the ACK is not plain ASCII.
        """
        if an.charset is None:
            return "8859/1"
        if not an.charset:
            default = self.default_charset.lower().replace("_", "-")
            for name, codec in HL7_CHARSETS.items():
                if codec == default and name != "ASCII":
                    return name if an.message is not None and not an.message.msh.field(10).raw.isascii() else None
        return None

    def _encode(self, an: Analysis, text: str) -> bytes:
        if an.charset is None:
            return text.encode("latin-1", errors="replace")
        return encode_for(an.charset or "", text, self.default_charset)


def _ack_text(result: IntakeResult) -> str | None:
    if result.status == "held":
        return "stored; held by the identity gate"
    if result.status == "duplicate":
        return "duplicate of an already stored message"
    return None


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
