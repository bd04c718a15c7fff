"""Tolerant, bounded base64 decoding for HL7 v2 ED payloads (OBX-5.5).

Senders in the field (and the ANS samples themselves, see the volet notes §11) drop
the ``=`` padding, wrap lines or truncate the text. We re-pad when the length
allows it (a warning: the bytes are still exactly what was meant) and refuse what
cannot be decoded without guessing (an error): a length of 4n+1 characters, any
character outside the standard alphabet, or padding that is in the wrong place.

Codes: ``B64_EMPTY``, ``B64_INVALID``, ``B64_LENGTH`` (errors) and
``B64_PADDING_MISSING`` (warning). Messages never quote the payload.
"""

from __future__ import annotations

import base64 as _b64
import binascii
import re

from gateway.model import Finding

__all__ = ["decode_payload"]

# Standard alphabet only: the URL-safe variant (-_) is not what HL7 table 0299 means by Base64.
_ALPHABET = re.compile(r"[A-Za-z0-9+/]*")


def decode_payload(text: str, location: str) -> tuple[bytes, list[Finding]]:
    """Decode ``text`` (base64, possibly wrapped or unpadded) found at ``location``.

    Returns ``(data, findings)``. On error ``data`` is ``b""`` and ``findings``
    holds one error; a re-padded payload decodes normally and adds the warning
    ``B64_PADDING_MISSING``.
    """
    compact = "".join(text.split())  # line breaks and blanks are legal in MIME-style base64
    if not compact:
        return b"", [Finding("B64_EMPTY", "base64 payload is empty", location)]
    core = compact.rstrip("=")
    padding = len(compact) - len(core)
    if not _ALPHABET.fullmatch(core):
        return b"", [
            Finding("B64_INVALID", "base64 payload contains characters outside the base64 alphabet", location)
        ]
    if len(core) % 4 == 1:
        # 6 bits cannot make a byte: the text was cut, no padding can repair it.
        return b"", [
            Finding(
                "B64_LENGTH",
                f"base64 payload has an impossible length ({len(core)} characters, 4n+1); it is truncated",
                location,
            )
        ]
    expected = (-len(core)) % 4
    findings: list[Finding] = []
    if padding > expected:
        return b"", [Finding("B64_INVALID", "base64 payload has excess '=' padding", location)]
    if padding < expected:
        findings.append(
            Finding(
                "B64_PADDING_MISSING",
                "base64 payload lacks its '=' padding; re-padded before decoding",
                location,
                severity="warning",
            )
        )
    try:
        data = _b64.b64decode(core + "=" * expected, validate=True)
    except (binascii.Error, ValueError):
        return b"", [Finding("B64_INVALID", "base64 payload cannot be decoded", location)]
    return data, findings
