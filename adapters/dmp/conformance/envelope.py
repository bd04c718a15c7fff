"""SOAP 1.2 envelope, WS-Addressing headers and the WS-Security header of a request.

References:
* SOAP 1.2 Part 1 §5.1 (Envelope, namespace ``http://www.w3.org/2003/05/soap-envelope``) and
  §5.4.7 (VersionMismatch for any other envelope namespace).
* IHE ITI TF-2x Appendix V §V.3.2: SOAP 1.2 only; WS-Addressing ``Action`` and ``MessageID``
  required on requests (``mustUnderstand`` on Action); the Action names the transaction.
* WS-Security 1.1 SOAP Message Security §5 (``wsse:Security`` header) and the DMP VIHF
  (volet "Transmission de documents CDA en HL7v2", ``input/pagecontent/mapping.md``,
  "Mapping VIHF": the SAML 2.0 assertion travels in that header).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from adapters.dmp.conformance.mime import MimePackage, cid_of
from adapters.dmp.conformance.names import NS
from adapters.dmp.conformance.violation import Rule, Violation
from adapters.dmp.conformance.xmldsig import SAFE_PARSER

__all__ = ["Envelope", "read_envelope", "inline_xop"]

MTOM_PACKAGE = Rule(
    "ENV-MTOM-01",
    "ITI-41 is MTOM/XOP: multipart/related, type application/xop+xml, root part application/xop+xml",
    "IHE ITI TF-2x Appendix V §V.3.6; ITI TF-2b §3.41.5.1 (MTOM required); W3C XOP 1.0 §3",
    "XDSRegistryError",
    fault="s:Sender",
)
XOP_INCLUDE = Rule(
    "ENV-XOP-01",
    "every xop:Include href names a MIME part of the package",
    "W3C XOP 1.0 §3.1 (xop:Include/@href is a cid: URL, RFC 2392)",
    "XDSMissingDocument",
)
SOAP12 = Rule(
    "ENV-SOAP-01",
    "the request is a SOAP 1.2 envelope",
    "SOAP 1.2 Part 1 §5.1, §5.4.7; IHE ITI TF-2x Appendix V §V.3.2.1",
    "XDSRegistryError",
    fault="s:VersionMismatch",
)
WSA_ACTION = Rule(
    "WSA-ACTION-01",
    "wsa:Action is present and names the transaction of the endpoint",
    "IHE ITI TF-2x Appendix V §V.3.2.2; ITI TF-2b §3.41.4.1.2 / §3.18.4.1.2; Metadata Update suppl. §3.57.4.1.2",
    "XDSRegistryError",
    fault="a:ActionNotSupported",
)
WSA_MESSAGE_ID = Rule(
    "WSA-MSGID-01",
    "wsa:MessageID is present",
    "IHE ITI TF-2x Appendix V §V.3.2.2; WS-Addressing 1.0 SOAP Binding §6.4.1",
    "XDSRegistryError",
    fault="a:MessageAddressingHeaderRequired",
)
NOT_ITI62 = Rule(
    "XDS-DEL-02",
    "a DMP deletion is not ITI-62 Delete Document Set (Remove Metadata): the DMP uses ITI-57",
    "ANS PDSM4DMP index.md ('RMD (ITI-62/86) non utilisé par le DMP'; TD3.3c = ITI-57)",
    "XDSRegistryError",
    fault="a:ActionNotSupported",
)
_ITI62 = "urn:ihe:iti:2010:DeleteDocumentSet"
SECURITY_HEADER = Rule(
    "SEC-VIHF-01",
    "a wsse:Security header carries the VIHF (one saml2:Assertion)",
    "volet CDA HL7v2 mapping.md 'Mapping VIHF'; WS-Security 1.1 §5; OASIS WSS SAML Token Profile 1.1 §3",
    "XDSRegistryError",
    fault="wsse:InvalidSecurity",
)


@dataclass
class Envelope:
    """What the transport layer of a request says; ``body`` is the first child of soap:Body."""

    root: etree._Element | None = None
    body: etree._Element | None = None
    action: str | None = None
    message_id: str | None = None
    assertion: etree._Element | None = None
    violations: list[Violation] = field(default_factory=list)


def read_envelope(package: MimePackage, expected_action: str, *, mtom_required: bool) -> Envelope:
    """Parse the root part and check the SOAP / WS-Addressing / WS-Security layer."""
    result = Envelope()
    if mtom_required and not _is_mtom(package):
        result.violations.append(
            MTOM_PACKAGE(f"body is {package.main_type or 'not multipart'}, not MTOM/XOP")
        )
        return result
    root = _soap12_envelope(package.root)
    if isinstance(root, Violation):
        result.violations.append(root)
        return result
    result.root = root
    body = root.find(f"{{{NS['s']}}}Body")
    if body is not None:
        result.body = next((c for c in body if isinstance(c.tag, str)), None)
    header = root.find(f"{{{NS['s']}}}Header")
    if header is not None:
        result.action = _header_text(header, f"{{{NS['wsa']}}}Action")
        result.message_id = _header_text(header, f"{{{NS['wsa']}}}MessageID")
        result.assertion, problems = _vihf_assertion(header)
        result.violations += problems
    result.violations += _addressing_checks(result, expected_action)
    if result.assertion is None and not result.violations:
        result.violations.append(SECURITY_HEADER("no saml2:Assertion in a wsse:Security header"))
    return result


def _is_mtom(package: MimePackage) -> bool:
    """ENV-MTOM-01: multipart/related; type=application/xop+xml; root part application/xop+xml (XOP §3)."""
    return (
        package.multipart
        and package.main_type == "multipart/related"
        and package.type_parameter.lower() == "application/xop+xml"
        and package.root_type == "application/xop+xml"
    )


def _soap12_envelope(data: bytes) -> etree._Element | Violation:
    """ENV-SOAP-01: the root part is well-formed XML whose root is a SOAP 1.2 Envelope (Part 1 §5.1)."""
    try:
        root = etree.fromstring(data, SAFE_PARSER)
    except etree.XMLSyntaxError as exc:
        return SOAP12(f"root part is not well-formed XML: {exc}")
    if root.tag != f"{{{NS['s']}}}Envelope":
        return SOAP12(f"root element is {root.tag}, not a SOAP 1.2 Envelope")
    return root


def _header_text(header: etree._Element, tag: str) -> str | None:
    element = header.find(tag)
    return (element.text or "").strip() if element is not None else None


def _vihf_assertion(header: etree._Element) -> tuple[etree._Element | None, list[Violation]]:
    """SEC-VIHF-01: the one saml2:Assertion of the wsse:Security header (WS-Security 1.1 §5)."""
    security = header.find(f"{{{NS['wsse']}}}Security")
    assertions = security.findall(f"{{{NS['saml']}}}Assertion") if security is not None else []
    if len(assertions) > 1:
        return None, [SECURITY_HEADER(f"{len(assertions)} assertions in wsse:Security")]
    return (assertions[0] if assertions else None), []


def _addressing_checks(envelope: Envelope, expected_action: str) -> list[Violation]:
    """XDS-DEL-02, WSA-ACTION-01, WSA-MSGID-01: the WS-Addressing headers (ITI TF-2x §V.3.2.2)."""
    found: list[Violation] = []
    if envelope.action == _ITI62:
        found.append(NOT_ITI62("ITI-62 DeleteDocumentSet received; delete with ITI-57 UpdateDocumentSet"))
    elif envelope.action != expected_action:
        found.append(WSA_ACTION(f"wsa:Action is {envelope.action!r}, expected {expected_action}"))
    if not envelope.message_id:
        found.append(WSA_MESSAGE_ID("no wsa:MessageID"))
    return found


def inline_xop(element: etree._Element, package: MimePackage) -> tuple[dict[str, bytes], list[Violation]]:
    """Documents of a ProvideAndRegister request by Document/@id, resolving xop:Include."""
    import base64
    import binascii

    documents: dict[str, bytes] = {}
    problems: list[Violation] = []
    for document in element.findall(f"{{{NS['xdsb']}}}Document"):
        doc_id = document.get("id", "")
        include = document.find(f"{{{NS['xop']}}}Include")
        if include is not None:
            cid = cid_of(include.get("href", ""))
            if cid not in package.parts:
                problems.append(XOP_INCLUDE(f"Document {doc_id}: no MIME part with Content-ID <{cid}>"))
                continue
            documents[doc_id] = package.parts[cid]
        else:
            try:
                documents[doc_id] = base64.b64decode("".join((document.text or "").split()), validate=True)
            except (binascii.Error, ValueError):
                problems.append(XOP_INCLUDE(f"Document {doc_id}: neither xop:Include nor base64 content"))
    return documents, problems
