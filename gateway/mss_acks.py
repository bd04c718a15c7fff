"""MSSanté business acknowledgements as durable ZAM deliveries (ZAM^Z02 receipt, ZAM^Z03 read).

The outcome of a mail reaches the gateway three ways — the SMTP server refusing it
(dispatcher, delivery ``dead``), a DSN and an MDN read from the application mailbox
(``adapters.mssante.poller``) — and all three end here: one ``zam`` delivery to the creator's
MLLP return address, through the same durable path as ZAM^Z01.

At most one Z02 and one Z03 per mail delivery: the ZAM delivery's ``unique_id`` is
``Z02:<mail delivery id>`` / ``Z03:<mail delivery id>``, checked before inserting, so a report
read twice (a crash between the journal commit and the IMAP ``\\Seen`` flag) is harmless.
A ``delayed`` DSN is journaled but sends nothing: it is not an outcome.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.core.charset import decode_message, encode_for
from gateway.core.hl7v2.reader import Message
from gateway.core.mss.orders import MailOrder
from gateway.core.mss.zam import MssAck, build_zam_z02, build_zam_z03
from gateway.journal.tx import Tx
from gateway.ports import Clock
from gateway.settings import Settings

__all__ = ["MssAcks", "smtp_error_ack"]

_CODE = re.compile(r"\b([245]\d\d)\b")


def smtp_error_ack(order: MailOrder, error: str | None) -> MssAck:
    """A negative receipt from the dispatcher's last error (``SMTP_550: RCPT TO: 550 5.1.1 ...``)."""
    text = (error or "delivery failed").split(":", 1)[-1].strip()
    m = _CODE.search(error or "")
    return MssAck(order.recipient, False, error_code=m.group(1) if m else "DELIVERY_FAILED", error_label=text[:80])


class MssAcks:
    """Builds and records Z02/Z03 deliveries inside a journal transaction."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock

    def already(self, tx: Tx, trigger: str, mail_delivery_id: str) -> bool:
        return tx.zam_exists(f"{trigger}:{mail_delivery_id}")

    def zam(self, tx: Tx, mail_delivery: dict[str, Any], trigger: str, ack: MssAck) -> dict[str, Any] | None:
        """The ZAM delivery row for one recipient's outcome, or None (not requested / already sent / no creator)."""
        from gateway.dispatcher import find_creator  # the creator table lives with the Z01 logic

        if self.already(tx, trigger, mail_delivery["id"]):
            return None
        ex = tx.get_exchange(mail_delivery["exchange_id"])
        payload = mail_delivery.get("payload")
        if ex is None or payload is None:
            return None
        order = MailOrder.from_json(bytes(payload))
        if (trigger == "Z02" and not order.dsn) or (trigger == "Z03" and not order.mdn):
            return None  # ACK_RECEPTION / ACK_LECTURE_MSS not asked for
        creator = find_creator(self.settings, ex.get("sender_app") or "", ex.get("sender_facility") or "")
        bodies = tx.exchange_bodies(ex["id"]) or {}
        if creator is None or bodies.get("raw") is None:
            return None
        decoded = decode_message(bytes(bodies["raw"]), self.settings.pipeline.default_charset)
        original = Message.parse(decoded.text)
        build = build_zam_z02 if trigger == "Z02" else build_zam_z03
        g = self.settings.gateway
        text = build(
            original, ack, now=self.clock.now(),
            control_id="ZAM" + self.clock.new_id().replace("-", "")[:17], app=g.application, facility=g.facility,
        )
        return dict(
            id=self.clock.new_id(), exchange_id=ex["id"], destination=f"zam:{creator.application}|{creator.facility}",
            kind="zam", status="queued", patient_key=f"zam:{ex['id']}", unique_id=f"{trigger}:{mail_delivery['id']}",
            payload=encode_for(decoded.declared, text, self.settings.pipeline.default_charset),
        )

    def for_dead_mail(self, tx: Tx, delivery: dict[str, Any], error: str | None) -> dict[str, Any] | None:
        """Dispatcher hook: the SMTP server refused the mail for good → ZAM^Z02 N with the SMTP code."""
        full = tx.get_delivery(delivery["id"]) or delivery
        if full.get("payload") is None:
            return None
        return self.zam(tx, full, "Z02", smtp_error_ack(MailOrder.from_json(bytes(full["payload"])), error))
