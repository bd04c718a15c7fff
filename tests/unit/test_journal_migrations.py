"""Versioned migrations of the SQLite journal: empty, pre-migration, changed, newer, refused, failed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.errors import JournalError
from gateway.journal import migrate
from gateway.journal.migrate import Migration, available, split_statements
from gateway.journal.sqlite import SqliteJournal


def _versions(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        return [(int(v), str(c)) for v, c in conn.execute("SELECT version, checksum FROM schema_migrations ORDER BY 1")]


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_an_empty_journal_gets_every_migration_with_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path).open()
    journal.close_sync()
    shipped = available("sqlite")
    assert _versions(path) == [(m.version, m.checksum) for m in shipped]
    assert journal.schema is not None and journal.schema.up_to_date
    assert {"exchanges", "deliveries", "attempts", "audit", "schema_migrations"} <= _tables(path)


def test_a_journal_from_before_migrations_is_adopted_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as conn:  # what relais created before versioned migrations
        conn.executescript(available("sqlite")[0].sql)
        conn.execute(
            "INSERT INTO exchanges (id, seq, received_at, listener, sha256, size, status, updated_at) "
            "VALUES ('x1', 1, '2026-01-01T00:00:00+00:00', 'mllp', 'ab', 2, 'accepted', '2026-01-01T00:00:00+00:00')"
        )
    SqliteJournal(path).open().close_sync()
    assert [v for v, _ in _versions(path)] == [m.version for m in available("sqlite")]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id, status FROM exchanges").fetchall() == [("x1", "accepted")]


def test_a_second_open_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    SqliteJournal(path).open().close_sync()
    before = _versions(path)
    SqliteJournal(path).open().close_sync()
    assert _versions(path) == before


def test_an_edited_migration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    SqliteJournal(path).open().close_sync()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(JournalError) as err:
        SqliteJournal(path).open()
    assert err.value.code == "JOURNAL_MIGRATION_CHANGED"
    assert "0001_initial" in err.value.message


def test_a_journal_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    SqliteJournal(path).open().close_sync()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 'x', '2030-01-01T00:00:00+00:00')")
    for readonly in (False, True):
        with pytest.raises(JournalError) as err:
            SqliteJournal(path, readonly=readonly).open()
        assert err.value.code == "JOURNAL_SCHEMA_NEWER"
        assert "999" in err.value.message and "upgrade relais" in err.value.message


def _with_extra(monkeypatch: pytest.MonkeyPatch, sql: str) -> Migration:
    extra = Migration(len(available("sqlite")) + 1, "extra", sql)
    shipped = available("sqlite")
    monkeypatch.setattr(migrate, "available", lambda dialect: (*shipped, extra) if dialect == "sqlite" else ())
    return extra


def test_serve_mode_without_auto_migrate_refuses_an_old_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal.db"
    SqliteJournal(path).open().close_sync()
    extra = _with_extra(monkeypatch, "CREATE TABLE extra_table (a TEXT);")
    for kwargs in ({"auto_migrate": False}, {"readonly": True}):
        with pytest.raises(JournalError) as err:
            SqliteJournal(path, **kwargs).open()  # type: ignore[arg-type]
        assert err.value.code == "JOURNAL_SCHEMA_OLD"
        assert extra.label in err.value.message and "relais migrate" in err.value.message
    assert "extra_table" not in _tables(path)
    SqliteJournal(path).open().close_sync()  # the default: serve applies it
    assert "extra_table" in _tables(path)
    assert _versions(path)[-1] == (extra.version, extra.checksum)


def test_a_failing_migration_leaves_the_previous_version_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal.db"
    SqliteJournal(path).open().close_sync()
    before = _versions(path)
    _with_extra(monkeypatch, "CREATE TABLE half_done (a TEXT);\nINSERT INTO no_such_table VALUES (1);\n")
    with pytest.raises(sqlite3.OperationalError):
        SqliteJournal(path).open()
    assert _versions(path) == before
    assert "half_done" not in _tables(path)


def test_statements_are_split_where_sqlite_says_they_end() -> None:
    sql = "-- a comment; with a semicolon\nCREATE TABLE t (a TEXT DEFAULT ';');\n\nCREATE INDEX i ON t(a);\n-- tail\n"
    assert split_statements(sql) == [
        "-- a comment; with a semicolon\nCREATE TABLE t (a TEXT DEFAULT ';');", "CREATE INDEX i ON t(a);"]
    with pytest.raises(JournalError):
        split_statements("CREATE TABLE t (a TEXT")


def test_migrate_command_reports_then_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["migrate", "--data-dir", str(data), "--status"]) == 1  # nothing yet: everything pending
    assert "pending: 0001_initial" in capsys.readouterr().out
    assert not (data / "journal.db").exists()  # --status changes nothing
    assert main(["migrate", "--data-dir", str(data)]) == 0
    assert "applied 0001_initial" in capsys.readouterr().out
    assert main(["migrate", "--data-dir", str(data), "--status"]) == 0
    assert "up to date" in capsys.readouterr().out
    extra = _with_extra(monkeypatch, "CREATE TABLE extra_table (a TEXT);")
    assert main(["migrate", "--journal", f"sqlite:///{data / 'journal.db'}", "--json"]) == 0
    out = capsys.readouterr().out
    assert f'"applied": ["{extra.label}"]' in out and '"pending": []' in out
