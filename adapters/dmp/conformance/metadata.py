"""XDS metadata rules for the DMP (ITI-41 Provide and Register, and the ITI-57 submission set).

Sources, cited per rule: IHE ITI TF-3 §4.2.3 (attributes), §4.3.1 (optionality, Table 4.3.1-3
"XDS DS" column), §4.2.2 (associations); ITI TF-2b §3.41.4.1.3 (repository/registry
expected actions, error codes of Table 4.2.4.1-2); the volet "Transmission de documents CDA
en HL7v2" (ansforge/IG-hl7v2-volet-transmission-document-cda-r2, ``input/pagecontent/mapping.md``
"Mapping XDS", and ``evenements-declenchants.md`` on TXA-12: the DMP does not accept
``OID^extension`` ids); ANS PDSM4DMP logical models (``input/fsh/Model/*.fsh``); the ANS
value sets JDV_J57…J66.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from lxml import etree

from adapters.dmp.conformance import identifiers as ids
from adapters.dmp.conformance.names import ASSOC, DE, SS, STATUS
from adapters.dmp.conformance.registry_objects import Association, Metadata, RegistryObject
from adapters.dmp.conformance.valuesets import value_set
from adapters.dmp.conformance.violation import Rule, Violation
from adapters.dmp.conformance.xmldsig import SAFE_PARSER

__all__ = ["KnownEntry", "RegistryView", "check_submission_set", "check_provide_and_register"]

_TF3_OPT = "IHE ITI TF-3 §4.3.1 Table 4.3.1-3 (XDS DS optionality)"

SS_ONE = Rule("XDS-SS-01", "exactly one SubmissionSet", "IHE ITI TF-3 §4.1.4 / §4.2.1.3")
SS_REQUIRED = Rule(
    "XDS-SS-02",
    "SubmissionSet uniqueId, sourceId, patientId, submissionTime, contentTypeCode and author present",
    f"{_TF3_OPT}; volet CDA HL7v2 mapping.md 'Lot de soumission' (authorPerson, contentTypeCode requis)",
)
DE_REQUIRED = Rule(
    "XDS-DE-01",
    "DocumentEntry required attributes present",
    f"{_TF3_OPT}; volet CDA HL7v2 mapping.md 'Fiche'",
)
CODE_IN_SET = Rule(
    "XDS-CODE-01",
    "coded attributes in their DMP value set (J57 class, J58 confidentiality, J59 contentType, "
    "J60 format, J61 facility, J62 practice setting, J66 type)",
    "ANS IG-terminologie-de-sante ValueSet JDV_J57…J66 (profiles/terminology); volet mapping.md",
)
TIME_UTC = Rule(
    "XDS-TIME-01",
    "XDS times are DTM in UTC",
    "IHE ITI TF-3 §4.2.3.1.7 Table 4.2.3.1.7-2 (DTM: 'shall be in UTC'), §4.2.3.2.6, §4.2.3.3.12",
)
TIME_INSTANT = Rule(
    "XDS-TIME-02",
    "creationTime is the CDA effectiveTime converted to UTC (no offset = French local time)",
    "IHE ITI TF-3 §4.2.3.2.6; volet mapping.md 'Fiche' creationTime ← ClinicalDocument/effectiveTime; "
    "HL7 CDA R2 TS (local time when no offset)",
)
UNIQUE_ID = Rule(
    "XDS-UID-01",
    "DocumentEntry.uniqueId is a root-only OID (the DMP refuses OID^extension)",
    "volet CDA HL7v2 evenements-declenchants.md (TXA-12: 'le DMP ne supporte pas' OID^extension); "
    "IHE ITI TF-3 §4.2.3.2.26",
)
SS_UNIQUE_ID = Rule("XDS-UID-02", "SubmissionSet.uniqueId is an OID", "IHE ITI TF-3 §4.2.3.3.12")
PATIENT_ID = Rule(
    "XDS-PID-01",
    "patientId is an INS in CX form INS^^^&1.2.250.1.213.1.4.x&ISO^NH with a valid key",
    "ANS PDSM4DMP input/fsh/Model/PatientId.fsh; volet mapping.md (patientId ← PID-3 INS); Référentiel INS",
    "XDSUnknownPatientId",
)
PATIENT_SAME = Rule(
    "XDS-PID-02",
    "every object of the submission has the SubmissionSet's patientId",
    "IHE ITI TF-2b §3.41.4.1.3 / ITI TF-3 §4.2.3.3.6 (XDSPatientIdDoesNotMatch)",
    "XDSPatientIdDoesNotMatch",
)
INSTITUTION = Rule(
    "XDS-INST-01",
    "authorInstitution is an IDNST XON: XON.6 = &1.2.250.1.71.4.2.2&ISO, XON.7 = IDNST, XON.10 = Struct_IdNat",
    "ANS PDSM4DMP input/fsh/Model/AuthorInstitution.fsh and StructIdNat.fsh; volet mapping.md (PRT-8 SB)",
)
AUTHOR_PERSON = Rule(
    "XDS-AUTH-01",
    "authorPerson is a PS XCN (family name, assigning authority, id type) or an ActorSystem "
    "(id^name^model^^^^^^&1.2.250.1.71.4.2.1&ISO^U^^^RI)",
    "ANS PDSM4DMP input/fsh/Model/ActorPS.fsh, ActorSystem.fsh; volet mapping.md (authorPerson ← PRT-5 SB)",
)
HASH = Rule(
    "XDS-HASH-01",
    "declared hash is the SHA-1 of the document",
    "IHE ITI TF-3 §4.2.3.2.10",
    "XDSNonIdenticalHash",
)
SIZE = Rule(
    "XDS-SIZE-01", "declared size is the document's", "IHE ITI TF-3 §4.2.3.2.19", "XDSNonIdenticalSize"
)
DOCUMENT = Rule(
    "XDS-DOC-01",
    "each DocumentEntry has its Document and each Document its DocumentEntry",
    "IHE ITI TF-2b §3.41.4.1.3 (XDSMissingDocument, XDSMissingDocumentMetadata)",
    "XDSMissingDocument",
)
DUPLICATE = Rule(
    "XDS-DUP-01",
    "a uniqueId is registered once",
    "IHE ITI TF-2b §3.42.4.1.3 (XDSDuplicateUniqueIdInRegistry)",
    "XDSDuplicateUniqueIdInRegistry",
)
RPLC_TARGET = Rule(
    "XDS-RPLC-01",
    "an RPLC target is a registered, Approved entry of the same patient",
    "IHE ITI TF-3 §4.2.2.2 (document relationships) and Table 4.2.4.1-2 (XDSRegistryDeprecatedDocumentError); "
    "ebRS 3.0 UnresolvedReferenceException; volet mapping.md RPLC",
    "UnresolvedReferenceException",
)
MEMBERSHIP = Rule(
    "XDS-MEMBER-01",
    "a HasMember association with SubmissionSetStatus=Original links the SubmissionSet to each DocumentEntry",
    "IHE ITI TF-3 §4.2.2.1.1-§4.2.2.1.2",
)
NOT_A_DELETION = Rule(
    "XDS-DEL-01",
    "ITI-41 does not delete or archive: no availability update, no status other than Approved",
    "ANS PDSM4DMP index.md table (TD3.3c / TD3.3d = ITI-57 UpdateAvailabilityStatus); "
    "IHE ITI TF-3 §4.2.3.2.3 (availabilityStatus is set by the registry)",
)

_OID = re.compile(r"^[0-2](\.(0|[1-9]\d*))+$")
_CODE_SETS = {
    "classCode": (DE.CLASS_CODE, "J57"),
    "typeCode": (DE.TYPE_CODE, "J66"),
    "formatCode": (DE.FORMAT_CODE, "J60"),
    "confidentialityCode": (DE.CONFIDENTIALITY_CODE, "J58"),
    "healthcareFacilityTypeCode": (DE.FACILITY_TYPE_CODE, "J61"),
    "practiceSettingCode": (DE.PRACTICE_SETTING_CODE, "J62"),
}
_SS_CODE_SETS = {"contentTypeCode": (SS.CONTENT_TYPE_CODE, "J59")}
_ENTRY_IDS = (("uniqueId", DE.UNIQUE_ID), ("patientId", DE.PATIENT_ID))
_PARIS = ZoneInfo("Europe/Paris")


@dataclass(frozen=True)
class KnownEntry:
    """What the registry knows of one entry."""

    entry_uuid: str
    unique_id: str
    patient_id: str
    status: str


class RegistryView(Protocol):
    """Read access to the registry state the rules need."""

    def entry(self, entry_uuid: str) -> KnownEntry | None:
        """The registered entry with this entryUUID, if any."""
        ...

    def has_unique_id(self, unique_id: str) -> bool:
        """Whether an object with this uniqueId is registered."""
        ...


def _authors_checks(obj: RegistryObject, label: str) -> list[Violation]:
    """XDS-INST-01 and XDS-AUTH-01: authorInstitution as an IDNST XON, authorPerson as a PS or system XCN."""
    found = []
    for author in obj.authors:
        for xon in author.institutions:
            problem = ids.xon_problem(xon)
            if problem:
                found.append(INSTITUTION(f"{label} authorInstitution {xon!r}: {problem}"))
        for xcn in author.person:
            _, problem = ids.xcn_kind(xcn)
            if problem:
                found.append(AUTHOR_PERSON(f"{label} authorPerson {xcn!r}: {problem}"))
    return found


def _code_checks(obj: RegistryObject, code_sets: dict[str, tuple[str, str]]) -> list[Violation]:
    """XDS-CODE-01: each code of ``code_sets`` (attribute → (classification scheme, JDV)) is in its JDV."""
    return [
        CODE_IN_SET(f"{name} {coded.code}^{coded.scheme} is not in JDV_{key}")
        for name, (scheme, key) in code_sets.items()
        for coded in obj.codes.get(scheme, [])
        if (coded.code, coded.scheme) not in value_set(key)
    ]


def _time_checks(obj: RegistryObject, label: str, names: tuple[str, ...]) -> list[Violation]:
    """XDS-TIME-01: the named time slots, when given, are DTM in UTC (TF-3 Table 4.2.3.1.7-2)."""
    found: list[Violation] = []
    for name in names:
        value = obj.slot(name)
        problem = ids.dtm_problem(value) if value else None
        if problem:
            found.append(TIME_UTC(f"{label}.{name}: {problem}"))
    return found


def _patient_id_checks(obj: RegistryObject, label: str, scheme: str) -> list[Violation]:
    """XDS-PID-01: patientId, when given, is an INS in CX form with a valid key (PatientId.fsh)."""
    patient = obj.external_ids.get(scheme)
    problem = ids.ins_problem(patient) if patient else None
    return [PATIENT_ID(f"{label}.patientId: {problem}")] if problem else []


def check_submission_set(metadata: Metadata, registry: RegistryView | None = None) -> list[Violation]:
    """Rules on the SubmissionSet itself (ITI-41 and ITI-57)."""
    if len(metadata.submission_sets) != 1:
        return [SS_ONE(f"{len(metadata.submission_sets)} SubmissionSets")]
    ss = metadata.submission_sets[0]
    found = _submission_set_required(ss) + _submission_set_ids(ss, registry)
    found += _patient_id_checks(ss, "SubmissionSet", SS.PATIENT_ID)
    found += _time_checks(ss, "SubmissionSet", ("submissionTime",))
    found += _code_checks(ss, _SS_CODE_SETS)
    found += _authors_checks(ss, "SubmissionSet")
    return found


def _submission_set_required(ss: RegistryObject) -> list[Violation]:
    """XDS-SS-02: the SubmissionSet attributes required by TF-3 Table 4.3.1-3 and the volet mapping."""
    missing = [
        name
        for name, present in (
            ("uniqueId", ss.external_ids.get(SS.UNIQUE_ID)),
            ("sourceId", ss.external_ids.get(SS.SOURCE_ID)),
            ("patientId", ss.external_ids.get(SS.PATIENT_ID)),
            ("submissionTime", ss.slot("submissionTime")),
            ("contentTypeCode", ss.codes.get(SS.CONTENT_TYPE_CODE)),
            ("author.authorPerson", any(a.person for a in ss.authors)),
        )
        if not present
    ]
    return [SS_REQUIRED(f"SubmissionSet lacks {', '.join(missing)}")] if missing else []


def _submission_set_ids(ss: RegistryObject, registry: RegistryView | None) -> list[Violation]:
    """XDS-UID-02: uniqueId and sourceId are OIDs (TF-3 §4.2.3.3.12); XDS-DUP-01: uniqueId is new."""
    found: list[Violation] = []
    unique_id = ss.external_ids.get(SS.UNIQUE_ID)
    if unique_id and not _OID.match(unique_id):
        found.append(SS_UNIQUE_ID(f"SubmissionSet.uniqueId {unique_id!r} is not an OID"))
    if unique_id and registry is not None and registry.has_unique_id(unique_id):
        found.append(DUPLICATE(f"SubmissionSet uniqueId {unique_id} is already registered"))
    source_id = ss.external_ids.get(SS.SOURCE_ID)
    if source_id and not _OID.match(source_id):
        found.append(SS_UNIQUE_ID(f"SubmissionSet.sourceId {source_id!r} is not an OID"))
    return found


def _cda_effective_time(document: bytes) -> datetime | None:
    try:
        root = etree.fromstring(document, SAFE_PARSER)
    except etree.XMLSyntaxError:
        return None
    node = root.find("{urn:hl7-org:v3}effectiveTime")
    value = node.get("value", "") if node is not None else ""
    match = re.match(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$", value)
    if not match:
        return None
    year, month, day, hour, minute, second, offset = match.groups()
    fields = (int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0))
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        return datetime(*fields, tzinfo=UTC) - sign * delta
    # No offset: French local time (Europe/Paris), DST included.
    return datetime(*fields, tzinfo=_PARIS).astimezone(UTC)


def _dtm_prefix_matches(xds_value: str, instant: datetime) -> bool:
    return instant.strftime("%Y%m%d%H%M%S").startswith(xds_value)


def _check_entry(entry: RegistryObject, document: bytes | None) -> list[Violation]:
    found = _entry_required(entry)
    found += _code_checks(entry, _CODE_SETS)
    found += _time_checks(entry, "DocumentEntry", ("creationTime", "serviceStartTime", "serviceStopTime"))
    unique_id = entry.external_ids.get(DE.UNIQUE_ID)
    if unique_id and not _OID.match(unique_id):
        # XDS-UID-01: root-only OID, the DMP refuses OID^extension (volet, TXA-12).
        found.append(UNIQUE_ID(f"DocumentEntry.uniqueId {unique_id!r} is not a root-only OID"))
    found += _patient_id_checks(entry, "DocumentEntry", DE.PATIENT_ID)
    found += _authors_checks(entry, "DocumentEntry")
    if document is not None:
        found += _document_checks(entry, document) + _creation_time_checks(entry, document)
    return found


def _entry_required(entry: RegistryObject) -> list[Violation]:
    """XDS-DE-01: the DocumentEntry attributes required by TF-3 Table 4.3.1-3 and the volet 'Fiche'."""
    missing = [name for name, (scheme, _) in _CODE_SETS.items() if not entry.codes.get(scheme)]
    missing += [name for name in ("creationTime", "languageCode", "sourcePatientId") if not entry.slot(name)]
    missing += [name for name, scheme in _ENTRY_IDS if not entry.external_ids.get(scheme)]
    if not entry.element.get("mimeType"):
        missing.append("mimeType")
    return [DE_REQUIRED(f"DocumentEntry {entry.id} lacks {', '.join(missing)}")] if missing else []


def _document_checks(entry: RegistryObject, document: bytes) -> list[Violation]:
    """XDS-HASH-01 and XDS-SIZE-01: declared hash and size are the document's (TF-3 §4.2.3.2.10, .19)."""
    found: list[Violation] = []
    declared_hash = entry.slot("hash")
    if declared_hash and declared_hash.lower() != hashlib.sha1(document).hexdigest():
        found.append(HASH(f"DocumentEntry {entry.id}: hash differs from the document"))
    declared_size = entry.slot("size")
    if declared_size and declared_size != str(len(document)):
        found.append(SIZE(f"DocumentEntry {entry.id}: size {declared_size} != {len(document)}"))
    return found


