"""XAdES signature of a DMP submission set: an IHE DSG signature document added to the set.

The DMP wants every submission set signed in XAdES (PDSM4DMP ``transaction_td2.md``: "transmis
au système DMP sous la forme d'un lot de soumission XDS signé (XAdES)"; issue #9). The form
is the IHE Document Digital Signature profile (ITI TF-3 §5.5, DSG) applied to a
submission set:

* one XML-DSig ``ds:Signature`` that carries what it signs — a ``ds:Manifest`` in a
  ``ds:Object`` — while the documents the Manifest covers stay outside it (references by
  uniqueId);
* the ``ds:Manifest`` references the submission set itself, ``urn:oid:<SubmissionSet
  uniqueId>``, then each document of the set by ``urn:oid:<uniqueId>`` with the SHA-256 of
  its bytes — so the signature covers the documents without copying them. The submission
  set is not an octet stream: its reference names it, with the digest of no octets (the ANS
  DRIMbox, a client of the real DMP, also writes a placeholder digest there);
* ``ds:SignedInfo`` references the Manifest (``Type=…#Manifest``), the XAdES
  ``SignedProperties`` and the ``KeyInfo``. (The DRIMbox also writes a bare-text
  ``ds:SignatureProperty`` "purposeOfSignature"; the XML-DSig schema requires an element in
  it, so the purpose travels only in the signed CommitmentTypeIndication below.)
* XAdES (ETSI TS 101 903, namespace v1.3.2) ``SignedProperties``: ``SigningTime``
  (injected, UTC), ``SigningCertificate`` (SHA-256 digest and issuer/serial of the cachet
  certificate) and, in ``SignedDataObjectProperties``, a ``CommitmentTypeIndication`` with
  the ASTM E1762 purpose ``1.2.840.10065.1.12.1.14`` "Source" (the DSG signature purposes;
  the one the DRIMbox writes, as a SignatureProperty) and ``AllSignedDataObjects``;
* RSA-SHA256, SHA-256 digests, exclusive canonicalisation (as in the VIHF of the ANS
  example; it keeps the Manifest digest independent of where the Manifest ends up). The
  DRIMbox still signs RSA-SHA1 with inclusive c14n: SHA-1 is deprecated for signatures and
  nothing we found says the DMP requires it, so we do not follow it there.

The signature document is itself a DocumentEntry of the set (``signature_entry``): classCode
``urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1`` "Digital Signature" (JDV_J57, coding scheme URN),
typeCode ``E1762`` "Full Document" (JDV_J66, ASTM), formatCode
``http://www.w3.org/2000/09/xmldsig#`` "Default signature style" (JDV_J60, URN), mimeType
``text/xml``, and the patient, confidentiality, facility, practice setting and authors of
the document it signs, and the eventCodeList ``1.2.840.10065.1.12.1.14`` "Source" (scheme
``1.2.840.10065.1.12``) that other DMP clients put on it. It joins the set by a HasMember
association and a ``urn:ihe:iti:2007:AssociationType:signs`` association from the signature
entry to the SubmissionSet (ansforge/DRIM-M_DRIMbox
``Backend/src/main/java/com/bcom/drimbox/dmp/xades/request/ProvideAndRegisterRequest.java``,
``dmp/utils/XadesSign.java``; the unsigned ITI-57 of its ``DeleteRequest.java``).

Library choice: signxml's ``XAdESSigner`` builds the XAdES part (QualifyingProperties,
SignedProperties reference, KeyInfo reference) but has no Manifest, no commitment type and
reads the clock itself. It lets subclasses add annotators before SignedInfo is signed, so
we keep it and add those three things here instead of writing XML-DSig by hand.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from signxml import SignatureReference
from signxml.algorithms import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureConstructionMethod,
    SignatureMethod,
)
from signxml.util import add_pem_header
from signxml.xades import XAdESDataObjectFormat, XAdESSigner

from gateway.model import CodedValue, XdsDocumentEntry, XdsMetadata

__all__ = [
    "DS_NS",
    "XADES_NS",
    "COMMITMENT_SOURCE",
    "SIGNATURE_CLASS_CODE",
    "SIGNATURE_TYPE_CODE",
    "SIGNATURE_FORMAT_CODE",
    "SIGNATURE_EVENT_CODE",
    "sign_submission_set",
    "signature_entry",
    "manifest_uri",
]

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"
MANIFEST_TYPE = "http://www.w3.org/2000/09/xmldsig#Manifest"
#: ASTM E1762-95 signature purpose "Source" (IHE DSG: CommitmentTypeIndication from E1762).
COMMITMENT_SOURCE = "urn:oid:1.2.840.10065.1.12.1.14"

# Codes of the signature document (JDV_J57 / J66 / J60, corpus terminology; IHE DSG).
SIGNATURE_CLASS_CODE: CodedValue = {
    "code": "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1",
    "codeSystem": "URN",
    "displayName": "Digital Signature",
}
SIGNATURE_TYPE_CODE: CodedValue = {"code": "E1762", "codeSystem": "ASTM", "displayName": "Full Document"}
SIGNATURE_EVENT_CODE: CodedValue = {
    "code": "1.2.840.10065.1.12.1.14",
    "codeSystem": "1.2.840.10065.1.12",
    "displayName": "Source",
}
SIGNATURE_FORMAT_CODE: CodedValue = {
    "code": "http://www.w3.org/2000/09/xmldsig#",
    "codeSystem": "URN",
    "displayName": "Default signature style",
}


def manifest_uri(unique_id: str) -> str:
    """The Manifest Reference URI of a document: its uniqueId as a URN (DSG)."""
    return unique_id if unique_id.startswith("urn:") else f"urn:oid:{unique_id}"


def _ds(tag: str) -> str:
    return f"{{{DS_NS}}}{tag}"


def _xades(tag: str) -> str:
    return f"{{{XADES_NS}}}{tag}"


class _SubmissionSetSigner(XAdESSigner):
    """XAdESSigner + Manifest object, SigningCertificate (1.3.2), commitment type, injected time."""

    def __init__(self, manifest: etree._Element, signing_time: datetime, signature_id: str) -> None:
        super().__init__(
            method=SignatureConstructionMethod.detached,
            signature_algorithm=SignatureMethod.RSA_SHA256,
            digest_algorithm=DigestAlgorithm.SHA256,
            c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
            data_object_format=XAdESDataObjectFormat(
                Description="Manifest of the documents of an XDS submission set", MimeType="text/xml"
            ),
        )
        self.namespaces = {"ds": DS_NS, "xades": XADES_NS}
        self._manifest = manifest
        self._signing_time = signing_time
        self._signature_id = signature_id
        # Name the Signature first, so the XAdES part (SignedProperties Id, Target) uses it.
        self.signature_annotators.insert(0, self._name_signature)
        # The Manifest reference must be typed and its Object in place before SignedInfo is
        # canonicalised and signed: signature annotators run exactly then. Last, so that the
        # Object comes after KeyInfo as XML-DSig's schema orders them.
        self.signature_annotators.append(self._enclose_manifest)
        self.signed_data_object_properties_annotators.append(self._add_commitment_type)

    def _add_reference_to_signed_info(self, sig_root, node_to_reference, **attrs):  # type: ignore[no-untyped-def]
        # signxml writes the SignedProperties / KeyInfo references without Transforms but
        # digests them with the signer's c14n. XML-DSig §4.3.3.2: no Transforms means
        # *inclusive* c14n, so with exclusive c14n the Transform must be explicit or a
        # conforming verifier computes another digest.
        signed_info = self._find(sig_root, "SignedInfo")
        reference = etree.SubElement(signed_info, _ds("Reference"), URI=f"#{node_to_reference.get('Id')}")
        for name, value in attrs.items():
            reference.set(name, value)
        transforms = etree.SubElement(reference, _ds("Transforms"))
        etree.SubElement(transforms, _ds("Transform"), Algorithm=self.c14n_alg.value)
        etree.SubElement(reference, _ds("DigestMethod"), Algorithm=self.digest_alg.value)
        digest = self._get_digest(self._c14n(node_to_reference, algorithm=self.c14n_alg), algorithm=self.digest_alg)
        etree.SubElement(reference, _ds("DigestValue")).text = base64.b64encode(digest).decode("ascii")

    def _name_signature(self, sig_root: etree._Element, signing_settings: Any) -> None:
        sig_root.set("Id", self._signature_id)

    def _enclose_manifest(self, sig_root: etree._Element, signing_settings: Any) -> None:
        reference = self._find(self._find(sig_root, "SignedInfo"), "Reference")
        reference.set("Type", MANIFEST_TYPE)
        obj = etree.SubElement(sig_root, _ds("Object"))
        obj.append(self._manifest)

    def add_signing_time(self, signed_signature_properties, sig_root, signing_settings):  # type: ignore[no-untyped-def]
        etree.SubElement(signed_signature_properties, _xades("SigningTime")).text = (
            self._signing_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        )

    def add_signing_certificate(self, signed_signature_properties, sig_root, signing_settings):  # type: ignore[no-untyped-def]
        # XAdES 1.3.2 SigningCertificate: digest of the DER certificate and its issuer/serial.
        signing_cert = etree.SubElement(signed_signature_properties, _xades("SigningCertificate"))
        for pem in signing_settings.cert_chain[:1]:
            cert = pem if isinstance(pem, x509.Certificate) else x509.load_pem_x509_certificate(add_pem_header(pem))
            node = etree.SubElement(signing_cert, _xades("Cert"))
            digest = etree.SubElement(node, _xades("CertDigest"))
            etree.SubElement(digest, _ds("DigestMethod"), Algorithm=DigestAlgorithm.SHA256.value)
            etree.SubElement(digest, _ds("DigestValue")).text = base64.b64encode(
                hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()
            ).decode("ascii")
            issuer_serial = etree.SubElement(node, _xades("IssuerSerial"))
            etree.SubElement(issuer_serial, _ds("X509IssuerName")).text = cert.issuer.rfc4514_string()
            etree.SubElement(issuer_serial, _ds("X509SerialNumber")).text = str(cert.serial_number)

    def _add_commitment_type(self, signed_data_object_properties, sig_root, signing_settings):  # type: ignore[no-untyped-def]
        indication = etree.SubElement(signed_data_object_properties, _xades("CommitmentTypeIndication"))
        type_id = etree.SubElement(indication, _xades("CommitmentTypeId"))
        etree.SubElement(type_id, _xades("Identifier")).text = COMMITMENT_SOURCE
        etree.SubElement(type_id, _xades("Description")).text = "Source"
        etree.SubElement(indication, _xades("AllSignedDataObjects"))


def sign_submission_set(
    documents: Sequence[tuple[str, bytes]],
    *,
    submission_set_unique_id: str,
    key_pem: bytes,
    cert_pem: bytes,
    now: datetime,
    signature_id: str,
    passphrase: bytes | None = None,
) -> bytes:
    """The signature document (UTF-8 XML bytes) of a submission set over ``[(uniqueId, bytes)]``.

    ``signature_id`` (an NCName) names the ``ds:Signature``; ``now`` (timezone-aware) is the
    XAdES SigningTime.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not documents:
        raise ValueError("a submission set signature needs at least one document")
    manifest_id = f"{signature_id}-manifest"
    holder = etree.Element("holder", nsmap={"ds": DS_NS})
    manifest = etree.SubElement(holder, _ds("Manifest"), Id=manifest_id)
    for unique_id, data in [(submission_set_unique_id, b""), *documents]:
        reference = etree.SubElement(manifest, _ds("Reference"), URI=manifest_uri(unique_id))
        etree.SubElement(reference, _ds("DigestMethod"), Algorithm=DigestAlgorithm.SHA256.value)
        etree.SubElement(reference, _ds("DigestValue")).text = base64.b64encode(hashlib.sha256(data).digest()).decode(
            "ascii"
        )
    signer = _SubmissionSetSigner(manifest, now, signature_id)
    signature = signer.sign(
        holder,
        key=key_pem,
        passphrase=passphrase,
        cert=cert_pem.decode("ascii"),
        reference_uri=[SignatureReference(URI=f"#{manifest_id}")],
    )
    return bytes(etree.tostring(signature, xml_declaration=True, encoding="UTF-8"))


