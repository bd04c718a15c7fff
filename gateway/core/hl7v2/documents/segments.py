"""Which OBX is a document, which is metadata, which is neither; where the PRT are.

One walk over the message, in order (volet §3): an OBX whose OBX-3.3 is ``MetaDMPMSS`` —
or, for older senders (volet v1.2), whose code alone is a metadata code (warning
``META_CODING_SYSTEM``) — is metadata; an ``ED`` OBX is a document when it is the first
or carries XML, any other ``ED`` (the XDM attachment of the LPS/MSSanté sister volet)
and any other OBX are ignored with ``OBX_UNEXPECTED``. PRT segments are numbered as
they come; an NTE with NTE-4 = ``FIN`` right after DESTMSSANTEPAT means the patient
may not reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.core.hl7v2.documents.metadata import META_ALIASES, META_CODES, META_SYSTEM
from gateway.core.hl7v2.reader import Message, Segment
from gateway.model import Finding

__all__ = ["SegmentGroups", "classify_segments"]


@dataclass
class SegmentGroups:
    """The segments of a document message by the part they play; indexes are 1-based and per name."""

    documents: list[tuple[int, Segment]] = field(default_factory=list)  # (n-th OBX, segment)
    metadata: list[tuple[int, str, Segment]] = field(default_factory=list)  # (n-th OBX, code, segment)
    participants: list[tuple[int, Segment]] = field(default_factory=list)  # (n-th PRT, segment)
    patient_no_reply: bool = False  # NTE-4 = FIN after DESTMSSANTEPAT


def classify_segments(msg: Message, findings: list[Finding]) -> SegmentGroups:
    """Walk the segments once and sort the OBX, PRT and the NTE FIN into :class:`SegmentGroups`."""
    groups = SegmentGroups()
    last_meta: str | None = None
    obx_n = prt_n = 0
    for seg in msg:
        if seg.name == "OBX":
            obx_n += 1
            last_meta = _classify_obx(obx_n, seg, groups, findings)
        elif seg.name == "PRT":
            prt_n += 1
            groups.participants.append((prt_n, seg))
        elif seg.name == "NTE" and last_meta == "DESTMSSANTEPAT" and seg[4].value(1).strip() == "FIN":
            groups.patient_no_reply = True
    legacy_meta = sum(1 for _, _, seg in groups.metadata if seg[3].value(3).strip() != META_SYSTEM)
    if legacy_meta:
        findings.append(
            Finding(
                "META_CODING_SYSTEM",
                f"{legacy_meta} metadata OBX lack OBX-3.3 '{META_SYSTEM}'; recognised by their code",
                "OBX-3.3",
                "warning",
            )
        )
    return groups


def _classify_obx(n: int, seg: Segment, groups: SegmentGroups, findings: list[Finding]) -> str | None:
    """File the n-th OBX in ``groups``; return its metadata code when it is a metadata OBX."""
    raw_code = seg[3].value(1).strip()
    meta_code = META_ALIASES.get(raw_code, raw_code)
    if seg[3].value(3).strip() == META_SYSTEM or meta_code in META_CODES:
        groups.metadata.append((n, meta_code, seg))
        return meta_code
    if seg[2].value(1).strip() != "ED":
        findings.append(
            Finding(
                "OBX_UNEXPECTED",
                f"OBX[{n}] ('{raw_code}', OBX-2 '{seg[2].value(1)}') is neither a document "
                "nor a MetaDMPMSS metadata; ignored",
                f"OBX[{n}]",
                "warning",
            )
        )
    elif not groups.documents or seg[5].value(3).strip().upper() == "XML":
        groups.documents.append((n, seg))
    else:
        # e.g. the XDM attachment of the LPS/MSSanté sister volet: not a CDA to process
        findings.append(
            Finding(
                "OBX_UNEXPECTED",
                f"OBX[{n}] is an ED attachment whose OBX-5.3 is not XML; ignored",
                f"OBX[{n}]",
                "warning",
            )
        )
    return None
