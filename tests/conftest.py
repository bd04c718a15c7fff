from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway.logging import configure_logging

_NO_CORPUS = "../shared/corpus absent: the ANS sample runs of the acceptance tests were not collected"


def pytest_report_header() -> str:
    from tests.support import CORPUS

    return f"corpus: {CORPUS}" if CORPUS.is_dir() else f"corpus: {_NO_CORPUS}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    # said at the end too, where `pytest -q` (which drops the header) still shows it
    from tests.support import CORPUS

    if not CORPUS.is_dir():
        terminalreporter.write_line(_NO_CORPUS)


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
