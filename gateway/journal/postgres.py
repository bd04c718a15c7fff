"""PostgreSQL journal: several Relais instances on one database.

Design: **psycopg 3's synchronous API, run from a thread pool**, not an asyncio driver.
The journal's operations (``gateway/journal/ops``) are plain functions over a
:class:`~gateway.journal.session.Session`; :class:`~gateway.journal.tx.Tx` is that session
for SQLite *and* PostgreSQL (each with its own query files), so every operation is written
once and means the same on both backends. An asyncio driver would need a second, async copy
of every operation. We measured the cost of this choice (bench/results-pg-drivers.md): psycopg
sync from threads is within noise of asyncpg on our workload, and best on claims.

* ``_write(fn)``: a connection from a ``psycopg_pool.ConnectionPool``, ``BEGIN`` (READ
  COMMITTED: a statement after a lock sees what the lock holder committed), ``fn(tx)``,
  ``COMMIT``; it returns only after the COMMIT, so an ACK sent after ``await`` means the
  bytes are durable (``synchronous_commit=on``). A serialization failure or a deadlock
  (SQLSTATE 40001 / 40P01) rolls back and runs ``fn`` again, a few times.
* ``_read(fn)``: ``REPEATABLE READ READ ONLY``: one consistent snapshot for the whole function.
* The threads: a ``ThreadPoolExecutor`` as large as the pool, so no thread waits for a connection.
* Across instances: claims use ``FOR UPDATE SKIP LOCKED`` (``claim_due`` in deliveries.sql),
  keys are serialised with transaction-scoped advisory locks, lease times come from the
  database clock (``SELECT now()``), and ``notify_work`` sends ``pg_notify('relais_work')``
  at commit; :meth:`PostgresJournal.on_work` listens for it on a dedicated connection.
* Schema: versioned migrations from ``sql/migrations/postgres/`` (``gateway.journal.migrate``),
  every pending one applied in one transaction under ``LOCK TABLE schema_migrations IN ACCESS
  EXCLUSIVE MODE``, so instances starting together migrate once.
* Bodies (raw bytes, documents, attempt request/response) sit in monthly partitions;
  :meth:`PostgresJournal.prune` prunes row by row as SQLite does, then drops the months that
  no unfinished exchange needs any more, which gives their disk space back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from gateway.errors import JournalError
from gateway.journal.engine import SessionJournal
from gateway.journal.migrate import MIGRATIONS_DDL, SchemaStatus, plan, require_current
from gateway.journal.queries import Queries
from gateway.journal.rows import JournalStats
from gateway.journal.tx import Tx
from gateway.ports import Clock

__all__ = ["PostgresJournal", "migrate_postgres", "applied_migrations", "WORK_CHANNEL"]

T = TypeVar("T")
log = structlog.get_logger(__name__)

#: the NOTIFY channel of ``Tx.notify_work``
WORK_CHANNEL = "relais_work"
#: SQLSTATEs after which the whole transaction may simply run again
RETRYABLE = frozenset({"40001", "40P01"})
WRITE_RETRIES = 5
#: monthly body partitions kept ready ahead of the current month (and one behind)
MONTHS_AHEAD = 3
_MIGRATION_LOCK = "relais:schema-migrations"


def _redacted(url: str) -> str:
    from gateway.journal.url import redact_url

    return redact_url(url)


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Every pooled connection: UTC times, durable commits, dict rows, explicit transactions."""
    conn.autocommit = True
    conn.row_factory = dict_row  # type: ignore[assignment]
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET synchronous_commit = on")


