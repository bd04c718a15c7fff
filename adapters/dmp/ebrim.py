"""ebRIM 3.0 serialisation of DMP XDS.b metadata (ITI-41 ProvideAndRegisterDocumentSetRequest).

Pure: ``XdsMetadata`` (gateway.model) in, an lxml element out. Identifiers of the
metadata objects come from the metadata (``entryUUID`` values injected upstream); the
Classification / ExternalIdentifier / Association ids are *symbolic* (``cl01``, ``ei01``,
``as01``), which ITI TF-3 §4.2.3.1.6 allows in a submission: the registry assigns UUIDs.

The classification scheme / identification scheme UUIDs are those of ITI TF-3 §4.2.5
(the same as the IHE ITI-41 example). ``load_xds_schema`` loads the corpus XSD offline
(``rim.xsd`` imports ``xml.xsd`` from w3.org; a minimal local copy is served instead).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from lxml import etree

from gateway.errors import MappingError
from gateway.model import CodedValue, XdsAuthor, XdsDocumentEntry, XdsMetadata, XdsSubmissionSet

__all__ = [
    "NS",
    "XDSB_NS",
    "RIM_NS",
    "LCM_NS",
    "RS_NS",
    "QUERY_NS",
    "XOP_NS",
    "UUID",
    "build_provide_and_register",
    "build_update_availability_status",
    "STATUS_APPROVED",
    "STATUS_DEPRECATED",
    "STATUS_DELETED",
    "STATUS_ARCHIVED",
    "inline_documents",
    "load_xds_schema",
]

XDSB_NS = "urn:ihe:iti:xds-b:2007"
RIM_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RS_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
QUERY_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
XOP_NS = "http://www.w3.org/2004/08/xop/include"
NS = {"xdsb": XDSB_NS, "rim": RIM_NS, "lcm": LCM_NS, "rs": RS_NS, "query": QUERY_NS, "xop": XOP_NS}


class UUID:
    """XDS.b metadata UUIDs (ITI TF-3 §4.2.5)."""

    STABLE_DOCUMENT_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
    DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
    DE_CLASS_CODE = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
    DE_CONFIDENTIALITY_CODE = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
    DE_FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
    DE_EVENT_CODE = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
    DE_FACILITY_TYPE_CODE = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
    DE_PRACTICE_SETTING_CODE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
    DE_TYPE_CODE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
    DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
    DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
    SUBMISSION_SET = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
    SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
    SS_CONTENT_TYPE_CODE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
    SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
    SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
    SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
    HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
    RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
    SIGNS = "urn:ihe:iti:2007:AssociationType:signs"
    UPDATE_AVAILABILITY_STATUS = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"
    REGISTRY_PACKAGE = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage"
    CLASSIFICATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
    EXTERNAL_IDENTIFIER = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"
    ASSOCIATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association"


STATUS_APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
STATUS_DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
# DMP statuses beyond ebRS (issue #9, DMP TD3.3c / TD3.3d: logical deletion and archiving
# are availabilityStatus changes to these ASIP values).
STATUS_DELETED = "urn:asip:ci-sis:2010:StatusType:Deleted"
STATUS_ARCHIVED = "urn:asip:ci-sis:2010:StatusType:Archived"

_NSMAP: dict[str | None, str] = {None: XDSB_NS, "rim": RIM_NS, "lcm": LCM_NS, "xop": XOP_NS}
_DEFAULT_ENTRY_ID = "Document01"
_DEFAULT_SUBMISSION_SET_ID = "SubmissionSet01"


def _rim(tag: str) -> str:
    return f"{{{RIM_NS}}}{tag}"


class _Ids:
    """Sequential symbolic ids so the output is deterministic for a given input."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, prefix: str) -> str:
        self.counts[prefix] = self.counts.get(prefix, 0) + 1
        return f"{prefix}{self.counts[prefix]:02d}"


def _association(objects: etree._Element, ids: _Ids, kind: str, source: str, target: str) -> etree._Element:
    """An ebRIM Association of ``kind`` from ``source`` to ``target`` (ITI TF-3 §4.2.2)."""
    return etree.SubElement(
        objects, _rim("Association"), id=ids("as"), associationType=kind, sourceObject=source, targetObject=target
    )


def _slot(parent: etree._Element, name: str, values: Iterable[str]) -> etree._Element | None:
    values = [v for v in values if v not in (None, "")]
    if not values:
        return None
    slot = etree.SubElement(parent, _rim("Slot"), name=name)
    value_list = etree.SubElement(slot, _rim("ValueList"))
    for value in values:
        etree.SubElement(value_list, _rim("Value")).text = str(value)
    return slot


