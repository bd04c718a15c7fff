"""SOAP 1.2 envelopes for ITI-41 / ITI-18, registry responses, faults and error classes (pure).

Both sides use this module: the client builds requests and reads responses, the
simulator reads requests and builds responses, so the wire format is written once.

Error classification (``is_retryable``): the registry / repository "busy" and "out of
resources" codes mean *come back later*; every other XDS error is about the content and
is permanent. Unknown codes are permanent too: retrying a refusal we do not understand
would only repeat it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lxml import etree

from adapters.dmp.ebrim import QUERY_NS, RIM_NS, RS_NS

__all__ = [
    "SOAP12_NS",
    "WSA_NS",
    "WSSE_NS",
    "ACTION_ITI41",
    "ACTION_ITI41_RESPONSE",
    "ACTION_ITI18",
    "ACTION_ITI18_RESPONSE",
    "ACTION_ITI57",
    "ACTION_ITI57_RESPONSE",
    "GET_DOCUMENTS_QUERY",
    "FIND_DOCUMENTS_QUERY",
    "STATUS_SUCCESS",
    "STATUS_FAILURE",
    "STATUS_PARTIAL",
    "RETRYABLE_CODES",
    "RegistryError",
    "RegistryOutcome",
    "QueryHit",
    "SoapFault",
    "SoapMessage",
    "build_envelope",
    "parse_envelope",
    "parse_registry_response",
    "build_registry_response",
    "build_soap_fault",
    "is_retryable",
    "build_get_documents_query",
    "build_query_response",
    "parse_query_response",
]

SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
WSA_NS = "http://www.w3.org/2005/08/addressing"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"

ACTION_ITI41 = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ACTION_ITI41_RESPONSE = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
ACTION_ITI18 = "urn:ihe:iti:2007:RegistryStoredQuery"
ACTION_ITI18_RESPONSE = "urn:ihe:iti:2007:RegistryStoredQueryResponse"
# IHE ITI TF-2b §3.57.5 (Update Document Set, WS-Addressing actions).
ACTION_ITI57 = "urn:ihe:iti:2010:UpdateDocumentSet"
ACTION_ITI57_RESPONSE = "urn:ihe:iti:2010:UpdateDocumentSetResponse"
GET_DOCUMENTS_QUERY = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
FIND_DOCUMENTS_QUERY = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"

STATUS_SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
STATUS_FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
STATUS_PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
SEVERITY_ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
SEVERITY_WARNING = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"

RETRYABLE_CODES = frozenset(
    {"XDSRegistryBusy", "XDSRepositoryBusy", "XDSRegistryOutOfResources", "XDSRepositoryOutOfResources"}
)

_SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


@dataclass(frozen=True, slots=True)
class RegistryError:
    """One ``rs:RegistryError``; ``severity`` is ``error`` or ``warning``."""

    code: str
    context: str = ""
    severity: str = "error"
    location: str = ""

    def as_tuple(self) -> tuple[str, str, str]:
        return (self.code, self.context, self.severity)


@dataclass(frozen=True)
class RegistryOutcome:
    """What an ``rs:RegistryResponse`` (or AdhocQueryResponse) said."""

    success: bool
    status: str
    errors: tuple[RegistryError, ...] = ()

    @property
    def error_tuples(self) -> list[tuple[str, str, str]]:
        return [e.as_tuple() for e in self.errors]

    @property
    def blocking(self) -> tuple[RegistryError, ...]:
        return tuple(e for e in self.errors if e.severity == "error")

    @property
    def retryable(self) -> bool:
        """True when every blocking error is a "come back later" code."""
        blocking = self.blocking
        return bool(blocking) and all(is_retryable(e.code) for e in blocking)


@dataclass(frozen=True, slots=True)
class SoapFault:
    """A SOAP 1.2 fault: ``code`` is the env:Code value (``env:Receiver``...)."""

    code: str
    reason: str
    subcode: str | None = None


@dataclass(frozen=True)
class SoapMessage:
    """A parsed envelope: WS-Addressing headers, the first body child and any VIHF."""

    action: str | None
    message_id: str | None
    relates_to: str | None
    to: str | None
    body: etree._Element | None
    assertion: etree._Element | None
    fault: SoapFault | None
    header: etree._Element | None = None
    extra: dict[str, str] = field(default_factory=dict)


def is_retryable(code: str) -> bool:
    """Whether an XDS registry error code means "retry later" rather than "fix the content"."""
    return code in RETRYABLE_CODES


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def build_envelope(
    body: etree._Element,
    *,
    action: str,
    message_id: str,
    to: str | None = None,
    assertion: etree._Element | None = None,
    relates_to: str | None = None,
) -> etree._Element:
    """SOAP 1.2 envelope with WS-Addressing headers and, when given, a WS-Security VIHF.

    ``message_id`` is injected (``urn:uuid:…``); for a response pass ``relates_to``.
    The assertion is appended as-is: it is already signed, so it must not be rebuilt.
    """
    env = etree.Element(_q(SOAP12_NS, "Envelope"), nsmap={"s": SOAP12_NS, "a": WSA_NS})
    header = etree.SubElement(env, _q(SOAP12_NS, "Header"))
    action_el = etree.SubElement(header, _q(WSA_NS, "Action"))
    action_el.set(_q(SOAP12_NS, "mustUnderstand"), "1")
    action_el.text = action
    if relates_to is None:
        etree.SubElement(header, _q(WSA_NS, "MessageID")).text = message_id
        reply = etree.SubElement(header, _q(WSA_NS, "ReplyTo"))
        etree.SubElement(reply, _q(WSA_NS, "Address")).text = ANONYMOUS
    else:
        etree.SubElement(header, _q(WSA_NS, "MessageID")).text = message_id
        etree.SubElement(header, _q(WSA_NS, "RelatesTo")).text = relates_to
    if to:
        to_el = etree.SubElement(header, _q(WSA_NS, "To"))
        to_el.set(_q(SOAP12_NS, "mustUnderstand"), "1")
        to_el.text = to
    if assertion is not None:
        security = etree.SubElement(header, _q(WSSE_NS, "Security"), nsmap={"wsse": WSSE_NS})
        security.set(_q(SOAP12_NS, "mustUnderstand"), "1")
        security.append(assertion)
    etree.SubElement(env, _q(SOAP12_NS, "Body")).append(body)
    return env


def _text(parent: etree._Element | None, path: str) -> str | None:
    if parent is None:
        return None
    found = parent.find(path)
    return found.text.strip() if found is not None and found.text else None


def parse_envelope(data: bytes) -> SoapMessage:
    """Parse a SOAP 1.2 envelope. Raises ``ValueError`` when it is not one."""
    try:
        root = etree.fromstring(data, _SAFE_PARSER)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"not XML: {exc}") from exc
    if root.tag != _q(SOAP12_NS, "Envelope"):
        raise ValueError(f"not a SOAP 1.2 envelope: {root.tag}")
    header = root.find(_q(SOAP12_NS, "Header"))
    body = root.find(_q(SOAP12_NS, "Body"))
    first = None
    if body is not None:
        first = next((c for c in body if isinstance(c.tag, str)), None)
    fault = None
    if first is not None and first.tag == _q(SOAP12_NS, "Fault"):
        fault = SoapFault(
            code=_text(first, f"{{{SOAP12_NS}}}Code/{{{SOAP12_NS}}}Value") or "",
            subcode=_text(first, f"{{{SOAP12_NS}}}Code/{{{SOAP12_NS}}}Subcode/{{{SOAP12_NS}}}Value"),
            reason=_text(first, f"{{{SOAP12_NS}}}Reason/{{{SOAP12_NS}}}Text") or "",
        )
    assertion = None
    if header is not None:
        assertion = header.find(f"{{{WSSE_NS}}}Security/{{urn:oasis:names:tc:SAML:2.0:assertion}}Assertion")
    return SoapMessage(
        action=_text(header, _q(WSA_NS, "Action")),
        message_id=_text(header, _q(WSA_NS, "MessageID")),
        relates_to=_text(header, _q(WSA_NS, "RelatesTo")),
        to=_text(header, _q(WSA_NS, "To")),
        body=first,
        assertion=assertion,
        fault=fault,
        header=header,
    )


def _severity(value: str | None) -> str:
    return "warning" if value and value.endswith("Warning") else "error"


def _errors(element: etree._Element) -> tuple[RegistryError, ...]:
    return tuple(
        RegistryError(
            code=err.get("errorCode", ""),
            context=err.get("codeContext", ""),
            severity=_severity(err.get("severity")),
            location=err.get("location", ""),
        )
        for err in element.iter(_q(RS_NS, "RegistryError"))
    )


def parse_registry_response(xml: bytes | etree._Element) -> RegistryOutcome:
    """Read an ``rs:RegistryResponse`` (bare or inside a SOAP envelope).

    Success and PartialSuccess are successes (warnings kept); anything else is a failure.
    Raises ``ValueError`` when no RegistryResponse is found.
    """
    root = etree.fromstring(xml, _SAFE_PARSER) if isinstance(xml, bytes) else xml
    response = (
        root
        if root.tag == _q(RS_NS, "RegistryResponse")
        else next(root.iter(_q(RS_NS, "RegistryResponse")), None)
    )
    if response is None:
        response = (
            root
            if root.tag == _q(QUERY_NS, "AdhocQueryResponse")
            else next(root.iter(_q(QUERY_NS, "AdhocQueryResponse")), None)
        )
    if response is None:
        raise ValueError("no RegistryResponse in the message")
    status = response.get("status", "")
    success = status in (STATUS_SUCCESS, STATUS_PARTIAL)
    errors = _errors(response)
    if success and any(e.severity == "error" for e in errors) and status == STATUS_SUCCESS:
        # Success with blocking errors is contradictory; trust the errors.
        success = False
    return RegistryOutcome(success=success, status=status, errors=errors)


def _error_list(parent: etree._Element, errors: Sequence[RegistryError]) -> None:
    if not errors:
        return
    error_list = etree.SubElement(parent, _q(RS_NS, "RegistryErrorList"))
    for err in errors:
        el = etree.SubElement(
            error_list,
            _q(RS_NS, "RegistryError"),
            errorCode=err.code,
            codeContext=err.context,
            severity=SEVERITY_WARNING if err.severity == "warning" else SEVERITY_ERROR,
        )
        if err.location:
            el.set("location", err.location)


def build_registry_response(errors: Sequence[RegistryError] = ()) -> etree._Element:
    """``rs:RegistryResponse``: Success without blocking errors, else Failure."""
    status = STATUS_FAILURE if any(e.severity == "error" for e in errors) else STATUS_SUCCESS
    response = etree.Element(_q(RS_NS, "RegistryResponse"), nsmap={"rs": RS_NS}, status=status)
    _error_list(response, errors)
    return response


def build_soap_fault(code: str, reason: str, *, subcode: str | None = None) -> etree._Element:
    """A SOAP 1.2 ``env:Fault`` element (``code`` like ``s:Receiver``)."""
    fault = etree.Element(_q(SOAP12_NS, "Fault"), nsmap={"s": SOAP12_NS})
    code_el = etree.SubElement(fault, _q(SOAP12_NS, "Code"))
    etree.SubElement(code_el, _q(SOAP12_NS, "Value")).text = code
    if subcode:
        sub = etree.SubElement(code_el, _q(SOAP12_NS, "Subcode"))
        etree.SubElement(sub, _q(SOAP12_NS, "Value")).text = subcode
    reason_el = etree.SubElement(fault, _q(SOAP12_NS, "Reason"))
    text = etree.SubElement(reason_el, _q(SOAP12_NS, "Text"))
    text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    text.text = reason
    return fault


# -- ITI-18 registry stored query ---------------------------------------------------------


def _query_value(values: Iterable[str]) -> str:
    """Stored-query list syntax: ``('a','b')`` with quotes doubled inside values."""
    return "(" + ",".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


def build_get_documents_query(unique_ids: Sequence[str], *, return_type: str = "LeafClass") -> etree._Element:
    """``query:AdhocQueryRequest`` for GetDocuments by ``$XDSDocumentEntryUniqueId``."""
    request = etree.Element(_q(QUERY_NS, "AdhocQueryRequest"), nsmap={"query": QUERY_NS, "rim": RIM_NS})
    etree.SubElement(
        request, _q(QUERY_NS, "ResponseOption"), returnComposedObjects="true", returnType=return_type
    )
    query = etree.SubElement(request, _q(RIM_NS, "AdhocQuery"), id=GET_DOCUMENTS_QUERY)
    slot = etree.SubElement(query, _q(RIM_NS, "Slot"), name="$XDSDocumentEntryUniqueId")
    etree.SubElement(
        etree.SubElement(slot, _q(RIM_NS, "ValueList")), _q(RIM_NS, "Value")
    ).text = _query_value(unique_ids)
    return request


@dataclass(frozen=True)
class QueryHit:
    """One document entry found by a stored query (``unique_id`` only with LeafClass)."""

    entry_uuid: str
    unique_id: str | None = None
    status: str | None = None


def build_query_response(
    hits: Sequence[QueryHit], *, return_type: str = "LeafClass", errors: Sequence[RegistryError] = ()
) -> etree._Element:
    """``query:AdhocQueryResponse`` with ExtrinsicObjects (LeafClass) or ObjectRefs."""
    status = STATUS_FAILURE if any(e.severity == "error" for e in errors) else STATUS_SUCCESS
    response = etree.Element(
        _q(QUERY_NS, "AdhocQueryResponse"),
        nsmap={"query": QUERY_NS, "rim": RIM_NS, "rs": RS_NS},
        status=status,
    )
    _error_list(response, errors)
    objects = etree.SubElement(response, _q(RIM_NS, "RegistryObjectList"))
    for hit in hits:
        if return_type == "ObjectRef":
            etree.SubElement(objects, _q(RIM_NS, "ObjectRef"), id=hit.entry_uuid)
            continue
        eo = etree.SubElement(
            objects,
            _q(RIM_NS, "ExtrinsicObject"),
            id=hit.entry_uuid,
            mimeType="text/xml",
            objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1",
            status=hit.status or "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved",
        )
        if hit.unique_id:
            etree.SubElement(
                eo,
                _q(RIM_NS, "ExternalIdentifier"),
                id=f"{hit.entry_uuid}-uid",
                registryObject=hit.entry_uuid,
                identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab",
                value=hit.unique_id,
            )
    return response


def parse_query_response(xml: bytes | etree._Element) -> tuple[RegistryOutcome, list[QueryHit]]:
    """Read an ``AdhocQueryResponse`` (bare or in an envelope): outcome and entries found."""
    root = etree.fromstring(xml, _SAFE_PARSER) if isinstance(xml, bytes) else xml
    response = (
        root
        if root.tag == _q(QUERY_NS, "AdhocQueryResponse")
        else next(root.iter(_q(QUERY_NS, "AdhocQueryResponse")), None)
    )
    if response is None:
        raise ValueError("no AdhocQueryResponse in the message")
    outcome = parse_registry_response(response)
    hits: list[QueryHit] = []
    objects = response.find(_q(RIM_NS, "RegistryObjectList"))
    for obj in objects if objects is not None else ():
        if obj.tag == _q(RIM_NS, "ObjectRef"):
            hits.append(QueryHit(entry_uuid=obj.get("id", "")))
        elif obj.tag == _q(RIM_NS, "ExtrinsicObject"):
            unique_id = None
            for ei in obj.iter(_q(RIM_NS, "ExternalIdentifier")):
                if ei.get("identificationScheme") == "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab":
                    unique_id = ei.get("value")
            hits.append(QueryHit(entry_uuid=obj.get("id", ""), unique_id=unique_id, status=obj.get("status")))
    return outcome, hits
