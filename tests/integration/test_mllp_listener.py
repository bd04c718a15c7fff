"""MllpListener on 127.0.0.1:0, driven by python-hl7's asyncio MLLP client (a peer we did not write)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import hl7
import pytest
from hl7.mllp import open_hl7_connection
from structlog.testing import capture_logs

from adapters.mllp_client import MllpClient
from gateway.core.ack import build_ack, build_ack_unreadable
from gateway.core.charset import decode_message, encode_for
from gateway.core.hl7v2.reader import Message
from gateway.core.mllp import frame
from gateway.errors import DestinationUnavailable
from gateway.listeners.mllp import MllpListener, PeerInfo, make_ssl_context
from gateway.model import Finding

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
NOW = dt.datetime(2024, 3, 15, 10, 0, tzinfo=dt.UTC)


def make_msg(control_id: str, filler: str = "") -> bytes:
    return (
        f"MSH|^~\\&|SND|FAC|RELAIS|RELAIS|20240315||ADT^A01^ADT_A01|{control_id}|P|2.5|||||FRA|UNICODE UTF-8\r"
        f"PID|1||{control_id}^^^X^PI||FICTIF^Test{filler}\r"
    ).encode()


class Recorder:
    """A test handler: records what came in and answers AA built with build_ack."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, PeerInfo]] = []
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes:
        self.received.append((payload, peer))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("journal down")
        decoded = decode_message(payload)
        msg = Message.parse(decoded.text)
        ack = build_ack(msg, "AA", now=NOW, control_id=f"ACK-{msg.control_id}")
        return encode_for(decoded.declared, ack)


async def oversize_ar(size: int, peer: PeerInfo) -> bytes:
    finding = Finding("MLLP_OVERSIZE", f"frame larger than allowed ({size} bytes)")
    return build_ack_unreadable(b"", NOW, "AR-OVERSIZE", finding).encode("ascii")


ListenerFactory = Callable[..., Awaitable[tuple[MllpListener, int]]]


@pytest.fixture
async def start_listener() -> AsyncIterator[ListenerFactory]:
    listeners: list[MllpListener] = []

    async def factory(handler: Recorder, **kw: object) -> tuple[MllpListener, int]:
        options: dict = {"host": "127.0.0.1", "port": 0, "max_size": 1 << 20, "idle_timeout": 5.0}
        options.update(kw)
        listener = MllpListener(handler, handler_oversize=oversize_ar, **options)
        _, port = await listener.start()
        listeners.append(listener)
        return listener, port

    yield factory
    for listener in listeners:
        await listener.stop(drain_timeout=1.0)


async def test_single_message_acked(start_listener: ListenerFactory) -> None:
    handler = Recorder()
    _, port = await start_listener(handler)
    reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="utf-8")
    try:
        writer.writemessage(hl7.parse(make_msg("M1").decode()))
        await writer.drain()
        ack = await asyncio.wait_for(reader.readmessage(), 5)
    finally:
        writer.close()
    assert str(ack.segment("MSA")[1]) == "AA"
    assert str(ack.segment("MSA")[2]) == "M1"
    assert str(ack.segment("MSH")[9]) == "ACK^A01^ACK"
    payload, peer = handler.received[0]
    assert payload.startswith(b"MSH|")
    assert peer.host == "127.0.0.1" and peer.listener == "mllp" and peer.tls_subject is None


async def test_latin9_fixture_acked_in_same_charset(start_listener: ListenerFactory) -> None:
    handler = Recorder()
    _, port = await start_listener(handler)
    raw = (FIXTURES / "adt_a01_latin9.hl7").read_bytes()
    reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="iso8859-15")
    try:
        writer.writeblock(raw)
        await writer.drain()
        ack = await asyncio.wait_for(reader.readmessage(), 5)
    finally:
        writer.close()
    assert handler.received[0][0] == raw  # byte-exact through the framer
    assert str(ack.segment("MSA")[2]) == "ADT0001"
    assert str(ack.segment("MSH")[18]) == "8859/15"


async def test_two_glued_frames_get_two_acks_in_order(start_listener: ListenerFactory) -> None:
    handler = Recorder()
    _, port = await start_listener(handler)
    reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="utf-8")
    try:
        writer.write(frame(make_msg("G1")) + frame(make_msg("G2")))  # one write, two frames
        await writer.drain()
        first = await asyncio.wait_for(reader.readmessage(), 5)
        second = await asyncio.wait_for(reader.readmessage(), 5)
    finally:
        writer.close()
    assert [str(a.segment("MSA")[2]) for a in (first, second)] == ["G1", "G2"]
    assert [str(a.segment("MSA")[1]) for a in (first, second)] == ["AA", "AA"]


async def test_garbage_counted_and_logged_without_content(start_listener: ListenerFactory) -> None:
    handler = Recorder()
    listener, port = await start_listener(handler)
    with capture_logs() as logs:
        reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="utf-8")
        try:
            writer.write(b"SECRET-NAME" + frame(make_msg("X1")))
            await writer.drain()
            ack = await asyncio.wait_for(reader.readmessage(), 5)
        finally:
            writer.close()
    assert str(ack.segment("MSA")[2]) == "X1"
    assert listener.garbage_bytes == len(b"SECRET-NAME")
    garbage = [e for e in logs if e["event"] == "mllp.garbage"]
    assert garbage and garbage[0]["count"] == 11
    assert "SECRET" not in repr(logs) and "FICTIF" not in repr(logs)


