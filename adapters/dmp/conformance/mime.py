"""MTOM/XOP request bodies read with the standard library's MIME parser.

References: W3C "SOAP Message Transmission Optimization Mechanism" (MTOM) §3 and W3C
"XML-binary Optimized Packaging" (XOP 1.0) §3-4: the body is ``multipart/related`` with
``type="application/xop+xml"``; the root part (``start`` parameter, else the first part)
holds the SOAP envelope; each ``xop:Include href="cid:…"`` names another part by its
Content-ID (RFC 2392: ``cid:`` URLs are percent-encoded Content-IDs without the angle
brackets). IHE ITI TF-2x Appendix V §V.3.6 requires MTOM for ITI-41 and allows it for the
other web-service transactions.

The stdlib parser is fed the HTTP Content-Type as a MIME header. Payloads are taken with
``get_payload(decode=True)``, which keeps the bytes of binary and 8bit parts as sent
(including CR/LF) apart from the CRLF that RFC 2046 §5.1.1 assigns to the next delimiter.
"""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import unquote

__all__ = ["MimeError", "MimePackage", "read_body"]


class MimeError(ValueError):
    """The body is not a readable multipart/related package."""


@dataclass
class MimePackage:
    """The SOAP root part and the attachments of one request, by Content-ID."""

    multipart: bool
    root: bytes
    root_type: str
    parts: dict[str, bytes] = field(default_factory=dict)
    part_types: dict[str, str] = field(default_factory=dict)
    main_type: str = ""
    type_parameter: str = ""


def _clean_cid(value: str) -> str:
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value


def read_body(content_type: str, body: bytes) -> MimePackage:
    """Split an HTTP body into its SOAP root and attachments (a plain SOAP body is one part)."""
    if not content_type.lower().lstrip().startswith("multipart/"):
        return MimePackage(False, body, content_type.split(";")[0].strip().lower(), main_type=content_type)
    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
    if not message.is_multipart():
        raise MimeError("multipart Content-Type but no readable parts (boundary missing or wrong)")
    parts: list[Message] = list(message.iter_parts()) if hasattr(message, "iter_parts") else []
    if not parts:
        raise MimeError("multipart body without any part")
    start = _clean_cid(message.get_param("start", "") or "")  # type: ignore[arg-type]
    package = MimePackage(
        True,
        b"",
        "",
        main_type=message.get_content_type(),
        type_parameter=str(message.get_param("type", "") or ""),
    )
    root: Message | None = None
    for part in parts:
        cid = _clean_cid(str(part.get("Content-ID", "")))
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if root is None and (cid == start if start else True):
            root = part
            package.root = data
            package.root_type = part.get_content_type()
            if cid:
                package.parts.setdefault(cid, data)
            continue
        if cid:
            package.parts[cid] = data
            package.part_types[cid] = part.get_content_type()
    if root is None:
        raise MimeError(f"no part has the Content-ID named by start=<{start}>")
    return package


def cid_of(href: str) -> str:
    """The Content-ID an ``xop:Include/@href`` points to (RFC 2392)."""
    value = href.strip()
    if value.lower().startswith("cid:"):
        value = value[4:]
    return unquote(value)
