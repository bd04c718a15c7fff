"""The LPS volet's MDM^T02 built from a received CDA, and finding the document in a mail."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from adapters.dmp.testing import sample_document, sample_metadata
from adapters.mssante.inbound import extract_document
from adapters.mssante.xdm import build_xdm
from gateway.core import cda as cda_mod
from gateway.core.hl7v2.reader import Message
from gateway.core.mss.lps import MailContext, build_lps_mdm
from gateway.errors import GatewayError

ROOT = Path(__file__).resolve().parents[2]
CDA = ROOT / "fixtures" / "cda" / "cr_bio_n3.xml"
SAMPLE = (ROOT.parent / "shared" / "corpus" / "hl7v2" / "ansforge" / "hl7V2-exemples" / "trans-lps-cda-mss"
          / "v1.1-segur" / "mdm" / "initial" / "message_MDM__LPS_MSS_CR_Radio_INIT_N1.er7")
NOW = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)


def build(reply_to: str | None = "sec@hop.test") -> Message:
    data = CDA.read_bytes()
    header = cda_mod.parse_header(cda_mod.parse_cda(data))
    text = build_lps_mdm(data, header, MailContext("dr@hop.test", "relais@pfi.test", reply_to, "XDM/1.0/DDM+CR", "Corps"),
                         now=NOW, control_id="L1", app="RELAIS", facility="PFI", receiver_app="DPI",
                         receiver_facility="HOP")
    return Message.parse(text)


def test_header_profile_and_byte_identical_cda() -> None:
    msg = build()
    assert (msg.msh.value(9, 1), msg.msh.value(9, 2), msg.msh.value(9, 3)) == ("MDM", "T02", "MDM_T02")
    assert msg.msh.value(12) == "2.6" and msg.msh.value(21, 1) == "1.1" and msg.msh.value(21, 2) == "CISIS_CDA_HL7_LPS"
    obx = next(s for s in msg.segments if s.name == "OBX")
    assert base64.b64decode(obx[5].value(5)) == CDA.read_bytes()
    pid = next(s for s in msg.segments if s.name == "PID")
    assert pid[3].value(1) == "290077511204566" and pid[3].value(5) == "INS" and pid[32].value(1) == "VALI"
    roles = [s[4].value(1) for s in msg.segments if s.name == "PRT"]
    assert roles == ["SB", "RCT", "REPLY"]
    assert "REPLY" not in [s[4].value(1) for s in build(None).segments if s.name == "PRT"]


@pytest.mark.corpus
def test_same_segment_sequence_as_the_ans_sample() -> None:
    if not SAMPLE.exists():
        pytest.skip(reason="ANS LPS sample (../shared/corpus) not available")
    theirs = [line.split("|")[0] for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    ours = [s.name for s in build().segments]
    assert ours == theirs


def mail_with(*parts: tuple[bytes, str, str, str]) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "dr@hop.test", "relais@pfi.test", "x"
    msg.set_content("corps")
    for data, maintype, subtype, name in parts:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


def test_document_from_xdm_or_bare_cda() -> None:
    doc = sample_document()
    package = build_xdm(sample_metadata(doc), doc, now=NOW)
    assert extract_document(mail_with((package, "application", "zip", "IHE_XDM.ZIP"))) == (doc, "xdm")
    assert extract_document(mail_with((doc, "text", "xml", "cr.xml"))) == (doc, "cda")


@pytest.mark.parametrize(
    ("parts", "code"),
    [((), "MSS_NO_DOCUMENT"), (((b"<a/>", "text", "xml", "a.xml"), (b"<b/>", "text", "xml", "b.xml")), "MSS_MANY_CDA")],
)
def test_mail_without_exactly_one_document_is_refused(parts, code: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GatewayError) as err:
        extract_document(mail_with(*parts))
    assert err.value.code == code
