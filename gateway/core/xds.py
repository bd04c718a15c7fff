"""DMP XDS.b metadata (ITI-41) from a CDA header and its HL7 v2 envelope.

``build_xds`` is a pure function: every id and time that is not in the document (entryUUIDs,
submission set uniqueId, submissionTime) comes from ``SubmissionContext``; nothing here reads
a clock or draws a UUID. The output is the ``XdsMetadata`` JSON shape of ``gateway.model``,
serialised to ebRIM by ``adapters/dmp``.

Mapping (domain brief §5, HL7 v2 CDA volet ``mapping.md``):

* typeCode = CDA ``code``; classCode from ASS_X16 then ASS_X04; formatCode from ASS_A11
  (level 1: by the nonXMLBody media type);
* confidentialityCode = CDA ``confidentialityCode`` first, then the TRE_A07 codes asked for by
  the MetaDMPMSS flags (``INVISIBLE_REP_LEGAUX`` in v2 becomes
  ``INVISIBLE_REPRESENTANTS_LEGAUX``);
* times are converted to UTC and keep the precision the document gave (``YYYYMMDD`` stays a
  date; fractions of a second are dropped). A time without a UTC offset is French local
  time (``Europe/Paris``, the CI-SIS documents' zone): the same rule as the FHIR mapping
  (``core/fhir/pdsm.fhir_datetime``), so XDS and FHIR carry the same instant (ITI TF-3
  §4.2.3.1.5: XDS times are UTC);
* the submission set contentTypeCode comes from PV1-2 (I→03, O→07, R→19, N→97, E→07);
  with no PV1-2 we send 97 "Type d'activité indifférencié" rather than guess an encounter
  type;
* sourcePatientInfo uses the IHE ``PID-x|value`` form.

* authors: a person is an XCN ``idNat^family^given^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS``, a
  device an ActorSystem ``id^software^model^^^^^^&1.2.250.1.71.4.2.1&ISO^U^^^RI`` (PDSM4DMP
  ``input/fsh/Model/ActorSystem.fsh``); an institution an XON whose XON.10 is the
  Struct_IdNat and XON.7 ``IDNST`` (P4D ``AuthorInstitution``; ``struct_idnat``);
  authorRole / authorSpecialty are ``code^display^codeSystemOID``.

Findings (codes are stable): ``XDS_TYPECODE_NOT_DMP`` and ``XDS_DOCUMENT_ID_EXTENSION`` (errors;
the caller decides whether the destination is the DMP), ``XDS_TYPE_MISMATCH``, ``XDS_CLASS_UNKNOWN``,
``XDS_FORMAT_UNKNOWN``, ``XDS_FORMAT_NOT_DMP``, ``XDS_STRUCT_IDNAT``, ``XDS_FACILITY_TYPE_MISSING``,
``XDS_PRACTICE_SETTING_MISSING``, ``XDS_CONFIDENTIALITY_MISSING``, ``XDS_TIME_INVALID``
(warnings); ``XDS_PATIENT_ID_MISSING`` and ``XDS_REPLACE_PARENT_MISSING`` (errors).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from datetime import tzinfo as tzinfo_t
from zoneinfo import ZoneInfo

from gateway.core import terminology
from gateway.model import (
    Author,
    CdaHeader,
    CodedValue,
    Finding,
    Identifier,
    Organization,
    PatientIdentity,
    Person,
    SubmissionContext,
    XdsAuthor,
    XdsDocumentEntry,
    XdsMetadata,
    XdsRequest,
    XdsSender,
    XdsSubmissionSet,
)

__all__ = ["build_xds", "to_xds_time", "xcn", "xon", "cx", "struct_idnat", "LOCAL_TZ"]

#: Zone of a CDA / HL7 v2 time written without an offset (French health documents).
LOCAL_TZ = "Europe/Paris"

RPPS_ROOT = "1.2.250.1.71.4.2.1"
STRUCTURE_ROOT = "1.2.250.1.71.4.2.2"

#: MetaDMPMSS flag (HL7 v2 OBX-3) -> TRE_A07 code (XDS / FHIR spelling).
_VISIBILITY_FLAGS = (
    ("MASQUE_PS", "MASQUE_PS"),
    ("INVISIBLE_PATIENT", "INVISIBLE_PATIENT"),
    ("INVISIBLE_REP_LEGAUX", "INVISIBLE_REPRESENTANTS_LEGAUX"),
)

_TS = re.compile(
    r"^(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?"
    r"(?:\.\d+)?(?P<tz>[+-]\d{4})?$"
)

# HL7 v2 escapes for the delimiters of XCN / XON / CX values built here.
_ESCAPES = str.maketrans({"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"})


def _esc(value: str | None) -> str:
    return (value or "").translate(_ESCAPES)


def to_xds_time(ts: str | None) -> str | None:
    """A CDA TS (``20210104160527+0100``) as an XDS UTC time (``20210104150527``).

    Keeps the given precision, drops fractions of a second; returns None when unparseable.
    Dates (no hour) are returned as written: a date has no instant to shift. A time with
    an hour and no offset is read as ``Europe/Paris`` local time.
    """
    if not ts:
        return None
    match = _TS.match(ts.strip())
    if match is None:
        return None
    parts = match.groupdict()
    digits = "".join(parts[k] or "" for k in ("y", "mo", "d", "h", "mi", "s"))
    tz = parts["tz"]
    if parts["h"] is None:
        return digits
    zone: tzinfo_t
    if tz is None:
        zone = ZoneInfo(LOCAL_TZ)
    else:
        sign = 1 if tz[0] == "+" else -1
        zone = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5])))
    try:
        local = datetime(
            int(parts["y"]),
            int(parts["mo"] or 1),
            int(parts["d"] or 1),
            int(parts["h"]),
            int(parts["mi"] or 0),
            int(parts["s"] or 0),
            tzinfo=zone,
        )
    except ValueError:
        return None
    utc = local.astimezone(UTC)
    return utc.strftime("%Y%m%d%H%M%S")[: len(digits)]


def _id_type(person: Person) -> str:
    if person.id_root == RPPS_ROOT or (person.id or "").startswith("8"):
        return "IDNPS"
    return "EI"


def xcn(person: Person | None) -> str | None:
    """XCN for authorPerson / legalAuthenticator: ``id^family^given^^^^^^&root&ISO^D^^^IDNPS``.

    A device is an ActorSystem (PDSM4DMP ``ActorSystem.fsh``: XCN.9.2 = 1.2.250.1.71.4.2.1,
    XCN.10 = ``U``, XCN.13 = ``RI``): ``id^software^model^^^^^^&1.2.250.1.71.4.2.1&ISO^U^^^RI``.
    """
    if person is None:
        return None
    if person.device:
        if not person.id:
            return None
        return (
            f"{_esc(person.id)}^{_esc(person.software)}^{_esc(person.model)}"
            f"^^^^^^&{RPPS_ROOT}&ISO^U^^^RI"
        )
    if not person.id:
        if not (person.family or person.given):
            return None
        return f"^{_esc(person.family)}^{_esc(person.given)}"
    authority = f"&{person.id_root}&ISO" if person.id_root else ""
    return f"{_esc(person.id)}^{_esc(person.family)}^{_esc(person.given)}^^^^^^{authority}^D^^^{_id_type(person)}"


#: HL7 v2 PRT-8.7 / XON.7 identifier type -> Struct_IdNat prefix (ANS "Identifiants des
#: structures": 1 = FINESS, 2 = SIREN, 3 = SIRET, 4 = RPPS-rang of a cabinet; the IdNat of
#: the national directory, IDNST, is already in that form). FINEG / FINEJ are the FINESS of a
#: geographic / legal entity (InteropSanté table 0203, volet §7 PRT-8.7).
_IDNAT_PREFIX = {"FINEG": "1", "FINEJ": "1", "FINESS": "1", "SIREN": "2", "SIRET": "3", "RPPSRANG": "4"}


def struct_idnat(org: Organization | None) -> str | None:
    """The Struct_IdNat of an organisation (VIHF Identifiant_Structure, XON.10), or None.

    An ``IDNST`` id, or an id under the structures' OID 1.2.250.1.71.4.2.2 with no type
    (a CDA ``representedOrganization/id``), is an IdNat already; a FINESS / SIREN / SIRET
    gets its prefix unless it carries it already (a 10-character FINESS id starting with 1).
    """
    if org is None or not org.id:
        return None
    kind = (org.id_type or "").upper()
    if kind == "IDNST" or (not kind and org.id_root == STRUCTURE_ROOT):
        return org.id
    prefix = _IDNAT_PREFIX.get(kind)
    if prefix is None:
        return None
    if prefix == "1" and len(org.id) == 10 and org.id.startswith("1"):
        return org.id
    return prefix + org.id


def xon(org: Organization | None) -> str | None:
    """XON for authorInstitution: ``name^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^<Struct_IdNat>``.

    P4D ``AuthorInstitution``: XON.6.2 = 1.2.250.1.71.4.2.2, XON.7 = ``IDNST``, XON.10 = the
    Struct_IdNat. An organisation whose id cannot be turned into an IdNat keeps only its name.
    """
    if org is None or not (org.name or org.id):
        return None
    idnat = struct_idnat(org)
    if not idnat:
        return _esc(org.name) or None
    return f"{_esc(org.name)}^^^^^&{STRUCTURE_ROOT}&ISO^IDNST^^^{_esc(idnat)}"


def cx(ident: Identifier, type_code: str) -> str:
    """CX ``value^^^&oid&ISO^type`` (namespace only when there is no OID)."""
    authority = f"&{ident.oid}&ISO" if ident.oid else _esc(ident.namespace)
    return f"{_esc(ident.value)}^^^{authority}^{type_code}"


def _cwe(coded: dict[str, str] | None) -> str | None:
    """authorRole / authorSpecialty as the ANS examples write them: ``code^display^OID``."""
    if not coded or not coded.get("code"):
        return None
    system = coded.get("codeSystem") or ""
    return f"{_esc(coded['code'])}^{_esc(coded.get('displayName'))}^{_esc(system)}"


def _xds_author(author: Author) -> XdsAuthor | None:
    result: XdsAuthor = {}
    person = xcn(author.person)
    if person:
        result["authorPerson"] = person
    institution = xon(author.organization)
    if institution:
        result["authorInstitution"] = [institution]
    role = _cwe(author.function)
    if role:
        result["authorRole"] = [role]
    specialty = _cwe(author.person.profession if author.person else None)
    if specialty:
        result["authorSpecialty"] = [specialty]
    return result or None


def _as_coded(value: dict[str, str]) -> CodedValue:
    return {
        "code": value["code"],
        "codeSystem": value.get("codeSystem", ""),
        "displayName": value.get("displayName", ""),
    }


def _bound(vs: str, value: dict[str, str]) -> CodedValue:
    """The CDA coded value, with the value set's display when the value set knows the code."""
    out = _as_coded(value)
    label = terminology.display(vs, out["code"], out["codeSystem"] or None)
    if label:
        out["displayName"] = label
    return out


