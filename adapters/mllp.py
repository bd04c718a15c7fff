"""MLLP destination: sends an HL7 v2 message (a ZAM business acknowledgement) and wants AA.

The sender's own ACK^Z01 must be positive (AA/CA). AR/CR means the sender refuses the
message for good (dead); AE/CE or no answer is retried by the dispatcher.
"""

from __future__ import annotations

from adapters.base import BaseDestination, RetrySettings
from adapters.mllp_client import MllpClient
from gateway.core.hl7v2.reader import Message
from gateway.errors import DestinationRejected, DestinationUnavailable
from gateway.ports import Clock, Payload, SendResult
from gateway.settings import DestinationSettings, Settings

__all__ = ["MllpDestination", "destination_from_settings", "parse_address"]


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``mllp://host:port``) → (host, port)."""
    address = address.removeprefix("mllp://").rstrip("/")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"MLLP address must be host:port, got {address!r}")
    return host, int(port)


class MllpDestination(BaseDestination):
    kind = "mllp"

    def __init__(self, name: str, address: str, *, retry: RetrySettings | None = None) -> None:
        super().__init__(name, retry=retry)
        self.host, self.port = parse_address(address)

    async def _send(self, payload: Payload) -> SendResult:
        if payload.hl7 is None:
            raise DestinationRejected("nothing to send over MLLP", code="MLLP_NO_PAYLOAD")
        async with MllpClient(self.host, self.port, timeout=self.retry.timeout) as client:
            reply = await client.send(payload.hl7.replace(b"\r\n", b"\r").replace(b"\n", b"\r"))
        text = reply.decode("utf-8", errors="replace")
        try:
            ack = Message.parse(text)
        except Exception as exc:
            raise DestinationUnavailable("unreadable acknowledgement", code="MLLP_BAD_ACK") from exc
        code = ack.get("MSA-1")
        if code in ("AA", "CA"):
            return SendResult(remote_id=ack.get("MSA-2"), request=payload.hl7.decode("utf-8", "replace"),
                              response=text, detail={"ack": code})
        if code in ("AR", "CR"):
            raise DestinationRejected(f"peer rejected the message ({code})", code=f"MLLP_{code}")
        raise DestinationUnavailable(f"peer answered {code or 'nothing usable'}", code=f"MLLP_{code or 'NOACK'}")

    async def _lookup(self, payload: Payload) -> bool:
        # MLLP has no query: a repeated ZAM is harmless (the receiver matches OBX-4).
        return False


def destination_from_settings(d: DestinationSettings, settings: Settings, clock: Clock) -> MllpDestination:
    """A ``kind = "mllp"`` table: ``url`` (or ``options.address``) is ``host:port``."""
    return MllpDestination(d.name, d.url or str(d.options.get("address", "")), retry=RetrySettings.from_settings(settings))
