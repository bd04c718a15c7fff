"""ACK / ZAM builders: pure functions, checked by re-reading the output with our reader."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.core.ack import build_ack, build_ack_unreadable, build_zam, erl, hl7_error_code
from gateway.core.charset import decode_message, encode_for
from gateway.core.hl7v2.reader import Message
from gateway.model import Finding

NOW = datetime(2024, 3, 15, 10, 30, 0, tzinfo=UTC)
MDM = (
    "MSH|^~\\&|SIL-Y|labo|PFI-X|Organisation-X|202106060931||MDM^T02^MDM_T02|015|P|2.6|||||FRA|8859/15|||"
    "2.1^CISIS_CDA_HL7_V2\rEVN||202106060931\rPID|1||123^^^X&1.2.3&ISO^PI||NOM^Prenom"
)
ORU = "MSH|^~\\&|LAB|HOSP|||20240101||ORU^R01^ORU_R01|C42|T|2.5|||||FRA|UNICODE UTF-8\rPID|1"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"


def parse(text: str) -> Message:
    return Message.parse(text)


def ack_of(original: str, code: str = "AA", **kw) -> Message:
    out = build_ack(parse(original), code, now=NOW, control_id="ACK1", **kw)
    assert "\n" not in out and not out.endswith("\r")
    return parse(out)


@pytest.mark.parametrize("code", ["AA", "AE", "AR"])
def test_original_mode_codes(code: str) -> None:
    ack = ack_of(MDM, code)
    assert ack.get("MSA-1") == code
    assert ack.get("MSA-2") == "015"
    assert ack.segment_names == ["MSH", "MSA"]


@pytest.mark.parametrize(("code", "enhanced"), [("AA", "CA"), ("AE", "CE"), ("AR", "CR")])
def test_enhanced_mode_when_msh15_valued(code: str, enhanced: str) -> None:
    text = MDM.replace("2.6|||||FRA", "2.6|||AL|NE||FRA")
    assert ack_of(text, code).get("MSA-1") == enhanced


def test_bad_code() -> None:
    with pytest.raises(ValueError):
        build_ack(parse(MDM), "CA", now=NOW, control_id="x")


def test_msh_swapped_and_copied() -> None:
    ack = ack_of(MDM)
    assert [ack.get(f"MSH-{n}") for n in (3, 4, 5, 6)] == ["PFI-X", "Organisation-X", "SIL-Y", "labo"]
    assert ack.get("MSH-7") == "20240315103000+0000"
    assert ack.msh[9].raw == "ACK^T02^ACK"
    assert ack.get("MSH-10") == "ACK1"
    assert ack.get("MSH-11") == "P"
    assert ack.version == "2.6"
    assert ack.get("MSH-17") == "FRA"
    assert ack.get("MSH-18") == "8859/15"
    assert ack.msh[21].raw == "2.1^CISIS_CDA_HL7_V2"


def test_oru_ack() -> None:
    ack = ack_of(ORU)
    assert ack.msh[9].raw == "ACK^R01^ACK"
    assert ack.version == "2.5"
    assert ack.get("MSH-11") == "T"
    assert ack.get("MSH-18") == "UNICODE UTF-8"
    assert ack.msh[21].raw == ""
    # original MSH-5/6 empty: our own names
    assert [ack.get(f"MSH-{n}") for n in (3, 4, 5, 6)] == ["RELAIS", "RELAIS", "LAB", "HOSP"]
    out = build_ack(parse(ORU), "AA", now=NOW, control_id="A", app="GW|1", facility="F")
    assert parse(out).msh[3].raw == "GW\\F\\1"


def test_no_trigger_gives_plain_ack() -> None:
    ack = ack_of("MSH|^~\\&|A|B|C|D|20240101||QRY|9|P|2.3")
    assert ack.msh[9].raw == "ACK"


def test_naive_now_has_no_offset() -> None:
    out = build_ack(parse(ORU), "AA", now=datetime(2024, 1, 2, 3, 4, 5), control_id="A")
    assert parse(out).get("MSH-7") == "20240102030405"


def test_msa3_text_escaped() -> None:
    ack = ack_of(ORU, "AE", text="bad|thing")
    assert ack["MSA"][3].raw == "bad\\F\\thing"
    assert ack.get("MSA-3") == "bad|thing"


def test_err_segments() -> None:
    findings = [
        Finding("PID_NAME_MISSING", "PID-5 manquant", "PID-5"),
        Finding("INS_KEY", "clé INS invalide", "PID-3(2).1"),
        Finding("OBX_FORMAT", "warn^x", "OBX[3]-5.5", severity="warning"),
        Finding("CDA_NOT_XML", "pas du XML", "/ClinicalDocument"),
    ]
    ack = ack_of(MDM, "AE", errors=findings)
    errs = ack.all("ERR")
    assert len(errs) == 4
    e1, e2, e3, e4 = errs
    assert e1[2].raw == "PID^1^5"
    assert e1[3].raw == "101^Required field missing^HL70357"
    assert e1[4].raw == "E"
    assert e1[5].raw == "PID_NAME_MISSING^PID-5 manquant^L"
    assert e1[8].text == "PID-5 manquant"
    assert e2[2].raw == "PID^1^3^2^1"
    assert e2[3].raw == "102^Data type error^HL70357"  # the sender's value, not our fault: never 207
    assert e3[2].raw == "OBX^3^5^1^5"
    assert e3[4].raw == "W"
    assert e3[5].raw == "OBX_FORMAT^warn\\S\\x^L"
    assert e3[5].comp(2).text == "warn^x"
    assert e4[2].raw == ""


def test_err_v24_uses_err1() -> None:
    text = ORU.replace("|2.5|", "|2.4|")
    ack = ack_of(text, "AE", errors=[Finding("PID_NAME_MISSING", "x", "PID-5.1")])
    err = ack["ERR"]
    assert err[1].raw == "PID^1^5^101&Required field missing&HL70357&PID_NAME_MISSING&x&L"
    assert len(err) == 1


def test_custom_encoding_characters_kept() -> None:
    text = "MSH#*@!%#APP*1#FAC#RCV#RF#20240101##MDM*T02*MDM_T02#77#P#2.6"
    out = build_ack(parse(text), "AE", now=NOW, control_id="A", errors=[Finding("X", "a*b#c", "PID-3.4")])
    assert out.startswith("MSH#*@!%#RCV#RF#APP*1#FAC#")
    ack = parse(out)
    assert ack.msh[9].raw == "ACK*T02*ACK"
    assert ack.get("MSA-2") == "77"
    err = ack["ERR"]
    assert err[2].raw == "PID*1*3*1*4"
    assert err[8].text == "a*b#c"


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("PID-3.4", "PID^1^3^1^4"),
        ("PID-3(2).4", "PID^1^3^2^4"),
        ("PID-3(2)", "PID^1^3^2"),
        ("PID-3.4.2", "PID^1^3^1^4^2"),
        ("MSH-18", "MSH^1^18"),
        ("OBX[2]-5", "OBX^2^5"),
        ("PID", "PID^1"),
        (None, ""),
        ("/ClinicalDocument/id", ""),
    ],
)
def test_erl(location: str | None, expected: str) -> None:
    assert erl(location) == expected


def test_missing_segment_is_a_segment_error() -> None:
    assert hl7_error_code(Finding("PV1_MISSING", "m", "PV1"))[0] == "100"
    assert hl7_error_code(Finding("MRG_MISSING", "m", "MRG-1"))[0] == "101"


@pytest.mark.parametrize(
    ("code", "hl7"),
    [
        ("CHARSET_INVALID", "102"),
        ("CHARSET_UNSUPPORTED", "103"),
        ("MSH_ENCODING", "102"),
        ("PARSE_ERROR", "102"),
        ("MSH_MISSING", "100"),
        ("SEGMENT_ORDER", "100"),
        ("UNSUPPORTED_VERSION", "203"),
        ("MESSAGE_TYPE_UNSUPPORTED", "200"),
        ("UNSUPPORTED_EVENT", "201"),
        ("PROCESSING_ID", "202"),
        ("DUPLICATE_MESSAGE", "205"),
        ("PARENT_DOCUMENT_NOT_FOUND", "204"),
        ("PID_REQUIRED", "101"),
        ("OBX_VALUE_MISSING", "101"),
        ("TABLE_VALUE", "103"),
        ("INS_KEY", "102"),
        ("INS_PID_CDA_MISMATCH", "102"),
        ("DOC_ACTION_INCONSISTENT", "103"),
        ("XDS_TYPECODE_NOT_DMP", "103"),
        ("PV1_MISSING", "101"),  # without a location; located on the segment it is 100
        ("PROFILE_VERSION_UNSUPPORTED", "203"),
        ("SEGMENT_ID_INVALID", "100"),
        ("EVENT_UNSUPPORTED", "201"),
        ("INTERNAL_ERROR", "207"),
        ("JOURNAL_ERROR", "207"),
    ],
)
def test_hl7_error_code(code: str, hl7: str) -> None:
    got, text = hl7_error_code(Finding(code, "m"))
    assert got == hl7
    assert text


def test_unreadable() -> None:
    raw = b"MSH|^~\\&|A|B|C|D|x||ORU^R01|9|P|2.5|||||FRA|8859/15\rPID|\xff"
    out = build_ack_unreadable(raw, NOW, "U1", Finding("MSH_ENCODING", "MSH-2 illisible", "MSH-2"))
    ack = parse(out)
    assert ack.get("MSA-1") == "AR"
    assert ack["MSA"][2].raw == ""
    assert ack.version == "2.5"
    assert ack.msh[9].raw == "ACK"
    assert ack.get("MSH-18") == "8859/15"
    err = ack["ERR"]
    assert err[2].raw == "MSH^1^2"
    assert err[3].raw == "102^Data type error^HL70357"


def test_unreadable_unknown_charset_not_copied() -> None:
    raw = b"MSH|^~\\&|A|B|C|D|x||ORU^R01|9|P|2.5|||||FRA|KLINGON\r"
    out = build_ack_unreadable(raw, NOW, "U1", Finding("CHARSET_UNSUPPORTED", "x", "MSH-18"))
    assert parse(out).get("MSH-18") == ""


def test_build_ack_without_message() -> None:
    out = build_ack(None, "AR", now=NOW, control_id="U", errors=[Finding("MSH_MISSING", "no MSH")])
    ack = parse(out)
    assert ack.get("MSA-1") == "AR" and ack["MSA"][2].raw == ""
    assert ack.get("ERR-3") == "100"


def test_ack_round_trips_through_charset() -> None:
    raw = (FIXTURES / "adt_a01_latin9.hl7").read_bytes()
    decoded = decode_message(raw)
    out = build_ack(parse(decoded.text), "AE", now=NOW, control_id="A", errors=[Finding("X", "Éé €")])
    ack = parse(out)
    assert ack.get("MSH-18") == "8859/15"
    data = encode_for(ack.get("MSH-18"), out)
    again = parse(decode_message(data).text)
    assert again["ERR"][8].text == "Éé €"
    assert again.msh[9].raw == "ACK^A01^ACK"


def test_zam_positive() -> None:
    zam = parse(build_zam(parse(MDM), positive=True, now=NOW, control_id="Z1"))
    assert zam.segment_names == ["MSH", "EVN", "OBX"]
    assert zam.msh[9].raw == "ZAM^Z01^ZAM_Z01"
    assert zam.version == "2.6"
    assert zam.msh[21].raw == "2.1^CISIS_CDA_HL7_V2"
    assert [zam.get(f"MSH-{n}") for n in (3, 4, 5, 6)] == ["PFI-X", "Organisation-X", "SIL-Y", "labo"]
    assert zam.get("MSH-10") == "Z1"
    assert zam.get("MSH-18") == "8859/15"
    obx = zam["OBX"]
    assert obx[2].raw == "CWE"
    assert obx[3].raw == "ACK_RECEPTION_DMP^Accusé de réception DMP^AckMetierZAM"
    assert obx[4].raw == "015"
    assert obx[5].raw == "Y^^expandedYes-NoIndicator"
    assert obx[11].raw == "F"


def test_zam_negative() -> None:
    out = build_zam(
        parse(ORU),
        positive=False,
        now=NOW,
        control_id="Z2",
        error=Finding("DMP_CLOSED", "DMP fermé"),
        dmp_error=("DMPClosed", "DMP fermé"),
    )
    zam = parse(out)
    assert zam.segment_names == ["MSH", "EVN", "OBX", "ERR"]
    assert zam.version == "2.6"
    assert zam["OBX"][4].raw == "C42"
    assert zam["OBX"][5].comp(1).text == "N"
    err = zam["ERR"]
    assert err[3].raw == "207^Application internal error^HL70357"
    assert err[4].raw == "E"
    assert err[5].raw == "DMPClosed^DMP fermé^DMP_ERROR_CODE"


def test_zam_negative_without_dmp_code() -> None:
    zam = parse(
        build_zam(
            parse(ORU), positive=False, now=NOW, control_id="Z3", error=Finding("INS_NOT_QUALIFIED", "INS")
        )
    )
    assert zam["ERR"][5].raw == "INS_NOT_QUALIFIED^INS^L"
