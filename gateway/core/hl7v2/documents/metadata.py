"""The DMP / MSSanté metadata OBX (volet §8): the Y/N flags and the mail bodies.

Each ``MetaDMPMSS`` code counts once (a repeat is ``META_DUPLICATE``, the first kept);
a flag that is neither Y nor N is ignored. A missing required flag is a warning, and a
missing ``DESTDMP`` means "not bound for the DMP": it never defaults to yes, because a
DMP feed needs a qualified INS and a sender. The mail bodies (CORPSMAIL_*) must be
Base64 UTF-8 text; a defective one is only a warning, since we send no MSSanté mail.
"""

from __future__ import annotations

from gateway.core.hl7v2.base64 import decode_payload
from gateway.core.hl7v2.reader import Segment
from gateway.model import Finding

__all__ = [
    "META_SYSTEM",
    "META_REQUIRED_CODES",
    "META_FLAG_CODES",
    "META_CODES",
    "META_ALIASES",
    "read_metadata",
]

META_SYSTEM = "MetaDMPMSS"
#: Required metadata OBX, in the order the volet imposes (§8).
META_REQUIRED_CODES: tuple[str, ...] = (
    "MASQUE_PS",
    "INVISIBLE_PATIENT",
    "INVISIBLE_REP_LEGAUX",
    "CONNEXION_SECRETE",
    "MODIF_CONF_CODE",
    "DESTDMP",
    "DESTMSSANTEPS",
    "DESTMSSANTEPAT",
)
#: Every Y/N metadata code (required then optional).
META_FLAG_CODES: tuple[str, ...] = (*META_REQUIRED_CODES, "ACK_RECEPTION", "ACK_LECTURE_MSS")
_META_MAIL = {"CORPSMAIL_PS": "ps", "CORPSMAIL_PATIENT": "patient"}
#: The volet v1.2 spellings, read as today's codes.
META_ALIASES = {
    "INVISIBLE_REPRESENTANTS_LEGAUX": "INVISIBLE_REP_LEGAUX",
    "MODIF_CONFIDENTIALITYCODE": "MODIF_CONF_CODE",
}
#: Every metadata code, flags and mail bodies.
META_CODES = frozenset(META_FLAG_CODES) | frozenset(_META_MAIL)


def read_metadata(
    meta_obx: list[tuple[int, str, Segment]], findings: list[Finding]
) -> tuple[dict[str, bool], dict[str, str]]:
    """The flags present (code → Y) and the decoded mail bodies (``ps`` / ``patient`` → text).

    ``meta_obx`` holds (n-th OBX of the message, metadata code, segment), in message order.
    """
    flags: dict[str, bool] = {}
    mails: dict[str, str] = {}
    seen: set[str] = set()
    for n, meta_code, seg in meta_obx:
        loc = f"OBX[{n}]"
        if meta_code in seen:
            findings.append(
                Finding(
                    "META_DUPLICATE", f"{loc}: metadata '{meta_code}' repeated; first kept", loc, "warning"
                )
            )
            continue
        seen.add(meta_code)
        if meta_code in _META_MAIL:
            body = _read_mail_body(loc, meta_code, seg, findings)
            if body is not None:
                mails[_META_MAIL[meta_code]] = body
        elif meta_code in META_FLAG_CODES:
            _read_flag(loc, meta_code, seg, flags, findings)
        else:
            findings.append(
                Finding(
                    "META_UNKNOWN",
                    f"{loc}-3.1 '{meta_code}' is not a known MetaDMPMSS code",
                    f"{loc}-3",
                    "warning",
                )
            )
    _check_required(seen, findings)
    return flags, mails


def _read_flag(loc: str, meta_code: str, seg: Segment, flags: dict[str, bool], findings: list[Finding]) -> None:
    value = seg[5].value(1).strip()
    if value in ("Y", "N"):
        flags[meta_code] = value == "Y"
        return
    findings.append(
        Finding(
            "META_VALUE_INVALID",
            f"{loc}-5.1 of '{meta_code}' is '{value}', expected Y or N; ignored",
            f"{loc}-5.1",
            "warning",
        )
    )


def _check_required(seen: set[str], findings: list[Finding]) -> None:
    # An invalid Y/N still counts as present: it had its own warning.
    for meta_code in META_REQUIRED_CODES:
        if meta_code not in seen:
            consequence = " (treated as N: not sent to the DMP)" if meta_code == "DESTDMP" else ""
            findings.append(
                Finding(
                    "META_MISSING",
                    f"required metadata OBX '{meta_code}' is missing{consequence}",
                    "OBX",
                    "warning",
                )
            )


def _read_mail_body(loc: str, meta_code: str, seg: Segment, findings: list[Finding]) -> str | None:
    value = seg[5].rep(1)
    if value.comp(4).text.strip().lower() != "base64":
        findings.append(
            Finding(
                "META_MAIL_BODY_INVALID",
                f"{loc}-5.4 of '{meta_code}' is not 'Base64'; mail body ignored",
                f"{loc}-5.4",
                "warning",
            )
        )
        return None
    data, b64 = decode_payload(value.comp(5).raw, f"{loc}-5.5")
    errors = [f for f in b64 if f.severity == "error"]
    if errors:
        # Not needed for routing (we send no MSSanté mail): downgrade to a warning.
        findings.append(
            Finding(
                "META_MAIL_BODY_INVALID",
                f"{loc}-5.5 of '{meta_code}' is not decodable ({errors[0].code}); mail body ignored",
                f"{loc}-5.5",
                "warning",
            )
        )
        return None
    findings.extend(b64)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        findings.append(
            Finding(
                "META_MAIL_BODY_INVALID",
                f"{loc}-5.5 of '{meta_code}' is not UTF-8 text; mail body ignored",
                f"{loc}-5.5",
                "warning",
            )
        )
        return None
