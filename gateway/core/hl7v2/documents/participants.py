"""The PRT segments after the document OBX (volet §7): who sends the request, who receives mail.

``SB`` is the author of the request — a person (PRT-5) or a device (PRT-10) and its
organisation (PRT-8) — from which the VIHF token and the submission-set author are
built; only the first SB counts. ``RCT`` gives the MSSanté recipients and ``REPLY`` the
reply-to address (PRT-15.4). A DMP-bound request (DESTDMP = Y) needs an SB with
PRT-5.1 and PRT-8.10.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.hl7v2.documents.values import text_or_none
from gateway.core.hl7v2.reader import Segment
from gateway.model import Author, Finding, Organization, Person

__all__ = ["Participants", "read_participants", "check_dmp_sender"]


@dataclass(frozen=True)
class Participants:
    """What the PRT segments say."""

    sender: Author | None = None  # PRT with PRT-4.1 = SB
    sender_location: str | None = None  # "PRT[k]" of that PRT, for error locations
    recipients: tuple[str, ...] = ()  # PRT RCT, PRT-15.4
    reply_to: str | None = None  # PRT REPLY, PRT-15.4


def read_participants(prts: list[tuple[int, Segment]], findings: list[Finding]) -> Participants:
    """Read the PRT segments, ``prts`` being (n-th PRT of the message, segment) in order."""
    sender: Author | None = None
    sender_location: str | None = None
    recipients: list[str] = []
    reply_to: str | None = None
    for k, seg in prts:
        loc = f"PRT[{k}]"
        role = seg[4].value(1).strip()
        emails = [e for rep in seg[15].reps if (e := rep.comp(4).text.strip())]
        if role == "SB":
            if sender is not None:
                findings.append(
                    Finding(
                        "PRT_SB_DUPLICATE", f"{loc}: more than one SB PRT; the first is used", loc, "warning"
                    )
                )
                continue
            sender, sender_location = _author(seg), loc
        elif role == "RCT":
            recipients.extend(emails)
        elif role == "REPLY":
            if emails and reply_to is None:
                reply_to = emails[0]
        else:
            findings.append(
                Finding(
                    "PRT_ROLE_UNKNOWN",
                    f"{loc}-4.1 '{role}' is not SB, RCT or REPLY; ignored",
                    f"{loc}-4",
                    "warning",
                )
            )
    return Participants(sender, sender_location, tuple(recipients), reply_to)


def check_dmp_sender(dmp_bound: bool, participants: Participants, findings: list[Finding]) -> None:
    """A DMP feed needs the SB PRT, with the ids the VIHF and the submission-set author use."""
    if not dmp_bound:
        return
    sender = participants.sender
    if sender is None:
        findings.append(
            Finding(
                "PRT_SB_MISSING",
                "DESTDMP = Y but no PRT with PRT-4.1 'SB' (author of the request) follows the document OBX",
                "PRT",
            )
        )
        return
    missing = []
    if sender.person is None or not sender.person.id:
        missing.append("PRT-5.1")
    if sender.organization is None or not sender.organization.id:
        missing.append("PRT-8.10")
    if missing:
        findings.append(
            Finding(
                "PRT_SB_INCOMPLETE",
                f"SB PRT lacks {', '.join(missing)} needed for the DMP (VIHF, submission-set author)",
                participants.sender_location,
                "warning",
            )
        )


def _author(seg: Segment) -> Author:
    """The SB PRT as an :class:`Author`: the person or device, and the organisation."""
    return Author(person=_person_or_device(seg), organization=_organization(seg))


def _person_or_device(seg: Segment) -> Person | None:
    xcn = seg[5].rep(1)
    # Volet mapping table: the VIHF subject-id is "family, given, service"; the service is
    # not in PRT-5, the table proposes PRT-9 (location) for it.
    service = text_or_none(seg[9].rep(1).comp(1).text)
    if text_or_none(xcn.comp(1).text) or text_or_none(xcn.comp(2).sub(1)):
        return Person(
            id=text_or_none(xcn.comp(1).text),
            family=text_or_none(xcn.comp(2).sub(1)),
            given=text_or_none(xcn.comp(3).text),
            id_root=text_or_none(xcn.comp(9).sub(2)),
            service=service,
        )
    device = seg[10].rep(1)
    if text_or_none(device.comp(1).text):
        # Volet §7: "PRT-10 device id if the author is a system" (EI: id ^ namespace ^ OID).
        return Person(
            id=text_or_none(device.comp(1).text),
            id_root=text_or_none(device.comp(3).text),
            software=text_or_none(device.comp(2).text),
            service=service,
            device=True,
        )
    return None


def _organization(seg: Segment) -> Organization | None:
    xon = seg[8].rep(1)
    if not (text_or_none(xon.comp(1).text) or text_or_none(xon.comp(10).text)):
        return None
    # the Ségur MDM sample pads PRT-8.10 with U+00A0: text_or_none strips it
    return Organization(
        id=text_or_none(xon.comp(10).text),
        id_root=text_or_none(xon.comp(6).sub(2)),
        name=text_or_none(xon.comp(1).text),
        id_type=text_or_none(xon.comp(7).text),
    )
