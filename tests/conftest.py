from __future__ import annotations

import pytest

from gateway.logging import configure_logging


@pytest.fixture(autouse=True, scope="session")
def _quiet_json_logs() -> None:
    # JSON logs to the current stderr (captured by pytest), warnings and above.
    configure_logging("warning")
