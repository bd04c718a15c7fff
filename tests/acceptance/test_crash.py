"""Crash test: SIGKILL `relais serve` while 8 connections push 2,000 messages; nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.mllp_client import MllpClient
from gateway.errors import DestinationUnavailable
from gateway.journal.sqlite import SqliteJournal
from tests.support import field, fixture_bytes

pytestmark = pytest.mark.slow

MESSAGES = 2000
CONNECTIONS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(data_dir: Path, mllp: int, http: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(data_dir), "--mllp-port", str(mllp),
         "--http-port", str(http), "--allow-test-ins"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "RELAIS_GATEWAY_LOG_LEVEL": "warning"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.startswith("relais ready"), line
    return proc


def message(n: int) -> bytes:
    base = fixture_bytes("adt_a01_vali.hl7")
    return base.replace(b"|ADT0001|", f"|C{n:06d}|".encode())


async def sender(port: int, numbers: list[int], acked: dict[str, bytes], kill: Callable[[], None]) -> None:
    try:
        async with MllpClient("127.0.0.1", port, timeout=10) as client:
            for n in numbers:
                raw = message(n)
                ack = await client.send(raw)
                if field(ack, "MSA", 1) == "AA":
                    acked[f"C{n:06d}"] = raw
                    kill()
    except (DestinationUnavailable, OSError, EOFError):
        return  # the server died under us: what was acknowledged so far is what counts


async def push_and_kill(port: int, proc: subprocess.Popen[bytes], kill_at: int) -> dict[str, bytes]:
    """Send from 8 connections; SIGKILL the server once ``kill_at`` messages were acknowledged."""
    acked: dict[str, bytes] = {}

    def kill() -> None:
        if len(acked) >= kill_at and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)

    chunks = [list(range(i, MESSAGES, CONNECTIONS)) for i in range(CONNECTIONS)]
    await asyncio.gather(*(sender(port, chunk, acked, kill) for chunk in chunks))
    return acked


def test_sigkill_loses_no_acknowledged_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    mllp, http = free_port(), free_port()
    proc = start_serve(data, mllp, http)
    kill_at = random.randint(100, MESSAGES - 200)  # a random moment in the middle of the stream
    try:
        acked = asyncio.run(push_and_kill(mllp, proc, kill_at))
    finally:
        proc.kill()
        proc.wait(10)
    assert kill_at <= len(acked) < MESSAGES, "the kill did not land in the middle of the stream"

    restarted = start_serve(data, mllp, http)  # restart: recovery must work on the crashed journal
    try:
        journal = SqliteJournal(data / "journal.db", readonly=True).open()
        rows = journal.read_sync(lambda tx: tx.list_exchanges(limit=MESSAGES * 2))
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(15) == 0  # SIGTERM: clean stop, exit 0
    stored = {r["control_id"]: r["sha256"] for r in rows}
    missing = [c for c in acked if c not in stored]
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:3]}"
    for control_id, raw in acked.items():
        assert stored[control_id] == hashlib.sha256(raw).hexdigest()
    print(f"killed after {kill_at} acks: {len(acked)} acknowledged, {len(rows)} stored", file=sys.stderr)


def test_sigkill_right_after_an_ack(tmp_path: Path) -> None:
    data = tmp_path / "data"
    mllp, http = free_port(), free_port()
    proc = start_serve(data, mllp, http)
    raw = message(1)

    async def one() -> bytes:
        async with MllpClient("127.0.0.1", mllp, timeout=10) as client:
            ack = await client.send(raw)
        proc.send_signal(signal.SIGKILL)  # the very moment the ACK is in our hands
        return ack

    try:
        ack = asyncio.run(one())
    finally:
        proc.kill()
        proc.wait(10)
    assert field(ack, "MSA", 1) == "AA"
    journal = SqliteJournal(data / "journal.db", readonly=True).open()
    (row,) = journal.read_sync(lambda tx: tx.list_exchanges())
    assert row["sha256"] == hashlib.sha256(raw).hexdigest()
    time.sleep(0)  # keep the module free of timing assertions
