"""What can still be read from an MSH the reader refuses (malformed MSH-2, bad charset).

HL7 v2.5 ch. 2 §2.9.2: the acknowledgement's MSA-2 is the MSH-10 of the message it
answers. When MSH-2 is malformed (two encoding characters, repeated ones …) the
message cannot be parsed, but as long as MSH-1 is a usable separator the fields can
still be split and MSH-10 read *as bytes*: echoing those bytes lets the sender match
our AR to its message instead of getting an anonymous refusal.
"""

from __future__ import annotations

__all__ = ["salvage_control_id"]

_MAX_CONTROL_ID = 199  # MSH-10 is ST(199) since v2.5; anything longer is not an id


def salvage_control_id(raw: bytes) -> bytes | None:
    """MSH-10 exactly as received, or None when no field structure can be trusted."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.startswith(b"MSH") or len(raw) < 5:
        return None
    sep = raw[3:4]
    if sep.isalnum() or sep in (b" ", b"\t", b"\r", b"\n"):
        return None
    ends = [p for p in (raw.find(b"\r"), raw.find(b"\n")) if p != -1]
    first = raw[: min(ends)] if ends else raw
    fields = first.split(sep)
    # fields[0] is "MSH", fields[1] is MSH-2, so MSH-n is fields[n - 1]
    if len(fields) < 10:
        return None
    value = fields[9]
    if not value.strip() or len(value) > _MAX_CONTROL_ID:
        return None
    return value
