"""XML Signature verification set up for the simulator (lxml + cryptography).

Written from W3C "XML Signature Syntax and Processing" (2nd ed., 2008): §3.2 core
validation = reference validation (§3.2.1: dereference, transform, digest, compare) then
signature validation (§3.2.2: canonicalize SignedInfo with its CanonicalizationMethod and
check SignatureValue with the KeyInfo key). Transforms handled: enveloped signature
(§6.6.4), Canonical XML 1.0 with/without comments (§6.5.1), Exclusive C14N with the
InclusiveNamespaces PrefixList (W3C xml-exc-c14n §3). A same-document reference ``#id``
matches an ``ID``, ``Id`` or ``id`` attribute (SAML 2.0 Core §5.4.2 uses ``ID``; XAdES
uses ``Id``). Other URIs are resolved by the caller (the XAdES manifest's ``urn:oid:``
references name documents of the submission set).

Only a fixed list of algorithms is accepted; anything else is a verification failure,
never a silent pass.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from adapters.dmp.conformance.names import NS

__all__ = [
    "SAFE_PARSER",
    "ReferenceCheck",
    "SignatureCheck",
    "verify_signature",
    "trust_problems",
    "certificate_of",
    "digest",
]

DS = NS["ds"]
SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)

C14N10 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
C14N10_COMMENTS = C14N10 + "#WithComments"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
EXC_C14N_COMMENTS = EXC_C14N + "WithComments"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
_C14N = {
    C14N10: (False, False),
    C14N10_COMMENTS: (False, True),
    EXC_C14N: (True, False),
    EXC_C14N_COMMENTS: (True, True),
}
_DIGESTS: dict[str, Callable[[bytes], bytes]] = {
    "http://www.w3.org/2000/09/xmldsig#sha1": lambda b: hashlib.sha1(b).digest(),
    "http://www.w3.org/2001/04/xmlenc#sha256": lambda b: hashlib.sha256(b).digest(),
    "http://www.w3.org/2001/04/xmldsig-more#sha384": lambda b: hashlib.sha384(b).digest(),
    "http://www.w3.org/2001/04/xmlenc#sha512": lambda b: hashlib.sha512(b).digest(),
}
_SIGNATURES: dict[str, tuple[str, hashes.HashAlgorithm]] = {
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1": ("rsa", hashes.SHA1()),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": ("rsa", hashes.SHA256()),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": ("rsa", hashes.SHA384()),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": ("rsa", hashes.SHA512()),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": ("ec", hashes.SHA256()),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": ("ec", hashes.SHA384()),
}
_TRUST_TEXTS = (
    "signed with a certificate that is not the trusted one",
    "signing certificate outside its validity period",
)


@dataclass
class ReferenceCheck:
    """One ``ds:Reference`` and whether its digest matched."""

    uri: str
    type: str
    ok: bool
    reason: str = ""


@dataclass
class SignatureCheck:
    """Outcome of core validation; ``problems`` is empty when the signature is valid."""

    certificate: x509.Certificate | None = None
    problems: list[str] = field(default_factory=list)
    references: list[ReferenceCheck] = field(default_factory=list)
    signature_value_ok: bool = False

    @property
    def valid(self) -> bool:
        """True when SignedInfo verified and no problem was found."""
        return not self.problems and self.signature_value_ok


def digest(algorithm: str, data: bytes) -> bytes | None:
    """The digest of ``data`` with the XML-DSig ``algorithm`` URI, or None if unsupported."""
    function = _DIGESTS.get(algorithm)
    return function(data) if function else None


def certificate_of(signature: etree._Element) -> x509.Certificate | None:
    """The first X509Certificate of KeyInfo, or None."""
    node = signature.find(f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate")
    if node is None or not (node.text or "").strip():
        return None
    try:
        return x509.load_der_x509_certificate(base64.b64decode("".join((node.text or "").split())))
    except ValueError:
        return None


def _by_id(root: etree._Element, wanted: str) -> etree._Element | None:
    """The element carrying ``wanted`` as its ID; two of them is a wrapping attempt, refused."""
    found = [
        element
        for element in root.iter()
        if isinstance(element.tag, str)
        and wanted in (element.get("ID"), element.get("Id"), element.get("id"))
    ]
    if len(found) > 1:
        raise ValueError(f"Id {wanted} is carried by {len(found)} elements")
    return found[0] if found else None


@contextlib.contextmanager
def _detached(signature: etree._Element) -> Iterator[None]:
    """Temporarily take ``signature`` out of its tree, keeping the text around it (§6.6.4)."""
    parent = signature.getparent()
    if parent is None:
        yield
        return
    index = parent.index(signature)
    tail = signature.tail
    previous = signature.getprevious()
    saved_prev_tail = previous.tail if previous is not None else None
    saved_text = parent.text
    signature.tail = None
    parent.remove(signature)
    if tail:
        if previous is not None:
            previous.tail = (previous.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    try:
        yield
    finally:
        if previous is not None:
            previous.tail = saved_prev_tail
        else:
            parent.text = saved_text
        parent.insert(index, signature)
        signature.tail = tail


def _canonical(element: etree._Element, algorithm: str, prefixes: list[str] | None = None) -> bytes:
    exclusive, comments = _C14N[algorithm]
    return etree.tostring(
        element,
        method="c14n",
        exclusive=exclusive,
        with_comments=comments,
        inclusive_ns_prefixes=prefixes if exclusive and prefixes else None,
    )


def _transforms(reference: etree._Element) -> list[tuple[str, list[str]]]:
    found = []
    for transform in reference.findall(f"{{{DS}}}Transforms/{{{DS}}}Transform"):
        prefixes: list[str] = []
        inclusive = transform.find(f"{{{EXC_C14N}}}InclusiveNamespaces")
        if inclusive is not None:
            prefixes = [p if p != "#default" else "" for p in (inclusive.get("PrefixList") or "").split()]
        found.append((transform.get("Algorithm", ""), prefixes))
    return found


def _reference_octets(
    reference: etree._Element,
    signature: etree._Element,
    resolve: Callable[[str], bytes | None] | None,
) -> bytes:
    uri = reference.get("URI")
    transforms = _transforms(reference)
    unknown = [a for a, _ in transforms if a != ENVELOPED and a not in _C14N]
    if unknown:
        raise ValueError(f"unsupported transform {unknown[0]}")
    c14n = [(a, p) for a, p in transforms if a in _C14N]
    algorithm, prefixes = c14n[-1] if c14n else (C14N10, [])
    if uri is None or uri == "" or uri.startswith("#"):
        root = signature.getroottree().getroot()
        target = root if not uri else _by_id(root, uri[1:])
        if target is None:
            raise ValueError(f"no element with Id {uri[1:]}")
        if any(a == ENVELOPED for a, _ in transforms):
            with _detached(signature):
                return _canonical(target, algorithm, prefixes)
        # A same-document node-set is canonicalised even without an explicit transform (§4.3.3.2).
        return _canonical(target, algorithm, prefixes)
    if resolve is None:
        raise ValueError(f"external reference {uri} cannot be resolved here")
    data = resolve(uri)
    if data is None:
        raise ValueError(f"reference {uri} names nothing in the request")
    if c14n:
        document = etree.fromstring(data, SAFE_PARSER)
        return _canonical(document, algorithm, prefixes)
    return data


def check_references(
    container: etree._Element,
    signature: etree._Element,
    resolve: Callable[[str], bytes | None] | None = None,
) -> list[ReferenceCheck]:
    """Validate each ``ds:Reference`` child of ``container`` (SignedInfo or a ds:Manifest)."""
    checks = []
    for reference in container.findall(f"{{{DS}}}Reference"):
        uri = reference.get("URI", "")
        kind = reference.get("Type", "")
        method = reference.find(f"{{{DS}}}DigestMethod")
        value = reference.find(f"{{{DS}}}DigestValue")
        algorithm = method.get("Algorithm", "") if method is not None else ""
        if algorithm not in _DIGESTS:
            checks.append(ReferenceCheck(uri, kind, False, f"unsupported digest {algorithm or '(none)'}"))
            continue
        try:
            octets = _reference_octets(reference, signature, resolve)
        except (ValueError, etree.XMLSyntaxError) as exc:
            checks.append(ReferenceCheck(uri, kind, False, str(exc)))
            continue
        expected = "".join((value.text or "").split()) if value is not None else ""
        actual = base64.b64encode(_DIGESTS[algorithm](octets)).decode()
        ok = actual == expected
        checks.append(ReferenceCheck(uri, kind, ok, "" if ok else "digest differs"))
    return checks


def trust_problems(
    certificate: x509.Certificate,
    *,
    trusted: x509.Certificate | None,
    now: datetime | None,
    texts: tuple[str, str],
) -> list[str]:
    """What is wrong with the signing certificate, worded by the caller's rule.

    ``texts`` is (untrusted, expired): the first unless ``certificate`` is ``trusted``, the second
    unless ``now`` is within its validity. Without ``trusted`` (or ``now``) that half is not checked.
    """
    untrusted, expired = texts
    problems: list[str] = []
    if trusted is not None and certificate.public_bytes(Encoding.DER) != trusted.public_bytes(Encoding.DER):
        problems.append(untrusted)
    if now is not None and not (certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc):
        problems.append(expired)
    return problems


def verify_signature(
    signature: etree._Element,
    *,
    resolve: Callable[[str], bytes | None] | None = None,
    trusted: x509.Certificate | None = None,
    now: datetime | None = None,
) -> SignatureCheck:
    """Core validation of ``signature`` (a ``ds:Signature`` element) with its KeyInfo certificate.

    With ``trusted``, the KeyInfo certificate must be that certificate; with ``now``, it must be
    within its validity period.
    """
    check = SignatureCheck()
    signed_info = signature.find(f"{{{DS}}}SignedInfo")
    if signed_info is None:
        check.problems.append("no ds:SignedInfo")
        return check
    check.certificate = certificate_of(signature)
    if check.certificate is None:
        check.problems.append("no readable X509Certificate in ds:KeyInfo")
        return check
    check.problems += trust_problems(check.certificate, trusted=trusted, now=now, texts=_TRUST_TEXTS)
    # Reference validation (§3.2.1), then signature validation of SignedInfo (§3.2.2).
    check.references = check_references(signed_info, signature, resolve)
    if not check.references:
        check.problems.append("ds:SignedInfo has no ds:Reference")
    check.problems += [f"reference {r.uri or '(document)'}: {r.reason}" for r in check.references if not r.ok]
    problem = _signature_value_problem(signed_info, signature, check.certificate)
    if problem:
        check.problems.append(problem)
        return check
    check.signature_value_ok = True
    return check


def _signature_value_problem(
    signed_info: etree._Element, signature: etree._Element, certificate: x509.Certificate
) -> str | None:
    """Why SignatureValue does not verify over the canonical SignedInfo (§3.2.2), or None when it does."""
    method = signed_info.find(f"{{{DS}}}CanonicalizationMethod")
    c14n = method.get("Algorithm", "") if method is not None else ""
    sig_method = signed_info.find(f"{{{DS}}}SignatureMethod")
    sig_algorithm = sig_method.get("Algorithm", "") if sig_method is not None else ""
    if c14n not in _C14N:
        return f"unsupported CanonicalizationMethod {c14n or '(none)'}"
    if sig_algorithm not in _SIGNATURES:
        return f"unsupported SignatureMethod {sig_algorithm or '(none)'}"
    prefixes: list[str] = []
    inclusive = method.find(f"{{{EXC_C14N}}}InclusiveNamespaces") if method is not None else None
    if inclusive is not None:
        prefixes = [p if p != "#default" else "" for p in (inclusive.get("PrefixList") or "").split()]
    octets = _canonical(signed_info, c14n, prefixes)
    value_node = signature.find(f"{{{DS}}}SignatureValue")
    try:
        value = base64.b64decode("".join((value_node.text or "").split()) if value_node is not None else "")
    except ValueError:
        return "SignatureValue is not base64"
    kind, hash_algorithm = _SIGNATURES[sig_algorithm]
    return _public_key_problem(certificate.public_key(), kind, hash_algorithm, value, octets)


def _public_key_problem(
    key: object, kind: str, hash_algorithm: hashes.HashAlgorithm, value: bytes, octets: bytes
) -> str | None:
    """Verify ``value`` over ``octets``: PKCS#1 v1.5 for RSA, r||s (the XML-DSig ECDSA form) for ECDSA."""
    try:
        if kind == "rsa" and isinstance(key, rsa.RSAPublicKey):
            key.verify(value, octets, padding.PKCS1v15(), hash_algorithm)
        elif kind == "ec" and isinstance(key, ec.EllipticCurvePublicKey):
            half = len(value) // 2
            der = encode_dss_signature(
                int.from_bytes(value[:half], "big"), int.from_bytes(value[half:], "big")
            )
            key.verify(der, octets, ec.ECDSA(hash_algorithm))
        else:
            return "SignatureMethod does not match the certificate's key type"
    except InvalidSignature:
        return "SignatureValue does not verify"
    return None
