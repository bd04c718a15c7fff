"""PDSm ITI-65 Bundle mapping and validation (gateway.core.fhir.pdsm / .validate).

Everything is built by hand here (fictitious patient, test INS OID .10), so each
expected value is visible in this file.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.core.fhir.patient import build_patient
from gateway.core.fhir.pdsm import (
    BUNDLE_PROFILE,
    DESIGNATION_TYPE_URL,
    DOCUMENTREFERENCE_PROFILE,
    SOURCE_ID_URL,
    SUBMISSIONSET_PROFILE,
    build_iti65_bundle,
    document_identifier,
    fhir_datetime,
)
from gateway.core.fhir.validate import validate_bundle, validate_structure
from gateway.errors import MappingError
from gateway.model import (
    Author,
    CdaHeader,
    Organization,
    Person,
    SubmissionContext,
    XdsMetadata,
)
from tests.builders import identity

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "fhir" / "pdsm"

NOS = "https://mos.esante.gouv.fr/NOS/"
CDA = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<ClinicalDocument xmlns="urn:hl7-org:v3"><title>Compte rendu fictif — éè</title></ClinicalDocument>\n'
).encode()
DOC_ROOT = "1.2.250.1.999999.1.1.20240502.1"
PARENT_ROOT = "1.2.250.1.999999.1.1.20240401.7"

PATIENT = identity(status=())  # from a CDA: no PID-32
HOSPITAL = Organization(id="1999999999", id_root="1.2.250.1.71.4.2.2", name="HOPITAL FICTIF", id_type="IDNST")
DOCTOR = Person(
    id="899700218896",
    id_root="1.2.250.1.71.4.2.1",
    family="MEDECIN",
    given="JEANNE",
    prefix="DR",
    profession={"code": "10", "codeSystem": "1.2.250.1.71.1.2.7", "displayName": "Médecin"},
)
HEADER = CdaHeader(
    id_root=DOC_ROOT,
    id_extension=None,
    code={
        "code": "11488-4",
        "codeSystem": "2.16.840.1.113883.6.1",
        "displayName": "Compte rendu de consultation",
    },
    title="Compte rendu de consultation",
    effective_time="20240502093100+0200",
    confidentiality={"code": "N", "codeSystem": "2.16.840.1.113883.5.25", "displayName": "Normal"},
    language="fr-FR",
    patient=PATIENT,
    authors=(Author(person=DOCTOR, organization=HOSPITAL, time="20240502093100+0200"),),
    custodian=HOSPITAL,
    legal_authenticator=Author(person=DOCTOR, organization=HOSPITAL),
    service_start="20240502090000+0200",
    service_stop="20240502093000+0200",
)
PRACTICE = {
    "code": "ETABLISSEMENT",
    "codeSystem": "1.2.250.1.213.1.1.4.9",
    "displayName": "Etablissement de santé",
}
FACILITY = {
    "code": "SA01",
    "codeSystem": "1.2.250.1.71.4.2.4",
    "displayName": "Etablissement public de santé",
}
XDS: XdsMetadata = {
    "documentEntry": {
        "uniqueId": DOC_ROOT,
        "typeCode": {"code": "11488-4", "codeSystem": "2.16.840.1.113883.6.1", "displayName": "Compte rendu"},
        "classCode": {"code": "10", "codeSystem": "1.2.250.1.213.1.1.4.1", "displayName": "Compte rendu"},
        "formatCode": {
            "code": "urn:ihe:iti:xds-sd:pdf:2008",
            "codeSystem": "1.3.6.1.4.1.19376.1.2.3",
            "displayName": "Document à corps non structuré en Pdf/A-1",
        },
        "confidentialityCode": [
            {"code": "N", "codeSystem": "2.16.840.1.113883.5.25", "displayName": "Normal"}
        ],
        "healthcareFacilityTypeCode": FACILITY,
        "practiceSettingCode": PRACTICE,
        "mimeType": "text/xml",
        "languageCode": "fr-FR",
    },
    "submissionSet": {
        "contentTypeCode": {"code": "07", "codeSystem": "1.2.250.1.213.2.2", "displayName": "Consultations"},
        "sourceId": "1.2.250.1.999999.1",
    },
}
UUIDS = {
    "entry_uuid": "urn:uuid:11111111-1111-4111-8111-111111111111",
    "submission_set_uuid": "urn:uuid:22222222-2222-4222-8222-222222222222",
    "binary_uuid": "urn:uuid:33333333-3333-4333-8333-333333333333",
    "patient_uuid": "urn:uuid:44444444-4444-4444-8444-444444444444",
}
CTX = SubmissionContext(
    sender=Author(person=DOCTOR, organization=HOSPITAL),
    patient_class="O",
    source_id="1.2.250.1.999999.1",
    submission_time="20240502080000",
    submission_set_unique_id="1.2.250.1.999999.1.2.1",
    **UUIDS,
)


def _bundle(
    header: CdaHeader = HEADER, ctx: SubmissionContext = CTX, xds: XdsMetadata = XDS
) -> dict[str, Any]:
    patient = build_patient(PATIENT, reliability=None, id="patient")
    return build_iti65_bundle(header, CDA, ctx, xds, patient_resource=patient)


def _resource(bundle: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind)


def _contained(resource: dict[str, Any], ref: str) -> dict[str, Any]:
    return next(c for c in resource["contained"] if f"#{c['id']}" == ref)


def test_bundle_entries_and_requests() -> None:
    bundle = _bundle()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "transaction"
    assert bundle["meta"]["profile"] == [BUNDLE_PROFILE]
    kinds = [
        (e["resource"]["resourceType"], e["fullUrl"], e["request"]["method"], e["request"]["url"])
        for e in bundle["entry"]
    ]
    assert kinds == [
        ("List", UUIDS["submission_set_uuid"], "POST", "List"),
        ("DocumentReference", UUIDS["entry_uuid"], "POST", "DocumentReference"),
        ("Binary", UUIDS["binary_uuid"], "POST", "Binary"),
        ("Patient", UUIDS["patient_uuid"], "POST", "Patient"),
    ]
    assert (
        bundle["entry"][3]["request"]["ifNoneExist"]
        == "identifier=urn:oid:1.2.250.1.213.1.4.10|279035121518989"
    )


def test_submission_set() -> None:
    ss = _resource(_bundle(), "List")
    assert ss["meta"]["profile"] == [SUBMISSIONSET_PROFILE]
    assert ss["code"]["coding"] == [
        {"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "code": "submissionset"}
    ]
    assert (ss["status"], ss["mode"], ss["date"]) == ("current", "working", "2024-05-02T08:00:00+00:00")
    extensions = {e["url"]: e for e in ss["extension"]}
    assert extensions[DESIGNATION_TYPE_URL]["valueCodeableConcept"]["coding"] == [
        {
            "system": NOS + "TRE_R209-TypeActivite/FHIR/TRE-R209-TypeActivite",
            "code": "07",
            "display": "Consultations",
        }
    ]
    assert extensions[SOURCE_ID_URL]["valueIdentifier"] == {
        "system": "urn:ietf:rfc:3986",
        "value": "urn:oid:1.2.250.1.999999.1",
    }
    assert ss["identifier"] == [
        {"use": "usual", "system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.250.1.999999.1.2.1"},
        {"use": "official", "system": "urn:ietf:rfc:3986", "value": UUIDS["submission_set_uuid"]},
    ]
    # PDSM4DMP: the patient is referenced conditionally on its INS
    assert ss["subject"] == {"reference": "Patient?identifier=urn:oid:1.2.250.1.213.1.4.10|279035121518989"}
    assert ss["entry"] == [{"item": {"reference": UUIDS["entry_uuid"]}}]
    role = _contained(ss, ss["source"]["reference"])
    assert role["resourceType"] == "PractitionerRole"
    practitioner = _contained(ss, role["practitioner"]["reference"])
    assert practitioner["identifier"][0]["value"] == "899700218896"
    assert _contained(ss, role["organization"]["reference"])["name"] == "HOPITAL FICTIF"


def test_document_reference_metadata() -> None:
    dr = _resource(_bundle(), "DocumentReference")
    assert dr["meta"]["profile"] == [DOCUMENTREFERENCE_PROFILE]
    assert dr["masterIdentifier"] == {"use": "usual", "system": "urn:ietf:rfc:3986", "value": f"urn:oid:{DOC_ROOT}"}
    assert dr["identifier"] == [
        {"use": "official", "system": "urn:ietf:rfc:3986", "value": UUIDS["entry_uuid"]}
    ]
    assert dr["status"] == "current"
    assert dr["type"]["coding"][0]["system"] == "http://loinc.org"
    assert dr["category"][0]["coding"][0] == {
        "system": NOS + "TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument",
        "code": "10",
        "display": "Compte rendu",
    }
    assert (
        dr["securityLabel"][0]["coding"][0]["system"]
        == NOS + "TRE_A08-HL7Confidentiality/FHIR/TRE-A08-HL7Confidentiality"
    )
    assert dr["subject"] == {"reference": "Patient?identifier=urn:oid:1.2.250.1.213.1.4.10|279035121518989"}
    assert dr["date"] == "2024-05-02T09:31:00+02:00"
    author_role = _contained(dr, dr["author"][0]["reference"])
    assert author_role["resourceType"] == "PractitionerRole"
    assert author_role["specialty"][0]["coding"][0]["code"] == "10"
    assert _contained(dr, dr["authenticator"]["reference"])["resourceType"] == "PractitionerRole"
    custodian = _contained(dr, dr["custodian"]["reference"])
    assert custodian["resourceType"] == "Organization"
    assert custodian["identifier"][0]["value"] == "1999999999"
    assert "relatesTo" not in dr


def test_attachment_binary_and_context() -> None:
    bundle = _bundle()
    dr = _resource(bundle, "DocumentReference")
    (content,) = dr["content"]
    attachment = content["attachment"]
    assert attachment == {
        "contentType": "text/xml",
        "language": "fr-FR",
        "url": UUIDS["binary_uuid"],
        "size": len(CDA),
        "hash": base64.b64encode(hashlib.sha1(CDA).digest()).decode(),
        "title": "Compte rendu de consultation",
        "creation": "2024-05-02T09:31:00+02:00",
    }
    assert content["format"] == {
        "system": NOS + "TRE_A11-IheFormatCode/FHIR/TRE-A11-IheFormatCode",
        "code": "urn:ihe:iti:xds-sd:pdf:2008",
        "display": "Document à corps non structuré en Pdf/A-1",
    }
    binary_entry = next(e for e in bundle["entry"] if e["fullUrl"] == attachment["url"])
    assert binary_entry["resource"]["contentType"] == "application/xml"
    assert base64.b64decode(binary_entry["resource"]["data"]) == CDA
    context = dr["context"]
    assert context["period"] == {"start": "2024-05-02T09:00:00+02:00", "end": "2024-05-02T09:30:00+02:00"}
    assert (
        context["facilityType"]["coding"][0]["system"]
        == NOS + "TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite"
    )
    assert (
        context["practiceSetting"]["coding"][0]["system"]
        == NOS + "TRE_A01-CadreExercice/FHIR/TRE-A01-CadreExercice"
    )
    # MHD: sourcePatientInfo is a contained Patient, the patient as the source knows it
    assert context["sourcePatientInfo"] == {"reference": "#source-patient"}
    source = _contained(dr, "#source-patient")
    assert source["resourceType"] == "Patient" and source["identifier"]
    assert "meta" not in source


def test_root_and_extension_document_id() -> None:
    header = replace(HEADER, id_extension="DOC-42")
    xds = copy.deepcopy(XDS)
    del xds["documentEntry"]["uniqueId"]
    dr = _resource(_bundle(header=header, xds=xds), "DocumentReference")
    assert dr["masterIdentifier"] == {"use": "usual", "system": f"urn:oid:{DOC_ROOT}", "value": "DOC-42"}
    assert document_identifier("DOC-42^^1.2.3^ISO") == {"system": "urn:oid:1.2.3", "value": "DOC-42"}


def test_replacement_relates_to_parent() -> None:
    ctx = replace(CTX, action="replace", parent_document_id=PARENT_ROOT)
    dr = _resource(_bundle(ctx=ctx), "DocumentReference")
    assert dr["relatesTo"] == [
        {
            "code": "replaces",
            "target": {"identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{PARENT_ROOT}"}},
        }
    ]
    from_header = _resource(
        _bundle(header=replace(HEADER, related_type="RPLC", parent_document_id=PARENT_ROOT)),
        "DocumentReference",
    )
    assert from_header["relatesTo"] == dr["relatesTo"]


def test_replacement_without_parent_is_a_mapping_error() -> None:
    with pytest.raises(MappingError) as err:
        _bundle(ctx=replace(CTX, action="replace"))
    assert err.value.code == "FHIR_REPLACE_NO_PARENT"


def test_delete_is_not_an_iti65() -> None:
    with pytest.raises(MappingError) as err:
        _bundle(ctx=replace(CTX, action="delete"))
    assert err.value.code == "FHIR_ACTION_UNSUPPORTED"


@pytest.mark.parametrize("name", sorted(UUIDS))
def test_missing_injected_id(name: str) -> None:
    with pytest.raises(MappingError) as err:
        _bundle(ctx=replace(CTX, **{name: None}))
    assert (err.value.code, err.value.location) == ("FHIR_CONTEXT_MISSING", name)


def test_without_sender_the_document_author_signs_the_submission_set() -> None:
    ss = _resource(_bundle(ctx=replace(CTX, sender=None)), "List")
    assert _contained(ss, ss["source"]["reference"])["resourceType"] == "PractitionerRole"
    org_only = _resource(_bundle(ctx=replace(CTX, sender=Author(organization=HOSPITAL))), "List")
    assert "reference" not in org_only["source"]
    assert org_only["source"]["extension"][0]["valueReference"] == {"reference": "#ss-author-org"}


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("20210606093100+0200", "2021-06-06T09:31:00+02:00"),
        ("20210606093100.25-0500", "2021-06-06T09:31:00.25-05:00"),
        ("2021", "2021"),
        ("202106", "2021-06"),
        ("20210606", "2021-06-06"),
        ("202106060931+0200", "2021-06-06T09:31:00+02:00"),
        # no offset: local French time (summer / winter)
        ("20210606093100", "2021-06-06T09:31:00+02:00"),
        ("20210106093100", "2021-01-06T09:31:00+01:00"),
    ],
)
def test_fhir_datetime(ts: str, expected: str) -> None:
    assert fhir_datetime(ts) == expected


@pytest.mark.parametrize("ts", ["2021-06-06", "20211306", "20210632", "2021060625", "x"])
def test_fhir_datetime_rejects(ts: str) -> None:
    with pytest.raises(MappingError):
        fhir_datetime(ts)


def test_validate_clean_bundle() -> None:
    assert validate_bundle(_bundle()) == []
    replacement = _bundle(ctx=replace(CTX, action="replace", parent_document_id=PARENT_ROOT))
    assert validate_bundle(replacement) == []


def test_validate_missing_custodian() -> None:
    bundle = _bundle()
    del bundle["entry"][1]["resource"]["custodian"]
    findings = validate_bundle(bundle)
    assert [(f.code, f.location) for f in findings] == [
        ("PDSM_CARDINALITY", "Bundle.entry[1].resource.custodian")
    ]


def test_validate_structure_error_has_path() -> None:
    bundle = _bundle()
    bundle["entry"][1]["resource"]["content"][0]["attachment"]["size"] = "big"
    findings = validate_structure(bundle)
    assert [(f.code, f.location) for f in findings] == [
        ("FHIR_INVALID", "Bundle.entry[1].resource.content[0].attachment.size")
    ]


def test_validate_pdsm_rules() -> None:
    bundle = _bundle()
    ss, dr = bundle["entry"][0]["resource"], bundle["entry"][1]["resource"]
    ss["extension"] = [e for e in ss["extension"] if e["url"] != DESIGNATION_TYPE_URL]
    dr["content"][0]["attachment"]["hash"] = base64.b64encode(b"not a sha1").decode()
    dr["content"][0]["attachment"]["url"] = "urn:uuid:99999999-9999-4999-8999-999999999999"
    del dr["context"]["period"]
    dr["author"] = [{"reference": "#nobody"}]
    got = {(f.code, f.location) for f in validate_bundle(bundle)}
    assert got == {
        ("PDSM_CARDINALITY", "Bundle.entry[0].resource.extension"),
        ("PDSM_HASH", "Bundle.entry[1].resource.content[0].attachment.hash"),
        ("PDSM_REFERENCE", "Bundle.entry[1].resource.content[0].attachment.url"),
        ("PDSM_CARDINALITY", "Bundle.entry[1].resource.context.period.start"),
        ("PDSM_REFERENCE", "Bundle.entry[1].resource.author[0].reference"),
    }


def _corpus_files() -> list[Path]:
    return sorted(CORPUS.rglob("*.json")) if CORPUS.is_dir() else []


@pytest.mark.corpus
def test_corpus_pdsm_examples_load_with_r4b() -> None:
    """Every PDSm / PDSM4DMP example parses with R4B (structure only).

    Our PDSm rules do flag the ITI-65 examples, on purpose: none of them has the
    DocumentReference ``custodian`` that PDSm makes 1..1, and the PDSM4DMP ones carry
    no ``identifier`` with use ``usual`` (the SubmissionSet uniqueId). Both are gaps in
    the examples, not in the validator, so only those two findings are tolerated.
    """
    files = _corpus_files()
    if not files:
        pytest.skip(reason=f"corpus not found at {CORPUS}")
    from fhir.resources.R4B import get_fhir_model_class

    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        get_fhir_model_class(data["resourceType"]).model_validate(data)
        if data["resourceType"] == "Bundle" and data.get("type") == "transaction":
            tolerated = {"identifier uniqueId (use usual) is required", "custodian is required (1..1)"}
            unexpected = [f for f in validate_bundle(data) if f.message not in tolerated]
            assert unexpected == [], path.name


def test_device_author_is_a_fhir_device() -> None:
    from gateway.core.fhir.actors import build_device
    from gateway.model import Person

    device = Person(id="3750100125/88", id_root="1.2.250.1.999.7", software="AUTOMATE-BIO", model="XN-1000", device=True)
    assert build_device(device, "a1-device") == {
        "resourceType": "Device",
        "id": "a1-device",
        "identifier": [{"value": "3750100125/88", "system": "urn:oid:1.2.250.1.999.7"}],
        "deviceName": [
            {"name": "AUTOMATE-BIO", "type": "user-friendly-name"},
            {"name": "XN-1000", "type": "model-name"},
        ],
    }
