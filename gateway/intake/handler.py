"""Intake: what happens to an inbound message between the socket and the ACK.

1. the pure pipeline analyses the bytes (``gateway.core.pipeline``);
2. **one** journal transaction stores the raw bytes with the outcome, applies the
   identity registry (duplicates, conflicts, hold / release, merges), and creates the
   deliveries — group-committed and fsync'd;
3. only then is the ACK built and returned.

What the transaction records is planned in :mod:`gateway.intake.plan` (with the identity
gate of :mod:`gateway.core.identity.gate`); the acknowledgements are written by
:mod:`gateway.intake.acks`. This module runs the steps in order, binding ``exchange_id``
to the log context for the duration of one message.

If the pipeline itself fails on a bug, the raw bytes are still stored (status
``rejected``, reason ``INTERNAL_ERROR``) and the sender gets AE: nothing is lost and
nothing is acknowledged as accepted without being kept.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import structlog
from structlog.contextvars import bound_contextvars

from gateway.core.hl7v2.limits import Limits
from gateway.core.hl7v2.reader import Message
from gateway.core.identity.gate import judge
from gateway.core.identity.status import IdentityConvention
from gateway.core.pipeline import Analysis, Ids, PipelineOptions, analyse_cda, analyse_hl7v2
from gateway.intake.acks import Acks
from gateway.intake.plan import IntakeResult, Planner, Router, received_detail
from gateway.intake.workers import AnalysisWorkers, Isolation
from gateway.journal.base import Journal
from gateway.journal.rows import Exchange, IdentityContext, InboundRecord, NewEvent, NewExchange, iso
from gateway.model import Finding, PatientIdentity
from gateway.ports import Clock
from gateway.settings import Settings

__all__ = ["Intake", "IntakeResult", "Router", "pipeline_options"]

log = structlog.get_logger(__name__)


class Intake:
    """Turns inbound bytes into journal rows and an acknowledgement."""

    def __init__(
        self,
        journal: Journal,
        settings: Settings,
        clock: Clock,
        router: Router,
    ) -> None:
        self.journal = journal
        self.settings = settings
        self.clock = clock
        self.router = router
        self.options = pipeline_options(settings)
        self.planner = Planner(clock, router)
        self.acks = Acks(settings, clock, self.options.default_charset)
        # Large inputs are analysed by workers so that the event loop keeps answering other
        # senders meanwhile; small ones stay inline: a hop would cost more than their analysis.
        self.workers = AnalysisWorkers(cast(Isolation, settings.pipeline.isolation), settings.pipeline.workers,
                                       log_level=settings.gateway.log_level)

    def close(self) -> None:
        """Let running analyses finish and stop the workers."""
        self.workers.close()

    async def _analyse(self, size: int, fn: Callable[..., Analysis], *args: Any) -> Analysis:
        """``fn(*args)``, whose last argument is the :class:`Ids`; inline or in a worker by ``size``."""
        threshold = self.settings.pipeline.offload_bytes
        if threshold and size <= threshold:
            return fn(*args)
        *head, ids = args
        exchange_id = structlog.contextvars.get_contextvars().get("exchange_id", "")
        return await self.workers.run(fn, tuple(head), ids, exchange_id)

    def _ids(self, now: datetime) -> Ids:
        return Ids(now=now, new_uuid=self.clock.new_id)

    async def _analyse_safely(self, size: int, crashed: Callable[[], Analysis], fn: Callable[..., Analysis],
                              *args: Any) -> Analysis:
        """The pipeline's verdict; should it raise, ``crashed()``: a bug must not lose the message."""
        try:
            return await self._analyse(size, fn, *args)
        except Exception as exc:
            log.exception("pipeline.crashed", error=type(exc).__name__)
            return crashed()

    # -- entry points ----------------------------------------------------------------
    # Each one binds ``exchange_id`` for its log events as soon as the id exists.
    async def handle_hl7(
        self, raw: bytes, *, peer: str | None, listener: str, tls_subject: str | None = None
    ) -> IntakeResult:
        """Analyse, journal and acknowledge one HL7 v2 message; ``tls_subject`` is the client certificate's."""
        started = time.perf_counter()
        now = self.clock.now()
        exchange_id = self.clock.new_id()
        with bound_contextvars(exchange_id=exchange_id):
            an = await self._analyse_safely(
                len(raw), lambda: _crashed(raw), analyse_hl7v2, raw, self.options, self._ids(now))
            analysed = time.perf_counter()
            result = await self._record(exchange_id, raw, an, peer, listener, now, tls_subject=tls_subject)
            recorded = time.perf_counter()
            result.ack = self.acks.connection_ack(result, raw, now)
            result.timings = {"analyse": analysed - started, "journal": recorded - analysed,
                              "ack": time.perf_counter() - recorded}
            self._log(result, started)
        return result

    async def handle_cda(
        self, data: bytes, flags: dict[str, bool], *, peer: str | None, tls_subject: str | None = None,
        client: str | None = None,
    ) -> IntakeResult:
        started = time.perf_counter()
        now = self.clock.now()
        exchange_id = self.clock.new_id()
        with bound_contextvars(exchange_id=exchange_id):
            an = await self._analyse_safely(
                len(data), _crashed_cda, analyse_cda, data, flags, self.options, self._ids(now))
            if client:
                an.summary["http_client"] = client  # routes can match on who posted it
            analysed = time.perf_counter()
            result = await self._record(exchange_id, data, an, peer, "http-cda", now, tls_subject=tls_subject)
            result.timings = {"analyse": analysed - started, "journal": time.perf_counter() - analysed}
            self._log(result, started)
        return result

    async def handle_oversize(
        self, size: int, *, peer: str | None, listener: str, tls_subject: str | None = None
    ) -> bytes:
        """A frame above the size limit: record the refusal (without the bytes) and answer AR."""
        reason = Finding(
            "MESSAGE_TOO_LARGE",
            f"message exceeds {self.settings.mllp.max_message_bytes} bytes (received at least {size})",
            "MSH",
        )
        return await self._refuse_frame(reason, b"", size, peer=peer, listener=listener, tls_subject=tls_subject)

    async def handle_refused(
        self, code: str, message: str, partial: bytes, *, peer: str | None, listener: str,
        tls_subject: str | None = None,
    ) -> bytes:
        """A frame we stopped receiving (too slow, buffers full): journal what came and answer AR."""
        reason = Finding(code, message, "MSH")
        return await self._refuse_frame(
            reason, partial, len(partial), peer=peer, listener=listener, tls_subject=tls_subject
        )

    async def _refuse_frame(
        self, reason: Finding, raw: bytes, size: int, *, peer: str | None, listener: str, tls_subject: str | None
    ) -> bytes:
        now = self.clock.now()
        exchange_id = self.clock.new_id()
        exchange = NewExchange(
            id=exchange_id, received_at=iso(now), listener=listener, peer=peer, raw=raw,
            sha256=hashlib.sha256(raw).hexdigest(), size=size, status="rejected",
            reason_code=reason.code, reason=reason.message, ack_code="AR",
            findings={"errors": [reason.as_dict()], "warnings": []},
        )
        with bound_contextvars(exchange_id=exchange_id):
            await self.journal.record_inbound(InboundRecord(exchange, events=[
                NewEvent("received", received_detail(size, tls_subject)), NewEvent("rejected", {"code": reason.code})]))
            log.warning("mllp.frame_refused", code=reason.code, size=size)
        return self.acks.refusal(raw, now, reason)

    async def replay(self, exchange_id: str, *, actor: str) -> IntakeResult:
        """Run the pipeline again from the stored raw bytes; a new exchange records the outcome.

        Delivery stays idempotent: a document already delivered is found at the destination
        by its uniqueId before anything is sent again.
        """
        bodies = await self.journal.exchange_bodies(exchange_id)
        if bodies is None or bodies.raw is None:
            raise KeyError(exchange_id)
        raw = bytes(bodies.raw)
        if bodies.listener == "http-cda":
            result = await self.handle_cda(raw, {"DESTDMP": True}, peer=f"replay:{exchange_id}")
        else:
            result = await self._replay_hl7(raw, exchange_id)
        await self.journal.record_replay(exchange_id, result.exchange_id, actor=actor, at=iso(self.clock.now()))
        return result

    async def _replay_hl7(self, raw: bytes, original_id: str) -> IntakeResult:
        now = self.clock.now()
        exchange_id = self.clock.new_id()
        with bound_contextvars(exchange_id=exchange_id):
            an = await self._analyse(len(raw), analyse_hl7v2, raw, self.options,
                                     Ids(now=now, new_uuid=self.clock.new_id))
            return await self._record(exchange_id, raw, an, f"replay:{original_id}", "replay", now, dedup=False)

    async def reevaluate_holds(self) -> dict[str, int]:
        """At start-up: documents held by an identity rule are judged again with today's settings.

        A hold a configuration change resolves (``identity.allow_test_ins`` turned on for
        ``INS_OID_TEST``, a status convention …) or one the registry now satisfies is released;
        a hold whose reason changed gets the new reason. HL7 v2 exchanges only (their raw bytes
        are the whole input); a pruned one is left as it is. The gate is the one new
        documents pass (:func:`gateway.core.identity.gate.judge`); the journal applies the
        verdict (``Journal.rejudge_hold``).
        """
        held = [h for h in await self.journal.held_exchanges() if str(h.reason_code or "").startswith("INS_")]
        counts = {"released": 0, "changed": 0}
        for h in held:
            with bound_contextvars(exchange_id=h.id):
                outcome = await self._rejudge(h)
            if outcome:
                counts[outcome] += 1
        if any(counts.values()):
            log.info("intake.holds_reevaluated", **counts)
        return counts

    async def _rejudge(self, h: Exchange) -> str | None:
        bodies = await self.journal.exchange_bodies(h.id)
        if bodies is None or not bodies.raw or bodies.listener == "http-cda":
            return None
        now = self.clock.now()
        ids = Ids(now=now, new_uuid=self.clock.new_id)
        an = await self._analyse(len(bodies.raw), analyse_hl7v2, bytes(bodies.raw), self.options, ids)
        if an.kind != "document":
            return None
        ctx = await self.journal.identity_context(an.identity.ipp_key, an.identity.ins)
        reason = judge(ctx, an.identity, an.patient or PatientIdentity()).hold
        return await self.journal.rejudge_hold(
            h.id, release=reason is None, code=reason.code if reason else None,
            message=reason.message if reason else None, cause="re-evaluated with the current settings",
            at=iso(now),
        )

    # -- what the journal records ----------------------------------------------------------
    async def _record(
        self, exchange_id: str, raw: bytes, an: Analysis, peer: str | None, listener: str,
        now: datetime, *, dedup: bool = True, tls_subject: str | None = None,
    ) -> IntakeResult:
        """Judge the exchange on what the registry says, then record it in one transaction.

        The journal re-checks inside that transaction what may have changed since the
        registry was read (a duplicate arriving at once, an ADT qualifying the identity).
        """
        ctx = IdentityContext()
        if an.kind in ("document", "cda") and an.ack_code == "AA":
            ctx = await self.journal.identity_context(an.identity.ipp_key, an.identity.ins)
        record, result = self.planner.plan(exchange_id, raw, an, peer, listener, now, ctx, dedup=dedup,
                                           tls_subject=tls_subject)
        self.acks.application_ack(record, result, now)
        outcome = await self.journal.record_inbound(record)
        result.status = outcome.status
        result.released = list(outcome.released)
        if outcome.duplicate_of is not None:
            result.duplicate_of = outcome.duplicate_of
            result.ack_code = outcome.ack_code or "AA"
            result.application_ack_queued = False  # a duplicate is answered like the first, not processed
        return result

    def _log(self, result: IntakeResult, started: float) -> None:
        an = result.analysis
        elapsed = time.perf_counter() - started
        log.info(
            "intake.stored",
            control_id=an.summary.get("control_id"),
            message_type=an.summary.get("message_type"),
            status=result.status,
            ack=result.ack_code,
            errors=[f.code for f in an.errors],
            ms=round(elapsed * 1000, 2),
        )


