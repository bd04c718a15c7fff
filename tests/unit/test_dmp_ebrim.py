"""ebRIM serialisation of XDS metadata (ITI-41)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.dmp.ebrim import NS, UUID, build_provide_and_register, inline_documents, load_xds_schema
from adapters.dmp.testing import sample_document, sample_metadata
from gateway.errors import MappingError

XSD_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "xds" / "xsd"
OLD_UUID = "urn:uuid:11111111-1111-4111-8111-111111111111"


@pytest.fixture(scope="module")
def schema():
    if not (XSD_DIR / "IHE" / "XDS.b_DocumentRepository.xsd").exists():
        pytest.skip(reason="corpus XSD (../shared/corpus/xds/xsd) not available")
    return load_xds_schema(XSD_DIR)


def build(replaced: str | None = None, **kwargs):
    document = sample_document()
    xds = sample_metadata(document, **kwargs)
    return (
        document,
        xds,
        build_provide_and_register(xds, document_id_ref="doc1@relais", replaced_entry_uuid=replaced),
    )


def classification(root, scheme):
    return root.xpath(".//rim:Classification[@classificationScheme=$s]", namespaces=NS, s=scheme)


@pytest.mark.corpus
@pytest.mark.parametrize("replaced", [None, OLD_UUID])
def test_request_is_xsd_valid(schema, replaced) -> None:
    document, _, root = build(replaced)
    infoset = inline_documents(root, {"doc1@relais": document})
    assert schema.validate(infoset), schema.error_log


def test_document_entry_content() -> None:
    document, xds, root = build()
    entry_id = xds["documentEntry"]["entryUUID"]
    (eo,) = root.xpath(".//rim:ExtrinsicObject", namespaces=NS)
    assert eo.get("id") == entry_id
    assert eo.get("objectType") == UUID.STABLE_DOCUMENT_ENTRY
    assert eo.get("mimeType") == "text/xml"
    slots = {
        s.get("name"): s.xpath("rim:ValueList/rim:Value/text()", namespaces=NS)
        for s in eo.xpath("rim:Slot", namespaces=NS)
    }
    assert slots["creationTime"] == ["20240105103000"]
    assert slots["languageCode"] == ["fr-FR"]
    assert slots["size"] == [str(len(document))]
    assert slots["sourcePatientInfo"][0].startswith("PID-3|")
    assert eo.xpath("rim:Name/rim:LocalizedString/@value", namespaces=NS) == ["CR de sortie (fictif)"]

    (type_code,) = classification(eo, UUID.DE_TYPE_CODE)
    assert type_code.get("nodeRepresentation") == "11490-0"
    assert type_code.get("classifiedObject") == entry_id
    assert type_code.xpath(
        "rim:Slot[@name='codingScheme']/rim:ValueList/rim:Value/text()", namespaces=NS
    ) == ["2.16.840.1.113883.6.1"]
    assert type_code.xpath("rim:Name/rim:LocalizedString/@value", namespaces=NS) == ["CR de sortie"]
    confidentiality = classification(eo, UUID.DE_CONFIDENTIALITY_CODE)
    assert [c.get("nodeRepresentation") for c in confidentiality] == ["N", "MASQUE_PS"]
    for scheme in (
        UUID.DE_CLASS_CODE,
        UUID.DE_FORMAT_CODE,
        UUID.DE_FACILITY_TYPE_CODE,
        UUID.DE_PRACTICE_SETTING_CODE,
    ):
        assert len(classification(eo, scheme)) == 1
    (author,) = classification(eo, UUID.DE_AUTHOR)
    assert author.xpath("rim:Slot[@name='authorPerson']/rim:ValueList/rim:Value/text()", namespaces=NS)[
        0
    ].startswith("801234567897^MEDECIN")
    ids = {
        e.get("identificationScheme"): e.get("value")
        for e in eo.xpath("rim:ExternalIdentifier", namespaces=NS)
    }
    assert ids[UUID.DE_UNIQUE_ID] == "1.2.250.1.999999.1.7.1"
    assert ids[UUID.DE_PATIENT_ID] == "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"


def test_submission_set_and_associations() -> None:
    _, xds, root = build()
    ss_id = xds["submissionSet"]["entryUUID"]
    (rp,) = root.xpath(".//rim:RegistryPackage", namespaces=NS)
    assert rp.get("id") == ss_id
    ids = {
        e.get("identificationScheme"): e.get("value")
        for e in rp.xpath("rim:ExternalIdentifier", namespaces=NS)
    }
    assert ids[UUID.SS_SOURCE_ID] == "1.2.250.1.999999.1"
    assert ids[UUID.SS_UNIQUE_ID] == "1.2.250.1.999999.1.8.1"
    assert ids[UUID.SS_PATIENT_ID].endswith("^NH")
    assert classification(rp, UUID.SS_CONTENT_TYPE_CODE)[0].get("nodeRepresentation") == "07"
    assert len(classification(rp, UUID.SS_AUTHOR)) == 1
    node = root.xpath(".//rim:RegistryObjectList/rim:Classification[@classificationNode]", namespaces=NS)
    assert (
        node[0].get("classificationNode") == UUID.SUBMISSION_SET and node[0].get("classifiedObject") == ss_id
    )
    (has_member,) = root.xpath(".//rim:Association", namespaces=NS)
    assert has_member.get("associationType") == UUID.HAS_MEMBER
    assert has_member.get("targetObject") == xds["documentEntry"]["entryUUID"]
    assert has_member.xpath(
        "rim:Slot[@name='SubmissionSetStatus']/rim:ValueList/rim:Value/text()", namespaces=NS
    ) == ["Original"]
    (doc,) = root.xpath("xdsb:Document", namespaces=NS)
    assert doc.get("id") == xds["documentEntry"]["entryUUID"]
    assert doc.xpath("xop:Include/@href", namespaces=NS) == ["cid:doc1@relais"]


def test_replace_adds_rplc_association() -> None:
    _, xds, root = build(OLD_UUID, action="replace", replaces="1.2.250.1.999999.1.7.0")
    rplc = root.xpath(".//rim:Association[@associationType=$t]", namespaces=NS, t=UUID.RPLC)
    assert len(rplc) == 1
    assert rplc[0].get("sourceObject") == xds["documentEntry"]["entryUUID"]
    assert rplc[0].get("targetObject") == OLD_UUID


def test_missing_unique_id_is_a_mapping_error() -> None:
    document = sample_document()
    xds = sample_metadata(document)
    del xds["documentEntry"]["uniqueId"]
    with pytest.raises(MappingError) as info:
        build_provide_and_register(xds, document_id_ref="x")
    assert info.value.code == "XDS_METADATA_MISSING"


def test_deterministic_output() -> None:
    from lxml import etree

    assert etree.tostring(build()[2]) == etree.tostring(build()[2])
