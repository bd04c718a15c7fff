"""The PostgreSQL test infrastructure itself: the ``pg_url`` fixture and pg_server_url()'s skip / fail rule."""

from __future__ import annotations

import os

import psycopg
import pytest

from tests import pg_support

pytestmark = pytest.mark.postgres

BODY = b"\x0bMSH|^~\\&|\x00\xff\x1c\r"


def test_pg_url_is_a_working_empty_database(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, body bytea NOT NULL)")
        conn.execute("INSERT INTO t VALUES (%s, %s)", (1, BODY))
        conn.commit()
    with psycopg.connect(pg_url) as conn:  # committed: seen from another connection
        assert conn.execute("SELECT id, body FROM t").fetchall() == [(1, BODY)]


def test_the_throwaway_cluster_is_durable_and_roomy(pg_url: str) -> None:
    if pg_support.ENV_URL in os.environ:
        pytest.skip("RELAIS_TEST_PG_URL: the server's settings are its owner's")
    with psycopg.connect(pg_url) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'max_connections')"
        ).fetchall())
    assert settings["fsync"] == "on" and settings["synchronous_commit"] == "on"
    assert int(settings["max_connections"]) >= 200


def test_two_pg_url_databases_are_distinct(pg_url: str, pg_server: str) -> None:
    with pg_support.fresh_database(pg_server) as other:  # what pg_url's fixture runs, a second time
        assert other != pg_url
        with psycopg.connect(pg_url) as a, psycopg.connect(other) as b:
            name_a = a.execute("SELECT current_database()").fetchone()
            name_b = b.execute("SELECT current_database()").fetchone()
            assert name_a != name_b
            a.execute("CREATE TABLE only_in_a (x int)")
            a.commit()
            assert b.execute("SELECT to_regclass('only_in_a')").fetchone() == (None,)
        dropped = name_b[0] if name_b else ""
    with psycopg.connect(pg_server) as admin:  # and the second one is dropped on exit
        assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dropped,)).fetchone() is None


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RELAIS_TEST_PG_URL, no binaries, nothing cached (restored afterwards for the session's server)."""
    monkeypatch.delenv(pg_support.ENV_URL, raising=False)
    monkeypatch.setattr(pg_support, "find_pg_bindir", lambda: None)
    monkeypatch.setattr(pg_support, "_url", None)
    monkeypatch.setattr(pg_support, "_cluster", None)


def test_pg_server_url_fails_under_ci_without_a_server(no_server: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no PostgreSQL server: set RELAIS_TEST_PG_URL or install postgresql"):
        pg_support.pg_server_url()


def test_pg_server_url_skips_locally_without_a_server(no_server: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL server: set RELAIS_TEST_PG_URL or install postgresql"):
        pg_support.pg_server_url()


def test_pg_server_url_prefers_the_environment(no_server: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pg_support.ENV_URL, "postgresql://someone@db.example:5433/admin")
    assert pg_support.pg_server_url() == "postgresql://someone@db.example:5433/admin"
    assert pg_support.database_url(pg_support.pg_server_url(), "x") == "postgresql://someone@db.example:5433/x"
