"""FR Core Practitioner, Organization and PractitionerRole, plus the coded-value helpers.

The actors of a document (authors, legal authenticator, custodian, the sender of
the submission set) become *contained* resources in PDSm, so these builders take
the local ``id`` to use and return plain R4 dicts.

Coded values arrive as ``CodedValue`` dicts whose ``codeSystem`` is an OID. FHIR
wants the code system's canonical URL when one exists (the JDV value sets that
PDSm binds to list the TRE canonical URLs, not ``urn:oid:``), so ``fhir_system``
maps the OIDs we know (each checked against the ANS terminology CodeSystem's
``identifier``) and falls back to ``urn:oid:<oid>`` for the others.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway.model import Organization, Person

__all__ = [
    "PRACTITIONER_PROFILE",
    "ORGANIZATION_PROFILE",
    "PRACTITIONER_ROLE_PROFILE",
    "FR_CORE_V2_0203",
    "IDNPS_OID",
    "STRUCTURE_OID",
    "fhir_system",
    "coding",
    "codeable",
    "oid_uri",
    "build_practitioner",
    "build_device",
    "build_organization",
    "build_practitioner_role",
]

PRACTITIONER_PROFILE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-practitioner"
ORGANIZATION_PROFILE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-organization"
PRACTITIONER_ROLE_PROFILE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-practitioner-role"

# FR Core 2.x identifier-type code system (IDNPS, RPPS, IDNST, FINEG, FINEJ, INS-NIR ...).
# The older http://interopsante.org/fhir/CodeSystem/fr-v2-0203 is what FR Core 1.x used;
# the published 2.1.0 / 2.2.0 examples all use this one.
FR_CORE_V2_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
RPPS_SYSTEM = "https://rpps.esante.gouv.fr"
IDNPS_OID = "1.2.250.1.71.4.2.1"
STRUCTURE_OID = "1.2.250.1.71.4.2.2"

_NOS = "https://mos.esante.gouv.fr/NOS/{0}/FHIR/{1}"

# OID -> canonical URL. Sources: the ANS "Terminologies de Santé" CodeSystems (their
# ``identifier`` carries the OID) and HL7 terminology for LOINC / SNOMED CT.
_KNOWN_SYSTEMS: dict[str, str] = {
    "2.16.840.1.113883.6.1": "http://loinc.org",
    "2.16.840.1.113883.6.96": "http://snomed.info/sct",
    # TRE_A08 is ANS's copy of HL7 v3 Confidentiality (same OID); JDV_J58 includes it by this URL.
    "2.16.840.1.113883.5.25": _NOS.format("TRE_A08-HL7Confidentiality", "TRE-A08-HL7Confidentiality"),
    "1.2.250.1.213.1.1.4.1": _NOS.format("TRE_A03-ClasseDocument", "TRE-A03-ClasseDocument"),
    "1.2.250.1.213.1.1.4.6": _NOS.format("TRE_A00-ProducteurDocNonPS", "TRE-A00-ProducteurDocNonPS"),
    "1.2.250.1.213.1.1.4.9": _NOS.format("TRE_A01-CadreExercice", "TRE-A01-CadreExercice"),
    "1.2.250.1.213.1.1.4.12": _NOS.format("TRE_A05-TypeDocComplementaire", "TRE-A05-TypeDocComplementaire"),
    "1.2.250.1.213.1.1.4.13": _NOS.format(
        "TRE_A07-StatutVisibiliteDocument", "TRE-A07-StatutVisibiliteDocument"
    ),
    "1.2.250.1.213.1.1.4.2.282": _NOS.format(
        "TRE_A06-FormatCodeComplementaire", "TRE-A06-FormatCodeComplementaire"
    ),
    "1.3.6.1.4.1.19376.1.2.3": _NOS.format("TRE_A11-IheFormatCode", "TRE-A11-IheFormatCode"),
    "1.2.250.1.71.4.2.4": _NOS.format("TRE_R02-SecteurActivite", "TRE-R02-SecteurActivite"),
    "1.2.250.1.213.2.2": _NOS.format("TRE_R209-TypeActivite", "TRE-R209-TypeActivite"),
}

_OID_RE = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def oid_uri(value: str) -> str:
    """An OID or UUID as a URI (``urn:oid:…`` / ``urn:uuid:…``); URIs pass through unchanged."""
    if _OID_RE.match(value):
        return f"urn:oid:{value}"
    if _UUID_RE.match(value):
        return f"urn:uuid:{value.lower()}"
    return value


def fhir_system(code_system: str) -> str:
    """The FHIR ``system`` for an XDS/CDA code system: known canonical URL, else ``urn:oid:``."""
    return _KNOWN_SYSTEMS.get(code_system) or oid_uri(code_system)


def coding(value: Mapping[str, Any]) -> dict[str, Any]:
    """A ``CodedValue`` dict (``code``/``codeSystem``/``displayName``) as a FHIR Coding."""
    out: dict[str, Any] = {}
    if value.get("codeSystem"):
        out["system"] = fhir_system(value["codeSystem"])
    out["code"] = value["code"]
    if value.get("displayName"):
        out["display"] = value["displayName"]
    return out


def codeable(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A ``CodedValue`` as a CodeableConcept, or None when there is no code."""
    if not value or not value.get("code"):
        return None
    return {"coding": [coding(value)]}


