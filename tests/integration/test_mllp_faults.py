"""MLLP listener under hostile or unlucky senders (issue 10, break 7), on real sockets.

A sender trickling bytes is cut at the frame deadline with an AR; connections and
the bytes buffered across them are capped; the TLS client certificate subject is
journaled with the exchange.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

from adapters.mllp_client import MllpClient
from gateway.core.mllp import Frame, MllpFramer, frame
from tests import builders
from tests.integration.test_mllp_listener import _self_signed
from tests.support import field, mllp_port, running

# an A28 (patient information): PAM-FR needs no PV1 for it, so these two segments are a valid message
MSG = b"MSH|^~\\&|SND|FAC|RELAIS|RELAIS|20240315||ADT^A28^ADT_A05|C1|P|2.5\rPID|1||1^^^H&1.2.3&ISO^PI\r"


async def _read_frame(reader: asyncio.StreamReader, timeout: float = 10) -> bytes | None:
    framer = MllpFramer(1 << 20)
    async with asyncio.timeout(timeout):
        while True:
            try:
                data = await reader.read(65536)
            except ConnectionResetError:
                # closed with our unread bytes in its buffer (a trickling sender's last byte
                # crossed the close): the kernel answers RST instead of FIN, closed all the same
                return None
            if not data:
                return None
            frames = [e for e in framer.feed(data) if isinstance(e, Frame)]
            if frames:
                return frames[0].payload


def _rows(service):  # type: ignore[no-untyped-def]
    return service.journal.read_sync(lambda tx: tx.list_exchanges(limit=100))


async def test_trickling_sender_is_cut_at_the_frame_deadline_with_an_ar(tmp_path: Path) -> None:
    async with running(builders.settings(tmp_path, mllp={"frame_timeout": 1.0, "idle_timeout": 30.0})) as service:
        reader, writer = await asyncio.open_connection("127.0.0.1", mllp_port(service))
        started = time.monotonic()

        async def trickle() -> None:
            for byte in b"\x0b" + MSG:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)

        task = asyncio.create_task(trickle())
        ack = await _read_frame(reader)
        elapsed = time.monotonic() - started
        task.cancel()
        assert ack is not None and field(ack, "MSA", 1) == "AR"
        assert "MLLP_FRAME_TIMEOUT" in field(ack, "ERR", 5)
        assert 0.9 < elapsed < 3.0
        assert await _read_frame(reader) is None  # and the connection is closed
        writer.close()
        rows = _rows(service)
        assert [(r["status"], r["reason_code"]) for r in rows] == [("rejected", "MLLP_FRAME_TIMEOUT")]
        raw = service.journal.read_sync(lambda tx: tx.exchange_bodies(rows[0]["id"]))["raw"]
        assert MSG.startswith(bytes(raw)) and len(raw) > 3  # what did arrive is kept


async def test_connections_beyond_the_cap_are_closed_and_the_others_keep_working(tmp_path: Path) -> None:
    async with running(builders.settings(tmp_path, mllp={"max_connections": 3})) as service:
        port = mllp_port(service)
        kept = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(10), 5) == b""  # closed at once
        writer.close()
        assert service.mllp is not None and service.mllp.refused_connections == 1
        for n, (r, w) in enumerate(kept):
            w.write(frame(MSG.replace(b"|C1|", f"|K{n}|".encode())))
            await w.drain()
            ack = await _read_frame(r)
            assert ack is not None and field(ack, "MSA", 2) == f"K{n}"
        kept[0][1].close()
        await asyncio.sleep(0.1)
        async with MllpClient("127.0.0.1", port, timeout=5) as client:  # a slot is free again
            assert field(await client.send(MSG.replace(b"|C1|", b"|N1|")), "MSA", 2) == "N1"
        for _, w in kept[1:]:
            w.close()


async def test_bytes_buffered_across_connections_are_capped(tmp_path: Path) -> None:
    chunk = b"NTE|1||" + b"x" * 700_000
    async with running(builders.settings(tmp_path, mllp={"max_buffered_bytes": 1_000_000})) as service:
        port = mllp_port(service)
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        w1.write(b"\x0b" + MSG + chunk)  # an unfinished 700 kB frame
        await w1.drain()
        await asyncio.sleep(0.2)
        assert service.mllp is not None and service.mllp.buffered_bytes > 700_000
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(b"\x0b" + MSG.replace(b"|C1|", b"|C2|") + chunk)  # a second one: over the cap
        await w2.drain()
        ack = await _read_frame(r2)
        assert ack is not None and field(ack, "MSA", 1) == "AR" and "MLLP_BUSY" in field(ack, "ERR", 5)
        w1.write(b"\r\x1c\r")  # the first sender finishes and is served
        await w1.drain()
        ack = await _read_frame(r1)
        assert ack is not None and field(ack, "MSA", 2) == "C1"
        await asyncio.sleep(0.1)
        assert service.mllp.buffered_bytes == 0
        for w in (w1, w2):
            w.close()


async def test_tls_client_certificate_subject_is_journaled(tmp_path: Path) -> None:
    ca_path, _, ca_cert, ca_key = _self_signed(tmp_path, "Test CA")
    srv_cert, srv_key, _, _ = _self_signed(tmp_path, "localhost", (ca_cert, ca_key))
    cli_cert, cli_key, _, _ = _self_signed(tmp_path, "sender-1", (ca_cert, ca_key))
    mllp = {"tls_cert": str(srv_cert), "tls_key": str(srv_key), "tls_ca": str(ca_path)}
    async with running(builders.settings(tmp_path, mllp=mllp)) as service:
        ctx = ssl.create_default_context(cafile=str(ca_path))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(cli_cert), str(cli_key))
        async with MllpClient("127.0.0.1", mllp_port(service), ssl=ctx, timeout=5) as client:
            assert field(await client.send(MSG), "MSA", 1) == "AA"
        row = _rows(service)[0]
        events = service.journal.read_sync(lambda tx: tx.events(row["id"]))
        received = next(e for e in events if e["stage"] == "received")
        assert received["detail"]["tls_subject"] == "commonName=sender-1"
