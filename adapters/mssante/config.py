"""Typed configuration of an ``mssante`` destination, read from its ``[[destination]]`` table.

    [[destination]]
    name = "mss"
    kind = "mssante"
    mailbox = "relais@pfi.mssante.fr"      # the application mailbox (BAL applicative): From
    smtp_host = "smtp.operateur.mssante.fr"
    smtp_port = 587
    smtp_security = "starttls"             # or "tls" (implicit TLS, port 465)
    client_cert = "/etc/relais/mss.crt"    # the structure's certificate (client authentication)
    client_key = "/etc/relais/mss.key"
    ca_file = "/etc/relais/igc-sante.pem"  # trust anchors for the operator's servers
    imap_host = "imap.operateur.mssante.fr"
    imap_port = 993
    imap_security = "tls"                  # or "starttls" (port 143)
    imap_user = "relais@pfi.mssante.fr"
    imap_password_env = "RELAIS_MSS_IMAP_PASSWORD"   # secrets only from the environment
    poll_seconds = 30
    inbound_destination = "dpi"            # an mllp destination: mail received here goes there (LPS MDM)
    inbound_application = "DPI-X"
    inbound_facility = "HOPITAL-X"

(the keys sit directly in the ``[[destination]]`` table, as for the other kinds.)
Transport, from the MSSanté client interfaces (ASIP Santé « DST des interfaces MSSanté des
clients de messagerie », §3 « La sécurisation des échanges »: a TLS session with mutual
authentication before SMTP with STARTTLS on 587 and IMAP with STARTTLS on 143) and the
Référentiel socle MSSanté #2 (ECO.1.1.10: IGC Santé is the only accepted CA — that is
``ca_file`` in production). Implicit TLS (465 / 993, RFC 8314) is offered as well.

Secrets are never in the file: ``imap_password_env`` / ``smtp_password_env`` name
environment variables.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MssanteConfig"]


@dataclass(frozen=True)
class MssanteConfig:
    """SMTP (submission), IMAP (reports, inbound, lookup) and TLS settings of one application mailbox."""

    mailbox: str
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 587
    smtp_security: str = "starttls"  # starttls | tls
    smtp_user: str = ""
    smtp_password: str = ""
    client_cert: str = ""
    client_key: str = ""
    ca_file: str = ""
    imap_host: str = ""
    imap_port: int = 993
    imap_security: str = "tls"  # tls (implicit, RFC 8314) | starttls (RFC 2595, port 143)
    imap_user: str = ""
    imap_password: str = ""
    imap_folder: str = "INBOX"
    poll_seconds: float = 30.0
    lookup_wait_seconds: float = 5.0  # how long a lookup waits for our own copy to be filed
    timeout: float = 30.0
    inbound_destination: str = ""  # name of the mllp destination that receives inbound documents (DPI)
    inbound_application: str = "DPI"  # MSH-5 / MSH-6 of the LPS MDM sent to the DPI
    inbound_facility: str = ""

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MssanteConfig:
        opts = dict(options)
        for key in ("imap_password", "smtp_password"):
            env = opts.pop(f"{key}_env", None)
            if env:
                opts[key] = os.environ.get(str(env), "")
        if not opts.get("mailbox") or "@" not in str(opts["mailbox"]):
            raise ValueError("an mssante destination needs options.mailbox (the application mailbox)")
        unknown = set(opts) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown mssante options: {', '.join(sorted(unknown))}")
        for key, default in (("smtp_security", "starttls"), ("imap_security", "tls")):
            if opts.get(key, default) not in ("starttls", "tls"):
                raise ValueError(f"{key} must be 'starttls' or 'tls'")
        typed: dict[str, Any] = {}
        for name, f in cls.__dataclass_fields__.items():
            if name in opts:
                kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
                value = opts[name]
                typed[name] = int(value) if kind == "int" else float(value) if kind == "float" else str(value)
        return cls(**typed)

    @property
    def imap_login(self) -> str:
        return self.imap_user or self.mailbox

    def tls_context(self) -> ssl.SSLContext:
        """Verifying client context carrying our certificate (mutual TLS, as MSSanté operators require)."""
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.client_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key or None)
        return ctx
