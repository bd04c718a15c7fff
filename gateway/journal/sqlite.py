"""SQLite journal: one writer thread with group commit, reader connections per thread.

Why a writer thread: SQLite allows one writer at a time, and an ``fsync`` costs far
more than the SQL around it. Callers hand a function to :meth:`SqliteJournal.write`;
the writer runs every function queued at that moment inside **one** transaction and
commits once (WAL, ``synchronous=FULL``: the commit is on disk when it returns), then
resolves all their futures. Concurrent senders therefore share one fsync, and an ACK
sent after ``await journal.write(...)`` means the bytes are durable. The event loop
never waits on SQLite: writes go to the thread, reads run in ``asyncio.to_thread``.

A function that raises is rolled back alone, so one bad exchange never loses another's
commit: a group runs first without savepoints and, only when one of its functions raised,
again with a SAVEPOINT around each.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from gateway.errors import JournalError
from gateway.journal.engine import SessionJournal
from gateway.journal.migrate import MIGRATIONS_DDL, SchemaStatus, plan, require_current, split_statements
from gateway.journal.rows import JournalStats
from gateway.journal.tx import Tx
from gateway.ports import Clock

__all__ = ["SqliteJournal", "open_journal"]

T = TypeVar("T")
log = structlog.get_logger(__name__)

#: the WAL size (pages) at which a commit checkpoints by itself: the checkpointer is behind
_BACKSTOP_PAGES = 16_384
_CHECKPOINT_GATHER_S = 0.05
_CHECKPOINT_IDLE_S = 1.0


def _connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=30)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=30000")
    if not readonly:
        # only a file without tables can take auto_vacuum, and it must come before WAL writes the
        # header; new journals then give pruned space back with incremental_vacuum (retention.py)
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsync'd at every commit, so a committed exchange survives a power cut.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
    return conn


class SqliteJournal(SessionJournal):
    """The embedded journal. ``write`` is durable on return; ``read`` sees committed data.

    One instance per file (``serve`` holds ``InstanceLock``), so claims need no row locks:
    the writer thread runs one transaction at a time.
    """

    backend = "sqlite"

    def __init__(
        self, path: str | Path, *, group_commit_ms: float = 2.0, readonly: bool = False, auto_migrate: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.path = str(path)
        self.readonly = readonly
        self.auto_migrate = auto_migrate
        self.schema: SchemaStatus | None = None
        if clock is not None:
            self.clock = clock
        self._group_wait = max(group_commit_ms, 0.0) / 1000.0
        self._queue: queue.Queue[tuple[Callable[[Tx], Any], Future[Any]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._closed = False
        self._large: set[Future[Any]] = set()  # futures of writes to commit on their own
        self._checkpoint_thread: threading.Thread | None = None
        self._committed = threading.Event()  # set by the writer after commits, for the checkpointer
        self._stopping = threading.Event()
        self.checkpoints = 0  # passes of the checkpointer thread
        self.commits = 0  # number of fsync'd commits (for tests and metrics)
        self.commit_errors = 0  # commits that failed: their writers got a JournalError, no ACK
        self.writes = 0
        self.auto_vacuum = False  # INCREMENTAL: retention can shrink the file

    # -- lifecycle --------------------------------------------------------------
    def open(self) -> SqliteJournal:
        if not self.readonly:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = _connect(self.path)
            try:
                self.schema = migrate_sqlite(conn, apply=self.auto_migrate)
                require_current(self.schema, self.path)
                self.auto_vacuum = conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
            finally:
                conn.close()
            self._thread = threading.Thread(target=self._writer, name="journal-writer", daemon=True)
            self._thread.start()
            self._checkpoint_thread = threading.Thread(
                target=self._checkpointer, name="journal-checkpointer", daemon=True)
            self._checkpoint_thread.start()
        elif not Path(self.path).exists():
            raise JournalError(f"no journal at {self.path}", code="JOURNAL_MISSING")
        else:
            conn = _connect(self.path, readonly=True)
            try:
                self.schema = plan("sqlite", _applied(conn))
            finally:
                conn.close()
            require_current(self.schema, self.path)
        return self

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
        await asyncio.to_thread(self._stop_checkpointer)

    def close_sync(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        self._stop_checkpointer()

    def _stop_checkpointer(self) -> None:
        self._stopping.set()
        if self._checkpoint_thread is not None:
            self._checkpoint_thread.join()

    # -- the port's needs ---------------------------------------------------------------
    @property
    def location(self) -> Path | None:
        return Path(self.path).parent

    @property
    def can_vacuum(self) -> bool:
        return self.auto_vacuum

    def stats(self) -> JournalStats:
        return JournalStats(self.commits, self.commit_errors)

    async def _write(self, fn: Callable[[Tx], T], *, large: bool = False) -> T:
        return await self.write(fn, large=large)

    async def _read(self, fn: Callable[[Tx], T]) -> T:
        return await self.read(fn)

    # -- writes -----------------------------------------------------------------
    async def write(self, fn: Callable[[Tx], T], *, large: bool = False) -> T:
        """Run ``fn`` in the writer thread inside a transaction; return once it is fsync'd.

        ``large`` marks a write of many megabytes (a big raw message): it is committed
        on its own, after the small writes queued with it, so that those do not wait for
        its pages to reach the disk.
        """
        return await asyncio.wrap_future(self.submit(fn, large=large))

    def submit(self, fn: Callable[[Tx], T], *, large: bool = False) -> Future[T]:
        if self._closed or self._thread is None:
            raise JournalError("journal is closed or read-only", code="JOURNAL_CLOSED")
        fut: Future[T] = Future()
        if large:
            self._large.add(fut)
        self._queue.put((fn, fut))
        return fut

    def write_sync(self, fn: Callable[[Tx], T]) -> T:
        """Blocking variant for command-line tools that own the journal."""
        return self.submit(fn).result()

    def _writer(self) -> None:
        conn = _connect(self.path)
        # Checkpoints belong to the checkpointer thread; a commit runs one itself only when the
        # WAL has grown this far (the checkpointer stuck behind a long read, say)
        conn.execute(f"PRAGMA wal_autocheckpoint={_BACKSTOP_PAGES}")
        tx = Tx(conn)
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            # Group commit: give concurrent writers a moment to join this fsync.
            if self._group_wait:
                with contextlib.suppress(queue.Empty):
                    nxt = self._queue.get(timeout=self._group_wait)
                    if nxt is None:
                        stop = True
                    else:
                        batch.append(nxt)
            while True:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            large = [item for item in batch if item[1] in self._large]
            small = [item for item in batch if item[1] not in self._large]
            if small:
                self._run_batch(conn, tx, small)
            for item in large:
                self._large.discard(item[1])
                self._run_batch(conn, tx, [item])
            self._committed.set()
        conn.close()

    def _checkpointer(self) -> None:
        """Copy committed WAL frames into the database file, off the ACK path.

        A checkpoint writes every page again and fsyncs the database file. Run by the commit
        that crossed SQLite's threshold, it made that commit's senders (and everyone queued
        behind them) wait for it; here it runs beside the writer. PASSIVE never blocks the
        writer or a reader: what a reader still needs is copied next time. Durability does not
        depend on it: a commit is on disk, in the WAL, when it returns.
        """
        conn = _connect(self.path)
        try:
            while not self._stopping.is_set():
                if not self._committed.wait(_CHECKPOINT_IDLE_S):
                    continue
                self._stopping.wait(_CHECKPOINT_GATHER_S)  # let a few commits pile up: one pass for all
                self._committed.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # retried at the next commit; the backstop still holds
                    log.warning("journal.checkpoint_failed", error=type(exc).__name__)
        finally:
            conn.close()

    def _run_batch(
        self, conn: sqlite3.Connection, tx: Tx, batch: list[tuple[Callable[[Tx], Any], Future[Any]]]
    ) -> None:
        # Optimistic first: the whole group in one transaction without a SAVEPOINT per write
        # (two statements, and two GIL hand-offs, fewer per message). Should one write raise,
        # the group is rolled back and run again with a savepoint around each write, so the bad
        # one fails alone. The writes are functions of their arguments and the database only,
        # which makes running them a second time after the rollback safe.
        if len(batch) > 1:
            try:
                values = self._run_plain(conn, tx, batch)
            except _WriteRaised:
                pass
            except sqlite3.Error as exc:
                self._commit_failed(conn, batch, exc)
                return
            else:
                for (_fn, fut), value in zip(batch, values, strict=True):
                    fut.set_result(value)
                return
        self._run_isolated(conn, tx, batch)

    def _run_plain(self, conn: sqlite3.Connection, tx: Tx, batch: list[tuple[Callable[[Tx], Any], Future[Any]]]) -> list[Any]:
        conn.execute("BEGIN IMMEDIATE")
        values: list[Any] = []
        for fn, _fut in batch:
            try:
                values.append(fn(tx))
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise _WriteRaised from exc
        conn.execute("COMMIT")
        self.commits += 1
        self.writes += len(batch)
        return values

    def _run_isolated(
        self, conn: sqlite3.Connection, tx: Tx, batch: list[tuple[Callable[[Tx], Any], Future[Any]]]
    ) -> None:
        results: list[tuple[Future[Any], bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, fut in batch:
                conn.execute("SAVEPOINT op")
                try:
                    value = fn(tx)
                except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((fut, False, exc))
                else:
                    conn.execute("RELEASE op")
                    results.append((fut, True, value))
            conn.execute("COMMIT")
            self.commits += 1
            self.writes += len(batch)
        except sqlite3.Error as exc:
            self._commit_failed(conn, batch, exc)
            return
        for fut, ok, value in results:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def _commit_failed(
        self, conn: sqlite3.Connection, batch: list[tuple[Callable[[Tx], Any], Future[Any]]], exc: sqlite3.Error
    ) -> None:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        self.commit_errors += 1
        log.error("journal.commit_failed", error=type(exc).__name__)
        err = JournalError(f"journal commit failed: {exc}", code="JOURNAL_COMMIT")
        for _fn, fut in batch:
            if not fut.done():
                fut.set_exception(err)

    # -- reads ------------------------------------------------------------------
    def _reader(self) -> Tx:
        tx = getattr(self._local, "tx", None)
        if tx is None:
            tx = Tx(_connect(self.path, readonly=True))
            self._local.tx = tx
        return tx

    async def read(self, fn: Callable[[Tx], T]) -> T:
        return await asyncio.to_thread(self.read_sync, fn)

    def read_sync(self, fn: Callable[[Tx], T]) -> T:
        tx = self._reader()
        tx.conn.execute("BEGIN")
        try:
            return fn(tx)
        finally:
            tx.conn.execute("COMMIT")


class _WriteRaised(Exception):
    """A write of an optimistic group raised: the group was rolled back, to run again isolated."""


def _applied(conn: sqlite3.Connection) -> dict[int, str]:
    """version → checksum of the migrations this journal recorded (none for a new or pre-migration file)."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").fetchone()
    if not exists:
        return {}
    return {int(r[0]): str(r[1]) for r in conn.execute("SELECT version, checksum FROM schema_migrations")}


