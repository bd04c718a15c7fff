"""VIHF: the SAML 2.0 assertion that authenticates a DMP request in indirect mode.

Written from the volet "Transmission de documents CDA en HL7v2"
(ansforge/IG-hl7v2-volet-transmission-document-cda-r2, ``input/pagecontent/mapping.md``,
table "Mapping VIHF", and the anonymised VIHF example on that page, kept in
``../shared/corpus/xds/examples/ans-vihf/``), SAML 2.0 Core §2.3-2.7 and the SAML V2.0
signature rules (SAML Core §5.4: enveloped signature over the assertion ``ID``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from lxml import etree

from adapters.dmp.conformance import identifiers as ids
from adapters.dmp.conformance.names import NS, SS
from adapters.dmp.conformance.registry_objects import Metadata, RegistryObject
from adapters.dmp.conformance.valuesets import value_set
from adapters.dmp.conformance.violation import Rule, Violation
from adapters.dmp.conformance.xmldsig import SignatureCheck, trust_problems, verify_signature

__all__ = ["Vihf", "read_vihf", "check_vihf_security", "check_vihf_content", "ATTR"]

SAML = NS["saml"]
_MAPPING = "volet CDA HL7v2 input/pagecontent/mapping.md 'Mapping VIHF'"


class ATTR:
    """VIHF attribute names (volet mapping table)."""

    VERSION = "VIHF_Version"
    STRUCTURE = "Identifiant_Structure"
    SECTOR = "Secteur_Activite"
    SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
    ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
    MODE = "Authentification_Mode"
    RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
    RESOURCE_URN = "Ressource_URN"
    PURPOSE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
    CONFIDENTIALITY = "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"
    LPS_ID = "LPS_ID"
    LPS_NAME = "LPS_Nom"
    LPS_VERSION = "LPS_Version"
    LPS_HOMOLOGATION = "LPS_ID_HOMOLOGATION_DMP"


SIGNED = Rule(
    "VIHF-SIG-01",
    "the assertion carries an enveloped XML-DSig signature over its ID that verifies",
    f"{_MAPPING} (//Assertion/ds:Signature, cachet certificate); SAML 2.0 Core §5.4",
    "XDSRegistryError",
    fault="wsse:FailedCheck",
)
TRUSTED = Rule(
    "VIHF-SIG-02",
    "the assertion is signed with the structure's cachet certificate (trusted, within validity)",
    f"{_MAPPING} (Signature / Issuer = DN of the cachet certificate)",
    "XDSRegistryError",
    fault="wsse:FailedCheck",
)
VALIDITY = Rule(
    "VIHF-TIME-01",
    "IssueInstant present; Conditions NotBefore/NotAfter, when given, contain the reception time",
    f"{_MAPPING} (//Assertion/@IssueInstant, Conditions facultatives); SAML 2.0 Core §2.5.1.2",
    "XDSRegistryError",
    fault="wsse:FailedCheck",
)
ISSUER = Rule(
    "VIHF-ISSUER-01",
    "Issuer is the certificate DN with Format urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName",
    f"{_MAPPING} (//Assertion/Issuer, //Assertion/Issuer/@Format)",
    "XDSRegistryError",
)
REQUIRED = Rule(
    "VIHF-ATTR-01",
    "the VIHF attributes of the mapping table are present once each (multi-valued: subject:role)",
    _MAPPING,
    "XDSRegistryError",
)
VERSION = Rule(
    "VIHF-VERSION-01",
    "VIHF_Version is the constant 4.0",
    f"{_MAPPING} (VIHF_Version: Constante '4.0')",
    "XDSRegistryError",
)
MODE = Rule(
    "VIHF-MODE-01",
    "Authentification_Mode is INDIRECTE",
    f"{_MAPPING} (Constante 'INDIRECTE')",
    "XDSRegistryError",
)
RESOURCE = Rule(
    "VIHF-RES-01",
    "Ressource_URN = urn:dmp; resource-id = the INS of the submission (CX ^NH)",
    f"{_MAPPING} (Ressource_URN constante, resource-id ← PID-3)",
    "XDSRegistryError",
)
PURPOSE = Rule(
    "VIHF-POU-01",
    "purposeofuse is code 'normal' (1.2.250.1.213.1.1.4.248)",
    f"{_MAPPING} (purposeofuse: code='normal'); ANS VIHF example",
    "XDSRegistryError",
)
STRUCTURE = Rule(
    "VIHF-STRUCT-01",
    "Identifiant_Structure is the sender's Struct_IdNat: in indirect mode one of the SubmissionSet "
    "authorInstitution ids",
    f"{_MAPPING} (Identifiant_Structure ← PRT-8 of the SB PRT); mapping 'Lot de soumission' "
    "authorInstitution ← PRT-8 SB; PDSM4DMP StructIdNat.fsh",
    "XDSRegistryError",
)
SUBJECT = Rule(
    "VIHF-SUBJ-01",
    "Subject/NameID = the sender's id (PRT-5.1, the SubmissionSet authorPerson id); subject-id names "
    "the sender (PRT-5.2/5.3), never a constant",
    f"{_MAPPING} (NameID ← PRT-5.1, subject-id ← PRT-5.2 et PRT-5.3)",
    "XDSRegistryError",
)
ROLE = Rule(
    "VIHF-ROLE-01",
    "subject:role occurrences: 1st from J65 on G15/G16 (professionals) or A00/R95/R94/R291 (others); "
    "2nd only and always for physicians (R01) and pharmacists (G05); 3rd R85, 4th R22 only after them",
    f"{_MAPPING} (urn:oasis:names:tc:xacml:2.0:subject:role, 1re-4e occurrences); ValueSet JDV_J65",
    "XDSRegistryError",
)
SECTOR = Rule(
    "VIHF-SECT-01",
    "Secteur_Activite is code^1.2.250.1.71.4.2.4 from JDV_J61",
    f"{_MAPPING} (Secteur_Activite: JDV_J61); ANS VIHF example 'SA41^1.2.250.1.71.4.2.4'",
    "XDSRegistryError",
)
CONFIDENTIALITY = Rule(
    "VIHF-CONF-01",
    "confidentiality-code present when the request is a secret connection (documents flagged "
    "INVISIBLE_REPRESENTANTS_LEGAUX), with a JDV_J58 code",
    f"{_MAPPING} (confidentiality-code: obligatoire si demande de connexion secrète); TRE_A07",
    "XDSRegistryError",
)

# VIHF-SIG-02: signed with the structure's cachet certificate, used within its validity.
_TRUST_TEXTS = (
    "the assertion is not signed with the trusted cachet certificate",
    "the signing certificate is outside its validity period",
)
# An assertion cannot be issued after it is received; allow for clocks a few minutes apart.
_CLOCK_SKEW = timedelta(minutes=5)
_ISSUER_FORMAT = "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"
_SINGLE = (
    ATTR.VERSION,
    ATTR.STRUCTURE,
    ATTR.SECTOR,
    ATTR.SUBJECT_ID,
    ATTR.MODE,
    ATTR.RESOURCE_ID,
    ATTR.RESOURCE_URN,
    ATTR.PURPOSE,
    ATTR.LPS_NAME,
    ATTR.LPS_VERSION,
    ATTR.LPS_HOMOLOGATION,
)
# Code systems of JDV_J65 (OIDs from the CodeSystem identifiers of the ANS terminology IG).
_G15, _G16 = "1.2.250.1.71.1.2.7", "1.2.250.1.71.1.2.8"
_A00, _R95, _R94, _R291 = (
    "1.2.250.1.213.1.1.4.6",
    "1.2.250.1.213.1.6.1.109",
    "1.2.250.1.213.1.6.1.4",
    "1.2.250.1.213.1.6.1.140",
)
_R01, _G05, _R85, _R22 = (
    "1.2.250.1.71.4.2.5",
    "1.2.250.1.71.4.2.6",
    "1.2.250.1.213.1.6.1.107",
    "1.2.250.1.213.1.6.1.19",
)
_FIRST_ROLE = {_G15, _G16, _A00, _R95, _R94, _R291}
# Values that identify nobody. A plausible-looking constant (a software name) is caught by the
# comparison with the SubmissionSet author instead (subject-id ← PRT-5.2/5.3 of the sender).
_PLACEHOLDERS = {
    "",
    "x",
    "xx",
    "xxx",
    "unknown",
    "inconnu",
    "n/a",
    "na",
    "none",
    "null",
    "test",
    "automate",
    "xxxxx",
    "00000000000",
    "10000000000000",
}


@dataclass
class Vihf:
    """The assertion's attributes (name → values; CE values as ``code^codeSystem``) and NameID."""

    element: etree._Element
    attributes: dict[str, list[str]] = field(default_factory=dict)
    name_id: str | None = None
    issuer: str | None = None
    issuer_format: str | None = None

    def one(self, name: str) -> str | None:
        """The single value of ``name``, or None when absent or repeated."""
        values = self.attributes.get(name) or []
        return values[0] if len(values) == 1 else None

    def as_json(self) -> dict[str, object]:
        """Attribute name → values, plus ``NameID`` (the /_sim/submissions form)."""
        data: dict[str, object] = {k: list(v) for k, v in self.attributes.items()}
        data["NameID"] = self.name_id
        return data


