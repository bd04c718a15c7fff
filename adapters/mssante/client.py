"""Outbound MSSanté destination: one mail per (document, recipient) over SMTP with TLS.

How a crash never mails a recipient twice
-----------------------------------------
The dispatcher claims the delivery (one row per document and recipient) before anything is
sent, and on any attempt after the first — a retry or the recovery of an attempt a crash
interrupted — asks :meth:`MssanteDestination._lookup` first. The lookup must be able to
see a message the SMTP server accepted even when we died before recording the 250 reply.
A journal record cannot (the crash may fall between the server's 250 and our commit), so
the proof comes from the mail system itself:

* every message is submitted in **one SMTP transaction** with two envelope recipients: the
  real recipient and the application mailbox itself (``NOTIFY=NEVER`` on that copy,
  RFC 3461 §4.1). The server accepts or refuses the transaction as a whole (RFC 5321
  §4.1.1.4: after the final ``250`` it takes responsibility for every accepted recipient),
  so our own copy exists if and only if the message to the recipient was accepted;
* the copy carries the same stable ``Message-ID`` (``<delivery id@domain>``); the lookup
  searches the application mailbox over IMAP for it (``SEARCH HEADER Message-ID``) and,
  since delivery to our own mailbox may lag the ``250``, keeps looking for
  ``lookup_wait_seconds`` before it answers "not there";
* only when the copy is absent is the message sent again, with the same Message-ID.

Error mapping (RFC 5321 §4.2.1 reply classes; RFC 3463 enhanced codes kept in the text):
TCP/TLS not established → ``DestinationUnavailable`` (``CONNECTION_REFUSED``/``TLS``:
nothing sent, no lookup needed); a 4yz reply at any step → ``DestinationUnavailable``
(retried); a 5yz reply for the recipient or the data → ``DestinationRejected`` with code
``SMTP_<code>`` (dead; the creator gets ZAM^Z02 N with the SMTP code); the connection lost
after the data was sent → ``DestinationUnavailable`` ``SMTP_AMBIGUOUS`` (lookup first).

The stdlib ``smtplib`` runs in a worker thread: it speaks ESMTP with STARTTLS, implicit TLS,
client certificates through an ``SSLContext`` and per-recipient DSN parameters
(``mail()``/``rcpt()`` options), so no dependency is added for one request/response
exchange per message; the dispatcher already bounds concurrency.
"""

from __future__ import annotations

import asyncio
import email.policy
import imaplib
import smtplib
import ssl
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from adapters.base import BaseDestination, RetrySettings
from adapters.mssante.config import MssanteConfig
from adapters.mssante.mailbox import open_mailbox
from adapters.mssante.mime import build_mail, message_id_for
from adapters.mssante.xdm import build_xdm
from gateway.core.mss.orders import MailOrder
from gateway.errors import DestinationRejected, DestinationUnavailable
from gateway.ports import Clock, Payload, SendResult, SystemClock
from gateway.settings import DestinationSettings, Settings

__all__ = ["MssanteDestination", "SmtpOutcome", "destination_from_settings", "submit"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SmtpOutcome:
    """The server's final reply to an accepted transaction."""

    code: int
    text: str
    dsn: bool  # whether the server offered DSN (RFC 3461) and we asked for it


def _text(reply: bytes | str) -> str:
    return (reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)).replace("\n", " ")


def _fail(step: str, code: int, reply: bytes | str) -> Exception:
    text = f"{step}: {code} {_text(reply)}"[:300]
    if 400 <= code < 500:
        return DestinationUnavailable(text, code=f"SMTP_{code}")
    return DestinationRejected(text, code=f"SMTP_{code}")


def submit(config: MssanteConfig, order: MailOrder, message: bytes, *, envelope_id: str) -> SmtpOutcome:
    """One SMTP transaction (blocking): recipient + our own copy, DSN parameters when offered."""
    ctx = config.tls_context()
    smtp = _connect(config, ctx)
    data_sent = False
    try:
        _start_session(smtp, config, ctx)
        dsn = order.dsn and smtp.has_extn("dsn")
        _mail_from(smtp, config, size=len(message), envelope_id=envelope_id, dsn=dsn)
        _rcpt_to(smtp, config, order.recipient, dsn=dsn)
        data_sent = True
        code, reply = smtp.data(message)
        if code != 250:
            raise _fail("DATA", code, reply)
        return SmtpOutcome(code, _text(reply), dsn)
    except smtplib.SMTPResponseException as exc:
        raise _fail("SMTP", exc.smtp_code, exc.smtp_error) from exc
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        if data_sent:
            raise DestinationUnavailable(f"connection lost during DATA: {type(exc).__name__}",
                                         code="SMTP_AMBIGUOUS") from exc
        raise DestinationUnavailable(f"connection lost: {type(exc).__name__}", code="CONNECTION") from exc
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


def _connect(config: MssanteConfig, ctx: ssl.SSLContext) -> smtplib.SMTP:
    """TCP (and implicit TLS) connection; nothing is sent yet, so no failure here needs a lookup."""
    try:
        if config.smtp_security == "tls":
            return smtplib.SMTP_SSL(config.smtp_host, config.smtp_port, timeout=config.timeout, context=ctx)
        return smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.timeout)
    except ConnectionRefusedError as exc:
        raise DestinationUnavailable("SMTP connection refused", code="CONNECTION_REFUSED") from exc
    except ssl.SSLError as exc:
        raise DestinationUnavailable(f"TLS handshake failed: {exc.reason}", code="CONNECTION_REFUSED") from exc
    except smtplib.SMTPConnectError as exc:
        raise _fail("connect", exc.smtp_code, exc.smtp_error) from exc