def _creation_time_checks(entry: RegistryObject, document: bytes) -> list[Violation]:
    """XDS-TIME-02: a well-formed creationTime is the CDA effectiveTime in UTC (TF-3 §4.2.3.2.6)."""
    creation = entry.slot("creationTime")
    if not creation or ids.dtm_problem(creation) or entry.element.get("mimeType") != "text/xml":
        return []
    cda_time = _cda_effective_time(document)
    if cda_time is None or _dtm_prefix_matches(creation, cda_time):
        return []
    return [
        TIME_INSTANT(
            f"creationTime {creation} is not the CDA effectiveTime in UTC "
            f"({cda_time.strftime('%Y%m%d%H%M%S')})"
        )
    ]


def check_provide_and_register(
    metadata: Metadata,
    documents: dict[str, bytes],
    registry: RegistryView,
) -> list[Violation]:
    """DocumentEntry, association and registry-state rules of an ITI-41 request."""
    found: list[Violation] = []
    ss = metadata.submission_set
    ss_patient = ss.external_ids.get(SS.PATIENT_ID) if ss else None
    if not metadata.entries:
        found.append(DE_REQUIRED("the submission has no DocumentEntry"))
    for entry in metadata.entries:
        found += _submitted_entry_checks(entry, documents.get(entry.id), ss_patient, registry)
    found += _orphan_documents(documents, {e.id for e in metadata.entries})
    found += _membership_checks(metadata, ss)
    for association in metadata.associations:
        if association.type == ASSOC.UPDATE_AVAILABILITY:
            found.append(
                NOT_A_DELETION("an UpdateAvailabilityStatus association belongs in ITI-57, not ITI-41")
            )
        if association.type == ASSOC.RPLC:
            found += _rplc_target_checks(association, registry, ss_patient)
    return found