def migrate_sqlite(conn: sqlite3.Connection, *, apply: bool = True) -> SchemaStatus:
    """Bring the journal on ``conn`` to the latest schema (``apply``), or only say where it stands.

    ``BEGIN IMMEDIATE`` takes SQLite's write lock before the version is read, so two
    processes opening one new journal at once run each migration once; each migration and
    its ``schema_migrations`` row commit together, so a crash leaves a whole version.
    """
    if not apply:
        return plan("sqlite", _applied(conn))
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(MIGRATIONS_DDL)
            status = plan("sqlite", _applied(conn))
            if status.up_to_date:
                conn.execute("COMMIT")
                return status
            mig = status.pending[0]
            for statement in split_statements(mig.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
                (mig.version, mig.name, mig.checksum, datetime.now(UTC).isoformat(timespec="microseconds")),
            )
            conn.execute("COMMIT")
            log.info("journal.migrated", version=mig.version, name=mig.name)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise


def open_journal(
    url: str, *, group_commit_ms: float = 2.0, readonly: bool = False, auto_migrate: bool = True,
    clock: Clock | None = None,
) -> SqliteJournal:
    """Open the journal named by ``url`` (``sqlite:///path``). PostgreSQL is not built yet."""
    if url.startswith("sqlite:///"):
        return SqliteJournal(
            url[len("sqlite:///") :], group_commit_ms=group_commit_ms, readonly=readonly, auto_migrate=auto_migrate,
            clock=clock,
        ).open()
    if url.startswith(("postgresql://", "postgres://")):
        raise JournalError("the PostgreSQL journal is not available in this version", code="JOURNAL_BACKEND")
    raise JournalError(f"unsupported journal url {url!r}", code="JOURNAL_BACKEND")