def _name(parent: etree._Element, text: str | None) -> None:
    if text:
        name = etree.SubElement(parent, _rim("Name"))
        etree.SubElement(name, _rim("LocalizedString"), value=text)


def _coded_classification(
    parent: etree._Element, ids: _Ids, scheme: str, classified: str, coded: CodedValue | None, where: str
) -> None:
    if not coded or not coded.get("code"):
        return
    if not coded.get("codeSystem"):
        raise MappingError(f"{where} has no codeSystem", code="XDS_CODE_SYSTEM_MISSING", location=where)
    cl = etree.SubElement(
        parent,
        _rim("Classification"),
        id=ids("cl"),
        classificationScheme=scheme,
        classifiedObject=classified,
        nodeRepresentation=coded["code"],
    )
    _slot(cl, "codingScheme", [coded["codeSystem"]])
    _name(cl, coded.get("displayName") or coded["code"])


def _author_classifications(
    parent: etree._Element, ids: _Ids, scheme: str, classified: str, authors: Sequence[XdsAuthor]
) -> None:
    for author in authors:
        # ITI TF-3 §4.2.3.1.4: an author classification has an empty nodeRepresentation.
        cl = etree.SubElement(
            parent,
            _rim("Classification"),
            id=ids("cl"),
            classificationScheme=scheme,
            classifiedObject=classified,
            nodeRepresentation="",
        )
        _slot(cl, "authorPerson", [author["authorPerson"]] if author.get("authorPerson") else [])
        _slot(cl, "authorInstitution", author.get("authorInstitution", []))
        _slot(cl, "authorRole", author.get("authorRole", []))
        _slot(cl, "authorSpecialty", author.get("authorSpecialty", []))


def _external_identifier(
    parent: etree._Element, ids: _Ids, scheme: str, owner: str, value: str, label: str
) -> None:
    ei = etree.SubElement(
        parent,
        _rim("ExternalIdentifier"),
        id=ids("ei"),
        registryObject=owner,
        identificationScheme=scheme,
        value=value,
    )
    _name(ei, label)


def _require(mapping: Mapping[str, object], key: str, where: str) -> str:
    value = mapping.get(key)
    if not value:
        raise MappingError(
            f"{where}.{key} is required", code="XDS_METADATA_MISSING", location=f"{where}.{key}"
        )
    return str(value)


def _submission_set(
    objects: etree._Element, ids: _Ids, ss: XdsSubmissionSet, ss_id: str, patient_id: str
) -> None:
    """The SubmissionSet RegistryPackage and its classification (ITI TF-3 §4.2.3.3)."""
    rp = etree.SubElement(objects, _rim("RegistryPackage"), id=ss_id, objectType=UUID.REGISTRY_PACKAGE)
    _slot(rp, "submissionTime", [_require(ss, "submissionTime", "submissionSet")])
    _name(rp, ss.get("title"))
    _author_classifications(rp, ids, UUID.SS_AUTHOR, ss_id, ss.get("authors", []))
    _coded_classification(
        rp, ids, UUID.SS_CONTENT_TYPE_CODE, ss_id, ss.get("contentTypeCode"), "submissionSet.contentTypeCode"
    )
    _external_identifier(
        rp,
        ids,
        UUID.SS_UNIQUE_ID,
        ss_id,
        _require(ss, "uniqueId", "submissionSet"),
        "XDSSubmissionSet.uniqueId",
    )
    _external_identifier(
        rp,
        ids,
        UUID.SS_SOURCE_ID,
        ss_id,
        _require(ss, "sourceId", "submissionSet"),
        "XDSSubmissionSet.sourceId",
    )
    _external_identifier(
        rp, ids, UUID.SS_PATIENT_ID, ss_id, ss.get("patientId") or patient_id, "XDSSubmissionSet.patientId"
    )
    etree.SubElement(
        objects,
        _rim("Classification"),
        id=ids("cl"),
        classifiedObject=ss_id,
        classificationNode=UUID.SUBMISSION_SET,
    )


