"""FR Core Patient from a ``PatientIdentity``.

The INS traits are written exactly as the sender gave them (PAM §6.6.2: never alter
INSi traits): no case change, no trimming of inner spaces, no accent stripping.
Whether an INS may be sent at all (qualified identity, no test OID in production)
is decided upstream by the identity gate; this module only maps what it is given.

Identifier slices (FR Core 2.x):

* INS: ``urn:oid:1.2.250.1.213.1.4.{8,9,10,11}``, type ``fr-core-cs-v2-0203``
  INS-NIR / INS-NIA / INS-NIR-TEST / INS-NIR-DEMO; ``official`` (``temp`` for a NIA).
* IPP: type ``v2-0203#PI``, ``usual``, system ``urn:oid:<authority OID>`` or the
  namespace when the sender gave no OID.
* billing NIR (CX.5 ``NH`` on the NIR OID): NSS slice, type ``v2-0203#NH``.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.core.fhir.actors import FR_CORE_V2_0203, oid_uri
from gateway.errors import MappingError
from gateway.model import INS_OIDS, Identifier, PatientIdentity

__all__ = [
    "PATIENT_PROFILE",
    "PATIENT_INS_PROFILE",
    "BIRTH_LIST_GIVEN_NAME_URL",
    "BIRTH_PLACE_URL",
    "INSEE_CODE_URL",
    "INSEE_CODE_SYSTEM",
    "build_patient",
    "fhir_gender",
    "fhir_date",
]

PATIENT_PROFILE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient"
PATIENT_INS_PROFILE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins"
BIRTH_LIST_GIVEN_NAME_URL = (
    "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-birth-list-given-name"
)
BIRTH_PLACE_URL = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
INSEE_CODE_URL = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code"
# TRE_R13 (communes and overseas collectivities), as in the FR Core 2.2.0 example (2.1.0
# spelled it TRE_R13-Commune). The extension's definition says a birth abroad keeps the
# same element with département 99 + INSEE country code, so one system covers both.
INSEE_CODE_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
NIR_OID = "1.2.250.1.213.1.4.8"

# OID -> (FR Core type code, Identifier.use)
_INS_TYPES: dict[str, tuple[str, str]] = {
    "1.2.250.1.213.1.4.8": ("INS-NIR", "official"),
    "1.2.250.1.213.1.4.9": ("INS-NIA", "temp"),
    "1.2.250.1.213.1.4.10": ("INS-NIR-TEST", "official"),
    "1.2.250.1.213.1.4.11": ("INS-NIR-DEMO", "official"),
}

_GENDERS = {"M": "male", "F": "female", "U": "unknown", "O": "other", "A": "other"}
_DATE_RE = re.compile(r"^(\d{4})(?:(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])?)?$")


def fhir_gender(code: str | None) -> str | None:
    """v2 PID-8 / CDA administrativeGenderCode to FHIR gender (None when absent)."""
    if not code:
        return None
    return _GENDERS.get(code.strip().upper(), "unknown")


def fhir_date(value: str) -> str:
    """``YYYY[MM[DD]]`` (anything after the day is dropped) to FHIR ``date``, precision kept."""
    match = _DATE_RE.match(value[:8])
    if not match:
        raise MappingError(f"not a YYYY[MM[DD]] date ({len(value)} characters)", code="FHIR_DATE")
    year, month, day = match.groups()
    return "-".join(part for part in (year, month, day) if part)


def _identifier(ident: Identifier) -> dict[str, Any]:
    if ident.oid in INS_OIDS and ident.type_code != "NH":
        type_code, use = _INS_TYPES[ident.oid]
        return {
            "use": use,
            "type": {"coding": [{"system": FR_CORE_V2_0203, "code": type_code}]},
            "system": oid_uri(ident.oid),
            "value": ident.value,
        }
    out: dict[str, Any] = {}
    if ident.type_code == "PI":
        out["use"] = "usual"
    if ident.type_code:
        out["type"] = {"coding": [{"system": V2_0203, "code": ident.type_code}]}
    system = oid_uri(ident.oid) if ident.oid else ident.namespace
    if system:
        out["system"] = system
    out["value"] = ident.value
    return out


def _names(identity: PatientIdentity) -> list[dict[str, Any]]:
    names: list[dict[str, Any]] = []
    # The first birth first name is by definition the first word of the list; we only
    # derive it when the sender did not give it separately (CDA given@qualifier=BR).
    first = identity.first_given
    if first is None and identity.birth_given_list:
        first = identity.birth_given_list.split(" ", 1)[0] or None
    if identity.birth_family or first or identity.birth_given_list:
        official: dict[str, Any] = {"use": "official"}
        if identity.birth_given_list:
            official["extension"] = [
                {"url": BIRTH_LIST_GIVEN_NAME_URL, "valueString": identity.birth_given_list}
            ]
        if identity.birth_family:
            official["family"] = identity.birth_family
        if first:
            official["given"] = [first]
        names.append(official)
    if identity.used_family or identity.used_given:
        usual: dict[str, Any] = {"use": "usual"}
        if identity.used_family:
            usual["family"] = identity.used_family
        if identity.used_given:
            usual["given"] = [identity.used_given]
        names.append(usual)
    return names


def build_patient(
    identity: PatientIdentity, *, reliability: dict[str, Any] | None, id: str
) -> dict[str, Any]:
    """FR Core Patient (``fr-core-patient-ins`` when an INS identifier is present).

    ``reliability`` is the ready-made ``fr-core-identity-reliability`` extension
    (``gateway.core.identity.status.reliability_extension``), appended as given.
    ``id`` may be given as a ``urn:uuid:`` (the bundle entry's fullUrl): a FHIR id
    cannot contain ``:``, so the bare uuid is used.
    Raises ``MappingError`` (``FHIR_DATE``) for a birth date that is not ``YYYY[MM[DD]]``.
    """
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": id.removeprefix("urn:uuid:"),
        "meta": {"profile": [PATIENT_INS_PROFILE if identity.ins else PATIENT_PROFILE]},
    }
    extensions: list[dict[str, Any]] = []
    if identity.birthplace_cog:
        extensions.append(
            {
                "url": BIRTH_PLACE_URL,
                "valueAddress": {
                    "extension": [
                        {
                            "url": INSEE_CODE_URL,
                            "valueCoding": {"system": INSEE_CODE_SYSTEM, "code": identity.birthplace_cog},
                        }
                    ]
                },
            }
        )
    if reliability:
        extensions.append(reliability)
    if extensions:
        resource["extension"] = extensions
    if identity.identifiers:
        resource["identifier"] = [_identifier(ident) for ident in identity.identifiers]
    names = _names(identity)
    if names:
        resource["name"] = names
    gender = fhir_gender(identity.gender)
    if gender:
        resource["gender"] = gender
    if identity.birth_date:
        try:
            resource["birthDate"] = fhir_date(identity.birth_date)
        except MappingError as exc:
            exc.location = "Patient.birthDate"
            raise
    return resource
