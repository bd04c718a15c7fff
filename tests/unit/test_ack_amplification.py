"""An ACK never grows with what the sender wrote: echoed values are cut (issue 10, break 5)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.core.ack import build_ack
from gateway.core.hl7v2.reader import Message
from gateway.core.pipeline import Ids, PipelineOptions, analyse_hl7v2
from gateway.model import Finding

NOW = datetime(2024, 3, 15, 10, 30, 0, tzinfo=UTC)
HUGE = 4 * 1024 * 1024


def _ack_for(raw: bytes) -> tuple[str, str]:
    an = analyse_hl7v2(raw, PipelineOptions(), Ids(now=NOW, new_uuid=lambda: "0" * 32))
    assert an.message is not None
    return an.ack_code, build_ack(an.message, an.ack_code, errors=an.errors, now=NOW, control_id="ACK1")


@pytest.mark.parametrize(
    "msh9", ["\\" * HUGE, "ZZZ^" + "\\" * HUGE, "X" * HUGE + "^A01"], ids=["backslashes", "trigger", "code"]
)
def test_4mb_msh9_gives_a_small_ar(msh9: str) -> None:
    raw = f"MSH|^~\\&|A|B|C|D|20240101||{msh9}|X1|P|2.5\rPID|1".encode()
    code, ack = _ack_for(raw)
    assert code == "AR"
    assert len(ack) < 2048
    assert Message.parse(ack).get("MSA-2") == "X1"


def test_4mb_msh12_gives_a_small_ar() -> None:
    raw = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X1|P|" + b"\\" * HUGE + b"\rPID|1"
    code, ack = _ack_for(raw)
    assert code == "AR"
    assert len(ack) < 2048
    assert Message.parse(ack).version == "2.5"


def test_long_finding_message_is_cut_in_err5_and_err8() -> None:
    msg = Message.parse("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X1|P|2.5")
    finding = Finding("SOME_CODE", "|" * 10_000, "PID-3")
    ack = Message.parse(build_ack(msg, "AE", errors=[finding], now=NOW, control_id="ACK1"))
    err = ack["ERR"]
    assert 100 <= len(err[8].text) <= 200
    assert 100 <= len(err[5].comp(2).text) <= 200
    assert err[8].text.startswith("|||")  # cut, not mangled