def _crashed_cda() -> Analysis:
    an = Analysis(kind="cda", ack_code="AE")
    an.errors.append(Finding("INTERNAL_ERROR", "the gateway could not process this document", None))
    return an


def _crashed(raw: bytes) -> Analysis:
    """The verdict when the pipeline raised: AE naming the message when its MSH reads, else AR."""
    internal = Finding("INTERNAL_ERROR", "the gateway could not process this message", None)
    an = Analysis(kind="unreadable", ack_code="AR", errors=[internal])
    try:
        msg = Message.parse(raw.decode("latin-1"))  # latin-1 decodes any bytes
        summary = {"sender_app": msg.msh.value(3), "sender_facility": msg.msh.value(4),
                   "control_id": msg.control_id, "message_type": msg.message_type}
    except Exception:
        return an
    an.message, an.ack_code, an.kind, an.summary = msg, "AE", "unsupported", summary
    return an


def pipeline_options(settings: Settings) -> PipelineOptions:
    from pathlib import Path

    return PipelineOptions(
        default_charset=settings.pipeline.default_charset,
        allow_test_ins=settings.identity.allow_test_ins,
        convention=cast(IdentityConvention, settings.identity.convention),
        cda_xsd=Path(settings.pipeline.cda_xsd) if settings.pipeline.cda_xsd else None,
        source_id=settings.gateway.source_id,
        max_cda_bytes=settings.pipeline.max_cda_bytes,
        max_cda_elements=settings.pipeline.max_cda_elements,
        max_cda_depth=settings.pipeline.max_cda_depth,
        limits=Limits(
            max_segments=settings.pipeline.max_segments,
            max_repetitions=settings.pipeline.max_repetitions,
            max_field_chars=settings.pipeline.max_field_chars,
        ),
    )
