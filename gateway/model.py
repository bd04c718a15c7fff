"""Data shared between the layers: frozen dataclasses and the JSON shapes we store.

These are the hand-off contracts between modules:

* ``PatientIdentity``   — what a message (PID) or a CDA (recordTarget) says about the patient;
* ``CdaHeader``         — what the CDA header says (core/cda.py produces it);
* ``SubmissionContext`` — what the HL7 v2 envelope adds to a document (PRT SB, PV1-2, MetaDMPMSS flags);
* ``XdsMetadata``       — the DMP XDS.b metadata as JSON (core/xds.py builds it, adapters/dmp serialises it);
* ``Finding``           — one error or warning with a stable code and a location.

JSON shapes are plain dicts so they go to the journal, the API and ``relais check``
unchanged. A coded value is always ``{"code", "codeSystem", "displayName"}`` where
``codeSystem`` is an OID (no ``urn:oid:`` prefix) or a URN such as ``urn:ihe:...``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NotRequired, TypedDict

__all__ = [
    "Severity",
    "Finding",
    "Identifier",
    "PatientIdentity",
    "Person",
    "Organization",
    "Author",
    "CdaHeader",
    "SubmissionContext",
    "CodedValue",
    "XdsAuthor",
    "XdsDocumentEntry",
    "XdsSubmissionSet",
    "XdsMetadata",
    "XdsRequest",
    "XdsSender",
    "Outcome",
    "DocumentAction",
]

Severity = Literal["error", "warning"]
Outcome = Literal["accepted", "rejected", "held"]
DocumentAction = Literal["submit", "replace", "delete", "archive"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One error or warning. ``code`` is stable (used in ACK ERR, journal, API, CLI)."""

    code: str
    message: str
    location: str | None = None
    severity: Severity = "error"

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "location": self.location}


@dataclass(frozen=True, slots=True)
class Identifier:
    """An identifier with its assigning authority (CX in v2, II in CDA, Identifier in FHIR).

    ``type_code`` is the v2 CX.5 (``INS``, ``PI``, ``NH`` ...) when known.
    """

    value: str
    oid: str | None = None  # assigning authority universal id (CX.4.2 / II@root)
    namespace: str | None = None  # CX.4.1
    type_code: str | None = None  # CX.5


@dataclass(frozen=True, slots=True)
class PatientIdentity:
    """Patient identity as a sender gave it. Traits are stored exactly as received."""

    identifiers: tuple[Identifier, ...] = ()
    birth_family: str | None = None  # strict trait
    birth_given_list: str | None = None  # strict: list of birth first names, space separated
    first_given: str | None = None  # strict: first birth first name
    used_family: str | None = None
    used_given: str | None = None
    gender: str | None = None  # M / F / U (v2 PID-8 or CDA administrativeGenderCode)
    birth_date: str | None = None  # YYYYMMDD (or shorter when partial)
    birthplace_cog: str | None = None  # INSEE COG code of the birthplace
    status: tuple[str, ...] = ()  # PID-32 repetitions (VALI, PROV, FICT, DOUT ...); empty for CDA

    @property
    def ins(self) -> Identifier | None:
        """The identifier carrying an INS OID (…4.8/.9/.10/.11), if any; billing NIR (NH) excluded."""
        for ident in self.identifiers:
            if ident.oid in INS_OIDS and ident.type_code != "NH":
                return ident
        return None

    @property
    def ipp(self) -> Identifier | None:
        for ident in self.identifiers:
            if ident.type_code == "PI":
                return ident
        return None


INS_OIDS = frozenset(
    {"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"}
)


@dataclass(frozen=True, slots=True)
class Person:
    """A health professional (RPPS / IDNPS), or a device (``device=True``) acting as an author.

    For a device ``family`` is unused: ``software`` / ``model`` name it (CDA
    assignedAuthoringDevice softwareName / manufacturerModelName; HL7 v2 PRT-10).
    """

    id: str | None = None
    id_root: str | None = None  # 1.2.250.1.71.4.2.1 for RPPS / IDNPS
    family: str | None = None
    given: str | None = None
    prefix: str | None = None
    profession: dict[str, str] | None = None  # CodedValue of assignedAuthor/code
    service: str | None = None  # the user's service (PRT-9.1), for the VIHF subject-id
    device: bool = False
    software: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class Organization:
    id: str | None = None
    id_root: str | None = None  # 1.2.250.1.71.4.2.2 for structures
    name: str | None = None
    id_type: str | None = None  # FINEG / FINEJ / IDNST (v2 PRT-8.7)
    industry: dict[str, str] | None = None  # standardIndustryClassCode as CodedValue


@dataclass(frozen=True, slots=True)
class Author:
    person: Person | None = None
    organization: Organization | None = None
    time: str | None = None
    function: dict[str, str] | None = None  # functionCode as CodedValue


