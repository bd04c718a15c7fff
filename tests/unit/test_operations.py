"""Operator actions (the journal's release / retry) and gateway.operations.audit on a real SQLite journal."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import OperationError
from gateway.journal.rows import InboundRecord, NewDelivery, NewDocument, NewEvent, NewExchange, iso
from gateway.journal.sqlite import SqliteJournal
from gateway.operations.audit import parse_duration, verify_audit
from gateway.web.api import redact_fhir, redact_xds
from gateway.web.dashboard import per_minute_series, timeline

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
AT = iso(NOW)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(tmp_path / "journal.db", group_commit_ms=0).open()
    yield j
    await j.close()


async def add_exchange(journal: SqliteJournal, ex_id: str, status: str, *, received_at: str = AT,
                       delivery: str | None = None, delivery_status: str = "waiting") -> None:
    held = status == "held"
    deliveries = [NewDelivery(
        id=delivery, exchange_id=ex_id, destination="outbox", kind="document", status=delivery_status,
        next_attempt_at=received_at, patient_key="p1", created_at=received_at,
    )] if delivery else []
    await journal.record_inbound(InboundRecord(
        exchange=NewExchange(
            id=ex_id, received_at=received_at, listener="mllp", raw=b"MSH|...", sha256="0" * 64, size=7,
            status=status, reason_code="INS_NOT_QUALIFIED" if held else None, held_since=received_at if held else None,
        ),
        events=[NewEvent("received", {"size": 7})],
        documents=[NewDocument(1, f"1.2.3.{ex_id}", "submit", b"<ClinicalDocument/>", {}, {"resourceType": "Bundle"})],
        deliveries=deliveries,
    ))


async def test_release_queues_the_waiting_deliveries_and_audits(journal: SqliteJournal) -> None:
    await add_exchange(journal, "ex-held", "held", delivery="d1")
    out = await journal.release_exchange("ex-held", operator="operator:alice", reason="ID checked", at=AT)
    assert (out.id, out.status) == ("ex-held", "queued")

    ex, d = await journal.get_exchange("ex-held"), await journal.get_delivery("d1")
    events, audit = await journal.events("ex-held"), await journal.audit_entries()
    assert ex is not None and d is not None
    assert ex.status == "queued" and ex.held_since is None and d.status == "queued"
    assert events[-1].stage == "released" and events[-1].detail["by"] == "operator:alice"
    assert [(r.actor, r.action, r.target) for r in audit] == [("operator:alice", "release", "ex-held")]
    assert json.loads(audit[0].detail or "") == {"hold_code": "INS_NOT_QUALIFIED", "reason": "ID checked"}


@pytest.mark.parametrize(
    ("exchange_id", "operator", "reason", "status"),
    [("nope", "op", "r", 404), ("ex-queued", "op", "r", 409), ("ex-held", "op", "  ", 400), ("ex-held", "", "r", 400)],
)
async def test_release_refusals(journal: SqliteJournal, exchange_id: str, operator: str, reason: str,
                                status: int) -> None:
    await add_exchange(journal, "ex-held", "held")
    await add_exchange(journal, "ex-queued", "queued")
    with pytest.raises(OperationError) as info:
        await journal.release_exchange(exchange_id, operator=operator, reason=reason, at=AT)
    assert info.value.status == status
    assert await journal.audit_entries() == []  # a refused action leaves no trace


async def test_retry_only_failed_or_dead(journal: SqliteJournal) -> None:
    await add_exchange(journal, "ex-dead", "dead", delivery="d-dead", delivery_status="dead")
    await add_exchange(journal, "ex-ok", "delivered", delivery="d-ok", delivery_status="delivered")
    later = iso(NOW + timedelta(minutes=5))
    out = await journal.retry_delivery("d-dead", operator="operator:alice", reason="", at=later)
    assert (out.id, out.status, out.next_attempt_at) == ("d-dead", "failed", later)
    d, ex = await journal.get_delivery("d-dead"), await journal.get_exchange("ex-dead")
    assert d is not None and ex is not None
    assert d.status == "failed" and d.next_attempt_at == later and ex.status == "queued"
    for delivery_id, status in (("d-ok", 409), ("missing", 404)):
        with pytest.raises(OperationError) as info:
            await journal.retry_delivery(delivery_id, operator="x", reason="", at=later)
        assert info.value.status == status


async def test_audit_chain_detects_an_altered_row(journal: SqliteJournal, tmp_path: Path) -> None:
    for i in range(4):
        await journal.append_audit(at=AT, actor="a", action="x", target=f"t{i}", detail={})
    assert verify_audit(await journal.audit_entries()) == (True, None, 4)
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 3")
    assert verify_audit(await journal.audit_entries()) == (False, 3, 4)


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