def _document_entry(
    objects: etree._Element, ids: _Ids, de: XdsDocumentEntry, entry_id: str, patient_id: str
) -> None:
    """One DocumentEntry ExtrinsicObject (ITI TF-3 §4.2.3.2)."""
    unique_id = _require(de, "uniqueId", "documentEntry")
    eo = etree.SubElement(
        objects,
        _rim("ExtrinsicObject"),
        id=entry_id,
        mimeType=de.get("mimeType") or "text/xml",
        objectType=UUID.STABLE_DOCUMENT_ENTRY,
    )
    _slot(eo, "creationTime", [de.get("creationTime", "")])
    _slot(eo, "hash", [de.get("hash", "")])
    _slot(eo, "languageCode", [de.get("languageCode", "")])
    _slot(eo, "legalAuthenticator", [de.get("legalAuthenticator", "")])
    _slot(eo, "serviceStartTime", [de.get("serviceStartTime", "")])
    _slot(eo, "serviceStopTime", [de.get("serviceStopTime", "")])
    _slot(eo, "size", [str(de["size"])] if "size" in de else [])
    _slot(eo, "sourcePatientId", [de.get("sourcePatientId", "")])
    _slot(eo, "sourcePatientInfo", de.get("sourcePatientInfo", []))
    _name(eo, de.get("title"))
    _author_classifications(eo, ids, UUID.DE_AUTHOR, entry_id, de.get("authors", []))
    _coded_classification(
        eo, ids, UUID.DE_CLASS_CODE, entry_id, de.get("classCode"), "documentEntry.classCode"
    )
    for index, conf in enumerate(de.get("confidentialityCode", [])):
        _coded_classification(
            eo,
            ids,
            UUID.DE_CONFIDENTIALITY_CODE,
            entry_id,
            conf,
            f"documentEntry.confidentialityCode[{index}]",
        )
    for index, event in enumerate(de.get("eventCodeList", [])):
        _coded_classification(
            eo, ids, UUID.DE_EVENT_CODE, entry_id, event, f"documentEntry.eventCodeList[{index}]"
        )
    _coded_classification(
        eo, ids, UUID.DE_FORMAT_CODE, entry_id, de.get("formatCode"), "documentEntry.formatCode"
    )
    _coded_classification(
        eo,
        ids,
        UUID.DE_FACILITY_TYPE_CODE,
        entry_id,
        de.get("healthcareFacilityTypeCode"),
        "documentEntry.healthcareFacilityTypeCode",
    )
    _coded_classification(
        eo,
        ids,
        UUID.DE_PRACTICE_SETTING_CODE,
        entry_id,
        de.get("practiceSettingCode"),
        "documentEntry.practiceSettingCode",
    )
    _coded_classification(eo, ids, UUID.DE_TYPE_CODE, entry_id, de.get("typeCode"), "documentEntry.typeCode")
    _external_identifier(eo, ids, UUID.DE_PATIENT_ID, entry_id, patient_id, "XDSDocumentEntry.patientId")
    _external_identifier(eo, ids, UUID.DE_UNIQUE_ID, entry_id, unique_id, "XDSDocumentEntry.uniqueId")


def build_provide_and_register(
    xds: XdsMetadata,
    *,
    document_id_ref: str,
    replaced_entry_uuid: str | None = None,
    signature: tuple[XdsDocumentEntry, str] | None = None,
) -> etree._Element:
    """Build ``xdsb:ProvideAndRegisterDocumentSetRequest`` for one document.

    ``signature`` is the submission set's signature document (IHE DSG, see
    ``adapters.dmp.xades``): its DocumentEntry and the Content-ID of its MTOM part. It is a
    second member of the set (HasMember, SubmissionSetStatus Original).

    ``document_id_ref`` is the MTOM Content-ID (without ``cid:``) of the part that carries
    the document bytes; ``xdsb:Document`` holds ``<xop:Include href="cid:…"/>``. With
    ``replaced_entry_uuid`` an RPLC association goes from the new entry to that entryUUID
    (which the registry assigned to the replaced entry: fetch it with ITI-18 first).
    Raises ``MappingError`` when a required value is missing.
    """
    de = xds["documentEntry"]
    ss = xds["submissionSet"]
    entry_id = de.get("entryUUID") or _DEFAULT_ENTRY_ID
    ss_id = ss.get("entryUUID") or _DEFAULT_SUBMISSION_SET_ID
    patient_id = _require(de, "patientId", "documentEntry")
    signature_id = (signature[0].get("entryUUID") or "Signature01") if signature is not None else ""
    ids = _Ids()

    root = etree.Element(
        f"{{{XDSB_NS}}}ProvideAndRegisterDocumentSetRequest",
        nsmap=_NSMAP,
    )
    submit = etree.SubElement(root, f"{{{LCM_NS}}}SubmitObjectsRequest")
    objects = etree.SubElement(submit, _rim("RegistryObjectList"))

    # -- DocumentEntry ------------------------------------------------------------------
    _document_entry(objects, ids, de, entry_id, patient_id)
    if signature is not None:
        _document_entry(objects, ids, signature[0], signature_id, patient_id)

    _submission_set(objects, ids, ss, ss_id, patient_id)

    # -- Associations -------------------------------------------------------------------
    _slot(_association(objects, ids, UUID.HAS_MEMBER, ss_id, entry_id), "SubmissionSetStatus", ["Original"])
    if signature is not None:
        member = _association(objects, ids, UUID.HAS_MEMBER, ss_id, signature_id)
        _slot(member, "SubmissionSetStatus", ["Original"])
        # IHE DSG / ANS DRIMbox: the signature entry "signs" the SubmissionSet.
        _association(objects, ids, UUID.SIGNS, signature_id, ss_id)
    if replaced_entry_uuid:
        _association(objects, ids, UUID.RPLC, entry_id, replaced_entry_uuid)

    document = etree.SubElement(root, f"{{{XDSB_NS}}}Document", id=entry_id)
    etree.SubElement(document, f"{{{XOP_NS}}}Include", href=f"cid:{document_id_ref}")
    if signature is not None:
        signed = etree.SubElement(root, f"{{{XDSB_NS}}}Document", id=signature_id)
        etree.SubElement(signed, f"{{{XOP_NS}}}Include", href=f"cid:{signature[1]}")
    return root


