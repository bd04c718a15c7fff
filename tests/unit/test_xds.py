"""gateway.core.xds: DMP XDS.b metadata from a CDA header and its envelope."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from gateway.core import cda, xds
from gateway.model import (
    Author,
    CdaHeader,
    Identifier,
    Organization,
    PatientIdentity,
    Person,
    SubmissionContext,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "cda"

CTX = SubmissionContext(
    source_id="1.2.250.1.999999.1",
    submission_time="20240316100000",
    submission_set_unique_id="1.2.250.1.999999.1.40.77",
    entry_uuid="urn:uuid:00000000-0000-4000-8000-000000000001",
    submission_set_uuid="urn:uuid:00000000-0000-4000-8000-000000000002",
    patient_class="O",
)


def load(name: str) -> tuple[CdaHeader, bytes]:
    data = (FIXTURES / name).read_bytes()
    return cda.parse_header(cda.parse_cda(data)), data


def codes(findings: list) -> set[str]:  # type: ignore[type-arg]
    return {f.code for f in findings}


ALICE_XCN = "810001234567^RADIOLOGUE^ALICE^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
HOSPITAL_XON = "HOPITAL FICTIF RELAIS^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^3750999999"
INS_NH = "290077511204566^^^&1.2.250.1.213.1.4.10&ISO^NH"
ALICE = {
    "authorPerson": ALICE_XCN,
    "authorInstitution": [HOSPITAL_XON],
    "authorSpecialty": ["SM44^Radiodiagnostic et imagerie médicale (SM)^1.2.250.1.71.4.2.5"],
}


def test_golden_level1_imagerie() -> None:
    header, data = load("cr_imagerie_n1.xml")
    metadata, findings = xds.build_xds(header, data, CTX)
    assert findings == []
    assert metadata == {
        "documentEntry": {
            "entryUUID": "urn:uuid:00000000-0000-4000-8000-000000000001",
            "uniqueId": "1.2.250.1.999999.1.20.1001",
            "typeCode": {
                "code": "18748-4",
                "codeSystem": "2.16.840.1.113883.6.1",
                "displayName": "CR d'imagerie médicale",
            },
            "classCode": {
                "code": "31",
                "codeSystem": "1.2.250.1.213.1.1.4.1",
                "displayName": "Imagerie médicale",
            },
            "formatCode": {
                "code": "urn:ihe:iti:xds-sd:pdf:2008",
                "codeSystem": "1.3.6.1.4.1.19376.1.2.3",
                "displayName": "Document à corps non structuré en Pdf/A-1",
            },
            "confidentialityCode": [
                {"code": "N", "codeSystem": "2.16.840.1.113883.5.25", "displayName": "Normal"}
            ],
            "healthcareFacilityTypeCode": {
                "code": "SA01",
                "codeSystem": "1.2.250.1.71.4.2.4",
                "displayName": "Etablissement public de santé",
            },
            "practiceSettingCode": {
                "code": "ETABLISSEMENT",
                "codeSystem": "1.2.250.1.213.1.1.4.9",
                "displayName": "Etablissement de santé",
            },
            "authors": [ALICE],
            "legalAuthenticator": ALICE_XCN,
            "patientId": INS_NH,
            "sourcePatientId": INS_NH,
            "sourcePatientInfo": [
                f"PID-3|{INS_NH}",
                "PID-5|TESTRELAIS^CAMILLE^^^^^L",
                "PID-7|19900712",
                "PID-8|F",
            ],
            "creationTime": "20240315133000",
            "serviceStartTime": "20240315090000",
            "serviceStopTime": "20240315093000",
            "languageCode": "fr-FR",
            "title": "Radiographie du thorax",
            "mimeType": "text/xml",
            "hash": hashlib.sha1(data).hexdigest(),
            "size": len(data),
            "action": "submit",
        },
        "submissionSet": {
            "entryUUID": "urn:uuid:00000000-0000-4000-8000-000000000002",
            "uniqueId": "1.2.250.1.999999.1.40.77",
            "sourceId": "1.2.250.1.999999.1",
            "patientId": INS_NH,
            "submissionTime": "20240316100000",
            "contentTypeCode": {
                "code": "07",
                "codeSystem": "1.2.250.1.213.2.2",
                "displayName": "Consultations soins externes",
            },
            "authors": [ALICE],
        },
        "request": {"secretConnection": False},
    }


def test_golden_level3_bio() -> None:
    header, data = load("cr_bio_n3.xml")
    metadata, findings = xds.build_xds(header, data, dataclasses.replace(CTX, patient_class="I"))
    assert findings == []
    entry = metadata["documentEntry"]
    assert entry["uniqueId"] == "1.2.250.1.999999.1.30.2001"
    assert entry["classCode"]["code"] == "10"
    assert entry["formatCode"] == {
        "code": "urn:ihe:lab:xd-lab:2008",
        "codeSystem": "1.3.6.1.4.1.19376.1.2.3",
        "displayName": "Compte rendu structuré d'examens de biologie médicale",
    }
    assert entry["confidentialityCode"] == [
        {"code": "R", "codeSystem": "2.16.840.1.113883.5.25", "displayName": "Restreint"}
    ]
    assert entry["authors"] == [
        {
            "authorPerson": "810009876543^BIOLOGISTE^BRUNO^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS",
            "authorInstitution": ["LABORATOIRE FICTIF RELAIS^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^3750888888"],
            "authorRole": ["ATTPHYS^Médecin traitant^2.16.840.1.113883.5.88"],
            "authorSpecialty": ["SM26^Qualifié en Médecine Générale (SM)^1.2.250.1.71.4.2.5"],
        }
    ]
    assert entry["patientId"] == INS_NH
    assert entry["sourcePatientId"] == "000123456^^^&1.2.250.1.999999.1.10&ISO^PI"
    assert entry["sourcePatientInfo"] == [
        "PID-3|000123456^^^&1.2.250.1.999999.1.10&ISO^PI",
        f"PID-3|{INS_NH}",
        "PID-5|TESTRELAIS^CAMILLE^^^^^L",
        "PID-5|MARTIN-TESTRELAIS^CAM^^^^^D",
        "PID-7|19900712",
        "PID-8|F",
    ]
    # +0200 converted to UTC; a date stays a date; minute precision kept
    assert entry["creationTime"] == "20240610071500"
    assert entry["serviceStartTime"] == "20240610"
    assert entry["serviceStopTime"] == "202406100630"
    assert entry["healthcareFacilityTypeCode"]["code"] == "SA25"
    assert entry["practiceSettingCode"]["code"] == "AMBULATOIRE"
    assert metadata["submissionSet"]["contentTypeCode"]["code"] == "03"


def test_replacement() -> None:
    header, data = load("cr_imagerie_n1_rplc.xml")
    metadata, findings = xds.build_xds(header, data, dataclasses.replace(CTX, action="replace"))
    assert findings == []
    entry = metadata["documentEntry"]
    assert entry["action"] == "replace"
    assert entry["replaces"] == "1.2.250.1.999999.1.20.1001"
    assert entry["uniqueId"] == "1.2.250.1.999999.1.20.1002"
    # TXA-13 from the envelope wins over relatedDocument
    metadata, _ = xds.build_xds(
        header, data, dataclasses.replace(CTX, action="replace", parent_document_id="1.2.3.4")
    )
    assert metadata["documentEntry"]["replaces"] == "1.2.3.4"


def test_replace_without_parent_is_an_error() -> None:
    header, data = load("cr_imagerie_n1.xml")
    metadata, findings = xds.build_xds(header, data, dataclasses.replace(CTX, action="replace"))
    assert "replaces" not in metadata["documentEntry"]
    assert [(f.code, f.severity) for f in findings] == [("XDS_REPLACE_PARENT_MISSING", "error")]


def test_submit_does_not_set_replaces() -> None:
    header, data = load("cr_imagerie_n1_rplc.xml")
    metadata, _ = xds.build_xds(header, data, CTX)
    assert "replaces" not in metadata["documentEntry"]


def test_visibility_flags() -> None:
    header, data = load("cr_imagerie_n1.xml")
    ctx = dataclasses.replace(
        CTX,
        flags={"MASQUE_PS": True, "INVISIBLE_PATIENT": False, "INVISIBLE_REP_LEGAUX": True, "DESTDMP": True},
    )
    metadata, _ = xds.build_xds(header, data, ctx)
    assert metadata["documentEntry"]["confidentialityCode"] == [
        {"code": "N", "codeSystem": "2.16.840.1.113883.5.25", "displayName": "Normal"},
        {
            "code": "MASQUE_PS",
            "codeSystem": "1.2.250.1.213.1.1.4.13",
            "displayName": "Masqué aux professionnels de santé",
        },
        {
            "code": "INVISIBLE_REPRESENTANTS_LEGAUX",
            "codeSystem": "1.2.250.1.213.1.1.4.13",
            "displayName": "Non visible par les représentants légaux du patient",
        },
    ]


def test_type_mismatch_and_not_dmp() -> None:
    header, data = load("cr_imagerie_n1.xml")
    ctx = dataclasses.replace(CTX, type_code={"code": "11502-2", "codeSystem": "LN", "displayName": "x"})
    _, findings = xds.build_xds(header, data, ctx)
    assert [(f.code, f.severity) for f in findings] == [("XDS_TYPE_MISMATCH", "warning")]

    odd = dataclasses.replace(
        header, code={"code": "00000-0", "codeSystem": "2.16.840.1.113883.6.1", "displayName": "?"}
    )
    metadata, findings = xds.build_xds(odd, data, CTX)
    assert {(f.code, f.severity) for f in findings} == {
        ("XDS_TYPECODE_NOT_DMP", "error"),
        ("XDS_CLASS_UNKNOWN", "warning"),
    }
    assert metadata["documentEntry"]["typeCode"]["displayName"] == "?"
    assert "classCode" not in metadata["documentEntry"]


def test_document_id_extension_warning() -> None:
    header, data = load("cr_imagerie_n1.xml")
    metadata, findings = xds.build_xds(dataclasses.replace(header, id_extension="DOC-1"), data, CTX)
    assert metadata["documentEntry"]["uniqueId"] == "1.2.250.1.999999.1.20.1001^DOC-1"
    assert codes(findings) == {"XDS_DOCUMENT_ID_EXTENSION"}


def test_format_unknown_and_missing_codes() -> None:
    header, data = load("cr_bio_n3.xml")
    bare = dataclasses.replace(
        header, template_ids=("1.2.3",), facility_type=None, practice_setting=None, confidentiality=None
    )
    metadata, findings = xds.build_xds(bare, data, CTX)
    assert codes(findings) == {
        "XDS_FORMAT_UNKNOWN",
        "XDS_FACILITY_TYPE_MISSING",
        "XDS_PRACTICE_SETTING_MISSING",
        "XDS_CONFIDENTIALITY_MISSING",
    }
    assert all(f.severity == "warning" for f in findings)
    entry = metadata["documentEntry"]
    assert "formatCode" not in entry and "healthcareFacilityTypeCode" not in entry
    assert entry["confidentialityCode"][0]["code"] == "N"


def test_format_not_in_dmp_value_set() -> None:
    header, data = load("cr_bio_n3.xml")
    cva = dataclasses.replace(header, template_ids=("1.2.250.1.213.1.1.1.10",))
    metadata, findings = xds.build_xds(cva, data, CTX)
    assert metadata["documentEntry"]["formatCode"]["code"] == "urn:asip:ci-sis:cva:2017"
    assert codes(findings) == {"XDS_FORMAT_NOT_DMP"}


def test_envelope_patient_and_sender_win() -> None:
    header, data = load("cr_imagerie_n1.xml")
    envelope = PatientIdentity(
        identifiers=(
            Identifier("IPP42", oid="1.2.250.1.999999.1.10", type_code="PI"),
            Identifier("290077511204566", oid="1.2.250.1.213.1.4.8", type_code="INS"),
        ),
        birth_family="TESTRELAIS",
        first_given="CAMILLE",
        gender="F",
        birth_date="19900712",
    )
    sender = Author(
        person=Person(id="810005555555", id_root="1.2.250.1.71.4.2.1", family="ENVOYEUR", given="EVE"),
        organization=Organization(
            id="375099999", id_root="1.2.250.1.71.4.2.2", name="HOPITAL FICTIF RELAIS", id_type="FINEG"
        ),
    )
    metadata, findings = xds.build_xds(
        header, data, dataclasses.replace(CTX, patient=envelope, sender=sender)
    )
    assert findings == []
    entry = metadata["documentEntry"]
    assert entry["patientId"] == "290077511204566^^^&1.2.250.1.213.1.4.8&ISO^NH"
    assert entry["sourcePatientId"] == "IPP42^^^&1.2.250.1.999999.1.10&ISO^PI"
    assert entry["sourcePatientInfo"][0] == "PID-3|IPP42^^^&1.2.250.1.999999.1.10&ISO^PI"
    assert metadata["submissionSet"]["authors"] == [
        {
            "authorPerson": "810005555555^ENVOYEUR^EVE^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS",
            # PRT-8.7 FINEG + FINESS in PRT-8.10 becomes the IdNat "1" + FINESS, typed IDNST
            "authorInstitution": ["HOPITAL FICTIF RELAIS^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1375099999"],
        }
    ]


def test_no_ins_is_an_error() -> None:
    header, data = load("cr_imagerie_n1.xml")
    no_ins = dataclasses.replace(header, patient=PatientIdentity(birth_family="X"))
    metadata, findings = xds.build_xds(no_ins, data, CTX)
    assert [(f.code, f.severity) for f in findings] == [("XDS_PATIENT_ID_MISSING", "error")]
    assert "patientId" not in metadata["documentEntry"]
    assert "patientId" not in metadata["submissionSet"]


def test_injected_ids_only() -> None:
    header, data = load("cr_imagerie_n1.xml")
    metadata, _ = xds.build_xds(header, data, SubmissionContext())
    assert "entryUUID" not in metadata["documentEntry"]
    submission = metadata["submissionSet"]
    assert set(submission) == {"sourceId", "patientId", "contentTypeCode", "authors"}
    assert submission["contentTypeCode"]["code"] == "97"  # no PV1-2


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("20210104160527+0100", "20210104150527"),
        ("20210104160527.827+0100", "20210104150527"),
        ("20210101003000+0200", "20201231223000"),
        ("202101041605-0500", "202101042105"),
        ("2021010416+0100", "2021010415"),
        ("20210104+0100", "20210104"),
        ("20210104", "20210104"),
        ("2021", "2021"),
        # no offset: French local time (CET in winter, CEST in summer)
        ("20210104160527", "20210104150527"),
        ("20210704160527", "20210704140527"),
        ("202101041605", "202101041505"),
        ("20210104160527+0000", "20210104160527"),
        ("garbage", None),
        ("20211304160527+0100", None),
        (None, None),
    ],
)
def test_to_xds_time(ts: str | None, expected: str | None) -> None:
    assert xds.to_xds_time(ts) == expected


def test_invalid_time_is_a_warning() -> None:
    header, data = load("cr_imagerie_n1.xml")
    metadata, findings = xds.build_xds(dataclasses.replace(header, effective_time="yesterday"), data, CTX)
    assert codes(findings) == {"XDS_TIME_INVALID"}
    assert "creationTime" not in metadata["documentEntry"]


def test_xcn_xon_escaping_and_id_types() -> None:
    person = Person(id="12345", id_root="1.2.250.1.999", family="O^BRIEN&CO", given="JO")
    assert xds.xcn(person) == "12345^O\\S\\BRIEN\\T\\CO^JO^^^^^^&1.2.250.1.999&ISO^D^^^EI"
    assert xds.xcn(Person(id="899700000001", family="A")) == "899700000001^A^^^^^^^^D^^^IDNPS"
    assert xds.xcn(Person(family="SANS-ID", given="X")) == "^SANS-ID^X"
    assert xds.xcn(None) is None
    structure = "1.2.250.1.71.4.2.2"
    assert xds.xon(Organization(name="LABO", id="123", id_root=structure)) == f"LABO^^^^^&{structure}&ISO^IDNST^^^123"
    # FINESS (FINEG / FINEJ) gets the 1 prefix, SIRET the 3 prefix, an IDNST stays as it is
    finess = Organization(name="CH", id="300017985", id_type="FINEG")
    assert xds.xon(finess) == f"CH^^^^^&{structure}&ISO^IDNST^^^1300017985"
    assert xds.struct_idnat(Organization(id="300017985", id_type="FINEJ")) == "1300017985"
    assert xds.struct_idnat(Organization(id="1300017985", id_type="FINEG")) == "1300017985"
    assert xds.struct_idnat(Organization(id="12345678901234", id_type="SIRET")) == "312345678901234"
    assert xds.struct_idnat(Organization(id="1120456789", id_type="IDNST")) == "1120456789"
    assert xds.struct_idnat(Organization(id="42", id_type="XX")) is None
    # an id that cannot become an IdNat is not written as one
    assert xds.xon(Organization(name="LABO", id="123")) == "LABO"
    assert xds.xon(Organization(name="NOM SEUL")) == "NOM SEUL"
    assert xds.xon(Organization()) is None


def test_request_carries_the_vihf_inputs_of_the_message() -> None:
    header, data = load("cr_imagerie_n1.xml")
    sender = Author(
        person=Person(id="801234564895", family="Eric", given="Thomas", service="RADIOLOGIE"),
        organization=Organization(id="300017985", name="Organisation-Y", id_type="FINEG"),
    )
    ctx = dataclasses.replace(
        CTX, sender=sender, flags={"CONNEXION_SECRETE": True}, sending_application="RIS-Y"
    )
    metadata, findings = xds.build_xds(header, data, ctx)
    assert findings == []
    assert metadata["request"] == {
        "secretConnection": True,
        "sendingApplication": "RIS-Y",
        "sender": {
            "id": "801234564895",
            "family": "Eric",
            "given": "Thomas",
            "service": "RADIOLOGIE",
            "structureIdNat": "1300017985",
        },
    }


def test_sender_organisation_without_an_idnat_is_an_error() -> None:
    header, data = load("cr_imagerie_n1.xml")
    sender = Author(person=Person(id="801234564895"), organization=Organization(id="42", id_type="UF"))
    _, findings = xds.build_xds(header, data, dataclasses.replace(CTX, sender=sender))
    assert [(f.code, f.severity, f.location) for f in findings] == [("XDS_STRUCT_IDNAT", "error", "PRT-8.7")]


def test_document_id_with_extension_is_an_error() -> None:
    header, data = load("cr_imagerie_n1.xml")
    _, findings = xds.build_xds(dataclasses.replace(header, id_extension="DOC-1"), data, CTX)
    (finding,) = findings
    assert (finding.code, finding.severity, finding.location) == (
        "XDS_DOCUMENT_ID_EXTENSION",
        "error",
        "/ClinicalDocument/id",
    )


def test_device_author_is_an_actor_system() -> None:
    device = Person(id="3750100125/88", software="AUTOMATE-BIO", model="XN-1000", device=True)
    assert xds.xcn(device) == "3750100125/88^AUTOMATE-BIO^XN-1000^^^^^^&1.2.250.1.71.4.2.1&ISO^U^^^RI"
    assert xds.xcn(Person(device=True, software="NO-ID")) is None


def test_offset_less_time_is_the_same_instant_in_xds_and_fhir() -> None:
    """A CDA time without offset is Paris time in both mappings (issue #9), summer and winter."""
    from datetime import UTC, datetime

    from gateway.core.fhir.pdsm import fhir_datetime

    for local, utc in (("20240315143000", "20240315133000"), ("20240715143000", "20240715123000")):
        assert xds.to_xds_time(local) == utc
        instant = datetime.fromisoformat(fhir_datetime(local)).astimezone(UTC)
        assert instant.strftime("%Y%m%d%H%M%S") == utc
    header, data = load("cr_imagerie_n1.xml")
    metadata, _ = xds.build_xds(dataclasses.replace(header, effective_time="20240315143000"), data, CTX)
    assert metadata["documentEntry"]["creationTime"] == "20240315133000"