def signature_entry(
    xds: XdsMetadata, *, entry_uuid: str, unique_id: str, signature: bytes, creation_time: str
) -> XdsDocumentEntry:
    """The DocumentEntry of the signature document, derived from the signed document's entry."""
    signed = xds["documentEntry"]
    entry: XdsDocumentEntry = {
        "entryUUID": entry_uuid,
        "uniqueId": unique_id,
        "classCode": dict(SIGNATURE_CLASS_CODE),  # type: ignore[typeddict-item]
        "typeCode": dict(SIGNATURE_TYPE_CODE),  # type: ignore[typeddict-item]
        "formatCode": dict(SIGNATURE_FORMAT_CODE),  # type: ignore[typeddict-item]
        "eventCodeList": [dict(SIGNATURE_EVENT_CODE)],  # type: ignore[list-item]
        "mimeType": "text/xml",
        "creationTime": creation_time,
        "hash": hashlib.sha1(signature).hexdigest(),
        "size": len(signature),
        "title": "Signature du lot de soumission",
        "action": "submit",
    }
    for key in (
        "confidentialityCode",
        "healthcareFacilityTypeCode",
        "practiceSettingCode",
        "patientId",
        "sourcePatientId",
        "sourcePatientInfo",
        "languageCode",
    ):
        if key in signed:
            entry[key] = signed[key]  # type: ignore[literal-required]
    # The signer is the submission set's author (the structure whose cachet signs).
    authors = xds["submissionSet"].get("authors") or signed.get("authors")
    if authors:
        entry["authors"] = authors
    return entry
