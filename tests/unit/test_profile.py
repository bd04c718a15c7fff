"""Volet version from MSH-21 (gateway.core.hl7v2.profile) and MSH-10 salvage (gateway.core.hl7v2.salvage)."""

from __future__ import annotations

import pytest

from gateway.core.hl7v2.profile import read_profile
from gateway.core.hl7v2.reader import Message
from gateway.core.hl7v2.salvage import salvage_control_id


def msh21(value: str) -> Message:
    return Message.parse(f"MSH|^~\\&|A|B|C|D|20250101||MDM^T02^MDM_T02|1|P|2.6|||||FRA|UNICODE UTF-8|||{value}")


@pytest.mark.parametrize(
    ("value", "code", "orc"),
    [
        ("2.1^CISIS_CDA_HL7_V2", None, True),
        ("2.1^ CISIS_CDA_HL7_V2", None, True),  # the blank of the IG page example is not part of the value
        ("2.0^CISIS_CDA_HL7_V2", None, False),
        ("", "PROFILE_MISSING", True),
        ("1.2^CISIS_CDA_HL7_V1", "PROFILE_VERSION_UNSUPPORTED", True),
        ("1.1^CISIS_CDA_HL7_LPS", "PROFILE_LPS_OUTBOUND", True),
        ("1.0^CISIS_TLR_HL7_V2", "PROFILE_VERSION_UNSUPPORTED", True),
        ("3.0^CISIS_CDA_HL7_V2", "PROFILE_VERSION_UNSUPPORTED", True),
        ("X^OTHER~2.1^CISIS_CDA_HL7_V2", None, True),  # the CI-SIS repetition counts
    ],
)
def test_read_profile(value: str, code: str | None, orc: bool) -> None:
    profile, finding = read_profile(msh21(value))
    assert (finding.code if finding else None) == code
    assert profile.requires_orc is orc
    if finding is not None:
        assert finding.location == "MSH-21"
        assert finding.severity == ("warning" if code == "PROFILE_MISSING" else "error")


def test_salvage_control_id() -> None:
    assert salvage_control_id(b"MSH|^~|A|B|C|D|T||ADT^A01|CTRL\xc91|P|2.5\r") == b"CTRL\xc91"
    assert salvage_control_id(b"\xef\xbb\xbfMSH#^~\\&#A#B#C#D#T##ADT#X-9#P") == b"X-9"
    assert salvage_control_id(b"MSH|^~\\&|A|B") is None  # no MSH-10 at all
    assert salvage_control_id(b"MSHA^~\\&A") is None  # no usable separator
    assert salvage_control_id(b"hello") is None
    assert salvage_control_id(b"MSH|^~\\&|A|B|C|D|T||ADT^A01|   |P") is None  # blank is not an id
