"""Open the journal a URL names, whichever backend it is: ``sqlite:///path``, ``postgresql://…``,
or ``memory://`` (a fresh journal in this process, gone when it ends: for checks and tests)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from gateway.errors import JournalError
from gateway.journal.migrate import SchemaStatus, plan
from gateway.journal.url import redact_url

__all__ = ["open_journal", "inspect_schema", "migrate_journal", "redact_url", "backend_of"]


def backend_of(url: str) -> str:
    if url.startswith("memory://"):
        return "memory"
    if url.startswith("sqlite:///"):
        return "sqlite"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgres"
    raise JournalError(f"unsupported journal url {redact_url(url)!r} (sqlite:///PATH, postgresql://… or memory://)",
                       code="JOURNAL_BACKEND")


def open_journal(url: str, **options: Any) -> Any:
    """The opened journal (``readonly``, ``group_commit_ms``, ``auto_migrate``, ``clock``,
    ``pool_size`` as keywords; each backend ignores what does not apply to it).

    ``memory://`` is a new, empty journal each time (only ``clock`` of the keywords matters to it).
    """
    pool_size = options.pop("pool_size", None)
    backend = backend_of(url)
    if backend == "memory":
        from gateway.journal.memory import MemoryJournal

        return MemoryJournal(clock=options.get("clock"))
    if backend == "sqlite":
        from gateway.journal.sqlite import open_journal as open_sqlite

        return open_sqlite(url, **options)
    from gateway.journal.postgres import PostgresJournal

    # group_commit_ms: PostgreSQL commits each transaction itself (its own group commit)
    return PostgresJournal(
        url, auto_migrate=options.get("auto_migrate", True), clock=options.get("clock"),
        pool_size=pool_size or 10, readonly=bool(options.get("readonly", False)),
    ).open()


def inspect_schema(url: str) -> SchemaStatus:
    """Where the journal's schema stands, without changing anything (a missing file is version 0)."""
    backend = backend_of(url)
    if backend == "memory":  # a memory journal is born with the latest schema
        from gateway.journal.memory import latest_schema

        return latest_schema()
    if backend == "sqlite":
        from gateway.journal.sqlite import _applied

        path = Path(url[len("sqlite:///") :])
        if not path.exists():
            return plan("sqlite", {})
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return plan("sqlite", _applied(conn))
        finally:
            conn.close()
    import psycopg

    from gateway.journal.postgres import applied_migrations

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=30) as pg:
            return plan("postgres", applied_migrations(pg))
    except psycopg.Error as exc:
        raise JournalError(f"journal {redact_url(url)}: {type(exc).__name__}: {redact_url(str(exc))}",
                           code="JOURNAL_UNAVAILABLE") from None


def migrate_journal(url: str) -> SchemaStatus:
    """Apply every pending migration (creating an empty journal if there is none)."""
    backend = backend_of(url)
    if backend == "memory":
        from gateway.journal.memory import latest_schema

        return latest_schema()
    if backend == "sqlite":
        from gateway.journal.sqlite import SqliteJournal

        journal = SqliteJournal(url[len("sqlite:///") :], auto_migrate=True).open()
        journal.close_sync()
        assert journal.schema is not None
        return journal.schema
    import psycopg

    from gateway.journal.postgres import migrate_postgres

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=30) as pg:
            return migrate_postgres(pg)
    except psycopg.Error as exc:
        raise JournalError(f"journal {redact_url(url)}: {type(exc).__name__}: {redact_url(str(exc))}",
                           code="JOURNAL_UNAVAILABLE") from None