def _source_patient_info(patient: PatientIdentity) -> list[str]:
    lines: list[str] = []
    if patient.ipp is not None:
        lines.append(f"PID-3|{cx(patient.ipp, 'PI')}")
    if patient.ins is not None:
        lines.append(f"PID-3|{cx(patient.ins, 'NH')}")
    if patient.birth_family or patient.first_given:
        lines.append(f"PID-5|{_esc(patient.birth_family)}^{_esc(patient.first_given)}^^^^^L")
    if patient.used_family or patient.used_given:
        lines.append(f"PID-5|{_esc(patient.used_family)}^{_esc(patient.used_given)}^^^^^D")
    if patient.birth_date:
        lines.append(f"PID-7|{patient.birth_date}")
    if patient.gender:
        lines.append(f"PID-8|{patient.gender}")
    return lines


@dataclass
class _Findings:
    """The findings of one build, in the order the metadata is built."""

    found: list[Finding] = field(default_factory=list)

    def warn(self, code: str, message: str, location: str | None = None) -> None:
        self.found.append(Finding(code, message, location, "warning"))

    def error(self, code: str, message: str, location: str | None = None) -> None:
        self.found.append(Finding(code, message, location, "error"))


def build_xds(
    header: CdaHeader, cda_bytes: bytes, ctx: SubmissionContext
) -> tuple[XdsMetadata, list[Finding]]:
    """Build the DocumentEntry + SubmissionSet metadata for one CDA document.

    Returns the metadata and the findings; errors among them mean the DMP would refuse the
    submission (``XDS_TYPECODE_NOT_DMP`` only matters when the destination is the DMP).
    """
    findings = _Findings()
    entry: XdsDocumentEntry = {
        **_document_id(header, ctx, findings),
        **_type_and_class(header, ctx, findings),
        **_format(header, findings),
        "confidentialityCode": _confidentiality(header, ctx.flags, findings),
        **_care_setting(header, findings),
        **_authors(header),
        **_patient(header, ctx.patient, findings),
        **_times(header, findings),
        **_content(header, cda_bytes),
        **_action(header, ctx, findings),
    }
    metadata: XdsMetadata = {
        "documentEntry": entry,
        "submissionSet": _submission_set(header, ctx, entry.get("patientId")),
        "request": _request(ctx, findings),
    }
    return metadata, findings.found


