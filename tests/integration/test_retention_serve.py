"""``serve`` applies retention by itself: the journal file shrinks while ACKs keep flowing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from adapters.mllp_client import MllpClient
from tests import builders
from tests.support import field, fixture_bytes, mllp_port, running

N_DOCUMENTS = 200


def with_id(raw: bytes, control_id: str) -> bytes:
    msh, sep, rest = raw.partition(b"\r")
    fields = msh.split(b"|")
    fields[9] = control_id.encode()
    return b"|".join(fields) + sep + rest


async def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_journal_shrinks_while_acks_keep_flowing(tmp_path: Path) -> None:
    mdm = fixture_bytes("mdm_t02_initial.hl7")
    journal_file = tmp_path / "data" / "journal.db"

    # day 1: documents arrive and are delivered to the file outbox; no retention yet
    async with running(builders.settings(tmp_path)) as service:
        async with MllpClient("127.0.0.1", mllp_port(service), timeout=10) as client:
            for n in range(N_DOCUMENTS):
                assert field(await client.send(with_id(mdm, f"D{n}")), "MSA", 1) == "AA"
        await wait_for(lambda: service.journal.read_sync(lambda tx: tx.count_exchanges_by_status()).get("delivered", 0)
                       == N_DOCUMENTS)
    before = os.path.getsize(journal_file)  # closed: the WAL is checkpointed into the file

    # later: retention is on (anything older than a second), and senders keep sending
    settings = builders.settings(tmp_path, retention={"days": 1 / 86400, "interval_minutes": 0.01, "batch_size": 20})
    async with running(settings) as service:
        acks: list[str] = []
        stop = asyncio.Event()

        async def keep_sending() -> None:
            async with MllpClient("127.0.0.1", mllp_port(service), timeout=10) as client:
                n = 0
                while not stop.is_set():
                    ack = await client.send(with_id(fixture_bytes("adt_a01_vali.hl7"), f"LIVE{n}"))
                    acks.append(field(ack, "MSA", 1))
                    n += 1

        sender = asyncio.create_task(keep_sending())
        await wait_for(lambda: (service.metrics.sample("relais_retention_pruned_exchanges_total") or 0) >= N_DOCUMENTS)
        stop.set()
        await sender
        pruned_during = len(acks)
        audit = await service.journal.read(lambda tx: tx.audit_rows())
    after = os.path.getsize(journal_file)

    assert pruned_during > 0 and set(acks) == {"AA"}  # every message sent meanwhile was stored and acknowledged
    assert after < before * 0.6, (before, after)  # the bodies' pages went back to the file system
    assert any(r["action"] == "prune" and r["actor"] == "retention" for r in audit)
