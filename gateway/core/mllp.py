"""Sans-io MLLP framing: bytes in, frame events out.

A frame is ``0x0B payload 0x1C 0x0D``. :class:`MllpFramer` keeps the partial
frame between reads and turns each chunk of bytes into events:

* :class:`Frame`   — one complete payload;
* :class:`Garbage` — bytes seen outside any frame (or an abandoned frame), counted
  and discarded; callers log the count, never the bytes;
* :class:`Oversize` — the current frame grew beyond ``max_size``; the caller
  answers AR and closes. The framer itself skips the rest of that frame so it
  could carry on, but the listener does not rely on that.

Choices where senders disagree with the standard:

* the frame is complete at ``0x1C``: HL7 text never contains that byte, and
  emitting there means a sender that omits the trailing ``0x0D`` still gets its
  ACK instead of waiting for a CR that never comes. The ``0x0D`` that normally
  follows is swallowed (even when it arrives in the next read); any other byte
  after ``0x1C`` is simply read as outside-frame data;
* a new ``0x0B`` inside a frame means the sender gave up on the previous frame
  and started again: the abandoned start block and its bytes count as garbage.

No sockets, no clock: the asyncio listener and client only move bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import FramingError

__all__ = [
    "START_BLOCK",
    "END_BLOCK",
    "CARRIAGE_RETURN",
    "DEFAULT_MAX_SIZE",
    "Frame",
    "Garbage",
    "Oversize",
    "FrameEvent",
    "MllpFramer",
    "frame",
]

START_BLOCK = 0x0B
END_BLOCK = 0x1C
CARRIAGE_RETURN = 0x0D
DEFAULT_MAX_SIZE = 16 * 1024 * 1024

_SB = bytes([START_BLOCK])
_EB = bytes([END_BLOCK])


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete MLLP payload (without the framing bytes)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Garbage:
    """``count`` bytes that were not part of any complete frame and were dropped."""

    count: int


@dataclass(frozen=True, slots=True)
class Oversize:
    """The current frame exceeded ``max_size``; ``size_so_far`` payload bytes were seen."""

    size_so_far: int


FrameEvent = Frame | Garbage | Oversize

# states
_OUTSIDE = 0  # looking for a start block
_INSIDE = 1  # accumulating a payload
_AFTER_END = 2  # just saw 0x1C: swallow one 0x0D if it comes
_SKIPPING = 3  # inside an oversized frame: drop bytes until its end block


class MllpFramer:
    """Incremental MLLP decoder; feed it whatever the socket returned.

    ``max_size`` bounds the payload of one frame (bytes, framing excluded), so a
    sender cannot make us buffer without limit.
    """

    __slots__ = ("max_size", "_state", "_buf", "_garbage")

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        if max_size <= 0:
            raise ValueError("max_size must be positive")
        self.max_size = max_size
        self._state = _OUTSIDE
        self._buf = bytearray()
        self._garbage = 0  # garbage bytes not yet reported

    @property
    def buffered(self) -> int:
        """Payload bytes of an unfinished frame (useful to log a truncated frame at EOF)."""
        return len(self._buf) if self._state == _INSIDE else 0

    @property
    def partial(self) -> bytes:
        """The payload bytes of the unfinished frame, to journal a frame that never ended."""
        return bytes(self._buf) if self._state == _INSIDE else b""

    def skip_frame(self) -> None:
        """Drop the unfinished frame and skip the rest of it (its sender was already answered)."""
        if self._state == _INSIDE:
            self._buf = bytearray()  # give the memory back, not just the length
            self._state = _SKIPPING

    @property
    def in_frame(self) -> bool:
        """True while a frame has started and not ended."""
        return self._state in (_INSIDE, _SKIPPING)

    def feed(self, data: bytes) -> list[FrameEvent]:
        """Consume ``data`` and return the events it completes, in stream order."""
        events: list[FrameEvent] = []
        n = len(data)
        i = 0
        # One step per frame boundary, not per byte: each step finds its boundary with bytes.find.
        while i < n:
            state = self._state
            if state == _OUTSIDE:
                i = self._find_start(data, i, events)
            elif state == _AFTER_END:  # swallow the 0x0D that normally follows 0x1C, if it is there
                if data[i] == CARRIAGE_RETURN:
                    i += 1
                self._state = _OUTSIDE
            else:  # _INSIDE or _SKIPPING
                i = self._read_frame(data, i, events)
        self._flush_garbage(events)
        return events

    def _find_start(self, data: bytes, i: int, events: list[FrameEvent]) -> int:
        """Outside a frame: the bytes before the next 0x0B are garbage; a frame starts after it."""
        j = data.find(_SB, i)
        if j == -1:
            self._garbage += len(data) - i
            return len(data)
        self._garbage += j - i
        self._flush_garbage(events)
        self._state = _INSIDE
        self._buf.clear()
        return j + 1

    def _read_frame(self, data: bytes, i: int, events: list[FrameEvent]) -> int:
        """In a frame: take bytes up to its 0x1C (complete) or a new 0x0B (abandoned), or all of them.

        While skipping an oversized frame the bytes are dropped and its end emits nothing.
        """
        n = len(data)
        end = data.find(_EB, i)
        stop = n if end == -1 else end
        restart = data.find(_SB, i, stop)  # a 0x0B after the 0x1C belongs to the next frame
        j = stop if restart == -1 else restart
        if self._state == _INSIDE:
            size = len(self._buf) + (j - i)
            if size > self.max_size:
                events.append(Oversize(size_so_far=size))
                self._buf.clear()
                self._state = _SKIPPING
            else:
                self._buf += data[i:j]
        if j == n:
            return n
        if restart == -1:  # data[j] is the end block
            if self._state == _INSIDE:
                events.append(Frame(bytes(self._buf)))
            self._state = _AFTER_END
        else:
            if self._state == _INSIDE:
                # the abandoned start block plus what followed it
                self._garbage += len(self._buf) + 1
                self._flush_garbage(events)
            self._state = _INSIDE
        self._buf.clear()
        return j + 1

    def _flush_garbage(self, events: list[FrameEvent]) -> None:
        if self._garbage:
            events.append(Garbage(self._garbage))
            self._garbage = 0


def frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in MLLP framing.

    Raises :class:`FramingError` when the payload holds a start or end block byte,
    because the receiver would cut the message there.
    """
    if _SB in payload or _EB in payload:
        raise FramingError("payload contains an MLLP control byte", code="MLLP_CONTROL_BYTE")
    return _SB + payload + _EB + b"\r"
