"""The MSSanté mail: MIME structure and headers (pure; ``now`` and ids come in).

Headers, with where each rule comes from:

* ``From`` = the application mailbox (BAL applicative) — volet ``mapping-mss`` (FROM
  "obligatoire": courriel de la BAL applicative); ``To`` = one recipient per message (we
  send one message per (document, recipient) so each has its own DSN/MDN and idempotency
  key); ``Reply-To`` ← PRT REPLY (``mapping-mss``).
* ``Subject`` = ``XDM/1.0/DDM+<document title>``: the prefix tells MSSanté clients the mail
  carries an IHE XDM package (the LPS volet's mail body OBX-3 is built the same way; the
  MSSanté client referential asks receiving clients to hide it).
* ``X-MSS-MES: FIN`` on patient mail when the creator forbids replies (Référentiel #2
  Clients de messageries, ECO.2.2.8 §3.4.2.3; volet: NTE-4 ``FIN`` after DESTMSSANTEPAT).
* ``Disposition-Notification-To`` = the application mailbox when ACK_LECTURE_MSS = Y
  (RFC 8098 §2.1).
* ``Message-ID`` = ``<delivery id@mailbox domain>``: stable for the delivery, which is one
  (document, recipient) pair, so retries carry the same id and reports find their delivery.
* Body: text/plain UTF-8 (CORPSMAIL_* or a default), then the attachment ``IHE_XDM.ZIP``
  (application/zip, base64) holding the XDM package.
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime

from gateway.core.mss.orders import MailOrder

__all__ = ["XDM_ATTACHMENT", "build_mail", "message_id_for", "delivery_of_message_id"]

XDM_ATTACHMENT = "IHE_XDM.ZIP"


def message_id_for(delivery_id: str, mailbox: str) -> str:
    """The stable Message-ID of a delivery (RFC 5322 §3.6.4: id-left@id-right)."""
    return f"<{delivery_id}@{mailbox.rpartition('@')[2]}>"


def delivery_of_message_id(message_id: str | None, mailbox: str) -> str | None:
    """Inverse of :func:`message_id_for`, or None when the id is not one of ours."""
    if not message_id:
        return None
    value = message_id.strip().strip("<>")
    left, _, right = value.rpartition("@")
    if not left or right.lower() != mailbox.rpartition("@")[2].lower():
        return None
    return left


def build_mail(
    order: MailOrder, xdm: bytes, *, mailbox: str, delivery_id: str, title: str, now: datetime
) -> EmailMessage:
    """The message for one recipient; the caller serialises it with ``as_bytes()``."""
    msg = EmailMessage()
    msg["From"] = mailbox
    msg["To"] = order.recipient
    if order.reply_to:
        msg["Reply-To"] = order.reply_to
    msg["Subject"] = f"XDM/1.0/DDM+{title or 'Document'}"
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id_for(delivery_id, mailbox)
    if order.mdn:
        msg["Disposition-Notification-To"] = mailbox
    if order.audience == "patient" and order.no_reply:
        msg["X-MSS-MES"] = "FIN"
    msg.set_content(order.body, subtype="plain", charset="utf-8")
    msg.add_attachment(xdm, maintype="application", subtype="zip", filename=XDM_ATTACHMENT)
    return msg