def _submitted_entry_checks(
    entry: RegistryObject, document: bytes | None, ss_patient: str | None, registry: RegistryView
) -> list[Violation]:
    """One DocumentEntry in its submission: its Document, its own rules, then the registry state."""
    found: list[Violation] = []
    if document is None:
        found.append(DOCUMENT(f"no Document for DocumentEntry {entry.id}"))
    found += _check_entry(entry, document)
    patient = entry.external_ids.get(DE.PATIENT_ID)
    if ss_patient and patient and patient != ss_patient:
        # XDS-PID-02: ITI TF-2b §3.41.4.1.3 (XDSPatientIdDoesNotMatch).
        found.append(PATIENT_SAME(f"DocumentEntry {entry.id} patientId differs from the SubmissionSet's"))
    unique_id = entry.external_ids.get(DE.UNIQUE_ID)
    if unique_id and registry.has_unique_id(unique_id):
        # XDS-DUP-01: ITI TF-2b §3.42.4.1.3 (XDSDuplicateUniqueIdInRegistry).
        found.append(DUPLICATE(f"uniqueId {unique_id} is already registered"))
    status = entry.element.get("status")
    if status and status != STATUS.APPROVED:
        # XDS-DEL-01: availabilityStatus is the registry's to set (TF-3 §4.2.3.2.3).
        found.append(NOT_A_DELETION(f"DocumentEntry {entry.id} submitted with status {status}"))
    return found


