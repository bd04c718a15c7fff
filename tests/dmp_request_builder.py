"""DMP requests built by hand for the conformance checker's tests (not with the client's builders).

Everything here is written from the texts the checker cites, independently of
``adapters/dmp/{client,soap,ebrim,mtom,vihf}.py``: the envelope and metadata from lxml
templates, the VIHF signed with signxml (a signer the checker does not use), the XAdES
submission-set signature assembled here (detached ds:Signature with a ds:Manifest of
``urn:oid:`` references and XAdES SignedProperties, the DSG form the DMP uses), the MTOM
package written byte by byte. A test changes one field of a ``GoodRequest`` (or one node
through a hook) so that exactly one rule breaks.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod, XMLSigner, methods

from adapters.dmp.testing import TEST_CERT, TEST_KEY

__all__ = ["GoodRequest", "GoodUpdate", "GoodQuery", "mtom", "INS_CX", "sample_cda"]

S = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.3.2#"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"
XOP = "http://www.w3.org/2004/08/xop/include"
HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
EXC = "http://www.w3.org/2001/10/xml-exc-c14n#"

INS_CX = "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"
AUTHOR = "801234564895^THOMAS^Eric^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
INSTITUTION = "CH FICTIF^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1120456789"
STRUCT_ID = "1120456789"
CE = tuple[str, str, str]  # code, codingScheme, display


def sample_cda(unique_id: str, effective_time: str = "20240315143000+0100") -> bytes:
    """A tiny fictitious CDA header: the checker reads its effectiveTime, nothing else."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<ClinicalDocument xmlns="{HL7}"><id root="{unique_id}"/>'
        '<code code="11490-0" codeSystem="2.16.840.1.113883.6.1"/>'
        f'<effectiveTime value="{effective_time}"/><title>CR fictif</title></ClinicalDocument>\n'
    ).encode()


