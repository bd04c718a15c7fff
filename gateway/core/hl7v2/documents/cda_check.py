"""Does the message say the same as the CDA it carries? The cross-checks that need the CDA header.

* INS of PID-3 = INS of recordTarget/patientRole/id (value and OID) — error
  ``INS_PID_CDA_MISMATCH``; only the OIDs and the last four characters are quoted.
  Local ids present on one side only are fine.
* TXA-12 = ClinicalDocument/id — error ``TXA12_CDA_MISMATCH``; a namespace in
  TXA-12.2 is tolerated with the warning ``TXA_ID_NAMESPACE``.
* replacement: TXA-13 = relatedDocument RPLC parentDocument/id — warning.
* PRT-8.10 (SB) = an author representedOrganization id — warning.
* OBX-3.1 = ClinicalDocument/code@code — warning.
"""

from __future__ import annotations

from gateway.core.hl7v2.documents.message import DocumentMessage, EmbeddedDocument
from gateway.core.xds import struct_idnat
from gateway.model import CdaHeader, Finding, Identifier

__all__ = ["check_against_cda"]

_RECORD_TARGET_ID = "ClinicalDocument/recordTarget/patientRole/id"


def check_against_cda(dm: DocumentMessage, doc: EmbeddedDocument, header: CdaHeader) -> list[Finding]:
    """Cross-check the envelope against the CDA header of ``doc`` (see the module docstring)."""
    findings: list[Finding] = []
    _check_ins(dm, header, findings)
    _check_txa_namespaces(dm, findings)
    _check_txa12(dm, header, findings)
    _check_txa13(dm, header, findings)
    _check_sender_organization(dm, header, findings)
    _check_type_code(doc, header, findings)
    return findings


def _check_ins(dm: DocumentMessage, header: CdaHeader, findings: list[Finding]) -> None:
    pid_ins = dm.patient.ins
    cda_ins = header.patient.ins
    if (pid_ins is not None or cda_ins is not None) and not _same_ins(pid_ins, cda_ins):
        findings.append(
            Finding(
                "INS_PID_CDA_MISMATCH",
                f"INS in PID-3 ({_describe(pid_ins)}) differs from the INS in {_RECORD_TARGET_ID} "
                f"({_describe(cda_ins)})",
                "PID-3",
            )
        )


def _check_txa_namespaces(dm: DocumentMessage, findings: list[Finding]) -> None:
    for label, ident in (("TXA-12", dm.txa12), ("TXA-13", dm.txa13)):
        if ident is not None and ident.namespace:
            findings.append(
                Finding(
                    "TXA_ID_NAMESPACE",
                    f"{label}.2 carries namespace '{ident.namespace}'; the volet writes root or ext^^root^ISO",
                    f"{label}.2",
                    "warning",
                )
            )


def _check_txa12(dm: DocumentMessage, header: CdaHeader, findings: list[Finding]) -> None:
    txa12 = dm.txa12
    if txa12 is None:
        return
    if (
        dm.volet_v20
        and header.id_extension
        and txa12.root is None
        and txa12.value == f"{header.id_root}.{header.id_extension}"
    ):
        # The ANS v2.0 MDM samples (ansforge/hl7V2-exemples Volets/TRANS_DOC_CDA_HL7V2/V2.0)
        # write TXA-12.1 as root "." extension; v2.1 moved to extension^^root^ISO.
        findings.append(
            Finding(
                "TXA12_V20_FORM",
                f"TXA-12 '{txa12.value}' joins root and extension with '.' (volet v2.0 form)",
                "TXA-12",
                "warning",
            )
        )
    elif not txa12.matches(header.id_root, header.id_extension):
        findings.append(
            Finding(
                "TXA12_CDA_MISMATCH",
                f"TXA-12 '{txa12.unique_id}' differs from ClinicalDocument/id '{header.document_id}'",
                "TXA-12",
            )
        )


def _check_txa13(dm: DocumentMessage, header: CdaHeader, findings: list[Finding]) -> None:
    if dm.action != "replace" or dm.txa13 is None:
        return
    parent = header.parent_document_id
    if parent is None or header.related_type not in (None, "RPLC"):
        findings.append(
            Finding(
                "TXA13_CDA_MISMATCH",
                f"TXA-13 '{dm.txa13.unique_id}' but the CDA has no relatedDocument RPLC parentDocument/id",
                "TXA-13",
                "warning",
            )
        )
    elif parent != dm.txa13.unique_id:
        findings.append(
            Finding(
                "TXA13_CDA_MISMATCH",
                f"TXA-13 '{dm.txa13.unique_id}' differs from relatedDocument/parentDocument/id '{parent}'",
                "TXA-13",
                "warning",
            )
        )


def _check_sender_organization(dm: DocumentMessage, header: CdaHeader, findings: list[Finding]) -> None:
    sender_org = dm.sender.organization if dm.sender else None
    if sender_org is None or not sender_org.id:
        return
    cda_orgs = {a.organization.id for a in header.authors if a.organization and a.organization.id}
    # PRT-8.10 may be a FINESS (FINEG) where the CDA writes the same structure's IdNat
    # (1 + FINESS): compare both forms.
    if cda_orgs and sender_org.id not in cda_orgs and struct_idnat(sender_org) not in cda_orgs:
        findings.append(
            Finding(
                "SENDER_ORG_CDA_MISMATCH",
                f"PRT-8.10 '{sender_org.id}' (SB) differs from author/assignedAuthor/representedOrganization/id "
                f"'{', '.join(sorted(cda_orgs))}'",
                f"{dm.sender_location or 'PRT'}-8.10",
                "warning",
            )
        )


def _check_type_code(doc: EmbeddedDocument, header: CdaHeader, findings: list[Finding]) -> None:
    if doc.type_code and header.code and doc.type_code["code"] != header.code.get("code"):
        findings.append(
            Finding(
                "DOC_TYPE_CDA_MISMATCH",
                f"OBX[{doc.obx_index}]-3.1 '{doc.type_code['code']}' differs from ClinicalDocument/code "
                f"'{header.code.get('code')}'",
                f"OBX[{doc.obx_index}]-3",
                "warning",
            )
        )


def _same_ins(a: Identifier | None, b: Identifier | None) -> bool:
    return a is not None and b is not None and a.value == b.value and a.oid == b.oid


def _describe(ins: Identifier | None) -> str:
    """An INS as a finding may quote it: its OID and last four characters, never the whole."""
    if ins is None:
        return "absent"
    tail = "…" + ins.value[-4:] if len(ins.value) > 4 else "…"
    return f"OID {ins.oid}, ending {tail}"
