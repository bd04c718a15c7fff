"""MSSanté business acknowledgements as durable ZAM deliveries (ZAM^Z02 receipt, ZAM^Z03 read).

The outcome of a mail reaches the gateway three ways — the SMTP server refusing it
(dispatcher, delivery ``dead``), a DSN and an MDN read from the application mailbox
(``adapters.mssante.poller``) — and all three end here: one ``zam`` delivery to the creator's
MLLP return address, through the same durable path as ZAM^Z01.

At most one Z02 and one Z03 per mail delivery: the ZAM delivery's ``unique_id`` is
``Z02:<mail delivery id>`` / ``Z03:<mail delivery id>``, checked by the journal before inserting, so a report
read twice (a crash between the journal commit and the IMAP ``\\Seen`` flag) is harmless.
A ``delayed`` DSN is journaled but sends nothing: it is not an outcome.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.core.mss.orders import MailOrder
from gateway.core.mss.zam import MssAck, build_zam_z02, build_zam_z03
from gateway.delivery.zam import original_of, zam_row
from gateway.journal.base import Journal
from gateway.journal.rows import Delivery, ZamFollowUp, iso
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
    """Builds the Z02/Z03 deliveries; the journal queues each one once, in the outcome's transaction."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock

    async def zam(self, journal: Journal, mail_delivery: Delivery, trigger: str, ack: MssAck,
                  event: dict[str, Any] | None = None) -> ZamFollowUp | None:
        """The ZAM for one recipient's outcome, or None (not requested, no creator, raw message gone)."""
        ex = await journal.get_exchange(str(mail_delivery.exchange_id))
        if ex is None or mail_delivery.payload is None:
            return None
        order = MailOrder.from_json(bytes(mail_delivery.payload))
        if (trigger == "Z02" and not order.dsn) or (trigger == "Z03" and not order.mdn):
            return None  # ACK_RECEPTION / ACK_LECTURE_MSS not asked for
        original = await original_of(journal, self.settings, ex)
        if original is None:
            return None
        build = build_zam_z02 if trigger == "Z02" else build_zam_z03
        g = self.settings.gateway
        now = self.clock.now()
        text = build(
            original.message, ack, now=now,
            control_id="ZAM" + self.clock.new_id().replace("-", "")[:17], app=g.application, facility=g.facility,
        )
        delivery = zam_row(ex, original, text, unique_id=f"{trigger}:{mail_delivery.id}", at=iso(now),
                           delivery_id=self.clock.new_id(), default_charset=self.settings.pipeline.default_charset)
        return ZamFollowUp(delivery, "once", ack.positive, event={"trigger": trigger, **(event or {})})

    async def for_dead_mail(self, journal: Journal, delivery: Delivery, error: str | None) -> ZamFollowUp | None:
        """Dispatcher hook: the SMTP server refused the mail for good → ZAM^Z02 N with the SMTP code."""
        if delivery.payload is None:
            return None
        ack = smtp_error_ack(MailOrder.from_json(bytes(delivery.payload)), error)
        return await self.zam(journal, delivery, "Z02", ack)