@dataclass(frozen=True)
class CdaHeader:
    """What the CDA header says; produced by ``gateway.core.cda.parse_header``.

    Times are the CDA TS strings as written (``20210606093100+0200``); coded values
    are ``CodedValue`` dicts. ``level`` is 1 for a non-structured body (nonXMLBody)
    and 3 for structuredBody.
    """

    id_root: str
    id_extension: str | None
    set_id: str | None = None
    version_number: str | None = None
    code: dict[str, str] | None = None
    title: str | None = None
    effective_time: str | None = None
    confidentiality: dict[str, str] | None = None
    language: str | None = None
    template_ids: tuple[str, ...] = ()
    patient: PatientIdentity = field(default_factory=PatientIdentity)
    authors: tuple[Author, ...] = ()
    custodian: Organization | None = None
    legal_authenticator: Author | None = None
    service_event_code: dict[str, str] | None = None
    service_start: str | None = None
    service_stop: str | None = None
    practice_setting: dict[str, str] | None = None  # serviceEvent performer org standardIndustryClassCode
    facility_type: dict[str, str] | None = None  # encompassingEncounter location healthCareFacility code
    parent_document_id: str | None = None  # relatedDocument/parentDocument/id (root or root^ext)
    related_type: str | None = None  # RPLC / APND / XFRM
    level: int = 3
    nonxml_media_type: str | None = None  # nonXMLBody/text@mediaType for level 1

    @property
    def document_id(self) -> str:
        """uniqueId form: root alone, or ``root^extension``."""
        return f"{self.id_root}^{self.id_extension}" if self.id_extension else self.id_root


@dataclass(frozen=True)
class SubmissionContext:
    """What the HL7 v2 envelope (or the HTTP request) adds to a document."""

    action: DocumentAction = "submit"
    flags: dict[str, bool] = field(default_factory=dict)  # MetaDMPMSS: MASQUE_PS, DESTDMP, ACK_RECEPTION ...
    sender: Author | None = None  # PRT SB: person + organisation
    patient_class: str | None = None  # PV1-2 (I, O, R, N, E)
    patient: PatientIdentity | None = None  # from PID, when the document came in HL7 v2
    type_code: dict[str, str] | None = None  # OBX-3 / TXA-2
    parent_document_id: str | None = None  # TXA-13
    source_id: str = "1.2.250.1.999999.1"  # OID of this PFI (settings)
    submission_time: str | None = None  # YYYYMMDDHHMMSS (UTC), injected
    submission_set_unique_id: str | None = None  # OID, injected
    entry_uuid: str | None = None  # urn:uuid:..., injected
    submission_set_uuid: str | None = None  # urn:uuid:..., injected
    binary_uuid: str | None = None  # urn:uuid:..., injected
    patient_uuid: str | None = None  # urn:uuid:..., injected
    sending_application: str | None = None  # MSH-3.1


class CodedValue(TypedDict):
    code: str
    codeSystem: str
    displayName: str


class XdsAuthor(TypedDict, total=False):
    authorPerson: str  # XCN: idNat^Nom^Prénom^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS
    authorInstitution: list[str]  # XON: Nom^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^<id>
    authorRole: list[str]
    authorSpecialty: list[str]  # code^display^&oid&ISO


class XdsDocumentEntry(TypedDict, total=False):
    entryUUID: str  # urn:uuid:…
    uniqueId: str  # CDA id root (root^ext when there is an extension)
    typeCode: CodedValue
    classCode: CodedValue
    formatCode: CodedValue
    eventCodeList: list[CodedValue]
    confidentialityCode: list[CodedValue]
    healthcareFacilityTypeCode: CodedValue
    practiceSettingCode: CodedValue
    authors: list[XdsAuthor]
    legalAuthenticator: str  # XCN
    patientId: str  # INS^^^&OID&ISO^NH
    sourcePatientId: str  # IPP^^^&OID&ISO^PI (else the INS)
    sourcePatientInfo: list[str]  # PID-3=…, PID-5=…, PID-7=…, PID-8=…
    creationTime: str  # YYYYMMDDHHMMSS UTC
    serviceStartTime: str
    serviceStopTime: str
    languageCode: str  # fr-FR
    title: str
    mimeType: str  # text/xml
    hash: str  # hex SHA-1 of the CDA bytes
    size: int
    replaces: str  # uniqueId of the document this one replaces (RPLC), when action == replace
    action: str  # submit | replace | delete


class XdsSubmissionSet(TypedDict, total=False):
    entryUUID: str
    uniqueId: str
    sourceId: str
    patientId: str
    submissionTime: str
    contentTypeCode: CodedValue
    authors: list[XdsAuthor]
    title: str


class XdsSender(TypedDict, total=False):
    """The SB PRT as the VIHF needs it (volet mapping table, "Mapping VIHF pour le DMP")."""

    id: str  # PRT-5.1 (person) or PRT-10.1 (device): VIHF Subject/NameID
    family: str  # PRT-5.2
    given: str  # PRT-5.3
    service: str  # PRT-9.1
    device: bool
    software: str
    model: str
    structureIdNat: str  # Struct_IdNat derived from PRT-8.7 / PRT-8.10: Identifiant_Structure


class XdsRequest(TypedDict, total=False):
    """What the request (not the document) says, for the VIHF; not XDS metadata itself."""

    secretConnection: bool  # MetaDMPMSS CONNEXION_SECRETE = Y
    sendingApplication: str  # MSH-3.1: picks the configured J65 subject roles
    sender: XdsSender


class XdsMetadata(TypedDict):
    documentEntry: XdsDocumentEntry
    submissionSet: XdsSubmissionSet
    request: NotRequired[XdsRequest]
