"""Which version of the ANS volet a document message follows, read from MSH-21.

MSH-21 (message profile identifier, EI) is written ``<volet version>^<namespace>``
(volet « Transmission d'un document CDA-R2 en HL7v2 », profils-messages page, MSH
table). What the gateway does with each:

* ``2.1^CISIS_CDA_HL7_V2`` — the current volet: ORC-1, OBX-11 and (MDM) the trigger
  event must agree;
* ``2.0^CISIS_CDA_HL7_V2`` — the previous version, whose messages carry no ORC: the
  trigger event (MDM) and OBX-11 of the document OBX decide the action (the ANS v2.0
  MDM samples, ansforge/hl7V2-exemples ``Volets/TRANS_DOC_CDA_HL7V2/V2.0``);
* ``1.2^CISIS_CDA_HL7_V1`` — refused with ``PROFILE_VERSION_UNSUPPORTED`` naming MSH-21:
  that version has no PRT segment (the author of the request the DMP needs for the
  VIHF is missing), uses ORC-1 ``SC``, and names its metadata without ``MetaDMPMSS``;
  the ANS replaced it by 2.x and no corridor accepts it any more;
* ``…^CISIS_CDA_HL7_LPS`` — the sister volet « Transmission d'un document CDA en HL7v2
  et par messagerie sécurisée de santé » describes the PFI → DPI direction (a
  platform sends documents *to* a software package): a gestionnaire never receives it,
  refused with ``PROFILE_LPS_OUTBOUND``;
* empty MSH-21 — accepted as the current volet (many senders leave it empty) with a
  warning;
* anything else — refused with ``PROFILE_VERSION_UNSUPPORTED`` naming MSH-21.

Refusals are ACK AR (HL7 v2.5 ch. 2 §2.9.2.2: the receiver cannot process this kind
of message) with ERR-3 ``203`` (unsupported version id): MSH-21 versions the profile
the way MSH-12 versions the standard.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.hl7v2.reader import Message
from gateway.model import Finding

__all__ = ["SUPPORTED_PROFILES", "VoletProfile", "read_profile"]

V2 = "CISIS_CDA_HL7_V2"
V1 = "CISIS_CDA_HL7_V1"
LPS = "CISIS_CDA_HL7_LPS"

#: The MSH-21 values a document message may carry, for the README and error texts.
SUPPORTED_PROFILES: tuple[str, ...] = (f"2.1^{V2}", f"2.0^{V2}")


@dataclass(frozen=True, slots=True)
class VoletProfile:
    """MSH-21 as read: the volet version and namespace, and whether ORC is required."""

    version: str
    namespace: str

    @property
    def requires_orc(self) -> bool:
        """v2.0 messages have no ORC: the trigger and OBX-11 carry the action."""
        return not (self.namespace == V2 and self.version.startswith("2.0"))


def read_profile(msg: Message) -> tuple[VoletProfile, Finding | None]:
    """The volet profile of a document message and, when it must be refused, why."""
    reps = msg.msh.field(21).reps
    # MSH-21 repeats (v2.5): the first repetition naming a CI-SIS profile counts.
    chosen = next((r for r in reps if r.comp(2).text.strip().startswith("CISIS_")), reps[0] if reps else None)
    version = chosen.comp(1).text.strip() if chosen is not None else ""
    namespace = chosen.comp(2).text.strip() if chosen is not None else ""
    profile = VoletProfile(version, namespace)
    written = f"{version}^{namespace}" if namespace else version
    if not version and not namespace:
        return VoletProfile("2.1", V2), Finding(
            "PROFILE_MISSING",
            f"MSH-21 is empty: read as {SUPPORTED_PROFILES[0]}",
            "MSH-21",
            "warning",
        )
    if namespace == LPS:
        return profile, Finding(
            "PROFILE_LPS_OUTBOUND",
            f"MSH-21 '{written}' is the PFI-to-DPI volet (transmission to a software package): "
            f"a gestionnaire does not receive it; send {SUPPORTED_PROFILES[0]}",
            "MSH-21",
        )
    if namespace == V2 and (version == "2.1" or version.startswith("2.1.") or version == "2.0"
                            or version.startswith("2.0.")):
        return profile, None
    return profile, Finding(
        "PROFILE_VERSION_UNSUPPORTED",
        f"MSH-21 '{written}' is not a supported volet version (supported: {', '.join(SUPPORTED_PROFILES)})",
        "MSH-21",
    )
