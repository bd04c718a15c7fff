"""The embedded documents: how many, and whether each OBX carries a CDA the way the volet says.

ORU carries one or two documents, MDM exactly one (volet §3). For each document OBX
(§6): OBX-3 is the type code and must repeat OBR-4; OBX-5.2/5.3/5.4 say ``TEXT`` (ORU) or
``text`` (MDM), ``XML`` and ``Base64``; OBX-5.5 is decoded and must *look like* a CDA R2
(``gateway.core.cda.sniff_cda``, a prefix scan — the hardened parse comes later).
"""

from __future__ import annotations

from gateway.core.cda import NS as CDA_NS
from gateway.core.cda import sniff_cda
from gateway.core.hl7v2.base64 import decode_payload
from gateway.core.hl7v2.documents.envelope import EXPECTED_VERSION
from gateway.core.hl7v2.documents.message import EmbeddedDocument
from gateway.core.hl7v2.documents.values import coded_value
from gateway.core.hl7v2.reader import Repetition, Segment
from gateway.model import Finding

__all__ = ["read_documents"]

_MAX_DOCUMENTS = {"ORU": 2, "MDM": 1}
_EXPECTED_TEXT = {"ORU": "TEXT", "MDM": "text"}  # OBX-5.2: table 0191 (2.5) vs 0834 (2.6)


def read_documents(
    code: str, doc_obx: list[tuple[int, Segment]], obr_type: dict[str, str] | None, findings: list[Finding]
) -> list[EmbeddedDocument]:
    """Every document OBX, read and checked; ``obr_type`` is OBR-4, which OBX-3 must repeat."""
    if not doc_obx:
        findings.append(Finding("DOC_MISSING", "no document OBX (OBX-2 'ED' carrying the CDA)", "OBX"))
    limit = _MAX_DOCUMENTS[code]
    if len(doc_obx) > limit:
        findings.append(
            Finding(
                "DOC_TOO_MANY",
                f"{len(doc_obx)} document OBX; {code} carries at most {limit}",
                f"OBX[{doc_obx[limit][0]}]",
            )
        )
    return [_read_document(code, n, seg, obr_type, findings) for n, seg in doc_obx]


def _read_document(
    code: str, n: int, seg: Segment, obr_type: dict[str, str] | None, findings: list[Finding]
) -> EmbeddedDocument:
    loc = f"OBX[{n}]"
    type_code = _type_code(loc, seg, obr_type, findings)
    value = seg[5].rep(1)
    _check_encapsulation(code, loc, value, findings)
    return EmbeddedDocument(
        obx_index=n,
        set_id=seg[1].value(1).strip(),
        type_code=type_code,
        result_status=seg[11].value(1).strip(),
        data=_decode_cda(loc, value, findings),
        location=f"{loc}-5.5",
    )


def _type_code(
    loc: str, seg: Segment, obr_type: dict[str, str] | None, findings: list[Finding]
) -> dict[str, str] | None:
    """OBX-3, with its coding system (pre-adopted v2.7 rule) and OBR-4 checked."""
    type_code = coded_value(seg[3])
    if type_code is None:
        findings.append(Finding("DOC_TYPE_MISSING", f"{loc}-3 (document type code) is empty", f"{loc}-3"))
        return None
    if not type_code["codeSystem"]:
        findings.append(
            Finding(
                "CODE_SYSTEM_MISSING",
                f"{loc}-3 '{type_code['code']}' has no coding system in component 3 (pre-adopted v2.7 rule)",
                f"{loc}-3.3",
                "warning",
            )
        )
    if obr_type is None:
        findings.append(
            Finding("DOC_TYPE_OBR_MISMATCH", f"OBR-4 is empty; {loc}-3 should repeat it", "OBR-4", "warning")
        )
    elif (type_code["code"], type_code["codeSystem"]) != (obr_type["code"], obr_type["codeSystem"]):
        findings.append(
            Finding(
                "DOC_TYPE_OBR_MISMATCH",
                f"{loc}-3 '{type_code['code']}^{type_code['codeSystem']}' differs from OBR-4 "
                f"'{obr_type['code']}^{obr_type['codeSystem']}'",
                f"{loc}-3",
                "warning",
            )
        )
    return type_code


def _check_encapsulation(code: str, loc: str, value: Repetition, findings: list[Finding]) -> None:
    """OBX-5.2 (type of data, its case differs between v2.5 and v2.6) and OBX-5.3 (XML)."""
    data_type = value.comp(2).text.strip()
    expected = _EXPECTED_TEXT[code]
    if data_type != expected and data_type.lower() == "text":
        findings.append(
            Finding(
                "DOC_OBX5_CASE",
                f"{loc}-5.2 '{data_type}': {code} (v{EXPECTED_VERSION[code]}) writes '{expected}'",
                f"{loc}-5.2",
                "warning",
            )
        )
    elif data_type != expected:
        findings.append(
            Finding("DOC_OBX5_TYPE", f"{loc}-5.2 '{data_type}': expected '{expected}'", f"{loc}-5.2", "warning")
        )
    subtype = value.comp(3).text.strip()
    if subtype.upper() != "XML":
        findings.append(
            Finding("DOC_OBX5_SUBTYPE", f"{loc}-5.3 '{subtype}': expected 'XML'", f"{loc}-5.3", "warning")
        )


def _decode_cda(loc: str, value: Repetition, findings: list[Finding]) -> bytes:
    """OBX-5.5 decoded (OBX-5.4 must say Base64), or empty bytes when it cannot be."""
    encoding = value.comp(4).text.strip()
    if encoding.lower() != "base64":
        findings.append(
            Finding(
                "DOC_ENCODING_UNSUPPORTED",
                f"{loc}-5.4 '{encoding}': the CDA must be Base64-encoded",
                f"{loc}-5.4",
            )
        )
        return b""
    # raw, not text: the base64 alphabet holds no HL7 delimiter, and the payload is large.
    data, b64_findings = decode_payload(value.comp(5).raw, f"{loc}-5.5")
    findings.extend(b64_findings)
    if data and not sniff_cda(data):
        findings.append(
            Finding(
                "DOC_NOT_CDA",
                f"{loc}-5.5 does not decode to a CDA R2 document "
                f"(root element ClinicalDocument in namespace {CDA_NS})",
                f"{loc}-5.5",
            )
        )
    return data