def _id_type(code: str) -> dict[str, Any]:
    return {"coding": [{"system": FR_CORE_V2_0203, "code": code}]}


def build_practitioner(person: Person, id: str) -> dict[str, Any]:
    """FR Core Practitioner for a health professional (or a device acting as one).

    A national id (root 1.2.250.1.71.4.2.1, or no root) is an IDNPS. An IDNPS made of
    ``8`` + the 11-digit RPPS number also gets the RPPS slice, as in the FR Core example;
    ``0`` + ADELI ids stay IDNPS only (no public ADELI system URL to point at).
    Another root is a local (employee) id, kept as ``urn:oid:<root>`` without type.
    """
    resource: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": id,
        "meta": {"profile": [PRACTITIONER_PROFILE]},
    }
    identifiers: list[dict[str, Any]] = []
    if person.id:
        if person.id_root in (None, IDNPS_OID):
            identifiers.append(
                {
                    "use": "official",
                    "type": _id_type("IDNPS"),
                    "system": oid_uri(IDNPS_OID),
                    "value": person.id,
                }
            )
            if len(person.id) == 12 and person.id.startswith("8") and person.id[1:].isdigit():
                identifiers.append(
                    {
                        "use": "official",
                        "type": _id_type("RPPS"),
                        "system": RPPS_SYSTEM,
                        "value": person.id[1:],
                    }
                )
        else:
            identifiers.append({"system": oid_uri(person.id_root), "value": person.id})
    if identifiers:
        resource["identifier"] = identifiers
    name: dict[str, Any] = {}
    if person.family:
        name["family"] = person.family
    if person.given:
        name["given"] = [person.given]
    if person.prefix:
        name["prefix"] = [person.prefix]
    if name:
        resource["name"] = [name]
    profession = codeable(person.profession)
    if profession:
        resource["qualification"] = [{"code": profession}]
    return resource


def build_device(person: Person, id: str) -> dict[str, Any]:
    """FHIR R4 Device for an author that is software (PDSm: SubmissionSet / DocumentReference
    author may be a Device; PDSM4DMP maps the XDS ActorSystem to it).

    ``identifier`` is the system id (local to its structure: no national system), ``deviceName``
    the software name (type ``user-friendly-name``) and the model (``model-name``).
    """
    resource: dict[str, Any] = {"resourceType": "Device", "id": id}
    if person.id:
        identifier: dict[str, Any] = {"value": person.id}
        if person.id_root and person.id_root != IDNPS_OID:
            identifier["system"] = oid_uri(person.id_root)
        resource["identifier"] = [identifier]
    names = [
        {"name": value, "type": kind}
        for value, kind in ((person.software, "user-friendly-name"), (person.model, "model-name"))
        if value
    ]
    if names:
        resource["deviceName"] = names
    return resource


def build_organization(org: Organization, id: str) -> dict[str, Any]:
    """FR Core Organization; national structure ids carry their IDNST / FINEG / FINEJ type."""
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "id": id,
        "meta": {"profile": [ORGANIZATION_PROFILE]},
    }
    if org.id:
        if org.id_root in (None, STRUCTURE_OID):
            resource["identifier"] = [
                {
                    "use": "official",
                    "type": _id_type((org.id_type or "IDNST").upper()),
                    "system": oid_uri(STRUCTURE_OID),
                    "value": org.id,
                }
            ]
        else:
            resource["identifier"] = [{"system": oid_uri(org.id_root), "value": org.id}]
    industry = codeable(org.industry)
    if industry:
        resource["type"] = [industry]
    if org.name:
        resource["name"] = org.name
    return resource


def build_practitioner_role(
    person_ref: str | None,
    org_ref: str | None,
    id: str,
    specialty: Mapping[str, Any] | None,
    *,
    role: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """FR Core PractitionerRole tying a Practitioner to an Organization.

    ``specialty`` is the author's ``assignedAuthor/code`` (XDS authorSpecialty);
    ``role`` the ``functionCode`` (XDS authorRole). References are given ready-made
    (``#id`` for contained resources, ``urn:uuid:`` for bundle entries).
    """
    resource: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "id": id,
        "meta": {"profile": [PRACTITIONER_ROLE_PROFILE]},
    }
    if person_ref:
        resource["practitioner"] = {"reference": person_ref}
    if org_ref:
        resource["organization"] = {"reference": org_ref}
    code = codeable(role)
    if code:
        resource["code"] = [code]
    spec = codeable(specialty)
    if spec:
        resource["specialty"] = [spec]
    return resource
