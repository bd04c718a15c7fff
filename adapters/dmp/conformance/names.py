"""Namespaces, UUIDs and URNs, written from the specifications (not shared with the client).

A constant the client and its simulator both got from one module would hide the very
mistake a simulator is there to catch, so each value here is copied from the text that
defines it:

* SOAP 1.2 Part 1 §5 (envelope namespace); WS-Addressing 1.0 Core; WS-Security 1.1 SOAP
  Message Security §5 (``wsse``); SAML 2.0 Core §2; XML-DSig (W3C REC 2008) §6; XAdES
  (ETSI TS 101 903 v1.1.1 and v1.3.2 namespaces); XOP 1.0 §3.
* OASIS ebRS/ebRIM 3.0 namespaces (``../shared/corpus/xds/xsd/ebRS``) and IHE
  ``urn:ihe:iti:xds-b:2007`` (``XDS.b_DocumentRepository.xsd``).
* IHE ITI TF-3 §4.2.5 "Metadata UUIDs" (classification schemes, identification schemes,
  object types), ITI TF-3 §4.2.2 (association types), ITI TF-2b §3.18.4.1.2.3.7
  (stored query ids), ITI TF-2b §3.41.4.1.2 / §3.18.4.1.2 and the XDS Metadata Update
  supplement §3.57.4.1.2 (SOAP actions).
* ANS TRE_R270-AvailabilityStatus (``urn:asip:ci-sis:2010:StatusType:*``), cited by the
  ANS PDSM4DMP IG (ansforge/IG-FHIR-PDSM4DMP-EEDS ``input/pagecontent/index.md``, table
  "Correspondance des transactions DMP").
"""

from __future__ import annotations

__all__ = [
    "NS",
    "ACTIONS",
    "DE",
    "SS",
    "ASSOC",
    "STATUS",
    "QUERY",
    "SEVERITY_ERROR",
    "SEVERITY_WARNING",
    "RESPONSE_SUCCESS",
    "RESPONSE_FAILURE",
]

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "s11": "http://schemas.xmlsoap.org/soap/envelope/",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "xades111": "http://uri.etsi.org/01903/v1.1.1#",
    "xades132": "http://uri.etsi.org/01903/v1.3.2#",
    "xop": "http://www.w3.org/2004/08/xop/include",
    "rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0",
    "rs": "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0",
    "lcm": "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0",
    "query": "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0",
    "xdsb": "urn:ihe:iti:xds-b:2007",
    "hl7": "urn:hl7-org:v3",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}


class ACTIONS:
    """WS-Addressing actions (ITI TF-2b §3.41.4.1.2, §3.18.4.1.2; Metadata Update suppl. §3.57.4.1.2)."""

    ITI41 = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
    ITI41_RESPONSE = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
    ITI18 = "urn:ihe:iti:2007:RegistryStoredQuery"
    ITI18_RESPONSE = "urn:ihe:iti:2007:RegistryStoredQueryResponse"
    ITI57 = "urn:ihe:iti:2010:UpdateDocumentSet"
    ITI57_RESPONSE = "urn:ihe:iti:2010:UpdateDocumentSetResponse"
    FAULT = "http://www.w3.org/2005/08/addressing/soap/fault"


class DE:
    """DocumentEntry UUIDs (ITI TF-3 §4.2.5, Table 4.2.5-1)."""

    STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
    ON_DEMAND = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"
    AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
    CLASS_CODE = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
    CONFIDENTIALITY_CODE = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
    EVENT_CODE = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
    FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
    FACILITY_TYPE_CODE = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
    PRACTICE_SETTING_CODE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
    TYPE_CODE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
    PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
    UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"


class SS:
    """SubmissionSet UUIDs (ITI TF-3 §4.2.5, Table 4.2.5-1)."""

    NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
    AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
    CONTENT_TYPE_CODE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
    PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
    SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
    UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"


class ASSOC:
    """Association types (ITI TF-3 §4.2.2; Metadata Update suppl. §3.57.4.1.3; DSG "signs")."""

    HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
    RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
    XFRM = "urn:ihe:iti:2007:AssociationType:XFRM"
    APND = "urn:ihe:iti:2007:AssociationType:APND"
    XFRM_RPLC = "urn:ihe:iti:2007:AssociationType:XFRM_RPLC"
    SIGNS = "urn:ihe:iti:2007:AssociationType:signs"
    UPDATE_AVAILABILITY = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"


class STATUS:
    """availabilityStatus values: ebRIM 3.0 StatusType plus the ANS TRE_R270 extensions."""

    APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
    DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
    SUBMITTED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Submitted"
    ARCHIVED = "urn:asip:ci-sis:2010:StatusType:Archived"
    DELETED = "urn:asip:ci-sis:2010:StatusType:Deleted"


class QUERY:
    """Stored query ids (ITI TF-2b §3.18.4.1.2.3.7)."""

    FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
    GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"


SEVERITY_ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
SEVERITY_WARNING = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"
RESPONSE_SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
RESPONSE_FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
