"""gateway.core.cda: hardened parsing, header extraction, XSD validation."""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path

import pytest

from gateway.core import cda
from gateway.errors import ParseError, ValidationError
from gateway.model import Identifier

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures" / "cda"
XSD_DIR = REPO.parent / "shared" / "corpus" / "cda" / "xsd"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record (and refuse) any socket connection attempted during the test."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


# --------------------------------------------------------------------------------------------
# parse_cda: accepted inputs


def test_parses_fixture_root() -> None:
    root = cda.parse_cda(fixture("cr_bio_n3.xml"))
    assert root.tag == "{urn:hl7-org:v3}ClinicalDocument"


def test_accepts_utf8_bom_crlf_and_no_declaration() -> None:
    original = fixture("cr_bio_n3.xml")
    expected = cda.parse_header(cda.parse_cda(original))
    body = original.split(b"?>", 1)[1].lstrip()  # drop the XML declaration
    variants = [
        b"\xef\xbb\xbf" + original,
        original.replace(b"\n", b"\r\n"),
        body,
        b"\xef\xbb\xbf" + body.replace(b"\n", b"\r\n"),
    ]
    for data in variants:
        assert cda.parse_header(cda.parse_cda(data)) == expected


def test_accepts_bare_doctype_without_subset() -> None:
    data = b'<!DOCTYPE ClinicalDocument><ClinicalDocument xmlns="urn:hl7-org:v3"><id root="1.2.3"/></ClinicalDocument>'
    assert cda.parse_header(cda.parse_cda(data)).id_root == "1.2.3"


def test_accepts_doctype_looking_text_in_body_comment() -> None:
    data = (
        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><!-- <!DOCTYPE x SYSTEM "http://e/x.dtd"> -->'
        b'<id root="1.2.3"/></ClinicalDocument>'
    )
    assert cda.parse_cda(data) is not None


# --------------------------------------------------------------------------------------------
# parse_cda: refused inputs


@pytest.mark.parametrize("name", ["xxe.xml", "billion_laughs.xml"])
def test_attack_fixtures_rejected_without_network(name: str, no_network: list[object]) -> None:
    started = time.perf_counter()
    with pytest.raises(ParseError) as info:
        cda.parse_cda(fixture(name))
    assert info.value.code == "CDA_DTD_FORBIDDEN"
    assert time.perf_counter() - started < 1.0
    assert no_network == []


@pytest.mark.parametrize(
    "prolog",
    [
        b'<!DOCTYPE ClinicalDocument SYSTEM "http://127.0.0.1:9/cda.dtd">',
        b'<!DOCTYPE ClinicalDocument PUBLIC "-//X//DTD X//EN" "cda.dtd">',
        b'<!DOCTYPE ClinicalDocument [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]>',
        b'<!DOCTYPE ClinicalDocument [<!ENTITY a "b">]>',
        b'<?xml version="1.0"?>\n<!-- a comment first -->\n<!DOCTYPE ClinicalDocument [<!ENTITY a "b">]>',
    ],
)
def test_forbidden_doctypes(prolog: bytes, no_network: list[object]) -> None:
    data = prolog + b'<ClinicalDocument xmlns="urn:hl7-org:v3"><id root="1.2.3"/></ClinicalDocument>'
    with pytest.raises(ParseError) as info:
        cda.parse_cda(data)
    assert info.value.code == "CDA_DTD_FORBIDDEN"
    assert no_network == []


