"""Versioned schema migrations, the same scheme for every SQL backend.

Migrations are files ``gateway/journal/sql/migrations/<dialect>/NNNN_name.sql``, numbered
from 1 without gaps. A backend records each one it applied in ``schema_migrations`` with
the SHA-256 of its text, in the transaction that ran it, so a journal is always at a
version that some release of Relais knew.

Why checksums: a migration that was edited after it shipped would leave journals that
say "version 3" but differ. :func:`plan` refuses that rather than guess. Why refuse a
journal newer than the code: an older Relais writing to a newer schema can break
invariants the newer one relies on (a rollback of the binary must come with a restore).

A journal made before migrations existed has the tables of ``0001_initial`` and no
``schema_migrations``: it counts as version 0, and ``0001_initial`` (``CREATE … IF NOT
EXISTS`` only) adopts it unchanged.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

from gateway.errors import JournalError

__all__ = ["Migration", "SchemaStatus", "available", "plan", "split_statements", "MIGRATIONS_DDL"]

_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

#: the bookkeeping table, created by the runner before any migration (same text on every backend)
MIGRATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True)
class SchemaStatus:
    """Where a journal's schema stands against the migrations this Relais ships."""

    dialect: str
    current: int
    latest: int
    pending: tuple[Migration, ...]

    @property
    def up_to_date(self) -> bool:
        return not self.pending

    def describe(self) -> str:
        if self.up_to_date:
            return f"schema version {self.current} (up to date)"
        names = ", ".join(m.label for m in self.pending)
        return f"schema version {self.current}, this relais needs {self.latest} (pending: {names})"


@cache
def available(dialect: str) -> tuple[Migration, ...]:
    """The migrations shipped for ``dialect``, in order; a gap or a stray file is a packaging bug."""
    folder = resources.files(f"gateway.journal.sql.migrations.{dialect}")
    found: list[Migration] = []
    for entry in folder.iterdir():
        m = _FILE.fullmatch(entry.name)
        if m is None:
            continue
        found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    if [mig.version for mig in found] != list(range(1, len(found) + 1)):
        raise JournalError(f"{dialect} migrations are not numbered 1..N: {[mig.label for mig in found]}",
                           code="JOURNAL_MIGRATIONS_BROKEN")
    return tuple(found)


def plan(dialect: str, applied: Mapping[int, str]) -> SchemaStatus:
    """Compare what a journal recorded (version → checksum) with what we ship."""
    shipped = available(dialect)
    latest = len(shipped)
    current = max(applied, default=0)
    if current > latest:
        raise JournalError(
            f"the journal's schema version {current} is newer than this relais knows ({latest}): "
            "upgrade relais, or restore the journal that matches this version",
            code="JOURNAL_SCHEMA_NEWER",
        )
    for mig in shipped[:current]:
        recorded = applied.get(mig.version)
        if recorded is None:
            raise JournalError(f"the journal skipped migration {mig.label}", code="JOURNAL_SCHEMA_GAP")
        if recorded != mig.checksum:
            raise JournalError(
                f"migration {mig.label} differs from the one this journal applied (checksum mismatch)",
                code="JOURNAL_MIGRATION_CHANGED",
            )
    return SchemaStatus(dialect, current, latest, shipped[current:])


def require_current(status: SchemaStatus, where: str) -> None:
    """Refuse to work on an old schema: the operator runs ``relais migrate`` (or lets serve do it)."""
    if not status.up_to_date:
        raise JournalError(
            f"journal {where}: {status.describe()}; run `relais migrate` "
            "(or start serve with journal.auto_migrate = true)",
            code="JOURNAL_SCHEMA_OLD",
        )


def split_statements(sql: str) -> list[str]:
    """A migration script as statements, cut where SQLite's own parser says one is complete.

    Each statement then runs inside the migration's transaction (``executescript`` would
    commit first, and a failed migration must leave nothing behind).
    """
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines(keepends=True):
        current.append(line)
        text = "".join(current)
        if sqlite3.complete_statement(text):
            if text.strip(" \t\r\n;") and not _only_comments(text):
                statements.append(text.strip())
            current = []
    rest = "".join(current).strip()
    if rest and not _only_comments(rest):
        raise JournalError(f"migration ends with an incomplete statement: {rest[:60]!r}",
                           code="JOURNAL_MIGRATIONS_BROKEN")
    return statements


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") or line.strip() == ";"
               for line in text.splitlines())
