"""SOAP 1.2 envelopes, registry responses and XDS error classification."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from adapters.dmp.soap import (
    ACTION_ITI41,
    GET_DOCUMENTS_QUERY,
    STATUS_FAILURE,
    QueryHit,
    RegistryError,
    build_envelope,
    build_get_documents_query,
    build_query_response,
    build_registry_response,
    build_soap_fault,
    is_retryable,
    parse_envelope,
    parse_query_response,
    parse_registry_response,
)

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "xds" / "examples" / "ihe"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"


def failure(*errors: tuple[str, str]) -> bytes:
    items = "".join(
        f'<rs:RegistryError errorCode="{c}" codeContext="ctx" '
        f'severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:{s}"/>'
        for c, s in errors
    )
    return (
        f'<rs:RegistryResponse xmlns:rs="{RS}" status="{STATUS_FAILURE}">'
        f"<rs:RegistryErrorList>{items}</rs:RegistryErrorList></rs:RegistryResponse>"
    ).encode()


@pytest.mark.corpus
def test_corpus_success_response() -> None:
    path = CORPUS / "ProvideAndRegisterDocumentSet-bResponse_SOAP.xml"
    if not path.exists():
        pytest.skip(reason="corpus XDS examples not available")
    data = path.read_bytes()
    message = parse_envelope(data)
    assert message.action == "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
    assert message.relates_to == "urn:uuid:6d296e90-e5dc-43d0-b455-7c1f3eb35d83"
    outcome = parse_registry_response(data)
    assert outcome.success and outcome.errors == ()


@pytest.mark.corpus
def test_corpus_request_envelope_headers() -> None:
    path = CORPUS / "ProvideAndRegisterDocumentSet-bRequest_SOAP.xml"
    if not path.exists():
        pytest.skip(reason="corpus XDS examples not available")
    message = parse_envelope(path.read_bytes())
    assert message.action == ACTION_ITI41
    assert (
        message.body is not None
        and etree.QName(message.body).localname == "ProvideAndRegisterDocumentSetRequest"
    )


def test_failure_parsing_and_classification() -> None:
    outcome = parse_registry_response(
        failure(("XDSDuplicateUniqueIdInRegistry", "Error"), ("XDSX", "Warning"))
    )
    assert not outcome.success and not outcome.retryable
    assert outcome.error_tuples == [
        ("XDSDuplicateUniqueIdInRegistry", "ctx", "error"),
        ("XDSX", "ctx", "warning"),
    ]
    busy = parse_registry_response(failure(("XDSRegistryBusy", "Error"), ("XDSRepositoryBusy", "Error")))
    assert busy.retryable
    mixed = parse_registry_response(
        failure(("XDSRegistryBusy", "Error"), ("XDSRegistryMetadataError", "Error"))
    )
    assert not mixed.retryable


@pytest.mark.parametrize(
    "code, retryable",
    [
        ("XDSRegistryBusy", True),
        ("XDSRepositoryBusy", True),
        ("XDSRegistryOutOfResources", True),
        ("XDSRegistryError", False),
        ("XDSRegistryMetadataError", False),
        ("XDSUnknownPatientId", False),
        ("SomethingNew", False),
    ],
)
def test_is_retryable(code: str, retryable: bool) -> None:
    assert is_retryable(code) is retryable


def test_round_trip_response_in_envelope() -> None:
    response = build_registry_response([RegistryError("XDSNonIdenticalHash", "bad", "error", "doc")])
    envelope = build_envelope(response, action="urn:x", message_id="urn:uuid:1", relates_to="urn:uuid:0")
    outcome = parse_registry_response(etree.tostring(envelope))
    assert not outcome.success
    assert outcome.errors[0].location == "doc"
    warning_only = build_registry_response([RegistryError("W", "", "warning")])
    assert parse_registry_response(warning_only).success


def test_envelope_headers_and_fault() -> None:
    body = etree.Element("{urn:x}Req")
    assertion = etree.Element("{urn:oasis:names:tc:SAML:2.0:assertion}Assertion", ID="_a")
    env = build_envelope(
        body, action=ACTION_ITI41, message_id="urn:uuid:42", to="http://dmp/", assertion=assertion
    )
    message = parse_envelope(etree.tostring(env))
    assert (message.action, message.message_id, message.to) == (ACTION_ITI41, "urn:uuid:42", "http://dmp/")
    assert message.assertion is not None and message.assertion.get("ID") == "_a"
    assert message.fault is None
    fault_env = build_envelope(
        build_soap_fault("s:Receiver", "boom", subcode="x:Busy"), action="urn:f", message_id="urn:uuid:1"
    )
    fault = parse_envelope(etree.tostring(fault_env)).fault
    assert fault is not None and (fault.code, fault.subcode, fault.reason) == ("s:Receiver", "x:Busy", "boom")


def test_not_soap12() -> None:
    with pytest.raises(ValueError):
        parse_envelope(b'<Envelope xmlns="http://schemas.xmlsoap.org/soap/envelope/"/>')
    with pytest.raises(ValueError):
        parse_envelope(b"not xml")


def test_stored_query_round_trip() -> None:
    request = build_get_documents_query(["1.2.3", "it's"])
    assert (
        request.find("{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}AdhocQuery").get("id")
        == GET_DOCUMENTS_QUERY
    )
    value = request.findtext(".//{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}Value")
    assert value == "('1.2.3','it''s')"
    leaf = build_query_response([QueryHit("urn:uuid:e1", "1.2.3")])
    outcome, hits = parse_query_response(etree.tostring(leaf))
    assert outcome.success and hits == [
        QueryHit("urn:uuid:e1", "1.2.3", "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved")
    ]
    refs = build_query_response([QueryHit("urn:uuid:e1")], return_type="ObjectRef")
    assert parse_query_response(refs)[1] == [QueryHit("urn:uuid:e1")]