def _start_session(smtp: smtplib.SMTP, config: MssanteConfig, ctx: ssl.SSLContext) -> None:
    """EHLO, STARTTLS when configured (EHLO again over TLS, RFC 3207 §4.2), then AUTH."""
    smtp.ehlo()
    if config.smtp_security == "starttls":
        if not smtp.has_extn("starttls"):
            raise DestinationRejected("server does not offer STARTTLS", code="SMTP_NO_TLS")
        try:
            smtp.starttls(context=ctx)
        except ssl.SSLError as exc:
            raise DestinationUnavailable(f"TLS handshake failed: {exc.reason}",
                                         code="CONNECTION_REFUSED") from exc
        smtp.ehlo()
    if config.smtp_user:
        smtp.login(config.smtp_user, config.smtp_password)


def _mail_from(smtp: smtplib.SMTP, config: MssanteConfig, *, size: int, envelope_id: str, dsn: bool) -> None:
    """MAIL FROM the application mailbox, with ENVID/RET (RFC 3461 §4.3-4.4) and SIZE (RFC 1870)."""
    mail_opts = [f"ENVID={envelope_id}", "RET=HDRS"] if dsn else []
    if smtp.has_extn("size"):
        mail_opts.append(f"SIZE={size}")
    code, reply = smtp.mail(config.mailbox, mail_opts)
    if code != 250:
        raise _fail("MAIL FROM", code, reply)


def _rcpt_to(smtp: smtplib.SMTP, config: MssanteConfig, recipient: str, *, dsn: bool) -> None:
    """The recipient, then our own copy in the same transaction (what the lookup searches for)."""
    # RFC 3461 §4.2 ORCPT: the address as we were asked for it, xtext-encoded (plain ASCII here).
    rcpt_opts = ["NOTIFY=SUCCESS,FAILURE,DELAY", f"ORCPT=rfc822;{recipient}"] if dsn else []
    code, reply = smtp.rcpt(recipient, rcpt_opts)
    if code not in (250, 251):
        smtp.rset()
        raise _fail("RCPT TO", code, reply)
    code, reply = smtp.rcpt(config.mailbox, ["NOTIFY=NEVER"] if smtp.has_extn("dsn") else [])
    if code not in (250, 251):
        smtp.rset()
        # Without our own copy a crash could not be told apart from a refusal: do not send.
        raise DestinationUnavailable(f"own copy refused: {code} {_text(reply)}"[:300], code=f"SMTP_{code}")


def find_copy(config: MssanteConfig, message_id: str) -> bool:
    """Whether our own copy of ``message_id`` is in the application mailbox (blocking)."""
    deadline = time.monotonic() + config.lookup_wait_seconds
    while True:
        with open_mailbox(config) as box:
            box.select(config.imap_folder, readonly=True)
            if box.has_message_id(message_id):
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


class MssanteDestination(BaseDestination):
    """``kind = "mssante"``: the XDM-packaged CDA mailed to one recipient per delivery."""

    kind = "mssante"
    lookup_before_retry = True

    def __init__(
        self, name: str, config: MssanteConfig, *, retry: RetrySettings | None = None, clock: Clock | None = None
    ) -> None:
        super().__init__(name, retry=retry)
        self.config = config
        self.clock = clock or SystemClock()

    def render(self, payload: Payload, now: datetime) -> tuple[MailOrder, bytes]:
        """The order and the serialised message of a delivery (pure apart from ``now``)."""
        if payload.mail is None or payload.document is None or payload.xds is None:
            raise DestinationRejected("mail delivery without its order or document", code="MSS_NO_PAYLOAD")
        order = MailOrder.from_json(payload.mail)
        xds: dict[str, Any] = dict(payload.xds)
        xdm = build_xdm(xds, payload.document, now=now)
        title = str(xds.get("documentEntry", {}).get("title") or "Document")
        msg = build_mail(order, xdm, mailbox=self.config.mailbox, delivery_id=payload.delivery_id,
                         title=title, now=now)
        # RFC 5321 §2.3.8: CRLF line endings on the wire (smtplib does not fix bytes).
        return order, msg.as_bytes(policy=email.policy.SMTP)

    async def _send(self, payload: Payload) -> SendResult:
        order, message = self.render(payload, self.clock.now())
        outcome = await asyncio.to_thread(submit, self.config, order, message, envelope_id=payload.delivery_id)
        mid = message_id_for(payload.delivery_id, self.config.mailbox)
        head = message.split(b"\r\n\r\n", 1)[0]
        return SendResult(
            remote_id=mid, request=head.decode("utf-8", "replace"), response=f"{outcome.code} {outcome.text}",
            status=outcome.code, detail={"message_id": mid, "audience": order.audience, "dsn": outcome.dsn},
        )

    async def _lookup(self, payload: Payload) -> bool:
        mid = message_id_for(payload.delivery_id, self.config.mailbox)
        try:
            found = await asyncio.to_thread(find_copy, self.config, mid)
        except (imaplib.IMAP4.error, ssl.SSLError) as exc:
            # Cannot tell whether the mail left: never resend blind.
            raise DestinationUnavailable(f"IMAP lookup failed: {type(exc).__name__}", code="LOOKUP_FAILED") from exc
        log.info("mssante.lookup", destination=self.name, delivery_id=payload.delivery_id, found=found)
        return found


def destination_from_settings(d: DestinationSettings, settings: Settings, clock: Clock) -> MssanteDestination:
    """A ``kind = "mssante"`` table: its options are :class:`MssanteConfig`'s fields."""
    return MssanteDestination(d.name, MssanteConfig.from_options(d.options),
                              retry=RetrySettings.from_settings(settings), clock=clock)
