"""The AR for an oversized frame reaches a blocking sender (issue 10, break 4).

The usual MLLP client writes the whole frame (``sendall``) and only then reads. If
the gateway closed right after its AR, the unread bytes made the kernel answer with
a reset and the AR was lost; it now reads the rest of the frame and throws it away.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from gateway.core.mllp import Frame, MllpFramer, frame
from tests import builders
from tests.support import field, mllp_port, running

SIZE = 40 * 1024 * 1024


def blocking_send(port: int, payload: bytes) -> bytes:
    """sendall, then recv until one frame came back (what hl7 senders and most DPIs do)."""
    framer = MllpFramer(1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(frame(payload))
        while True:
            data = sock.recv(65536)
            assert data, "connection closed without an AR"
            frames = [e for e in framer.feed(data) if isinstance(e, Frame)]
            if frames:
                return frames[0].payload


async def test_40mib_frame_ar_reaches_a_blocking_sender(tmp_path: Path) -> None:
    payload = b"MSH|^~\\&|SND|FAC|||20240315||ADT^A01|BIG|P|2.5\rNTE|1||" + b"x" * SIZE + b"\r"
    async with running(builders.settings(tmp_path)) as service:
        ack = await asyncio.to_thread(blocking_send, mllp_port(service), payload)
        assert field(ack, "MSA", 1) == "AR"
        assert "MESSAGE_TOO_LARGE" in field(ack, "ERR", 5)
        rows = service.journal.read_sync(lambda tx: tx.list_exchanges(limit=10))
        assert [(r["status"], r["reason_code"]) for r in rows] == [("rejected", "MESSAGE_TOO_LARGE")]
        # and the listener is still serving
        small = b"MSH|^~\\&|SND|FAC|||20240315||ADT^A01|SMALL|P|2.5\rPID|1\r"
        ack = await asyncio.to_thread(blocking_send, mllp_port(service), small)
        assert field(ack, "MSA", 2) == "SMALL"
