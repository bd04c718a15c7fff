"""Blocking IMAP access to the application mailbox (run in a thread by the callers).

IMAP4rev1 (RFC 3501) over implicit TLS (RFC 8314 §3, port 993) or STARTTLS (RFC 2595, port
143, what the MSSanté client interfaces specify), authenticated with LOGIN after the TLS handshake (which presents our client certificate when configured). Used for:

* the lookup before a resend: ``SEARCH HEADER Message-ID <id>`` (RFC 3501 §6.4.4) in the
  folder where our own copy of each sent message lands;
* the report poller and inbound mail: ``UID SEARCH UNSEEN``, ``UID FETCH (RFC822)``,
  ``UID STORE +FLAGS (\\Seen)`` once the journal holds what the message said.
"""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from adapters.mssante.config import MssanteConfig

__all__ = ["Mailbox", "open_mailbox"]


class Mailbox:
    """One logged-in IMAP session on the application mailbox."""

    def __init__(self, conn: imaplib.IMAP4) -> None:
        self.conn = conn

    def select(self, folder: str, *, readonly: bool = False) -> None:
        typ, data = self.conn.select(folder, readonly=readonly)
        if typ != "OK":
            raise imaplib.IMAP4.error(f"cannot select {folder}: {data!r}")

    def has_message_id(self, message_id: str) -> bool:
        typ, data = self.conn.search(None, "HEADER", "Message-ID", f'"{message_id}"')
        return typ == "OK" and bool(data and data[0].split())

    def unseen(self) -> list[bytes]:
        typ, data = self.conn.uid("SEARCH", None, "UNSEEN")  # type: ignore[arg-type]
        return data[0].split() if typ == "OK" and data and data[0] else []

    def fetch(self, uid: bytes) -> bytes | None:
        typ, data = self.conn.uid("FETCH", uid, "(BODY.PEEK[])")  # type: ignore[arg-type]
        if typ != "OK":
            return None
        for item in data:
            if isinstance(item, tuple) and len(item) == 2:
                return bytes(item[1])
        return None

    def mark_seen(self, uid: bytes) -> None:
        self.conn.uid("STORE", uid, "+FLAGS", "(\\Seen)")  # type: ignore[arg-type]


@contextmanager
def open_mailbox(config: MssanteConfig) -> Iterator[Mailbox]:
    """Connect, log in, yield, log out."""
    host = config.imap_host or config.smtp_host
    conn: imaplib.IMAP4
    if config.imap_security == "starttls":
        conn = imaplib.IMAP4(host, config.imap_port, timeout=config.timeout)
        conn.starttls(ssl_context=config.tls_context())  # before LOGIN, never in clear (RFC 2595 §3.1)
    else:
        conn = imaplib.IMAP4_SSL(host, config.imap_port, ssl_context=config.tls_context(), timeout=config.timeout)
    try:
        conn.login(config.imap_login, config.imap_password)
        yield Mailbox(conn)
    finally:
        with suppress(imaplib.IMAP4.error, OSError):
            conn.logout()
