"""Retention passes on a real SQLite journal: what goes, what stays, batches, errors-only, audit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.journal.sqlite import SqliteJournal
from gateway.journal.tx import Tx, iso
from gateway.operations.retention import RetentionPolicy, prune_once

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
OLD = iso(NOW - timedelta(days=100))


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[SqliteJournal]:
    j = SqliteJournal(tmp_path / "journal.db", group_commit_ms=0).open()
    yield j
    j.close_sync()


def add(tx: Tx, ex_id: str, status: str, *, received_at: str = OLD, delivery_status: str = "delivered") -> None:
    tx.insert_exchange(dict(
        id=ex_id, received_at=received_at, listener="mllp", raw=b"MSH|...", sha256="0" * 64, size=7,
        status=status, held_since=received_at if status == "held" else None,
    ))
    tx.insert_document(ex_id, 1, f"1.2.3.{ex_id}", "submit", b"<ClinicalDocument/>", {}, {})
    tx.insert_delivery(dict(
        id=f"d-{ex_id}", exchange_id=ex_id, destination="dmp", kind="document", status=delivery_status,
        next_attempt_at=received_at, created_at=received_at, unique_id=f"1.2.3.{ex_id}", doc_index=1,
        action="submit",
    ))
    tx.insert_attempt(dict(delivery_id=f"d-{ex_id}", number=1, started_at=received_at, finished_at=received_at,
                           outcome="delivered", request="<soap/>", response="<ok/>", duration=0.1))
    tx.add_event(ex_id, received_at, "received", {})


def test_bodies_of_finished_exchanges_go_summaries_events_and_audit_stay(journal: SqliteJournal) -> None:
    journal.write_sync(lambda tx: (
        add(tx, "old-done", "delivered"), add(tx, "old-rejected", "rejected"),
        add(tx, "old-held", "held", delivery_status="waiting"), add(tx, "old-dead", "dead", delivery_status="dead"),
        add(tx, "new-done", "delivered", received_at=iso(NOW)),
    ))
    policy = RetentionPolicy(older_than=timedelta(days=90))
    assert asyncio.run(prune_once(journal, policy, now=NOW, actor="cli:test", vacuum=False, audit_empty=True)) == 2

    def read(tx: Tx) -> dict[str, Any]:
        return {i: tx.exchange_bodies(i) for i in ("old-done", "old-rejected", "old-held", "old-dead", "new-done")}

    bodies = journal.read_sync(read)
    assert bodies["old-done"]["raw"] is None and bodies["old-done"]["fhir"] is None
    assert bodies["old-rejected"]["raw"] is None
    for kept in ("old-held", "old-dead", "new-done"):  # may still be sent, or not old enough
        assert bodies[kept]["raw"] == b"MSH|..."
    attempts = journal.read_sync(lambda tx: tx.attempts_for("d-old-done", bodies=True))
    assert attempts[0]["request"] is None and attempts[0]["response"] is None
    assert journal.read_sync(lambda tx: tx.get_exchange("old-done"))["status"] == "delivered"  # summary stays
    assert journal.read_sync(lambda tx: tx.events("old-done"))
    audit = journal.read_sync(lambda tx: tx.audit_rows())
    assert audit[-1]["action"] == "prune" and json.loads(audit[-1]["detail"])["exchanges"] == 2
    # a second pass finds nothing new (the pruned rows left the partial index)
    assert asyncio.run(prune_once(journal, policy, now=NOW, actor="cli:test", vacuum=False, audit_empty=True)) == 0


def test_errors_only_deletes_what_ended_well_and_keeps_errors(journal: SqliteJournal) -> None:
    journal.write_sync(lambda tx: (add(tx, "ok", "delivered"), add(tx, "bad", "rejected")))
    policy = RetentionPolicy(older_than=timedelta(days=90), errors_only=True)
    assert asyncio.run(prune_once(journal, policy, now=NOW, actor="retention", vacuum=False, audit_empty=True)) == 2
    assert journal.read_sync(lambda tx: tx.get_exchange("ok")) is None
    assert journal.read_sync(lambda tx: tx.deliveries_for("ok")) == []
    assert journal.read_sync(lambda tx: tx.get_exchange("bad"))["status"] == "rejected"


def test_a_pass_is_many_small_transactions(journal: SqliteJournal) -> None:
    journal.write_sync(lambda tx: [add(tx, f"e{n}", "delivered") for n in range(25)])
    commits = journal.commits
    policy = RetentionPolicy(older_than=timedelta(days=90), batch_size=10)
    assert asyncio.run(prune_once(journal, policy, now=NOW, actor="retention", vacuum=True, audit_empty=True)) == 25
    assert journal.commits - commits >= 4  # 10 + 10 + 5, then the audit row (and the vacuum step)
    assert journal.auto_vacuum  # a journal created by this version can give space back
