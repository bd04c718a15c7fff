"""The journal contract: one parametrized ``journal`` fixture, every backend behind it.

Each test in this folder is written once against :class:`gateway.journal.base.Journal` and
runs on the memory, SQLite and PostgreSQL journals alike, with a ``clock`` the test controls
(the journal's clock wherever the backend takes one; PostgreSQL measures leases on the
database server's clock, so lease tests wait real, short durations through ``lapse``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.journal.rows import iso

BACKENDS = ("memory", "sqlite", "postgres")
_MODULES = {
    "memory": "gateway.journal.memory",
    "sqlite": "gateway.journal.sqlite",
    "postgres": "gateway.journal.postgres",
}
# Looked up once, at collection, without importing the module. A backend is skipped only
# while its module does not exist on the branch; once the file is there this condition is
# false for good, and an import error, a failed open or a wrong answer is a test failure.
# (No importorskip: that would also hide a backend module that exists but is broken.)
BUILT = {name: importlib.util.find_spec(module) is not None for name, module in _MODULES.items()}
NOT_BUILT = "backend not built on this branch"


def backend_param(name: str) -> Any:
    marks = [pytest.mark.skipif(not BUILT[name], reason=NOT_BUILT)]
    if name == "postgres":
        marks.append(pytest.mark.postgres)
    return pytest.param(name, id=name, marks=marks)


ALL = [backend_param(b) for b in BACKENDS]
SERVER = [backend_param("postgres")]  # several journal objects on one database
MIGRATING = [backend_param("sqlite"), backend_param("postgres")]


class FakeClock:
    """A ``gateway.ports.Clock`` that moves only when told (a minute behind real time, so a
    PostgreSQL server's clock sees everything the test stamped as already due)."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        self._n = 0

    def now(self) -> datetime:
        return self.at

    def new_id(self) -> str:
        self._n += 1
        return f"{self._n:08x}-{uuid.uuid4().hex[:8]}-{uuid.uuid4()}"[:36]

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)

    def stamp(self) -> str:
        """A fresh instant, one millisecond after the previous one: rows get distinct, ordered times."""
        self.at += timedelta(milliseconds=1)
        return iso(self.at)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def open_backend(backend: str, request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path,
                       url: str | None = None) -> Any:
    if backend == "memory":
        from gateway.journal.memory import MemoryJournal

        return MemoryJournal(clock=clock)
    if backend == "sqlite":
        from gateway.journal.sqlite import SqliteJournal

        return SqliteJournal(tmp_path / "journal.db", clock=clock).open()
    from gateway.journal.open import open_journal

    journal = open_journal(url or request.getfixturevalue("pg_contract_url"), clock=clock)
    if inspect.isawaitable(journal):
        journal = await journal
    return journal


@pytest.fixture(scope="session")
def pg_contract_db(pg_server: str) -> Iterator[str]:
    """One database for the session's contract tests (created like ``pg_url``'s, on the same server,
    so it skips and fails the same way); the first journal opened on it migrates it."""
    from tests.pg_support import fresh_database

    with fresh_database(pg_server, prefix="relais_contract") as url:
        yield url


@pytest.fixture
def pg_contract_url(pg_contract_db: str) -> str:
    """The session's database emptied of every row (the schema stays): what a fresh database is to
    the journal, at a small part of the cost of CREATE DATABASE plus the migrations for each test.
    The migration tests, which need a database without a schema, use ``pg_url`` itself."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_contract_db, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "AND c.relname <> 'schema_migrations'")]
        if tables:
            conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in tables)))
    return pg_contract_db


@pytest.fixture(params=ALL)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def journal(backend: str, request: pytest.FixtureRequest, clock: FakeClock,
                  tmp_path: Path) -> AsyncIterator[Any]:
    j = await open_backend(backend, request, clock, tmp_path)
    try:
        yield j
    finally:
        await j.close()


@pytest.fixture
def lapse(backend: str, clock: FakeClock) -> Any:
    """``await lapse(seconds)``: let a lease's time go by on the journal's clock."""

    async def go(seconds: float) -> None:
        if backend == "postgres":
            await asyncio.sleep(seconds)  # the database's clock: real time
        else:
            clock.advance(seconds)

    return go
