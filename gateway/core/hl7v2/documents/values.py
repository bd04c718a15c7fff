"""How the volet's field values are read: trimmed text and CE/CWE coded values.

Blanks around a value are not part of it (U+00A0 included: the Ségur MDM sample pads
PRT-8.10 with no-break spaces), and an empty value is absent.
"""

from __future__ import annotations

from gateway.core.hl7v2.reader import Field, Repetition

__all__ = ["text_or_none", "coded_value"]


def text_or_none(value: str) -> str | None:
    """Strip (U+00A0 included) and map empty to None."""
    value = value.strip()
    return value or None


def coded_value(rep: Repetition | Field) -> dict[str, str] | None:
    """A CE / CWE as a CodedValue (code, codeSystem as written, displayName); None without a code."""
    code = rep.comp(1).text.strip()
    if not code:
        return None
    return {
        "code": code,
        "codeSystem": rep.comp(3).text.strip(),
        "displayName": rep.comp(2).text.strip(),
    }
