"""A large accepted message is written to the journal once, not once per status change.

SQLite rewrites a whole row, blob included, when an UPDATE changes its size; the exchange
row used to be inserted with its raw bytes and then updated (queued, held, rejected …),
writing a large message twice into the WAL and holding the single journal writer - and
every other sender's commit - twice as long (measured: WAL growth 2.04 x the message for
a queued MDM, 1.03 x now). The ADT case ("received" to "accepted", same size) was
rewritten in place by SQLite already and stays so.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from adapters.mllp_client import MllpClient
from gateway.testing import with_control_id
from tests import builders
from tests.support import field, fixture_bytes, mllp_port, running


@pytest.mark.parametrize("fixture", ["adt_a01_vali.hl7", "mdm_t02_initial.hl7"])
async def test_large_accepted_message_writes_its_raw_bytes_once(
    tmp_path: Path, fixture: str
) -> None:
    notes = b"".join(b"NTE|%d||%s\r" % (i, b"n" * 1300) for i in range(3000))
    base = fixture_bytes(fixture).replace(b"\r\n", b"\r").replace(b"\n", b"\r").rstrip(b"\r")
    raw = base + b"\r" + notes
    assert len(raw) > 3_900_000
    async with running(builders.settings(tmp_path)) as service:
        journal = service.journal
        wal = Path(journal.path + "-wal")
        async with MllpClient("127.0.0.1", mllp_port(service), timeout=30) as client:
            await client.send(fixture_bytes("adt_a01_vali.hl7"))  # warm-up: tables and indexes exist
            with sqlite3.connect(journal.path) as conn:  # empty the WAL: what follows is this message's
                assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
            before = os.path.getsize(wal)
            raw = with_control_id(raw, "BIG1")
            ack = await client.send(raw)
        assert field(ack, "MSA", 1) == "AA", ack[:300]
        grown = os.path.getsize(wal) - before
        assert grown < 1.3 * len(raw), f"WAL grew by {grown} bytes for a {len(raw)}-byte message"
        stored = journal.read_sync(lambda tx: tx.exchange_bodies(tx.list_exchanges(limit=1)[0]["id"]))
        assert bytes(stored["raw"]) == raw