def applied_migrations(conn: psycopg.Connection[Any]) -> dict[int, str]:
    """version → checksum of the migrations this database recorded (none for an empty one)."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL AS present").fetchone()
    if not row or not _first(row):
        return {}
    return {int(_at(r, 0)): str(_at(r, 1)) for r in conn.execute("SELECT version, checksum FROM schema_migrations")}


def _first(row: Any) -> Any:
    return _at(row, 0)


def _at(row: Any, i: int) -> Any:
    return list(row.values())[i] if isinstance(row, dict) else row[i]


def migrate_postgres(conn: psycopg.Connection[Any], *, apply: bool = True) -> SchemaStatus:
    """Bring the database on ``conn`` (autocommit) to the latest schema, or only say where it stands.

    All pending migrations run in **one** transaction that first takes ``schema_migrations``
    in ACCESS EXCLUSIVE mode: a second instance starting at the same moment waits, then
    finds nothing left to do. A failed migration leaves nothing behind (PostgreSQL DDL is
    transactional).
    """
    if not apply:
        return plan("postgres", applied_migrations(conn))
    with conn.transaction():
        # CREATE TABLE IF NOT EXISTS is not safe against a concurrent creator: serialise it
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_MIGRATION_LOCK,))
        conn.execute(MIGRATIONS_DDL)
        conn.execute("LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
        status = plan("postgres", applied_migrations(conn))
        for mig in status.pending:
            conn.execute(mig.sql.encode("utf-8"))  # no parameters: the whole script at once
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (%s, %s, %s, %s)",
                (mig.version, mig.name, mig.checksum, datetime.now(UTC).isoformat(timespec="microseconds")),
            )
            log.info("journal.migrated", version=mig.version, name=mig.name, backend="postgres")
    return plan("postgres", applied_migrations(conn)) if status.pending else status


class PostgresJournal(SessionJournal):
    """The shared journal: ``_write`` durable on return, ``_read`` on a consistent snapshot."""

    backend = "postgres"
    shared = True

    def __init__(
        self, url: str, *, pool_size: int = 10, auto_migrate: bool = True, clock: Clock | None = None,
        connect_timeout: float = 30.0, readonly: bool = False,
    ) -> None:
        self.url = url
        self.readonly = readonly  # reads only (command-line tools): no migration, no partitions, no writes
        self.pool_size = max(int(pool_size), 1)
        self.auto_migrate = auto_migrate
        self.connect_timeout = connect_timeout
        self.schema: SchemaStatus | None = None
        if clock is not None:
            self.clock = clock
        self._queries = Queries.load("postgres")
        self._pool: ConnectionPool[Any] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._listeners: set[asyncio.Task[None]] = set()
        self._closed = False
        self.commits = 0
        self.commit_errors = 0
        self.retries = 0  # transactions run again after 40001 / 40P01
        self._renew_at: datetime | None = None  # when the body partitions ahead are made again
        self._renewing = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> PostgresJournal:
        where = _redacted(self.url)
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=int(self.connect_timeout)) as conn:
                self.schema = migrate_postgres(conn, apply=self.auto_migrate and not self.readonly)
        except psycopg.Error as exc:
            raise JournalError(f"journal {where}: {type(exc).__name__}: {_redacted(str(exc))}",
                               code="JOURNAL_UNAVAILABLE") from None
        require_current(self.schema, where)
        self._pool = ConnectionPool(
            # no check on checkout (a round trip per transaction): a connection found broken
            # before COMMIT is simply retried on another (see write_sync / read_sync)
            self.url, min_size=1, max_size=self.pool_size, configure=_configure, open=False,
            name="relais-journal",
            kwargs={"connect_timeout": int(self.connect_timeout)},
        )
        try:
            self._pool.open(wait=True, timeout=self.connect_timeout)
        except Exception as exc:
            self._pool.close()
            raise JournalError(f"journal {where}: no connection ({type(exc).__name__})",
                               code="JOURNAL_UNAVAILABLE") from None
        self._executor = ThreadPoolExecutor(max_workers=self.pool_size, thread_name_prefix="journal-pg")
        if not self.readonly:
            self.ensure_partitions_sync(self.clock.now())
        return self

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._listeners):
            task.cancel()
        for task in list(self._listeners):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.to_thread(self._shutdown)

    def close_sync(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._listeners):
            task.cancel()
        self._shutdown()

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._pool is not None:
            self._pool.close()

    # -- the port's needs ----------------------------------------------------------------------
    @property
    def location(self) -> None:
        return None  # no local file: disk space is the database server's business

    @property
    def can_vacuum(self) -> bool:
        return False

    def stats(self) -> JournalStats:
        return JournalStats(self.commits, self.commit_errors)

    def _now(self, s: Any) -> datetime:
        """The database's clock: instances whose clocks differ still agree on when a lease ran out."""
        assert isinstance(s, Tx)
        return s.server_now()

    async def _write(self, fn: Callable[[Tx], T], *, large: bool = False) -> T:
        if self.readonly:
            raise JournalError("journal is read-only", code="JOURNAL_CLOSED")
        return await self._run(self.write_sync, fn)

    async def _read(self, fn: Callable[[Tx], T]) -> T:
        return await self._run(self.read_sync, fn)

    async def _run(self, how: Callable[[Callable[[Tx], T]], T], fn: Callable[[Tx], T]) -> T:
        if self._closed or self._executor is None:
            raise JournalError("journal is closed", code="JOURNAL_CLOSED")
        return await asyncio.get_running_loop().run_in_executor(self._executor, how, fn)

    def _connection(self) -> Any:
        if self._closed or self._pool is None:
            raise JournalError("journal is closed", code="JOURNAL_CLOSED")
        return self._pool.connection()

    # -- transactions (in a pool thread) ---------------------------------------------------------
    def write_sync(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in one transaction and return once it is committed (blocking)."""
        self._renew_partitions_if_due()
        for attempt in range(WRITE_RETRIES + 1):
            with self._connection() as conn:
                tx = Tx(conn, self._queries)
                try:
                    conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
                    result = fn(tx)
                except psycopg.Error as exc:
                    _rollback(conn)
                    # nothing was committed: a conflict, or a connection that died (server restart,
                    # idle timeout) before COMMIT, runs again on a fresh connection
                    if (exc.sqlstate in RETRYABLE or conn.broken) and attempt < WRITE_RETRIES:
                        self.retries += 1
                        time.sleep(random.uniform(0, 0.005 * 2**attempt))  # noqa: S311 - jitter, not crypto
                        continue
                    raise
                except BaseException:
                    _rollback(conn)
                    raise
                try:
                    conn.execute("COMMIT")
                except psycopg.Error as exc:
                    _rollback(conn)
                    if exc.sqlstate in RETRYABLE and attempt < WRITE_RETRIES:
                        self.retries += 1
                        continue
                    self.commit_errors += 1
                    log.error("journal.commit_failed", error=type(exc).__name__, backend="postgres")
                    raise JournalError(f"journal commit failed: {type(exc).__name__}",
                                       code="JOURNAL_COMMIT") from None
                self.commits += 1
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def read_sync(self, fn: Callable[[Tx], T]) -> T:
        for attempt in range(2):
            with self._connection() as conn:
                try:
                    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    return fn(Tx(conn, self._queries))
                except psycopg.OperationalError:
                    if conn.broken and attempt == 0:
                        continue  # a connection that died while idle in the pool: once more, on another
                    raise
                finally:
                    _rollback(conn)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- LISTEN / NOTIFY ------------------------------------------------------------------------
    def on_work(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` whenever another instance (or this one) made work due (a hint: the dispatcher also polls)."""
        task = asyncio.get_running_loop().create_task(self._listen(wake), name="journal-listen")
        self._listeners.add(task)
        task.add_done_callback(self._listeners.discard)

    async def _listen(self, wake: Callable[[], None]) -> None:
        delay = 0.2
        while not self._closed:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=int(self.connect_timeout))
                async with conn:
                    await conn.execute(f"LISTEN {WORK_CHANNEL}")
                    delay = 0.2
                    wake()  # what was notified while we were not listening
                    async for _note in conn.notifies():
                        wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect: the dispatcher polls meanwhile
                log.warning("journal.listen_lost", error=type(exc).__name__, retry_in=round(delay, 1))
            if self._closed:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    # -- retention ------------------------------------------------------------------------------
    def ensure_partitions_sync(self, around: datetime) -> int:
        """The body partitions from the month before ``around`` to ``MONTHS_AHEAD`` months after."""
        year, month = (around.year, around.month - 1) if around.month > 1 else (around.year - 1, 12)
        first = f"{year:04d}-{month:02d}-01"
        nxt = (around.year + 1, 1) if around.month == 12 else (around.year, around.month + 1)
        # renewed by the first write of next month, so there are always MONTHS_AHEAD ready
        # (whether retention runs or not: a month without its partition would fill DEFAULT)
        self._renew_at = datetime(nxt[0], nxt[1], 1, tzinfo=UTC)
        return self.write_sync(lambda s: s.ensure_body_partitions(first, MONTHS_AHEAD + 2))

    def _renew_partitions_if_due(self) -> None:
        renew_at = self._renew_at
        if renew_at is None or self.clock.now() < renew_at or not self._renewing.acquire(blocking=False):
            return
        try:
            if self._renew_at is renew_at:  # not renewed meanwhile by another thread
                self._renew_at = None
                self.ensure_partitions_sync(self.clock.now())
        except Exception as exc:  # noqa: BLE001 - retried at the next write; DEFAULT takes bodies meanwhile
            self._renew_at = renew_at
            log.warning("journal.partitions_failed", error=type(exc).__name__)
        finally:
            self._renewing.release()


    async def prune(self, *, before: str, at: str, limit: int, errors_only: bool = False) -> int:
        """Prune up to ``limit`` finished exchanges as SQLite does; once none is left before
        ``before``, drop the months of bodies wholly before it that no unpruned exchange uses."""
        done = await self._write(lambda s: s.prune_batch(before=before, at=at, limit=limit, errors_only=errors_only))
        if done < limit:
            dropped = await self._write(lambda s: s.drop_body_partitions(before))
            if dropped:
                log.info("journal.partitions_dropped", count=dropped)
            # months ahead, never one retention would drop again at once
            ahead = max(self.clock.now(), datetime.fromisoformat(before))
            await self._write(lambda s: s.ensure_body_partitions(_month(ahead), MONTHS_AHEAD + 1))
        return done


def _rollback(conn: Any) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.execute("ROLLBACK")


def _month(at: datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}-01"