def _orphan_documents(documents: dict[str, bytes], entry_ids: set[str]) -> list[Violation]:
    """XDS-DOC-01, other way round: a Document without DocumentEntry is XDSMissingDocumentMetadata."""
    return [
        Violation(
            DOCUMENT.code,
            f"Document {extra} has no DocumentEntry",
            DOCUMENT.reference,
            "XDSMissingDocumentMetadata",
        )
        for extra in set(documents) - entry_ids
    ]


def _membership_checks(metadata: Metadata, ss: RegistryObject | None) -> list[Violation]:
    """XDS-MEMBER-01: a HasMember, SubmissionSetStatus=Original, from the SubmissionSet to each entry."""
    members = {
        a.target
        for a in metadata.associations
        if a.type == ASSOC.HAS_MEMBER
        and ss is not None
        and a.source == ss.id
        and a.slots.get("SubmissionSetStatus") == ["Original"]
    }
    return [
        MEMBERSHIP(f"no HasMember (SubmissionSetStatus=Original) to {entry.id}")
        for entry in metadata.entries
        if entry.id not in members
    ]


def _rplc_target_checks(
    association: Association, registry: RegistryView, ss_patient: str | None
) -> list[Violation]:
    """XDS-RPLC-01: the replaced entry is registered, Approved and of the same patient (TF-3 §4.2.2.2)."""
    target = registry.entry(association.target)
    if target is None:
        return [RPLC_TARGET(f"RPLC target {association.target} is not registered")]
    if target.status != STATUS.APPROVED:
        return [
            Violation(
                RPLC_TARGET.code,
                f"RPLC target {association.target} is {target.status}",
                RPLC_TARGET.reference,
                "XDSRegistryDeprecatedDocumentError",
            )
        ]
    if ss_patient and target.patient_id != ss_patient:
        return [
            Violation(
                RPLC_TARGET.code,
                "RPLC target belongs to another patient",
                RPLC_TARGET.reference,
                "XDSPatientIdDoesNotMatch",
            )
        ]
    return []