@cache
def _key() -> rsa.RSAPrivateKey:  # cached: loading (and checking) an RSA key costs ~50 ms
    key = serialization.load_pem_private_key(TEST_KEY.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@cache
def _cert() -> x509.Certificate:
    return x509.load_pem_x509_certificate(TEST_CERT.read_bytes())


def _el(parent: etree._Element, tag: str, attrib: dict[str, str] | None = None, text: str | None = None):
    element = etree.SubElement(parent, tag, attrib or {})
    if text is not None:
        element.text = text
    return element


def _slot(parent: etree._Element, name: str, values: list[str]) -> None:
    slot = _el(parent, f"{{{RIM}}}Slot", {"name": name})
    value_list = _el(slot, f"{{{RIM}}}ValueList")
    for value in values:
        _el(value_list, f"{{{RIM}}}Value", text=value)


def _name(parent: etree._Element, value: str) -> None:
    _el(_el(parent, f"{{{RIM}}}Name"), f"{{{RIM}}}LocalizedString", {"value": value})


def _classification(parent: etree._Element, obj_id: str, scheme: str, coded: CE, n: list[int]) -> None:
    n[0] += 1
    cl = _el(parent, f"{{{RIM}}}Classification", {
        "id": f"cl{n[0]:02d}", "classificationScheme": scheme, "classifiedObject": obj_id,
        "nodeRepresentation": coded[0],
    })
    _slot(cl, "codingScheme", [coded[1]])
    _name(cl, coded[2])


def _author(parent: etree._Element, obj_id: str, scheme: str, person: list[str], institutions: list[str],
            n: list[int]) -> None:
    n[0] += 1
    cl = _el(parent, f"{{{RIM}}}Classification", {
        "id": f"cl{n[0]:02d}", "classificationScheme": scheme, "classifiedObject": obj_id, "nodeRepresentation": "",
    })
    if person:
        _slot(cl, "authorPerson", person)
    if institutions:
        _slot(cl, "authorInstitution", institutions)


def _external(parent: etree._Element, obj_id: str, scheme: str, value: str, name: str, n: list[int]) -> None:
    n[0] += 1
    ei = _el(parent, f"{{{RIM}}}ExternalIdentifier", {
        "id": f"ei{n[0]:02d}", "registryObject": obj_id, "identificationScheme": scheme, "value": value,
    })
    _name(ei, name)


def _entry(root: etree._Element, entry_id: str, fields: dict, n: list[int]) -> None:
    attrs = {"id": entry_id, "mimeType": fields["mimeType"], "objectType": "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"}
    if fields.get("status"):
        attrs["status"] = fields["status"]
    eo = _el(root, f"{{{RIM}}}ExtrinsicObject", attrs)
    for slot in ("creationTime", "hash", "languageCode", "serviceStartTime", "serviceStopTime", "size",
                 "sourcePatientId"):
        if fields.get(slot) is not None:
            _slot(eo, slot, [fields[slot]])
    _name(eo, fields.get("title", "Document"))
    _author(eo, entry_id, "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d", fields["authorPerson"],
            fields["authorInstitution"], n)
    schemes = {
        "classCode": "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
        "confidentialityCode": "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
        "eventCode": "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4",
        "formatCode": "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d",
        "healthcareFacilityTypeCode": "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1",
        "practiceSettingCode": "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead",
        "typeCode": "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
    }
    for name, scheme in schemes.items():
        for coded in fields.get(name, []):
            _classification(eo, entry_id, scheme, coded, n)
    _external(eo, entry_id, "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427", fields["patientId"],
              "XDSDocumentEntry.patientId", n)
    _external(eo, entry_id, "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab", fields["uniqueId"],
              "XDSDocumentEntry.uniqueId", n)


def _submission_set(root: etree._Element, fields: dict, n: list[int]) -> None:
    rp = _el(root, f"{{{RIM}}}RegistryPackage", {"id": "SubmissionSet01"})
    _slot(rp, "submissionTime", [fields["submissionTime"]])
    _name(rp, "Lot de soumission")
    _author(rp, "SubmissionSet01", "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d", fields["authorPerson"],
            fields["authorInstitution"], n)
    for coded in fields["contentTypeCode"]:
        _classification(rp, "SubmissionSet01", "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500", coded, n)
    _external(rp, "SubmissionSet01", "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8", fields["uniqueId"],
              "XDSSubmissionSet.uniqueId", n)
    _external(rp, "SubmissionSet01", "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832", fields["sourceId"],
              "XDSSubmissionSet.sourceId", n)
    _external(rp, "SubmissionSet01", "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446", fields["patientId"],
              "XDSSubmissionSet.patientId", n)
    _el(root, f"{{{RIM}}}Classification", {
        "id": "clSS", "classifiedObject": "SubmissionSet01",
        "classificationNode": "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd",
    })


def _association(root: etree._Element, assoc_id: str, kind: str, source: str, target: str,
                 slots: dict[str, list[str]] | None = None) -> None:
    a = _el(root, f"{{{RIM}}}Association", {
        "id": assoc_id, "associationType": kind, "sourceObject": source, "targetObject": target,
    })
    for name, values in (slots or {}).items():
        _slot(a, name, values)


def _ce(code: str, system: str, display: str, tag: str = "Role") -> etree._Element:
    element = etree.Element(f"{{{HL7}}}{tag}", nsmap={None: HL7, "xsi": XSI})
    element.set("code", code)
    element.set("codeSystem", system)
    element.set("displayName", display)
    element.set(f"{{{XSI}}}type", "CE")
    return element


def default_vihf() -> dict[str, list]:
    """Attribute name → values (str, or (code, system, display, tag) for an hl7 CE value)."""
    return {
        "VIHF_Version": ["4.0"],
        "Identifiant_Structure": [STRUCT_ID],
        "Secteur_Activite": ["SA01^1.2.250.1.71.4.2.4"],
        "urn:oasis:names:tc:xspa:1.0:subject:subject-id": ["THOMAS Eric, Service de radiologie"],
        "urn:oasis:names:tc:xacml:2.0:subject:role": [
            ("10", "1.2.250.1.71.1.2.7", "Médecin", "Role"),
            ("SM26", "1.2.250.1.71.4.2.5", "Qualifié en Médecine générale (SM)", "Role"),
        ],
        "Authentification_Mode": ["INDIRECTE"],
        "urn:oasis:names:tc:xacml:2.0:resource:resource-id": [INS_CX],
        "Ressource_URN": ["urn:dmp"],
        "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse": [
            ("normal", "1.2.250.1.213.1.1.4.248", "Accès normal", "PurposeOfUse")
        ],
        "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code": [
            ("INVISIBLE_REPRESENTANTS_LEGAUX", "1.2.250.1.213.1.1.4.13", "Non visible par les représentants légaux",
             "ConfidentialityCode")
        ],
        "LPS_Nom": ["RELAIS"],
        "LPS_Version": ["1.0"],
        "LPS_ID_HOMOLOGATION_DMP": ["TEST-HOMOLOGATION-1"],
    }


@dataclass
class Vihf:
    """How the VIHF of a test request is made."""

    attributes: dict[str, list] = field(default_factory=default_vihf)
    name_id: str | None = "801234564895"
    issuer_format: str = "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"
    sign: bool = True
    issue_instant: datetime | None = None
    not_after: datetime | None = None
    key: rsa.RSAPrivateKey | None = None
    cert: x509.Certificate | None = None
    after_sign: Callable[[etree._Element], None] | None = None
    present: bool = True

    def build(self, now: datetime) -> etree._Element | None:
        if not self.present:
            return None
        cert = self.cert or _cert()
        assertion = etree.Element(f"{{{SAML}}}Assertion", nsmap={"saml": SAML, "xsi": XSI})
        assertion.set("ID", "_a1b2c3d4-0000-4000-8000-000000000001")
        assertion.set("IssueInstant", (self.issue_instant or now).strftime("%Y-%m-%dT%H:%M:%S.000Z"))
        assertion.set("Version", "2.0")
        issuer = _el(assertion, f"{{{SAML}}}Issuer", {"Format": self.issuer_format}, cert.subject.rfc4514_string())
        _ = issuer
        if self.sign:
            etree.SubElement(assertion, f"{{{DS}}}Signature", {"Id": "placeholder"}, nsmap={"ds": DS})
        subject = _el(assertion, f"{{{SAML}}}Subject")
        if self.name_id is not None:
            _el(subject, f"{{{SAML}}}NameID", text=self.name_id)
        if self.not_after is not None:
            _el(assertion, f"{{{SAML}}}Conditions", {
                "NotBefore": (now.replace(year=now.year - 1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "NotAfter": self.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            })
        authn = _el(assertion, f"{{{SAML}}}AuthnStatement", {"AuthnInstant": now.strftime("%Y-%m-%dT%H:%M:%SZ")})
        _el(_el(authn, f"{{{SAML}}}AuthnContext"), f"{{{SAML}}}AuthnContextClassRef",
            text="urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified")
        statement = _el(assertion, f"{{{SAML}}}AttributeStatement")
        for name, values in self.attributes.items():
            attribute = _el(statement, f"{{{SAML}}}Attribute", {"Name": name})
            for value in values:
                holder = _el(attribute, f"{{{SAML}}}AttributeValue")
                if isinstance(value, tuple):
                    holder.append(_ce(value[0], value[1], value[2], value[3]))
                else:
                    holder.text = value
        if not self.sign:
            return assertion
        key = self.key or _key()
        signed = XMLSigner(
            method=methods.enveloped,
            signature_algorithm=SignatureMethod.RSA_SHA256,
            digest_algorithm=DigestAlgorithm.SHA256,
            c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
        ).sign(
            assertion,
            key=key,
            cert=cert.public_bytes(serialization.Encoding.PEM).decode(),
            reference_uri="#_a1b2c3d4-0000-4000-8000-000000000001",
            id_attribute="ID",
        )
        if self.after_sign is not None:
            self.after_sign(signed)
        return signed


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _c14n(element: etree._Element) -> bytes:
    return etree.tostring(element, method="c14n", exclusive=True, with_comments=False)


@dataclass
class Xades:
    """How the submission-set signature is made (DSG detached signature with a Manifest)."""

    include: bool = True
    sign_documents: bool = True
    reference_submission_set: bool = True
    signing_certificate_digest: bool = True
    tamper_digest: bool = False
    associate: bool = True
    reference_properties: bool = True
    key: rsa.RSAPrivateKey | None = None
    cert: x509.Certificate | None = None
    after: Callable[[bytes], bytes] | None = None

    def build(self, ss_unique_id: str, documents: dict[str, bytes], now: datetime) -> bytes:
        key, cert = self.key or _key(), self.cert or _cert()
        signature = etree.Element(f"{{{DS}}}Signature", nsmap={"ds": DS}, Id="Signature01")
        signed_info = _el(signature, f"{{{DS}}}SignedInfo")
        _el(signed_info, f"{{{DS}}}CanonicalizationMethod", {"Algorithm": EXC})
        _el(signed_info, f"{{{DS}}}SignatureMethod", {"Algorithm": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"})
        refs = {}
        wanted = [("#IHEManifest", "http://www.w3.org/2000/09/xmldsig#Manifest")]
        if self.reference_properties:
            wanted.append(("#SignedProps", "http://uri.etsi.org/01903#SignedProperties"))
        for uri, kind in wanted:
            reference = _el(signed_info, f"{{{DS}}}Reference", {"URI": uri, "Type": kind})
            _el(_el(reference, f"{{{DS}}}Transforms"), f"{{{DS}}}Transform", {"Algorithm": EXC})
            _el(reference, f"{{{DS}}}DigestMethod", {"Algorithm": "http://www.w3.org/2001/04/xmlenc#sha256"})
            refs[uri] = _el(reference, f"{{{DS}}}DigestValue")
        value = _el(signature, f"{{{DS}}}SignatureValue")
        _el(_el(_el(signature, f"{{{DS}}}KeyInfo"), f"{{{DS}}}X509Data"), f"{{{DS}}}X509Certificate",
            text=_b64(cert.public_bytes(serialization.Encoding.DER)))
        manifest = _el(_el(signature, f"{{{DS}}}Object"), f"{{{DS}}}Manifest", {"Id": "IHEManifest"})
        items = [(f"urn:oid:{ss_unique_id}", b"")] if self.reference_submission_set else []
        items += [(f"urn:oid:{uid}", data) for uid, data in documents.items()] if self.sign_documents else []
        for uri, data in items:
            reference = _el(manifest, f"{{{DS}}}Reference", {"URI": uri})
            _el(reference, f"{{{DS}}}DigestMethod", {"Algorithm": "http://www.w3.org/2000/09/xmldsig#sha1"})
            digest = hashlib.sha1(data + (b"x" if self.tamper_digest else b"")).digest()
            _el(reference, f"{{{DS}}}DigestValue", text=_b64(digest))
        qualifying = _el(_el(signature, f"{{{DS}}}Object"), f"{{{XADES}}}QualifyingProperties",
                         {"Target": "#Signature01"}, None)
        props = _el(qualifying, f"{{{XADES}}}SignedProperties", {"Id": "SignedProps"})
        ssp = _el(props, f"{{{XADES}}}SignedSignatureProperties")
        _el(ssp, f"{{{XADES}}}SigningTime", text=now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        cert_el = _el(_el(ssp, f"{{{XADES}}}SigningCertificate"), f"{{{XADES}}}Cert")
        cert_digest = _el(cert_el, f"{{{XADES}}}CertDigest")
        _el(cert_digest, f"{{{DS}}}DigestMethod", {"Algorithm": "http://www.w3.org/2000/09/xmldsig#sha1"})
        der = cert.public_bytes(serialization.Encoding.DER)
        _el(cert_digest, f"{{{DS}}}DigestValue",
            text=_b64(hashlib.sha1(der if self.signing_certificate_digest else b"other").digest()))
        refs["#IHEManifest"].text = _b64(hashlib.sha256(_c14n(manifest)).digest())
        if self.reference_properties:
            refs["#SignedProps"].text = _b64(hashlib.sha256(_c14n(props)).digest())
        value.text = _b64(key.sign(_c14n(signed_info), padding.PKCS1v15(), hashes.SHA256()))
        data = etree.tostring(signature, xml_declaration=True, encoding="UTF-8")
        return self.after(data) if self.after else data


def mtom(envelope: bytes, parts: dict[str, bytes], *, crlf: str = "\r\n") -> tuple[str, bytes]:
    """A multipart/related MTOM package written by hand (root Content-ID 'root@test')."""
    boundary = "uuid:test-boundary-0001"
    chunks = [
        f"--{boundary}{crlf}Content-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"{crlf}"
        f"Content-Transfer-Encoding: binary{crlf}Content-ID: <root@test>{crlf}{crlf}".encode(),
        envelope,
        crlf.encode(),
    ]
    for cid, data in parts.items():
        chunks += [
            f"--{boundary}{crlf}Content-Type: application/octet-stream{crlf}Content-Transfer-Encoding: binary{crlf}"
            f"Content-ID: <{cid}>{crlf}{crlf}".encode(),
            data,
            crlf.encode(),
        ]
    chunks.append(f"--{boundary}--{crlf}".encode())
    content_type = (
        f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; start="<root@test>"; '
        'start-info="application/soap+xml"'
    )
    return content_type, b"".join(chunks)


def _envelope(action: str, assertion: etree._Element | None, body: etree._Element, *,  # noqa: D103
              soap_ns: str = S, message_id: str | None = "urn:uuid:00000000-0000-4000-8000-00000000abcd") -> bytes:
    envelope = etree.Element(f"{{{soap_ns}}}Envelope", nsmap={"s": soap_ns, "a": WSA})
    header = _el(envelope, f"{{{soap_ns}}}Header")
    _el(header, f"{{{WSA}}}Action", {f"{{{soap_ns}}}mustUnderstand": "1"}, action)
    if message_id:
        _el(header, f"{{{WSA}}}MessageID", text=message_id)
    _el(header, f"{{{WSA}}}To", text="http://127.0.0.1/repository")
    security = _el(header, f"{{{WSSE}}}Security")
    if assertion is not None:
        security.append(assertion)
    _el(envelope, f"{{{soap_ns}}}Body").append(body)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class GoodRequest:
    """An ITI-41 that passes every rule; change one field to break one rule."""

    unique_id: str = "1.2.250.1.999999.1.7.1"
    document: bytes | None = None
    vihf: Vihf = field(default_factory=Vihf)
    xades: Xades = field(default_factory=Xades)
    ss: dict = field(default_factory=dict)
    entry: dict = field(default_factory=dict)
    replaces: str | None = None  # entryUUID of the RPLC target
    action: str = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
    soap_ns: str = S
    message_id: str | None = "urn:uuid:00000000-0000-4000-8000-00000000abcd"
    inline: bool = False
    multipart: bool = True
    mutate: list[Callable[[etree._Element], None]] = field(default_factory=list)
    extra_associations: list[tuple[str, str, str, dict[str, list[str]]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        document = self.document or sample_cda(self.unique_id)
        self.document = document
        defaults_ss = {
            "uniqueId": "1.2.250.1.999999.2.7.1",
            "sourceId": "1.2.250.1.999999.3",
            "patientId": INS_CX,
            "submissionTime": "20240315140000",
            "contentTypeCode": [("03", "1.2.250.1.213.2.2", "Hospitalisation")],
            "authorPerson": [AUTHOR],
            "authorInstitution": [INSTITUTION],
        }
        defaults_entry = {
            "uniqueId": self.unique_id,
            "patientId": INS_CX,
            "mimeType": "text/xml",
            "creationTime": "20240315133000",
            "languageCode": "fr-FR",
            "sourcePatientId": "000003^^^&1.2.250.1.999999.4&ISO^PI",
            "hash": hashlib.sha1(document).hexdigest(),
            "size": str(len(document)),
            "title": "CR fictif",
            "authorPerson": [AUTHOR],
            "authorInstitution": [INSTITUTION],
            "classCode": [("10", "1.2.250.1.213.1.1.4.1", "Compte rendu")],
            "typeCode": [("11490-0", "2.16.840.1.113883.6.1", "Lettre de liaison")],
            "formatCode": [("urn:ihe:iti:xds-sd:pdf:2008", "1.3.6.1.4.1.19376.1.2.3", "PDF")],
            "confidentialityCode": [
                ("N", "2.16.840.1.113883.5.25", "Normal"),
                ("INVISIBLE_REPRESENTANTS_LEGAUX", "1.2.250.1.213.1.1.4.13", "Non visible par les RL"),
            ],
            "healthcareFacilityTypeCode": [("SA01", "1.2.250.1.71.4.2.4", "Etablissement public")],
            "practiceSettingCode": [("ETABLISSEMENT", "1.2.250.1.213.1.1.4.9", "Etablissement")],
        }
        self.ss = {**defaults_ss, **self.ss}
        self.entry = {**defaults_entry, **self.entry}

    def signature_entry(self, signature: bytes) -> dict:
        return {
            **{k: self.entry[k] for k in ("patientId", "sourcePatientId", "languageCode", "authorPerson",
                                          "authorInstitution", "healthcareFacilityTypeCode", "practiceSettingCode")},
            "uniqueId": f"1.2.250.1.999999.5.{int(hashlib.sha1(self.unique_id.encode()).hexdigest()[:8], 16)}",
            "mimeType": "text/xml",
            "creationTime": self.ss["submissionTime"],
            "hash": hashlib.sha1(signature).hexdigest(),
            "size": str(len(signature)),
            "title": "Source",
            "classCode": [("urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1", "URN", "Digital Signature")],
            "typeCode": [("E1762", "ASTM", "Full Document")],
            "formatCode": [("http://www.w3.org/2000/09/xmldsig#", "URN", "Default Signature Style")],
            "confidentialityCode": [("N", "2.16.840.1.113883.5.25", "Normal")],
            "eventCode": [("1.2.840.10065.1.12.1.14", "1.2.840.10065.1.12", "Source")],
        }

    def body(self, now: datetime) -> tuple[etree._Element, dict[str, bytes]]:
        assert self.document is not None
        request = etree.Element(f"{{{XDSB}}}ProvideAndRegisterDocumentSetRequest",
                                nsmap={None: XDSB, "lcm": LCM, "rim": RIM, "xop": XOP})
        objects = _el(_el(request, f"{{{LCM}}}SubmitObjectsRequest"), f"{{{RIM}}}RegistryObjectList")
        n = [0]
        documents = {"Document01": self.document}
        _entry(objects, "Document01", self.entry, n)
        if self.xades.include:
            signature = self.xades.build(self.ss["uniqueId"], {self.entry["uniqueId"]: self.document}, now)
            _entry(objects, "Signature01", self.signature_entry(signature), n)
            documents["Signature01"] = signature
        _submission_set(objects, self.ss, n)
        _association(objects, "as01", "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember",
                     "SubmissionSet01", "Document01", {"SubmissionSetStatus": ["Original"]})
        if self.xades.include:
            _association(objects, "as02", "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember",
                         "SubmissionSet01", "Signature01", {"SubmissionSetStatus": ["Original"]})
            if self.xades.associate:
                _association(objects, "as03", "urn:ihe:iti:2007:AssociationType:signs", "Signature01",
                             "SubmissionSet01")
        if self.replaces:
            _association(objects, "as04", "urn:ihe:iti:2007:AssociationType:RPLC", "Document01", self.replaces)
        for i, (kind, source, target, slots) in enumerate(self.extra_associations):
            _association(objects, f"asx{i}", kind, source, target, slots)
        parts = {}
        for doc_id, data in documents.items():
            document = _el(request, f"{{{XDSB}}}Document", {"id": doc_id})
            if self.inline:
                document.text = _b64(data)
            else:
                cid = f"{doc_id.lower()}@test"
                _el(document, f"{{{XOP}}}Include", {"href": f"cid:{cid}"})
                parts[cid] = data
        for mutate in self.mutate:
            mutate(request)
        return request, parts

    def build(self, now: datetime | None = None) -> tuple[str, bytes]:
        now = now or _now()
        request, parts = self.body(now)
        envelope = _envelope(self.action, self.vihf.build(now), request, soap_ns=self.soap_ns,
                             message_id=self.message_id)
        if not self.multipart:
            return "application/soap+xml; charset=UTF-8", envelope
        return mtom(envelope, parts)


@dataclass
class GoodUpdate:
    """An ITI-57 UpdateAvailabilityStatus (TD3.3c deletion by default)."""

    target: str
    new_status: str = "urn:asip:ci-sis:2010:StatusType:Deleted"
    original_status: str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
    vihf: Vihf = field(default_factory=lambda: Vihf(attributes={
        k: v for k, v in default_vihf().items()
        if k != "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"
    }))
    patient: str = INS_CX
    association_type: str = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"
    action: str = "urn:ihe:iti:2010:UpdateDocumentSet"
    with_entry: bool = False
    ss_unique_id: str = "1.2.250.1.999999.2.9.1"

    def build(self, now: datetime | None = None) -> tuple[str, bytes]:
        now = now or _now()
        request = etree.Element(f"{{{LCM}}}SubmitObjectsRequest", nsmap={"lcm": LCM, "rim": RIM})
        objects = _el(request, f"{{{RIM}}}RegistryObjectList")
        n = [0]
        _submission_set(objects, {
            "uniqueId": self.ss_unique_id, "sourceId": "1.2.250.1.999999.3", "patientId": self.patient,
            "submissionTime": "20240316100000", "contentTypeCode": [("03", "1.2.250.1.213.2.2", "Hospitalisation")],
            "authorPerson": [AUTHOR], "authorInstitution": [INSTITUTION],
        }, n)
        if self.with_entry:
            entry = GoodRequest().entry
            _entry(objects, "Document09", entry, n)
        _association(objects, "upd01", self.association_type, "SubmissionSet01", self.target,
                     {"OriginalStatus": [self.original_status], "NewStatus": [self.new_status]})
        envelope = _envelope(self.action, self.vihf.build(now), request)
        return "application/soap+xml; charset=UTF-8", envelope


@dataclass
class GoodQuery:
    """An ITI-18 GetDocuments by uniqueId."""

    unique_id: str
    vihf: Vihf = field(default_factory=lambda: Vihf(attributes={
        k: v for k, v in default_vihf().items()
        if k != "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"
    }))

    def build(self, now: datetime | None = None) -> tuple[str, bytes]:
        now = now or _now()
        request = etree.Element(f"{{{QUERY}}}AdhocQueryRequest", nsmap={"query": QUERY, "rim": RIM})
        _el(request, f"{{{QUERY}}}ResponseOption", {"returnType": "LeafClass", "returnComposedObjects": "true"})
        adhoc = _el(request, f"{{{RIM}}}AdhocQuery", {"id": "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"})
        _slot(adhoc, "$XDSDocumentEntryUniqueId", [f"('{self.unique_id}')"])
        envelope = _envelope("urn:ihe:iti:2007:RegistryStoredQuery", self.vihf.build(now), request)
        return "application/soap+xml; charset=UTF-8", envelope

