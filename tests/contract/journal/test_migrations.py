"""Schema migrations: a new database gets every one; a journal on the previous schema keeps its rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.journal.migrate import MIGRATIONS_DDL, available, split_statements
from tests.contract.journal.conftest import MIGRATING, open_backend

ROW = ("old-1", 1, "2026-01-01T00:00:00.000000+00:00", "mllp", b"MSH|old\r", "ab", 8, "accepted",
       "2026-01-01T00:00:00.000000+00:00")
INSERT = ("INSERT INTO exchanges (id, seq, received_at, listener, raw, sha256, size, status, updated_at) "
          "VALUES ({p})")


@pytest.mark.parametrize("backend", MIGRATING)
async def test_a_new_database_gets_every_migration(journal: Any, backend: str, clock: Any) -> None:
    shipped = available(backend)
    assert shipped
    assert journal.schema is not None and journal.schema.up_to_date
    assert (journal.schema.current, journal.schema.latest) == (len(shipped), len(shipped))
    assert await journal.hold_lease("duty", "me", 60)  # the latest tables are there


def _previous_sqlite(path: Path) -> None:
    """A journal as the previous release left it: every migration but the last, recorded, and a row."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(MIGRATIONS_DDL)
        for mig in available("sqlite")[:-1]:
            for statement in split_statements(mig.sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?, ?)",
                         (mig.version, mig.name, mig.checksum, "2026-01-01T00:00:00+00:00"))
        conn.execute(INSERT.format(p=", ".join("?" * len(ROW))), ROW)
    finally:
        conn.close()


def _previous_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(MIGRATIONS_DDL)
        for mig in available("postgres")[:-1]:
            conn.execute(mig.sql)
            conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s, %s)",
                         (mig.version, mig.name, mig.checksum, "2026-01-01T00:00:00+00:00"))
        # PostgreSQL keeps raw bytes apart from the summary, in a table partitioned by received time
        conn.execute("INSERT INTO exchanges (id, seq, received_at, listener, sha256, size, status, updated_at) "
                     "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", ROW[:4] + ROW[5:])
        conn.execute("INSERT INTO exchange_raw (exchange_id, received_at, raw) VALUES (%s, %s, %s)",
                     (ROW[0], ROW[2], ROW[4]))


@pytest.mark.parametrize("which", MIGRATING)
async def test_a_journal_on_the_previous_schema_is_migrated_with_its_rows(
        which: str, request: pytest.FixtureRequest, clock: Any, tmp_path: Path) -> None:
    assert len(available(which)) >= 2, "no previous schema: this test needs at least two migrations"
    url = None
    if which == "sqlite":
        _previous_sqlite(tmp_path / "journal.db")
    else:
        url = request.getfixturevalue("pg_url")
        _previous_postgres(url)
    journal = await open_backend(which, request, clock, tmp_path, url=url)
    try:
        assert journal.schema.up_to_date and journal.schema.current == len(available(which))
        old = await journal.get_exchange("old-1", bodies=True)
        assert (old.status, old.raw, old.received_at) == ("accepted", b"MSH|old\r", ROW[2])
        assert await journal.hold_lease("duty", "me", 60)
        assert await journal.count_exchanges() == (1, False)
    finally:
        await journal.close()
