"""Building blocks of the DMP conformance checker: MIME package, XML-DSig verification, identifiers."""

from __future__ import annotations

import pytest
from cryptography import x509
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod, XMLSigner, methods

from adapters.dmp.conformance import identifiers as ids
from adapters.dmp.conformance.mime import MimeError, read_body
from adapters.dmp.conformance.xmldsig import verify_signature
from adapters.dmp.testing import TEST_CERT, TEST_KEY
from tests.dmp_request_builder import mtom

BINARY = b"%PDF-1.4\r\n\x00\xff\xfe\r\rline\nend\r\n"


@pytest.mark.parametrize("crlf", ["\r\n", "\n"])
def test_mime_parts_come_back_byte_exact(crlf: str) -> None:
    content_type, body = mtom(b"<s:Envelope xmlns:s='x'/>", {"doc@test": BINARY}, crlf=crlf)
    package = read_body(content_type, body)
    assert package.multipart and package.root_type == "application/xop+xml"
    assert package.type_parameter == "application/xop+xml"
    assert package.root == b"<s:Envelope xmlns:s='x'/>"
    assert package.parts["doc@test"] == BINARY


def test_mime_without_start_takes_the_first_part() -> None:
    content_type, body = mtom(b"<root/>", {"a@test": b"A"})
    package = read_body(content_type.replace('start="<root@test>"; ', ""), body)
    assert package.root == b"<root/>" and package.parts["a@test"] == b"A"


def test_mime_start_naming_no_part_is_refused() -> None:
    content_type, body = mtom(b"<root/>", {})
    with pytest.raises(MimeError):
        read_body(content_type.replace("root@test", "other@test"), body)


def test_mime_plain_soap_is_one_part() -> None:
    package = read_body("application/soap+xml; charset=UTF-8", b"<e/>")
    assert not package.multipart and package.root == b"<e/>"


def _signed(c14n: CanonicalizationMethod, algorithm: SignatureMethod, digest: DigestAlgorithm) -> etree._Element:
    document = etree.fromstring(
        b'<outer xmlns="urn:outer" xmlns:o="urn:other"><inner ID="_x1"><o:v>1</o:v>'
        b'<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#" Id="placeholder"/></inner></outer>'
    )
    inner = document[0]
    signed = XMLSigner(method=methods.enveloped, signature_algorithm=algorithm, digest_algorithm=digest,
                       c14n_algorithm=c14n).sign(
        inner, key=TEST_KEY.read_bytes(), cert=TEST_CERT.read_text(), reference_uri="#_x1", id_attribute="ID"
    )
    # Embedded after signing, as a VIHF is put in a SOAP header.
    document.replace(inner, signed)
    return document


@pytest.mark.parametrize(
    "c14n",
    [CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0, CanonicalizationMethod.CANONICAL_XML_1_0],
)
def test_signxml_signatures_verify_and_tampering_is_seen(c14n: CanonicalizationMethod) -> None:
    document = _signed(c14n, SignatureMethod.RSA_SHA256, DigestAlgorithm.SHA256)
    signature = next(document.iter("{http://www.w3.org/2000/09/xmldsig#}Signature"))
    trusted = x509.load_pem_x509_certificate(TEST_CERT.read_bytes())
    check = verify_signature(signature, trusted=trusted)
    assert check.valid, check.problems
    assert [r.uri for r in check.references] == ["#_x1"]
    next(document.iter("{urn:other}v")).text = "2"
    assert not verify_signature(signature).valid


def test_unsupported_algorithms_never_pass() -> None:
    document = _signed(CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0, SignatureMethod.RSA_SHA256,
                       DigestAlgorithm.SHA256)
    method = next(document.iter("{http://www.w3.org/2000/09/xmldsig#}SignatureMethod"))
    method.set("Algorithm", "http://www.w3.org/2000/09/xmldsig#hmac-sha1")
    check = verify_signature(next(document.iter("{http://www.w3.org/2000/09/xmldsig#}Signature")))
    assert not check.valid and any("unsupported SignatureMethod" in p for p in check.problems)


@pytest.mark.parametrize(
    ("cx", "ok"),
    [
        ("279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH", True),
        ("253072A07300443^^^&1.2.250.1.213.1.4.8&ISO^NH", True),
        ("253072B07300470^^^&1.2.250.1.213.1.4.8&ISO^NH", True),
        ("188079935012311^^^&1.2.250.1.213.1.4.9&ISO^NH", True),
        ("276037510669380^^^&1.2.250.1.213.1.4.8&ISO^NH", False),  # APN example: wrong key
        ("279035121518989^^^&1.2.250.1.213.1.4.5&ISO^NH", False),  # not an INS OID
        ("279035121518989^^^&1.2.250.1.213.1.4.8&ISO^INS", False),  # v2 type, not XDS NH
        ("27903512151898^^^&1.2.250.1.213.1.4.8&ISO^NH", False),
    ],
)
def test_ins_in_xds_form(cx: str, ok: bool) -> None:
    assert (ids.ins_problem(cx) is None) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [("1120456789", True), ("12C0456789", False), ("12A1234567", True), ("30001798500017", False),
     ("330001798500017", True), ("300017985", False), ("10000000000000", False), ("9123", False)],
)
def test_struct_id_nat(value: str, ok: bool) -> None:
    assert (ids.struct_id_problem(value) is None) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [("2024", True), ("20240315", True), ("20240315143000", True), ("20240315143000+0100", False),
     ("2024-03-15T14:30:00Z", False), ("202403151430001", False)],
)
def test_dtm(value: str, ok: bool) -> None:
    assert (ids.dtm_problem(value) is None) is ok
