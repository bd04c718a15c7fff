"""VIHF: the SAML 2.0 identification vector the DMP requires in the WS-Security header.

Attribute names and layout follow the ANS example of the HL7 v2 CDA transmission guide
(``mapping.md``, case of an automated PFI, indirect authentication). The assertion is
signed *enveloped* (RSA-SHA256, exclusive c14n, SHA-256 digest) with signxml, the
``ds:Signature`` placed right after ``saml:Issuer`` as SAML 2.0 requires.

``build_vihf`` is pure apart from reading the key/certificate files named in the
settings; ``now`` and ``assertion_id`` are injected. ``verify_vihf`` is what the
simulator (and any test) uses to check one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from lxml import etree
from signxml import SignatureConfiguration, XMLSigner, XMLVerifier
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidInput, SignXMLException

from gateway.errors import DestinationRejected, MappingError
from gateway.model import XdsMetadata

__all__ = [
    "SAML_NS",
    "DS_NS",
    "HL7_NS",
    "VihfSettings",
    "VihfError",
    "build_vihf",
    "verify_vihf",
    "vihf_attributes",
]

SAML_NS = "urn:oasis:names:tc:SAML:2.0:assertion"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
HL7_NS = "urn:hl7-org:v3"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

ATTR_RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
ATTR_SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
ATTR_PURPOSE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
ATTR_ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
# Not in the ANS example; the name follows the XSPA/XACML vocabulary used by the other
# attributes. To be confirmed against the DMPi guide before a real connexion secrète.
ATTR_CONFIDENTIALITY = "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"


class VihfError(DestinationRejected):
    """A VIHF that is missing, malformed or whose signature does not verify."""

    default_code = "VIHF_INVALID"


@dataclass(frozen=True, slots=True)
class VihfSettings:
    """What the PFI configuration says about itself; secrets are only file paths here.

    ``subject_id`` is the NameID fallback when the submission set has no author person
    (the DMP wants the person responsible for the automated processing). ``subject_name``
    is the XSPA subject-id ("software, model, service" for an automate).
    """

    key_path: Path
    cert_path: Path
    structure_id: str  # Identifiant_Structure (PRT-8.10 of the SB / FINESS)
    secteur_activite: str = "SA01^1.2.250.1.71.4.2.4"
    subject_id: str | None = None
    subject_name: str = "Relais, passerelle, automate"
    role_code: str = "AUTOMATE"  # JDV_J65; AUTOMATE when no professional role applies
    role_system: str = "1.2.250.1.213.1.1.4.6"
    role_display: str = "AUTOMATE"
    lps_nom: str = "Relais"
    lps_version: str = "0.1.0"
    lps_id: str | None = None
    lps_homologation: str = "NON-HOMOLOGUE"
    vihf_version: str = "3.0"
    issuer: str | None = None  # default: the certificate's subject
    validity_seconds: int = 300
    key_password: bytes | None = None


@lru_cache(maxsize=8)
def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def _subject_nameid(settings: VihfSettings, xds: XdsMetadata) -> str:
    """PRT-5.1 of the SB = idNat of the submission-set author person (XCN component 1)."""
    for author in xds["submissionSet"].get("authors", []):
        person = author.get("authorPerson")
        if person and person.split("^", 1)[0]:
            return person.split("^", 1)[0]
    if settings.subject_id:
        return settings.subject_id
    raise MappingError(
        "no submission-set author person and no configured subject_id for the VIHF NameID",
        code="VIHF_SUBJECT_MISSING",
        location="submissionSet.authors",
    )


def vihf_attributes(
    settings: VihfSettings, xds: XdsMetadata, *, confidentiality_code: str | None = None
) -> dict[str, str]:
    """The plain-string attributes of the VIHF (structured ones — role, purpose — are added by build_vihf)."""
    patient_id = xds["documentEntry"].get("patientId") or xds["submissionSet"].get("patientId")
    if not patient_id or not patient_id.endswith("^NH"):
        raise MappingError(
            "VIHF resource-id needs the INS in CX form with ^NH",
            code="VIHF_RESOURCE_ID",
            location="documentEntry.patientId",
        )
    attrs = {
        "VIHF_Version": settings.vihf_version,
        "Authentification_Mode": "INDIRECTE",
        "Secteur_Activite": settings.secteur_activite,
        ATTR_RESOURCE_ID: patient_id,
        "Ressource_URN": "urn:dmp",
        ATTR_SUBJECT_ID: settings.subject_name,
        "Identifiant_Structure": settings.structure_id,
        "LPS_Nom": settings.lps_nom,
        "LPS_Version": settings.lps_version,
        "LPS_ID_HOMOLOGATION_DMP": settings.lps_homologation,
    }
    if settings.lps_id:
        attrs["LPS_ID"] = settings.lps_id
    if confidentiality_code:
        attrs[ATTR_CONFIDENTIALITY] = confidentiality_code
    return attrs


def _saml(tag: str) -> str:
    return f"{{{SAML_NS}}}{tag}"


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def build_vihf(
    settings: VihfSettings,
    xds: XdsMetadata,
    now: datetime,
    assertion_id: str,
    *,
    confidentiality_code: str | None = None,
) -> etree._Element:
    """Build and sign the VIHF assertion for one DMP request.

    ``assertion_id`` must be an NCName (``_`` + uuid is the usual form); ``now`` must be
    timezone-aware. ``confidentiality_code`` is set for a *connexion secrète* request.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not assertion_id or assertion_id[0].isdigit():
        assertion_id = f"_{assertion_id}"
    key_pem = _read(str(settings.key_path))
    cert_pem = _read(str(settings.cert_path))
    issuer = settings.issuer or x509.load_pem_x509_certificate(cert_pem).subject.rfc4514_string()

    assertion = etree.Element(
        _saml("Assertion"),
        nsmap={"saml": SAML_NS, "xsi": XSI_NS},
        ID=assertion_id,
        IssueInstant=_instant(now),
        Version="2.0",
    )
    etree.SubElement(
        assertion, _saml("Issuer"), Format="urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"
    ).text = issuer
    # signxml fills this placeholder in place, which keeps Signature right after Issuer.
    etree.SubElement(assertion, f"{{{DS_NS}}}Signature", nsmap={"ds": DS_NS}, Id="placeholder")
    subject = etree.SubElement(assertion, _saml("Subject"))
    etree.SubElement(subject, _saml("NameID")).text = _subject_nameid(settings, xds)
    etree.SubElement(
        assertion,
        _saml("Conditions"),
        NotBefore=_instant(now),
        NotOnOrAfter=_instant(now + timedelta(seconds=settings.validity_seconds)),
    )
    authn = etree.SubElement(assertion, _saml("AuthnStatement"), AuthnInstant=_instant(now))
    context = etree.SubElement(authn, _saml("AuthnContext"))
    etree.SubElement(
        context, _saml("AuthnContextClassRef")
    ).text = "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified"

    statement = etree.SubElement(assertion, _saml("AttributeStatement"))
    for name, value in vihf_attributes(settings, xds, confidentiality_code=confidentiality_code).items():
        attribute = etree.SubElement(statement, _saml("Attribute"), Name=name)
        etree.SubElement(attribute, _saml("AttributeValue")).text = value
    _coded_attribute(
        statement,
        ATTR_PURPOSE,
        "PurposeOfUse",
        "normal",
        "1.2.250.1.213.1.1.4.248",
        "Accès normal",
        code_system_name="mode acces VIHF 1.0",
    )
    _coded_attribute(
        statement, ATTR_ROLE, "Role", settings.role_code, settings.role_system, settings.role_display
    )

    signer = XMLSigner(
        signature_algorithm=SignatureMethod.RSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    signer.namespaces = {"ds": DS_NS}
    signed = signer.sign(
        assertion,
        key=key_pem,
        passphrase=settings.key_password,
        cert=cert_pem.decode("ascii"),
        reference_uri=f"#{assertion_id}",
    )
    return signed


def _coded_attribute(
    statement: etree._Element,
    name: str,
    tag: str,
    code: str,
    system: str,
    display: str,
    *,
    code_system_name: str | None = None,
) -> None:
    attribute = etree.SubElement(statement, _saml("Attribute"), Name=name)
    value = etree.SubElement(attribute, _saml("AttributeValue"))
    coded = etree.SubElement(value, f"{{{HL7_NS}}}{tag}", nsmap={None: HL7_NS})
    coded.set("code", code)
    coded.set("codeSystem", system)
    if code_system_name:
        coded.set("codeSystemName", code_system_name)
    coded.set("displayName", display)
    coded.set(f"{{{XSI_NS}}}type", "CE")


def verify_vihf(
    assertion: etree._Element | bytes,
    *,
    cert_pem: bytes | None = None,
    now: datetime | None = None,
) -> etree._Element:
    """Verify the VIHF signature; return the *signed* assertion (use only what it returns).

    With ``cert_pem`` the signature must come from that certificate (the trusted *cachet*
    certificate, pre-shared). Without it the certificate embedded in KeyInfo is used: this
    proves the assertion is intact and self-consistent, **not** who signed it — acceptable
    for the simulator, never for a real relying party. With ``now`` the SAML Conditions
    window is checked too. Raises ``VihfError``.
    """
    data = assertion if isinstance(assertion, bytes) else etree.tostring(assertion)
    try:
        tree = etree.fromstring(data)
    except etree.XMLSyntaxError as exc:
        raise VihfError(f"VIHF is not XML: {exc}") from exc
    if tree.tag != _saml("Assertion"):
        raise VihfError("VIHF root is not saml:Assertion")
    trusted = cert_pem
    if trusted is None:
        found = tree.find(
            f"{{{DS_NS}}}Signature/{{{DS_NS}}}KeyInfo/{{{DS_NS}}}X509Data/{{{DS_NS}}}X509Certificate"
        )
        if found is None or not (found.text or "").strip():
            raise VihfError("VIHF signature has no X509Certificate in KeyInfo")
        trusted = (
            b"-----BEGIN CERTIFICATE-----\n"
            + "".join(found.text.split()).encode()
            + b"\n-----END CERTIFICATE-----\n"
        )
    config = SignatureConfiguration(
        signature_methods=frozenset({SignatureMethod.RSA_SHA256}),
        digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
        expect_references=1,
    )
    try:
        result = XMLVerifier().verify(
            data, x509_cert=trusted.decode("ascii"), expect_config=config, id_attribute="ID"
        )
    except (SignXMLException, InvalidInput, ValueError) as exc:
        raise VihfError(f"VIHF signature does not verify: {exc}", code="VIHF_SIGNATURE") from exc
    signed = result.signed_xml  # type: ignore[union-attr]
    if signed is None or signed.tag != _saml("Assertion"):
        raise VihfError("VIHF signature does not cover the assertion", code="VIHF_SIGNATURE")
    if now is not None:
        conditions = signed.find(_saml("Conditions"))
        if conditions is not None:
            stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
            not_before = (conditions.get("NotBefore") or "")[:19]
            not_after = (conditions.get("NotOnOrAfter") or "")[:19]
            if (not_before and stamp < not_before) or (not_after and stamp >= not_after):
                raise VihfError("VIHF is outside its validity window", code="VIHF_EXPIRED")
    return signed
