"""PDSm ITI-65 structural rules used by the MHD simulator."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from adapters.mhd.rules import check_iti65, check_r4b, issue_code, master_identifier, patient_id
from adapters.mhd.simulator import operation_outcome
from adapters.mhd.testing import TEST_INS, make_iti65_bundle

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "fhir" / "pdsm"


def codes(bundle: object) -> list[tuple[str, str | None]]:
    return [(f.code, f.location) for f in check_iti65(bundle)]


def test_hand_built_bundle_is_valid() -> None:
    bundle = make_iti65_bundle()
    assert check_iti65(bundle) == []
    assert check_r4b(bundle) == []


def test_identifiers() -> None:
    bundle = make_iti65_bundle("1.2.3")
    assert master_identifier(bundle) == ("urn:ietf:rfc:3986", "urn:oid:1.2.3")
    assert patient_id(bundle) == TEST_INS
    bundle["entry"][1]["resource"]["subject"] = {"reference": "Patient/123"}
    assert patient_id(bundle) == "Patient/123"


@pytest.mark.parametrize("element", ["masterIdentifier", "custodian", "date", "subject"])
def test_required_document_reference_elements(element: str) -> None:
    bundle = make_iti65_bundle()
    del bundle["entry"][1]["resource"][element]
    assert codes(bundle) == [("MHD_REQUIRED", f"Bundle.entry[1].resource.{element}")]


@pytest.mark.parametrize("element", ["contentType", "size", "hash", "title", "url"])
def test_required_attachment_elements(element: str) -> None:
    bundle = make_iti65_bundle()
    del bundle["entry"][1]["resource"]["content"][0]["attachment"][element]
    assert ("MHD_REQUIRED", f"Bundle.entry[1].resource.content[0].attachment.{element}") in codes(bundle)


def test_not_a_transaction() -> None:
    assert codes({"resourceType": "Patient"}) == [("MHD_NOT_BUNDLE", "Bundle")]
    bundle = make_iti65_bundle()
    bundle["type"] = "batch"
    assert codes(bundle) == [("MHD_BUNDLE_TYPE", "Bundle.type")]


def test_every_entry_is_a_post() -> None:
    bundle = make_iti65_bundle()
    bundle["entry"][2]["request"]["method"] = "PUT"
    assert codes(bundle) == [("MHD_METHOD", "Bundle.entry[2].request.method")]


def test_exactly_one_submission_set() -> None:
    bundle = make_iti65_bundle()
    bundle["entry"].append(json.loads(json.dumps(bundle["entry"][0])) | {"fullUrl": "urn:uuid:dup"})
    assert ("MHD_SUBMISSIONSET", "Bundle.entry") in codes(bundle)
    bundle = make_iti65_bundle()
    bundle["entry"][0]["resource"]["code"]["coding"][0]["code"] = "folder"
    assert ("MHD_SUBMISSIONSET", "Bundle.entry") in codes(bundle)


def test_at_least_one_document_reference() -> None:
    bundle = make_iti65_bundle()
    del bundle["entry"][1]
    bundle["entry"][0]["resource"]["entry"] = []
    assert ("MHD_NO_DOCUMENT", "Bundle.entry") in codes(bundle)


def test_document_must_be_listed_in_submission_set() -> None:
    bundle = make_iti65_bundle()
    bundle["entry"][0]["resource"]["entry"] = []
    assert codes(bundle) == [("MHD_NOT_REFERENCED", "Bundle.entry[1].fullUrl")]


def test_attachment_url_must_point_at_a_binary_entry() -> None:
    bundle = make_iti65_bundle()
    bundle["entry"][1]["resource"]["content"][0]["attachment"]["url"] = "urn:uuid:elsewhere"
    assert codes(bundle) == [("MHD_ATTACHMENT_URL", "Bundle.entry[1].resource.content[0].attachment.url")]


def test_binary_size_and_hash_must_match() -> None:
    bundle = make_iti65_bundle()
    bundle["entry"][2]["resource"]["data"] = base64.b64encode(b"other").decode()
    at = "Bundle.entry[1].resource.content[0].attachment"
    assert codes(bundle) == [("MHD_SIZE_MISMATCH", f"{at}.size"), ("MHD_HASH_MISMATCH", f"{at}.hash")]


@pytest.mark.parametrize("data", [None, "", "***"])
def test_binary_data_required_and_base64(data: str | None) -> None:
    bundle = make_iti65_bundle()
    bundle["entry"][2]["resource"]["data"] = data
    assert codes(bundle) == [("MHD_BINARY_DATA", "Bundle.entry[2].resource.data")]


def test_r4b_errors_are_located() -> None:
    bundle = make_iti65_bundle()
    bundle["entry"][1]["resource"]["content"][0]["attachment"]["size"] = "big"
    [finding] = check_r4b(bundle)
    assert finding.code == "MHD_FHIR_INVALID"
    assert finding.location == "Bundle.entry[1].resource.content[0].attachment.size"
    bundle = make_iti65_bundle()
    bundle["entry"][2]["resource"]["resourceType"] = "Nonsense"
    assert [f.code for f in check_r4b(bundle)] == ["MHD_FHIR_INVALID"]


def test_operation_outcome_from_findings() -> None:
    bundle = make_iti65_bundle()
    del bundle["entry"][1]["resource"]["custodian"]
    oo = operation_outcome(check_iti65(bundle))
    assert oo["issue"] == [
        {
            "severity": "error",
            "code": "required",
            "diagnostics": "MHD_REQUIRED: DocumentReference.custodian is required",
            "expression": ["Bundle.entry[1].resource.custodian"],
        }
    ]
    assert issue_code("MHD_DUPLICATE") == "duplicate"


@pytest.mark.corpus
def test_published_pdsm_examples_lack_custodian() -> None:
    """The ANS examples omit DocumentReference.custodian (1..1 in the PDSm profile)."""
    path = CORPUS / "ig-pdsm4dmp-eeds" / "Bundle-example-td2-iti65-lot-soumission.json"
    if not path.exists():
        pytest.skip(reason="shared corpus not available")
    bundle = json.loads(path.read_text(encoding="utf-8"))
    assert codes(bundle) == [("MHD_REQUIRED", "Bundle.entry[1].resource.custodian")]
    assert check_r4b(bundle) == []
    bundle["entry"][1]["resource"]["custodian"] = {"display": "x"}
    assert check_iti65(bundle) == []
