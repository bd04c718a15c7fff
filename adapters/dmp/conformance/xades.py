"""The XAdES signature of the submission set (DMP TD2.1 / TD2.2).

What the sources say:
* ANS PDSM4DMP IG (ansforge/IG-FHIR-PDSM4DMP-EEDS ``input/pagecontent/transaction_td2.md``):
  the documents are "transmis au système DMP sous la forme d'un lot de soumission XDS signé
  (XAdES)"; the LPS "constitue un lot de soumission XDS et signe ce lot (XAdES)".
* IHE DSG (ITI TF-3 §5.5, formerly DSIG) and its DMP use: the signature is itself a document
  of the submission set, a DocumentEntry with classCode ``urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1``
  "Digital Signature" (codingScheme URN; in JDV_J57), typeCode ``E1762`` "Full Document"
  (ASTM; in JDV_J66), formatCode ``http://www.w3.org/2000/09/xmldsig#`` "Default Signature
  Style" (URN; in JDV_J60), mimeType text/xml, linked to the SubmissionSet by a
  ``urn:ihe:iti:2007:AssociationType:signs`` association (signature entry → SubmissionSet).
* The XML itself (IHE DSG; ANS DRIMbox ansforge/DRIM-M_DRIMbox
  ``Backend/src/main/java/com/bcom/drimbox/dmp/utils/XadesSign.java``, a client of the real
  DMP): a detached ``ds:Signature`` whose SignedInfo references a ``ds:Manifest`` (Type
  ``http://www.w3.org/2000/09/xmldsig#Manifest``) and the XAdES ``SignedProperties``
  (Type ``http://uri.etsi.org/01903/v1.1.1#SignedProperties``); the Manifest has one
  Reference ``urn:oid:<SubmissionSet.uniqueId>`` and one ``urn:oid:<DocumentEntry.uniqueId>``
  per document with the document's digest; QualifyingProperties/SignedProperties carry
  SigningTime and SigningCertificate (ETSI TS 101 903). XAdES namespaces v1.1.1 (DRIMbox)
  and v1.3.2 (current ETSI) are both accepted.
"""

from __future__ import annotations

import base64
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from adapters.dmp.conformance.names import ASSOC, DE, NS, SS
from adapters.dmp.conformance.registry_objects import Metadata, RegistryObject
from adapters.dmp.conformance.violation import Rule, Violation
from adapters.dmp.conformance.xmldsig import (
    SAFE_PARSER,
    SignatureCheck,
    check_references,
    digest,
    trust_problems,
    verify_signature,
)

__all__ = ["signature_entries", "check_xades", "SIGNATURE_CLASS"]

SIGNATURE_CLASS = "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1"
_PDSM4DMP = "ANS PDSM4DMP input/pagecontent/transaction_td2.md (lot de soumission signé XAdES)"
_DSG = "IHE ITI TF-3 §5.5 (DSG submission-set signature); ansforge/DRIM-M_DRIMbox dmp/utils/XadesSign.java"

PRESENT = Rule(
    "XADES-ENTRY-01",
    "the submission set contains a signature DocumentEntry (class Digital Signature, type E1762, "
    "format xmldsig#, text/xml) with its document",
    f"{_PDSM4DMP}; {_DSG}; JDV_J57/J60/J66",
)
SIGNS = Rule(
    "XADES-ASSOC-01",
    "a 'signs' association goes from the signature entry to the SubmissionSet",
    f"{_DSG} (urn:ihe:iti:2007:AssociationType:signs)",
)
VERIFIES = Rule(
    "XADES-SIG-01",
    "the signature document is a ds:Signature whose SignedInfo verifies with its KeyInfo certificate",
    f"{_PDSM4DMP}; W3C XML-DSig §3.2",
)
SHAPE = Rule(
    "XADES-REF-01",
    "SignedInfo references the ds:Manifest and the XAdES SignedProperties",
    f"{_DSG}; ETSI TS 101 903 §6.2 (SignedProperties referenced from SignedInfo)",
)
MANIFEST = Rule(
    "XADES-MANIFEST-01",
    "the Manifest references urn:oid:<SubmissionSet.uniqueId> and every document by urn:oid:<uniqueId> "
    "with its digest",
    f"{_DSG}",
)
PROPERTIES = Rule(
    "XADES-PROPS-01",
    "SignedProperties carry SigningTime and a SigningCertificate digest of the KeyInfo certificate",
    "ETSI TS 101 903 §7.2.1-§7.2.2 (XAdES-BES); " + _DSG,
)
CERTIFICATE = Rule(
    "XADES-CERT-01",
    "the submission set is signed with the structure's cachet certificate (trusted, within validity)",
    "issue #9 / volet mapping.md (same cachet certificate as the VIHF); " + _PDSM4DMP,
)

