"""Asyncio MLLP server: moves bytes between sockets and the injected handler.

All framing is done by :class:`gateway.core.mllp.MllpFramer`; this module only
reads, writes, times out and closes.

Messages on one connection are processed **sequentially**: the next frame is
handed to the handler only after the previous ACK was written. That gives ACKs
in message order for free, and — more important — keeps the journal order equal
to the sender's order (an A08 must not overtake the A01 it updates). MLLP senders
wait for each ACK anyway, so pipelining would buy almost nothing; concurrency
comes from many connections, each served by its own task.

The handler is expected to journal the message durably before returning an AA.
If it raises (the journal is down, a bug), no ACK is sent and the connection is
closed, so the sender retries later rather than believing we took the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.core.mllp import DEFAULT_MAX_SIZE, Frame, Garbage, MllpFramer, Oversize, frame

__all__ = ["PeerInfo", "Handler", "OversizeHandler", "RefusalHandler", "MllpListener", "make_ssl_context"]

_READ_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Who sent a message: address, which listener took it, TLS client certificate subject."""

    host: str
    port: int
    listener: str
    tls_subject: str | None = None


Handler = Callable[[bytes, PeerInfo], Awaitable[bytes]]
OversizeHandler = Callable[[int, PeerInfo], Awaitable[bytes]]
#: ``(code, message, partial payload, peer)`` → the AR for a frame we stop receiving
RefusalHandler = Callable[[str, str, bytes, PeerInfo], Awaitable[bytes]]


def _subject(cert: dict[str, Any] | None) -> str | None:
    """``CN=…,O=…`` from the dict ``SSLSocket.getpeercert()`` returns."""
    if not cert or "subject" not in cert:
        return None
    parts = [f"{key}={value}" for rdn in cert["subject"] for key, value in rdn]
    return ",".join(parts) or None


class _Connection:
    __slots__ = ("task", "busy", "stopping", "drain", "buffered")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.busy = False  # a message is between "received" and "ACK written"
        self.stopping = False
        self.drain = False  # an oversized frame was answered: read its rest before closing
        self.buffered = 0  # bytes of this connection's unfinished frame, in the listener's total


class _FrameDeadline:
    """When the frame being received must be complete: set as one starts, moved on after each
    complete frame (the next one starts its own clock), cleared between frames."""

    def __init__(self, frame_timeout: float) -> None:
        self._frame_timeout = frame_timeout
        self._loop = asyncio.get_running_loop()
        self._at: float | None = None

    def timeout(self, idle_timeout: float) -> float:
        if self._at is None:
            return idle_timeout
        return max(0.0, min(idle_timeout, self._at - self._loop.time()))

    def update(self, in_frame: bool, got_frame: bool) -> None:
        if not in_frame:
            self._at = None
        elif self._at is None or got_frame:
            self._at = self._loop.time() + self._frame_timeout


