"""The envelope of a document message: is it one, in the volet's version, for a known patient?

MSH-9 must be ORU^R01 or MDM^T02/T10/T04; anything else is ``MSG_TYPE_UNSUPPORTED``, the
one finding that calls for an application *reject* (ACK AR, :data:`APPLICATION_REJECT_CODES`)
and stops the reading. A version or message structure other than the volet's (§2, §4) is
only a warning. PID-3 must carry at least one patient identifier.
"""

from __future__ import annotations

from typing import Any

from gateway.core.hl7v2.documents.actions import MDM_TRIGGERS
from gateway.core.hl7v2.reader import Message, Segment
from gateway.model import Finding, PatientIdentity

__all__ = [
    "APPLICATION_REJECT_CODES",
    "EXPECTED_VERSION",
    "msh_fields",
    "is_document_message",
    "check_version",
    "check_patient",
]

#: Codes that call for ACK AR (rejected) rather than AE.
APPLICATION_REJECT_CODES = frozenset({"MSG_TYPE_UNSUPPORTED"})
#: MSH-12 the volet uses for each message type.
EXPECTED_VERSION = {"ORU": "2.5", "MDM": "2.6"}
_EXPECTED_STRUCTURE = {"ORU": "ORU_R01", "MDM": "MDM_T02"}


def msh_fields(msg: Message) -> dict[str, Any]:
    """The MSH fields a :class:`DocumentMessage` keeps, blanks stripped, by field name."""
    msh = msg.msh
    return {
        "message_type": msh[9].value(1).strip(),
        "trigger": msh[9].value(2).strip(),
        "structure": msh[9].value(3).strip(),
        "control_id": msg.control_id,
        "version": msh[12].value(1).strip(),
        "processing_id": msh[11].value(1).strip(),
    }


def is_document_message(code: str, trigger: str, findings: list[Finding]) -> bool:
    """True for ORU^R01 and MDM^T02/T10/T04; otherwise reports ``MSG_TYPE_UNSUPPORTED``."""
    if (code == "ORU" and trigger == "R01") or (code == "MDM" and trigger in MDM_TRIGGERS):
        return True
    findings.append(
        Finding(
            "MSG_TYPE_UNSUPPORTED",
            f"MSH-9 '{code}^{trigger}' is not a document message (ORU^R01, MDM^T02/T10/T04)",
            "MSH-9",
        )
    )
    return False


def check_version(code: str, version: str, structure: str, findings: list[Finding]) -> None:
    """Warn when MSH-12 or MSH-9.3 is not what the volet writes for ``code``."""
    if version != EXPECTED_VERSION[code]:
        findings.append(
            Finding(
                "MSG_VERSION_UNEXPECTED",
                f"MSH-12 '{version}': the volet uses {EXPECTED_VERSION[code]} for {code}",
                "MSH-12",
                "warning",
            )
        )
    if structure and structure != _EXPECTED_STRUCTURE[code]:
        findings.append(
            Finding(
                "MSG_STRUCTURE_UNEXPECTED",
                f"MSH-9.3 '{structure}': expected {_EXPECTED_STRUCTURE[code]}",
                "MSH-9.3",
                "warning",
            )
        )


def check_patient(pid: Segment | None, patient: PatientIdentity, findings: list[Finding]) -> None:
    """Each message carries exactly one patient: a PID whose PID-3 names them."""
    if pid is None:
        findings.append(Finding("PID3_MISSING", "PID segment is missing", "PID"))
    elif not patient.identifiers:
        findings.append(Finding("PID3_MISSING", "PID-3 carries no patient identifier", "PID-3"))
