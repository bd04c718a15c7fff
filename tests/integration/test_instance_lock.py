"""One `relais serve` per SQLite data directory: a second one is refused, naming the first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.errors import JournalError
from gateway.journal.instance_lock import InstanceLock
from tests.acceptance.test_crash import free_port, start_serve


def test_a_second_holder_is_refused_with_the_first_ones_description(tmp_path: Path) -> None:
    first = InstanceLock(tmp_path / "journal.db")
    first.acquire(mllp="mllp://127.0.0.1:2575")
    try:
        with pytest.raises(JournalError) as err:
            InstanceLock(tmp_path / "journal.db").acquire()
        assert err.value.code == "JOURNAL_IN_USE"
        assert f"pid {os.getpid()}" in err.value.message and "mllp://127.0.0.1:2575" in err.value.message
    finally:
        first.release()
    again = InstanceLock(tmp_path / "journal.db")
    again.acquire()  # released: free again
    again.release()


def test_a_second_serve_on_one_data_directory_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_serve(data, free_port(), free_port())
    try:
        second = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(data), "--mllp-port", str(free_port()),
             "--http-port", str(free_port())],
            capture_output=True, timeout=60, env={**os.environ, "RELAIS_GATEWAY_LOG_LEVEL": "warning"},
        )
        assert second.returncode == 75, second.stderr  # EX_TEMPFAIL: try again when the other one stops
        lines = second.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "in use by another relais serve" in lines[0], lines
        assert f"pid {first.pid}" in lines[0] and "mllp://127.0.0.1:" in lines[0]
        assert b"relais ready" not in second.stdout
    finally:
        first.send_signal(signal.SIGKILL)  # the kernel drops a killed holder's lock: no stale file to clean
        first.wait(timeout=30)
    third = start_serve(data, free_port(), free_port())
    third.send_signal(signal.SIGTERM)
    assert third.wait(timeout=60) == 0