def read_vihf(assertion: etree._Element) -> Vihf:
    """Attributes of the assertion, without judging them."""
    vihf = Vihf(assertion)
    issuer = assertion.find(f"{{{SAML}}}Issuer")
    if issuer is not None:
        vihf.issuer = (issuer.text or "").strip()
        vihf.issuer_format = issuer.get("Format")
    name_id = assertion.find(f"{{{SAML}}}Subject/{{{SAML}}}NameID")
    vihf.name_id = (name_id.text or "").strip() if name_id is not None else None
    for attribute in assertion.iter(f"{{{SAML}}}Attribute"):
        values = vihf.attributes.setdefault(attribute.get("Name", ""), [])
        for value in attribute.findall(f"{{{SAML}}}AttributeValue"):
            child = next((c for c in value if isinstance(c.tag, str)), None)
            if child is not None:
                values.append(f"{child.get('code', '')}^{child.get('codeSystem', '')}")
            else:
                values.append((value.text or "").strip())
    return vihf


def _instant(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def check_vihf_security(
    vihf: Vihf, *, trusted: x509.Certificate | None, now: datetime | None
) -> tuple[list[Violation], bool]:
    """Signature, trust and validity window (refused with a SOAP fault, WS-Security §12)."""
    assertion = vihf.element
    signature = assertion.find(f"{{{NS['ds']}}}Signature")
    if signature is None:
        return [SIGNED("the assertion is not signed")], False
    check = verify_signature(signature, trusted=None, now=None)
    found, verified = _signature_checks(assertion, check)
    if check.certificate is not None:
        trust = trust_problems(check.certificate, trusted=trusted, now=now, texts=_TRUST_TEXTS)
        found += [TRUSTED(problem) for problem in trust]
    found += _issue_instant_checks(assertion, now)
    found += _conditions_checks(assertion, now)
    return found, verified


def _signature_checks(assertion: etree._Element, check: SignatureCheck) -> tuple[list[Violation], bool]:
    """VIHF-SIG-01: the signature verifies and one verified reference is the assertion ID (SAML Core §5.4)."""
    assertion_id = assertion.get("ID", "")
    covers = any(r.uri == f"#{assertion_id}" and r.ok for r in check.references)
    if not check.valid:
        return [SIGNED("; ".join(check.problems) or "signature does not verify")], False
    if not covers:
        return [SIGNED(f"no verified reference to the assertion ID #{assertion_id}")], False
    return [], True


def _issue_instant_checks(assertion: etree._Element, now: datetime | None) -> list[Violation]:
    """VIHF-TIME-01: IssueInstant is an xs:dateTime, not later than reception (SAML Core §2.3.3)."""
    issued = _instant(assertion.get("IssueInstant"))
    if issued is None:
        return [VALIDITY("IssueInstant missing or not an xs:dateTime")]
    if now is not None and issued > now + _CLOCK_SKEW:
        return [VALIDITY(f"IssueInstant {assertion.get('IssueInstant')} is in the future")]
    return []


def _conditions_checks(assertion: etree._Element, now: datetime | None) -> list[Violation]:
    """VIHF-TIME-01: optional Conditions NotBefore/NotAfter contain the reception time (SAML Core §2.5.1.2)."""
    conditions = assertion.find(f"{{{SAML}}}Conditions")
    if now is None or conditions is None:
        return []
    found: list[Violation] = []
    not_before = _instant(conditions.get("NotBefore"))
    not_after = _instant(conditions.get("NotAfter"))
    if not_before is not None and now < not_before:
        found.append(VALIDITY(f"assertion not valid before {conditions.get('NotBefore')}"))
    if not_after is not None and now >= not_after:
        found.append(VALIDITY(f"assertion expired at {conditions.get('NotAfter')}"))
    return found


def _role_checks(roles: list[str]) -> list[Violation]:
    """VIHF-ROLE-01: the 1st to 4th subject:role occurrences, each from JDV_J65."""
    found: list[Violation] = []
    pairs = [tuple(r.split("^", 1)) if "^" in r else (r, "") for r in roles]
    j65 = value_set("J65")
    for code, system in pairs:
        if (code, system) not in j65:
            found.append(ROLE(f"role {code}^{system} is not in JDV_J65"))
    if not pairs:
        return [ROLE("no subject:role (1st occurrence is mandatory)")]
    first_code, first_system = pairs[0]
    if first_system not in _FIRST_ROLE:
        found.append(ROLE(f"1st role {first_code}^{first_system} is not a profession/producer code"))
    needs_second = {("10", _G15): _R01, ("21", _G15): _G05, ("10", _G16): _R01, ("21", _G16): _G05}
    wanted = needs_second.get((first_code, first_system))
    if wanted:
        if len(pairs) < 2 or pairs[1][1] != wanted:
            found.append(ROLE(f"a {first_code} (physician/pharmacist) needs a 2nd role from {wanted}"))
    elif any(system in (_R01, _G05) for _, system in pairs[1:]):
        found.append(ROLE("a savoir-faire/CNOP 2nd role only for physicians and pharmacists"))
    rest = [s for _, s in pairs[1:] if s not in (_R01, _G05)]
    allowed = [_R85, _R22]
    if any(s not in allowed for s in rest) or (rest and rest[0] != _R85):
        found.append(ROLE("roles after the 1st/2nd: R85 (3rd) then optionally R22 (4th)"))
    return found


# Attributes whose value is a constant of the mapping table: (attribute, expected, rule, label).
_CONSTANTS = (
    (ATTR.VERSION, "4.0", VERSION, "VIHF_Version"),  # VIHF_Version: Constante '4.0'
    (ATTR.MODE, "INDIRECTE", MODE, "Authentification_Mode"),  # Constante 'INDIRECTE'
    (ATTR.RESOURCE_URN, "urn:dmp", RESOURCE, "Ressource_URN"),  # Ressource_URN constante
    (ATTR.PURPOSE, "normal^1.2.250.1.213.1.1.4.248", PURPOSE, "purposeofuse"),  # code='normal'
)


def check_vihf_content(vihf: Vihf, metadata: Metadata | None, *, secret_connection: bool) -> list[Violation]:
    """Attribute rules; ``metadata`` (ITI-41/57) ties the VIHF to the submission set."""
    found = _issuer_checks(vihf) + _required_checks(vihf) + _constant_checks(vihf) + _sector_checks(vihf)
    found += _role_checks(vihf.attributes.get(ATTR.ROLE, []))
    found += _placeholder_checks(vihf)
    found += _confidentiality_checks(vihf, secret_connection=secret_connection)
    ss = metadata.submission_set if metadata is not None else None
    if ss is None:
        return found
    return found + _resource_tie(vihf, ss) + _structure_tie(vihf, ss) + _subject_tie(vihf, ss)


def _issuer_checks(vihf: Vihf) -> list[Violation]:
    """VIHF-ISSUER-01: Issuer is the certificate DN, Format X509SubjectName."""
    if vihf.issuer_format != _ISSUER_FORMAT or not vihf.issuer:
        return [ISSUER(f"Issuer {vihf.issuer!r} with Format {vihf.issuer_format!r}")]
    return []


def _required_checks(vihf: Vihf) -> list[Violation]:
    """VIHF-ATTR-01: every single-valued attribute of the mapping table, and the NameID, once each."""
    missing = [name for name in _SINGLE if len(vihf.attributes.get(name, [])) != 1 or not vihf.one(name)]
    if not vihf.name_id:
        missing.append("Subject/NameID")
    if missing:
        return [REQUIRED(f"missing, empty or repeated: {', '.join(missing)}")]
    return []


def _constant_checks(vihf: Vihf) -> list[Violation]:
    """VIHF-VERSION-01, VIHF-MODE-01, VIHF-RES-01 (URN), VIHF-POU-01: the mapping table's constants."""
    found: list[Violation] = []
    for name, expected, rule, label in _CONSTANTS:
        value = vihf.one(name)
        if value is not None and value != expected:
            found.append(rule(f"{label} is {value!r}"))
    return found


def _sector_checks(vihf: Vihf) -> list[Violation]:
    """VIHF-SECT-01: Secteur_Activite is a JDV_J61 code^OID."""
    sector = vihf.one(ATTR.SECTOR)
    if sector is not None and tuple(sector.split("^", 1)) not in value_set("J61"):
        return [SECTOR(f"Secteur_Activite {sector!r} is not a JDV_J61 code^OID")]
    return []


def _placeholder_checks(vihf: Vihf) -> list[Violation]:
    """VIHF-SUBJ-01: NameID and subject-id name the sender, never a placeholder."""
    return [
        SUBJECT(f"{value!r} is a placeholder, not the sender")
        for value in (vihf.name_id, vihf.one(ATTR.SUBJECT_ID))
        if value is not None and value.strip().lower() in _PLACEHOLDERS
    ]


def _confidentiality_checks(vihf: Vihf, *, secret_connection: bool) -> list[Violation]:
    """VIHF-CONF-01: confidentiality-code present for a secret connection, each a JDV_J58 code^OID."""
    confidentiality = vihf.attributes.get(ATTR.CONFIDENTIALITY, [])
    found: list[Violation] = []
    if secret_connection and not confidentiality:
        found.append(CONFIDENTIALITY("secret connection requested but no confidentiality-code attribute"))
    found += [
        CONFIDENTIALITY(f"confidentiality-code {value!r} is not a JDV_J58 code^OID")
        for value in confidentiality
        if tuple(value.split("^", 1)) not in value_set("J58")
    ]
    return found


def _resource_tie(vihf: Vihf, ss: RegistryObject) -> list[Violation]:
    """VIHF-RES-01: resource-id is the INS of the submission (resource-id ← PID-3)."""
    resource = vihf.one(ATTR.RESOURCE_ID)
    if resource is not None and resource != ss.external_ids.get(SS.PATIENT_ID):
        return [RESOURCE(f"resource-id {resource!r} is not the SubmissionSet patientId")]
    return []


def _structure_tie(vihf: Vihf, ss: RegistryObject) -> list[Violation]:
    """VIHF-STRUCT-01: Identifiant_Structure is a Struct_IdNat and one of the authorInstitution ids."""
    structure = vihf.one(ATTR.STRUCTURE)
    if structure is None:
        return []
    found: list[Violation] = []
    problem = ids.struct_id_problem(structure)
    if problem:
        found.append(STRUCTURE(problem))
    institutions = [ids.xon_id(x) for a in ss.authors for x in a.institutions]
    if structure not in institutions:
        found.append(
            STRUCTURE(
                f"Identifiant_Structure {structure!r} is none of the authorInstitution ids {institutions}"
            )
        )
    return found


def _subject_tie(vihf: Vihf, ss: RegistryObject) -> list[Violation]:
    """VIHF-SUBJ-01: NameID ← PRT-5.1 (authorPerson id), subject-id ← PRT-5.2 et PRT-5.3 (its names)."""
    persons = [p for a in ss.authors for p in a.person]
    if not persons:
        return []
    found: list[Violation] = []
    if vihf.name_id and vihf.name_id not in {ids.xcn_id(p) for p in persons}:
        found.append(SUBJECT(f"NameID {vihf.name_id!r} is not the SubmissionSet authorPerson id"))
    subject_id = (vihf.one(ATTR.SUBJECT_ID) or "").lower()
    if subject_id:
        family, given = ids.xcn_names(persons[0])
        absent = [n for n in (family, given) if n and n.lower() not in subject_id]
        if absent:
            found.append(SUBJECT(f"subject-id does not name the author ({', '.join(absent)} absent)"))
    return found