async def test_oversize_gets_ar_then_close(start_listener: ListenerFactory) -> None:
    handler = Recorder()
    _, port = await start_listener(handler, max_size=500)
    reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="utf-8")
    try:
        writer.writeblock(make_msg("BIG", filler="x" * 2000))
        await writer.drain()
        ack = await asyncio.wait_for(reader.readmessage(), 5)
        rest = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    ours = Message.parse(str(ack))
    assert ours.get("MSA-1") == "AR"
    assert ours.get("MSA-2") == ""  # the control id of an oversized frame is never read
    assert ours.get("ERR-5") == "MLLP_OVERSIZE"
    assert rest == b""  # the listener closed the connection
    assert handler.received == []


async def test_many_concurrent_connections(start_listener: ListenerFactory) -> None:
    handler = Recorder()
    listener, port = await start_listener(handler)

    async def one(i: int) -> list[str]:
        reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="utf-8")
        try:
            ids = []
            for j in range(3):
                writer.writeblock(make_msg(f"C{i}-{j}"))
                await writer.drain()
                ack = await asyncio.wait_for(reader.readmessage(), 5)
                ids.append(str(ack.segment("MSA")[2]))
            return ids
        finally:
            writer.close()

    results = await asyncio.gather(*(one(i) for i in range(10)))
    assert results == [[f"C{i}-{j}" for j in range(3)] for i in range(10)]
    assert len(handler.received) == 30


async def test_idle_timeout_closes(start_listener: ListenerFactory) -> None:
    _, port = await start_listener(Recorder(), idle_timeout=0.2)
    reader, writer = await open_hl7_connection("127.0.0.1", port)
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()


async def test_handler_failure_closes_without_ack(start_listener: ListenerFactory) -> None:
    handler = Recorder()
    handler.fail = True
    _, port = await start_listener(handler)
    reader, writer = await open_hl7_connection("127.0.0.1", port)
    try:
        writer.writeblock(make_msg("F1"))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()


async def test_stop_drains_in_flight_message(start_listener: ListenerFactory) -> None:
    handler = Recorder()
    handler.gate = asyncio.Event()
    listener, port = await start_listener(handler)
    busy_r, busy_w = await open_hl7_connection("127.0.0.1", port, encoding="utf-8")
    idle_r, idle_w = await open_hl7_connection("127.0.0.1", port)
    try:
        busy_w.writeblock(make_msg("S1"))
        await busy_w.drain()
        while not handler.received:
            await asyncio.sleep(0.01)
        stopping = asyncio.create_task(listener.stop(drain_timeout=5))
        assert await asyncio.wait_for(idle_r.read(), 5) == b""  # idle: closed at once
        await asyncio.sleep(0.05)
        assert not stopping.done()  # waiting for the in-flight message
        handler.gate.set()
        ack = await asyncio.wait_for(busy_r.readmessage(), 5)
        assert str(ack.segment("MSA")[2]) == "S1"
        assert await asyncio.wait_for(busy_r.read(), 5) == b""
        await asyncio.wait_for(stopping, 5)
        with pytest.raises(OSError):
            await open_hl7_connection("127.0.0.1", port)
    finally:
        busy_w.close()
        idle_w.close()


async def test_mllp_client_round_trip(start_listener: ListenerFactory) -> None:
    handler = Recorder()
    _, port = await start_listener(handler)
    async with MllpClient("127.0.0.1", port, timeout=5) as client:
        replies = [await client.send(make_msg(f"K{i}")) for i in range(3)]
    acks = [Message.parse(r.decode()) for r in replies]
    assert [a.get("MSA-2") for a in acks] == ["K0", "K1", "K2"]
    assert {p.port for _, p in handler.received} == {handler.received[0][1].port}  # one connection


async def test_mllp_client_unreachable() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = MllpClient("127.0.0.1", port, timeout=2)
    with pytest.raises(DestinationUnavailable):
        await client.send(make_msg("U1"))
    await client.close()


async def test_mllp_client_no_reply() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = MllpClient("127.0.0.1", port, timeout=2)
        with pytest.raises(DestinationUnavailable):
            await client.send(make_msg("N1"))
        assert not client.connected
    finally:
        server.close()
        await server.wait_closed()


def _self_signed(tmp_path: Path, cn: str, ca: tuple | None = None) -> tuple[Path, Path, object, object]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_cert, issuer_key = ca if ca else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True)
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = tmp_path / f"{cn}.crt", tmp_path / f"{cn}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path, cert, key


async def test_tls_with_client_certificate(start_listener: ListenerFactory, tmp_path: Path) -> None:
    ca_path, _, ca_cert, ca_key = _self_signed(tmp_path, "Test CA")
    srv_cert, srv_key, _, _ = _self_signed(tmp_path, "localhost", (ca_cert, ca_key))
    cli_cert, cli_key, _, _ = _self_signed(tmp_path, "sender-1", (ca_cert, ca_key))
    server_ctx = make_ssl_context(str(srv_cert), str(srv_key), ca=str(ca_path), require_client_cert=True)
    handler = Recorder()
    _, port = await start_listener(handler, ssl=server_ctx)

    client_ctx = ssl.create_default_context(cafile=str(ca_path))
    client_ctx.check_hostname = False
    client_ctx.load_cert_chain(str(cli_cert), str(cli_key))
    async with MllpClient("127.0.0.1", port, ssl=client_ctx, timeout=5) as client:
        reply = await client.send(make_msg("T1"))
    assert Message.parse(reply.decode()).get("MSA-2") == "T1"
    assert handler.received[0][1].tls_subject == "commonName=sender-1"


def test_make_ssl_context_requires_ca_for_client_certs(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_ssl_context("c", "k", require_client_cert=True)
