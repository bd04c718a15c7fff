"""Dispatcher: workers claim due deliveries from the journal and hand them to destinations.

Exactly-once towards the DMP rests on three rules:
* a delivery is claimed in the journal (``in_flight`` with a lease) before anything is sent;
* every attempt after the first — and every attempt after a crash, whose outcome is
  unknown — first asks the destination whether the document is already there
  (ITI-18 by uniqueId, FHIR search by masterIdentifier), and records ``found-existing``
  instead of sending again;
* the outcome is committed before the next claim of that patient (per-patient order).

Between attempts the schedule is durable: exponential backoff with jitter and a cap,
``Retry-After`` honoured, bounded by attempts and age. Permanent errors are ``dead``.
The decision of *when* to retry is a pure function (``next_attempt``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import structlog
from structlog.contextvars import bind_contextvars, unbind_contextvars

from gateway.core.ack import build_zam
from gateway.core.charset import decode_message, encode_for
from gateway.core.hl7v2.reader import Message
from gateway.errors import DestinationError, DestinationRejected, DestinationUnavailable, JournalError
from gateway.journal.base import Journal
from gateway.journal.rows import AttemptRecord, Delivery, Exchange, NewDelivery, ZamFollowUp, iso
from gateway.model import Finding
from gateway.ports import Clock, Destination, Payload, SendResult
from gateway.settings import DispatcherSettings, Settings

__all__ = ["Dispatcher", "RetryDecision", "next_attempt"]

log = structlog.get_logger(__name__)



@dataclass(frozen=True)
class RetryDecision:
    dead: bool
    delay: float = 0.0


def next_attempt(
    attempts: int,
    age: timedelta,
    settings: DispatcherSettings,
    *,
    retry_after: float | None,
    rand: Callable[[], float],
) -> RetryDecision:
    """When to try again after a retryable failure (pure: ``rand`` gives the jitter)."""
    if attempts >= settings.max_attempts or age >= timedelta(hours=settings.max_age_hours):
        return RetryDecision(dead=True)
    delay = min(settings.backoff_cap, settings.backoff_base * (2 ** max(attempts - 1, 0)))
    delay = delay * (0.5 + rand() / 2)  # "equal jitter": never less than half the backoff
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.backoff_cap))
    return RetryDecision(dead=False, delay=delay)


class Dispatcher:
    """Claims due deliveries and runs them through their destination."""

    def __init__(
        self,
        journal: Journal,
        destinations: Mapping[str, Destination],
        settings: Settings,
        clock: Clock,
        *,
        zam_destination: Callable[[str, str], Destination | None] | None = None,
        on_outcome: Callable[[str, str, float], None] | None = None,
        rand: Callable[[], float] = random.random,
        mail_zam: Callable[[Journal, Delivery, str | None], Awaitable[ZamFollowUp | None]] | None = None,
    ) -> None:
        self.journal = journal
        self.destinations = dict(destinations)
        self.settings = settings
        self.cfg = settings.dispatcher
        self.clock = clock
        self.zam_destination = zam_destination
        self.on_outcome = on_outcome
        self.rand = rand
        self.mail_zam = mail_zam  # ZAM^Z02 N for a mail the SMTP server refused (gateway.delivery.mss_acks)
        # host and pid: an operator (or a test) sees which instance holds a claim or a lease
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{clock.new_id()[:6]}"
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._in_flight: dict[str, Delivery] = {}  # claimed by this worker: their leases get a heartbeat
        self._wake = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------
    async def recover(self) -> int:
        """At start-up: whatever was in flight when we stopped has an unknown outcome.

        Alone on the journal, every in-flight delivery was ours; sharing it, another
        instance may be sending right now, so only leases that ran out are taken back.
        """
        n = await self.journal.recover_in_flight(expired_only=self.journal.shared)
        if n:
            log.warning("dispatcher.recovered_in_flight", count=n)
        names = list(self.destinations)
        back = await self.journal.requeue_known_destinations(names, at=iso(self.clock.now()))
        if back:  # the configuration has the destination again: its parked work leaves
            log.info("dispatcher.destination_back", count=back)
        return int(n)

    def start(self) -> None:
        self.journal.on_work(self.wake)
        self._tasks = [asyncio.create_task(self._run(), name="dispatcher")]
        self._tasks.append(asyncio.create_task(self._sweep_loop(), name="dispatcher-sweeper"))
        self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="dispatcher-heartbeat"))

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=grace)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    # -- main loop -------------------------------------------------------------------------
    async def _run(self) -> None:
        sem = asyncio.Semaphore(max(1, self.cfg.workers))
        running: set[asyncio.Task[None]] = set()
        while not self._stopping.is_set():
            free = max(1, self.cfg.workers) - len(running)
            claimed: list[Delivery] = []
            if free > 0:
                try:
                    claimed = await self.journal.claim_due(self.worker_id, free, self.cfg.lease_seconds)
                except Exception as exc:  # journal trouble: back off, never crash the loop
                    log.error("dispatcher.claim_failed", error=type(exc).__name__)
            for delivery in claimed:
                self._in_flight[delivery.id] = delivery
                task = asyncio.create_task(self._guarded(sem, delivery))
                running.add(task)
                task.add_done_callback(running.discard)
            if not claimed:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.cfg.poll_interval):
                        await self._wake.wait()
            elif len(running) >= self.cfg.workers:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        if running:
            await asyncio.wait(running)

    async def _guarded(self, sem: asyncio.Semaphore, delivery: Delivery) -> None:
        async with sem:
            bind_contextvars(exchange_id=delivery.exchange_id, delivery_id=delivery.id)
            started = self.clock.now()
            try:
                await self._deliver(delivery)
            except Exception as exc:  # a bug in one delivery must not stop the others
                log.exception("dispatcher.delivery_crashed", error=type(exc).__name__)
                with contextlib.suppress(Exception):
                    await self._record(delivery, "failed", started, 0.0, outcome="crashed",
                                       error=f"internal error: {type(exc).__name__}",
                                       next_at=self.clock.now() + timedelta(seconds=self.cfg.backoff_cap))
            finally:
                self._in_flight.pop(delivery.id, None)
                unbind_contextvars("exchange_id", "delivery_id")
                self._wake.set()

    async def _deliver(self, delivery: Delivery) -> None:
        dest = self._destination_for(delivery)
        started = self.clock.now()
        t0 = time.perf_counter()
        if dest is None:
            if delivery.kind in ("document", "mail", "hl7"):
                # a configuration change removed it: keep the work, visibly held, for the
                # destination to come back or an operator to re-route it (never silently dead)
                await self.journal.park_for_unknown_destination(delivery, at=iso(started))
                log.warning("dispatcher.destination_unknown", destination=delivery.destination)
                return
            await self._finish(delivery, "dead", started, t0, error=f"unknown destination {delivery.destination!r}")
            return
        payload = await self._payload(delivery)
        if payload is None:
            await self._finish(delivery, "dead", started, t0, error="payload no longer in the journal")
            return
        try:
            if delivery.attempts > 1 and await dest.already_delivered(payload):
                await self._finish(delivery, "delivered", started, t0, outcome="found-existing",
                                   result=SendResult(detail={"already_delivered": True}))
                return
            result = await dest.send(payload)
        except DestinationRejected as exc:
            await self._finish(delivery, "dead", started, t0, error=f"{exc.code}: {exc.message}", exc=exc)
            return
        except DestinationUnavailable as exc:
            await self._retry_later(delivery, started, t0, exc)
            return
        except DestinationError as exc:
            await self._retry_later(delivery, started, t0, DestinationUnavailable(exc.message, code=exc.code))
            return
        outcome = "found-existing" if result.detail.get("already_delivered") else "delivered"
        await self._finish(delivery, "delivered", started, t0, outcome=outcome, result=result)

    def _destination_for(self, delivery: Delivery) -> Destination | None:
        name = str(delivery.destination)
        if name in self.destinations:
            return self.destinations[name]
        if delivery.kind in ("zam", "ack") and self.zam_destination is not None and name.startswith("zam:"):
            app, _, facility = name[4:].partition("|")
            return self.zam_destination(app, facility)
        return None

    async def _payload(self, delivery: Delivery) -> Payload | None:
        # zam / ack: HL7 messages back to the sender; hl7: a prepared message (LPS MDM to the DPI)
        exchange_id = str(delivery.exchange_id)
        if delivery.kind in ("zam", "ack", "hl7"):
            if delivery.payload is None:
                return None
            return Payload(exchange_id=exchange_id, delivery_id=delivery.id, kind="zam",
                           hl7=bytes(delivery.payload), attempt=delivery.attempts)
        doc = await self.journal.document(exchange_id, delivery.doc_index or 1)
        if doc is None or doc.cda is None:
            return None
        if delivery.kind == "mail":
            return Payload(
                exchange_id=exchange_id, delivery_id=delivery.id, kind="mail", document=bytes(doc.cda),
                xds=cast(Any, doc.xds), attempt=delivery.attempts,
                mail=bytes(delivery.payload) if delivery.payload is not None else None,
            )
        return Payload(
            exchange_id=exchange_id, delivery_id=delivery.id, kind="document",
            document=bytes(doc.cda), xds=cast(Any, doc.xds), fhir=doc.fhir, attempt=delivery.attempts,
        )

    async def _retry_later(
        self, delivery: Delivery, started: datetime, t0: float, exc: DestinationUnavailable
    ) -> None:
        created = datetime.fromisoformat(str(delivery.created_at))
        decision = next_attempt(
            delivery.attempts, started - created, self.cfg, retry_after=exc.retry_after, rand=self.rand
        )
        if decision.dead:
            await self._finish(delivery, "dead", started, t0, error=f"gave up after {delivery.attempts} attempts: "
                               f"{exc.code}: {exc.message}", exc=exc)
            return
        await self._finish(
            delivery, "failed", started, t0, error=f"{exc.code}: {exc.message}", exc=exc,
            next_at=started + timedelta(seconds=decision.delay),
        )

    async def _finish(
        self,
        delivery: Delivery,
        status: Literal["delivered", "failed", "dead"],
        started: datetime,
        t0: float,
        *,
        outcome: str | None = None,
        error: str | None = None,
        result: SendResult | None = None,
        exc: Exception | None = None,
        next_at: datetime | None = None,
    ) -> None:
        duration = time.perf_counter() - t0
        request = result.request if result else getattr(exc, "request", None)
        response = result.response if result else getattr(exc, "response", None)
        follow_ups = await self._follow_ups(delivery, status, error, _dmp_error(exc))
        recorded = await self._record(
            delivery, status, started, duration, outcome=outcome, error=error, next_at=next_at,
            request=request if isinstance(request, str) else None,
            response=response if isinstance(response, str) else None, follow_ups=follow_ups,
        )
        if recorded and self.on_outcome is not None:
            self.on_outcome(str(delivery.destination), outcome or status, duration)
        log.info(
            "dispatcher.attempt", destination=delivery.destination, attempt=delivery.attempts,
            outcome=outcome or status, error_code=(error or "").split(":")[0] or None, ms=round(duration * 1000, 1),
        )

    async def _record(
        self, delivery: Delivery, status: Literal["delivered", "failed", "dead"], started: datetime,
        duration: float, *, outcome: str | None, error: str | None, next_at: datetime | None,
        request: str | None = None, response: str | None = None, follow_ups: tuple[ZamFollowUp, ...] = (),
    ) -> bool:
        """Journal the attempt; False when it was fenced off (another instance owns the delivery now)."""
        record = AttemptRecord(
            delivery_id=delivery.id, worker=self.worker_id, attempt=delivery.attempts, status=status,
            outcome=outcome or status, started_at=iso(started), finished_at=iso(self.clock.now()),
            next_attempt_at=iso(next_at) if next_at else None, error=error, request=request, response=response,
            duration=duration, audit=delivery.kind == "document", follow_ups=follow_ups,
        )
        try:
            await self.journal.record_attempt(record)
        except JournalError as exc:
            if exc.code != "JOURNAL_STALE_CLAIM":
                raise
            log.warning("dispatcher.attempt_fenced", attempt=delivery.attempts)
            return False
        return True

    # -- business acknowledgements ----------------------------------------------------------
    def _is_dmp(self, destination: str | None) -> bool:
        dest = self.destinations.get(str(destination))
        return dest is not None and getattr(dest, "kind", None) == "dmp-xds"

    async def _follow_ups(
        self, delivery: Delivery, status: str, error: str | None, dmp_error: tuple[str, str] | None
    ) -> tuple[ZamFollowUp, ...]:
        """The ZAM this outcome may call for, built now; the journal decides in the outcome's
        transaction whether it still applies (one ZAM^Z01 per exchange, positive after the last
        DMP delivery — with several instances, two deliveries of one exchange may finish together)."""
        if delivery.kind == "mail" and status == "dead" and self.mail_zam is not None:
            z02 = await self.mail_zam(self.journal, delivery, error)
            return (z02,) if z02 is not None else ()
        # Z01 is the DMP receipt (volet, ack-metier-zam page): only the outcome of a DMP
        # destination decides it, never an MHD or file delivery
        if delivery.kind != "document" or status not in ("delivered", "dead") or not self._is_dmp(delivery.destination):
            return ()
        ex = await self.journal.get_exchange(str(delivery.exchange_id))
        if ex is None or not ex.ack_reception:
            return ()
        zam = await self._zam_delivery(ex, status == "delivered", error, dmp_error)
        if zam is None:
            return ()
        dmp = frozenset(n for n in self.destinations if self._is_dmp(n))
        return (ZamFollowUp(zam, "z01", status == "delivered", dmp),)

    async def _zam_delivery(
        self, ex: Exchange, positive: bool, error: str | None, dmp_error: tuple[str, str] | None = None
    ) -> NewDelivery | None:
        creator = find_creator(self.settings, ex.sender_app or "", ex.sender_facility or "")
        if creator is None:
            return None
        bodies = await self.journal.exchange_bodies(ex.id)
        if bodies is None or bodies.raw is None:
            return None
        try:
            decoded = decode_message(bytes(bodies.raw), self.settings.pipeline.default_charset)
            original = Message.parse(decoded.text, codec=decoded.charset)
        except Exception:
            return None
        finding = None
        if not positive:
            code = (error or "DELIVERY_FAILED").split(":")[0].strip() or "DELIVERY_FAILED"
            finding = Finding(code, _label(error or "delivery failed", 200), None)
        control_id = "ZAM" + self.clock.new_id().replace("-", "")[:17]
        now = self.clock.now()
        text = build_zam(original, positive=positive, now=now, control_id=control_id, error=finding,
                         dmp_error=dmp_error)
        at = iso(now)
        return NewDelivery(
            id=self.clock.new_id(), exchange_id=ex.id, destination=f"zam:{creator.application}|{creator.facility}",
            kind="zam", status="queued", next_attempt_at=at, created_at=at, patient_key=f"zam:{ex.id}",
            unique_id=control_id, payload=encode_for(decoded.declared, text, self.settings.pipeline.default_charset),
        )

    # -- periodic duties: one instance at a time -------------------------------------------
    async def _sweep_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                # the lease outlives two sweeps: a live holder keeps it, a dead one loses it in 15 s
                if await self.journal.hold_lease("sweeper", self.worker_id, 15.0):
                    await self.expire_holds()
                    await self.journal.recover_in_flight(expired_only=True)
            except Exception as exc:
                log.error("dispatcher.sweep_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._stopping.wait()

    async def _heartbeat_loop(self) -> None:
        """Keep the leases of long sends alive: a slow DMP answer must not look like a dead instance."""
        every = max(self.cfg.lease_seconds / 3, 0.05)
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._stopping.wait()
            if self._in_flight:
                try:
                    await self.journal.extend_leases(self.worker_id, list(self._in_flight), self.cfg.lease_seconds)
                except Exception as exc:
                    log.error("dispatcher.heartbeat_failed", error=type(exc).__name__)

    async def expire_holds(self) -> list[str]:
        """Held past ``identity.hold_max_hours``: dead with the reason, and a negative ZAM."""
        now = self.clock.now()
        limit = iso(now - timedelta(hours=self.settings.identity.hold_max_hours))
        held = [h for h in await self.journal.held_exchanges() if (h.held_since or "") < limit]
        expired: list[str] = []
        for h in held:
            zam = await self._zam_for_hold(h)
            reason = f"held longer than {self.settings.identity.hold_max_hours:g} h: {h.reason_code}"
            if await self.journal.expire_hold(h.id, reason=reason, code=h.reason_code, at=iso(now), zam=zam):
                expired.append(h.id)
        if expired:
            log.warning("dispatcher.holds_expired", count=len(expired))
        return expired

    async def _zam_for_hold(self, h: Exchange) -> NewDelivery | None:
        ex = await self.journal.get_exchange(h.id)
        if ex is None or not ex.ack_reception or ex.status != "held":
            return None
        rows = await self.journal.deliveries_for(h.id)
        if any(d.kind == "zam" for d in rows):
            return None
        if not any(d.kind == "document" and self._is_dmp(d.destination) for d in rows):
            return None  # Z01 answers for the DMP only
        return await self._zam_delivery(ex, False, f"{h.reason_code}: identity not qualified in time")


#: Codes our own adapters raise (HTTP_503, SOAP_FAULT, XDS_PARENT_UNKNOWN, DMP_DELETE_UNSUPPORTED …):
#: upper-case words joined by "_". Registry errors reported by the DMP are ebXML codes
#: (XDSRegistryError, XDSDocumentUniqueIdError …) or DMP codes, never of that form.
_LOCAL_CODE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")


def _dmp_error(exc: Exception | None) -> tuple[str, str] | None:
    """``(code, label)`` for ZAM ERR-5 ``DMP_ERROR_CODE`` when the DMP itself reported the error.

    ERR-5 with coding system DMP_ERROR_CODE carries the codes of the DMP (annex A7-1 of
    the « Service DMP intégré aux LPS » guide, volet ack-metier-zam page); a timeout or
    one of our own refusals is not a DMP code and goes with coding system ``L`` instead.
    """
    code = getattr(exc, "code", None)
    if not code or _LOCAL_CODE.fullmatch(code):
        return None
    return code, _label(getattr(exc, "message", "") or code, 80)


def _label(text: str, limit: int) -> str:
    """``text`` shortened to ``limit`` characters at a word boundary, with an ellipsis when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "…"


def find_creator(settings: Settings, app: str, facility: str) -> Any:
    for c in settings.creators:
        if c.application == app and (not c.facility or c.facility == facility):
            return c
    return None