def _document_id(header: CdaHeader, ctx: SubmissionContext, findings: _Findings) -> XdsDocumentEntry:
    """entryUUID (injected) and uniqueId (the CDA id)."""
    entry: XdsDocumentEntry = {}
    if ctx.entry_uuid:
        entry["entryUUID"] = ctx.entry_uuid
    entry["uniqueId"] = header.document_id
    if header.id_extension:
        # Volet §6 (TXA-12) and domain brief §5: the DMP does not accept OID^extension
        # document ids. An error here; the pipeline downgrades it when the DMP is not a
        # destination, as for XDS_TYPECODE_NOT_DMP.
        findings.error(
            "XDS_DOCUMENT_ID_EXTENSION",
            f"ClinicalDocument/id has an extension ({header.id_root}^…): the DMP accepts only a "
            "root-only OID as uniqueId",
            "/ClinicalDocument/id",
        )
    return entry


def _type_and_class(header: CdaHeader, ctx: SubmissionContext, findings: _Findings) -> XdsDocumentEntry:
    """typeCode = the CDA code (JDV_J66), classCode from ASS_X16 then ASS_X04."""
    type_code = header.code
    if not type_code:
        findings.error("XDS_TYPECODE_NOT_DMP", "the CDA has no code", "/ClinicalDocument/code")
        findings.warn("XDS_CLASS_UNKNOWN", "no typeCode to derive a classCode from")
        return {}
    entry: XdsDocumentEntry = {"typeCode": _bound("jdv_j66_typecode_dmp", type_code)}
    if not terminology.in_value_set("jdv_j66_typecode_dmp", type_code["code"], type_code["codeSystem"]):
        findings.error(
            "XDS_TYPECODE_NOT_DMP",
            f"typeCode {type_code['code']} is not in JDV_J66 (DMP type codes)",
            "/ClinicalDocument/code",
        )
    if ctx.type_code and ctx.type_code.get("code") and ctx.type_code["code"] != type_code["code"]:
        findings.warn(
            "XDS_TYPE_MISMATCH",
            f"message type code {ctx.type_code['code']} differs from CDA code {type_code['code']}",
            "OBX-3",
        )
    class_code = terminology.class_for_type(type_code["code"], type_code["codeSystem"] or None)
    if class_code:
        entry["classCode"] = class_code
    else:
        findings.warn("XDS_CLASS_UNKNOWN", f"no classCode for typeCode {type_code['code']} in ASS_X16/ASS_X04")
    return entry