def build_update_availability_status(
    xds: XdsMetadata, *, target_entry_uuid: str, original_status: str, new_status: str
) -> etree._Element:
    """ITI-57 Update Document Set body changing one DocumentEntry's availabilityStatus.

    IHE ITI TF-2b §3.57.4.1.3.3.1 (Update DocumentEntry Status) / TF-3 §4.2.4: a
    ``lcm:SubmitObjectsRequest`` holding a complete SubmissionSet and one Association of
    type ``UpdateAvailabilityStatus`` from the SubmissionSet to the entry's **entryUUID**
    (assigned by the registry: find it with ITI-18 first), with the ``OriginalStatus`` and
    ``NewStatus`` slots. No DocumentEntry is resubmitted, no document travels.
    """
    ss = xds["submissionSet"]
    patient_id = ss.get("patientId") or _require(xds["documentEntry"], "patientId", "documentEntry")
    ss_id = ss.get("entryUUID") or _DEFAULT_SUBMISSION_SET_ID
    ids = _Ids()
    submit = etree.Element(f"{{{LCM_NS}}}SubmitObjectsRequest", nsmap={"lcm": LCM_NS, "rim": RIM_NS})
    objects = etree.SubElement(submit, _rim("RegistryObjectList"))
    _submission_set(objects, ids, ss, ss_id, patient_id)
    association = etree.SubElement(
        objects,
        _rim("Association"),
        id=ids("as"),
        associationType=UUID.UPDATE_AVAILABILITY_STATUS,
        objectType=UUID.ASSOCIATION,
        sourceObject=ss_id,
        targetObject=target_entry_uuid,
    )
    _slot(association, "OriginalStatus", [original_status])
    _slot(association, "NewStatus", [new_status])
    return submit


def inline_documents(request: etree._Element, documents: dict[str, bytes]) -> etree._Element:
    """Copy of ``request`` with each ``xop:Include`` replaced by base64 text (the XOP infoset).

    XSD validation applies to the reconstructed infoset, where ``xdsb:Document`` is base64.
    """
    import base64

    clone = copy.deepcopy(request)
    for include in clone.iter(f"{{{XOP_NS}}}Include"):
        parent = include.getparent()
        cid = (include.get("href") or "").removeprefix("cid:")
        parent.remove(include)
        parent.text = base64.b64encode(documents.get(cid, b"")).decode("ascii")
    return clone


# Minimal stand-in for http://www.w3.org/2001/xml.xsd so that rim.xsd loads offline.
_XML_XSD = b"""<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="http://www.w3.org/XML/1998/namespace">
  <xs:attribute name="lang" type="xs:language"/>
  <xs:attribute name="space"><xs:simpleType><xs:restriction base="xs:NCName">
    <xs:enumeration value="default"/><xs:enumeration value="preserve"/></xs:restriction></xs:simpleType></xs:attribute>
  <xs:attribute name="base" type="xs:anyURI"/>
  <xs:attribute name="id" type="xs:ID"/>
</xs:schema>"""


class _OfflineResolver(etree.Resolver):
    def resolve(self, system_url, public_id, context):  # type: ignore[no-untyped-def]
        if system_url and system_url.endswith("/xml.xsd"):
            return self.resolve_string(_XML_XSD, context)
        return None


def load_xds_schema(xsd_dir: Path) -> etree.XMLSchema:
    """Load ``IHE/XDS.b_DocumentRepository.xsd`` from a directory laid out like the IHE one."""
    parser = etree.XMLParser(no_network=True)
    parser.resolvers.add(_OfflineResolver())
    doc = etree.parse(str(Path(xsd_dir) / "IHE" / "XDS.b_DocumentRepository.xsd"), parser)
    return etree.XMLSchema(doc)
