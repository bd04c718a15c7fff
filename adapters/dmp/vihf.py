"""VIHF: the SAML 2.0 identification vector the DMP requires in the WS-Security header.

Attribute names and layout follow the ANS example of the HL7 v2 CDA transmission guide
(``mapping.md``, case of an automated PFI, indirect authentication). The assertion is
signed *enveloped* (RSA-SHA256, exclusive c14n, SHA-256 digest) with signxml, the
``ds:Signature`` placed right after ``saml:Issuer`` as SAML 2.0 requires.

Where each value comes from — volet ``mapping.md``, table "Mapping VIHF pour le DMP":

* ``Identifiant_Structure`` = Struct_IdNat of the SB PRT's organisation (PRT-8.7/8.10,
  ``xds["request"]["sender"]["structureIdNat"]``); in indirect mode it must be one of the
  authorInstitution ids of the request (checked here: ``VIHF_STRUCTURE_NOT_AUTHOR``);
* ``Subject/NameID`` = PRT-5.1 (or PRT-10.1 for a system); ``subject-id`` = PRT-5.2, PRT-5.3
  and the service (PRT-9.1), "Nom, Prénom et Service" (software and model for a system);
* ``subject:role`` = codes of JDV_J65, which the message cannot carry: configured per
  sending application (MSH-3), first occurrence mandatory, a second one mandatory for a
  physician or pharmacist (G15 codes 10 / 21); ``AUTOMATE`` (TRE_A00, in J65) is the
  fallback the table allows for "les autres" when nothing is configured;
* ``VIHF_Version`` = the table's constant ``4.0`` (the XML example on the same page says
  3.0; the table is the normative part);
* ``urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code`` when the message
  asks for a secret connection (CONNEXION_SECRETE = Y);
* ``Secteur_Activite`` and the LPS identity from configuration.

``build_vihf`` is pure apart from reading the key/certificate files named in the
settings; ``now`` and ``assertion_id`` are injected. ``verify_vihf`` is what the
simulator (and any test) uses to check one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import structlog
from cryptography import x509
from lxml import etree
from signxml import SignatureConfiguration, XMLSigner, XMLVerifier
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidInput, SignXMLException

from gateway.errors import DestinationRejected, MappingError
from gateway.model import XdsMetadata, XdsSender

__all__ = [
    "SAML_NS",
    "DS_NS",
    "HL7_NS",
    "VihfSettings",
    "VihfError",
    "SubjectRole",
    "parse_roles",
    "check_vihf_settings",
    "build_vihf",
    "verify_vihf",
    "vihf_attributes",
    "subject_roles",
]

log = structlog.get_logger(__name__)

SAML_NS = "urn:oasis:names:tc:SAML:2.0:assertion"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
HL7_NS = "urn:hl7-org:v3"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

ATTR_RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
ATTR_SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
ATTR_PURPOSE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
ATTR_ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
# Name from the volet mapping table ("Obligatoire ... si demande de connexion secrète au
# DMP"). Its value: the TRE_A07 code INVISIBLE_PATIENT (1.2.250.1.213.1.1.4.13), the DMP's
# marker of a document hidden from the patient, which is what a secret connection asks for.
ATTR_CONFIDENTIALITY = "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"
SECRET_CONNECTION_CODE = ("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13", "Non visible par le patient")
#: JDV_J65 (1.2.250.1.213.1.1.5.5) code for an automated processing (TRE_A00).
AUTOMATE = ("AUTOMATE", "1.2.250.1.213.1.1.4.6", "Automate")
#: TRE_G15 profession codes that need a second role occurrence (the savoir-faire /
#: CNOP sub-section), per the mapping table: 10 médecin, 21 pharmacien.
_G15 = "1.2.250.1.71.1.2.7"
_NEEDS_SECOND_ROLE = {("10", _G15), ("21", _G15)}


class VihfError(DestinationRejected):
    """A VIHF that is missing, malformed or whose signature does not verify."""

    default_code = "VIHF_INVALID"


@dataclass(frozen=True, slots=True)
class SubjectRole:
    """One ``subject:role`` occurrence: a JDV_J65 code and its code system OID."""

    code: str
    system: str
    display: str


@dataclass(frozen=True, slots=True)
class VihfSettings:
    """What the PFI configuration says about itself; secrets are only file paths here.

    Only what the message cannot give (volet mapping table): the J65 ``roles`` per sending
    application (MSH-3) and ``default_roles``, ``secteur_activite``, the LPS identity.
    ``structure_id``, ``subject_id`` and ``subject_name`` are fallbacks for requests that
    came without an SB PRT (a CDA posted over HTTP).
    """

    key_path: Path
    cert_path: Path
    structure_id: str | None = None  # fallback Identifiant_Structure (Struct_IdNat)
    secteur_activite: str = "SA01^1.2.250.1.71.4.2.4"
    subject_id: str | None = None
    subject_name: str = "Relais, passerelle, automate"
    roles: Mapping[str, tuple[SubjectRole, ...]] = field(default_factory=dict)
    default_roles: tuple[SubjectRole, ...] = ()
    lps_nom: str = "Relais"
    lps_version: str = "0.1.0"
    lps_id: str | None = None
    lps_homologation: str = "NON-HOMOLOGUE"
    vihf_version: str = "4.0"
    issuer: str | None = None  # default: the certificate's subject
    validity_seconds: int = 300
    key_password: bytes | None = None


def parse_roles(values: Sequence[str] | str, where: str) -> tuple[SubjectRole, ...]:
    """``["10^1.2.250.1.71.1.2.7", "SM26^1.2.250.1.71.4.2.5"]`` → roles checked against JDV_J65.

    Raises ``ValueError`` (a one-line configuration error) for a code outside J65, an empty
    list, or a physician / pharmacist profession without its second occurrence.
    """
    from gateway.core import terminology

    items = [values] if isinstance(values, str) else list(values)
    roles: list[SubjectRole] = []
    for item in items:
        code, _, system = str(item).partition("^")
        if not code or not system:
            raise ValueError(f"{where}: role {item!r} must be written code^codeSystemOID")
        if not terminology.in_value_set("jdv_j65_subjectrole_dmp", code, system):
            raise ValueError(f"{where}: role {code}^{system} is not in JDV_J65-SubjectRole-DMP")
        display = terminology.display("jdv_j65_subjectrole_dmp", code, system) or code
        roles.append(SubjectRole(code, system, display))
    if not roles:
        raise ValueError(f"{where}: at least one role (the first occurrence is mandatory)")
    first = roles[0]
    if (first.code, first.system) in _NEEDS_SECOND_ROLE and len(roles) < 2:
        raise ValueError(
            f"{where}: profession {first.code} needs a second role occurrence (savoir-faire or CNOP "
            "sub-section, volet mapping table)"
        )
    return tuple(roles)


def check_vihf_settings(settings: VihfSettings) -> None:
    """Refuse settings the DMP would refuse at the first request. Raises ``ValueError``."""
    if not settings.secteur_activite or "^" not in settings.secteur_activite:
        raise ValueError("vihf_secteur_activite must be a JDV_J61 code^OID, e.g. SA01^1.2.250.1.71.4.2.4")
    for app, roles in settings.roles.items():
        if not roles:
            raise ValueError(f"vihf_roles.{app}: at least one role")


@lru_cache(maxsize=8)
def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def _sender(xds: XdsMetadata) -> XdsSender:
    return xds.get("request", {}).get("sender", {})


def _subject_nameid(settings: VihfSettings, xds: XdsMetadata) -> str:
    """PRT-5.1 of the SB (mapping table: ``//Assertion/Subject/NameID``)."""
    sender = _sender(xds)
    if sender.get("id"):
        return sender["id"]
    for author in xds["submissionSet"].get("authors", []):
        person = author.get("authorPerson")
        if person and person.split("^", 1)[0]:
            return person.split("^", 1)[0]
    if settings.subject_id:
        return settings.subject_id
    raise MappingError(
        "no SB PRT person (PRT-5.1), no submission-set author and no configured subject_id for the VIHF NameID",
        code="VIHF_SUBJECT_MISSING",
        location="PRT-5.1",
    )


def _subject_name(settings: VihfSettings, xds: XdsMetadata) -> str:
    """subject-id: "Nom, Prénom, Service" (a person) or "Logiciel, Modèle, Service" (a system)."""
    sender = _sender(xds)
    if sender.get("device"):
        parts = [sender.get("software"), sender.get("model"), sender.get("service")]
    else:
        parts = [sender.get("family"), sender.get("given"), sender.get("service")]
    words = [p for p in parts if p]
    if not words:
        # No SB PRT (a CDA over HTTP): the submission-set author person, which the request is
        # submitted in the name of — XCN.2/XCN.3 (family, given; system and model for an
        # ActorSystem).
        for author in xds["submissionSet"].get("authors", []):
            xcn = (author.get("authorPerson") or "").split("^")
            words = [w for w in xcn[1:3] if w]
            if words:
                break
    return ", ".join(words) if words else settings.subject_name


def _institution_ids(xds: XdsMetadata) -> set[str]:
    """XON.10 of every authorInstitution of the request (submission set and document)."""
    ids: set[str] = set()
    authors = [*xds["submissionSet"].get("authors", []), *xds["documentEntry"].get("authors", [])]
    for author in authors:
        for xon in author.get("authorInstitution", []):
            parts = xon.split("^")
            if len(parts) >= 10 and parts[9]:
                ids.add(parts[9])
    return ids


def _structure_id(settings: VihfSettings, xds: XdsMetadata) -> str:
    """Identifiant_Structure: Struct_IdNat from PRT-8 of the SB PRT (mapping table)."""
    structure = _sender(xds).get("structureIdNat") or settings.structure_id
    if not structure:
        raise MappingError(
            "no Struct_IdNat for the VIHF Identifiant_Structure: the SB PRT has no PRT-8.10 and no "
            "vihf_structure_id is configured",
            code="VIHF_STRUCTURE_MISSING",
            location="PRT-8.10",
        )
    institutions = _institution_ids(xds)
    if institutions and structure not in institutions:
        # Indirect authentication: the structure that vouches for the request must be the
        # one the request is submitted in the name of (issue #9; volet mapping table).
        raise MappingError(
            f"VIHF Identifiant_Structure {structure} is none of the authorInstitution ids of the request",
            code="VIHF_STRUCTURE_NOT_AUTHOR",
            location="PRT-8.10",
        )
    return structure


def subject_roles(settings: VihfSettings, xds: XdsMetadata) -> tuple[SubjectRole, ...]:
    """The configured J65 roles of the sending application, else the defaults, else AUTOMATE."""
    app = xds.get("request", {}).get("sendingApplication") or ""
    roles = settings.roles.get(app) or settings.default_roles
    if roles:
        return roles
    sender = _sender(xds)
    if sender.get("id") and not sender.get("device"):
        # The table keeps AUTOMATE for "les autres"; a professional sender needs its G15
        # profession (and savoir-faire) configured: say so, without naming the person.
        log.warning("vihf.role_fallback", sending_application=app, hint="set vihf_roles for this application")
    return (SubjectRole(*AUTOMATE),)


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
        ATTR_SUBJECT_ID: _subject_name(settings, xds),
        "Identifiant_Structure": _structure_id(settings, xds),
        "LPS_Nom": settings.lps_nom,
        "LPS_Version": settings.lps_version,
        "LPS_ID_HOMOLOGATION_DMP": settings.lps_homologation,
    }
    if settings.lps_id:
        attrs["LPS_ID"] = settings.lps_id
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
    for name, value in vihf_attributes(settings, xds).items():
        attribute = etree.SubElement(statement, _saml("Attribute"), Name=name)
        etree.SubElement(attribute, _saml("AttributeValue")).text = value
    _coded_attribute(
        statement,
        ATTR_PURPOSE,
        "PurposeOfUse",
        [("normal", "1.2.250.1.213.1.1.4.248", "Accès normal")],
        code_system_name="mode acces VIHF 1.0",
    )
    # Mapping table: one subject:role attribute, the occurrences in their order.
    roles = subject_roles(settings, xds)
    _coded_attribute(statement, ATTR_ROLE, "Role", [(r.code, r.system, r.display) for r in roles])
    secret = confidentiality_code or (
        SECRET_CONNECTION_CODE[0] if xds.get("request", {}).get("secretConnection") else None
    )
    if secret:
        _coded_attribute(
            statement,
            ATTR_CONFIDENTIALITY,
            "ConfidentialityCode",
            [(secret, SECRET_CONNECTION_CODE[1], SECRET_CONNECTION_CODE[2])],
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
    values: Sequence[tuple[str, str, str]],
    *,
    code_system_name: str | None = None,
) -> None:
    """One Attribute with one HL7 v3 CE AttributeValue per ``(code, system, display)``."""
    attribute = etree.SubElement(statement, _saml("Attribute"), Name=name)
    for code, system, display in values:
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
