"""Business acknowledgements for MSSanté: ``ZAM^Z02^ZAM_Z01`` (receipt) and ``ZAM^Z03^ZAM_Z01`` (read).

Written from the volet « Transmission d'un document CDA-R2 en HL7v2 » 2.1, page
``ack-metier-zam`` (ansforge/IG-hl7v2-volet-transmission-document-cda-r2) and its sample
messages ``Message metier reception MSS`` / ``Message metier lecture MSS``
(ansforge/hl7V2-exemples, V2.1/ORU/Transmission initiale ORU):

    MSH|...|ZAM^Z02^ZAM_Z01|<id>|P|2.6|||||FRA|UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2
    EVN||<now>
    OBX|1|CWE|ACK_RECEPTION_MSS^Accusé de réception MSSanté^AckMetierZAM|<MSH-10 of the request>|Y^^expandedYes-NoIndicator||||||F
    OBX|2|XTN|DESTINATAIRE_MSS^Destinataire MSSanté^AckMetierZAM|<recipient id>|^^X.400^<address>||||||F
    [ERR|||207^...^HL70357|E|<smtp code>^<label>^SMTPERRORCODE]

Z03 uses ``ACK_LECTURE_MSS^Accusé de lecture`` and ``LECTEUR_MSS^Lecteur du courriel
MSSanté``; its ERR-5 uses ``applicationErrorCondition`` codes (HL7 table 0533 as the
IG lists them: 900-906). This module does not touch ``gateway.core.ack`` (the Z01 builder);
it only shares its public constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.core.ack import HL7_0357, zam_msh_fields
from gateway.core.hl7v2.reader import Encoding, Message, escape

__all__ = ["MssAck", "build_zam_z02", "build_zam_z03", "READ_ERROR_CODES"]

#: ERR-5 codes of a negative Z03 (volet ack-metier-zam, table 0533 extract).
READ_ERROR_CODES: dict[str, str] = {
    "900": "Version du document erronée",
    "901": "Auteur non autorisé",
    "902": "Patient inconnu",
    "903": "INS absent du CDA",
    "904": "INS ne correspondant pas au dossier du destinataire",
    "905": "Traits INS incomplets",
    "906": "Autre",
}


@dataclass(frozen=True)
class MssAck:
    """One recipient's outcome, as a DSN / MDN / SMTP reply said it."""

    address: str  # the recipient's MSSanté mailbox (OBX-5.4)
    positive: bool
    recipient_id: str = ""  # OBX-4 of the second OBX (optional: RPPS / id of the recipient)
    error_code: str = ""  # SMTP status (550, 5.1.1) for Z02; 900-906 for Z03
    error_label: str = ""


def _ts(now: datetime) -> str:
    return now.strftime("%Y%m%d%H%M%S%z")


def _seg(enc: Encoding, name: str, fields: list[str]) -> str:
    while fields and not fields[-1]:
        fields.pop()
    return enc.field.join([name, *fields])


def _build(
    original: Message, ack: MssAck, *, trigger: str, first: tuple[str, str], second: tuple[str, str],
    err_system: str, now: datetime, control_id: str, app: str, facility: str,
) -> str:
    enc = original.encoding
    c = enc.component
    msh = original.msh
    head = zam_msh_fields(original, trigger, now=now, control_id=control_id, app=app, facility=facility)
    msh_fields = [enc.msh2, *(head.get(n, "") for n in range(3, 22))]
    segments = [
        _seg(enc, "MSH", msh_fields),
        _seg(enc, "EVN", ["", _ts(now)]),
        _seg(enc, "OBX", [
            "1", "CWE", c.join([first[0], escape(first[1], enc), "AckMetierZAM"]), msh.field(10).raw,
            c.join(["Y" if ack.positive else "N", "", "expandedYes-NoIndicator"]), "", "", "", "", "", "F",
        ]),
        _seg(enc, "OBX", [
            "2", "XTN", c.join([second[0], escape(second[1], enc), "AckMetierZAM"]), escape(ack.recipient_id, enc),
            c.join(["", "", "X.400", escape(ack.address, enc)]), "", "", "", "", "", "F",
        ]),
    ]
    if not ack.positive:
        segments.append(_seg(enc, "ERR", [
            "", "", c.join(["207", escape(HL7_0357["207"], enc), "HL70357"]), "E",
            c.join([escape(ack.error_code, enc), escape(ack.error_label[:80], enc), err_system]),
        ]))
    return "\r".join(segments)


def build_zam_z02(
    original: Message, ack: MssAck, *, now: datetime, control_id: str, app: str = "RELAIS", facility: str = "RELAIS"
) -> str:
    """``ZAM^Z02^ZAM_Z01``: one recipient's receipt (DSN ``delivered``) or failure (ERR-5 SMTP code)."""
    return _build(
        original, ack, trigger="Z02",
        first=("ACK_RECEPTION_MSS", "Accusé de réception MSSanté"),
        second=("DESTINATAIRE_MSS", "Destinataire MSSanté"),
        err_system="SMTPERRORCODE", now=now, control_id=control_id, app=app, facility=facility,
    )


def build_zam_z03(
    original: Message, ack: MssAck, *, now: datetime, control_id: str, app: str = "RELAIS", facility: str = "RELAIS"
) -> str:
    """``ZAM^Z03^ZAM_Z01``: the reader's mailbox once an MDN says the mail was displayed."""
    return _build(
        original, ack, trigger="Z03",
        first=("ACK_LECTURE_MSS", "Accusé de lecture"),
        second=("LECTEUR_MSS", "Lecteur du courriel MSSanté"),
        err_system="applicationErrorCondition", now=now, control_id=control_id, app=app, facility=facility,
    )
