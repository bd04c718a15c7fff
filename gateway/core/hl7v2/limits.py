"""Bounds on the work one HL7 v2 message may cost, checked before anything reads it.

A message under the size limit can still be made expensive: a million PID-3
repetitions, a hundred thousand empty segments, a megabyte of backslashes in one
field. Every later step (PID, OBX, ACK) walks such structures in Python, so we count
them first with ``str.count`` (C speed) and refuse beyond the limits with an AE whose
ERR names the offending field:

* ``MESSAGE_TOO_MANY_SEGMENTS`` — more segments than ``max_segments``;
* ``FIELD_TOO_MANY_REPETITIONS`` — a field with more than ``max_repetitions``
  repetitions (or components / subcomponents: they cost the same to split);
* ``FIELD_TOO_LONG`` — a field longer than ``max_field_chars``. OBX-5 is exempt: it
  carries the base64 CDA, bounded by the message size and ``max_cda_bytes``.

The defaults are generous for real traffic (a PID-3 has a handful of repetitions, a
cumulative lab report a few thousand segments).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.core.hl7v2.reader import Encoding, Segment
from gateway.model import Finding

__all__ = ["Limits", "count_segments", "check_segments", "check_limits"]

_SEGMENT_END = re.compile(r"\r\n|\r|\n")
_EXEMPT_LENGTH = frozenset({("OBX", 5)})


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds for one message (see the module docstring)."""

    max_segments: int = 10_000
    max_repetitions: int = 1_000
    max_field_chars: int = 65_536


def count_segments(text: str) -> int:
    """How many segment terminators ``text`` holds (an upper bound of its segment count)."""
    return text.count("\r") + text.count("\n") - text.count("\r\n") + 1


def check_segments(text: str, limits: Limits) -> Finding | None:
    """``MESSAGE_TOO_MANY_SEGMENTS`` when the text has more segments than allowed (blank lines count)."""
    n = count_segments(text)
    if n <= limits.max_segments:
        return None
    # blank lines are dropped by the reader: only count them when the cheap bound is exceeded
    real = sum(1 for line in _SEGMENT_END.split(text) if line.strip())
    if real <= limits.max_segments:
        return None
    return Finding(
        "MESSAGE_TOO_MANY_SEGMENTS",
        f"the message has {real} segments; the limit is {limits.max_segments}",
        "MSH",
    )


def _where(seg: Segment, occurrence: int, n: int) -> str:
    return f"{seg.name}[{occurrence}]-{n}" if occurrence > 1 else f"{seg.name}-{n}"


def check_limits(segments: list[Segment], enc: Encoding, limits: Limits) -> Finding | None:
    """The first field that exceeds a limit, as a finding naming it; None when all fit."""
    seen: dict[str, int] = {}
    max_reps = limits.max_repetitions
    max_len = limits.max_field_chars
    for seg in segments:
        occurrence = seen[seg.name] = seen.get(seg.name, 0) + 1
        raw = seg.raw
        # fast path: the whole segment fits both limits, no field can exceed them
        if len(raw) <= max_len and (
            raw.count(enc.repetition) < max_reps
            and raw.count(enc.component) < max_reps
            and raw.count(enc.subcomponent) < max_reps
        ):
            continue
        for n in range(1, len(seg) + 1):
            value = seg.field(n).raw
            for what, sep in (
                ("repetitions", enc.repetition),
                ("components", enc.component),
                ("subcomponents", enc.subcomponent),
            ):
                count = value.count(sep) + 1 if value else 0
                if count > max_reps:
                    return Finding(
                        "FIELD_TOO_MANY_REPETITIONS",
                        f"{_where(seg, occurrence, n)} has {count} {what}; the limit is {max_reps}",
                        _where(seg, occurrence, n),
                    )
            if len(value) > max_len and (seg.name, n) not in _EXEMPT_LENGTH:
                return Finding(
                    "FIELD_TOO_LONG",
                    f"{_where(seg, occurrence, n)} is {len(value)} characters long; the limit is {max_len}",
                    _where(seg, occurrence, n),
                )
    return None
