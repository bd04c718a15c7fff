"""The MDM TXA segment: which document the request is about, and which one it replaces.

TXA-12 is the unique id of the document (required when a TXA is present), TXA-13 the
id of the replaced one (required for MDM^T10); both are read as written, the comparison
with the CDA is ``cda_check``'s. TXA-2 should repeat the document type of the OBX.
"""

from __future__ import annotations

from gateway.core.hl7v2.documents.message import DocumentId, EmbeddedDocument
from gateway.core.hl7v2.documents.values import text_or_none
from gateway.core.hl7v2.reader import Field, Message, Segment
from gateway.model import Finding

__all__ = ["txa_segment", "read_txa"]


def txa_segment(msg: Message, code: str, findings: list[Finding]) -> Segment | None:
    """The TXA of an MDM message (``TXA_MISSING`` when there is none); None for ORU."""
    if code != "MDM":
        return None
    txa = msg.segment("TXA")
    if txa is None:
        findings.append(Finding("TXA_MISSING", "MDM message without TXA segment", "TXA"))
    return txa


def read_txa(
    txa: Segment | None, code: str, trigger: str, documents: list[EmbeddedDocument], findings: list[Finding]
) -> tuple[DocumentId | None, DocumentId | None]:
    """TXA-12 and TXA-13, after checking TXA-2 against the documents' OBX-3."""
    txa12 = txa13 = None
    if txa is not None:
        _check_type(txa[2].value(1).strip(), documents, findings)
        txa12, txa13 = _document_id(txa[12]), _document_id(txa[13])
        if txa12 is None:
            findings.append(Finding("TXA12_MISSING", "TXA-12 (unique document id) is empty", "TXA-12"))
    if code == "MDM" and trigger == "T10" and txa13 is None:
        findings.append(
            Finding("TXA13_MISSING", "MDM^T10 requires TXA-13 (id of the replaced document)", "TXA-13")
        )
    return txa12, txa13


def _check_type(txa2: str, documents: list[EmbeddedDocument], findings: list[Finding]) -> None:
    for doc in documents:
        doc_code = doc.type_code["code"] if doc.type_code else ""
        if txa2 and doc_code and txa2 != doc_code:
            findings.append(
                Finding(
                    "DOC_TYPE_TXA_MISMATCH",
                    f"TXA-2 '{txa2}' differs from OBX[{doc.obx_index}]-3.1 '{doc_code}'",
                    "TXA-2",
                    "warning",
                )
            )


def _document_id(fld: Field) -> DocumentId | None:
    rep = fld.rep(1)
    value = rep.comp(1).text.strip()
    if not value:
        return None
    return DocumentId(
        value=value,
        namespace=text_or_none(rep.comp(2).text),
        root=text_or_none(rep.comp(3).text),
        root_type=text_or_none(rep.comp(4).text),
    )
