"""A small, valid PDSm ITI-65 Bundle built by hand, for tests and demos.

Independent of the FHIR mapping (``gateway.core.fhir``) on purpose: the adapter and the
simulator are tested against a Bundle whose every field is visible here. The patient is
fictitious (test INS 279035121518989, OID 1.2.250.1.213.1.4.10).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

__all__ = ["TEST_INS", "SAMPLE_CDA", "make_iti65_bundle"]

TEST_INS = "279035121518989"
SAMPLE_CDA = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>Test</title></ClinicalDocument>\n'
)


def make_iti65_bundle(
    unique_id: str = "1.2.250.1.999999.1.2.3",
    document: bytes = SAMPLE_CDA,
    *,
    ins: str = TEST_INS,
    uuid_prefix: str = "00000000-0000-4000-8000-00000000000",
) -> dict[str, Any]:
    """A transaction Bundle: SubmissionSet List, one DocumentReference, one Binary (in that order)."""
    ss_url, dr_url, bin_url = (f"urn:uuid:{uuid_prefix}{n}" for n in (1, 2, 3))
    subject = {"reference": f"Patient?identifier=urn:oid:1.2.250.1.213.1.4.10|{ins}"}
    author = {
        "resourceType": "Practitioner",
        "id": "author",
        "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "899700218896"}],
    }
    sha1 = base64.b64encode(hashlib.sha1(document).digest()).decode("ascii")
    submission_set = {
        "resourceType": "List",
        "contained": [author],
        "extension": [
            {
                "url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId",
                "valueIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.250.1.999999.1"},
            }
        ],
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{unique_id}.99", "use": "usual"}],
        "status": "current",
        "mode": "working",
        "code": {
            "coding": [
                {
                    "system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes",
                    "code": "submissionset",
                }
            ]
        },
        "subject": subject,
        "date": "2024-05-02T10:00:00+02:00",
        "source": {"reference": "#author"},
        "entry": [{"item": {"reference": dr_url}}],
    }
    document_reference = {
        "resourceType": "DocumentReference",
        "contained": [author],
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{unique_id}"},
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}]},
        "subject": subject,
        "date": "2024-05-02T09:31:00+02:00",
        "author": [{"reference": "#author"}],
        "custodian": {
            "identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1999999999"},
            "display": "Hôpital de test",
        },
        "content": [
            {
                "attachment": {
                    "contentType": "text/xml",
                    "language": "fr-FR",
                    "url": bin_url,
                    "size": len(document),
                    "hash": sha1,
                    "title": "Compte rendu de test",
                    "creation": "2024-05-02T09:31:00+02:00",
                },
                "format": {
                    "system": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
                    "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient",
                },
            }
        ],
        "context": {"period": {"start": "2024-05-02T09:00:00+02:00"}},
    }
    binary = {
        "resourceType": "Binary",
        "contentType": "text/xml",
        "data": base64.b64encode(document).decode("ascii"),
    }
    return {
        "resourceType": "Bundle",
        "meta": {
            "profile": [
                "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-comprehensive-provide-document-bundle"
            ]
        },
        "type": "transaction",
        "entry": [
            {"fullUrl": ss_url, "resource": submission_set, "request": {"method": "POST", "url": "List"}},
            {
                "fullUrl": dr_url,
                "resource": document_reference,
                "request": {"method": "POST", "url": "DocumentReference"},
            },
            {"fullUrl": bin_url, "resource": binary, "request": {"method": "POST", "url": "Binary"}},
        ],
    }
