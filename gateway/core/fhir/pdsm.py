"""PDSm ITI-65 (Provide Document Bundle) transaction Bundle for one CDA document.

Entries, in this order, each a ``POST`` whose ``fullUrl`` is an id injected in the
``SubmissionContext`` (this module never makes up a uuid or reads the clock):

1. ``List`` SubmissionSet (``pdsm-submissionset-comprehensive``), author contained;
2. ``DocumentReference`` (``pdsm-comprehensive-document-reference``), actors contained;
3. ``Binary`` with the CDA bytes exactly as received;
4. ``Patient`` (the FR Core resource built by ``patient.build_patient``), as a
   conditional create on its INS (else its first identifier) so a second document
   for the same patient does not create a duplicate.

Patient references follow PDSM4DMP (annexe identifiants XDS/FHIR, TD2.1 example): with
an INS, ``subject`` of the List and the DocumentReference is the conditional reference
``Patient?identifier=urn:oid:<INS OID>|<INS>`` (XDS patientId), whatever logical id the
recipient gave the patient; without one, the Patient entry's ``fullUrl``.
``context.sourcePatientInfo`` (XDS sourcePatientId/Info) is a *contained* Patient, as
MHD requires: the patient as the source knows it.

Choices worth knowing:

* **Document ids.** A root-only CDA id (what the DMP requires) becomes
  ``urn:ietf:rfc:3986`` | ``urn:oid:<root>`` (``urn:uuid:`` when the root is a UUID).
  ``root^extension`` cannot be a URI (``^`` is not allowed), so it follows the usual
  FHIR rendering of an HL7 v3 II: ``system = urn:oid:<root>``, ``value = <extension>``.
  ``relatesTo.target.identifier`` uses the same rule for the parent document.
* **Content types.** ``attachment.contentType`` is the XDS ``mimeType`` (``text/xml``
  for CDA, as the DMP expects); ``Binary.contentType`` is ``application/xml``, as in
  the PDSm/PDSM4DMP CDA examples (domain.md §6).
* **Dates.** CDA TS values keep their precision. A time without a UTC offset is local
  French time: the offset is computed for ``Europe/Paris`` at that date, because FHIR
  requires an offset whenever a time is present. XDS submission times are UTC.
* **Coded values** go through ``actors.fhir_system`` (TRE canonical URLs for the OIDs
  we know, ``urn:oid:`` otherwise).
* Replacement adds ``relatesTo`` only; the PDSM4DMP update of the replaced
  DocumentReference to ``superseded`` needs its logical id (a lookup), so the MHD
  adapter adds it at send time (``adapters.mhd.client``).
* ``DocumentReference.date`` is the XDS creationTime (CDA effectiveTime), not the
  submission time, which is ``List.date`` (PDSM4DMP annexe dates XDS/FHIR).
* ``masterIdentifier.use`` is ``usual`` (PDSm DocumentReference profile).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import tzinfo as tzinfo_t
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from gateway.core.fhir.actors import (
    build_device,
    build_organization,
    build_practitioner,
    build_practitioner_role,
    codeable,
    coding,
    oid_uri,
)
from gateway.errors import MappingError
from gateway.model import Author, CdaHeader, SubmissionContext, XdsMetadata

__all__ = [
    "SOURCE_PATIENT_ID",
    "BUNDLE_PROFILE",
    "SUBMISSIONSET_PROFILE",
    "DOCUMENTREFERENCE_PROFILE",
    "MHD_LIST_TYPES",
    "DESIGNATION_TYPE_URL",
    "SOURCE_ID_URL",
    "AUTHOR_ORG_URL",
    "BINARY_CONTENT_TYPE",
    "build_iti65_bundle",
    "fhir_datetime",
    "document_identifier",
]

log = structlog.get_logger(__name__)

_PDSM = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
BUNDLE_PROFILE = _PDSM + "pdsm-comprehensive-provide-document-bundle"
SUBMISSIONSET_PROFILE = _PDSM + "pdsm-submissionset-comprehensive"
DOCUMENTREFERENCE_PROFILE = _PDSM + "pdsm-comprehensive-document-reference"

MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
_MHD_EXT = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
DESIGNATION_TYPE_URL = _MHD_EXT + "ihe-designationType"
SOURCE_ID_URL = _MHD_EXT + "ihe-sourceId"
AUTHOR_ORG_URL = _MHD_EXT + "ihe-authorOrg"

RFC3986 = "urn:ietf:rfc:3986"
BINARY_CONTENT_TYPE = "application/xml"
DEFAULT_MIME_TYPE = "text/xml"
DEFAULT_LANGUAGE = "fr-FR"
LOCAL_TZ = "Europe/Paris"

_TS_RE = re.compile(
    r"^(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?"
    r"(?P<frac>\.\d{1,9})?(?P<tz>[+-]\d{4}|Z)?$"
)


#: id of the contained Patient that DocumentReference.context.sourcePatientInfo points at.
SOURCE_PATIENT_ID = "source-patient"


def fhir_datetime(ts: str, *, default_tz: str = LOCAL_TZ) -> str:
    """CDA/HL7 TS (``20210606093100+0200``) to FHIR dateTime (``2021-06-06T09:31:00+02:00``).

    Date-only precision (``YYYY``, ``YYYYMM``, ``YYYYMMDD``) is kept as is. With a time,
    missing minutes/seconds are zero-filled (FHIR has no hour precision) and a missing
    offset is the one of ``default_tz`` at that instant.
    """
    match = _TS_RE.match(ts.strip())
    if not match:
        raise MappingError("not an HL7 TS date/time", code="FHIR_DATETIME")
    g = match.groupdict()
    try:
        if g["h"] is None:
            if g["mo"] is None:
                return g["y"]
            date(int(g["y"]), int(g["mo"]), int(g["d"] or 1))  # range check only
            return "-".join(p for p in (g["y"], g["mo"], g["d"]) if p)
        tz = g["tz"]
        if tz is None:
            tzinfo: tzinfo_t = ZoneInfo(default_tz)
        elif tz == "Z":
            tzinfo = UTC
        else:
            sign = -1 if tz[0] == "-" else 1
            tzinfo = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5])))
        moment = datetime(
            int(g["y"]),
            int(g["mo"]),
            int(g["d"]),
            int(g["h"]),
            int(g["mi"] or 0),
            int(g["s"] or 0),
            tzinfo=tzinfo,
        )
    except (ValueError, TypeError) as exc:  # TypeError: a time without a day
        raise MappingError("HL7 TS out of range", code="FHIR_DATETIME") from exc
    minutes = int((moment.utcoffset() or timedelta()).total_seconds() // 60)
    offset = f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (g["frac"] or "") + offset


def _split_doc_id(value: str) -> tuple[str, str | None]:
    """``root``, ``root^ext`` or the TXA-12/13 EI form ``ext^^root^ISO`` -> (root, ext)."""
    parts = value.split("^")
    if len(parts) >= 3 and parts[2]:
        return parts[2], parts[0] or None
    if len(parts) == 2:
        return parts[0], parts[1] or None
    return parts[0], None


def document_identifier(doc_id: str) -> dict[str, str]:
    """FHIR Identifier for an XDS uniqueId / CDA id (see the module docstring)."""
    root, ext = _split_doc_id(doc_id)
    if ext:
        return {"system": oid_uri(root), "value": ext}
    return {"system": RFC3986, "value": oid_uri(root)}


def _urn_uuid(value: str | None, name: str) -> str:
    if not value:
        raise MappingError(f"SubmissionContext.{name} is not set", code="FHIR_CONTEXT_MISSING", location=name)
    return value if value.startswith("urn:uuid:") else f"urn:uuid:{value.lower()}"


def _actor_resources(author: Author, prefix: str) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """Contained resources for one author: (resources, reference to use, org reference).

    The reference is the PractitionerRole when there is a person, else the Organization.
    """
    resources: list[dict[str, Any]] = []
    person_ref = org_ref = None
    if author.person is not None and author.person.device:
        # A software author is a Device, not a Practitioner with no name (ActorSystem in XDS).
        resources.append(build_device(author.person, f"{prefix}-device"))
        if author.organization is not None:
            resources.append(build_organization(author.organization, f"{prefix}-org"))
            org_ref = f"#{prefix}-org"
        return resources, f"#{prefix}-device", org_ref
    if author.person is not None:
        resources.append(build_practitioner(author.person, f"{prefix}-practitioner"))
        person_ref = f"#{prefix}-practitioner"
    if author.organization is not None:
        resources.append(build_organization(author.organization, f"{prefix}-org"))
        org_ref = f"#{prefix}-org"
    if person_ref is None:
        return resources, org_ref, org_ref
    role = build_practitioner_role(
        person_ref,
        org_ref,
        f"{prefix}-role",
        author.person.profession if author.person else None,
        role=author.function,
    )
    # The role goes first: it is the resource the parent points at.
    return [role, *resources], f"#{prefix}-role", org_ref


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value not in (None, [], {}, ""):
        target[key] = value


def _first(*values: Any) -> Any:
    return next((v for v in values if v), None)


_INS_SYSTEMS = frozenset(f"urn:oid:1.2.250.1.213.1.4.{n}" for n in (8, 9, 10, 11))


def _subject(patient: Mapping[str, Any], patient_url: str) -> dict[str, str]:
    """PDSM4DMP's conditional reference on the INS, else the Patient entry's fullUrl."""
    ins = next((i for i in patient.get("identifier") or [] if i.get("system") in _INS_SYSTEMS and i.get("value")), None)
    if ins is None:
        return {"reference": patient_url}
    return {"reference": f"Patient?identifier={ins['system']}|{ins['value']}"}


def _source_patient(patient: Mapping[str, Any]) -> dict[str, Any]:
    """The contained sourcePatientInfo: the patient's identifiers and traits, no logical id."""
    keep = ("identifier", "name", "gender", "birthDate", "address", "extension")
    out: dict[str, Any] = {"resourceType": "Patient", "id": SOURCE_PATIENT_ID}
    out.update({k: patient[k] for k in keep if patient.get(k)})
    return out