_XADES = (NS["xades111"], NS["xades132"])
_MANIFEST_TYPE = "http://www.w3.org/2000/09/xmldsig#Manifest"
# XADES-CERT-01: the structure's cachet certificate (the VIHF's), used within its validity.
_TRUST_TEXTS = (
    "signed with a certificate that is not the trusted cachet certificate",
    "signing certificate outside its validity period",
)


def signature_entries(metadata: Metadata) -> list[RegistryObject]:
    """DocumentEntries whose classCode is 'Digital Signature'."""
    return [
        e for e in metadata.entries if any(c.code == SIGNATURE_CLASS for c in e.codes.get(DE.CLASS_CODE, []))
    ]


def _find_properties(signature: etree._Element) -> etree._Element | None:
    for ns in _XADES:
        found = signature.find(f".//{{{ns}}}SignedProperties")
        if found is not None:
            return found
    return None


def _signed_property_checks(properties: etree._Element, certificate: x509.Certificate) -> list[str]:
    ns = etree.QName(properties).namespace
    problems = []
    if properties.find(f".//{{{ns}}}SigningTime") is None:
        problems.append("no SigningTime")
    # SigningCertificate (TS 101 903) or SigningCertificateV2 (EN 319 132-1 §5.2.2)
    digests = properties.findall(f".//{{{ns}}}SigningCertificate//{{{ns}}}CertDigest") + properties.findall(
        f".//{{{ns}}}SigningCertificateV2//{{{ns}}}CertDigest"
    )
    der = certificate.public_bytes(Encoding.DER)
    matched = False
    for cert_digest in digests:
        method = cert_digest.find(f"{{{NS['ds']}}}DigestMethod")
        if method is None:
            method = cert_digest.find(f"{{{ns}}}DigestMethod")
        value = cert_digest.find(f"{{{NS['ds']}}}DigestValue")
        if value is None:
            value = cert_digest.find(f"{{{ns}}}DigestValue")
        if method is None or value is None:
            continue
        computed = digest(method.get("Algorithm", ""), der)
        if computed is not None and base64.b64encode(computed).decode() == "".join(
            (value.text or "").split()
        ):
            matched = True
    if not matched:
        problems.append("no SigningCertificate/CertDigest matches the KeyInfo certificate")
    return problems


def check_xades(
    metadata: Metadata,
    documents: dict[str, bytes],
    *,
    trusted: x509.Certificate | None,
    now: datetime | None,
) -> tuple[list[Violation], bool | None]:
    """Rules on the submission-set signature; also returns whether it verified (None: absent)."""
    ss = metadata.submission_set
    entries = signature_entries(metadata)
    if not entries:
        return [PRESENT("no signature DocumentEntry: the submission set is not XAdES-signed")], None
    entry = entries[0]
    found = _entry_checks(entry) + _signs_checks(metadata, entry, ss)
    data = documents.get(entry.id)
    if data is None:
        found.append(PRESENT(f"no document for the signature entry {entry.id}"))
        return found, False
    try:
        signature = etree.fromstring(data, SAFE_PARSER)
    except etree.XMLSyntaxError as exc:
        return found + [VERIFIES(f"signature document is not XML: {exc}")], False
    if signature.tag != f"{{{NS['ds']}}}Signature":
        return found + [VERIFIES(f"signature document root is {signature.tag}, not ds:Signature")], False
    check = verify_signature(signature)
    if not check.valid:
        found.append(VERIFIES("; ".join(check.problems)))
    found += _shape_checks(check)
    found += _manifest_checks(signature, _signed_documents(metadata, documents, entry), ss)
    found += _properties_checks(signature, check.certificate)
    if check.certificate is not None:
        trust = trust_problems(check.certificate, trusted=trusted, now=now, texts=_TRUST_TEXTS)
        found += [CERTIFICATE(problem) for problem in trust]
    return found, check.valid and not found


