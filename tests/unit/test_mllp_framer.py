"""MllpFramer: split, glued, garbage, oversize and malformed byte streams (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.mllp import Frame, Garbage, MllpFramer, Oversize, frame
from gateway.errors import FramingError

MSG1 = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||123\r"
MSG2 = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|2|P|2.5\rPID|1||456\r"


def feed_all(framer: MllpFramer, *chunks: bytes) -> list:
    events: list = []
    for chunk in chunks:
        events += framer.feed(chunk)
    return events


def test_frame_helper_wraps_payload() -> None:
    assert frame(b"abc") == b"\x0babc\x1c\r"


@pytest.mark.parametrize("bad", [b"a\x0bb", b"a\x1cb"])
def test_frame_helper_refuses_control_bytes(bad: bytes) -> None:
    with pytest.raises(FramingError):
        frame(bad)


def test_single_frame() -> None:
    assert MllpFramer().feed(frame(MSG1)) == [Frame(MSG1)]


def test_split_at_every_byte_position() -> None:
    data = frame(MSG1)
    for cut in range(len(data) + 1):
        framer = MllpFramer()
        events = feed_all(framer, data[:cut], data[cut:])
        assert events == [Frame(MSG1)], cut
        assert not framer.in_frame


def test_split_between_end_block_and_cr() -> None:
    framer = MllpFramer()
    data = frame(MSG1) + frame(MSG2)
    cut = data.index(b"\x1c") + 1
    assert framer.feed(data[:cut]) == [Frame(MSG1)]
    # the CR of the first frame arrives with the next frame: swallowed, not garbage
    assert framer.feed(data[cut:]) == [Frame(MSG2)]


def test_byte_by_byte() -> None:
    framer = MllpFramer()
    data = frame(MSG1) + frame(MSG2)
    events = feed_all(framer, *(data[i : i + 1] for i in range(len(data))))
    assert events == [Frame(MSG1), Frame(MSG2)]


def test_glued_frames_in_one_read() -> None:
    events = MllpFramer().feed(frame(MSG1) + frame(MSG2) + frame(b"x"))
    assert events == [Frame(MSG1), Frame(MSG2), Frame(b"x")]


def test_empty_frame() -> None:
    assert MllpFramer().feed(b"\x0b\x1c\r") == [Frame(b"")]


def test_garbage_before_and_between_frames() -> None:
    events = MllpFramer().feed(b"junk" + frame(MSG1) + b"\r\n" + frame(MSG2) + b"tail")
    assert events == [Garbage(4), Frame(MSG1), Garbage(2), Frame(MSG2), Garbage(4)]


def test_garbage_only() -> None:
    framer = MllpFramer()
    assert framer.feed(b"hello") == [Garbage(5)]
    assert framer.feed(b"") == []
    assert not framer.in_frame


def test_end_block_without_cr_still_ends_the_frame() -> None:
    framer = MllpFramer()
    # a sender that omits the CR must still get its ACK: frame ends at 0x1C
    assert framer.feed(b"\x0b" + MSG1 + b"\x1c") == [Frame(MSG1)]
    assert framer.feed(b"\x0b" + MSG2 + b"\x1c\x0b" + b"x\x1c\r") == [Frame(MSG2), Frame(b"x")]


def test_end_block_followed_by_other_byte_is_garbage_after_the_frame() -> None:
    assert MllpFramer().feed(b"\x0babc\x1c\n") == [Frame(b"abc"), Garbage(1)]


def test_new_start_block_inside_frame_restarts() -> None:
    events = MllpFramer().feed(b"\x0bpartial" + frame(MSG1))
    assert events == [Garbage(len(b"\x0bpartial")), Frame(MSG1)]


def test_new_start_block_across_reads() -> None:
    framer = MllpFramer()
    assert framer.feed(b"\x0bpart") == []
    assert framer.buffered == 4
    assert framer.feed(frame(MSG1)) == [Garbage(5), Frame(MSG1)]


def test_stray_end_block_outside_frame_is_garbage() -> None:
    assert MllpFramer().feed(b"\x1c\r" + frame(b"a")) == [Garbage(2), Frame(b"a")]


def test_oversize_in_one_read() -> None:
    framer = MllpFramer(max_size=10)
    events = framer.feed(frame(b"x" * 11))
    assert events == [Oversize(11)]
    assert framer.in_frame is False


def test_oversize_exactly_max_is_accepted() -> None:
    assert MllpFramer(max_size=10).feed(frame(b"x" * 10)) == [Frame(b"x" * 10)]


def test_oversize_across_reads_reported_once_then_recovers() -> None:
    framer = MllpFramer(max_size=10)
    assert framer.feed(b"\x0b" + b"x" * 8) == []
    assert framer.feed(b"x" * 5) == [Oversize(13)]
    assert framer.in_frame  # skipping the rest of the oversized frame
    assert framer.feed(b"x" * 100) == []
    assert framer.feed(b"\x1c\r" + frame(b"ok")) == [Frame(b"ok")]


def test_oversize_frame_abandoned_by_new_start_block() -> None:
    framer = MllpFramer(max_size=4)
    assert framer.feed(b"\x0b123456") == [Oversize(6)]
    assert framer.feed(frame(b"ok")) == [Frame(b"ok")]


def test_invalid_max_size() -> None:
    with pytest.raises(ValueError):
        MllpFramer(max_size=0)


payloads = st.lists(
    st.binary(max_size=40).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b"")), max_size=5
)


@given(payloads, st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_any_split_of_glued_frames_gives_the_same_frames(msgs: list[bytes], cuts: list[int]) -> None:
    data = b"".join(frame(m) for m in msgs)
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    events = feed_all(MllpFramer(), *chunks)
    assert events == [Frame(m) for m in msgs]


def test_partial_and_skip_frame() -> None:
    framer = MllpFramer(100)
    assert framer.feed(b"\x0bMSH|abc") == []
    assert framer.partial == b"MSH|abc"
    framer.skip_frame()
    assert framer.partial == b"" and framer.in_frame and framer.buffered == 0
    assert framer.feed(b"more bytes of the refused frame\x1c\r\x0bNEXT\x1c\r") == [Frame(b"NEXT")]
    assert not framer.in_frame