def _format(header: CdaHeader, findings: _Findings) -> XdsDocumentEntry:
    """formatCode from ASS_A11: by templateIds, or by the nonXMLBody media type at level 1."""
    format_code = terminology.format_for_templates(
        header.template_ids, header.level, header.nonxml_media_type
    )
    if not format_code:
        findings.warn(
            "XDS_FORMAT_UNKNOWN",
            "no formatCode in ASS_A11 for the document's templateIds / media type",
            "/ClinicalDocument/templateId",
        )
        return {}
    if not terminology.in_value_set("jdv_j60_formatcode_dmp", format_code["code"], format_code["codeSystem"]):
        findings.warn("XDS_FORMAT_NOT_DMP", f"formatCode {format_code['code']} is not in JDV_J60")
    return {"formatCode": format_code}


def _confidentiality(header: CdaHeader, flags: dict[str, bool], findings: _Findings) -> list[CodedValue]:
    """The CDA confidentialityCode (N when it has none), then the visibility codes the flags ask for."""
    confidentiality: list[CodedValue] = []
    if header.confidentiality:
        conf = dict(header.confidentiality)
        conf["codeSystem"] = conf.get("codeSystem") or terminology.HL7_CONFIDENTIALITY
        confidentiality.append(_bound("jdv_j58_confidentiality_dmp", conf))
    else:
        findings.warn(
            "XDS_CONFIDENTIALITY_MISSING",
            "no confidentialityCode in the CDA; N (normal) used",
            "/ClinicalDocument/confidentialityCode",
        )
        normal = terminology.coded("jdv_j58_confidentiality_dmp", "N", terminology.HL7_CONFIDENTIALITY)
        if normal:
            confidentiality.append(normal)
    return confidentiality + _visibility(flags)