def _patient_condition(patient: Mapping[str, Any]) -> str | None:
    identifiers = patient.get("identifier") or []
    chosen = next((i for i in identifiers if i.get("use") in ("official", "temp")), None)
    chosen = chosen or next(iter(identifiers), None)
    if not chosen or not chosen.get("system") or not chosen.get("value"):
        return None
    return f"identifier={chosen['system']}|{chosen['value']}"


def _submission_set(
    ctx: SubmissionContext,
    xds: XdsMetadata,
    header: CdaHeader,
    *,
    patient_url: str,
    entry_url: str,
    ss_url: str,
    subject: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    ss = xds.get("submissionSet", {})
    unique_id = _first(ctx.submission_set_unique_id, ss.get("uniqueId"))
    if not unique_id:
        raise MappingError(
            "no submission set uniqueId", code="FHIR_CONTEXT_MISSING", location="submission_set_unique_id"
        )
    if not ctx.submission_time:
        raise MappingError("no submission time", code="FHIR_CONTEXT_MISSING", location="submission_time")
    resource: dict[str, Any] = {
        "resourceType": "List",
        "meta": {"profile": [SUBMISSIONSET_PROFILE]},
    }
    # The sender (PRT SB) is the submission-set author; without one, the first document
    # author stands in so the mandatory author is never silently dropped.
    author = ctx.sender or next(iter(header.authors), None)
    source: dict[str, Any] = {}
    if author is not None:
        contained, ref, org_ref = _actor_resources(author, "ss-author")
        _put(resource, "contained", contained)
        if ref is not None and ref != org_ref:
            source["reference"] = ref
        elif org_ref is not None:
            # An organisation alone is not a valid List.source target: MHD's authorOrg.
            source["extension"] = [{"url": AUTHOR_ORG_URL, "valueReference": {"reference": org_ref}}]
    extensions: list[dict[str, Any]] = []
    designation = codeable(ss.get("contentTypeCode"))
    if designation:
        extensions.append({"url": DESIGNATION_TYPE_URL, "valueCodeableConcept": designation})
    source_id = _first(ss.get("sourceId"), ctx.source_id)
    extensions.append(
        {"url": SOURCE_ID_URL, "valueIdentifier": {"system": RFC3986, "value": oid_uri(source_id)}}
    )
    resource["extension"] = extensions
    resource["identifier"] = [
        {"use": "usual", "system": RFC3986, "value": oid_uri(unique_id)},
        {"use": "official", "system": RFC3986, "value": ss_url},
    ]
    resource["status"] = "current"
    resource["mode"] = "working"
    _put(resource, "title", ss.get("title"))
    resource["code"] = {"coding": [{"system": MHD_LIST_TYPES, "code": "submissionset"}]}
    resource["subject"] = dict(subject) if subject else {"reference": patient_url}
    resource["date"] = fhir_datetime(ctx.submission_time, default_tz="UTC")
    _put(resource, "source", source)
    resource["entry"] = [{"item": {"reference": entry_url}}]
    return resource


def _document_reference(
    header: CdaHeader,
    cda_bytes: bytes,
    ctx: SubmissionContext,
    xds: XdsMetadata,
    *,
    patient_url: str,
    entry_url: str,
    binary_url: str,
    patient: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    de = xds.get("documentEntry", {})
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "meta": {"profile": [DOCUMENTREFERENCE_PROFILE]},
    }
    contained, author_refs, authenticator_ref = _contained(header, patient)
    _put(resource, "contained", contained)

    resource["masterIdentifier"] = {"use": "usual", **document_identifier(_first(de.get("uniqueId"), header.document_id))}
    resource["identifier"] = [{"use": "official", "system": RFC3986, "value": entry_url}]
    resource["status"] = "current"
    _put(resource, "type", codeable(_first(de.get("typeCode"), ctx.type_code, header.code)))
    klass = codeable(de.get("classCode"))
    _put(resource, "category", [klass] if klass else None)
    resource["subject"] = _subject(patient, patient_url) if patient is not None else {"reference": patient_url}
    creation = fhir_datetime(header.effective_time) if header.effective_time else None
    _put(resource, "date", creation)
    _put(resource, "author", author_refs)
    if authenticator_ref:
        resource["authenticator"] = {"reference": authenticator_ref}
    if header.custodian is not None:
        resource["custodian"] = {"reference": "#custodian"}

    parent = _replaced_document(header, ctx, de)
    if parent:
        resource["relatesTo"] = [{"code": "replaces", "target": {"identifier": document_identifier(parent)}}]
    _put(resource, "securityLabel", _security_labels(header, de))
    resource["content"] = [_content(header, cda_bytes, de, binary_url=binary_url, creation=creation)]
    resource["context"] = _context(header, de, patient_url=patient_url, patient=patient)
    return resource


def _contained(
    header: CdaHeader, patient: Mapping[str, Any] | None
) -> tuple[list[dict[str, Any]], list[dict[str, str]], str | None]:
    """The DocumentReference's contained actors and source patient: (resources, author refs, authenticator ref)."""
    contained: list[dict[str, Any]] = []
    author_refs: list[dict[str, str]] = []
    for index, author in enumerate(header.authors, start=1):
        resources, ref, _ = _actor_resources(author, f"author-{index}")
        contained.extend(resources)
        if ref:
            author_refs.append({"reference": ref})
    authenticator_ref = None
    if header.legal_authenticator is not None:
        resources, authenticator_ref, _ = _actor_resources(header.legal_authenticator, "legal-auth")
        contained.extend(resources)
    if header.custodian is not None:
        contained.append(build_organization(header.custodian, "custodian"))
    if patient is not None:
        contained.append(_source_patient(patient))
    return contained, author_refs, authenticator_ref


def _security_labels(header: CdaHeader, de: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The XDS confidentialityCodes (CDA code and visibility codes), else the CDA code alone."""
    labels: list[Mapping[str, Any]] = list(de.get("confidentialityCode") or [])
    if not labels and header.confidentiality:
        labels = [header.confidentiality]
    return [c for c in (codeable(v) for v in labels) if c]


def _content(
    header: CdaHeader, cda_bytes: bytes, de: Mapping[str, Any], *, binary_url: str, creation: str | None
) -> dict[str, Any]:
    """``content``: the attachment pointing at the Binary entry, and the formatCode."""
    attachment: dict[str, Any] = {
        "contentType": _first(de.get("mimeType"), DEFAULT_MIME_TYPE),
        "language": _first(de.get("languageCode"), header.language, DEFAULT_LANGUAGE),
        "url": binary_url,
        "size": len(cda_bytes),
        # FHIR wants base64 of the SHA-1 digest; XDS carries the same digest in hex.
        "hash": base64.b64encode(hashlib.sha1(cda_bytes).digest()).decode("ascii"),
    }
    _put(attachment, "title", _first(header.title, de.get("title")))
    _put(attachment, "creation", creation)
    content: dict[str, Any] = {"attachment": attachment}
    if de.get("formatCode"):
        content["format"] = coding(de["formatCode"])
    return content


def _context(
    header: CdaHeader, de: Mapping[str, Any], *, patient_url: str, patient: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``context``: service event and period, care setting codes, sourcePatientInfo."""
    context: dict[str, Any] = {}
    event = codeable(header.service_event_code)
    _put(context, "event", [event] if event else None)
    _put(context, "period", _service_period(header, de))
    _put(
        context, "facilityType", codeable(_first(de.get("healthcareFacilityTypeCode"), header.facility_type))
    )
    _put(context, "practiceSetting", codeable(_first(de.get("practiceSettingCode"), header.practice_setting)))
    context["sourcePatientInfo"] = (
        {"reference": f"#{SOURCE_PATIENT_ID}"} if patient is not None else {"reference": patient_url}
    )
    return context


def _service_period(header: CdaHeader, de: Mapping[str, Any]) -> dict[str, str]:
    """The CDA service event times (local when they carry no offset), else the XDS ones (UTC)."""
    period: dict[str, str] = {}
    if header.service_start:
        period["start"] = fhir_datetime(header.service_start)
    elif de.get("serviceStartTime"):
        period["start"] = fhir_datetime(de["serviceStartTime"], default_tz="UTC")
    if header.service_stop:
        period["end"] = fhir_datetime(header.service_stop)
    elif de.get("serviceStopTime"):
        period["end"] = fhir_datetime(de["serviceStopTime"], default_tz="UTC")
    return period


def _replaced_document(header: CdaHeader, ctx: SubmissionContext, de: Mapping[str, Any]) -> str | None:
    if ctx.action != "replace" and header.related_type != "RPLC":
        return None
    parent = _first(ctx.parent_document_id, header.parent_document_id, de.get("replaces"))
    if not parent:
        raise MappingError(
            "replacement without the id of the replaced document",
            code="FHIR_REPLACE_NO_PARENT",
            location="TXA-13",
        )
    return parent


def build_iti65_bundle(
    header: CdaHeader,
    cda_bytes: bytes,
    ctx: SubmissionContext,
    xds: XdsMetadata,
    *,
    patient_resource: dict[str, Any],
) -> dict[str, Any]:
    """PDSm ITI-65 transaction Bundle publishing ``cda_bytes`` (see the module docstring).

    ``xds`` supplies the coded metadata already derived for XDS (classCode,
    formatCode, confidentiality, facility/practice codes, contentTypeCode).
    Raises ``MappingError`` when an injected id or time is missing, for a delete
    (not an ITI-65 publication), or for a replacement without a parent id.
    """
    if ctx.action == "delete":
        raise MappingError("a deletion is not published with ITI-65", code="FHIR_ACTION_UNSUPPORTED")
    entry_url = _urn_uuid(ctx.entry_uuid, "entry_uuid")
    ss_url = _urn_uuid(ctx.submission_set_uuid, "submission_set_uuid")
    binary_url = _urn_uuid(ctx.binary_uuid, "binary_uuid")
    patient_url = _urn_uuid(ctx.patient_uuid, "patient_uuid")

    submission_set = _submission_set(
        ctx, xds, header, patient_url=patient_url, entry_url=entry_url, ss_url=ss_url,
        subject=_subject(patient_resource, patient_url),
    )
    document = _document_reference(
        header, cda_bytes, ctx, xds, patient_url=patient_url, entry_url=entry_url, binary_url=binary_url,
        patient=patient_resource,
    )
    binary = {
        "resourceType": "Binary",
        "contentType": BINARY_CONTENT_TYPE,
        "data": base64.b64encode(cda_bytes).decode("ascii"),
    }
    patient_request: dict[str, str] = {"method": "POST", "url": "Patient"}
    condition = _patient_condition(patient_resource)
    if condition:
        patient_request["ifNoneExist"] = condition

    bundle = {
        "resourceType": "Bundle",
        "meta": {"profile": [BUNDLE_PROFILE]},
        "type": "transaction",
        "entry": [
            {"fullUrl": ss_url, "resource": submission_set, "request": {"method": "POST", "url": "List"}},
            {
                "fullUrl": entry_url,
                "resource": document,
                "request": {"method": "POST", "url": "DocumentReference"},
            },
            {"fullUrl": binary_url, "resource": binary, "request": {"method": "POST", "url": "Binary"}},
            {"fullUrl": patient_url, "resource": patient_resource, "request": patient_request},
        ],
    }
    log.debug("fhir.iti65.built", entry_uuid=entry_url, action=ctx.action, size=len(cda_bytes))
    return bundle
