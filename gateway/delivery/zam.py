"""ZAM policy: when an outcome owes the sender a business acknowledgement, and to whom.

* **To whom.** A business acknowledgement goes to the ``[[creator]]`` matched on the
  original MSH-3 / MSH-4, as a durable ``zam`` delivery to ``zam:<application>|<facility>``;
  without a matching creator nothing is owed that could be sent.
* **When (ZAM^Z01, the DMP receipt).** Asked for by ACK_RECEPTION, decided by the outcome
  of a DMP destination only (volet, ack-metier-zam page: never an MHD or file delivery):
  positive once delivered, negative when dead or when the identity gate held the document
  past ``identity.hold_max_hours``. The journal decides in the outcome's transaction
  whether it still applies (one per exchange, positive after the last DMP delivery).
* **ZAM^Z02 for a refused mail** comes from :mod:`gateway.delivery.mss_acks`, through the
  ``mail_zam`` hook.

Every ZAM answers the original message as stored: the raw HL7 v2 is decoded and parsed
again here, and the ZAM is written in the charset it declared.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from gateway.core.ack import build_zam
from gateway.core.charset import Decoded, decode_message, encode_for
from gateway.core.hl7v2.reader import Message
from gateway.journal.base import Journal
from gateway.journal.rows import Delivery, Exchange, NewDelivery, ZamFollowUp, iso
from gateway.model import Finding
from gateway.ports import Clock, Destination
from gateway.settings import CreatorSettings, Settings

__all__ = ["MailZam", "Original", "ZamPolicy", "creator_destination", "dmp_error", "find_creator", "label", "original_of",
           "zam_row"]

MailZam = Callable[[Journal, Delivery, str | None], Awaitable[ZamFollowUp | None]]


def find_creator(settings: Settings, app: str, facility: str) -> CreatorSettings | None:
    """The ``[[creator]]`` that answers for MSH-3 ``app`` / MSH-4 ``facility`` (an empty facility matches any)."""
    for c in settings.creators:
        if c.application == app and (not c.facility or c.facility == facility):
            return c
    return None


def creator_destination(creator: CreatorSettings) -> str:
    """The destination name of a creator's MLLP return address (resolved by the dispatcher)."""
    return f"zam:{creator.application}|{creator.facility}"


@dataclass(frozen=True)
class Original:
    """The stored message a business acknowledgement answers, and who gets the answer."""

    creator: CreatorSettings
    decoded: Decoded
    message: Message


async def original_of(journal: Journal, settings: Settings, ex: Exchange) -> Original | None:
    """The exchange's raw HL7 v2 read again, or None (no creator, raw pruned, unreadable)."""
    creator = find_creator(settings, ex.sender_app or "", ex.sender_facility or "")
    if creator is None:
        return None
    bodies = await journal.exchange_bodies(ex.id)
    if bodies is None or bodies.raw is None:
        return None
    try:
        decoded = decode_message(bytes(bodies.raw), settings.pipeline.default_charset)
        message = Message.parse(decoded.text, codec=decoded.charset)
    except Exception:
        return None
    return Original(creator, decoded, message)


def zam_row(ex: Exchange, original: Original, text: str, *, unique_id: str, at: str, delivery_id: str,
            default_charset: str) -> NewDelivery:
    """The durable delivery carrying ZAM ``text`` back to the creator, in the original's charset."""
    return NewDelivery(
        id=delivery_id, exchange_id=ex.id, destination=creator_destination(original.creator),
        kind="zam", status="queued", next_attempt_at=at, created_at=at, patient_key=f"zam:{ex.id}",
        unique_id=unique_id, payload=encode_for(original.decoded.declared, text, default_charset),
    )