class MllpListener:
    """An MLLP/TCP (optionally TLS) server feeding frames to ``handler``.

    ``handler(payload, peer)`` returns the ACK bytes, unframed, or ``b""`` to send
    nothing back (HL7 never acknowledges an acknowledgement). On an oversized
    frame ``handler_oversize(size, peer)`` is awaited for the AR to send before the
    connection is closed — after reading and discarding the rest of that frame (at most
    ``drain_bytes`` bytes and ``drain_timeout`` seconds), so that a sender still writing
    gets the AR instead of a reset; without it the connection is just closed. A connection
    that stays silent for ``idle_timeout`` seconds is closed.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 2575,
        max_size: int = DEFAULT_MAX_SIZE,
        idle_timeout: float = 300.0,
        ssl: ssl_module.SSLContext | None = None,
        log: Any = None,
        handler_oversize: OversizeHandler | None = None,
        name: str = "mllp",
        drain_bytes: int = 64 * 1024 * 1024,
        drain_timeout: float = 30.0,
        max_connections: int = 256,
        max_buffered_bytes: int = 256 * 1024 * 1024,
        frame_timeout: float = 120.0,
        handler_refused: RefusalHandler | None = None,
    ) -> None:
        self._handler = handler
        self._handler_oversize = handler_oversize
        self._host = host
        self._port = port
        self._max_size = max_size
        self._idle_timeout = idle_timeout
        self._drain_bytes = drain_bytes
        self._drain_timeout = drain_timeout
        self._max_connections = max_connections
        self._max_buffered = max_buffered_bytes
        self._frame_timeout = frame_timeout
        self._handler_refused = handler_refused
        self._buffered = 0  # unfinished-frame bytes held across all connections
        self.refused_connections = 0  # for metrics
        self._ssl = ssl
        self._log = log if log is not None else structlog.get_logger(__name__)
        self.name = name
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self.garbage_bytes = 0  # total discarded, for metrics

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def buffered_bytes(self) -> int:
        """Bytes of unfinished frames held across every connection."""
        return self._buffered

    async def start(self) -> tuple[str, int]:
        """Bind and start accepting; returns the bound ``(host, port)`` (useful with port 0)."""
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, ssl=self._ssl, limit=_READ_SIZE
        )
        sockname = self._server.sockets[0].getsockname()
        host, port = sockname[0], sockname[1]
        self._log.info("mllp.listening", listener=self.name, host=host, port=port, tls=self._ssl is not None)
        return host, port

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight messages get their ACK, then close every connection.

        Idle connections (no message being handled) are closed at once; busy ones
        close right after writing their current ACK. Whatever is still running after
        ``drain_timeout`` seconds is cancelled — its sender got no ACK and will resend.
        """
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.stopping = True
            if not conn.busy and conn.task is not None:
                conn.task.cancel()
        tasks = [c.task for c in self._connections if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=drain_timeout)
            for task in pending:
                task.cancel()
            if pending:
                self._log.warning("mllp.drain_timeout", listener=self.name, cancelled=len(pending))
                await asyncio.wait(pending)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self._log.info("mllp.stopped", listener=self.name)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self._max_connections:
            await self._turn_away(writer)
            return
        conn = _Connection(asyncio.current_task())
        self._connections.add(conn)
        peer = self._peer(writer)
        log = self._log.bind(listener=self.name, peer_host=peer.host, peer_port=peer.port)
        log.info("mllp.connected", tls=writer.get_extra_info("ssl_object") is not None)
        reason = "eof"
        try:
            reason = await self._receive(reader, writer, conn, peer, log)
        except asyncio.CancelledError:
            # Cancelled by stop(): end quietly. Re-raising would make asyncio's stream
            # callback log the cancellation as an error for every idle connection.
            reason = "stopping"
        except (ConnectionError, OSError) as exc:
            reason = type(exc).__name__
        finally:
            self._connections.discard(conn)
            self._buffered -= conn.buffered
            conn.buffered = 0
            log.info("mllp.disconnected", reason=reason)
            writer.close()
            with contextlib.suppress(OSError):  # SSLError and ConnectionError are OSErrors
                await writer.wait_closed()

    async def _turn_away(self, writer: asyncio.StreamWriter) -> None:
        # Refused at once and quietly (a FIN, no reset): the sender retries later, as
        # after any connection loss, while the connections we have keep their share.
        self.refused_connections += 1
        self._log.warning("mllp.refused", listener=self.name, reason="max_connections",
                          connections=len(self._connections))
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    def _peer(self, writer: asyncio.StreamWriter) -> PeerInfo:
        addr = writer.get_extra_info("peername") or ("?", 0)
        sslobj = writer.get_extra_info("ssl_object")
        return PeerInfo(
            host=str(addr[0]), port=int(addr[1]), listener=self.name,
            tls_subject=_subject(sslobj.getpeercert()) if sslobj is not None else None,
        )

    async def _receive(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Connection,
                       peer: PeerInfo, log: Any) -> str:
        """Read, frame and answer until the connection ends; returns why it ended."""
        framer = MllpFramer(self._max_size)
        deadline = _FrameDeadline(self._frame_timeout)
        while not conn.stopping:
            try:
                async with asyncio.timeout(deadline.timeout(self._idle_timeout)):
                    data = await reader.read(_READ_SIZE)
            except TimeoutError:
                return await self._timed_out(writer, framer, peer, log)
            if not data:
                if framer.in_frame:
                    log.warning("mllp.truncated", buffered=framer.buffered)
                return "eof"
            events = framer.feed(data)
            self._account(conn, framer)
            if not await self._handle_events(events, conn, writer, peer, log):
                return await self._drain(reader, framer, log) if conn.drain else "closed"
            deadline.update(framer.in_frame, any(isinstance(e, Frame) for e in events))
            if framer.in_frame and self._buffered > self._max_buffered:
                return await self._busy(reader, writer, framer, conn, peer, log)
        return "stopping"

    async def _timed_out(self, writer: asyncio.StreamWriter, framer: MllpFramer, peer: PeerInfo, log: Any) -> str:
        if not framer.in_frame:
            return "idle"
        # a sender trickling bytes (or gone silent mid-frame) must not keep a connection and
        # its buffer forever; it gets an AR for what it sent
        await self._refuse(writer, framer, peer, log, "MLLP_FRAME_TIMEOUT",
                           f"the frame was not complete within {self._frame_timeout:g} s")
        return "frame-timeout"

    async def _busy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, framer: MllpFramer,
                    conn: _Connection, peer: PeerInfo, log: Any) -> str:
        log.warning("mllp.buffers_full", buffered=self._buffered, limit=self._max_buffered)
        sent = await self._refuse(
            writer, framer, peer, log, "MLLP_BUSY",
            "the gateway is receiving too much at once; send this message again later",
        )
        framer.skip_frame()
        self._account(conn, framer)
        if sent:
            await self._drain(reader, framer, log)
        return "busy"

    async def _handle_events(
        self,
        events: list[Frame | Garbage | Oversize],
        conn: _Connection,
        writer: asyncio.StreamWriter,
        peer: PeerInfo,
        log: Any,
    ) -> bool:
        """Act on one read's events; False means close the connection now."""
        for event in events:
            if conn.stopping:
                return False  # not acknowledged: the sender will resend it after we are back
            if isinstance(event, Garbage):
                self.garbage_bytes += event.count
                log.warning("mllp.garbage", count=event.count)
            elif isinstance(event, Oversize):
                log.warning("mllp.oversize", size=event.size_so_far, max_size=self._max_size)
                if self._handler_oversize is not None:
                    try:
                        reply = await self._handler_oversize(event.size_so_far, peer)
                    except Exception as exc:
                        log.error("mllp.oversize_handler_failed", error=type(exc).__name__)
                        return False
                    await self._write(writer, reply)
                    conn.drain = True
                return False
            else:
                conn.busy = True
                try:
                    try:
                        ack = await self._handler(event.payload, peer)
                    except Exception as exc:  # any failure means: no ACK
                        log.error("mllp.handler_failed", error=type(exc).__name__, size=len(event.payload))
                        return False
                    if ack:  # b"": nothing to answer (an inbound ACK, or enhanced mode with MSH-15 NE)
                        await self._write(writer, ack)
                finally:
                    conn.busy = False
        return True

    def _account(self, conn: _Connection, framer: MllpFramer) -> None:
        now = framer.buffered
        self._buffered += now - conn.buffered
        conn.buffered = now

    async def _refuse(
        self, writer: asyncio.StreamWriter, framer: MllpFramer, peer: PeerInfo, log: Any, code: str, message: str
    ) -> bool:
        """Answer an AR for the frame being received (journaled by the handler); True when sent."""
        log.warning("mllp.frame_refused", code=code, buffered=framer.buffered)
        if self._handler_refused is None:
            return False
        try:
            reply = await self._handler_refused(code, message, framer.partial, peer)
            await self._write(writer, reply)
        except Exception as exc:
            log.error("mllp.refusal_failed", code=code, error=type(exc).__name__)
            return False
        return True

    async def _drain(self, reader: asyncio.StreamReader, framer: MllpFramer, log: Any) -> str:
        """Read and discard the rest of an oversized frame, so that closing sends no reset.

        A sender that writes its whole frame before reading (``sendall`` then ``recv``)
        would otherwise get a TCP reset for the bytes we left unread, and the kernel drops
        the AR still waiting in its receive buffer. Bounded: at most ``drain_bytes`` and
        ``drain_timeout`` seconds, then the connection is closed anyway.
        """
        drained = 0
        try:
            async with asyncio.timeout(self._drain_timeout):
                while framer.in_frame and drained < self._drain_bytes:
                    data = await reader.read(_READ_SIZE)
                    if not data:
                        return "oversize-eof"
                    drained += len(data)
                    framer.feed(data)  # events after the end of the frame are ignored
        except TimeoutError:
            log.warning("mllp.drain_timeout", drained=drained)
            return "oversize-drain-timeout"
        log.info("mllp.oversize_drained", drained=drained, complete=not framer.in_frame)
        return "oversize"

    async def _write(self, writer: asyncio.StreamWriter, payload: bytes) -> None:
        writer.write(frame(payload))
        # a peer that never reads must not pin this task forever
        async with asyncio.timeout(self._idle_timeout):
            await writer.drain()


def make_ssl_context(
    cert: str, key: str | None = None, ca: str | None = None, require_client_cert: bool = False
) -> ssl_module.SSLContext:
    """Server-side TLS context (TLS 1.2+); client certificates checked against ``ca``.

    ``key`` may be omitted when the private key is in the ``cert`` PEM file.

    With ``require_client_cert`` a peer without a certificate signed by ``ca`` is
    refused during the handshake; with only ``ca`` a certificate is asked for and
    verified when given.
    """
    if require_client_cert and not ca:
        raise ValueError("require_client_cert needs a CA file to verify client certificates")
    ctx = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl_module.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if ca:
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl_module.CERT_REQUIRED if require_client_cert else ssl_module.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl_module.CERT_NONE
    return ctx
