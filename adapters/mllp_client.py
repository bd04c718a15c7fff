"""A small asyncio MLLP client: one connection, one message at a time.

Used by ``relais send`` and by the outbound ``mllp`` destination (ZAM delivery).
Framing is :mod:`gateway.core.mllp`; this module only moves bytes.

Network failures and timeouts become :class:`DestinationUnavailable` (retryable);
a reply that breaks the framing rules becomes :class:`FramingError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
from types import TracebackType

from gateway.core.mllp import DEFAULT_MAX_SIZE, Frame, MllpFramer, Oversize, frame
from gateway.errors import DestinationUnavailable, FramingError

__all__ = ["MllpClient"]

_READ_SIZE = 64 * 1024


class MllpClient:
    """Send framed messages and wait for each framed reply.

    ``timeout`` bounds connecting and each send/reply round trip. Sends on one
    client are serialised, since MLLP pairs each reply with the message before it.
    After a failure the connection is dropped and the next ``send`` reconnects.
    """

    def __init__(
        self,
        host: str,
        port: int,
        ssl: ssl_module.SSLContext | None = None,
        timeout: float = 30.0,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self.host = host
        self.port = port
        self._ssl = ssl
        self._timeout = timeout
        self._max_size = max_size
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._framer = MllpFramer(max_size)
        self._pending: list[bytes] = []  # replies already read but not yet returned
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        """Open the connection (no-op when already open)."""
        if self.connected:
            return
        try:
            async with asyncio.timeout(self._timeout):
                self._reader, self._writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self._ssl, limit=_READ_SIZE
                )
        except (OSError, TimeoutError) as exc:
            raise DestinationUnavailable(
                f"cannot connect to {self.host}:{self.port}: {type(exc).__name__}", code="MLLP_CONNECT"
            ) from exc
        self._framer = MllpFramer(self._max_size)
        self._pending.clear()

    async def send(self, payload: bytes) -> bytes:
        """Frame and send ``payload``; return the payload of the reply frame (the ACK)."""
        framed = frame(payload)
        async with self._lock:
            await self.connect()
            assert self._reader is not None and self._writer is not None
            try:
                async with asyncio.timeout(self._timeout):
                    self._writer.write(framed)
                    await self._writer.drain()
                    return await self._read_reply(self._reader)
            except FramingError:
                await self._drop()
                raise
            except (OSError, TimeoutError, EOFError) as exc:
                await self._drop()
                raise DestinationUnavailable(
                    f"no MLLP reply from {self.host}:{self.port}: {type(exc).__name__}", code="MLLP_NO_REPLY"
                ) from exc

    async def post(self, payload: bytes) -> None:
        """Frame and send ``payload`` expecting no reply (an ACK, or MSH-15 ``NE`` in enhanced mode)."""
        async with self._lock:
            await self.connect()
            assert self._writer is not None
            try:
                async with asyncio.timeout(self._timeout):
                    self._writer.write(frame(payload))
                    await self._writer.drain()
            except (OSError, TimeoutError) as exc:
                await self._drop()
                raise DestinationUnavailable(
                    f"cannot send to {self.host}:{self.port}: {type(exc).__name__}", code="MLLP_SEND"
                ) from exc

    async def _read_reply(self, reader: asyncio.StreamReader) -> bytes:
        while not self._pending:
            data = await reader.read(_READ_SIZE)
            if not data:
                raise EOFError("connection closed before the reply")
            for event in self._framer.feed(data):
                if isinstance(event, Frame):
                    self._pending.append(event.payload)
                elif isinstance(event, Oversize):
                    raise FramingError("reply larger than max_size", code="MLLP_OVERSIZE")
                # Garbage around replies is harmless: ignore it
        return self._pending.pop(0)

    async def _drop(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        """Close the connection; the client may be used again (it reconnects)."""
        async with self._lock:
            await self._drop()

    async def __aenter__(self) -> MllpClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
