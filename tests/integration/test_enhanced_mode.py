"""HL7 v2 ch. 2 acknowledgement rules over real MLLP: enhanced mode, no ACK to an ACK.

The sender's return address is a python-hl7 MLLP server (a peer we did not write): it
collects what Relais sends back and answers each message with python-hl7's own ACK.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import hl7
from hl7.mllp import start_hl7_server

from gateway.core.mllp import MllpFramer, frame
from tests import builders
from tests.support import fixture_bytes, mllp_port, running

CREATOR = """
[[creator]]
application = "DPI-RELAIS"
facility = "CLINIQUE-RELAIS"
address = "127.0.0.1:{port}"
"""


class ReturnAddress:
    """The sender's listener: keeps every message it gets and acknowledges it."""

    def __init__(self) -> None:
        self.received: list[hl7.Message] = []
        self.arrived = asyncio.Event()

    async def handle(self, reader, writer) -> None:  # type: ignore[no-untyped-def]
        try:
            while not writer.is_closing():
                msg = await reader.readmessage()
                self.received.append(msg)
                self.arrived.set()
                writer.writemessage(msg.create_ack("CA"))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


async def _send_raw(port: int, raw: bytes, wait: float) -> bytes:
    """Send one frame and return whatever comes back within ``wait`` seconds (b"" for nothing)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame(raw))
        await writer.drain()
        framer = MllpFramer()
        try:
            async with asyncio.timeout(wait):
                while True:
                    data = await reader.read(65536)
                    if not data:
                        return b""
                    frames = [e for e in framer.feed(data) if hasattr(e, "payload")]
                    if frames:
                        return bytes(frames[0].payload)  # type: ignore[attr-defined]
        except TimeoutError:
            return b""
    finally:
        writer.close()


def _rows(service):  # type: ignore[no-untyped-def]
    return service.journal.read_sync(lambda tx: tx.list_exchanges(limit=100))


async def _with_return_address(tmp_path: Path):  # type: ignore[no-untyped-def]
    peer = ReturnAddress()
    server = await start_hl7_server(peer.handle, host="127.0.0.1", port=0, encoding="utf-8")
    port = server.sockets[0].getsockname()[1]
    return peer, server, builders.settings(tmp_path, text=CREATOR.format(port=port))


async def test_al_al_gets_ca_then_an_application_ack_at_the_return_address(tmp_path: Path) -> None:
    peer, server, settings = await _with_return_address(tmp_path)
    try:
        async with running(settings) as service:
            reply = await _send_raw(mllp_port(service), fixture_bytes("oru_enhanced_al_al.hl7"), wait=10)
            accept = hl7.parse(reply.decode())
            assert str(accept.segment("MSA")[1]) == "CA" and str(accept.segment("MSA")[2]) == "ORU0102"
            assert not any(s[0][0] == "ERR" for s in accept)  # findings travel with the application ACK
            await asyncio.wait_for(peer.arrived.wait(), 10)
            (app_ack,) = peer.received
            assert str(app_ack.segment("MSH")[9]) == "ACK^R01^ACK"
            assert str(app_ack.segment("MSA")[1]) == "AA" and str(app_ack.segment("MSA")[2]) == "ORU0102"
            assert str(app_ack.segment("MSH")[15]) == "AL" and str(app_ack.segment("MSH")[16]) == "NE"
            # the sender's CA to our application ACK is its receipt: the delivery is done
            exchange_id = _rows(service)[0]["id"]
            for _ in range(100):
                events = service.journal.read_sync(lambda tx: tx.events(exchange_id))
                if any(e["stage"] == "ack:sent" for e in events):
                    break
                await asyncio.sleep(0.05)
            assert any(e["stage"] == "ack:sent" for e in events)
    finally:
        server.close()


async def test_ne_ne_gets_no_accept_ack_and_no_application_ack(tmp_path: Path) -> None:
    peer, server, settings = await _with_return_address(tmp_path)
    raw = fixture_bytes("oru_enhanced_ne_al.hl7").replace(b"|NE|AL|", b"|NE|NE|")
    try:
        async with running(settings) as service:
            assert await _send_raw(mllp_port(service), raw, wait=0.5) == b""
            (row,) = _rows(service)
            assert row["control_id"] == "ORU0101" and row["status"] in ("queued", "accepted", "delivered")
            await asyncio.sleep(0.3)
            assert peer.received == []
    finally:
        server.close()


async def test_ne_al_gets_only_the_application_ack(tmp_path: Path) -> None:
    peer, server, settings = await _with_return_address(tmp_path)
    try:
        async with running(settings) as service:
            assert await _send_raw(mllp_port(service), fixture_bytes("oru_enhanced_ne_al.hl7"), wait=0.5) == b""
            await asyncio.wait_for(peer.arrived.wait(), 10)
            assert str(peer.received[0].segment("MSA")[1]) == "AA"
    finally:
        server.close()


async def test_enhanced_mode_error_goes_in_the_application_ack(tmp_path: Path) -> None:
    peer, server, settings = await _with_return_address(tmp_path)
    raw = fixture_bytes("oru_pidx_segment.hl7").replace(b"|T|2.5|||||", b"|T|2.5|||AL|AL|")
    try:
        async with running(settings) as service:
            accept = await _send_raw(mllp_port(service), raw, wait=10)
            assert b"MSA|CA|ORU0104" in accept  # stored safely: the commit is accepted
            await asyncio.wait_for(peer.arrived.wait(), 10)
            app_ack = peer.received[0]
            assert str(app_ack.segment("MSA")[1]) == "AE"
            assert "PIDX" in str(app_ack.segment("ERR"))
    finally:
        server.close()


async def test_an_inbound_ack_gets_no_answer_and_is_matched_to_our_message(tmp_path: Path) -> None:
    peer, server, settings = await _with_return_address(tmp_path)
    try:
        async with running(settings) as service:
            port = mllp_port(service)
            await _send_raw(port, fixture_bytes("oru_enhanced_ne_al.hl7"), wait=0.3)
            await asyncio.wait_for(peer.arrived.wait(), 10)
            ours = str(peer.received[0].segment("MSH")[10])
            inbound = fixture_bytes("ack_inbound.hl7").replace(b"ZAM0000000000000001", ours.encode())
            assert await _send_raw(port, inbound, wait=0.5) == b""
            rows = {r["message_type"]: r for r in _rows(service)}
            assert rows["ACK^Z01"]["status"] == "recorded"
            original = rows["ORU^R01"]["id"]
            events = service.journal.read_sync(lambda tx: tx.events(original))
            assert any(e["stage"] == "ack:acknowledged" for e in events)
            # an ACK answering nothing we sent is kept too, and still not answered
            assert await _send_raw(port, fixture_bytes("ack_inbound.hl7"), wait=0.5) == b""
    finally:
        server.close()


async def test_relais_send_does_not_wait_for_an_answer_that_is_not_due(tmp_path: Path) -> None:
    from gateway.commands.send import _send_all, normalise_segments

    ack = tmp_path / "ack.hl7"
    ack.write_bytes(fixture_bytes("ack_inbound.hl7"))
    adt = tmp_path / "adt.hl7"
    adt.write_bytes(fixture_bytes("adt_a02_transfer.hl7"))
    async with running(builders.settings(tmp_path)) as service:
        messages = [(str(p), normalise_segments(p.read_bytes())) for p in (ack, adt)]
        results = await _send_all(messages, "127.0.0.1", mllp_port(service), 5.0, lambda _result: None)
        assert results[0]["no_reply"] and results[0]["msa1"] == ""
        assert results[1]["msa1"] == "AA" and results[1]["msa2"] == "ADT0010"  # the connection stayed in step
        for _ in range(50):
            if len(_rows(service)) == 2:
                break
            await asyncio.sleep(0.05)
        assert {r["status"] for r in _rows(service)} == {"recorded", "accepted"}
