from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.logging import configure_logging


def pytest_report_header() -> str:
    from tests.support import CORPUS

    if CORPUS.is_dir():
        return f"corpus: {CORPUS}"
    return "corpus: ../shared/corpus absent; the ANS sample runs of the acceptance tests are not collected"


@pytest.fixture(autouse=True, scope="session")
def _quiet_json_logs() -> None:
    # JSON logs to the current stderr (captured by pytest), warnings and above.
    configure_logging("warning")


# --- PostgreSQL (tests/pg_support.py): a session server, a fresh database per test -------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of the session's PostgreSQL server (admin: the ``postgres`` database); skips without one."""
    from tests.pg_support import pg_server_url, stop_pg_server

    url = pg_server_url()
    try:
        yield url
    finally:
        stop_pg_server()


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """The URL of a fresh, empty, uniquely named database, dropped (WITH (FORCE)) after the test."""
    from tests.pg_support import fresh_database

    with fresh_database(pg_server) as url:
        yield url
