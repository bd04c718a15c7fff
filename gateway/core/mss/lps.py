"""The MDM^T02 of the volet « Transmission LPS d'un document CDA reçu par courriel MSSanté » (PFI → DPI).

Pure: the CDA (as received, bytes), its parsed header and what the mail said come in, the
HL7 v2.6 message goes out (CR-separated, no MLLP framing). Written from the volet
(ansforge/IG-hl7v2-volet-trans-lps-doc-cda-courriel-mss, ``profils-messages``) and its Ségur
sample ``message_MDM__LPS_MSS_CR_Radio_INIT_N1`` (ansforge/hl7V2-exemples, Vague 2,
TRANSMISSION_LPS_DOC_CDA_COURRIEL_FROM_MSSANTE_V1.1):

    MSH|^~\\&|<PFI>|<PFI org>|<DPI>|<DPI org>|<now>||MDM^T02^MDM_T02|<id>|P|2.6|||||FRA|UNICODE UTF-8|||1.1^CISIS_CDA_HL7_LPS
    EVN||<now>
    PID|||<INS>^^^ASIP-SANTE-INS-NIR&<OID>&ISO^INS||<birth name>^<first given>^<given list>^^^^L||<birth date>|<sex>|...|VALI
    PV1|1|N
    ORC|NW
    OBR|1|||<type code>
    TXA|1|<type code>|TEXT|<effective time>||||||||<document id>|||||AU
    OBX|1|ED|<type code>||^text^XML^Base64^<CDA>||||||F
    PRT||UC||SB^^participation|<author>||||||||||^^X.400^<mail From>
    PRT||UC||RCT^^participation|||||||||||^^X.400^<mail To>
    [PRT||UC||REPLY^^participation|||||||||||^^X.400^<Reply-To>]
    OBX|2|ED|1^<mail subject>||^text^^Base64^<mail body>||||||F
    OBX|3..6|CWE|MASQUE_PS / INVISIBLE_PATIENT / INVISIBLE_REP_LEGAUX / MODIF_CONF_CODE ^...^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F

PID-32 is ``VALI`` when the CDA carries an INS: the CI-SIS INS annex lets a producer put the
INS in ``recordTarget`` only for a qualified identity (PAM-FR 2.11 §6.6.1: VALI + INS means
qualified). The visibility flags are ``N``: a mail carries no DMP masking request.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from gateway.core.hl7v2.reader import DEFAULT_ENCODING, escape
from gateway.model import CdaHeader

__all__ = ["LPS_PROFILE", "MailContext", "build_lps_mdm"]

LPS_PROFILE = ("1.1", "CISIS_CDA_HL7_LPS")
_INS_NAMESPACE = {"1.2.250.1.213.1.4.9": "ASIP-SANTE-INS-NIA"}  # others are NIR (prod, test, demo)
_FLAGS = (
    ("MASQUE_PS", "Masqué aux professionnels de Santé"),
    ("INVISIBLE_PATIENT", "Document Non Visible par le patient"),
    ("INVISIBLE_REP_LEGAUX", "Non visible par les représentants Légaux du patient"),
    ("MODIF_CONF_CODE", "Modification Confidentiality Code"),
)


@dataclass(frozen=True)
class MailContext:
    """What the MSSanté mail said around the document."""

    sender: str  # From
    recipient: str  # To (our application mailbox)
    reply_to: str | None = None
    subject: str = ""
    body: str = ""


def _ts(now: datetime) -> str:
    return now.strftime("%Y%m%d%H%M%S")


def _coded(value: dict[str, str] | None) -> str:
    if not value:
        return ""
    system = {"2.16.840.1.113883.6.1": "LN"}.get(value.get("codeSystem", ""), value.get("codeSystem", ""))
    return "^".join([escape(value.get("code", "")), escape(value.get("displayName", "")), escape(system)])


def build_lps_mdm(
    cda: bytes, header: CdaHeader, mail: MailContext, *, now: datetime, control_id: str,
    app: str, facility: str, receiver_app: str, receiver_facility: str,
) -> str:
    """The LPS volet's MDM^T02 carrying ``cda`` byte for byte (base64 in OBX-5.5)."""
    e = DEFAULT_ENCODING
    p = header.patient
    ins = p.ins
    pid3 = ""
    if ins is not None:
        ns = _INS_NAMESPACE.get(ins.oid or "", "ASIP-SANTE-INS-NIR")
        pid3 = f"{escape(ins.value)}^^^{ns}&{ins.oid}&ISO^INS"
    name = "^".join([escape(p.birth_family or ""), escape(p.first_given or ""), escape(p.birth_given_list or ""),
                     "", "", "", "L"])
    pid = ["PID", "", "", pid3, "", name, "", escape(p.birth_date or ""), escape(p.gender or "")]
    pid += [""] * (32 - len(pid)) + (["VALI"] if ins is not None else [""])
    type_code = _coded(header.code)
    doc_id = f"{escape(header.id_extension)}^^{header.id_root}^ISO" if header.id_extension else header.id_root
    author = header.authors[0].person if header.authors else None
    sb5 = ""
    if author is not None and author.id:
        sb5 = "^".join([escape(author.id), escape(author.family or ""), escape(author.given or ""),
                        "", "", "", "", "", f"&{author.id_root or ''}&ISO", "D"])

    def prt(role: str, person: str, address: str) -> str:
        return "|".join(["PRT", "", "UC", "", f"{role}^^participation", person, *[""] * 9,
                         f"^^X.400^{escape(address)}"])

    segments = [
        "|".join(["MSH", e.msh2, escape(app), escape(facility), escape(receiver_app), escape(receiver_facility),
                  _ts(now), "", "MDM^T02^MDM_T02", escape(control_id), "P", "2.6", "", "", "", "", "FRA",
                  "UNICODE UTF-8", "", "", "^".join(LPS_PROFILE)]),
        f"EVN||{_ts(now)}",
        "|".join(pid).rstrip("|"),
        "PV1|1|N",
        "ORC|NW",
        f"OBR|1|||{type_code}",
        "|".join(["TXA", "1", type_code, "TEXT", escape(header.effective_time or ""), *[""] * 7, doc_id,
                  "", "", "", "", "AU"]),
        f"OBX|1|ED|{type_code}||^text^XML^Base64^{base64.b64encode(cda).decode('ascii')}||||||F",
        prt("SB", sb5, mail.sender),
        prt("RCT", "", mail.recipient),
    ]
    if mail.reply_to:
        segments.append(prt("REPLY", "", mail.reply_to))
    body = base64.b64encode(mail.body.encode("utf-8")).decode("ascii")
    segments.append(f"OBX|2|ED|1^{escape(mail.subject)}||^text^^Base64^{body}||||||F")
    for n, (code, label) in enumerate(_FLAGS, start=3):
        segments.append(f"OBX|{n}|CWE|{code}^{escape(label)}^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F")
    return "\r".join(segments)
