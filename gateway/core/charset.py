"""Decode an HL7 v2 message according to the character set it declares in MSH-18.

MSH-18 is read from the raw bytes before any decoding: every supported character
set is ASCII-compatible, so the first segment (terminated by CR, LF or CRLF) can be
scanned byte-wise. Only the first repetition of MSH-18 counts (later repetitions
announce ISO 2022 code extensions, which we do not support).

Supported MSH-18 values (HL7 table 0211) and the Python codec used:

===================  ===============
``UNICODE UTF-8``    ``utf-8``
``8859/1``           ``latin-1``
``8859/2`` … ``/9``  ``iso8859-N``
``8859/15``          ``iso8859-15``
``ASCII``            ``ascii``
(empty)              the configured default (``utf-8`` unless told otherwise)
===================  ===============

Anything else (``UNICODE UTF-16``, ``ISO IR87``, a typo …) is refused with
``CHARSET_UNSUPPORTED`` rather than guessed, so nothing is silently mis-decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import DecodeError

__all__ = [
    "Decoded",
    "CharsetDecodeError",
    "HL7_CHARSETS",
    "codec_for",
    "declared_charset",
    "decode_message",
    "encode_for",
]

UTF8_BOM = b"\xef\xbb\xbf"

HL7_CHARSETS: dict[str, str] = {
    "UNICODE UTF-8": "utf-8",
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
}

_PROBE = "MSH|^~\\&\r"


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded message: ``text``, the Python ``charset`` used and MSH-18 ``declared`` as written."""

    text: str
    charset: str
    declared: str


class CharsetDecodeError(DecodeError):
    """A :class:`DecodeError` that also says at which byte of the message decoding failed."""

    def __init__(
        self, message: str, *, code: str | None = None, location: str | None = None, offset: int | None = None
    ) -> None:
        super().__init__(message, code=code, location=location)
        self.offset = offset


def _check_default(default: str) -> str:
    codec = HL7_CHARSETS.get(default.strip().upper(), default)
    try:
        ascii_compatible = _PROBE.encode(codec) == _PROBE.encode("ascii")
    except LookupError as exc:
        raise ValueError(f"unknown default charset {default!r}") from exc
    if not ascii_compatible:
        raise ValueError(f"default charset {default!r} is not ASCII-compatible")
    return codec


def declared_charset(raw: bytes) -> str:
    """MSH-18 (first repetition) as written, read from the raw bytes; ``""`` when absent."""
    if raw.startswith(UTF8_BOM):
        raw = raw[len(UTF8_BOM) :]
    if not raw.startswith(b"MSH") or len(raw) < 8:
        return ""
    ends = [p for p in (raw.find(b"\r"), raw.find(b"\n")) if p != -1]
    first = raw[: min(ends)] if ends else raw
    sep = first[3:4]
    if len(first) < 8 or not sep or sep.isalnum() or sep.isspace():
        return ""  # "MSH\r…" or a letter as separator: no MSH-18 can be read, so none is declared
    fields = first.split(sep)
    # fields[0] is "MSH" and fields[1] is MSH-2, so MSH-n is fields[n - 1]
    if len(fields) < 18:
        return ""
    value = fields[17]
    enc = fields[1]
    if len(enc) >= 2:
        value = value.split(enc[1:2])[0]  # first repetition only
    return value.decode("ascii", errors="replace").strip()


def codec_for(declared: str, default: str = "utf-8") -> str:
    """The Python codec for an MSH-18 value; raises ``DecodeError(CHARSET_UNSUPPORTED)``."""
    if not declared:
        return _check_default(default)
    codec = HL7_CHARSETS.get(" ".join(declared.upper().split()))
    if codec is None:
        raise DecodeError(
            "unsupported character set in MSH-18", code="CHARSET_UNSUPPORTED", location="MSH-18"
        )
    return codec


def decode_message(raw: bytes, default: str = "utf-8") -> Decoded:
    """Decode ``raw`` with the charset MSH-18 declares (``default`` when MSH-18 is empty).

    A leading UTF-8 BOM is dropped. Raises :class:`DecodeError` with
    ``location="MSH-18"``: ``CHARSET_UNSUPPORTED`` for an unknown MSH-18, and
    ``CHARSET_INVALID`` (a :class:`CharsetDecodeError` carrying the byte offset,
    never the bytes) when the content does not fit the declared charset.
    """
    skipped = 0
    if raw.startswith(UTF8_BOM):
        raw = raw[len(UTF8_BOM) :]
        skipped = len(UTF8_BOM)
    declared = declared_charset(raw)
    codec = codec_for(declared, default)
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        offset = exc.start + skipped
        raise CharsetDecodeError(
            f"byte at offset {offset} is invalid for {declared or 'the default charset'} ({codec})",
            code="CHARSET_INVALID",
            location="MSH-18",
            offset=offset,
        ) from None  # the chained error would repeat the offending bytes
    return Decoded(text=text, charset=codec, declared=declared)


def encode_for(charset_declared: str, text: str, default: str = "utf-8") -> bytes:
    """Encode an outgoing message (ACK, ZAM) in the charset MSH-18 declares.

    Never raises for content: an acknowledgement must always go out, so characters
    the charset cannot hold become ``?``, and an unsupported MSH-18 falls back to
    ASCII, which every ASCII-compatible reader decodes.
    """
    try:
        codec = codec_for(charset_declared, default)
    except DecodeError:
        codec = "ascii"
    return text.encode(codec, errors="replace")
