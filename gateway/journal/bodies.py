"""A document's bytes are stored once, not again inside its FHIR Bundle.

The ITI-65 Bundle carries the CDA a second time, base64 in its ``Binary`` entry (a third
larger than the CDA itself). The journal keeps the CDA in ``documents.cda`` already, so the
stored Bundle leaves that ``data`` out and a read puts it back: what a reader gets is the
Bundle as it was built. A Binary whose data is not this document's (none is, today) is
stored as it is.
"""

from __future__ import annotations

import base64
from typing import Any

__all__ = ["stored_bundle", "full_bundle"]

#: takes the place of Binary.data; ':' is not in the base64 alphabet, so no real data is this
_FROM_CDA = "relais:documents.cda"


def _binaries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for e in bundle.get("entry", []) if isinstance(e, dict)
            and isinstance(r := e.get("resource"), dict) and r.get("resourceType") == "Binary"]


def stored_bundle(bundle: dict[str, Any], cda: bytes) -> dict[str, Any]:
    """``bundle`` with the Binary data that repeats ``cda`` replaced by a marker (a copy)."""
    binaries = _binaries(bundle)
    if not binaries:
        return bundle
    encoded = base64.b64encode(cda).decode("ascii")
    if not any(b.get("data") == encoded for b in binaries):
        return bundle
    entries = []
    for entry in bundle["entry"]:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Binary" and resource.get("data") == encoded:
            entry = {**entry, "resource": {**resource, "data": _FROM_CDA}}
        entries.append(entry)
    return {**bundle, "entry": entries}


def full_bundle(bundle: dict[str, Any], cda: bytes | None) -> dict[str, Any]:
    """The Bundle as built: the marker replaced by ``cda`` in base64 (in place)."""
    binaries = [b for b in _binaries(bundle) if b.get("data") == _FROM_CDA]
    if binaries and cda is not None:
        encoded = base64.b64encode(bytes(cda)).decode("ascii")
        for b in binaries:
            b["data"] = encoded
    return bundle
