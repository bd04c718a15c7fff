"""ANS "Transmission d'un document CDA-R2 en HL7v2": ORU^R01 (v2.5) and MDM^T02/T10/T04 (v2.6).

:func:`parse_document_message` reads one request to process a document (initial
submission, replacement, deletion) and checks the rules of the volet
(/work/shared/docs/hl7v2-cda-volet.md §2–§8) that need nothing but the message.
It never raises for content problems: everything wrong becomes a
:class:`~gateway.model.Finding` with a stable code and an HL7 location
(``OBX[n]`` = n-th OBX of the message, 1-based). Errors mean "reject", warnings are
informative. ``MSG_TYPE_UNSUPPORTED`` is an application *reject* (ACK AR, see
:data:`APPLICATION_REJECT_CODES`); other errors are application errors (AE).

:func:`check_against_cda` does the cross-checks that need the parsed CDA header
(INS, TXA-12/13, sender organisation, type code).

Finding messages name fields, codes and document ids, never patient traits; the
only patient-derived text is the last four characters of an INS.

Decisions taken here:

* A missing ``DESTDMP`` metadata OBX means "not bound for the DMP" (flag absent,
  :attr:`DocumentMessage.dmp_bound` False) plus the ``META_MISSING`` warning;
  it never defaults to yes, because a DMP feed needs a qualified INS and a sender.
* Metadata codes are recognised by OBX-3.3 ``MetaDMPMSS`` or, for older senders
  (volet v1.2), by the code alone (warning ``META_CODING_SYSTEM``); the v1.2 names
  ``INVISIBLE_REPRESENTANTS_LEGAUX`` / ``MODIF_CONFIDENTIALITYCODE`` are mapped.
* Defective mail bodies (CORPSMAIL_*) are warnings only: we do not send MSSanté mail.
* The CDA check here is a prefix scan of the decoded bytes (root element
  ``ClinicalDocument`` in ``urn:hl7-org:v3``), not a parse; the hardened parse is
  done later by ``gateway.core.cda``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.core.cda import NS as CDA_NS
from gateway.core.cda import sniff_cda
from gateway.core.hl7v2.base64 import decode_payload
from gateway.core.hl7v2.pid import patient_from_pid
from gateway.core.hl7v2.reader import Field, Message, Repetition, Segment
from gateway.core.xds import struct_idnat
from gateway.errors import ValidationError
from gateway.model import (
    Author,
    CdaHeader,
    DocumentAction,
    Finding,
    Identifier,
    Organization,
    PatientIdentity,
    Person,
    SubmissionContext,
)

__all__ = [
    "APPLICATION_REJECT_CODES",
    "META_FLAG_CODES",
    "META_REQUIRED_CODES",
    "DocumentId",
    "EmbeddedDocument",
    "DocumentMessage",
    "parse_document_message",
    "check_against_cda",
]

META_SYSTEM = "MetaDMPMSS"
#: Required metadata OBX, in the order the volet imposes (§8).
META_REQUIRED_CODES: tuple[str, ...] = (
    "MASQUE_PS",
    "INVISIBLE_PATIENT",
    "INVISIBLE_REP_LEGAUX",
    "CONNEXION_SECRETE",
    "MODIF_CONF_CODE",
    "DESTDMP",
    "DESTMSSANTEPS",
    "DESTMSSANTEPAT",
)
#: Every Y/N metadata code (required then optional).
META_FLAG_CODES: tuple[str, ...] = (*META_REQUIRED_CODES, "ACK_RECEPTION", "ACK_LECTURE_MSS")
_META_MAIL = {"CORPSMAIL_PS": "ps", "CORPSMAIL_PATIENT": "patient"}
_META_ALIASES = {  # volet v1.2 spellings
    "INVISIBLE_REPRESENTANTS_LEGAUX": "INVISIBLE_REP_LEGAUX",
    "MODIF_CONFIDENTIALITYCODE": "MODIF_CONF_CODE",
}
_META_ALL = frozenset(META_FLAG_CODES) | frozenset(_META_MAIL)

#: Codes that call for ACK AR (rejected) rather than AE.
APPLICATION_REJECT_CODES = frozenset({"MSG_TYPE_UNSUPPORTED"})

# MDM trigger → (ORC-1, OBX-11, action); ORU R01 is driven by ORC-1 alone.
_MDM_TRIGGERS: dict[str, tuple[str, str, DocumentAction]] = {
    "T02": ("NW", "F", "submit"),
    "T10": ("RO", "C", "replace"),
    "T04": ("CA", "D", "delete"),
}
_ORU_BY_ORC: dict[str, tuple[str, DocumentAction]] = {
    "NW": ("F", "submit"),
    "RO": ("C", "replace"),
    "CA": ("D", "delete"),
}
_EXPECTED_VERSION = {"ORU": "2.5", "MDM": "2.6"}
_EXPECTED_STRUCTURE = {"ORU": "ORU_R01", "MDM": "MDM_T02"}
_EXPECTED_TEXT = {"ORU": "TEXT", "MDM": "text"}  # OBX-5.2: table 0191 (2.5) vs 0834 (2.6)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class DocumentId:
    """A TXA-12 / TXA-13 entity identifier (EI) as written.

    The volet wants the bare root OID (``root``) or ``extension^^root^ISO``; the ANS
    samples add a namespace in EI.2, which we keep to warn about.
    """

    value: str  # EI.1: the root OID, or the extension when EI.3 is valued
    namespace: str | None = None  # EI.2
    root: str | None = None  # EI.3
    root_type: str | None = None  # EI.4

    @property
    def unique_id(self) -> str:
        """XDS uniqueId form, as :attr:`CdaHeader.document_id`: ``root`` or ``root^extension``."""
        return f"{self.root}^{self.value}" if self.root else self.value

    def matches(self, root: str, extension: str | None) -> bool:
        """True when this id designates the CDA id ``root`` / ``extension``."""
        if self.root:
            return self.root == root and self.value == (extension or "")
        return extension is None and self.value == root


@dataclass(frozen=True, slots=True)
class EmbeddedDocument:
    """One document OBX (OBX-2 ``ED``) and its decoded CDA bytes.

    ``data`` is left out of ``repr`` so that a stray log of the object never
    prints a clinical document.
    """

    obx_index: int  # n-th OBX of the message (1-based)
    set_id: str  # OBX-1
    type_code: dict[str, str] | None  # OBX-3 as CodedValue (codeSystem as written: LN, TRE_A05 …)
    result_status: str  # OBX-11: F / C / D
    data: bytes = field(repr=False)
    location: str = ""  # "OBX[n]-5.5"


@dataclass(frozen=True)
class DocumentMessage:
    """What an ORU^R01 / MDM^T02/T10/T04 says, ready for the CDA cross-checks."""

    message_type: str  # MSH-9.1: ORU / MDM
    trigger: str  # MSH-9.2: R01 / T02 / T10 / T04
    structure: str  # MSH-9.3 as written
    control_id: str  # MSH-10
    version: str  # MSH-12.1
    processing_id: str = ""  # MSH-11: P / T / D
    patient: PatientIdentity = field(default_factory=PatientIdentity)
    patient_class: str | None = None  # PV1-2
    order_control: str | None = None  # ORC-1
    documents: tuple[EmbeddedDocument, ...] = ()
    txa12: DocumentId | None = None  # MDM only
    txa13: DocumentId | None = None  # MDM only; required for T10
    flags: dict[str, bool] = field(default_factory=dict)  # MetaDMPMSS Y/N codes present
    mail_body_ps: str | None = None  # CORPSMAIL_PS decoded (None when absent or defective)
    mail_body_patient: str | None = None
    patient_no_reply: bool = False  # NTE-4 = FIN after DESTMSSANTEPAT
    sender: Author | None = None  # PRT with PRT-4.1 = SB
    sender_location: str | None = None  # "PRT[k]" of that PRT, for error locations
    recipients: tuple[str, ...] = ()  # PRT RCT, PRT-15.4
    reply_to: str | None = None  # PRT REPLY, PRT-15.4
    action: DocumentAction | None = None  # None when the message does not say it consistently
    volet_v20: bool = False  # MSH-21 2.0^CISIS_CDA_HL7_V2: no ORC, TXA-12 may be root.extension

    @property
    def dmp_bound(self) -> bool:
        """DESTDMP = Y. A missing DESTDMP OBX means no (see the module docstring)."""
        return self.flags.get("DESTDMP", False)

    @property
    def type_code(self) -> dict[str, str] | None:
        return self.documents[0].type_code if self.documents else None

    def submission_context(self, **injected: Any) -> SubmissionContext:
        """The :class:`SubmissionContext` this envelope gives; ids and times come in ``injected``.

        Raises :class:`ValidationError` when the action could not be determined
        (the parse then reported ``DOC_ACTION_INCONSISTENT`` or ``MSG_TYPE_UNSUPPORTED``).
        """
        if self.action is None:
            raise ValidationError(
                "the requested action (submit/replace/delete) is undetermined",
                code="DOC_ACTION_INCONSISTENT",
                location="ORC-1",
            )
        return SubmissionContext(
            action=self.action,
            flags=dict(self.flags),
            sender=self.sender,
            patient_class=self.patient_class,
            patient=self.patient,
            type_code=dict(self.type_code) if self.type_code else None,
            parent_document_id=self.txa13.unique_id if self.txa13 else None,
            **injected,
        )


# --------------------------------------------------------------------------- helpers


def _s(value: str) -> str | None:
    """Strip (U+00A0 included) and map empty to None."""
    value = value.strip()
    return value or None


def _coded(rep: Repetition | Field) -> dict[str, str] | None:
    code = rep.comp(1).text.strip()
    if not code:
        return None
    return {
        "code": code,
        "codeSystem": rep.comp(3).text.strip(),
        "displayName": rep.comp(2).text.strip(),
    }


def _document_id(fld: Field) -> DocumentId | None:
    rep = fld.rep(1)
    value = rep.comp(1).text.strip()
    if not value:
        return None
    return DocumentId(
        value=value,
        namespace=_s(rep.comp(2).text),
        root=_s(rep.comp(3).text),
        root_type=_s(rep.comp(4).text),
    )


def _tail(value: str) -> str:
    return "…" + value[-4:] if len(value) > 4 else "…"


# --------------------------------------------------------------------------- parsing


def parse_document_message(msg: Message, *, orc_required: bool = True) -> tuple[DocumentMessage, list[Finding]]:
    """Read an ORU^R01 / MDM^T02/T10/T04 and check the volet rules.

    Returns the message view and the findings (errors first in message order,
    warnings mixed in). Never raises for content problems. ``orc_required=False``
    reads a volet v2.0 message (``gateway.core.hl7v2.profile``): without an ORC the
    trigger event and OBX-11 decide the action.
    """
    findings: list[Finding] = []
    msh = msg.msh
    code, trigger, structure = msh[9].value(1).strip(), msh[9].value(2).strip(), msh[9].value(3).strip()
    version = msh[12].value(1).strip()
    base: dict[str, Any] = {
        "message_type": code,
        "trigger": trigger,
        "structure": structure,
        "control_id": msg.control_id,
        "version": version,
        "processing_id": msh[11].value(1).strip(),
    }
    pid = msg.segment("PID")
    patient = patient_from_pid(pid) if pid is not None else PatientIdentity()
    supported = (code == "ORU" and trigger == "R01") or (code == "MDM" and trigger in _MDM_TRIGGERS)
    if not supported:
        findings.append(
            Finding(
                "MSG_TYPE_UNSUPPORTED",
                f"MSH-9 '{code}^{trigger}' is not a document message (ORU^R01, MDM^T02/T10/T04)",
                "MSH-9",
            )
        )
        return DocumentMessage(patient=patient, **base), findings

    if version != _EXPECTED_VERSION[code]:
        findings.append(
            Finding(
                "MSG_VERSION_UNEXPECTED",
                f"MSH-12 '{version}': the volet uses {_EXPECTED_VERSION[code]} for {code}",
                "MSH-12",
                "warning",
            )
        )
    if structure and structure != _EXPECTED_STRUCTURE[code]:
        findings.append(
            Finding(
                "MSG_STRUCTURE_UNEXPECTED",
                f"MSH-9.3 '{structure}': expected {_EXPECTED_STRUCTURE[code]}",
                "MSH-9.3",
                "warning",
            )
        )

    if pid is None:
        findings.append(Finding("PID3_MISSING", "PID segment is missing", "PID"))
    elif not patient.identifiers:
        findings.append(Finding("PID3_MISSING", "PID-3 carries no patient identifier", "PID-3"))

    patient_class = _s(msg["PV1"][2].value(1))
    orcs = msg.all("ORC")
    order_control = _s(orcs[0][1].value(1)) if orcs else None
    obr_type = _coded(msg["OBR"][4])
    txa = msg.segment("TXA") if code == "MDM" else None
    if code == "MDM" and txa is None:
        findings.append(Finding("TXA_MISSING", "MDM message without TXA segment", "TXA"))

    # ---- walk the segments once: classify OBX, collect PRT, catch NTE FIN
    doc_obx: list[tuple[int, Segment]] = []
    meta_obx: list[tuple[int, str, Segment]] = []
    prts: list[tuple[int, Segment]] = []
    legacy_meta = 0
    patient_no_reply = False
    last_meta: str | None = None
    obx_n = prt_n = 0
    for seg in msg:
        if seg.name == "OBX":
            obx_n += 1
            last_meta = None
            raw_code = seg[3].value(1).strip()
            meta_code = _META_ALIASES.get(raw_code, raw_code)
            system = seg[3].value(3).strip()
            if system == META_SYSTEM or meta_code in _META_ALL:
                if system != META_SYSTEM:
                    legacy_meta += 1
                meta_obx.append((obx_n, meta_code, seg))
                last_meta = meta_code
            elif seg[2].value(1).strip() == "ED" and (
                not doc_obx or seg[5].value(3).strip().upper() == "XML"
            ):
                doc_obx.append((obx_n, seg))
            elif seg[2].value(1).strip() == "ED":
                # e.g. the XDM attachment of the LPS/MSSanté sister volet: not a CDA to process
                findings.append(
                    Finding(
                        "OBX_UNEXPECTED",
                        f"OBX[{obx_n}] is an ED attachment whose OBX-5.3 is not XML; ignored",
                        f"OBX[{obx_n}]",
                        "warning",
                    )
                )
            else:
                findings.append(
                    Finding(
                        "OBX_UNEXPECTED",
                        f"OBX[{obx_n}] ('{raw_code}', OBX-2 '{seg[2].value(1)}') is neither a document "
                        "nor a MetaDMPMSS metadata; ignored",
                        f"OBX[{obx_n}]",
                        "warning",
                    )
                )
        elif seg.name == "PRT":
            prt_n += 1
            prts.append((prt_n, seg))
        elif seg.name == "NTE" and last_meta == "DESTMSSANTEPAT" and seg[4].value(1).strip() == "FIN":
            patient_no_reply = True

    if legacy_meta:
        findings.append(
            Finding(
                "META_CODING_SYSTEM",
                f"{legacy_meta} metadata OBX lack OBX-3.3 '{META_SYSTEM}'; recognised by their code",
                "OBX-3.3",
                "warning",
            )
        )

    # ---- documents
    documents: list[EmbeddedDocument] = []
    if not doc_obx:
        findings.append(Finding("DOC_MISSING", "no document OBX (OBX-2 'ED' carrying the CDA)", "OBX"))
    limit = 1 if code == "MDM" else 2
    if len(doc_obx) > limit:
        findings.append(
            Finding(
                "DOC_TOO_MANY",
                f"{len(doc_obx)} document OBX; {code} carries at most {limit}",
                f"OBX[{doc_obx[limit][0]}]",
            )
        )
    for n, seg in doc_obx:
        documents.append(_read_document(code, n, seg, obr_type, findings))

    if txa is not None:
        txa2 = txa[2].value(1).strip()
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
    txa12 = _document_id(txa[12]) if txa is not None else None
    txa13 = _document_id(txa[13]) if txa is not None else None
    if txa is not None and txa12 is None:
        findings.append(Finding("TXA12_MISSING", "TXA-12 (unique document id) is empty", "TXA-12"))
    if code == "MDM" and trigger == "T10" and txa13 is None:
        findings.append(
            Finding("TXA13_MISSING", "MDM^T10 requires TXA-13 (id of the replaced document)", "TXA-13")
        )

    # ---- action: ORC-1 / OBX-11 / trigger must agree
    action = _check_action(code, trigger, orcs, documents, findings, orc_required=orc_required)

    # ---- metadata
    flags, mails = _read_metadata(meta_obx, findings)

    # ---- PRT
    sender, sender_location, recipients, reply_to = _read_prts(prts, findings)
    if flags.get("DESTDMP") and sender is None:
        findings.append(
            Finding(
                "PRT_SB_MISSING",
                "DESTDMP = Y but no PRT with PRT-4.1 'SB' (author of the request) follows the document OBX",
                "PRT",
            )
        )
    elif flags.get("DESTDMP") and sender is not None:
        missing = []
        if sender.person is None or not sender.person.id:
            missing.append("PRT-5.1")
        if sender.organization is None or not sender.organization.id:
            missing.append("PRT-8.10")
        if missing:
            findings.append(
                Finding(
                    "PRT_SB_INCOMPLETE",
                    f"SB PRT lacks {', '.join(missing)} needed for the DMP (VIHF, submission-set author)",
                    sender_location,
                    "warning",
                )
            )

    dm = DocumentMessage(
        **base,
        patient=patient,
        patient_class=patient_class,
        order_control=order_control,
        documents=tuple(documents),
        txa12=txa12,
        txa13=txa13,
        flags=flags,
        mail_body_ps=mails.get("ps"),
        mail_body_patient=mails.get("patient"),
        patient_no_reply=patient_no_reply,
        sender=sender,
        sender_location=sender_location,
        recipients=tuple(recipients),
        reply_to=reply_to,
        action=action,
        volet_v20=not orc_required,
    )
    return dm, findings


def _read_document(
    code: str, n: int, seg: Segment, obr_type: dict[str, str] | None, findings: list[Finding]
) -> EmbeddedDocument:
    loc = f"OBX[{n}]"
    type_code = _coded(seg[3])
    if type_code is None:
        findings.append(Finding("DOC_TYPE_MISSING", f"{loc}-3 (document type code) is empty", f"{loc}-3"))
    elif not type_code["codeSystem"]:
        findings.append(
            Finding(
                "CODE_SYSTEM_MISSING",
                f"{loc}-3 '{type_code['code']}' has no coding system in component 3 (pre-adopted v2.7 rule)",
                f"{loc}-3.3",
                "warning",
            )
        )
    if type_code is not None and obr_type is not None:
        if (type_code["code"], type_code["codeSystem"]) != (obr_type["code"], obr_type["codeSystem"]):
            findings.append(
                Finding(
                    "DOC_TYPE_OBR_MISMATCH",
                    f"{loc}-3 '{type_code['code']}^{type_code['codeSystem']}' differs from OBR-4 "
                    f"'{obr_type['code']}^{obr_type['codeSystem']}'",
                    f"{loc}-3",
                    "warning",
                )
            )
    elif type_code is not None:
        findings.append(
            Finding("DOC_TYPE_OBR_MISMATCH", f"OBR-4 is empty; {loc}-3 should repeat it", "OBR-4", "warning")
        )

    value = seg[5].rep(1)
    data_type = value.comp(2).text.strip()
    expected = _EXPECTED_TEXT[code]
    if data_type != expected:
        if data_type.lower() == "text":
            findings.append(
                Finding(
                    "DOC_OBX5_CASE",
                    f"{loc}-5.2 '{data_type}': {code} (v{_EXPECTED_VERSION[code]}) writes '{expected}'",
                    f"{loc}-5.2",
                    "warning",
                )
            )
        else:
            findings.append(
                Finding(
                    "DOC_OBX5_TYPE",
                    f"{loc}-5.2 '{data_type}': expected '{expected}'",
                    f"{loc}-5.2",
                    "warning",
                )
            )
    subtype = value.comp(3).text.strip()
    if subtype.upper() != "XML":
        findings.append(
            Finding("DOC_OBX5_SUBTYPE", f"{loc}-5.3 '{subtype}': expected 'XML'", f"{loc}-5.3", "warning")
        )
    data = b""
    encoding = value.comp(4).text.strip()
    if encoding.lower() != "base64":
        findings.append(
            Finding(
                "DOC_ENCODING_UNSUPPORTED",
                f"{loc}-5.4 '{encoding}': the CDA must be Base64-encoded",
                f"{loc}-5.4",
            )
        )
    else:
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
    return EmbeddedDocument(
        obx_index=n,
        set_id=seg[1].value(1).strip(),
        type_code=type_code,
        result_status=seg[11].value(1).strip(),
        data=data,
        location=f"{loc}-5.5",
    )


def _check_action(
    code: str,
    trigger: str,
    orcs: list[Segment],
    documents: list[EmbeddedDocument],
    findings: list[Finding],
    *,
    orc_required: bool = True,
) -> DocumentAction | None:
    if not orcs and not orc_required:
        return _action_without_orc(code, trigger, documents, findings)
    if not orcs:
        findings.append(Finding("ORC_MISSING", "ORC segment is missing (ORC-1 carries NW / RO / CA)", "ORC"))
        if code == "ORU":
            return None
    orc1 = orcs[0][1].value(1).strip() if orcs else ""
    consistent = bool(orcs)
    if code == "MDM":
        exp_orc, exp_status, action = _MDM_TRIGGERS[trigger]
    elif orc1 in _ORU_BY_ORC:
        exp_orc = orc1
        exp_status, action = _ORU_BY_ORC[orc1]
    else:
        findings.append(
            Finding(
                "DOC_ACTION_INCONSISTENT",
                f"ORC-1 '{orc1}' is not NW, RO or CA; with MSH-9.2 '{trigger}' the action is undetermined",
                "ORC-1",
            )
        )
        return None
    if orcs and orc1 != exp_orc:
        consistent = False
        status = documents[0].result_status if documents else ""
        findings.append(
            Finding(
                "DOC_ACTION_INCONSISTENT",
                f"ORC-1 '{orc1}', OBX-11 '{status}' and MSH-9.2 '{trigger}' disagree "
                f"(expected ORC-1 {exp_orc} and OBX-11 {exp_status})",
                "ORC-1",
            )
        )
    for extra in orcs[1:]:
        other = extra[1].value(1).strip()
        if other != orc1:
            consistent = False
            findings.append(
                Finding(
                    "DOC_ACTION_INCONSISTENT",
                    f"ORC-1 '{other}' of a later ORC differs from the first ORC-1 '{orc1}'",
                    "ORC-1",
                )
            )
    for doc in documents:
        if doc.result_status != exp_status:
            consistent = False
            findings.append(
                Finding(
                    "DOC_ACTION_INCONSISTENT",
                    f"ORC-1 '{orc1}', OBX-11 '{doc.result_status}' and MSH-9.2 '{trigger}' disagree "
                    f"(expected ORC-1 {exp_orc} and OBX-11 {exp_status})",
                    f"OBX[{doc.obx_index}]-11",
                )
            )
    return action if consistent else None


def _read_metadata(
    meta_obx: list[tuple[int, str, Segment]], findings: list[Finding]
) -> tuple[dict[str, bool], dict[str, str]]:
    flags: dict[str, bool] = {}
    mails: dict[str, str] = {}
    seen: set[str] = set()
    for n, meta_code, seg in meta_obx:
        loc = f"OBX[{n}]"
        if meta_code in seen:
            findings.append(
                Finding(
                    "META_DUPLICATE", f"{loc}: metadata '{meta_code}' repeated; first kept", loc, "warning"
                )
            )
            continue
        seen.add(meta_code)
        if meta_code in _META_MAIL:
            body = _read_mail_body(loc, meta_code, seg, findings)
            if body is not None:
                mails[_META_MAIL[meta_code]] = body
        elif meta_code in META_FLAG_CODES:
            value = seg[5].value(1).strip()
            if value in ("Y", "N"):
                flags[meta_code] = value == "Y"
            else:
                findings.append(
                    Finding(
                        "META_VALUE_INVALID",
                        f"{loc}-5.1 of '{meta_code}' is '{value}', expected Y or N; ignored",
                        f"{loc}-5.1",
                        "warning",
                    )
                )
        else:
            findings.append(
                Finding(
                    "META_UNKNOWN",
                    f"{loc}-3.1 '{meta_code}' is not a known MetaDMPMSS code",
                    f"{loc}-3",
                    "warning",
                )
            )
    for meta_code in META_REQUIRED_CODES:
        if meta_code not in flags and meta_code not in seen:
            consequence = " (treated as N: not sent to the DMP)" if meta_code == "DESTDMP" else ""
            findings.append(
                Finding(
                    "META_MISSING",
                    f"required metadata OBX '{meta_code}' is missing{consequence}",
                    "OBX",
                    "warning",
                )
            )
    return flags, mails


def _read_mail_body(loc: str, meta_code: str, seg: Segment, findings: list[Finding]) -> str | None:
    value = seg[5].rep(1)
    if value.comp(4).text.strip().lower() != "base64":
        findings.append(
            Finding(
                "META_MAIL_BODY_INVALID",
                f"{loc}-5.4 of '{meta_code}' is not 'Base64'; mail body ignored",
                f"{loc}-5.4",
                "warning",
            )
        )
        return None
    data, b64 = decode_payload(value.comp(5).raw, f"{loc}-5.5")
    errors = [f for f in b64 if f.severity == "error"]
    if errors:
        # Not needed for routing (we send no MSSanté mail): downgrade to a warning.
        findings.append(
            Finding(
                "META_MAIL_BODY_INVALID",
                f"{loc}-5.5 of '{meta_code}' is not decodable ({errors[0].code}); mail body ignored",
                f"{loc}-5.5",
                "warning",
            )
        )
        return None
    findings.extend(b64)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        findings.append(
            Finding(
                "META_MAIL_BODY_INVALID",
                f"{loc}-5.5 of '{meta_code}' is not UTF-8 text; mail body ignored",
                f"{loc}-5.5",
                "warning",
            )
        )
        return None


def _read_prts(
    prts: list[tuple[int, Segment]], findings: list[Finding]
) -> tuple[Author | None, str | None, list[str], str | None]:
    sender: Author | None = None
    sender_location: str | None = None
    recipients: list[str] = []
    reply_to: str | None = None
    for k, seg in prts:
        loc = f"PRT[{k}]"
        role = seg[4].value(1).strip()
        emails = [e for rep in seg[15].reps if (e := rep.comp(4).text.strip())]
        if role == "SB":
            if sender is not None:
                findings.append(
                    Finding(
                        "PRT_SB_DUPLICATE", f"{loc}: more than one SB PRT; the first is used", loc, "warning"
                    )
                )
                continue
            sender, sender_location = _sender(seg), loc
        elif role == "RCT":
            recipients.extend(emails)
        elif role == "REPLY":
            if emails and reply_to is None:
                reply_to = emails[0]
        else:
            findings.append(
                Finding(
                    "PRT_ROLE_UNKNOWN",
                    f"{loc}-4.1 '{role}' is not SB, RCT or REPLY; ignored",
                    f"{loc}-4",
                    "warning",
                )
            )
    return sender, sender_location, recipients, reply_to


def _sender(seg: Segment) -> Author:
    xcn = seg[5].rep(1)
    person = None
    # Volet mapping table: the VIHF subject-id is "family, given, service"; the service is
    # not in PRT-5, the table proposes PRT-9 (location) for it.
    service = _s(seg[9].rep(1).comp(1).text)
    if _s(xcn.comp(1).text) or _s(xcn.comp(2).sub(1)):
        person = Person(
            id=_s(xcn.comp(1).text),
            family=_s(xcn.comp(2).sub(1)),
            given=_s(xcn.comp(3).text),
            id_root=_s(xcn.comp(9).sub(2)),
            service=service,
        )
    elif _s(seg[10].rep(1).comp(1).text):
        # Volet §7: "PRT-10 device id if the author is a system" (EI: id ^ namespace ^ OID).
        device = seg[10].rep(1)
        person = Person(
            id=_s(device.comp(1).text),
            id_root=_s(device.comp(3).text),
            software=_s(device.comp(2).text),
            service=service,
            device=True,
        )
    xon = seg[8].rep(1)
    org = None
    if _s(xon.comp(1).text) or _s(xon.comp(10).text):
        # the Ségur MDM sample pads PRT-8.10 with U+00A0: _s strips it
        org = Organization(
            id=_s(xon.comp(10).text),
            id_root=_s(xon.comp(6).sub(2)),
            name=_s(xon.comp(1).text),
            id_type=_s(xon.comp(7).text),
        )
    return Author(person=person, organization=org)


# --------------------------------------------------------------------------- CDA cross-checks

_RECORD_TARGET_ID = "ClinicalDocument/recordTarget/patientRole/id"


def check_against_cda(dm: DocumentMessage, doc: EmbeddedDocument, header: CdaHeader) -> list[Finding]:
    """Cross-check the envelope against the CDA header of ``doc``.

    * INS of PID-3 = INS of recordTarget/patientRole/id (value and OID) — error
      ``INS_PID_CDA_MISMATCH``; only the OIDs and the last four characters are quoted.
      Local ids present on one side only are fine.
    * TXA-12 = ClinicalDocument/id — error ``TXA12_CDA_MISMATCH``; a namespace in
      TXA-12.2 is tolerated with the warning ``TXA_ID_NAMESPACE``.
    * replacement: TXA-13 = relatedDocument RPLC parentDocument/id — warning.
    * PRT-8.10 (SB) = an author representedOrganization id — warning.
    * OBX-3.1 = ClinicalDocument/code@code — warning.
    """
    findings: list[Finding] = []
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

    cda_id = header.document_id
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
    if (
        dm.volet_v20
        and dm.txa12 is not None
        and header.id_extension
        and dm.txa12.root is None
        and dm.txa12.value == f"{header.id_root}.{header.id_extension}"
    ):
        # The ANS v2.0 MDM samples (ansforge/hl7V2-exemples Volets/TRANS_DOC_CDA_HL7V2/V2.0)
        # write TXA-12.1 as root "." extension; v2.1 moved to extension^^root^ISO.
        findings.append(
            Finding(
                "TXA12_V20_FORM",
                f"TXA-12 '{dm.txa12.value}' joins root and extension with '.' (volet v2.0 form)",
                "TXA-12",
                "warning",
            )
        )
    elif dm.txa12 is not None and not dm.txa12.matches(header.id_root, header.id_extension):
        findings.append(
            Finding(
                "TXA12_CDA_MISMATCH",
                f"TXA-12 '{dm.txa12.unique_id}' differs from ClinicalDocument/id '{cda_id}'",
                "TXA-12",
            )
        )

    if dm.action == "replace" and dm.txa13 is not None:
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

    sender_org = dm.sender.organization if dm.sender else None
    if sender_org is not None and sender_org.id:
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
    return findings


def _same_ins(a: Identifier | None, b: Identifier | None) -> bool:
    return a is not None and b is not None and a.value == b.value and a.oid == b.oid


def _describe(ins: Identifier | None) -> str:
    if ins is None:
        return "absent"
    return f"OID {ins.oid}, ending {_tail(ins.value)}"


_BY_STATUS: dict[str, DocumentAction] = {"F": "submit", "C": "replace", "D": "delete"}


def _action_without_orc(
    code: str, trigger: str, documents: list[EmbeddedDocument], findings: list[Finding]
) -> DocumentAction | None:
    """Volet v2.0 (no ORC): the MDM trigger and OBX-11 must agree; for ORU, OBX-11 alone decides."""
    statuses = {doc.result_status for doc in documents}
    if code == "MDM":
        _, exp_status, action = _MDM_TRIGGERS[trigger]
        for doc in documents:
            if doc.result_status != exp_status:
                findings.append(
                    Finding(
                        "DOC_ACTION_INCONSISTENT",
                        f"OBX-11 '{doc.result_status}' and MSH-9.2 '{trigger}' disagree (expected OBX-11 {exp_status})",
                        f"OBX[{doc.obx_index}]-11",
                    )
                )
                return None
        return action
    if len(statuses) != 1 or next(iter(statuses)) not in _BY_STATUS:
        findings.append(
            Finding(
                "DOC_ACTION_INCONSISTENT",
                f"OBX-11 {'/'.join(sorted(statuses)) or '(empty)'}: without ORC (volet v2.0) OBX-11 must be "
                "F, C or D for every document",
                f"OBX[{documents[0].obx_index}]-11" if documents else "OBX-11",
            )
        )
        return None
    return _BY_STATUS[next(iter(statuses))]
