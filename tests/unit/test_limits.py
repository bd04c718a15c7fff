"""Bounds on the work of one HL7 v2 message (issue 10, break 2): refused early, naming the field."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from gateway.core.hl7v2.limits import Limits, check_limits
from gateway.core.hl7v2.reader import Message, unescape
from gateway.core.pipeline import Ids, PipelineOptions, analyse_hl7v2
from gateway.settings import PipelineSettings

NOW = datetime(2024, 3, 15, 10, 30, 0, tzinfo=UTC)
MSH = "MSH|^~\\&|SND|FAC|RELAIS|RELAIS|20240315||ADT^A01^ADT_A01|C1|P|2.5|||||FRA|UNICODE UTF-8\r"


def analyse(text: str, limits: Limits | None = None):  # type: ignore[no-untyped-def]
    opts = PipelineOptions(limits=limits or Limits())
    return analyse_hl7v2(text.encode(), opts, Ids(now=NOW, new_uuid=lambda: "0" * 32))


def test_settings_defaults_equal_the_core_defaults() -> None:
    s, core = PipelineSettings(), Limits()
    assert (s.max_segments, s.max_repetitions, s.max_field_chars) == (
        core.max_segments, core.max_repetitions, core.max_field_chars,
    )


def test_300k_pid3_repetitions_refused_fast_naming_pid3() -> None:
    pid3 = "~".join(f"{i}^^^HOSP&1.2.3&ISO^PI" for i in range(300_000))
    t0 = time.perf_counter()
    an = analyse(MSH + f"EVN|A01\rPID|1||{pid3}||NOM^Prenom\r")
    assert time.perf_counter() - t0 < 1.0  # counted in C, not walked in Python
    assert an.ack_code == "AE"
    assert [(f.code, f.location) for f in an.errors] == [("FIELD_TOO_MANY_REPETITIONS", "PID-3")]
    assert "300000 repetitions" in an.errors[0].message


def test_second_obx_occurrence_is_named() -> None:
    an = analyse(MSH + "PID|1\rOBX|1|TX|C||ok\rOBX|2|TX|C||" + "x^" * 2000 + "\r")
    assert [(f.code, f.location) for f in an.errors] == [("FIELD_TOO_MANY_REPETITIONS", "OBX[2]-5")]


def test_long_field_refused_but_obx5_is_exempt() -> None:
    an = analyse(MSH + "PID|1||" + "9" * 70_000 + "\r")
    assert [(f.code, f.location) for f in an.errors] == [("FIELD_TOO_LONG", "PID-3")]
    msg = Message.parse(MSH + "OBX|1|ED|C||" + "A" * 70_000)
    assert check_limits(msg.segments, msg.encoding, Limits()) is None


def test_too_many_segments_refused_with_msa2() -> None:
    an = analyse(MSH + "NTE|1\r" * 20, Limits(max_segments=10))
    assert an.ack_code == "AE" and an.message is not None and an.message.control_id == "C1"
    assert an.errors[0].code == "MESSAGE_TOO_MANY_SEGMENTS"


def test_msh_field_over_the_limit_is_an_ar() -> None:
    an = analyse("MSH|^~\\&|" + "A" * 70_000 + "|FAC|||20240315||ADT^A01|C1|P|2.5\r")
    assert an.ack_code == "AR" and an.errors[0].location == "MSH-3"
    assert an.summary["control_id"] == "C1" and an.summary["sender_app"] is None


def test_unescape_of_a_field_of_backslashes_is_done_once() -> None:
    text = "\\" * 60_000
    t0 = time.perf_counter()
    for _ in range(200):  # the same field read again and again: decoded once
        unescape(text)
    assert time.perf_counter() - t0 < 1.0