class ZamPolicy:
    """Decides the business acknowledgements an outcome calls for and builds them."""

    def __init__(self, journal: Journal, settings: Settings, clock: Clock, destinations: Mapping[str, Destination],
                 *, mail_zam: MailZam | None = None) -> None:
        self.journal = journal
        self.settings = settings
        self.clock = clock
        self.destinations = destinations
        self.mail_zam = mail_zam  # ZAM^Z02 N for a mail the SMTP server refused (gateway.delivery.mss_acks)

    def is_dmp(self, destination: str | None) -> bool:
        dest = self.destinations.get(str(destination))
        return dest is not None and getattr(dest, "kind", None) == "dmp-xds"

    async def follow_ups(
        self, delivery: Delivery, status: str, error: str | None, exc: Exception | None
    ) -> tuple[ZamFollowUp, ...]:
        """The ZAM this outcome may call for, built now; the journal decides in the outcome's
        transaction whether it still applies (one ZAM^Z01 per exchange, positive after the last
        DMP delivery — with several instances, two deliveries of one exchange may finish together)."""
        if delivery.kind == "mail" and status == "dead" and self.mail_zam is not None:
            z02 = await self.mail_zam(self.journal, delivery, error)
            return (z02,) if z02 is not None else ()
        # Z01 is the DMP receipt (volet, ack-metier-zam page): only the outcome of a DMP
        # destination decides it, never an MHD or file delivery
        if delivery.kind != "document" or status not in ("delivered", "dead") or not self.is_dmp(delivery.destination):
            return ()
        ex = await self.journal.get_exchange(str(delivery.exchange_id))
        if ex is None or not ex.ack_reception:
            return ()
        zam = await self._z01(ex, status == "delivered", error, dmp_error(exc))
        if zam is None:
            return ()
        dmp = frozenset(n for n in self.destinations if self.is_dmp(n))
        return (ZamFollowUp(zam, "z01", status == "delivered", dmp),)

    async def for_expired_hold(self, held: Exchange) -> NewDelivery | None:
        """The negative ZAM^Z01 owed for a DMP-bound exchange the identity gate held too long."""
        ex = await self.journal.get_exchange(held.id)
        if ex is None or not ex.ack_reception or ex.status != "held":
            return None
        rows = await self.journal.deliveries_for(held.id)
        if any(d.kind == "zam" for d in rows):
            return None
        if not any(d.kind == "document" and self.is_dmp(d.destination) for d in rows):
            return None  # Z01 answers for the DMP only
        return await self._z01(ex, False, f"{held.reason_code}: identity not qualified in time")

    async def _z01(
        self, ex: Exchange, positive: bool, error: str | None, dmp_err: tuple[str, str] | None = None
    ) -> NewDelivery | None:
        original = await original_of(self.journal, self.settings, ex)
        if original is None:
            return None
        finding = None
        if not positive:
            code = (error or "DELIVERY_FAILED").split(":")[0].strip() or "DELIVERY_FAILED"
            finding = Finding(code, label(error or "delivery failed", 200), None)
        control_id = "ZAM" + self.clock.new_id().replace("-", "")[:17]
        now = self.clock.now()
        text = build_zam(original.message, positive=positive, now=now, control_id=control_id, error=finding,
                         dmp_error=dmp_err)
        return zam_row(ex, original, text, unique_id=control_id, at=iso(now), delivery_id=self.clock.new_id(),
                       default_charset=self.settings.pipeline.default_charset)


#: Codes our own adapters raise (HTTP_503, SOAP_FAULT, XDS_PARENT_UNKNOWN, DMP_DELETE_UNSUPPORTED …):
#: upper-case words joined by "_". Registry errors reported by the DMP are ebXML codes
#: (XDSRegistryError, XDSDocumentUniqueIdError …) or DMP codes, never of that form.
_LOCAL_CODE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")


def dmp_error(exc: Exception | None) -> tuple[str, str] | None:
    """``(code, label)`` for ZAM ERR-5 ``DMP_ERROR_CODE`` when the DMP itself reported the error.

    ERR-5 with coding system DMP_ERROR_CODE carries the codes of the DMP (annex A7-1 of
    the « Service DMP intégré aux LPS » guide, volet ack-metier-zam page); a timeout or
    one of our own refusals is not a DMP code and goes with coding system ``L`` instead.
    """
    code = getattr(exc, "code", None)
    if not code or _LOCAL_CODE.fullmatch(code):
        return None
    return code, label(getattr(exc, "message", "") or code, 80)


def label(text: str, limit: int) -> str:
    """``text`` shortened to ``limit`` characters at a word boundary, with an ellipsis when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "…"
