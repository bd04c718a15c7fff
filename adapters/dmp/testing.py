"""Test helpers shipped with the DMP adapter: a fictitious document and its XDS metadata.

Used by our tests and by anyone exercising ``relais simulate dmp``. Everything here is
invented (fictitious patient, test INS 279035121518989 on the test OID ``.10``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from gateway.model import XdsMetadata

__all__ = ["TEST_PKI_DIR", "TEST_KEY", "TEST_CERT", "sample_document", "sample_metadata"]

TEST_PKI_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "pki"
TEST_KEY = TEST_PKI_DIR / "test-vihf-key.pem"
TEST_CERT = TEST_PKI_DIR / "test-vihf-cert.pem"

_INS_CX = "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"
_AUTHOR_PERSON = "801234567897^MEDECIN^Paul^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
_AUTHOR_ORG = "CH FICTIF^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1012345678"


def sample_document(unique_id: str = "1.2.250.1.999999.1.7.1") -> bytes:
    """A tiny fictitious CDA-like document (the simulator checks hash and size, not CDA)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ClinicalDocument xmlns="urn:hl7-org:v3">'
        f'<id root="{unique_id}"/><title>Compte rendu fictif</title></ClinicalDocument>\n'
    ).encode()


def sample_metadata(
    document: bytes,
    *,
    unique_id: str = "1.2.250.1.999999.1.7.1",
    action: str = "submit",
    replaces: str | None = None,
    n: int = 1,
) -> XdsMetadata:
    """XDS metadata for ``document``, built by hand the way core/xds.py would."""
    entry: dict = {  # type: ignore[type-arg]
        "entryUUID": f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
        "uniqueId": unique_id,
        "typeCode": {"code": "11490-0", "codeSystem": "2.16.840.1.113883.6.1", "displayName": "CR de sortie"},
        "classCode": {"code": "10", "codeSystem": "1.2.250.1.213.1.1.4.1", "displayName": "Compte rendu"},
        "formatCode": {
            "code": "urn:ihe:iti:xds-sd:pdf:2008",
            "codeSystem": "1.3.6.1.4.1.19376.1.2.3",
            "displayName": "Document à corps non structuré en PDF",
        },
        "confidentialityCode": [
            {"code": "N", "codeSystem": "2.16.840.1.113883.5.25", "displayName": "Normal"},
            {"code": "MASQUE_PS", "codeSystem": "1.2.250.1.213.1.1.4.13", "displayName": "Masqué aux PS"},
        ],
        "healthcareFacilityTypeCode": {
            "code": "SA01",
            "codeSystem": "1.2.250.1.71.4.2.4",
            "displayName": "Etablissement public de santé",
        },
        "practiceSettingCode": {
            "code": "ETABLISSEMENT",
            "codeSystem": "1.2.250.1.213.1.1.4.9",
            "displayName": "Etablissement de santé",
        },
        "authors": [
            {
                "authorPerson": _AUTHOR_PERSON,
                "authorInstitution": [_AUTHOR_ORG],
                "authorSpecialty": ["G15_10^Médecine Générale^&1.2.250.1.213.1.1.4.5&ISO"],
            }
        ],
        "legalAuthenticator": _AUTHOR_PERSON,
        "patientId": _INS_CX,
        "sourcePatientId": "000003^^^&1.2.250.1.999999.1.2&ISO^PI",
        "sourcePatientInfo": ["PID-3|000003^^^&1.2.250.1.999999.1.2&ISO^PI", "PID-7|19790315", "PID-8|F"],
        "creationTime": "20240105103000",
        "serviceStartTime": "20240102080000",
        "serviceStopTime": "20240105100000",
        "languageCode": "fr-FR",
        "title": "CR de sortie (fictif)",
        "mimeType": "text/xml",
        "hash": hashlib.sha1(document).hexdigest(),
        "size": len(document),
        "action": action,
    }
    if replaces:
        entry["replaces"] = replaces
    return {
        "documentEntry": entry,  # type: ignore[typeddict-item]
        "submissionSet": {
            "entryUUID": f"urn:uuid:00000000-0000-4000-9000-{n:012d}",
            "uniqueId": f"1.2.250.1.999999.1.8.{n}",
            "sourceId": "1.2.250.1.999999.1",
            "patientId": _INS_CX,
            "submissionTime": "20240105103500",
            "contentTypeCode": {
                "code": "07",
                "codeSystem": "1.2.250.1.213.2.2",
                "displayName": "Consultation",
            },
            "authors": [{"authorPerson": _AUTHOR_PERSON, "authorInstitution": [_AUTHOR_ORG]}],
            "title": "Soumission",
        },
    }
