"""ZAM^Z02 / ZAM^Z03 as the volet's ack-metier-zam page and samples show them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.core.hl7v2.reader import Message
from gateway.core.mss.zam import MssAck, build_zam_z02, build_zam_z03

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2" / "mdm_t02_mss.hl7"
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "hl7v2" / "ansforge" / "hl7V2-exemples"
NOW = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)


def original() -> Message:
    return Message.parse(FIXTURE.read_bytes().decode("utf-8"))


def test_positive_z02_layout() -> None:
    text = build_zam_z02(original(), MssAck("dr.martin@hopital.mss.test", True, "801234567897"),
                         now=NOW, control_id="ZAM1")
    segs = text.split("\r")
    assert [s[:3] for s in segs] == ["MSH", "EVN", "OBX", "OBX"]
    msh = segs[0].split("|")
    assert msh[8] == "ZAM^Z02^ZAM_Z01" and msh[9] == "ZAM1" and msh[11] == "2.6" and msh[20] == "2.1^CISIS_CDA_HL7_V2"
    assert msh[2:6] == ["RELAIS", "RELAIS-PFI", "DPI-RELAIS", "CLINIQUE-RELAIS"]
    obx1, obx2 = segs[2].split("|"), segs[3].split("|")
    assert obx1[1:6] == ["1", "CWE", "ACK_RECEPTION_MSS^Accusé de réception MSSanté^AckMetierZAM", "MDM0100",
                         "Y^^expandedYes-NoIndicator"]
    assert obx1[11] == "F"
    assert obx2[1:6] == ["2", "XTN", "DESTINATAIRE_MSS^Destinataire MSSanté^AckMetierZAM", "801234567897",
                         "^^X.400^dr.martin@hopital.mss.test"]


def test_negative_z02_carries_the_smtp_code_in_err5() -> None:
    ack = MssAck("nobody@hopital.mss.test", False, error_code="550", error_label="5.1.1 User unknown")
    segs = build_zam_z02(original(), ack, now=NOW, control_id="ZAM2").split("\r")
    assert segs[2].split("|")[5] == "N^^expandedYes-NoIndicator"
    err = segs[4].split("|")
    assert err[0] == "ERR" and err[3].startswith("207^") and err[4] == "E"
    assert err[5] == "550^5.1.1 User unknown^SMTPERRORCODE"


def test_z03_uses_the_read_codes() -> None:
    segs = build_zam_z03(original(), MssAck("dr.martin@hopital.mss.test", True), now=NOW,
                         control_id="ZAM3").split("\r")
    assert segs[0].split("|")[8] == "ZAM^Z03^ZAM_Z01"
    assert segs[2].split("|")[3] == "ACK_LECTURE_MSS^Accusé de lecture^AckMetierZAM"
    assert segs[3].split("|")[3] == "LECTEUR_MSS^Lecteur du courriel MSSanté^AckMetierZAM"
    neg = build_zam_z03(original(), MssAck("x@y", False, error_code="906", error_label="Autre"), now=NOW,
                        control_id="ZAM4").split("\r")
    assert neg[4].split("|")[5] == "906^Autre^applicationErrorCondition"


@pytest.mark.corpus
@pytest.mark.parametrize(("trigger", "name"), [("Z02", "zam_Z02_accuse_reception_mss.hl7"),
                                               ("Z03", "zam_Z03_accuse_lecture_mss.hl7")])
def test_same_obx_as_the_ans_sample(trigger: str, name: str) -> None:
    path = CORPUS / "trans-doc-cda" / "v2.1" / "oru" / "initial" / name
    if not path.exists():
        pytest.skip(reason="ANS sample (../shared/corpus) not available")
    sample = [s for s in path.read_text(encoding="utf-8").replace("\r\n", "\n").split("\n") if s]
    build = build_zam_z02 if trigger == "Z02" else build_zam_z03
    ours = build(original(), MssAck("adam.hoda@test-ci-sis.mssante.fr", True, "801234567897"), now=NOW,
                 control_id="X").split("\r")
    for mine, theirs in zip(ours[2:4], sample[2:4], strict=True):
        # OBX-4 of OBX 1 is the request's control id: ours (MDM0100) vs the sample's (015)
        m, t = mine.split("|"), theirs.rstrip("|").split("|")
        assert m[:3] == t[:3] and m[5:] == t[5:] and (m[1] == "1" or m[4] == t[4])
