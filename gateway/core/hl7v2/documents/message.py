"""What a document message says once read: the frozen view the CDA cross-checks and the pipeline use.

:class:`DocumentMessage` is the whole request (envelope, documents, metadata flags,
participants, the action); :class:`EmbeddedDocument` one document OBX with its decoded
CDA; :class:`DocumentId` a TXA-12 / TXA-13 identifier as written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ValidationError
from gateway.model import Author, DocumentAction, PatientIdentity, SubmissionContext

__all__ = ["DocumentId", "EmbeddedDocument", "DocumentMessage"]


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
        """DESTDMP = Y. A missing DESTDMP OBX means no (see :mod:`gateway.core.hl7v2.documents`)."""
        return self.flags.get("DESTDMP", False)

    @property
    def type_code(self) -> dict[str, str] | None:
        """OBX-3 of the first document: the type the request is about."""
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
