"""The lazy HL7 v2 reader: escapes, repetitions, nulls, Z segments, custom delimiters, separators."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.hl7v2.reader import Encoding, Message, escape, unescape
from gateway.errors import ParseError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"

MSH = "MSH|^~\\&|APP|FAC|RCV|RFAC|20240101120000||ORU^R01^ORU_R01|CTRL1|P|2.5"
PID = "PID|1||111^^^A&1.2.3&ISO^PI~222^^^B&1.2.4&ISO^INS||DOE^JOHN^^^^^L~SMITH^J^^^^^D||19800101|M"


def parse(*segments: str, sep: str = "\r") -> Message:
    return Message.parse(sep.join(segments))


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("a\\F\\b", "a|b"),
        ("a\\S\\b", "a^b"),
        ("a\\T\\b", "a&b"),
        ("a\\R\\b", "a~b"),
        ("a\\E\\b", "a\\b"),
        ("\\X41\\", "A"),
        ("\\X4142\\", "AB"),
        ("line\\.br\\next", "line\nnext"),
        ("\\H\\bold\\N\\", "bold"),
        ("keep \\Z99\\ as is", "keep \\Z99\\ as is"),
        ("lone \\ escape", "lone \\ escape"),
    ],
)
def test_unescape(raw: str, text: str) -> None:
    assert unescape(raw) == text


def test_escape_round_trip() -> None:
    value = "a|b^c&d~e\\f\rg\nh"
    escaped = escape(value)
    assert not any(ch in escaped for ch in "|^&~\r\n")
    assert escaped.count("\\E\\") == 1
    assert unescape(escaped) == value  # CR comes back through \X0D\, LF through \.br\


def test_escapes_through_the_tree() -> None:
    m = parse(MSH, "NTE|1||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X41\\")
    assert m.get("NTE-3") == "a|b^c&d~e\\fA"
    # escapes are decoded after splitting: \S\ stays inside its component
    assert m["NTE"][3].comp(1).text == "a|b^c&d~e\\fA"
    assert m["NTE"][3].raw.startswith("a\\F\\")


def test_components_and_subcomponents() -> None:
    m = parse(MSH, PID)
    assert m["PID"][3].comp(4).sub(2) == "1.2.3"
    assert m.get("PID-3.4.2") == "1.2.3"
    assert m.get("PID-3.4.3") == "ISO"
    assert m.get("PID-3.4.9") == ""
    assert m["PID"][3].comp(4).subs == ["A", "1.2.3", "ISO"]


def test_repetitions() -> None:
    m = parse(MSH, PID)
    pid3 = m["PID"][3]
    assert [r.comp(1).text for r in pid3.reps] == ["111", "222"]
    assert pid3.rep(2).comp(5).text == "INS"
    assert m.get("PID-3(2).4.2") == "1.2.4"
    assert m.get("PID-5(2).1") == "SMITH"
    assert m.get("PID-3(3).1") == ""
    assert m["PID"][4].reps == []


def test_empty_versus_null() -> None:
    m = parse(MSH, 'PID|1||""||NAME^""^X')
    empty, null = m["PID"][2], m["PID"][3]
    assert empty.raw == "" and not empty.is_null and not empty
    assert null.raw == '""' and null.is_null and not null and null.text == ""
    comp = m["PID"][5].comp(2)
    assert comp.is_null and comp.text == "" and comp.sub(1) == ""
    assert m["PID"][5].comp(3).text == "X"


def test_absent_things_read_as_empty() -> None:
    m = parse(MSH, "PID|1")
    assert m.get("PID-99") == ""
    assert m.get("ZZZ-1") == ""
    assert m["ZZZ"][1].text == ""
    assert m.segment("ZZZ") is None


def test_z_segments_kept_in_order() -> None:
    m = parse(MSH, "PID|1", "ZBE|1|MVT^X", "OBX|1|TX|||v", "ZFU|2")
    assert m.segment_names == ["MSH", "PID", "ZBE", "OBX", "ZFU"]
    assert m.get("ZBE-2.2") == "X"
    assert m["ZFU"].index == 5


def test_msh_numbering() -> None:
    m = parse(MSH)
    assert m.get("MSH-1") == "|"
    assert m.msh[2].raw == "^~\\&"
    assert m.get("MSH-3") == "APP"
    assert m.message_type == "ORU^R01"
    assert m.control_id == "CTRL1"
    assert m.version == "2.5"


def test_custom_encoding_characters() -> None:
    m = Message.parse("MSH#*@!%#APP#FAC###20240101##ADT*A01#C9#P#2.5\rPID#1##1*2*3%4@5#!F!x")
    assert m.encoding == Encoding(field="#", component="*", repetition="@", escape="!", subcomponent="%")
    assert m.get("MSH-1") == "#"
    assert m.msh[2].raw == "*@!%"
    assert m.message_type == "ADT^A01"
    assert m.get("PID-3.3") == "3"
    assert m.get("PID-3.3.2") == "4"
    assert m.get("PID-3(2).1") == "5"
    assert m.get("PID-4") == "#x"  # !F! is the field separator, here "#"
    assert escape("a#b*c", m.encoding) == "a!F!b!S!c"


def test_truncation_character_v27() -> None:
    m = Message.parse("MSH|^~\\&#|A|B|C|D|20240101||ADT^A01|1|P|2.7\rPID|1")
    assert m.encoding.truncation == "#"
    assert m.encoding.msh2 == "^~\\&#"
    assert m.get("MSH-3") == "A"


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_segment_separators(sep: str) -> None:
    m = parse(MSH, PID, "OBX|1|TX|||x", sep=sep)
    assert m.segment_names == ["MSH", "PID", "OBX"]
    assert m.get("OBX-5") == "x"
    assert m.get("MSH-12") == "2.5"


def test_blank_lines_and_trailing_terminators_ignored() -> None:
    m = Message.parse("\ufeff" + MSH + "\r\n\r\nPID|1\r\n\r\n")
    assert m.segment_names == ["MSH", "PID"]


def test_all_segments() -> None:
    m = parse(MSH, "OBX|1|TX|||a", "OBX|2|TX|||b")
    assert [s[5].text for s in m.all("OBX")] == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "MSH_MISSING"),
        ("PID|1", "MSH_MISSING"),
        ("MSH|^~", "MSH_MISSING"),
        ("MSHA^~\\&|x", "MSH_ENCODING"),
        ("MSH|^^\\&|x", "MSH_ENCODING"),
        ("MSH|^~|x|y", "MSH_ENCODING"),
    ],
)
def test_parse_errors(text: str, code: str) -> None:
    with pytest.raises(ParseError) as info:
        Message.parse(text)
    assert info.value.code == code


def test_bad_path() -> None:
    with pytest.raises(ValueError):
        parse(MSH).get("PID3")


def test_bad_segment_names() -> None:
    m = parse(MSH, "PID|1", "pid|2", "X1|3", "PIDX|4", "INVALID SEGMENT")
    # the id is what stands before the first field separator, never its first three characters
    assert [s.name for s in m.bad_segment_names()] == ["pid", "X1", "PIDX", "INVALID SEGMENT"]
    assert [s.name for s in m.all("PID")] == ["PID"]


def test_oru_fixture_is_byte_exact_cr() -> None:
    raw = (FIXTURES / "oru_minimal.hl7").read_bytes()
    assert b"\n" not in raw and raw.endswith(b"\r")
    m = Message.parse(raw.decode("ascii"))
    assert m.message_type == "ORU^R01"
    assert m.segment_names == ["MSH", "PID", "ORC", "OBR", "OBX"]
    assert m.get("MSH-18") == "UNICODE UTF-8"


def test_formatting_commands_in_text_fields() -> None:
    """HL7 v2.5 ch. 2 §2.7.6: .br new line, .sp n skips n lines, .in n / .ti n indent, .sk n skips right."""
    m = parse(MSH, r"NTE|1||line one\.br\line two\.sp 2\\.in 4\indented\.ti 2\temp\.sk 3\x\.fi\\.nf\end")
    # .sp 2 ends "line two" and leaves two blank lines
    assert m.get("NTE-3") == "line one\nline two\n\n\n    indented  temp   xend"
    assert parse(MSH, r"NTE|1||a\.sp\b").get("NTE-3") == "a\n\nb"
    # not a formatting command, or a malformed one: kept verbatim, nothing lost
    m = parse(MSH, r"NTE|1||a\.zz 3\b\.sp x\c")
    assert m.get("NTE-3") == r"a\.zz 3\b\.sp x\c"


def test_hex_escapes_are_bytes_of_the_message_charset() -> None:
    text = "\r".join([MSH, "NTE|1||caf\\XC3A9\\ \\XE9\\"])
    # a lone E9 is not UTF-8: that escape is kept as written rather than guessed
    assert Message.parse(text, codec="utf-8").get("NTE-3") == "café \\XE9\\"
    assert Message.parse(text, codec="iso8859-15").get("NTE-3") == "cafÃ© é"