def _entry_checks(entry: RegistryObject) -> list[Violation]:
    """XADES-ENTRY-01: the signature entry is typeCode E1762, formatCode xmldsig#, text/xml (IHE DSG)."""
    types = {c.code for c in entry.codes.get(DE.TYPE_CODE, [])}
    formats = {c.code for c in entry.codes.get(DE.FORMAT_CODE, [])}
    if (
        "E1762" not in types
        or "http://www.w3.org/2000/09/xmldsig#" not in formats
        or entry.element.get("mimeType") != "text/xml"
    ):
        return [PRESENT("signature entry must have typeCode E1762, formatCode xmldsig#, mimeType text/xml")]
    return []


def _signs_checks(metadata: Metadata, entry: RegistryObject, ss: RegistryObject | None) -> list[Violation]:
    """XADES-ASSOC-01: a 'signs' association from the signature entry to the SubmissionSet (IHE DSG)."""
    if ss is not None and not any(
        a.type == ASSOC.SIGNS and a.source == entry.id and a.target == ss.id for a in metadata.associations
    ):
        return [SIGNS(f"no signs association from {entry.id} to the SubmissionSet {ss.id}")]
    return []


def _shape_checks(check: SignatureCheck) -> list[Violation]:
    """XADES-REF-01: SignedInfo references the ds:Manifest and the SignedProperties (TS 101 903 §6.2)."""
    manifest_ref = next((r for r in check.references if r.type == _MANIFEST_TYPE), None)
    props_ref = next((r for r in check.references if r.type.endswith("#SignedProperties")), None)
    if manifest_ref is None or props_ref is None:
        return [SHAPE("SignedInfo must reference a ds:Manifest and the XAdES SignedProperties (by Type)")]
    return []


def _signed_documents(
    metadata: Metadata, documents: dict[str, bytes], signature_entry: RegistryObject
) -> dict[str, bytes]:
    """The documents the Manifest must reference, by their ``urn:oid:<uniqueId>`` URI."""
    by_uri: dict[str, bytes] = {}
    for document_entry in metadata.entries:
        unique_id = document_entry.external_ids.get(DE.UNIQUE_ID)
        if document_entry is not signature_entry and unique_id and document_entry.id in documents:
            by_uri[f"urn:oid:{unique_id}"] = documents[document_entry.id]
    return by_uri


def _manifest_checks(
    signature: etree._Element, by_uri: dict[str, bytes], ss: RegistryObject | None
) -> list[Violation]:
    """XADES-MANIFEST-01: the Manifest references the SubmissionSet and each document with its digest."""
    manifest = signature.find(f".//{{{NS['ds']}}}Manifest")
    if manifest is None:
        return [MANIFEST("no ds:Manifest in the signature")]
    found: list[Violation] = []
    references = check_references(manifest, signature, resolve=lambda uri: by_uri.get(uri))
    ss_uid = ss.external_ids.get(SS.UNIQUE_ID) if ss is not None else None
    if ss_uid and f"urn:oid:{ss_uid}" not in {r.uri for r in references}:
        found.append(MANIFEST(f"the Manifest does not reference the SubmissionSet urn:oid:{ss_uid}"))
    for uri in by_uri:
        ref = next((r for r in references if r.uri == uri), None)
        if ref is None:
            found.append(MANIFEST(f"the Manifest does not reference {uri}"))
        elif not ref.ok:
            found.append(MANIFEST(f"{uri}: {ref.reason}"))
    return found


def _properties_checks(signature: etree._Element, certificate: x509.Certificate | None) -> list[Violation]:
    """XADES-PROPS-01: SignedProperties with SigningTime and SigningCertificate (TS 101 903 §7.2.1-2)."""
    properties = _find_properties(signature)
    if properties is None:
        return [PROPERTIES("no XAdES QualifyingProperties/SignedProperties")]
    if certificate is None:
        return []
    return [PROPERTIES(problem) for problem in _signed_property_checks(properties, certificate)]
