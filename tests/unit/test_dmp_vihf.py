"""VIHF building, signing and verification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from adapters.dmp.testing import TEST_CERT, TEST_KEY, sample_document, sample_metadata
from adapters.dmp.vihf import SAML_NS, VihfError, VihfSettings, build_vihf, verify_vihf

NOW = datetime(2024, 1, 5, 10, 0, tzinfo=UTC)
SETTINGS = VihfSettings(
    key_path=TEST_KEY, cert_path=TEST_CERT, structure_id="1012345678", lps_homologation="TEST-1"
)
NS = {"saml": SAML_NS, "hl7": "urn:hl7-org:v3", "ds": "http://www.w3.org/2000/09/xmldsig#"}


@pytest.fixture(scope="module")
def assertion():
    return build_vihf(SETTINGS, sample_metadata(sample_document()), NOW, "_a1")


def attributes(element) -> dict[str, str]:
    return {
        a.get("Name"): "".join(a.xpath("saml:AttributeValue/text()", namespaces=NS)).strip()
        for a in element.xpath("//saml:Attribute", namespaces=NS)
    }


def test_content(assertion) -> None:
    attrs = attributes(assertion)
    assert attrs["VIHF_Version"] == "3.0"
    assert attrs["Authentification_Mode"] == "INDIRECTE"
    assert attrs["Identifiant_Structure"] == "1012345678"
    assert attrs["Secteur_Activite"] == "SA01^1.2.250.1.71.4.2.4"
    assert (
        attrs["urn:oasis:names:tc:xacml:2.0:resource:resource-id"]
        == "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"
    )
    assert attrs["Ressource_URN"] == "urn:dmp"
    assert attrs["LPS_ID_HOMOLOGATION_DMP"] == "TEST-1"
    assert assertion.xpath("saml:Subject/saml:NameID/text()", namespaces=NS) == ["801234567897"]
    assert assertion.xpath("//hl7:Role/@code", namespaces=NS) == ["AUTOMATE"]
    assert assertion.xpath("//hl7:PurposeOfUse/@code", namespaces=NS) == ["normal"]
    conditions = assertion.find(f"{{{SAML_NS}}}Conditions")
    assert conditions.get("NotBefore") == "2024-01-05T10:00:00.000Z"
    assert conditions.get("NotOnOrAfter") == "2024-01-05T10:05:00.000Z"
    # SAML 2.0 order: Issuer, then Signature.
    assert [etree.QName(c).localname for c in assertion][:2] == ["Issuer", "Signature"]
    assert assertion.xpath("ds:Signature/ds:SignedInfo/ds:SignatureMethod/@Algorithm", namespaces=NS) == [
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    ]


def test_confidentiality_only_when_asked() -> None:
    xds = sample_metadata(sample_document())
    plain = attributes(build_vihf(SETTINGS, xds, NOW, "_a2"))
    secret = attributes(build_vihf(SETTINGS, xds, NOW, "_a3", confidentiality_code="R"))
    assert not any("confidentiality" in name for name in plain)
    assert any("confidentiality" in name for name in secret)


def test_signature_verifies(assertion) -> None:
    assert verify_vihf(assertion, cert_pem=TEST_CERT.read_bytes()).get("ID") == "_a1"
    assert verify_vihf(etree.tostring(assertion)).tag == f"{{{SAML_NS}}}Assertion"
    assert verify_vihf(assertion, now=NOW + timedelta(seconds=10)) is not None


def test_signature_survives_embedding(assertion) -> None:
    outer = etree.Element("{urn:x}Envelope", nsmap={"x": "urn:x", "ds": "urn:other"})
    outer.append(etree.fromstring(etree.tostring(assertion)))
    reparsed = etree.fromstring(etree.tostring(outer))
    assert verify_vihf(reparsed[0]) is not None


def test_tampered_fails(assertion) -> None:
    tampered = etree.tostring(assertion).replace(b"1012345678", b"9999999999")
    with pytest.raises(VihfError) as info:
        verify_vihf(tampered)
    assert info.value.code == "VIHF_SIGNATURE"


def test_other_certificate_fails(assertion, tmp_path) -> None:
    from tools.make_test_pki import make_test_pki

    _, other_cert = make_test_pki(tmp_path)
    with pytest.raises(VihfError):
        verify_vihf(assertion, cert_pem=other_cert.read_bytes())


def test_expired_fails(assertion) -> None:
    with pytest.raises(VihfError) as info:
        verify_vihf(assertion, now=NOW + timedelta(hours=1))
    assert info.value.code == "VIHF_EXPIRED"


def test_naive_now_refused() -> None:
    with pytest.raises(ValueError):
        build_vihf(SETTINGS, sample_metadata(sample_document()), datetime(2024, 1, 1), "_x")
