"""XAdES signature document of a submission set (IHE DSG form, as the DMP wants it)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest
from lxml import etree
from signxml.xades import XAdESSignatureConfiguration, XAdESVerifier

from adapters.dmp.ebrim import UUID, build_provide_and_register
from adapters.dmp.testing import TEST_CERT, TEST_KEY, sample_document, sample_metadata
from adapters.dmp.xades import sign_submission_set, signature_entry

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
NS = {
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "xades": "http://uri.etsi.org/01903/v1.3.2#",
    "rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0",
}
DOC_UID = "1.2.250.1.999999.1.7.1"
SS_UID = "1.2.250.1.999999.1.40.77"


@pytest.fixture(scope="module")
def signature() -> bytes:
    return sign_submission_set(
        [(DOC_UID, b"<ClinicalDocument/>")],
        submission_set_unique_id=SS_UID,
        key_pem=TEST_KEY.read_bytes(),
        cert_pem=TEST_CERT.read_bytes(),
        now=NOW,
        signature_id="sig-1",
    )


def test_signature_verifies_with_the_cachet_certificate(signature: bytes) -> None:
    results = XAdESVerifier().verify(
        signature, x509_cert=TEST_CERT.read_text(), expect_config=XAdESSignatureConfiguration(expect_references=3)
    )
    assert len(results) == 3


def test_manifest_references_the_set_and_each_document_by_uniqueid(signature: bytes) -> None:
    root = etree.fromstring(signature)
    refs = root.xpath("ds:SignedInfo/ds:Reference", namespaces=NS)
    types = [r.get("Type") for r in refs]
    assert types[0] == "http://www.w3.org/2000/09/xmldsig#Manifest"
    assert "http://uri.etsi.org/01903#SignedProperties" in types
    # every same-document reference says its canonicalisation (exclusive), none relies on the default
    assert all(r.find("ds:Transforms", NS) is not None for r in refs)
    manifest = root.xpath("ds:Object/ds:Manifest", namespaces=NS)[0]
    assert refs[0].get("URI") == f"#{manifest.get('Id')}"
    uris = [r.get("URI") for r in manifest.xpath("ds:Reference", namespaces=NS)]
    assert uris == [f"urn:oid:{SS_UID}", f"urn:oid:{DOC_UID}"]
    digest = manifest.xpath(f"ds:Reference[@URI='urn:oid:{DOC_UID}']/ds:DigestValue/text()", namespaces=NS)[0]
    assert base64.b64decode(digest) == hashlib.sha256(b"<ClinicalDocument/>").digest()


def test_xades_signed_properties(signature: bytes) -> None:
    root = etree.fromstring(signature)
    assert root.get("Id") == "sig-1"
    (qualifying,) = root.xpath("ds:Object/xades:QualifyingProperties", namespaces=NS)
    assert qualifying.get("Target") == "#sig-1"
    props = qualifying.find("xades:SignedProperties/xades:SignedSignatureProperties", NS)
    assert props.findtext("xades:SigningTime", namespaces=NS) == "2025-01-02T03:04:05Z"
    assert props.find("xades:SigningCertificate/xades:Cert/xades:IssuerSerial", NS) is not None
    assert root.xpath(
        "//xades:CommitmentTypeIndication/xades:CommitmentTypeId/xades:Identifier/text()", namespaces=NS
    ) == ["urn:oid:1.2.840.10065.1.12.1.14"]


def test_tampered_manifest_fails(signature: bytes) -> None:
    tampered = signature.replace(DOC_UID.encode(), b"1.2.250.1.999999.1.7.9")
    with pytest.raises(Exception, match="Digest mismatch"):
        XAdESVerifier().verify(
            tampered, x509_cert=TEST_CERT.read_text(), expect_config=XAdESSignatureConfiguration(expect_references=3)
        )


def test_signature_entry_joins_the_submission_set(signature: bytes) -> None:
    document = sample_document(DOC_UID)
    xds = sample_metadata(document, unique_id=DOC_UID)
    entry = signature_entry(
        xds, entry_uuid="urn:uuid:0000-sig", unique_id="2.25.42", signature=signature, creation_time="20250102030405"
    )
    assert entry["classCode"]["code"] == "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1"
    assert (entry["typeCode"]["code"], entry["formatCode"]["code"]) == ("E1762", "http://www.w3.org/2000/09/xmldsig#")
    assert entry["mimeType"] == "text/xml" and entry["hash"] == hashlib.sha1(signature).hexdigest()
    assert entry["patientId"] == xds["documentEntry"]["patientId"]
    request = build_provide_and_register(xds, document_id_ref="doc@x", signature=(entry, "sig@x"))
    entries = request.xpath("//rim:ExtrinsicObject/@id", namespaces=NS)
    assert entries == [xds["documentEntry"]["entryUUID"], "urn:uuid:0000-sig"]
    ss_id = request.xpath("//rim:RegistryPackage/@id", namespaces=NS)[0]
    associations = {
        (a.get("associationType"), a.get("sourceObject"), a.get("targetObject"))
        for a in request.xpath("//rim:Association", namespaces=NS)
    }
    assert (UUID.HAS_MEMBER, ss_id, "urn:uuid:0000-sig") in associations
    assert ("urn:ihe:iti:2007:AssociationType:signs", "urn:uuid:0000-sig", ss_id) in associations
    includes = request.xpath("//*[local-name()='Include']/@href")
    assert includes == ["cid:doc@x", "cid:sig@x"]
