"""Read delivery status notifications (DSN, RFC 3464) and disposition notifications (MDN, RFC 8098).

Pure: bytes of one message in, a :class:`Report` out (or ``None`` when the message is not
a report). Matching a report to what we sent uses, in order of trust:

* DSN: ``Original-Envelope-Id`` (RFC 3464 §2.2.1), the ``ENVID`` we gave at ``MAIL FROM``
  (RFC 3461 §4.4); else the ``Message-ID`` of the returned message or headers (third part,
  ``message/rfc822`` or ``text/rfc822-headers``, RFC 3462 / RFC 6522 §3);
* MDN: ``Original-Message-ID`` (RFC 8098 §3.2.5), else ``In-Reply-To`` / ``References``.

Per-recipient DSN fields (RFC 3464 §2.3): ``Original-Recipient`` (the ``ORCPT`` we gave,
``rfc822;addr``), ``Final-Recipient``, ``Action`` (failed | delayed | delivered | relayed |
expanded), ``Status`` (RFC 3463 ``class.subject.detail``), ``Diagnostic-Code``
(``smtp; 550 5.1.1 ...``). MDN ``Disposition`` (RFC 8098 §3.2.6):
``action-mode/sending-mode; type`` with type displayed | deleted | dispatched | processed,
``/error`` or ``/failure`` modifiers in older forms.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from typing import Literal

__all__ = ["RecipientStatus", "Report", "parse_report", "smtp_code"]

ReportKind = Literal["dsn", "mdn"]

_ADDR = re.compile(r"^\s*(?:rfc822\s*;)?\s*<?([^<>\s;]+@[^<>\s;]+)>?\s*$", re.IGNORECASE)
_SMTP = re.compile(r"\b([245]\d\d)\b")
_ENH = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


@dataclass(frozen=True)
class RecipientStatus:
    """One recipient's line in a report."""

    address: str  # Original-Recipient when given (it is what we asked for), else Final-Recipient
    action: str  # DSN: failed/delayed/delivered/relayed/expanded; MDN: displayed/deleted/...
    status: str = ""  # DSN enhanced status (5.1.1); MDN: the whole Disposition value
    diagnostic: str = ""  # DSN Diagnostic-Code text (type stripped)

    @property
    def positive(self) -> bool:
        return self.action in ("delivered", "relayed", "expanded", "displayed")

    @property
    def final(self) -> bool:
        """Whether this line settles the outcome (a ``delayed`` DSN does not)."""
        return self.action != "delayed"


@dataclass(frozen=True)
class Report:
    """A DSN or an MDN, reduced to what the gateway acts on."""

    kind: ReportKind
    envelope_id: str | None = None  # DSN Original-Envelope-Id
    original_message_id: str | None = None  # Message-ID of what we sent, when the report carries it
    recipients: tuple[RecipientStatus, ...] = field(default_factory=tuple)


def _address(value: str | None) -> str | None:
    if not value:
        return None
    m = _ADDR.match(value.strip())
    return m.group(1).lower() if m else None


def _msgid(value: str | None) -> str | None:
    if not value:
        return None
    m = re.search(r"<[^<>\s]+>", value)
    return m.group(0) if m else value.strip() or None


def smtp_code(status: str, diagnostic: str) -> str:
    """The SMTP reply code for ZAM ERR-5: the basic code from the diagnostic, else the enhanced status."""
    m = _SMTP.search(diagnostic)
    enh = _ENH.search(diagnostic)
    basic = m.group(1) if m else ""
    detail = status or (enh.group(1) if enh else "")
    return " ".join(p for p in (basic, detail) if p) or "unknown"


def _blocks(text: str) -> list[Message]:
    """Header blocks separated by blank lines (RFC 3464 §2.1 / RFC 8098 §3.1)."""
    parser = HeaderParser()
    chunks = re.split(r"\r?\n\s*\r?\n", text.strip())
    return [parser.parsestr(c + "\n\n") for c in chunks if c.strip()]


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace")
    inner = part.get_payload()
    if isinstance(inner, list):  # the email package pre-parses message/delivery-status into blocks
        return "\n\n".join(m.as_string() for m in inner if isinstance(m, Message))
    return str(inner or "")


def _returned_message_id(part: Message) -> str | None:
    inner = part.get_payload()
    if isinstance(inner, list) and inner and isinstance(inner[0], Message):
        return _msgid(inner[0].get("Message-ID"))
    text = _part_text(part)
    return _msgid(HeaderParser().parsestr(text).get("Message-ID"))


def parse_report(raw: bytes) -> Report | None:
    """A DSN or MDN from the raw message, or ``None`` if it is neither (then it is ordinary mail)."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    if msg.get_content_type() != "multipart/report":
        return None
    param = msg.get_param("report-type")
    report_type = param.lower() if isinstance(param, str) else ""
    parts = [p for p in msg.get_payload() if isinstance(p, Message)] if msg.is_multipart() else []
    if report_type == "delivery-status":
        return _dsn(msg, parts)
    if report_type == "disposition-notification":
        return _mdn(msg, parts)
    return None


def _dsn(msg: Message, parts: list[Message]) -> Report | None:
    status_part = next((p for p in parts if p.get_content_type() == "message/delivery-status"), None)
    if status_part is None:
        return None
    blocks = _blocks(_part_text(status_part))
    if not blocks:
        return None
    per_message, per_recipient = blocks[0], blocks[1:]
    recipients: list[RecipientStatus] = []
    for b in per_recipient:
        addr = _address(b.get("Original-Recipient")) or _address(b.get("Final-Recipient"))
        action = (b.get("Action") or "").strip().lower()
        if not addr or not action:
            continue
        diag = (b.get("Diagnostic-Code") or "").strip()
        diag = diag.split(";", 1)[1].strip() if ";" in diag else diag
        recipients.append(RecipientStatus(addr, action, (b.get("Status") or "").strip(), " ".join(diag.split())))
    returned = next(
        (p for p in parts if p.get_content_type() in ("message/rfc822", "text/rfc822-headers")), None
    )
    return Report(
        kind="dsn",
        envelope_id=(per_message.get("Original-Envelope-Id") or "").strip() or None,
        original_message_id=_returned_message_id(returned) if returned is not None else None,
        recipients=tuple(recipients),
    )


def _mdn(msg: Message, parts: list[Message]) -> Report | None:
    part = next((p for p in parts if p.get_content_type() == "message/disposition-notification"), None)
    if part is None:
        return None
    blocks = _blocks(_part_text(part))
    if not blocks:
        return None
    fields = blocks[0]
    disposition = " ".join((fields.get("Disposition") or "").split())
    # "manual-action/MDN-sent-manually; displayed" → "displayed" (RFC 8098 §3.2.6.2)
    kind = disposition.split(";", 1)[1].strip().split("/")[0].strip().lower() if ";" in disposition else ""
    addr = _address(fields.get("Final-Recipient")) or _address(fields.get("Original-Recipient"))
    original = _msgid(fields.get("Original-Message-ID")) or _msgid(msg.get("In-Reply-To"))
    recipients = (RecipientStatus(addr, kind or "unknown", disposition),) if addr else ()
    return Report(kind="mdn", original_message_id=original, recipients=recipients)
