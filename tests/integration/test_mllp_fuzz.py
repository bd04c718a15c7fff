"""Mutated frames over a real MLLP socket: every frame gets an answer, and the journal
records the code that was sent.

The default run sends 2,000 frames on 4 connections (a few seconds); the slow-marked
run sends the 20,000 of the reliability campaign. Mutations are seeded, so a failure
names a reproducible frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from pathlib import Path

import pytest

from gateway.core.mllp import MllpFramer
from gateway.core.mllp import frame as mllp_frame
from tests import builders
from tests.support import FIXTURES, mllp_port, running


def _answer_due(data: bytes) -> bool:
    """HL7 v2.5 ch. 2: an ACK is not acknowledged, and enhanced mode with MSH-15 NE gets no accept
    ACK. Read here from the frame itself (its own field separator), not with the gateway's code."""
    first = data.split(b"\r", 1)[0]
    sep = first[3:4] or b"|"
    fields = first.split(sep)  # fields[8] is MSH-9 (fields[1] is MSH-2), fields[14] MSH-15
    msh9 = fields[8].split(b"^")[0].strip() if len(fields) > 8 else b""
    msh15 = fields[14].strip().upper() if len(fields) > 14 else b""
    return not (first.startswith(b"MSH") and (msh9 == b"ACK" or msh15 == b"NE"))


_SEEDS = [p for p in sorted((FIXTURES / "hl7v2").glob("*.hl7")) if _answer_due(p.read_bytes())] + sorted(
    (FIXTURES / "fuzz" / "unreadable_msh").glob("*.hl7")
)
# A frame that owes an answer gets a long wait (a loaded machine is slow, and an answer taken
# for the next frame's would misalign the run); one that owes none (a mutation can make an ACK
# or an NE) a shorter one, after which the sender goes on.
_ANSWER_WAIT = 15.0
_NO_ANSWER_WAIT = 3.0
# bytes a fuzzer likes: delimiters, segment ends, digits, the "²" of MSH-12, invalid UTF-8
_ALPHABET = list(b"|^~\\&\r\n MSH0123456789.\"") + [0xC2, 0xB2, 0xFF, 0x00, 0x80]
_UNENHANCE = {"CA": "AA", "CE": "AE", "CR": "AR"}


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A few random replacements, insertions, deletions or a truncation of ``data``."""
    buf = bytearray(data[: rng.randint(1, len(data))] if rng.random() < 0.1 else data)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randint(0, len(buf))
        op = rng.random()
        if op < 0.4 and pos < len(buf):
            buf[pos] = rng.choice(_ALPHABET)
        elif op < 0.8 or pos >= len(buf):
            buf.insert(pos, rng.choice(_ALPHABET))
        else:
            del buf[pos]
    if rng.random() < 0.05:  # the campaign's crasher: nothing between MSH and the segment end
        buf[3:4] = b"\r"
    # 0x0B / 0x1C cannot travel inside a frame
    return bytes(buf).replace(b"\x0b", b"").replace(b"\x1c", b"") or b"X"


async def _sender(port: int, frames: list[bytes], answers: list[bytes | None], offset: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framer = MllpFramer(1 << 24)
    try:
        for i, payload in enumerate(frames):
            writer.write(mllp_frame(payload))
            await writer.drain()
            got = None
            while got is None:
                try:
                    wait = _ANSWER_WAIT if _answer_due(payload) else _NO_ANSWER_WAIT
                    data = await asyncio.wait_for(reader.read(65536), wait)
                except TimeoutError:
                    break  # no answer: counted against the journal's "no answer due" rows below
                if not data:
                    return  # closed without an answer: the remaining answers stay None
                events = [e for e in framer.feed(data) if hasattr(e, "payload")]
                got = events[0].payload if events else None
            answers[offset + i] = got
    finally:
        writer.close()


def _journaled(path: str) -> list[tuple[str, str | None]]:
    """(id, ack_code) of every exchange, read from the journal file itself."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT id, ack_code FROM exchanges").fetchall()


async def _fuzz(tmp_path: Path, count: int, connections: int = 4) -> None:
    rng = random.Random(20_000)
    seeds = [p.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r") for p in _SEEDS]
    frames = [mutate(rng, rng.choice(seeds)) for _ in range(count)]
    answers: list[bytes | None] = [None] * count
    per = -(-count // connections)
    async with running(builders.settings(tmp_path)) as service:
        port = mllp_port(service)
        await asyncio.gather(
            *(_sender(port, frames[k : k + per], answers, k) for k in range(0, count, per))
        )
        rows = []
        for _ in range(200):  # a frame that owed no answer may still be committing
            rows = _journaled(service.journal.path)
            if len(rows) >= count:
                break
            await asyncio.sleep(0.05)
    assert len(rows) == count  # every frame is in the journal
    unanswered = [i for i, a in enumerate(answers) if a is None]
    no_answer_due = [row for row in rows if not row[1]]  # journaled as owing no answer (ACK, NE)
    assert len(unanswered) == len(no_answer_due), (
        f"{len(unanswered)} frames unanswered but {len(no_answer_due)} owed no answer; "
        f"first unanswered: {frames[unanswered[0]][:120]!r}" if unanswered else "an answer the journal does not show"
    )
    journaled = {row[0].replace("-", "")[:17]: row[1] for row in rows}
    for i, ack in enumerate(answers):
        if ack is None:
            continue
        text = ack.decode("latin-1")
        segments = {seg[:3]: seg for seg in text.split("\r")}
        assert "MSA" in segments, f"frame {i}: no MSA in {text[:200]!r}"
        sep = segments["MSA"][3]
        msa1 = segments["MSA"].split(sep)[1]
        msh10 = segments["MSH"].split(sep)[9]
        if msa1 == "CA":
            # enhanced mode: the accept ACK says "stored"; the journal keeps the application
            # ACK's code (AA/AE/AR), which goes to the sender's return address separately
            assert journaled[msh10[3:]] in ("AA", "AE", "AR"), f"frame {i}: sent CA, journaled otherwise"
        else:
            assert journaled[msh10[3:]] == _UNENHANCE.get(msa1, msa1), f"frame {i}: sent {msa1}, journaled otherwise"


async def test_2000_mutated_frames_all_answered_and_journaled_as_sent(tmp_path: Path) -> None:
    await _fuzz(tmp_path, 2000)


@pytest.mark.slow
async def test_20000_mutated_frames_all_answered(tmp_path: Path) -> None:
    await _fuzz(tmp_path, 20_000, connections=8)
