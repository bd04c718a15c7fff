"""decode_message / encode_for: MSH-18 drives the decoding, errors point at MSH-18."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.charset import CharsetDecodeError, declared_charset, decode_message, encode_for
from gateway.core.hl7v2.reader import Message
from gateway.errors import DecodeError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
NAME = "Élodie Œuvre €"


def msg(charset: str, body: str = NAME, sep: str = "\r") -> str:
    msh = f"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5|||||FRA|{charset}"
    return sep.join([msh, f"PID|1||123||{body}"]) + sep


@pytest.mark.parametrize(
    ("declared", "codec", "body"),
    [
        ("UNICODE UTF-8", "utf-8", NAME),
        ("8859/15", "iso8859-15", NAME),
        ("8859/1", "latin-1", "Élodie Françoise"),
        ("ASCII", "ascii", "Elodie"),
    ],
)
def test_declared_charsets(declared: str, codec: str, body: str) -> None:
    text = msg(declared, body)
    decoded = decode_message(text.encode(codec))
    assert decoded.text == text
    assert decoded.charset == codec
    assert decoded.declared == declared
    assert Message.parse(decoded.text).get("PID-5") == body


def test_latin9_bytes_differ_from_latin1() -> None:
    raw = msg("8859/15").encode("iso8859-15")
    assert "Œuvre €" in decode_message(raw).text
    assert "Œuvre" not in raw.decode("latin-1")


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_first_segment_terminators(sep: str) -> None:
    raw = msg("8859/15", sep=sep).encode("iso8859-15")
    assert declared_charset(raw) == "8859/15"
    assert decode_message(raw).text.split(sep)[1].endswith(NAME)


def test_msh18_is_last_field_without_terminator() -> None:
    raw = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5|||||FRA|8859/1"
    assert decode_message(raw).charset == "latin-1"


def test_only_first_repetition_counts() -> None:
    raw = msg("8859/1~ISO IR87", "Élodie").encode("latin-1")
    assert decode_message(raw).charset == "latin-1"
    assert decode_message(raw).declared == "8859/1"


def test_empty_msh18_uses_default() -> None:
    raw = msg("", "Élodie").encode("utf-8")
    decoded = decode_message(raw)
    assert (decoded.charset, decoded.declared) == ("utf-8", "")
    latin = msg("", "Élodie").encode("latin-1")
    assert decode_message(latin, default="latin-1").text == msg("", "Élodie")
    assert decode_message(latin, default="8859/1").charset == "latin-1"


def test_short_msh_uses_default() -> None:
    assert decode_message(b"MSH|^~\\&|A|B\rPID|1").charset == "utf-8"


def test_default_must_be_ascii_compatible() -> None:
    with pytest.raises(ValueError):
        decode_message(msg("").encode(), default="utf-16")
    with pytest.raises(ValueError):
        decode_message(msg("").encode(), default="no-such-codec")


def test_unknown_charset_is_unsupported() -> None:
    with pytest.raises(DecodeError) as info:
        decode_message(msg("UNICODE UTF-16", "x").encode())
    assert info.value.code == "CHARSET_UNSUPPORTED"
    assert info.value.location == "MSH-18"


def test_invalid_utf8_reports_offset_without_content() -> None:
    raw = msg("UNICODE UTF-8", "Élodie").encode("latin-1")
    with pytest.raises(DecodeError) as info:
        decode_message(raw)
    err = info.value
    assert err.code == "CHARSET_INVALID"
    assert err.location == "MSH-18"
    assert isinstance(err, CharsetDecodeError)
    assert err.offset == raw.index(b"\xc9")
    assert "lodie" not in str(err)
    assert err.__cause__ is None


def test_invalid_ascii() -> None:
    with pytest.raises(DecodeError) as info:
        decode_message(msg("ASCII", "é").encode("latin-1"))
    assert info.value.code == "CHARSET_INVALID"


def test_bom_is_stripped_and_offset_counts_it() -> None:
    text = msg("UNICODE UTF-8")
    assert decode_message(b"\xef\xbb\xbf" + text.encode()).text == text
    bad = b"\xef\xbb\xbf" + msg("UNICODE UTF-8", "x").encode() + b"\xff"
    with pytest.raises(CharsetDecodeError) as info:
        decode_message(bad)
    assert info.value.offset == len(bad) - 1


def test_not_hl7_decodes_with_default() -> None:
    assert decode_message(b"hello").declared == ""


def test_encode_for() -> None:
    assert encode_for("8859/15", NAME) == NAME.encode("iso8859-15")
    assert encode_for("UNICODE UTF-8", NAME) == NAME.encode()
    assert encode_for("", NAME) == NAME.encode()
    assert encode_for("ASCII", "é") == b"?"  # an ACK must always go out
    assert encode_for("8859/1", "€") == b"?"
    assert encode_for("BOGUS", "aé") == b"a?"


def test_latin9_fixture() -> None:
    raw = (FIXTURES / "adt_a01_latin9.hl7").read_bytes()
    decoded = decode_message(raw)
    assert decoded.charset == "iso8859-15"
    m = Message.parse(decoded.text)
    assert m.get("PID-5.1") == "ŒUVRE"
    assert m.get("PID-5.2") == "Élodie Françoise"
    assert encode_for(decoded.declared, decoded.text) == raw
