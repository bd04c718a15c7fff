"""VIHF building, signing and verification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from adapters.dmp.testing import TEST_CERT, TEST_KEY, sample_document, sample_metadata
from adapters.dmp.vihf import (
    SAML_NS,
    VihfError,
    VihfSettings,
    build_vihf,
    parse_roles,
    verify_vihf,
)
from gateway.errors import MappingError

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
    # volet mapping table: VIHF_Version is the constant "4.0"
    assert attrs["VIHF_Version"] == "4.0"
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


def _from_message(secret: bool = False, app: str = "RIS-Y") -> dict:  # type: ignore[type-arg]
    """sample_metadata with what the SB PRT of the Ségur MDM says (PRT-5, PRT-8 FINEG 300017985)."""
    xds = sample_metadata(sample_document())
    org = "Organisation-Y^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1300017985"
    xds["submissionSet"]["authors"] = [
        {"authorPerson": "801234564895^Eric^Thomas^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS", "authorInstitution": [org]}
    ]
    xds["request"] = {
        "secretConnection": secret,
        "sendingApplication": app,
        "sender": {
            "id": "801234564895",
            "family": "Eric",
            "given": "Thomas",
            "service": "IMAGERIE",
            "structureIdNat": "1300017985",
        },
    }
    return xds


def test_values_come_from_the_message() -> None:
    roles = {"RIS-Y": parse_roles(["10^1.2.250.1.71.1.2.7", "SM44^1.2.250.1.71.4.2.5"], "vihf_roles.RIS-Y")}
    settings = VihfSettings(key_path=TEST_KEY, cert_path=TEST_CERT, structure_id="9999999999", roles=roles)
    assertion = build_vihf(settings, _from_message(), NOW, "_m1")
    attrs = attributes(assertion)
    assert attrs["Identifiant_Structure"] == "1300017985"  # PRT-8.10 as Struct_IdNat, not the setting
    assert attrs["urn:oasis:names:tc:xspa:1.0:subject:subject-id"] == "Eric, Thomas, IMAGERIE"
    assert assertion.xpath("saml:Subject/saml:NameID/text()", namespaces=NS) == ["801234564895"]
    # one subject:role attribute, occurrences in order
    role_attrs = assertion.xpath("//saml:Attribute[@Name='urn:oasis:names:tc:xacml:2.0:subject:role']", namespaces=NS)
    assert len(role_attrs) == 1
    assert role_attrs[0].xpath(".//hl7:Role/@code", namespaces=NS) == ["10", "SM44"]
    assert not assertion.xpath("//hl7:ConfidentialityCode", namespaces=NS)
    # an application without configured roles falls back to AUTOMATE
    other = build_vihf(settings, _from_message(app="LABO"), NOW, "_m2")
    assert other.xpath("//hl7:Role/@code", namespaces=NS) == ["AUTOMATE"]


def test_secret_connection_adds_the_confidentiality_code() -> None:
    assertion = build_vihf(SETTINGS, _from_message(secret=True), NOW, "_m3")
    name = "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"
    (coded,) = assertion.xpath(f"//saml:Attribute[@Name='{name}']/saml:AttributeValue/hl7:ConfidentialityCode", namespaces=NS)
    assert (coded.get("code"), coded.get("codeSystem")) == ("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13")


def test_structure_must_be_an_author_institution() -> None:
    xds = _from_message()
    xds["request"]["sender"]["structureIdNat"] = "1999999999"
    with pytest.raises(MappingError) as info:
        build_vihf(SETTINGS, xds, NOW, "_m4")
    assert info.value.code == "VIHF_STRUCTURE_NOT_AUTHOR"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["NOPE^1.2.3"], "not in JDV_J65"),
        (["10"], r"code\^codeSystemOID"),
        (["10^1.2.250.1.71.1.2.7"], "second role occurrence"),
        ([], "at least one role"),
    ],
)
def test_roles_are_checked_against_j65(values: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_roles(values, "vihf_roles.X")


def test_automate_fallback_for_a_professional_is_logged_without_the_person() -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        build_vihf(SETTINGS, _from_message(app="LABO"), NOW, "_m5")
    (event,) = [e for e in logs if e["event"] == "vihf.role_fallback"]
    assert event["sending_application"] == "LABO"
    assert "Eric" not in str(event) and "801234564895" not in str(event)
