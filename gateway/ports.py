"""The few ports the gateway's infrastructure implements (typing.Protocol).

* ``Clock``        — time and ids are injected, never read from globals in core code;
* ``Destination``  — an outbound protocol (DMP ITI-41, MHD ITI-65, file, MLLP);
* ``Journal``      — see ``gateway.journal.base`` (large enough to live in its own module).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

from gateway.model import XdsMetadata

__all__ = ["Clock", "SystemClock", "Payload", "SendResult", "Destination"]


class Clock(Protocol):
    def now(self) -> datetime: ...
    def new_id(self) -> str: ...


class _RandomBytes:
    """Random bytes from the OS, fetched 4 KiB at a time.

    ``os.urandom`` lets go of the GIL around its system call, and taking it back can mean
    waiting for the journal writer thread: with a call per id, that wait was a tenth of the
    event loop's time under ADT load. One call now serves 256 ids. After a fork the child
    starts with an empty buffer, never a copy of the parent's.
    """

    _SIZE = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._buf, self._at = b"", 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._buf):
                self._buf, self._at = os.urandom(self._SIZE), 0
            out = self._buf[self._at:self._at + n]
            self._at += n
            return out


_RANDOM = _RandomBytes()


class SystemClock:
    """The real clock: aware UTC datetimes and uuid4 ids."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def new_id(self) -> str:
        # a version-4 UUID as uuid.uuid4() makes it (RFC 9562 §5.4), without building a UUID
        # object, from the shared buffer of OS randomness
        b = bytearray(_RANDOM.take(16))
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        h = b.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


PayloadKind = Literal["document", "zam", "mail"]


@dataclass(frozen=True)
class Payload:
    """What a destination is asked to deliver. Built by the dispatcher from the journal."""

    exchange_id: str
    delivery_id: str
    kind: PayloadKind = "document"
    document: bytes | None = None  # the CDA bytes exactly as received
    xds: XdsMetadata | None = None  # DMP metadata (see gateway.model)
    fhir: dict[str, Any] | None = None  # PDSm ITI-65 transaction Bundle (R4 JSON)
    hl7: bytes | None = None  # an encoded HL7 v2 message (ZAM) for mllp destinations
    mail: bytes | None = None  # kind "mail": the MSSanté mail order (gateway.core.mss.orders.MailOrder JSON)
    attempt: int = 1


@dataclass
class SendResult:
    """The outcome of one successful delivery, with what went over the wire for the journal."""

    remote_id: str | None = None
    request: str | None = None  # outbound request body (text), kept for operators
    response: str | None = None  # response body (text)
    status: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Destination(Protocol):
    """An outbound protocol. Raise ``DestinationUnavailable`` (retry) or ``DestinationRejected`` (dead)."""

    name: str
    kind: str

    async def send(self, payload: Payload) -> SendResult:
        """Deliver once (quick transient retries inside are allowed); raise on failure."""
        ...

    async def already_delivered(self, payload: Payload) -> bool:
        """Ask the destination whether this payload is already there (outcome unknown after a crash)."""
        ...

    async def close(self) -> None: ...