def test_utf16_xxe_rejected() -> None:
    text = fixture("xxe.xml").decode("utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"')
    with pytest.raises(ParseError) as info:
        cda.parse_cda(text.encode("utf-16"))
    assert info.value.code == "CDA_DTD_FORBIDDEN"


def test_parser_itself_never_expands_when_prescan_is_bypassed(
    monkeypatch: pytest.MonkeyPatch, no_network: list[object]
) -> None:
    # Defence in depth: even if the byte scan missed a DOCTYPE, the parser does not expand or
    # fetch entities and the parsed tree is refused.
    monkeypatch.setattr(cda, "_check_doctype", lambda data: None)
    for name in ("xxe.xml", "billion_laughs.xml"):
        started = time.perf_counter()
        with pytest.raises(ParseError) as info:
            cda.parse_cda(fixture(name))
        assert info.value.code == "CDA_DTD_FORBIDDEN"
        assert time.perf_counter() - started < 1.0
    assert no_network == []


@pytest.mark.parametrize("data", [b"", b"   ", b"not xml at all", b"<ClinicalDocument", b"\x00\x01\x02"])
def test_not_xml(data: bytes) -> None:
    with pytest.raises(ParseError) as info:
        cda.parse_cda(data)
    assert info.value.code == "CDA_NOT_XML"


@pytest.mark.parametrize(
    "data",
    [
        b"<foo/>",
        b"<ClinicalDocument><id root='1'/></ClinicalDocument>",
        b'<ClinicalDocument xmlns="urn:hl7-org:v2"/>',
    ],
)
def test_not_cda(data: bytes) -> None:
    with pytest.raises(ParseError) as info:
        cda.parse_cda(data)
    assert info.value.code == "CDA_NOT_CDA"


def test_too_large() -> None:
    data = fixture("cr_bio_n3.xml")
    with pytest.raises(ParseError) as info:
        cda.parse_cda(data, max_size=len(data) - 1)
    assert info.value.code == "CDA_TOO_LARGE"
    assert cda.parse_cda(data, max_size=len(data)) is not None


def test_text_node_over_libxml2_limit_is_too_large() -> None:
    data = (
        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><id root="1.2.3"/><component><nonXMLBody>'
        b'<text mediaType="application/pdf" representation="B64">'
        + b"A" * 10_100_000
        + b"</text></nonXMLBody></component></ClinicalDocument>"
    )
    with pytest.raises(ParseError) as info:
        cda.parse_cda(data)
    assert info.value.code == "CDA_TOO_LARGE"


# --------------------------------------------------------------------------------------------
# parse_header


def test_header_level1_imagerie() -> None:
    header = cda.parse_header(cda.parse_cda(fixture("cr_imagerie_n1.xml")))
    assert header.id_root == "1.2.250.1.999999.1.20.1001"
    assert header.id_extension is None
    assert header.document_id == "1.2.250.1.999999.1.20.1001"
    assert header.set_id == "1.2.250.1.999999.1.21.1001"
    assert header.version_number == "1"
    assert header.code == {
        "code": "18748-4",
        "codeSystem": "2.16.840.1.113883.6.1",
        "displayName": "CR d'imagerie médicale",
    }
    assert header.title == "Radiographie du thorax"
    assert header.effective_time == "20240315143000+0100"
    assert header.confidentiality == {
        "code": "N",
        "codeSystem": "2.16.840.1.113883.5.25",
        "displayName": "Normal",
    }
    assert header.language == "fr-FR"
    assert header.template_ids == (
        "2.16.840.1.113883.2.8.2.1",
        "1.2.250.1.213.1.1.1.1",
        "1.3.6.1.4.1.19376.1.2.20",
    )
    assert header.level == 1
    assert header.nonxml_media_type == "application/pdf"
    assert header.related_type is None and header.parent_document_id is None

    patient = header.patient
    assert patient.identifiers == (
        Identifier(value="290077511204566", oid="1.2.250.1.213.1.4.10", type_code="INS"),
    )
    assert patient.ins is not None and patient.ins.value == "290077511204566"
    assert patient.ipp is None
    assert (patient.birth_family, patient.first_given, patient.birth_given_list) == (
        "TESTRELAIS",
        "CAMILLE",
        "CAMILLE ROSE",
    )
    assert (patient.used_family, patient.used_given) == (None, None)
    assert (patient.gender, patient.birth_date, patient.birthplace_cog) == ("F", "19900712", "75112")
    assert patient.status == ()

    (author,) = header.authors
    assert author.time == "20240315142500+0100"
    assert author.function is None
    assert author.person is not None
    assert dataclasses.astuple(author.person) == (
        "810001234567",
        "1.2.250.1.71.4.2.1",
        "RADIOLOGUE",
        "ALICE",
        "DR",
        {
            "code": "SM44",
            "codeSystem": "1.2.250.1.71.4.2.5",
            "displayName": "Radiodiagnostic et imagerie médicale (SM)",
        },
        None,
        False,
        None,
        None,
    )
    assert author.organization is not None
    assert author.organization.id == "3750999999"
    assert author.organization.id_root == "1.2.250.1.71.4.2.2"
    assert author.organization.name == "HOPITAL FICTIF RELAIS"
    assert author.organization.industry == {
        "code": "ETABLISSEMENT",
        "codeSystem": "1.2.250.1.213.1.1.4.9",
        "displayName": "Etablissement de santé",
    }
    assert header.custodian is not None and header.custodian.name == "HOPITAL FICTIF RELAIS"
    assert header.custodian.id == "3750999999"
    legal = header.legal_authenticator
    assert legal is not None and legal.person is not None
    assert (legal.person.id, legal.person.family, legal.time) == (
        "810001234567",
        "RADIOLOGUE",
        "20240315142900+0100",
    )
    assert header.service_event_code is not None and header.service_event_code["code"] == "ZBQK002"
    assert (header.service_start, header.service_stop) == ("20240315100000+0100", "20240315103000+0100")
    assert header.practice_setting is not None and header.practice_setting["code"] == "ETABLISSEMENT"
    assert header.facility_type == {
        "code": "SA01",
        "codeSystem": "1.2.250.1.71.4.2.4",
        "displayName": "Etablissement public de santé",
    }


def test_header_level3_bio() -> None:
    header = cda.parse_header(cda.parse_cda(fixture("cr_bio_n3.xml")))
    assert header.document_id == "1.2.250.1.999999.1.30.2001"
    assert header.level == 3
    assert header.nonxml_media_type is None
    assert header.template_ids[-1] == "1.2.250.1.213.1.1.1.55"
    assert header.confidentiality is not None and header.confidentiality["code"] == "R"
    patient = header.patient
    assert patient.identifiers == (
        Identifier(value="290077511204566", oid="1.2.250.1.213.1.4.10", type_code="INS"),
        Identifier(value="000123456", oid="1.2.250.1.999999.1.10", type_code="PI"),
    )
    assert patient.ipp == Identifier(value="000123456", oid="1.2.250.1.999999.1.10", type_code="PI")
    assert (patient.birth_family, patient.first_given, patient.birth_given_list) == (
        "TESTRELAIS",
        "CAMILLE",
        "CAMILLE ROSE",
    )
    assert (patient.used_family, patient.used_given) == ("MARTIN-TESTRELAIS", "CAM")
    (author,) = header.authors
    assert author.function == {
        "code": "ATTPHYS",
        "codeSystem": "2.16.840.1.113883.5.88",
        "displayName": "Médecin traitant",
    }
    assert (header.service_start, header.service_stop) == ("20240610", "202406100830+0200")
    assert header.practice_setting is not None and header.practice_setting["code"] == "AMBULATOIRE"
    assert header.facility_type is not None and header.facility_type["code"] == "SA25"


def test_header_replacement() -> None:
    header = cda.parse_header(cda.parse_cda(fixture("cr_imagerie_n1_rplc.xml")))
    assert header.document_id == "1.2.250.1.999999.1.20.1002"
    assert header.version_number == "2"
    assert header.related_type == "RPLC"
    assert header.parent_document_id == "1.2.250.1.999999.1.20.1001"


def _minimal(inner: str) -> bytes:
    return f'<ClinicalDocument xmlns="urn:hl7-org:v3">{inner}</ClinicalDocument>'.encode()


def test_header_id_with_extension() -> None:
    header = cda.parse_header(cda.parse_cda(_minimal('<id root="1.2.3" extension="DOC-9"/>')))
    assert (header.id_root, header.id_extension, header.document_id) == ("1.2.3", "DOC-9", "1.2.3^DOC-9")


@pytest.mark.parametrize("inner", ["", '<id extension="x"/>', '<id nullFlavor="UNK"/>'])
def test_header_id_missing(inner: str) -> None:
    with pytest.raises(ValidationError) as info:
        cda.parse_header(cda.parse_cda(_minimal(inner)))
    assert info.value.code == "CDA_ID_MISSING"


def test_names_without_qualifier() -> None:
    data = _minimal(
        '<id root="1.2.3"/><recordTarget><patientRole><id root="1.2.250.1.213.1.4.8" extension="185057800608491"/>'
        "<patient><name><family>DOE</family><given>JOHN</given><given>PAUL</given></name>"
        '<birthTime value="198505171200"/><birthplace><place><addr><country>99109</country></addr></place>'
        "</birthplace></patient></patientRole></recordTarget>"
    )
    patient = cda.parse_header(cda.parse_cda(data)).patient
    assert (patient.birth_family, patient.first_given, patient.birth_given_list) == (
        "DOE",
        "JOHN",
        "JOHN PAUL",
    )
    assert patient.birth_date == "19850517"
    assert patient.birthplace_cog == "99109"
    assert patient.identifiers[0].type_code == "INS"


def test_nonxml_without_media_type_defaults_to_text_plain() -> None:
    data = _minimal('<id root="1.2.3"/><component><nonXMLBody><text>hello</text></nonXMLBody></component>')
    header = cda.parse_header(cda.parse_cda(data))
    assert (header.level, header.nonxml_media_type) == (1, "text/plain")


# --------------------------------------------------------------------------------------------
# XSD (needs ../shared/corpus)


def _xsd_dir() -> Path:
    if not XSD_DIR.is_dir():
        pytest.skip(reason=f"CDA XSD not available at {XSD_DIR}")
    return XSD_DIR


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["cr_imagerie_n1.xml", "cr_bio_n3.xml", "cr_imagerie_n1_rplc.xml"])
def test_fixtures_are_xsd_valid(name: str) -> None:
    assert cda.validate_xsd(cda.parse_cda(fixture(name)), _xsd_dir()) == []


@pytest.mark.corpus
def test_xsd_findings_and_cache() -> None:
    xsd_dir = _xsd_dir()
    root = cda.parse_cda(_minimal('<id root="1.2.3"/><bogus/>'))
    findings = cda.validate_xsd(root, xsd_dir)
    assert findings and all(f.code == "CDA_XSD_INVALID" and f.severity == "error" for f in findings)
    assert cda._schema(xsd_dir) is cda._schema(xsd_dir)
    assert cda.find_cda_xsd(xsd_dir).name == "CDA_extended.xsd"


def test_xsd_missing_entry_point(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        cda.validate_xsd(cda.parse_cda(_minimal('<id root="1.2.3"/>')), tmp_path)
