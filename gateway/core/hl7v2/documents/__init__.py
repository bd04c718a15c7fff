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

Each part of the message has its module, and the order in which
:func:`parse_document_message` calls them is the order of the findings (and so of the
ERR segments of the ACK):

* ``envelope`` — MSH-9 / MSH-12 (is it a document message, in the volet's version?), PID-3;
* ``txa`` — the MDM TXA: TXA-12 / TXA-13, TXA-2 against the document type;
* ``segments`` — which OBX is a document, which is metadata, where the PRT are;
* ``embedded`` — each document OBX: type code, OBX-5 encapsulation, the decoded CDA;
* ``actions`` — submit / replace / delete, from ORC-1, OBX-11 and the trigger;
* ``metadata`` — the MetaDMPMSS Y/N flags and the CORPSMAIL_* mail bodies;
* ``participants`` — the SB sender, RCT recipients and REPLY address of the PRT;
* ``cda_check`` — the message against the CDA header;
* ``message`` — the frozen view all of them produce; ``values`` — how field values are read.
"""

from __future__ import annotations

from gateway.core.hl7v2.documents.actions import decide_action
from gateway.core.hl7v2.documents.cda_check import check_against_cda
from gateway.core.hl7v2.documents.embedded import read_documents
from gateway.core.hl7v2.documents.envelope import (
    APPLICATION_REJECT_CODES,
    check_patient,
    check_version,
    is_document_message,
    msh_fields,
)
from gateway.core.hl7v2.documents.message import DocumentId, DocumentMessage, EmbeddedDocument
from gateway.core.hl7v2.documents.metadata import META_FLAG_CODES, META_REQUIRED_CODES, read_metadata
from gateway.core.hl7v2.documents.participants import check_dmp_sender, read_participants
from gateway.core.hl7v2.documents.segments import classify_segments
from gateway.core.hl7v2.documents.txa import read_txa, txa_segment
from gateway.core.hl7v2.documents.values import coded_value, text_or_none
from gateway.core.hl7v2.pid import patient_from_pid
from gateway.core.hl7v2.reader import Message
from gateway.model import Finding, PatientIdentity

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


def parse_document_message(msg: Message, *, orc_required: bool = True) -> tuple[DocumentMessage, list[Finding]]:
    """Read an ORU^R01 / MDM^T02/T10/T04 and check the volet rules.

    Returns the message view and the findings (errors first in message order,
    warnings mixed in). Never raises for content problems. ``orc_required=False``
    reads a volet v2.0 message (``gateway.core.hl7v2.profile``): without an ORC the
    trigger event and OBX-11 decide the action.
    """
    findings: list[Finding] = []
    msh = msh_fields(msg)
    code, trigger = msh["message_type"], msh["trigger"]
    pid = msg.segment("PID")
    patient = patient_from_pid(pid) if pid is not None else PatientIdentity()
    if not is_document_message(code, trigger, findings):
        return DocumentMessage(patient=patient, **msh), findings
    check_version(code, msh["version"], msh["structure"], findings)
    check_patient(pid, patient, findings)
    orcs = msg.all("ORC")
    txa = txa_segment(msg, code, findings)
    groups = classify_segments(msg, findings)
    documents = read_documents(code, groups.documents, coded_value(msg["OBR"][4]), findings)
    txa12, txa13 = read_txa(txa, code, trigger, documents, findings)
    action = decide_action(code, trigger, orcs, documents, findings, orc_required=orc_required)
    flags, mails = read_metadata(groups.metadata, findings)
    participants = read_participants(groups.participants, findings)
    check_dmp_sender(flags.get("DESTDMP", False), participants, findings)
    dm = DocumentMessage(
        **msh,
        patient=patient,
        patient_class=text_or_none(msg["PV1"][2].value(1)),
        order_control=text_or_none(orcs[0][1].value(1)) if orcs else None,
        documents=tuple(documents),
        txa12=txa12,
        txa13=txa13,
        flags=flags,
        mail_body_ps=mails.get("ps"),
        mail_body_patient=mails.get("patient"),
        patient_no_reply=groups.patient_no_reply,
        sender=participants.sender,
        sender_location=participants.sender_location,
        recipients=participants.recipients,
        reply_to=participants.reply_to,
        action=action,
        volet_v20=not orc_required,
    )
    return dm, findings
