"""The unreadable-MSH path is total: whatever the bytes, an ACK can be built.

Property tests drive the ACK builders and the charset scan with arbitrary bytes and
with mutated valid messages; ``fixtures/fuzz/unreadable_msh/`` keeps every input that
once made them raise (a frame that got no answer at all), replayed on every run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.ack import build_ack, build_ack_unreadable
from gateway.core.charset import declared_charset
from gateway.core.hl7v2.reader import Message
from gateway.core.pipeline import Ids, PipelineOptions, analyse_hl7v2
from gateway.errors import GatewayError
from gateway.model import Finding

NOW = datetime(2024, 3, 15, 10, 30, 0, tzinfo=UTC)
CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "fuzz" / "unreadable_msh"
REASON = Finding("MSH_UNREADABLE", "MSH could not be read", "MSH")
SEED = (
    b"MSH|^~\\&|LAB|HOSP|PFI|ORG|20240101||ORU^R01^ORU_R01|C42|T|2.5|||||FRA|UNICODE UTF-8\r"
    b"PID|1||123^^^X&1.2.3&ISO^PI||NOM^Prenom\r"
)


def _ack_for(raw: bytes) -> str:
    """What intake sends for ``raw``: the pipeline's verdict turned into an ACK."""
    an = analyse_hl7v2(raw, PipelineOptions(), Ids(now=NOW, new_uuid=lambda: "0" * 32))
    if an.message is None:
        return build_ack_unreadable(raw, NOW, "ACK1", an.errors[0] if an.errors else REASON)
    return build_ack(an.message, an.ack_code, errors=an.errors, now=NOW, control_id="ACK1")


def _check_ack(ack: str) -> None:
    msg = Message.parse(ack)
    assert msg.msh.value(9, 1) == "ACK"
    assert msg.segment("MSA") is not None


def _corpus() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*.hl7"))


def test_corpus_is_not_empty() -> None:
    assert len(_corpus()) >= 2


@pytest.mark.parametrize("path", _corpus(), ids=lambda p: p.name)
def test_corpus_inputs_get_an_ack(path: Path) -> None:
    raw = path.read_bytes()
    assert isinstance(declared_charset(raw), str)
    _check_ack(build_ack_unreadable(raw, NOW, "ACK1", REASON))
    _check_ack(_ack_for(raw))


def test_msh_alone_before_cr_has_no_charset() -> None:
    assert declared_charset(b"MSH\r|^~\\&|A|B\r") == ""
    assert declared_charset(b"MSH\nPID|1|2|3|4|5") == ""


def test_unicode_digit_in_version_does_not_break_the_ack() -> None:
    msg = Message.parse("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X1|P|2.\u00b2\rPID|1")
    ack = Message.parse(build_ack(msg, "AR", errors=[REASON], now=NOW, control_id="ACK1"))
    assert ack.get("MSA-2") == "X1"


_FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=300))
def test_build_ack_unreadable_never_raises(raw: bytes) -> None:
    _check_ack(build_ack_unreadable(raw, NOW, "ACK1", REASON))
    _check_ack(build_ack_unreadable(b"MSH" + raw, NOW, "ACK1", REASON))


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """The seed message with a few bytes replaced, inserted or deleted (what a fuzzer does)."""
    data = bytearray(SEED)
    alphabet = st.sampled_from(list(b"|^~\\&\r\n MSH0123456789.") + [0xB2, 0xC3, 0xFF, 0x00])
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(("set", "insert", "delete")))
        byte = draw(alphabet)
        if op == "insert" or pos == len(data):
            data.insert(pos, byte)
        elif op == "set":
            data[pos] = byte
        else:
            del data[pos]
    return bytes(data)


@_FUZZ
@given(_mutated())
def test_mutated_messages_always_get_an_ack(raw: bytes) -> None:
    _check_ack(_ack_for(raw))


@_FUZZ
@given(st.text(max_size=120), st.sampled_from(["AA", "AE", "AR"]))
def test_build_ack_never_raises_on_parseable_text(tail: str, code: str) -> None:
    text = "MSH|^~\\&|" + tail
    try:
        msg = Message.parse(text)
    except GatewayError:
        return
    _check_ack(build_ack(msg, code, errors=[REASON], now=NOW, control_id="ACK1"))
