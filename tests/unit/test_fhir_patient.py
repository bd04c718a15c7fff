"""FR Core Patient mapping (gateway.core.fhir.patient). Fictitious patient, test INS OID .10."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.patient import Patient

from gateway.core.fhir.actors import build_organization, build_practitioner, build_practitioner_role
from gateway.core.fhir.patient import (
    BIRTH_LIST_GIVEN_NAME_URL,
    BIRTH_PLACE_URL,
    INSEE_CODE_SYSTEM,
    INSEE_CODE_URL,
    PATIENT_INS_PROFILE,
    PATIENT_PROFILE,
    build_patient,
    fhir_date,
    fhir_gender,
)
from gateway.errors import MappingError
from gateway.model import Identifier, Organization, PatientIdentity, Person
from tests.builders import identity

FR_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
RELIABILITY = {
    "url": "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability",
    "extension": [
        {
            "url": "identityStatus",
            "valueCoding": {
                "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445",
                "code": "VALI",
            },
        }
    ],
}

INS = Identifier("279035121518989", oid="1.2.250.1.213.1.4.10", type_code="INS")
IPP = Identifier("000123", oid="1.2.250.1.999999.2.1", namespace="HOPITAL-FICTIF", type_code="PI")
IDENTITY = identity(identifiers=(IPP, INS), used_family="DE LA FONTAINE", used_given="MALOU")


def _ident(resource: dict, system: str) -> dict:
    return next(i for i in resource["identifier"] if i.get("system") == system)


def test_ins_patient_identifiers_and_profile() -> None:
    patient = build_patient(IDENTITY, reliability=RELIABILITY, id="p1")
    assert patient["resourceType"] == "Patient"
    assert patient["id"] == "p1"
    assert patient["meta"]["profile"] == [PATIENT_INS_PROFILE]
    assert _ident(patient, "urn:oid:1.2.250.1.213.1.4.10") == {
        "use": "official",
        "type": {"coding": [{"system": FR_0203, "code": "INS-NIR-TEST"}]},
        "system": "urn:oid:1.2.250.1.213.1.4.10",
        "value": "279035121518989",
    }
    assert _ident(patient, "urn:oid:1.2.250.1.999999.2.1") == {
        "use": "usual",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PI"}]},
        "system": "urn:oid:1.2.250.1.999999.2.1",
        "value": "000123",
    }


def test_urn_uuid_id_becomes_a_fhir_id() -> None:
    patient = build_patient(IDENTITY, reliability=None, id="urn:uuid:44444444-4444-4444-8444-444444444444")
    assert patient["id"] == "44444444-4444-4444-8444-444444444444"


def test_names_traits_written_as_received() -> None:
    patient = build_patient(IDENTITY, reliability=None, id="p1")
    official, usual = patient["name"]
    assert official == {
        "use": "official",
        "extension": [{"url": BIRTH_LIST_GIVEN_NAME_URL, "valueString": "MARIE-LOUISE ANNE"}],
        "family": "ESSAI-FICTIF",
        "given": ["MARIE-LOUISE"],
    }
    assert usual == {"use": "usual", "family": "DE LA FONTAINE", "given": ["MALOU"]}
    assert patient["gender"] == "female"
    assert patient["birthDate"] == "1979-03-15"


def test_first_given_derived_from_list_when_missing() -> None:
    identity = PatientIdentity(birth_family="ESSAI", birth_given_list="JEAN PAUL")
    (official,) = build_patient(identity, reliability=None, id="p")["name"]
    assert official["given"] == ["JEAN"]
    assert official["extension"][0]["valueString"] == "JEAN PAUL"


def test_birthplace_and_reliability_extensions() -> None:
    patient = build_patient(IDENTITY, reliability=RELIABILITY, id="p1")
    birthplace, reliability = patient["extension"]
    assert birthplace == {
        "url": BIRTH_PLACE_URL,
        "valueAddress": {
            "extension": [
                {"url": INSEE_CODE_URL, "valueCoding": {"system": INSEE_CODE_SYSTEM, "code": "51215"}}
            ]
        },
    }
    assert reliability is RELIABILITY


def test_patient_validates_with_r4b() -> None:
    Patient.model_validate(build_patient(IDENTITY, reliability=RELIABILITY, id="p1"))


def test_without_ins_uses_base_profile_and_namespace_fallback() -> None:
    ipp = Identifier("42", namespace="HOPITAL-FICTIF", type_code="PI")
    patient = build_patient(
        PatientIdentity(identifiers=(ipp,), birth_family="ESSAI"), reliability=None, id="p"
    )
    assert patient["meta"]["profile"] == [PATIENT_PROFILE]
    assert patient["identifier"][0]["system"] == "HOPITAL-FICTIF"
    assert "extension" not in patient
    assert "birthDate" not in patient and "gender" not in patient


@pytest.mark.parametrize(
    ("oid", "code", "use"),
    [
        ("1.2.250.1.213.1.4.8", "INS-NIR", "official"),
        ("1.2.250.1.213.1.4.9", "INS-NIA", "temp"),
        ("1.2.250.1.213.1.4.10", "INS-NIR-TEST", "official"),
        ("1.2.250.1.213.1.4.11", "INS-NIR-DEMO", "official"),
    ],
)
def test_ins_type_per_oid(oid: str, code: str, use: str) -> None:
    identity = PatientIdentity(identifiers=(Identifier("279035121518989", oid=oid, type_code="INS"),))
    (ident,) = build_patient(identity, reliability=None, id="p")["identifier"]
    assert (ident["type"]["coding"][0]["code"], ident["use"], ident["system"]) == (
        code,
        use,
        f"urn:oid:{oid}",
    )


def test_billing_nir_is_not_an_ins() -> None:
    nss = Identifier("279035121518989", oid="1.2.250.1.213.1.4.8", type_code="NH")
    patient = build_patient(PatientIdentity(identifiers=(nss,)), reliability=None, id="p")
    assert patient["meta"]["profile"] == [PATIENT_PROFILE]
    assert patient["identifier"][0]["type"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
        "code": "NH",
    }


@pytest.mark.parametrize(
    ("code", "expected"), [("M", "male"), ("F", "female"), ("U", "unknown"), ("O", "other"), ("X", "unknown")]
)
def test_gender(code: str, expected: str) -> None:
    assert fhir_gender(code) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("19790315", "1979-03-15"), ("197903", "1979-03"), ("1979", "1979"), ("197903151230", "1979-03-15")],
)
def test_partial_birth_dates(value: str, expected: str) -> None:
    assert fhir_date(value) == expected


@pytest.mark.parametrize("value", ["19791", "1979131", "19791301", "abcd", "1979031"])
def test_bad_birth_date(value: str) -> None:
    with pytest.raises(MappingError) as err:
        build_patient(PatientIdentity(birth_date=value), reliability=None, id="p")
    assert err.value.code == "FHIR_DATE"
    assert err.value.location == "Patient.birthDate"


def test_practitioner_identifiers() -> None:
    person = Person(
        id="810101201234",
        id_root="1.2.250.1.71.4.2.1",
        family="MEDECIN",
        given="JEANNE",
        prefix="DR",
        profession={"code": "10", "codeSystem": "1.2.250.1.71.1.2.7", "displayName": "Médecin"},
    )
    practitioner = build_practitioner(person, "pr")
    assert practitioner["meta"]["profile"] == [
        "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-practitioner"
    ]
    idnps, rpps = practitioner["identifier"]
    assert idnps == {
        "use": "official",
        "type": {"coding": [{"system": FR_0203, "code": "IDNPS"}]},
        "system": "urn:oid:1.2.250.1.71.4.2.1",
        "value": "810101201234",
    }
    assert (rpps["system"], rpps["value"]) == ("https://rpps.esante.gouv.fr", "10101201234")
    assert practitioner["name"] == [{"family": "MEDECIN", "given": ["JEANNE"], "prefix": ["DR"]}]
    assert practitioner["qualification"][0]["code"]["coding"][0]["system"] == "urn:oid:1.2.250.1.71.1.2.7"
    adeli = build_practitioner(Person(id="0123456789"), "pr")
    assert [i["value"] for i in adeli["identifier"]] == ["0123456789"]


@pytest.mark.parametrize("id_type", ["IDNST", "FINEG", "FINEJ"])
def test_organization_identifier_type(id_type: str) -> None:
    org = build_organization(Organization(id="1999999999", name="HOPITAL FICTIF", id_type=id_type), "org")
    assert org["identifier"][0]["type"]["coding"][0] == {"system": FR_0203, "code": id_type}
    assert org["identifier"][0]["system"] == "urn:oid:1.2.250.1.71.4.2.2"
    assert org["name"] == "HOPITAL FICTIF"
    assert org["meta"]["profile"] == ["https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-organization"]


def test_practitioner_role() -> None:
    specialty = {
        "code": "SM26",
        "codeSystem": "1.2.250.1.71.4.2.5",
        "displayName": "Qualifié en médecine générale",
    }
    role = build_practitioner_role("#pr", "#org", "role", specialty)
    assert role["practitioner"] == {"reference": "#pr"}
    assert role["organization"] == {"reference": "#org"}
    assert role["specialty"][0]["coding"][0]["code"] == "SM26"
    assert role["meta"]["profile"] == [
        "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-practitioner-role"
    ]
