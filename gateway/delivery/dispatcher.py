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
The decision of *when* to retry is a pure function (``gateway.core.retry.next_attempt``);
which business acknowledgement an outcome owes is :mod:`gateway.delivery.zam`; held
exchanges that wait too long are :mod:`gateway.delivery.holds`. This module claims, sends
and records the attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import structlog
from structlog.contextvars import bound_contextvars

from gateway.core.retry import next_attempt
from gateway.delivery.holds import Sweeper
from gateway.delivery.zam import MailZam, ZamPolicy
from gateway.errors import DestinationError, DestinationRejected, DestinationUnavailable, JournalError
from gateway.journal.base import Journal
from gateway.journal.rows import AttemptRecord, Delivery, ZamFollowUp, iso
from gateway.ports import Clock, Destination, Payload, SendResult
from gateway.settings import Settings

__all__ = ["Dispatcher"]

log = structlog.get_logger(__name__)


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
        mail_zam: MailZam | None = None,
    ) -> None:
        self.journal = journal
        self.destinations = dict(destinations)
        self.settings = settings
        self.cfg = settings.dispatcher
        self.clock = clock
        self.zam_destination = zam_destination
        self.on_outcome = on_outcome
        self.rand = rand
        self.zams = ZamPolicy(journal, settings, clock, self.destinations, mail_zam=mail_zam)
        self.sweeper = Sweeper(journal, settings, clock, self.zams)
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
        self._tasks.append(asyncio.create_task(self.sweeper.run(self._stopping, self.worker_id),
                                              name="dispatcher-sweeper"))
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
            # every event of this delivery names it: the log context carries both ids
            with bound_contextvars(exchange_id=delivery.exchange_id, delivery_id=delivery.id):
                await self._attempt(delivery)

    async def _attempt(self, delivery: Delivery) -> None:
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
        follow_ups = await self.zams.follow_ups(delivery, status, error, exc)
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

    # -- lease heartbeat ---------------------------------------------------------------------
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
        return await self.sweeper.expire_holds()
