"""MTOM/XOP multipart serialisation and parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.dmp.mtom import ROOT_CID, MtomError, build_mtom, parse_mtom

BINARY = bytes(range(256)) * 4 + b"\r\n--not-a-boundary\r\n\r\n"


def test_round_trip_binary() -> None:
    envelope = '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">é</s:Envelope>'.encode()
    content_type, body = build_mtom(envelope, {"doc1@relais": BINARY, "empty@relais": b""}, action="urn:a")
    assert content_type.startswith("multipart/related;")
    assert 'type="application/xop+xml"' in content_type and f'start="<{ROOT_CID}>"' in content_type
    root, parts = parse_mtom(content_type, body)
    assert root == envelope
    assert parts == {"doc1@relais": BINARY, "empty@relais": b""}


@given(st.binary(), st.binary(max_size=200))
def test_round_trip_any_bytes(document: bytes, envelope: bytes) -> None:
    content_type, body = build_mtom(envelope, {"d@x": document})
    assert parse_mtom(content_type, body) == (envelope, {"d@x": document})


def test_deterministic() -> None:
    assert build_mtom(b"<e/>", {"a": b"1"}) == build_mtom(b"<e/>", {"a": b"1"})


def test_plain_soap_passes_through() -> None:
    assert parse_mtom("application/soap+xml; charset=UTF-8", b"<e/>") == (b"<e/>", {})


def test_foreign_producer_lf_and_root_not_first() -> None:
    body = (
        b"preamble\n--b1\nContent-ID: <att>\nContent-Type: application/octet-stream\n\nDATA\n"
        b"--b1\nContent-ID: <r@x>\nContent-Type: application/xop+xml\n\n<root/>\n--b1--\nepilogue"
    )
    root, parts = parse_mtom('multipart/related; boundary=b1; start="<r@x>"', body)
    assert root == b"<root/>" and parts == {"att": b"DATA"}


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("multipart/related", b"--x\r\n\r\n"),
        ("multipart/related; boundary=x", b"no parts here"),
        ("multipart/related; boundary=x", b"--x\r\nContent-ID: <a>\r\n\r\nunterminated"),
        ("multipart/related; boundary=x", b"--x\r\nContent-Transfer-Encoding: base64\r\n\r\nAA==\r\n--x--"),
    ],
)
def test_broken_bodies(content_type: str, body: bytes) -> None:
    with pytest.raises(MtomError):
        parse_mtom(content_type, body)
