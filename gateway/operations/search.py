"""What a search term is: one box for an INS, an IPP, a document uniqueId, an exchange id or a control id.

Operators and viewers type the same things; only operators may search by patient or
document (those keys are patient data). A viewer's term is only ever matched against
exchange ids and control ids, so the answer never tells a viewer that a patient exists.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["search_filters", "SearchKind"]

SearchKind = str  # "patient" | "document" | "exchange" | "control"

_INS = re.compile(r"[12]\d{12}(\d{2})?")  # NIR without or with its key; the 7/8 of NIA/test INS start with 1/2 too
_UUID_PREFIX = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{0,4}){0,4}[0-9a-f]*", re.IGNORECASE)
_OID = re.compile(r"[0-2](\.\d+){2,}(\^[^\s^]+)?")  # a document uniqueId: OID, or OID^extension (refused later)


def search_filters(term: str, *, operator: bool) -> tuple[SearchKind, dict[str, Any]]:
    """The journal filter for ``term`` and what kind of key it was taken for."""
    term = term.strip()
    if operator:
        if _INS.fullmatch(term):
            return "patient", {"patient": term}
        if _OID.fullmatch(term):
            return "document", {"document": term}
        if "|" in term:
            return "patient", {"patient": term}  # an IPP with its authority, as the registry keys it
    if _UUID_PREFIX.fullmatch(term) and len(term) >= 8:
        return "exchange", {"control_or_id": term}
    return "control", {"control_or_id": term}
