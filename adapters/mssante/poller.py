"""Background reader of the application mailbox: DSN/MDN → ZAM^Z02/Z03, our own copies, inbound mail.

Every ``poll_seconds`` it opens an IMAP session (TLS), takes the UNSEEN messages, and for
each one commits what it means to the journal **before** flagging it ``\\Seen``; a crash in
between makes it read the message again, which the ZAM de-duplication absorbs
(``gateway.delivery.mss_acks``). Kinds of message:

* a DSN (RFC 3464) — matched by ``Original-Envelope-Id`` (the delivery id we gave as
  ENVID) or the returned Message-ID; a final per-recipient line (``delivered`` / ``failed``)
  becomes ZAM^Z02 Y / N (ERR-5 = SMTP code), ``delayed`` is only journaled;
* an MDN (RFC 8098) — matched by ``Original-Message-ID``; ``displayed`` becomes ZAM^Z03 Y,
  ``deleted`` / ``denied`` ZAM^Z03 N (906, other);
* our own copy of a message we sent (``Message-ID`` of one of our deliveries): the proof the
  lookup relies on, left in place and flagged seen;
* anything else is inbound mail for the DPI, handed to ``on_inbound`` (LPS volet).
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
from collections.abc import Awaitable, Callable

import structlog

from adapters.mssante.config import MssanteConfig
from adapters.mssante.mailbox import open_mailbox
from adapters.mssante.mime import delivery_of_message_id
from gateway.core.mss.reports import Report, parse_report, smtp_code
from gateway.core.mss.zam import READ_ERROR_CODES, MssAck
from gateway.delivery.mss_acks import MssAcks
from gateway.journal.base import Journal
from gateway.journal.rows import Delivery, NewEvent, ZamFollowUp, iso
from gateway.ports import Clock

__all__ = ["ReportPoller"]

log = structlog.get_logger(__name__)

Inbound = Callable[[bytes, str], Awaitable[bool]]


class ReportPoller:
    """Polls one application mailbox; see the module docstring."""

    def __init__(
        self, config: MssanteConfig, journal: Journal, acks: MssAcks, clock: Clock, *,
        on_inbound: Inbound | None = None, wake: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.acks = acks
        self.clock = clock
        self.on_inbound = on_inbound
        self.wake = wake
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mssante-poller")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.poll_once()
            except Exception as exc:  # mailbox trouble: log and try again next round
                log.warning("mssante.poll_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.poll_seconds):
                    await self._stopping.wait()

    async def poll_once(self) -> int:
        """One round; returns how many messages were handled."""
        messages = await asyncio.to_thread(self._fetch_unseen)
        handled: list[bytes] = []
        for uid, raw in messages:
            if await self._handle(raw, uid.decode()):
                handled.append(uid)
        if handled:
            await asyncio.to_thread(self._mark_seen, handled)
            if self.wake is not None:
                self.wake()
        return len(handled)

    def _fetch_unseen(self) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        with open_mailbox(self.config) as box:
            box.select(self.config.imap_folder)
            for uid in box.unseen():
                raw = box.fetch(uid)
                if raw is not None:
                    out.append((uid, raw))
        return out

    def _mark_seen(self, uids: list[bytes]) -> None:
        with open_mailbox(self.config) as box:
            box.select(self.config.imap_folder)
            for uid in uids:
                box.mark_seen(uid)

    async def _handle(self, raw: bytes, uid: str) -> bool:
        report = parse_report(raw)
        if report is not None:
            await self._apply_report(report)
            return True
        head = email.message_from_bytes(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", policy=email.policy.compat32)
        own = delivery_of_message_id(head.get("Message-ID"), self.config.mailbox)
        if own is not None and await self.journal.get_delivery(own) is not None:
            return True  # our own copy: the lookup's proof, nothing to do
        if self.on_inbound is not None:
            return await self.on_inbound(raw, uid)
        return False

    # -- reports → journal (one transaction) -------------------------------------------------
    async def _mail_delivery(self, report: Report) -> Delivery | None:
        for candidate in (report.envelope_id, delivery_of_message_id(report.original_message_id, self.config.mailbox)):
            if candidate:
                row = await self.journal.get_delivery(candidate)
                if row is not None and row.kind == "mail":
                    return row
        return None

    async def _apply_report(self, report: Report) -> None:
        at = iso(self.clock.now())
        delivery = await self._mail_delivery(report)
        if delivery is None:
            log.warning("mssante.report_unmatched", kind=report.kind)
            return
        events: list[NewEvent] = []
        zams: list[ZamFollowUp] = []
        for line in report.recipients:
            events.append(NewEvent(f"mss:{report.kind}", {"delivery": delivery.id, "action": line.action,
                                                          "status": line.status[:40]}))
            if report.kind == "dsn":
                if not line.final:
                    continue
                code = smtp_code(line.status, line.diagnostic)
                ack = MssAck(line.address, line.positive, error_code="" if line.positive else code.partition(" ")[0],
                             error_label="" if line.positive else (line.diagnostic or line.status))
                trigger = "Z02"
            else:
                if line.action not in ("displayed", "deleted", "denied", "failed"):
                    continue
                ack = MssAck(line.address, line.positive, error_code="" if line.positive else "906",
                             error_label="" if line.positive else f"{READ_ERROR_CODES['906']}: {line.action}")
                trigger = "Z03"
            zam = await self.acks.zam(self.journal, delivery, trigger, ack, event={"delivery": delivery.id})
            if zam is not None:
                zams.append(zam)
        # a report read twice (crash before \Seen) queues nothing twice: one Z02 / Z03 per mail
        await self.journal.record_follow_up(str(delivery.exchange_id), at=at, events=events, zams=zams)
        log.info("mssante.report", kind=report.kind, delivery_id=delivery["id"],
                 actions=[r.action for r in report.recipients])