def _visibility(flags: dict[str, bool]) -> list[CodedValue]:
    """The TRE_A07 codes of the MetaDMPMSS visibility flags that are set."""
    codes: list[CodedValue] = []
    for flag, code in _VISIBILITY_FLAGS:
        if flags.get(flag):
            value = terminology.coded("jdv_j58_confidentiality_dmp", code, terminology.TRE_A07)
            codes.append(value or {"code": code, "codeSystem": terminology.TRE_A07, "displayName": code})
    return codes


def _care_setting(header: CdaHeader, findings: _Findings) -> XdsDocumentEntry:
    """healthcareFacilityTypeCode (JDV_J61) and practiceSettingCode (JDV_J62) from the CDA."""
    entry: XdsDocumentEntry = {}
    if header.facility_type:
        entry["healthcareFacilityTypeCode"] = _bound("jdv_j61_facilitytype_dmp", header.facility_type)
    else:
        findings.warn(
            "XDS_FACILITY_TYPE_MISSING",
            "no healthCareFacility/code in the CDA",
            "/ClinicalDocument/componentOf/encompassingEncounter/location/healthCareFacility/code",
        )
    if header.practice_setting:
        entry["practiceSettingCode"] = _bound("jdv_j62_practicesetting_dmp", header.practice_setting)
    else:
        findings.warn(
            "XDS_PRACTICE_SETTING_MISSING",
            "no serviceEvent performer organisation standardIndustryClassCode in the CDA",
            "/ClinicalDocument/documentationOf/serviceEvent/performer",
        )
    return entry


def _authors(header: CdaHeader) -> XdsDocumentEntry:
    """The document's authors and its legal authenticator."""
    entry: XdsDocumentEntry = {}
    authors = [a for a in (_xds_author(author) for author in header.authors) if a]
    if authors:
        entry["authors"] = authors
    legal = xcn(header.legal_authenticator.person if header.legal_authenticator else None)
    if legal:
        entry["legalAuthenticator"] = legal
    return entry


def _patient(header: CdaHeader, envelope: PatientIdentity | None, findings: _Findings) -> XdsDocumentEntry:
    """patientId (the INS), sourcePatientId (the IPP, else the INS) and sourcePatientInfo.

    The envelope's identity (PID) wins over the CDA's, as the PFI checks them equal.
    """
    entry: XdsDocumentEntry = {}
    ins = (envelope.ins if envelope else None) or header.patient.ins
    ipp = (envelope.ipp if envelope else None) or header.patient.ipp
    patient_id = cx(ins, "NH") if ins else None
    if patient_id:
        entry["patientId"] = patient_id
    else:
        findings.error("XDS_PATIENT_ID_MISSING", "no INS for the patient: XDS patientId cannot be set", "PID-3")
    source_patient = cx(ipp, "PI") if ipp else patient_id
    if source_patient:
        entry["sourcePatientId"] = source_patient
    info = _source_patient_info(envelope or header.patient)
    if info:
        entry["sourcePatientInfo"] = info
    return entry


_SERVICE_TIME = "/ClinicalDocument/documentationOf/serviceEvent/effectiveTime"


