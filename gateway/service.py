"""Wiring: the one module that names concrete classes, starts components in order, stops in reverse.

Start: journal → recovery of in-flight deliveries → destinations → dispatcher → HTTP →
MLLP listener last (a sender is only acknowledged once everything behind it runs).
Stop: MLLP (drain in-flight messages) → HTTP → dispatcher → destinations → journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from gateway.delivery.dispatcher import Dispatcher
from gateway.delivery.mss_acks import MssAcks
from gateway.delivery.zam import find_creator
from gateway.destinations import DOCUMENT_KINDS, build_destinations, destination_kinds
from gateway.intake.handler import Intake, IntakeResult, Router
from gateway.journal.base import Journal
from gateway.journal.instance_lock import InstanceLock
from gateway.journal.open import open_journal, redact_url
from gateway.listeners.http import IngestLimits, build_app
from gateway.listeners.http import serve as serve_http
from gateway.listeners.mllp import MllpListener, PeerInfo, make_ssl_context
from gateway.operations.metrics import JournalHealth, LoopLagMonitor, Metrics
from gateway.operations.notifier import Notifier
from gateway.operations.readiness import Readiness
from gateway.operations.retention import RetentionTask, retention_policy
from gateway.ports import Clock, Destination, SystemClock
from gateway.settings import Settings
from gateway.web.app import setup as mount_web
from gateway.web.auth import prepare_tokens
from gateway.web.context import WebContext

__all__ = ["Service", "make_intake", "run_until_signalled"]

log = structlog.get_logger(__name__)

def make_intake(journal: Journal, settings: Settings, clock: Clock) -> Intake:
    """The intake ``serve`` runs, routing to the configured destinations (``relais replay`` too)."""
    kinds = destination_kinds(settings)
    documents = tuple(n for n, k in kinds.items() if k in DOCUMENT_KINDS)
    mail = next((n for n, k in kinds.items() if k == "mssante"), None)
    return Intake(journal, settings, clock, Router(documents, mail_destination=mail, routes=settings.routes))


class Service:
    """A running gateway: journal, intake, dispatcher, HTTP and MLLP listeners."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.ready = False
        self.journal: Journal = None  # type: ignore[assignment]
        self.intake: Intake = None  # type: ignore[assignment]
        self.dispatcher: Dispatcher | None = None
        self.destinations: dict[str, Destination] = {}
        self.destination_kinds: dict[str, str] = {}  # name → kind, once the destinations are built
        self._tokens = ""  # the API token specification prepare_tokens settled on at start
        self._zam_destinations: dict[str, Destination] = {}
        self.mllp: MllpListener | None = None
        self.http_app: web.Application | None = None
        self.retention: RetentionTask | None = None
        self.readiness: Readiness | None = None
        self.addresses: dict[str, str] = {}
        self.mail_poller: Any = None
        self._instance_lock: InstanceLock | None = None
        self.notifier: Notifier | None = None
        self._mss_acks: MssAcks | None = None
        #: what ``start`` did, each step's undoing pushed as it happened; ``stop`` closes it
        self._stack = contextlib.AsyncExitStack()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> dict[str, str]:
        """Start every component in order; on any failure, stop what had started and re-raise.

        Each step registers its own undoing on one exit stack as it starts, so ``stop`` is
        exactly the start list in reverse and a half-started service never stays behind.
        """
        try:
            await self._start_components()
        except BaseException:
            await self.stop()
            raise
        return self.addresses

    async def _start_components(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        if s.http.enabled:  # refuse a token-less API off loopback before anything starts
            self._tokens = prepare_tokens(s)
        stack = self._stack
        if s.journal_url.startswith("sqlite:///"):
            self._instance_lock = InstanceLock(s.journal_url[len("sqlite:///") :])
            self._instance_lock.acquire()
            stack.callback(self._release_instance_lock)  # after the journal: no write of ours can follow
        await self._open_journal()
        self._open_destinations()
        self._open_intake()
        await self._start_dispatcher()
        self._start_background()
        if s.http.enabled:
            await self._start_http()
        if s.mllp.enabled:
            await self._start_mllp()
        if self._instance_lock is not None:
            self._instance_lock.update(**self.addresses)
        self.ready = True
        stack.callback(self._not_ready)
        # from here on, not earlier: a stall while starting delays no sender (the MLLP listener opens last)
        self._start_task(LoopLagMonitor(self.metrics.loop_lag_max.set).run(), "loop-lag")
        log.info("service.ready", **self.addresses, journal=s.journal_url.split(":")[0])

    async def stop(self) -> None:
        """Undo what ``start`` did, in reverse: MLLP (draining) → HTTP → … → journal → lock."""
        stack, self._stack = self._stack, contextlib.AsyncExitStack()
        await stack.aclose()
        log.info("service.stopped")

    def _not_ready(self) -> None:
        self.ready = False

    def _release_instance_lock(self) -> None:
        if self._instance_lock is not None:
            self._instance_lock.release()
            self._instance_lock = None

    def _start_task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)

        async def cancel() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._stack.push_async_callback(cancel)
        return task

    async def _open_journal(self) -> None:
        s = self.settings
        self.journal = open_journal(
            s.journal_url, group_commit_ms=s.journal.group_commit_ms, auto_migrate=s.journal.auto_migrate,
            clock=self.clock, pool_size=s.journal.pool_size,
        )
        self._stack.push_async_callback(self.journal.close)
        _record_effective_config(s)
        journal = self.journal

        def commits() -> tuple[int, int]:
            stats = journal.stats()
            return stats.commits, stats.commit_errors

        self.metrics.watch_journal(commits)
        self.readiness = Readiness(
            self.journal, self.journal.location, min_free_bytes=s.journal.min_free_bytes,
            interval=s.journal.ready_probe_seconds, now=self.clock.now,
        )

    def _open_destinations(self) -> None:
        self.destinations = build_destinations(self.settings, self.clock)
        self._stack.push_async_callback(self._close_destinations)
        self.destination_kinds = {n: d.kind for n, d in self.destinations.items()}
        self.metrics.destination_kinds.update(self.destination_kinds)

    async def _close_destinations(self) -> None:
        for dest in [*self.destinations.values(), *self._zam_destinations.values()]:
            with contextlib.suppress(Exception):
                await dest.close()

    def _open_intake(self) -> None:
        self.intake = make_intake(self.journal, self.settings, self.clock)
        intake = self.intake
        intake.workers.start()  # worker processes import the pipeline now, not on the first large message

        async def close_intake() -> None:
            await asyncio.to_thread(intake.close)

        self._stack.push_async_callback(close_intake)

    async def _start_dispatcher(self) -> None:
        self._mss_acks = MssAcks(self.settings, self.clock)
        self.dispatcher = Dispatcher(
            self.journal, self.destinations, self.settings, self.clock,
            zam_destination=self._zam_destination, on_outcome=self.metrics.observe_delivery,
            mail_zam=self._mss_acks.for_dead_mail,
        )
        self._stack.push_async_callback(self.dispatcher.stop)
        await self.dispatcher.recover()
        # a configuration change may have resolved some holds: judged in the background, so a
        # journal with many held documents does not delay the listeners
        self._start_task(self._reevaluate_holds(), "hold-reevaluation")
        self.dispatcher.start()

    def _start_background(self) -> None:
        """Retention, the application mailbox reader and the webhook notifier, when configured."""
        s = self.settings
        assert self.dispatcher is not None
        if s.retention.days > 0:
            if self.journal.location is not None and not self.journal.can_vacuum:
                log.warning("journal.vacuum_unavailable", hint="relais prune --vacuum (offline) lets retention "
                            "give space back; this journal predates auto_vacuum")
            self.retention = RetentionTask(
                self.journal, retention_policy(s), self.clock, interval=s.retention.interval_minutes * 60,
                vacuum=self.journal.can_vacuum, on_pruned=self.metrics.pruned.inc, holder=self.dispatcher.worker_id,
            )
            self.retention.start()
            self._stack.push_async_callback(self.retention.stop)
        self._start_mail_poller(self._mss_acks)
        if s.notify.webhook_url:
            self.notifier = Notifier(
                s.notify, self.journal, holder=self.dispatcher.worker_id, now=self.clock.now,
                kinds=lambda: dict(self.destination_kinds), ready=self._ready_now,
            )
            self.notifier.start()
            self._stack.push_async_callback(self.notifier.stop)

    async def _ready_now(self) -> bool:
        report = await self.ready_report()
        return report is not None and report[0]

    def _web_context(self) -> WebContext:
        async def replay(exchange_id: str, actor: str) -> IntakeResult:
            return await self.intake.replay(exchange_id, actor=actor)

        return WebContext(
            journal=self.journal, clock=self.clock,
            destination_kinds=self.destination_kinds,
            replay=replay, wake=self.dispatcher_wake, secure_cookies=bool(self.settings.http.tls_cert),
        )

    async def _start_http(self) -> None:
        s = self.settings
        limits = IngestLimits(max_body_bytes=s.http.max_body_bytes, max_message_bytes=s.mllp.max_message_bytes,
                              max_buffered_bytes=s.http.max_buffered_bytes)
        app = build_app(self, self, limits)
        mount_web(app, self._web_context(), s, self._tokens)  # not optional: without it, ingest would have no authentication
        self.http_app = app
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        http_ssl = None
        try:
            if s.http.tls_cert:
                http_ssl = make_ssl_context(
                    s.http.tls_cert, s.http.tls_key or None, s.http.tls_ca or None,
                    require_client_cert=s.http.tls_require_client_cert,
                )
            server = await serve_http(runner, s.http.host, s.http.port, ssl=http_ssl,
                                      max_connections=s.http.max_connections)
        except BaseException:
            await runner.cleanup()
            raise
        # undone in this order: stop accepting, close the connections (runner), wait for the server
        self._stack.push_async_callback(server.wait_closed)
        self._stack.push_async_callback(runner.cleanup)
        self._stack.callback(server.close)
        host, port = server.sockets[0].getsockname()[:2]
        self.addresses["http"] = f"{'https' if http_ssl else 'http'}://{host}:{port}"

    async def _start_mllp(self) -> None:
        s = self.settings
        ssl_ctx = None
        if s.mllp.tls_cert:
            ssl_ctx = make_ssl_context(
                s.mllp.tls_cert, s.mllp.tls_key or None, s.mllp.tls_ca or None,
                require_client_cert=bool(s.mllp.tls_ca),
            )
        self.mllp = MllpListener(
            self._on_mllp, host=s.mllp.host, port=s.mllp.port, max_size=s.mllp.max_message_bytes,
            idle_timeout=s.mllp.idle_timeout, ssl=ssl_ctx, handler_oversize=self._on_oversize,
            drain_bytes=s.mllp.oversize_drain_bytes, drain_timeout=s.mllp.oversize_drain_timeout,
            max_connections=s.mllp.max_connections, max_buffered_bytes=s.mllp.max_buffered_bytes,
            frame_timeout=s.mllp.frame_timeout, handler_refused=self._on_refused,
        )
        host, port = await self.mllp.start()
        listener = self.mllp

        async def drain() -> None:
            await listener.stop(drain_timeout=10.0)

        self._stack.push_async_callback(drain)
        self.addresses["mllp"] = f"{'mllps' if ssl_ctx else 'mllp'}://{host}:{port}"

    async def _reevaluate_holds(self) -> None:
        try:
            counts = await self.intake.reevaluate_holds()
        except Exception as exc:  # never fatal: the holds stay as they were, an operator can release
            log.error("intake.reevaluation_failed", error=type(exc).__name__)
            return
        if counts.get("released"):
            self.dispatcher_wake()

    def _start_mail_poller(self, acks: Any) -> None:
        """The application mailbox reader (DSN/MDN → ZAM, inbound mail), when IMAP is configured."""
        name = next((n for n, kind in self.destination_kinds.items() if kind == "mssante"), None)
        dest = self.destinations.get(name) if name else None
        config = getattr(dest, "config", None)
        if config is None or not config.imap_host:
            return
        from adapters.mssante.inbound import MailIntake
        from adapters.mssante.poller import ReportPoller

        inbound = MailIntake(self.journal, self.settings, config, self.clock)
        self.mail_poller = ReportPoller(config, self.journal, acks, self.clock, wake=self.dispatcher_wake,
                                        on_inbound=inbound.handle)
        self.mail_poller.start()
        self._stack.push_async_callback(self.mail_poller.stop)

    # -- inbound -------------------------------------------------------------------------------
    async def _on_mllp(self, payload: bytes, peer: PeerInfo) -> bytes:
        return await self.handle_hl7(
            payload, peer=f"{peer.host}:{peer.port}", listener=peer.listener, tls_subject=peer.tls_subject
        )

    async def _on_oversize(self, size: int, peer: PeerInfo) -> bytes:
        self.metrics.received.labels(listener=peer.listener, type="oversize").inc()
        self.metrics.acks.labels(code="AR").inc()
        return await self.intake.handle_oversize(
            size, peer=f"{peer.host}:{peer.port}", listener=peer.listener, tls_subject=peer.tls_subject
        )

    async def _on_refused(self, code: str, message: str, partial: bytes, peer: PeerInfo) -> bytes:
        self.metrics.received.labels(listener=peer.listener, type="refused").inc()
        self.metrics.acks.labels(code="AR").inc()
        return await self.intake.handle_refused(
            code, message, partial, peer=f"{peer.host}:{peer.port}", listener=peer.listener,
            tls_subject=peer.tls_subject,
        )

    async def handle_document(self, data: bytes, flags: dict[str, bool], *, peer: str | None,
                              tls_subject: str | None, client: str) -> IntakeResult:
        result = await self.intake.handle_cda(data, flags, peer=peer, tls_subject=tls_subject, client=client)
        self.metrics.observe_message(result, "http", sum(result.timings.values()), message_type="CDA")
        if result.status != "rejected":
            self.dispatcher_wake()
        return result

    async def ready_report(self) -> tuple[bool, dict[str, Any]] | None:
        if not self.ready or self.readiness is None:
            return None
        report = await self.readiness.check()
        return report.ready, report.checks

    async def metrics_text(self) -> bytes:
        await self.refresh_metrics()
        return self.metrics.render()

    async def handle_hl7(
        self, raw: bytes, *, peer: str | None, listener: str, tls_subject: str | None = None
    ) -> bytes:
        t0 = time.perf_counter()
        result = await self.intake.handle_hl7(raw, peer=peer, listener=listener, tls_subject=tls_subject)
        self.metrics.observe_message(result, listener, time.perf_counter() - t0)
        if result.status == "queued" or result.released or result.application_ack_queued:
            self.dispatcher_wake()
        return result.ack

    def dispatcher_wake(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()

    def _zam_destination(self, app: str, facility: str) -> Destination | None:
        from adapters.mllp import MllpDestination

        key = f"zam:{app}|{facility}"
        if key not in self._zam_destinations:
            creator = find_creator(self.settings, app, facility)
            if creator is not None:
                self._zam_destinations[key] = MllpDestination(key, creator.address)
        return self._zam_destinations.get(key)

    async def refresh_metrics(self) -> None:
        now = self.clock.now()

        def age(at: str | None) -> float:
            return max((now - datetime.fromisoformat(at)).total_seconds(), 0.0) if at else 0.0

        j = self.journal
        work = await j.open_work()
        health = JournalHealth(
            by_status=await j.count_by_status(), depth={w.destination: w.count for w in work},
            oldest_queued={w.destination: age(w.oldest) for w in work},
            oldest_held=age(await j.oldest_held_since()), zam=await j.zam_trouble(),
        )
        self.metrics.refresh(health, list(self.destinations), ready=self.ready, data_dir=self.settings.data_dir)


async def run_until_signalled(service: Service, *, announce: Any = print) -> int:
    """Start, print one readiness line, wait for SIGTERM/SIGINT, stop cleanly, return 0."""
    import gc
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # a port in use or a bad certificate raises here with nothing left running (start undoes
    # itself), so the CLI's one-line error is the whole story
    addresses = await service.start()
    # What start built (modules, settings, conformance data) lives as long as the process. Out
    # of the collector's sight, a full collection walks only what messages made since: under
    # ADT load each one took 20-28 ms before, a stall of every connection at once.
    gc.freeze()
    parts = " ".join(f"{k}={v}" for k, v in addresses.items())
    announce(f"relais ready {parts} journal={redact_url(service.settings.journal_url)}", flush=True)
    await stop.wait()
    await service.stop()
    return 0


def _record_effective_config(settings: Settings) -> None:
    """What this server runs with, for the offline commands (``relais replay``, ``reroute``)."""
    import json
    import os

    from gateway.settings import EFFECTIVE_CONFIG, effective_raw

    path = settings.data_dir / EFFECTIVE_CONFIG
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(effective_raw(settings), fh, ensure_ascii=False, indent=1, default=str)
    os.replace(tmp, path)
