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
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from gateway.core.ack import build_zam
from gateway.core.charset import decode_message, encode_for
from gateway.core.hl7v2.reader import Message
from gateway.errors import DestinationError, DestinationRejected, DestinationUnavailable
from gateway.journal.tx import Tx, iso
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
        journal: Any,
        destinations: Mapping[str, Destination],
        settings: Settings,
        clock: Clock,
        *,
        zam_destination: Callable[[str, str], Destination | None] | None = None,
        on_outcome: Callable[[str, str, float], None] | None = None,
        rand: Callable[[], float] = random.random,
        mail_zam: Callable[[Tx, dict[str, Any], str | None], dict[str, Any] | None] | None = None,
    ) -> None:
        self.journal = journal
        self.destinations = dict(destinations)
        self.settings = settings
        self.cfg = settings.dispatcher
        self.clock = clock
        self.zam_destination = zam_destination
        self.on_outcome = on_outcome
        self.rand = rand
        self.mail_zam = mail_zam  # ZAM^Z02 N for a mail the SMTP server refused (gateway.mss_acks)
        self.worker_id = f"dispatcher-{clock.new_id()[:8]}"
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------
    async def recover(self) -> int:
        """At start-up: whatever was in flight when we stopped has an unknown outcome."""
        now = iso(self.clock.now())
        n = await self.journal.write(lambda tx: tx.recover_in_flight(now=now))
        if n:
            log.warning("dispatcher.recovered_in_flight", count=n)
        names = list(self.destinations)
        back = await self.journal.write(lambda tx: tx.requeue_known_destinations(names, at=now))
        if back:  # the configuration has the destination again: its parked work leaves
            log.info("dispatcher.destination_back", count=back)
        return int(n)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name="dispatcher")]
        self._tasks.append(asyncio.create_task(self._sweep_loop(), name="dispatcher-sweeper"))

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
            claimed: list[dict[str, Any]] = []
            if free > 0:
                now = self.clock.now()
                lease = iso(now + timedelta(seconds=self.cfg.lease_seconds))
                def claim(tx: Tx, now: datetime = now, lease: str = lease, free: int = free) -> list[dict[str, Any]]:
                    return tx.claim_due(now=iso(now), worker=self.worker_id, lease_until=lease, limit=free)

                try:
                    claimed = await self.journal.write(claim)
                except Exception as exc:  # journal trouble: back off, never crash the loop
                    log.error("dispatcher.claim_failed", error=type(exc).__name__)
            for delivery in claimed:
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

    async def _guarded(self, sem: asyncio.Semaphore, delivery: dict[str, Any]) -> None:
        async with sem:
            try:
                await self._deliver(delivery)
            except Exception as exc:  # a bug in one delivery must not stop the others
                log.exception("dispatcher.delivery_crashed", delivery_id=delivery["id"], error=type(exc).__name__)
                now = self.clock.now()
                error = f"internal error: {type(exc).__name__}"
                await self.journal.write(
                    lambda tx: tx.update_delivery(
                        delivery["id"], iso(now), status="failed",
                        next_attempt_at=iso(now + timedelta(seconds=self.cfg.backoff_cap)),
                        last_error=error,
                    )
                )
            finally:
                self._wake.set()

    async def _deliver(self, delivery: dict[str, Any]) -> None:
        dest = self._destination_for(delivery)
        started = self.clock.now()
        t0 = time.perf_counter()
        if dest is None:
            if delivery["kind"] in ("document", "mail", "hl7"):
                # a configuration change removed it: keep the work, visibly held, for the
                # destination to come back or an operator to re-route it (never silently dead)
                at = iso(started)
                await self.journal.write(lambda tx: tx.park_for_unknown_destination(delivery, at=at))
                log.warning("dispatcher.destination_unknown", exchange_id=delivery["exchange_id"],
                            delivery_id=delivery["id"], destination=delivery["destination"])
                return
            await self._finish(delivery, "dead", started, t0, error=f"unknown destination {delivery['destination']!r}")
            return
        payload = await self.journal.read(lambda tx: self._payload(tx, delivery))
        if payload is None:
            await self._finish(delivery, "dead", started, t0, error="payload no longer in the journal")
            return
        try:
            if delivery["attempts"] > 1 and await dest.already_delivered(payload):
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

    def _destination_for(self, delivery: dict[str, Any]) -> Destination | None:
        name = delivery["destination"]
        if name in self.destinations:
            return self.destinations[name]
        if delivery["kind"] in ("zam", "ack") and self.zam_destination is not None and name.startswith("zam:"):
            app, _, facility = name[4:].partition("|")
            return self.zam_destination(app, facility)
        return None

    @staticmethod
    def _payload(tx: Tx, delivery: dict[str, Any]) -> Payload | None:
        # zam / ack: HL7 messages back to the sender; hl7: a prepared message (LPS MDM to the DPI)
        if delivery["kind"] in ("zam", "ack", "hl7"):
            if delivery.get("payload") is None:
                return None
            return Payload(
                exchange_id=delivery["exchange_id"], delivery_id=delivery["id"], kind="zam",
                hl7=bytes(delivery["payload"]), attempt=delivery["attempts"],
            )
        doc = tx.get_document(delivery["exchange_id"], delivery.get("doc_index") or 1)
        if doc is None or doc.get("cda") is None:
            return None
        if delivery["kind"] == "mail":
            return Payload(
                exchange_id=delivery["exchange_id"], delivery_id=delivery["id"], kind="mail",
                document=bytes(doc["cda"]), xds=doc["xds"], attempt=delivery["attempts"],
                mail=bytes(delivery["payload"]) if delivery.get("payload") is not None else None,
            )
        return Payload(
            exchange_id=delivery["exchange_id"], delivery_id=delivery["id"], kind="document",
            document=bytes(doc["cda"]), xds=doc["xds"], fhir=doc["fhir"], attempt=delivery["attempts"],
        )

    async def _retry_later(
        self, delivery: dict[str, Any], started: datetime, t0: float, exc: DestinationUnavailable
    ) -> None:
        created = datetime.fromisoformat(delivery["created_at"])
        decision = next_attempt(
            delivery["attempts"], started - created, self.cfg, retry_after=exc.retry_after, rand=self.rand
        )
        if decision.dead:
            await self._finish(delivery, "dead", started, t0, error=f"gave up after {delivery['attempts']} attempts: "
                               f"{exc.code}: {exc.message}", exc=exc)
            return
        await self._finish(
            delivery, "failed", started, t0, error=f"{exc.code}: {exc.message}", exc=exc,
            next_at=started + timedelta(seconds=decision.delay),
        )

    async def _finish(
        self,
        delivery: dict[str, Any],
        status: str,
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
        finished = self.clock.now()
        request = result.request if result else getattr(exc, "request", None)
        response = result.response if result else getattr(exc, "response", None)
        dmp_error = _dmp_error(exc)
        mail_zam_row = None
        if delivery["kind"] == "mail" and status == "dead" and self.mail_zam is not None:
            mail_zam = self.mail_zam
            mail_zam_row = await self.journal.read(lambda tx: mail_zam(tx, delivery, error))

        def op(tx: Tx, status: str = status) -> None:
            at = iso(finished)
            if status == "failed" and delivery["kind"] in ("document", "mail"):
                ex = tx.get_exchange(delivery["exchange_id"])
                if ex is not None and ex["status"] == "held":
                    status = "waiting"  # put on hold (A47) while this attempt was in flight
            tx.insert_attempt(
                dict(
                    delivery_id=delivery["id"], number=delivery["attempts"], started_at=iso(started),
                    finished_at=at, outcome=outcome or status, error=error,
                    request=request if isinstance(request, str) else None,
                    response=response if isinstance(response, str) else None, duration=duration,
                )
            )
            tx.update_delivery(
                delivery["id"], at, status=status, last_error=error, claimed_by=None, lease_until=None,
                next_attempt_at=iso(next_at) if next_at else at,
            )
            detail: dict[str, Any] = {
                "delivery": delivery["id"], "destination": delivery["destination"], "attempt": delivery["attempts"],
                "outcome": outcome or status,
            }
            if error:
                detail["error"] = error
            tx.add_event(delivery["exchange_id"], at, f"attempt:{delivery['kind']}", detail)
            if delivery["kind"] == "document":
                tx.append_audit(
                    at=at, actor="dispatcher", action="submission", target=delivery["exchange_id"],
                    detail={"delivery": delivery["id"], "destination": delivery["destination"],
                            "unique_id": delivery.get("unique_id"), "outcome": outcome or status},
                )
                self._update_exchange_status(tx, delivery["exchange_id"], at)
                if status in ("delivered", "dead"):
                    # Decided in the transaction that records the outcome: the journal runs
                    # one writer, so two destinations finishing together see each other's
                    # outcome and exactly one ZAM comes out of the pair.
                    zam = self._zam_row(tx, delivery, status == "delivered", error, dmp_error)
                    if zam is not None:
                        tx.insert_delivery(zam | {"created_at": at, "next_attempt_at": at})
                        tx.add_event(delivery["exchange_id"], at, "zam:queued", {"positive": status == "delivered"})
            elif delivery["kind"] == "hl7":
                self._update_exchange_status(tx, delivery["exchange_id"], at)
            elif delivery["kind"] == "mail":
                self._update_exchange_status(tx, delivery["exchange_id"], at)
                if mail_zam_row is not None:
                    tx.insert_delivery(mail_zam_row | {"created_at": at, "next_attempt_at": at})
                    tx.add_event(delivery["exchange_id"], at, "zam:queued", {"positive": False, "trigger": "Z02"})
            elif status == "delivered":
                tx.add_event(delivery["exchange_id"], at, f"{delivery['kind']}:sent", {"delivery": delivery["id"]})

        await self.journal.write(op)
        if self.on_outcome is not None:
            self.on_outcome(delivery["destination"], outcome or status, duration)
        log.info(
            "dispatcher.attempt", exchange_id=delivery["exchange_id"], delivery_id=delivery["id"],
            destination=delivery["destination"], attempt=delivery["attempts"], outcome=outcome or status,
            error_code=(error or "").split(":")[0] or None, ms=round(duration * 1000, 1),
        )

    @staticmethod
    def _update_exchange_status(tx: Tx, exchange_id: str, at: str) -> None:
        rows = [d for d in tx.deliveries_for(exchange_id) if d["kind"] in ("document", "mail", "hl7")]
        statuses = {d["status"] for d in rows}
        if rows and statuses == {"delivered"}:
            new = "delivered"
        elif "dead" in statuses:
            new = "dead"
        else:
            return
        ex = tx.get_exchange(exchange_id)
        if ex and ex["status"] != new:
            dead = next((d for d in rows if d["status"] == "dead"), None)
            tx.update_exchange(
                exchange_id, at, status=new,
                reason_code=(dead["last_error"] or "").split(":")[0] if dead else None,
                reason=dead["last_error"] if dead else None,
            )
            tx.add_event(exchange_id, at, new, {})

    def _is_dmp(self, destination: str) -> bool:
        dest = self.destinations.get(destination)
        return dest is not None and getattr(dest, "kind", None) == "dmp-xds"

    def _zam_row(
        self, tx: Tx, delivery: dict[str, Any], positive: bool, error: str | None,
        dmp_error: tuple[str, str] | None = None,
    ) -> dict[str, Any] | None:
        """The ZAM^Z01 delivery this outcome calls for, if any (run inside the outcome's transaction).

        Z01 is the DMP receipt (volet, ack-metier-zam page): only the outcome of a DMP
        destination decides it, never an MHD or file delivery. One per exchange: positive
        once every DMP delivery of the exchange is delivered, negative at the first dead one.
        """
        if not self._is_dmp(delivery["destination"]):
            return None
        ex = tx.get_exchange(delivery["exchange_id"])
        if not ex or not ex.get("ack_reception"):
            return None
        rows = tx.deliveries_for(delivery["exchange_id"])
        if any(d["kind"] == "zam" and not str(d.get("unique_id") or "").startswith(("Z02:", "Z03:"))
               for d in rows):  # the MSSanté Z02/Z03 are apart from the DMP receipt
            return None  # one business acknowledgement per exchange
        siblings = [d for d in rows if d["kind"] == "document" and d["id"] != delivery["id"]
                    and self._is_dmp(d["destination"])]
        if positive and any(d["status"] != "delivered" for d in siblings):
            return None  # wait for the last DMP delivery
        return self._zam_delivery(tx, ex, positive, error, dmp_error)

    def _zam_delivery(
        self, tx: Tx, ex: dict[str, Any], positive: bool, error: str | None,
        dmp_error: tuple[str, str] | None = None,
    ) -> dict[str, Any] | None:
        creator = find_creator(self.settings, ex.get("sender_app") or "", ex.get("sender_facility") or "")
        if creator is None:
            return None
        bodies = tx.exchange_bodies(ex["id"]) or {}
        if bodies.get("raw") is None:
            return None
        try:
            decoded = decode_message(bytes(bodies["raw"]), self.settings.pipeline.default_charset)
            original = Message.parse(decoded.text, codec=decoded.charset)
        except Exception:
            return None
        finding = None
        if not positive:
            code = (error or "DELIVERY_FAILED").split(":")[0].strip() or "DELIVERY_FAILED"
            finding = Finding(code, _label(error or "delivery failed", 200), None)
        control_id = "ZAM" + self.clock.new_id().replace("-", "")[:17]
        text = build_zam(
            original, positive=positive, now=self.clock.now(), control_id=control_id,
            error=finding, dmp_error=dmp_error,
        )
        return dict(
            id=self.clock.new_id(), exchange_id=ex["id"], destination=f"zam:{creator.application}|{creator.facility}",
            kind="zam", status="queued", patient_key=f"zam:{ex['id']}", unique_id=control_id,
            payload=encode_for(decoded.declared, text, self.settings.pipeline.default_charset),
        )

    # -- holds past their bound ------------------------------------------------------------
    async def _sweep_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.expire_holds()
                now = iso(self.clock.now())
                await self.journal.write(lambda tx, now=now: tx.recover_in_flight(now=now, expired_only=True))
            except Exception as exc:
                log.error("dispatcher.sweep_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._stopping.wait()

    async def expire_holds(self) -> list[str]:
        """Held past ``identity.hold_max_hours``: dead with the reason, and a negative ZAM."""
        now = self.clock.now()
        limit = iso(now - timedelta(hours=self.settings.identity.hold_max_hours))
        held = await self.journal.read(
            lambda tx: [h for h in tx.held_exchanges() if (h["held_since"] or "") < limit]
        )
        expired: list[str] = []
        for h in held:

            def op(tx: Tx, h: dict[str, Any] = h, now: datetime = now) -> None:
                at = iso(now)
                current = tx.get_exchange(h["id"])
                if current is None or current["status"] != "held":
                    return  # released (or re-keyed) since it was read: nothing to expire
                zam = self._zam_delivery_for_hold(tx, h)  # decided with the outcome, in its transaction
                reason = f"held longer than {self.settings.identity.hold_max_hours:g} h: {h['reason_code']}"
                tx.kill_waiting_deliveries(h["id"], reason, at)
                tx.update_exchange(h["id"], at, status="dead", reason=reason)
                tx.add_event(h["id"], at, "dead", {"code": h["reason_code"], "message": reason})
                if zam is not None:
                    tx.insert_delivery(zam | {"created_at": at, "next_attempt_at": at})
                    tx.add_event(h["id"], at, "zam:queued", {"positive": False})

            await self.journal.write(op)
            expired.append(h["id"])
        if expired:
            log.warning("dispatcher.holds_expired", count=len(expired))
        return expired

    def _zam_delivery_for_hold(self, tx: Tx, h: dict[str, Any]) -> dict[str, Any] | None:
        ex = tx.get_exchange(h["id"])
        if not ex or not ex.get("ack_reception") or ex["status"] != "held":
            return None
        rows = tx.deliveries_for(h["id"])
        if any(d["kind"] == "zam" for d in rows):
            return None
        if not any(d["kind"] == "document" and self._is_dmp(d["destination"]) for d in rows):
            return None  # Z01 answers for the DMP only
        return self._zam_delivery(tx, ex, False, f"{h['reason_code']}: identity not qualified in time")


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