def _times(header: CdaHeader, findings: _Findings) -> XdsDocumentEntry:
    """creationTime and serviceStart/StopTime in UTC; a time that is not an HL7 TS is left out."""
    entry: XdsDocumentEntry = {}
    times: tuple[tuple[str, str | None, str], ...] = (
        ("creationTime", header.effective_time, "/ClinicalDocument/effectiveTime"),
        ("serviceStartTime", header.service_start, f"{_SERVICE_TIME}/low"),
        ("serviceStopTime", header.service_stop, f"{_SERVICE_TIME}/high"),
    )
    for key, ts, location in times:
        if not ts:
            continue
        converted = to_xds_time(ts)
        if converted is None:
            findings.warn("XDS_TIME_INVALID", f"{key}: {ts!r} is not an HL7 TS", location)
        else:
            entry[key] = converted  # type: ignore[literal-required]
    return entry


def _content(header: CdaHeader, cda_bytes: bytes) -> XdsDocumentEntry:
    """What describes the document's bytes: language, title, mime type, hash and size."""
    entry: XdsDocumentEntry = {}
    if header.language:
        entry["languageCode"] = header.language
    if header.title:
        entry["title"] = header.title
    entry["mimeType"] = "text/xml"
    entry["hash"] = hashlib.sha1(cda_bytes).hexdigest()
    entry["size"] = len(cda_bytes)
    return entry


def _action(header: CdaHeader, ctx: SubmissionContext, findings: _Findings) -> XdsDocumentEntry:
    """The action, and for a replacement the uniqueId of the document it replaces."""
    entry: XdsDocumentEntry = {"action": ctx.action}
    if ctx.action != "replace":
        return entry
    parent = ctx.parent_document_id or header.parent_document_id
    if parent:
        entry["replaces"] = parent
    else:
        findings.error(
            "XDS_REPLACE_PARENT_MISSING",
            "replacement without a parent document id (TXA-13 or relatedDocument)",
            "TXA-13",
        )
    return entry


def _submission_set(header: CdaHeader, ctx: SubmissionContext, patient_id: str | None) -> XdsSubmissionSet:
    """The SubmissionSet: injected ids and time, the PFI's sourceId, contentTypeCode from PV1-2."""
    submission: XdsSubmissionSet = {}
    if ctx.submission_set_uuid:
        submission["entryUUID"] = ctx.submission_set_uuid
    if ctx.submission_set_unique_id:
        submission["uniqueId"] = ctx.submission_set_unique_id
    submission["sourceId"] = ctx.source_id
    if patient_id:
        submission["patientId"] = patient_id
    if ctx.submission_time:
        submission["submissionTime"] = ctx.submission_time
    submission["contentTypeCode"] = terminology.content_type_for_patient_class(ctx.patient_class)
    author = _submission_author(header, ctx)
    if author:
        submission["authors"] = [author]
    return submission


def _submission_author(header: CdaHeader, ctx: SubmissionContext) -> XdsAuthor | None:
    """The sender (PRT SB); without one, the document's first author."""
    author = _xds_author(ctx.sender) if ctx.sender else None
    if author is None and header.authors:
        author = _xds_author(header.authors[0])
    return author


def _request(ctx: SubmissionContext, findings: _Findings) -> XdsRequest:
    """The VIHF inputs the message gives (volet ``mapping.md``, "Mapping VIHF pour le DMP")."""
    request: XdsRequest = {"secretConnection": bool(ctx.flags.get("CONNEXION_SECRETE"))}
    if ctx.sending_application:
        request["sendingApplication"] = ctx.sending_application
    if ctx.sender is not None:
        request["sender"] = _sender(ctx.sender, findings)
    return request


def _sender(author: Author, findings: _Findings) -> XdsSender:
    """The SB PRT as the VIHF reads it: the user (or device) and its Struct_IdNat."""
    sender: XdsSender = {}
    person = author.person
    if person is not None:
        for key, value in (
            ("id", person.id),
            ("family", person.family),
            ("given", person.given),
            ("service", person.service),
            ("software", person.software),
            ("model", person.model),
        ):
            if value:
                sender[key] = value  # type: ignore[literal-required]
        if person.device:
            sender["device"] = True
    organization = author.organization
    idnat = struct_idnat(organization)
    if idnat:
        sender["structureIdNat"] = idnat
    elif organization is not None and organization.id:
        findings.error(
            "XDS_STRUCT_IDNAT",
            f"PRT-8.7 '{organization.id_type or ''}' is not a structure id type (FINEG, FINEJ, SIREN, "
            "SIRET, IDNST): no Struct_IdNat for the VIHF Identifiant_Structure",
            "PRT-8.7",
        )
    return sender
