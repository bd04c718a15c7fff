"""The DMP conformance checker, rule by rule: each test breaks exactly one rule of a known-good request.

Requests come from ``tests/dmp_request_builder.py`` (hand-made lxml templates, VIHF signed with
signxml), never from the client's builders.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from adapters.dmp.conformance import DEFAULT_XSD_DIR, RULES, ConformanceChecker, KnownEntry, Verdict
from adapters.dmp.testing import TEST_CERT
from tests.dmp_request_builder import (
    INS_CX,
    RIM,
    XDSB,
    GoodQuery,
    GoodRequest,
    GoodUpdate,
    Vihf,
    Xades,
    default_vihf,
)

APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
DELETED = "urn:asip:ci-sis:2010:StatusType:Deleted"
ARCHIVED = "urn:asip:ci-sis:2010:StatusType:Archived"
OTHER_INS = "185057800608491^^^&1.2.250.1.213.1.4.10&ISO^NH"
HAS_XSD = (DEFAULT_XSD_DIR / "IHE" / "XDS.b_DocumentRepository.xsd").exists()
CONF = "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"
ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"


class Registry:
    """A registry view with explicit content."""

    def __init__(self, *entries: KnownEntry) -> None:
        self.entries = {e.entry_uuid: e for e in entries}

    def entry(self, entry_uuid: str) -> KnownEntry | None:
        return self.entries.get(entry_uuid)

    def has_unique_id(self, unique_id: str) -> bool:
        return any(e.unique_id == unique_id for e in self.entries.values())


OLD = KnownEntry("urn:uuid:11111111-1111-4111-8111-111111111111", "1.2.250.1.999999.1.7.0", INS_CX, APPROVED)


@pytest.fixture(scope="module")
def checker() -> ConformanceChecker:
    trusted = x509.load_pem_x509_certificate(TEST_CERT.read_bytes())
    return ConformanceChecker(trusted_cert=trusted, xsd_dir=DEFAULT_XSD_DIR if HAS_XSD else None)


def check41(checker: ConformanceChecker, request: GoodRequest, registry: Registry | None = None) -> Verdict:
    content_type, body = request.build()
    return checker.check("ITI-41", content_type, body, registry or Registry(OLD))


def rules(verdict: Verdict) -> set[str]:
    return {v.rule for v in verdict.violations}


def only(verdict: Verdict, rule: str) -> None:
    assert rule in RULES or rule.startswith("ITI18")
    assert rules(verdict) == {rule}, [(v.rule, v.text) for v in verdict.violations]
    assert not verdict.accepted


def vihf_with(**changes: list | None) -> Vihf:
    attributes = default_vihf()
    for name, value in changes.items():
        key = {"conf": CONF, "role": ROLE}.get(name, name)
        if value is None:
            attributes.pop(key, None)
        else:
            attributes[key] = value
    return Vihf(attributes=attributes)


def other_pki(tmp_path: Path) -> tuple[object, x509.Certificate]:
    from tools.make_test_pki import make_test_pki

    key_path, cert_path = make_test_pki(tmp_path)
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    return key, x509.load_pem_x509_certificate(Path(cert_path).read_bytes())


# -- the known-good requests ---------------------------------------------------------------


def test_known_good_iti41_passes_every_rule(checker: ConformanceChecker) -> None:
    verdict = check41(checker, GoodRequest())
    assert verdict.violations == [] and verdict.accepted
    assert verdict.xades_valid is True
    assert verdict.schema_checked is HAS_XSD
    assert verdict.vihf is not None and verdict.vihf.as_json()["NameID"] == "801234564895"
    assert verdict.vihf.as_json()["Identifiant_Structure"] == ["1120456789"]


def test_known_good_iti41_inline_base64_also_passes(checker: ConformanceChecker) -> None:
    assert check41(checker, GoodRequest(inline=True)).violations == []


def test_replacement_of_an_approved_entry_passes(checker: ConformanceChecker) -> None:
    assert check41(checker, GoodRequest(replaces=OLD.entry_uuid)).violations == []


def test_system_author_in_actorsystem_form_passes(checker: ConformanceChecker) -> None:
    system = "RELAIS-01^Relais^Passerelle^^^^^^&1.2.250.1.71.4.2.1&ISO^U^^^RI"
    assert check41(checker, GoodRequest(entry={"authorPerson": [system]})).violations == []


def test_known_good_iti57_and_iti18_pass(checker: ConformanceChecker) -> None:
    content_type, body = GoodUpdate(OLD.entry_uuid).build()
    verdict = checker.check("ITI-57", content_type, body, Registry(OLD))
    assert verdict.violations == [] and [c.new for c in verdict.changes] == [DELETED]
    content_type, body = GoodUpdate(OLD.entry_uuid, new_status=ARCHIVED).build()
    assert checker.check("ITI-57", content_type, body, Registry(OLD)).violations == []
    content_type, body = GoodQuery(OLD.unique_id).build()
    assert checker.check("ITI-18", content_type, body, Registry(OLD)).violations == []


# -- envelope, WS-Addressing, WS-Security (SOAP faults) --------------------------------------


def test_env_mtom_01_plain_soap_itI41(checker: ConformanceChecker) -> None:
    verdict = check41(checker, GoodRequest(multipart=False))
    only(verdict, "ENV-MTOM-01")
    assert verdict.fault is not None and verdict.fault.fault == "s:Sender"


def test_env_soap_01_soap11_envelope(checker: ConformanceChecker) -> None:
    verdict = check41(checker, GoodRequest(soap_ns="http://schemas.xmlsoap.org/soap/envelope/"))
    only(verdict, "ENV-SOAP-01")
    assert verdict.fault is not None and verdict.fault.fault == "s:VersionMismatch"


def test_wsa_action_01(checker: ConformanceChecker) -> None:
    verdict = check41(checker, GoodRequest(action="urn:ihe:iti:2007:RegistryStoredQuery"))
    only(verdict, "WSA-ACTION-01")


def test_wsa_msgid_01(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(message_id=None)), "WSA-MSGID-01")


def test_sec_vihf_01_no_assertion(checker: ConformanceChecker) -> None:
    verdict = check41(checker, GoodRequest(vihf=Vihf(present=False)))
    only(verdict, "SEC-VIHF-01")
    assert verdict.fault is not None and verdict.fault.fault == "wsse:InvalidSecurity"


def test_env_xop_01_include_to_a_missing_part(checker: ConformanceChecker) -> None:
    def point_elsewhere(request: etree._Element) -> None:
        include = request.find(f"{{{XDSB}}}Document/{{http://www.w3.org/2004/08/xop/include}}Include")
        assert include is not None
        include.set("href", "cid:nowhere@test")

    verdict = check41(checker, GoodRequest(mutate=[point_elsewhere]))
    assert "ENV-XOP-01" in rules(verdict) and "XDS-DOC-01" in rules(verdict)


def test_env_body_01_wrong_body_for_iti57(checker: ConformanceChecker) -> None:
    content_type, body = GoodRequest(action="urn:ihe:iti:2010:UpdateDocumentSet").build()
    verdict = checker.check("ITI-57", "application/soap+xml", _root_part(body), Registry(OLD))
    only(verdict, "ENV-BODY-01")


def _root_part(body: bytes) -> bytes:
    start = body.index(b"<?xml")
    end = body.index(b"\r\n--uuid:test-boundary-0001", start)
    return body[start:end]


# -- VIHF ------------------------------------------------------------------------------------


def test_vihf_sig_01_unsigned(checker: ConformanceChecker) -> None:
    verdict = check41(checker, GoodRequest(vihf=Vihf(sign=False)))
    only(verdict, "VIHF-SIG-01")
    assert verdict.fault is not None and verdict.fault.fault == "wsse:FailedCheck"


def test_vihf_sig_01_tampered_after_signing(checker: ConformanceChecker) -> None:
    def tamper(assertion: etree._Element) -> None:
        for value in assertion.iter("{urn:oasis:names:tc:SAML:2.0:assertion}AttributeValue"):
            if value.text == "1120456789":
                value.text = "1120456780"

    only(check41(checker, GoodRequest(vihf=Vihf(after_sign=tamper))), "VIHF-SIG-01")


def test_vihf_sig_02_untrusted_certificate(checker: ConformanceChecker, tmp_path: Path) -> None:
    key, cert = other_pki(tmp_path)
    verdict = check41(checker, GoodRequest(vihf=Vihf(key=key, cert=cert)))  # type: ignore[arg-type]
    only(verdict, "VIHF-SIG-02")


def test_vihf_time_01_expired(checker: ConformanceChecker) -> None:
    expired = datetime.now(UTC) - timedelta(minutes=5)
    only(check41(checker, GoodRequest(vihf=Vihf(not_after=expired))), "VIHF-TIME-01")


def test_vihf_issuer_01(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(vihf=Vihf(issuer_format="urn:oasis:names:tc:SAML:2.0:nameid-format:entity"))),
         "VIHF-ISSUER-01")


def test_vihf_attr_01_missing_homologation(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(vihf=vihf_with(LPS_ID_HOMOLOGATION_DMP=None))), "VIHF-ATTR-01")


def test_vihf_attr_01_missing_name_id(checker: ConformanceChecker) -> None:
    vihf = Vihf(name_id=None)
    only(check41(checker, GoodRequest(vihf=vihf)), "VIHF-ATTR-01")


def test_vihf_version_01(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(vihf=vihf_with(VIHF_Version=["3.0"]))), "VIHF-VERSION-01")


def test_vihf_mode_01(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(vihf=vihf_with(Authentification_Mode=["DIRECTE"]))), "VIHF-MODE-01")


def test_vihf_res_01_resource_id_is_not_the_patient(checker: ConformanceChecker) -> None:
    vihf = vihf_with(**{"urn:oasis:names:tc:xacml:2.0:resource:resource-id": [OTHER_INS]})
    only(check41(checker, GoodRequest(vihf=vihf)), "VIHF-RES-01")


def test_vihf_res_01_urn(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(vihf=vihf_with(Ressource_URN=["urn:dmp:test"]))), "VIHF-RES-01")


def test_vihf_pou_01(checker: ConformanceChecker) -> None:
    vihf = vihf_with(**{"urn:oasis:names:tc:xspa:1.0:subject:purposeofuse": [
        ("bris_de_glace", "1.2.250.1.213.1.1.4.248", "Bris de glace", "PurposeOfUse")]})
    only(check41(checker, GoodRequest(vihf=vihf)), "VIHF-POU-01")


def test_vihf_struct_01_fixed_setting_is_not_the_sender(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(vihf=vihf_with(Identifiant_Structure=["10000000000000"]))), "VIHF-STRUCT-01")


def test_vihf_struct_01_valid_id_but_not_an_author_institution(checker: ConformanceChecker) -> None:
    verdict = check41(checker, GoodRequest(vihf=vihf_with(Identifiant_Structure=["1750000001"])))
    only(verdict, "VIHF-STRUCT-01")
    assert "none of the authorInstitution" in verdict.violations[0].text


def test_vihf_subj_01_constant_subject_id(checker: ConformanceChecker) -> None:
    vihf = vihf_with(**{"urn:oasis:names:tc:xspa:1.0:subject:subject-id": ["Relais, passerelle, automate"]})
    only(check41(checker, GoodRequest(vihf=vihf)), "VIHF-SUBJ-01")


def test_vihf_subj_01_name_id_is_not_the_author(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(vihf=Vihf(name_id="999999999999"))), "VIHF-SUBJ-01")


def test_vihf_role_01_physician_without_second_role(checker: ConformanceChecker) -> None:
    vihf = vihf_with(role=[("10", "1.2.250.1.71.1.2.7", "Médecin", "Role")])
    only(check41(checker, GoodRequest(vihf=vihf)), "VIHF-ROLE-01")


def test_vihf_role_01_code_outside_j65(checker: ConformanceChecker) -> None:
    vihf = vihf_with(role=[("ROBOT", "1.2.250.1.213.1.1.4.6", "Robot", "Role")])
    only(check41(checker, GoodRequest(vihf=vihf)), "VIHF-ROLE-01")


def test_vihf_role_01_automate_alone_is_fine(checker: ConformanceChecker) -> None:
    vihf = vihf_with(role=[("AUTOMATE", "1.2.250.1.213.1.1.4.6", "Automate", "Role")])
    assert check41(checker, GoodRequest(vihf=vihf)).violations == []


def test_vihf_sect_01(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(vihf=vihf_with(Secteur_Activite=["SA99^1.2.250.1.71.4.2.4"]))), "VIHF-SECT-01")


def test_vihf_conf_01_secret_connection_without_confidentiality_code(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(vihf=vihf_with(conf=None))), "VIHF-CONF-01")


def test_vihf_conf_01_not_required_without_secret_flag(checker: ConformanceChecker) -> None:
    request = GoodRequest(vihf=vihf_with(conf=None),
                          entry={"confidentialityCode": [("N", "2.16.840.1.113883.5.25", "Normal")]})
    assert check41(checker, request).violations == []


# -- XDS metadata -------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_XSD, reason="corpus XSD not available (../shared/corpus/xds/xsd)")
def test_xds_schema_01(checker: ConformanceChecker) -> None:
    def unknown_element(request: etree._Element) -> None:
        entry = request.find(f".//{{{RIM}}}ExtrinsicObject")
        assert entry is not None
        entry.insert(0, etree.Element(f"{{{RIM}}}Bogus"))

    only(check41(checker, GoodRequest(mutate=[unknown_element])), "XDS-SCHEMA-01")


def test_xds_ss_01_no_submission_set(checker: ConformanceChecker) -> None:
    def unclassify(request: etree._Element) -> None:
        for cl in request.iter(f"{{{RIM}}}Classification"):
            if cl.get("classificationNode"):
                cl.set("classificationNode", "urn:uuid:d9d542f3-6cc4-48b6-8870-ea235fbc94c2")  # a Folder

    assert "XDS-SS-01" in rules(check41(checker, GoodRequest(mutate=[unclassify])))


def _drop_external(scheme: str):  # noqa: ANN202
    def drop(request: etree._Element) -> None:
        for ei in list(request.iter(f"{{{RIM}}}ExternalIdentifier")):
            if ei.get("identificationScheme") == scheme:
                ei.getparent().remove(ei)  # type: ignore[union-attr]

    return drop


def test_xds_ss_02_no_source_id(checker: ConformanceChecker) -> None:
    mutate = [_drop_external("urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832")]
    only(check41(checker, GoodRequest(mutate=mutate)), "XDS-SS-02")


def test_xds_de_01_no_practice_setting(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(entry={"practiceSettingCode": []})), "XDS-DE-01")


def test_xds_code_01_class_code_outside_j57(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(entry={"classCode": [("10", "1.2.3.4", "Compte rendu")]})), "XDS-CODE-01")


def test_xds_code_01_type_code_outside_j66(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(entry={"typeCode": [("00000-0", "2.16.840.1.113883.6.1", "x")]})),
         "XDS-CODE-01")


def test_xds_code_01_content_type_outside_j59(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(ss={"contentTypeCode": [("I", "2.16.840.1.113883.12.4", "Inpatient")]})),
         "XDS-CODE-01")


def test_xds_time_01_offset_in_xds_time(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(entry={"creationTime": "20240315143000+0100"})), "XDS-TIME-01")


def test_xds_time_01_submission_time_with_z(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(ss={"submissionTime": "20240315140000Z"})), "XDS-TIME-01")


def test_xds_time_02_local_time_copied_as_utc(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(entry={"creationTime": "20240315143000"})), "XDS-TIME-02")


def test_xds_time_02_cda_without_offset_is_paris_time(checker: ConformanceChecker) -> None:
    from tests.dmp_request_builder import sample_cda

    summer = sample_cda("1.2.250.1.999999.1.7.1", effective_time="20240715143000")  # CEST, UTC+2
    assert check41(checker, GoodRequest(document=summer, entry={"creationTime": "20240715123000"})).violations == []
    only(check41(checker, GoodRequest(document=summer, entry={"creationTime": "20240715133000"})), "XDS-TIME-02")


def test_xds_uid_01_oid_with_extension(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(unique_id="1.2.250.1.999999.1.7^DOC-1")), "XDS-UID-01")


def test_xds_uid_02_submission_set_unique_id(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(ss={"uniqueId": "lot-42"})), "XDS-UID-02")


def test_xds_pid_01_bad_ins_key(checker: ConformanceChecker) -> None:
    bad = "279035121518980^^^&1.2.250.1.213.1.4.10&ISO^NH"
    vihf = vihf_with(**{"urn:oasis:names:tc:xacml:2.0:resource:resource-id": [bad]})
    verdict = check41(checker, GoodRequest(ss={"patientId": bad}, entry={"patientId": bad}, vihf=vihf))
    only(verdict, "XDS-PID-01")
    assert verdict.violations[0].error_code == "XDSUnknownPatientId"


def test_xds_pid_01_ins_type_instead_of_nh(checker: ConformanceChecker) -> None:
    bad = "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^INS"
    vihf = vihf_with(**{"urn:oasis:names:tc:xacml:2.0:resource:resource-id": [bad]})
    only(check41(checker, GoodRequest(ss={"patientId": bad}, entry={"patientId": bad}, vihf=vihf)), "XDS-PID-01")


def test_xds_pid_02_entry_and_submission_set_differ(checker: ConformanceChecker) -> None:
    verdict = check41(checker, GoodRequest(entry={"patientId": OTHER_INS}))
    only(verdict, "XDS-PID-02")
    assert {v.error_code for v in verdict.violations} == {"XDSPatientIdDoesNotMatch"}


def test_xds_inst_01_fineg_copied_from_prt8(checker: ConformanceChecker) -> None:
    fineg = "CH FICTIF^^^^^&1.2.250.1.71.4.2.2&ISO^FINEG^^^300017985"
    only(check41(checker, GoodRequest(entry={"authorInstitution": [fineg]})), "XDS-INST-01")


def test_xds_inst_01_raw_finess_under_idnst(checker: ConformanceChecker) -> None:
    raw = "CH FICTIF^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^300017985"
    only(check41(checker, GoodRequest(entry={"authorInstitution": [raw]})), "XDS-INST-01")


def test_xds_auth_01_person_without_name(checker: ConformanceChecker) -> None:
    nameless = "801234564895^^^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
    only(check41(checker, GoodRequest(entry={"authorPerson": [nameless]})), "XDS-AUTH-01")


def test_xds_auth_01_system_not_actorsystem_shaped(checker: ConformanceChecker) -> None:
    system = "RELAIS-01^Relais^Passerelle^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^RI"
    only(check41(checker, GoodRequest(entry={"authorPerson": [system]})), "XDS-AUTH-01")


def test_xds_hash_01(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(entry={"hash": "0" * 40})), "XDS-HASH-01")


def test_xds_size_01(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(entry={"size": "1"})), "XDS-SIZE-01")


def test_xds_doc_01_entry_without_document(checker: ConformanceChecker) -> None:
    def drop_document(request: etree._Element) -> None:
        for document in request.findall(f"{{{XDSB}}}Document"):
            if document.get("id") == "Document01":
                request.remove(document)

    only(check41(checker, GoodRequest(mutate=[drop_document])), "XDS-DOC-01")


def test_xds_dup_01_iti41_resent_for_a_deletion(checker: ConformanceChecker) -> None:
    registered = KnownEntry("urn:uuid:22222222-2222-4222-8222-222222222222", "1.2.250.1.999999.1.7.1", INS_CX,
                            APPROVED)
    verdict = check41(checker, GoodRequest(), Registry(OLD, registered))
    only(verdict, "XDS-DUP-01")
    assert verdict.violations[0].error_code == "XDSDuplicateUniqueIdInRegistry"


def test_xds_rplc_01_unknown_target(checker: ConformanceChecker) -> None:
    verdict = check41(checker, GoodRequest(replaces="urn:uuid:99999999-9999-4999-8999-999999999999"))
    only(verdict, "XDS-RPLC-01")
    assert verdict.violations[0].error_code == "UnresolvedReferenceException"


def test_xds_rplc_01_target_not_approved(checker: ConformanceChecker) -> None:
    deprecated = KnownEntry(OLD.entry_uuid, OLD.unique_id, INS_CX, DEPRECATED)
    only(check41(checker, GoodRequest(replaces=OLD.entry_uuid), Registry(deprecated)), "XDS-RPLC-01")


def test_xds_rplc_01_target_of_another_patient(checker: ConformanceChecker) -> None:
    other = KnownEntry(OLD.entry_uuid, OLD.unique_id, OTHER_INS, APPROVED)
    only(check41(checker, GoodRequest(replaces=OLD.entry_uuid), Registry(other)), "XDS-RPLC-01")


def test_xds_member_01_no_has_member(checker: ConformanceChecker) -> None:
    def drop(request: etree._Element) -> None:
        for association in list(request.iter(f"{{{RIM}}}Association")):
            if association.get("id") == "as01":
                association.getparent().remove(association)  # type: ignore[union-attr]

    only(check41(checker, GoodRequest(mutate=[drop])), "XDS-MEMBER-01")


def test_xds_del_01_status_deleted_in_iti41(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(entry={"status": DELETED})), "XDS-DEL-01")


def test_xds_del_01_availability_update_in_iti41(checker: ConformanceChecker) -> None:
    update = ("urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus", "SubmissionSet01", OLD.entry_uuid,
              {"OriginalStatus": [APPROVED], "NewStatus": [DELETED]})
    assert "XDS-DEL-01" in rules(check41(checker, GoodRequest(extra_associations=[update])))


# -- XAdES --------------------------------------------------------------------------------------


def test_xades_entry_01_unsigned_submission_set(checker: ConformanceChecker) -> None:
    verdict = check41(checker, GoodRequest(xades=Xades(include=False)))
    only(verdict, "XADES-ENTRY-01")
    assert verdict.xades_valid is None


def test_xades_assoc_01_no_signs_association(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(xades=Xades(associate=False))), "XADES-ASSOC-01")


def test_xades_sig_01_signature_value_altered(checker: ConformanceChecker) -> None:
    def alter(data: bytes) -> bytes:
        root = etree.fromstring(data)
        value = root.find("{http://www.w3.org/2000/09/xmldsig#}SignatureValue")
        assert value is not None and value.text
        value.text = ("A" if value.text[0] != "A" else "B") + value.text[1:]
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    verdict = check41(checker, GoodRequest(xades=Xades(after=alter)))
    only(verdict, "XADES-SIG-01")
    assert verdict.xades_valid is False


def test_xades_ref_01_no_signed_properties_reference(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(xades=Xades(reference_properties=False))), "XADES-REF-01")


def test_xades_manifest_01_document_digest_wrong(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(xades=Xades(tamper_digest=True))), "XADES-MANIFEST-01")


def test_xades_manifest_01_document_not_referenced(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(xades=Xades(sign_documents=False))), "XADES-MANIFEST-01")


def test_xades_manifest_01_submission_set_not_referenced(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(xades=Xades(reference_submission_set=False))), "XADES-MANIFEST-01")


def test_xades_props_01_signing_certificate_digest(checker: ConformanceChecker) -> None:
    only(check41(checker, GoodRequest(xades=Xades(signing_certificate_digest=False))), "XADES-PROPS-01")


def test_xades_cert_01_other_certificate(checker: ConformanceChecker, tmp_path: Path) -> None:
    key, cert = other_pki(tmp_path)
    only(check41(checker, GoodRequest(xades=Xades(key=key, cert=cert))), "XADES-CERT-01")  # type: ignore[arg-type]


# -- ITI-57 -------------------------------------------------------------------------------------


def check57(checker: ConformanceChecker, update: GoodUpdate, registry: Registry | None = None) -> Verdict:
    content_type, body = update.build()
    return checker.check("ITI-57", content_type, body, registry or Registry(OLD))


def test_u57_assoc_01_wrong_association_type(checker: ConformanceChecker) -> None:
    update = GoodUpdate(OLD.entry_uuid, association_type="urn:ihe:iti:2007:AssociationType:RPLC")
    only(check57(checker, update), "U57-ASSOC-01")


def test_u57_status_01_ebrim_deprecated_is_not_a_dmp_deletion(checker: ConformanceChecker) -> None:
    only(check57(checker, GoodUpdate(OLD.entry_uuid, new_status=DEPRECATED)), "U57-STATUS-01")


def test_u57_target_01_unknown(checker: ConformanceChecker) -> None:
    verdict = check57(checker, GoodUpdate("urn:uuid:99999999-9999-4999-8999-999999999999"))
    only(verdict, "U57-TARGET-01")
    assert verdict.violations[0].error_code == "UnresolvedReferenceException"


def test_u57_target_01_not_approved(checker: ConformanceChecker) -> None:
    deprecated = KnownEntry(OLD.entry_uuid, OLD.unique_id, INS_CX, DEPRECATED)
    only(check57(checker, GoodUpdate(OLD.entry_uuid, original_status=DEPRECATED), Registry(deprecated)),
         "U57-TARGET-01")
    only(check57(checker, GoodUpdate(OLD.entry_uuid), Registry(deprecated)), "U57-TARGET-01")


def test_u57_target_01_other_patient(checker: ConformanceChecker) -> None:
    other = KnownEntry(OLD.entry_uuid, OLD.unique_id, OTHER_INS, APPROVED)
    only(check57(checker, GoodUpdate(OLD.entry_uuid), Registry(other)), "U57-TARGET-01")


def test_u57_only_01_document_entry_in_update(checker: ConformanceChecker) -> None:
    assert "U57-ONLY-01" in rules(check57(checker, GoodUpdate(OLD.entry_uuid, with_entry=True)))


def test_u57_vihf_rules_apply_too(checker: ConformanceChecker) -> None:
    update = GoodUpdate(OLD.entry_uuid)
    update.vihf.attributes["Identifiant_Structure"] = ["10000000000000"]
    only(check57(checker, update), "VIHF-STRUCT-01")


def test_every_rule_has_a_reference_and_an_error_code() -> None:
    for rule in RULES.values():
        assert rule.reference and rule.error_code and rule.summary, rule.code


def test_software_sender_named_in_subject_id_passes(checker: ConformanceChecker) -> None:
    """For an automated sender the volet wants 'Nom du logiciel, Nom du modèle et Service'."""
    system = "RELAIS-01^Relais^Passerelle^^^^^^&1.2.250.1.71.4.2.1&ISO^U^^^RI"
    vihf = vihf_with(**{
        "urn:oasis:names:tc:xspa:1.0:subject:subject-id": ["Relais, Passerelle, Service d'imagerie"],
        "role": [("AUTOMATE", "1.2.250.1.213.1.1.4.6", "Automate", "Role")],
    })
    vihf.name_id = "RELAIS-01"
    request = GoodRequest(ss={"authorPerson": [system]}, vihf=vihf)
    assert check41(checker, request).violations == []
    vihf.attributes["urn:oasis:names:tc:xspa:1.0:subject:subject-id"] = ["Logiciel, Modele, Service"]
    only(check41(checker, GoodRequest(ss={"authorPerson": [system]}, vihf=vihf)), "VIHF-SUBJ-01")


def test_xds_del_02_iti62_remove_metadata_is_not_a_dmp_deletion(checker: ConformanceChecker) -> None:
    content_type, body = GoodUpdate(OLD.entry_uuid, action="urn:ihe:iti:2010:DeleteDocumentSet").build()
    verdict = checker.check("ITI-57", content_type, body, Registry(OLD))
    only(verdict, "XDS-DEL-02")
    assert verdict.fault is not None and verdict.fault.fault == "a:ActionNotSupported"


SEGUR_MDM = (Path(__file__).resolve().parents[3] / "shared" / "corpus" / "hl7v2" / "ansforge" / "hl7V2-exemples"
             / "trans-doc-cda" / "v2.1-segur" / "mdm" / "initial" / "message_MDM_CR_Radio_INIT_N1_Base64.er7")


def _segur_cda() -> bytes:
    import base64

    if not SEGUR_MDM.exists():
        pytest.skip(reason="ANS Ségur MDM sample not available in ../shared/corpus")
    for segment in SEGUR_MDM.read_bytes().replace(b"\r", b"\n").split(b"\n"):
        fields = segment.split(b"|")
        if segment.startswith(b"OBX") and len(fields) > 5 and fields[2] == b"ED":
            data = fields[5].split(b"^")[4]
            return base64.b64decode(data + b"=" * (-len(data) % 4))  # the sample drops the padding
    raise AssertionError("no ED OBX in the Ségur sample")


def test_segur_cda_creation_time_is_its_paris_time_in_utc(checker: ConformanceChecker) -> None:
    """The ANS Ségur CR (effectiveTime 20050411103328, no offset) is 08:33:28 UTC (CEST)."""
    cda = _segur_cda()
    request = GoodRequest(unique_id="1.2.250.1.71.4.2.2.120456789.71024000081", document=cda,
                          entry={"creationTime": "20050411083328"})
    assert check41(checker, request).violations == []
    copied = GoodRequest(unique_id="1.2.250.1.71.4.2.2.120456789.71024000081", document=cda,
                         entry={"creationTime": "20050411103328"})
    only(check41(checker, copied), "XDS-TIME-02")


def test_xds_dup_01_submission_set_unique_id_reused(checker: ConformanceChecker) -> None:
    reused = KnownEntry("urn:uuid:33333333-3333-4333-8333-333333333333", "1.2.250.1.999999.2.7.1", INS_CX, APPROVED)
    only(check41(checker, GoodRequest(), Registry(OLD, reused)), "XDS-DUP-01")


def test_vihf_sig_01_duplicate_id_wrapping(checker: ConformanceChecker) -> None:
    def wrap(assertion: etree._Element) -> None:
        decoy = etree.SubElement(assertion, "{urn:oasis:names:tc:SAML:2.0:assertion}Advice")
        decoy.set("ID", assertion.get("ID", ""))

    only(check41(checker, GoodRequest(vihf=Vihf(after_sign=wrap))), "VIHF-SIG-01")


def test_vihf_time_01_issued_in_the_future(checker: ConformanceChecker) -> None:
    future = datetime.now(UTC) + timedelta(hours=1)
    only(check41(checker, GoodRequest(vihf=Vihf(issue_instant=future))), "VIHF-TIME-01")
