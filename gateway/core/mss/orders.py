"""Which MSSanté mails a document message asks for (pure).

Sources: volet « Transmission d'un document CDA-R2 en HL7v2 » 2.1, pages ``mapping-mss``
(TO ← PRT-15.4 of each ``RCT`` PRT, REPLY-TO ← PRT-15.4 of the ``REPLY`` PRT, body ← OBX
CORPSMAIL_PS / CORPSMAIL_PATIENT, header ``X-MSS-MES: FIN`` when the NTE-4 after
DESTMSSANTEPAT says ``FIN``) and ``meta-dmp-mss`` (DESTMSSANTEPS, DESTMSSANTEPAT,
ACK_RECEPTION, ACK_LECTURE_MSS). The patient's mailbox is not an RCT address we trust but
the one the MSSanté referential derives from the INS: ``<matricule INS>@patient.mssante.fr``
(Référentiel socle MSSanté #2 « Clients de messageries », §3.4.2: messages to a patient
through Mon espace santé).

Patient-bound mail carries health data to an address built from the INS, so it leaves only
for a qualified identity: :func:`mail_orders` marks those orders ``patient``; the intake's
identity gate holds them like DMP-bound documents.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

from gateway.core.hl7v2.documents import DocumentMessage
from gateway.model import Finding

__all__ = ["PATIENT_DOMAIN", "DEFAULT_BODY_PS", "DEFAULT_BODY_PATIENT", "MailOrder", "mail_orders", "patient_mailbox"]

PATIENT_DOMAIN = "patient.mssante.fr"
DEFAULT_BODY_PS = (
    "Bonjour,\n\nVeuillez trouver ci-joint un document médical (format CDA R2, paquet IHE XDM) "
    "transmis par messagerie sécurisée de santé.\n\nCe message a été envoyé par une boîte aux lettres "
    "applicative MSSanté.\n"
)
DEFAULT_BODY_PATIENT = (
    "Bonjour,\n\nUn document médical vous concernant vous a été transmis par votre établissement de santé "
    "par messagerie sécurisée de santé. Il est joint à ce message.\n"
)

Audience = Literal["ps", "patient"]


@dataclass(frozen=True)
class MailOrder:
    """One mail to one recipient; stored as the delivery's payload (JSON)."""

    recipient: str
    audience: Audience
    reply_to: str | None = None
    body: str = DEFAULT_BODY_PS
    dsn: bool = False  # ACK_RECEPTION = Y: ask for DSN (RFC 3461 NOTIFY=SUCCESS,FAILURE,DELAY)
    mdn: bool = False  # ACK_LECTURE_MSS = Y: ask for an MDN (RFC 8098 Disposition-Notification-To)
    no_reply: bool = False  # X-MSS-MES: FIN (patient mail only)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str | dict[str, Any]) -> MailOrder:
        values = data if isinstance(data, dict) else json.loads(data)
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})


def patient_mailbox(ins: str) -> str:
    """The patient's MSSanté mailbox (Mon espace santé) derived from the INS matricule."""
    return f"{ins.strip().upper()}@{PATIENT_DOMAIN}"


def mail_orders(dm: DocumentMessage, ins: str | None) -> tuple[list[MailOrder], list[Finding]]:
    """The mails ``dm`` asks for, one per recipient, and warnings about what was left out."""
    flags = dm.flags
    findings: list[Finding] = []
    orders: list[MailOrder] = []
    dsn, mdn = bool(flags.get("ACK_RECEPTION")), bool(flags.get("ACK_LECTURE_MSS"))
    seen: set[str] = set()
    to_ps = bool(flags.get("DESTMSSANTEPS"))
    to_patient = bool(flags.get("DESTMSSANTEPAT"))
    derived = patient_mailbox(ins) if ins else None
    for address in dm.recipients:
        addr = address.strip()
        key = addr.lower()
        if not addr or key in seen:
            continue
        if key.endswith("@" + PATIENT_DOMAIN):
            # The patient's mailbox is derived from the INS, never taken from a PRT.
            if derived is None or key != derived.lower():
                findings.append(Finding(
                    "MSS_PATIENT_ADDRESS_IGNORED",
                    "an RCT patient mailbox does not match the INS; the INS-derived mailbox is used",
                    "PRT-15.4", "warning",
                ))
            continue
        if to_ps:
            seen.add(key)
            orders.append(MailOrder(addr, "ps", dm.reply_to, dm.mail_body_ps or DEFAULT_BODY_PS, dsn, mdn))
    if to_ps and not orders:
        findings.append(Finding(
            "MSS_NO_RECIPIENT", "DESTMSSANTEPS = Y but no RCT PRT carries an MSSanté address", "PRT-15.4", "warning"
        ))
    if to_patient and flags.get("INVISIBLE_PATIENT"):
        # regles-gestion-mssante: every allowed combination with DESTMSSANTEPAT = Y has
        # INVISIBLE_PATIENT = N; a document hidden from the patient is never mailed to them.
        findings.append(Finding(
            "MSS_PATIENT_INVISIBLE", "DESTMSSANTEPAT = Y with INVISIBLE_PATIENT = Y: the patient is not mailed",
            "OBX", "warning",
        ))
        to_patient = False
    if to_patient:
        if derived is None:
            findings.append(Finding(
                "MSS_PATIENT_NO_INS", "DESTMSSANTEPAT = Y needs the patient's INS", "PID-3", "warning"
            ))
        else:
            orders.append(MailOrder(
                derived, "patient", dm.reply_to, dm.mail_body_patient or DEFAULT_BODY_PATIENT, dsn, mdn,
                no_reply=dm.patient_no_reply,
            ))
    return orders, findings
