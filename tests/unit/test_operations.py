"""Operator actions (gateway.operations) on a real SQLite journal, without an event loop."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.journal.sqlite import SqliteJournal
from gateway.journal.tx import Tx
from gateway.operations import (
    OperationError,
    iso,
    parse_duration,
    release_exchange,
    retry_delivery,
    verify_audit,
)
from gateway.web.api import redact_fhir, redact_xds
from gateway.web.dashboard import per_minute_series, timeline

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
AT = iso(NOW)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[SqliteJournal]:
    j = SqliteJournal(tmp_path / "journal.db", group_commit_ms=0).open()
    yield j
    j.close_sync()


def add_exchange(tx: Tx, ex_id: str, status: str, *, received_at: str = AT, delivery: str | None = None,
                 delivery_status: str = "waiting") -> None:
    tx.insert_exchange(dict(
        id=ex_id, received_at=received_at, listener="mllp", raw=b"MSH|...", sha256="0" * 64, size=7,
        status=status, reason_code="INS_NOT_QUALIFIED" if status == "held" else None,
        held_since=received_at if status == "held" else None,
    ))
    tx.insert_document(ex_id, 1, f"1.2.3.{ex_id}", "submit", b"<ClinicalDocument/>", {}, {"resourceType": "Bundle"})
    tx.add_event(ex_id, received_at, "received", {"size": 7})
    if delivery:
        tx.insert_delivery(dict(
            id=delivery, exchange_id=ex_id, destination="outbox", kind="document", status=delivery_status,
            next_attempt_at=received_at, patient_key="p1", created_at=received_at,
        ))
        tx.insert_attempt(dict(delivery_id=delivery, number=1, started_at=received_at, outcome="failed",
                               request="<req/>", response="<resp/>"))


def test_release_queues_the_waiting_deliveries_and_audits(journal: SqliteJournal) -> None:
    journal.write_sync(lambda tx: add_exchange(tx, "ex-held", "held", delivery="d1"))
    out = journal.write_sync(
        lambda tx: release_exchange(tx, "ex-held", operator="operator:alice", reason="ID checked", at=AT)
    )
    assert out == {"id": "ex-held", "status": "queued"}

    def read(tx: Tx) -> tuple[Any, ...]:
        return tx.get_exchange("ex-held"), tx.get_delivery("d1"), tx.events("ex-held"), tx.audit_rows()

    ex, d, events, audit = journal.read_sync(read)
    assert ex["status"] == "queued" and ex["held_since"] is None and d["status"] == "queued"
    assert events[-1]["stage"] == "released" and events[-1]["detail"]["by"] == "operator:alice"
    assert [(r["actor"], r["action"], r["target"]) for r in audit] == [("operator:alice", "release", "ex-held")]
    assert json.loads(audit[0]["detail"]) == {"hold_code": "INS_NOT_QUALIFIED", "reason": "ID checked"}


@pytest.mark.parametrize(
    ("exchange_id", "operator", "reason", "status"),
    [("nope", "op", "r", 404), ("ex-queued", "op", "r", 409), ("ex-held", "op", "  ", 400), ("ex-held", "", "r", 400)],
)
def test_release_refusals(journal: SqliteJournal, exchange_id: str, operator: str, reason: str, status: int) -> None:
    journal.write_sync(lambda tx: (add_exchange(tx, "ex-held", "held"), add_exchange(tx, "ex-queued", "queued")))
    with pytest.raises(OperationError) as info:
        journal.write_sync(lambda tx: release_exchange(tx, exchange_id, operator=operator, reason=reason, at=AT))
    assert info.value.status == status
    assert journal.read_sync(lambda tx: tx.audit_rows()) == []  # a refused action leaves no trace


def test_retry_only_failed_or_dead(journal: SqliteJournal) -> None:
    journal.write_sync(lambda tx: (
        add_exchange(tx, "ex-dead", "dead", delivery="d-dead", delivery_status="dead"),
        add_exchange(tx, "ex-ok", "delivered", delivery="d-ok", delivery_status="delivered"),
    ))
    later = iso(NOW + timedelta(minutes=5))
    out = journal.write_sync(lambda tx: retry_delivery(tx, "d-dead", operator="operator:alice", at=later))
    assert out == {"id": "d-dead", "status": "failed", "next_attempt_at": later}
    d, ex = journal.read_sync(lambda tx: (tx.get_delivery("d-dead"), tx.get_exchange("ex-dead")))
    assert d["status"] == "failed" and d["next_attempt_at"] == later and ex["status"] == "queued"
    for delivery_id, status in (("d-ok", 409), ("missing", 404)):
        with pytest.raises(OperationError) as info:
            journal.write_sync(lambda tx, i=delivery_id: retry_delivery(tx, i, operator="x", at=later))
        assert info.value.status == status


def test_audit_chain_detects_an_altered_row(journal: SqliteJournal, tmp_path: Path) -> None:
    for i in range(4):
        journal.write_sync(lambda tx, i=i: tx.append_audit(at=AT, actor="a", action="x", target=f"t{i}", detail={}))
    assert journal.read_sync(verify_audit) == (True, None, 4)
    assert journal.read_sync(lambda tx: verify_audit(tx)) == (True, None, 4)
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 3")
    assert journal.read_sync(verify_audit) == (False, 3, 4)


@pytest.mark.parametrize(("text", "seconds"), [("90d", 90 * 86400), ("12h", 43200), ("30m", 1800), ("1.5s", 1.5)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "90", "d", "ten days", "-1d", "5w"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# -- the pure view helpers of the web layer ----------------------------------------------------
def test_viewer_redaction_of_fhir_and_xds() -> None:
    bundle = {"resourceType": "Bundle", "entry": [
        {"resource": {"resourceType": "Patient", "id": "p", "name": [{"family": "X"}],
                      "identifier": [{"value": "279035121518989"}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=a|279035121518989"}},
        {"resource": {"resourceType": "DocumentReference", "subject": {"reference": "urn:uuid:p",
                      "identifier": {"value": "279035121518989"}},
                      "content": [{"attachment": {"data": "PD94bWw=", "contentType": "text/xml"}}]}},
    ]}
    out = redact_fhir(bundle)
    assert "279035121518989" not in json.dumps(out) and "PD94bWw=" not in json.dumps(out)
    assert out["entry"][0]["resource"] == {"resourceType": "Patient", "id": "p", "_redacted": True}
    assert out["entry"][1]["resource"]["subject"] == {"reference": "urn:uuid:p"}
    assert out["entry"][1]["resource"]["content"][0]["attachment"]["contentType"] == "text/xml"
    assert bundle["entry"][0]["resource"]["name"]  # the input is not modified
    xds = redact_xds({"documentEntry": {"patientId": "x", "sourcePatientInfo": ["PID-5|X"], "title": "CR"},
                      "submissionSet": {"patientId": "x", "sourceId": "1.2"}})
    assert xds == {"documentEntry": {"patientId": "[redacted]", "sourcePatientInfo": "[redacted]", "title": "CR"},
                   "submissionSet": {"patientId": "[redacted]", "sourceId": "1.2"}}


def test_timeline_and_minute_series() -> None:
    detail = {"events": [
        {"at": AT, "stage": "received", "detail": {"size": 10}},
        {"at": AT, "stage": "attempt:document", "detail": {"attempt": 1, "destination": "dmp", "outcome": "failed"}},
        {"at": AT, "stage": "replayed", "detail": {"new_exchange": "ex-2"}},
    ]}
    rows = timeline(detail)
    assert [r["stage"] for r in rows] == ["received", "attempt:document", "replayed"]
    assert rows[1]["label"] == "Delivery attempt 1 → dmp: failed" and rows[2]["link"] == "ex-2"
    series = per_minute_series({"2025-01-01T11:59": 3, "2025-01-01T12:00": 1}, NOW + timedelta(seconds=30))
    assert len(series) == 60 and series[-1] == ("12:00", 1) and series[-2] == ("11:59", 3) and series[0][1] == 0
