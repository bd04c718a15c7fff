"""Operator actions with their refusals and audit rows, the audit chain, and illegal status moves."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gateway.errors import JournalError, OperationError
from gateway.journal.states import check_delivery_move, check_exchange_move
from gateway.operations.audit import verify_audit
from tests.contract.journal.builders import attempt, claim_one, delivery, store

OP: dict[str, str] = {"operator": "alice", "reason": "checked with the ward"}


def status_of(exc: pytest.ExceptionInfo[OperationError]) -> int:
    return int(exc.value.status)


async def refused(call: Any, status: int) -> None:
    with pytest.raises(OperationError) as caught:
        await call
    assert status_of(caught) == status, str(caught.value)


async def test_release_exchange_queues_a_held_exchange_and_audits_it(journal: Any, clock: Any) -> None:
    record, _ = await store(journal, clock, status="held", deliveries=[delivery(status="waiting")])
    ex_id = record.exchange.id
    got = await journal.release_exchange(ex_id, at=clock.stamp(), **OP)
    assert (got.id, got.status, got.reason_code, got.held_since) == (ex_id, "queued", None, None)
    assert (await journal.get_exchange(ex_id)).status == "queued"
    assert [d.status for d in await journal.deliveries_for(ex_id)] == ["queued"]
    released = [e for e in await journal.events(ex_id) if e.stage == "released"]
    assert released[0].detail["override"] == "INS_NOT_QUALIFIED"
    [row] = await journal.audit_entries()
    assert (row.actor, row.action, row.target) == ("alice", "release", ex_id)
    assert "INS_NOT_QUALIFIED" in (row.detail or "")


async def test_release_exchange_refusals_write_nothing(journal: Any, clock: Any) -> None:
    held, _ = await store(journal, clock, status="held")
    queued, _ = await store(journal, clock)
    await refused(journal.release_exchange("missing", at=clock.stamp(), **OP), 404)
    await refused(journal.release_exchange(queued.exchange.id, at=clock.stamp(), **OP), 409)
    await refused(journal.release_exchange(held.exchange.id, operator="alice", reason=" ", at=clock.stamp()), 400)
    await refused(journal.release_exchange(held.exchange.id, operator="", reason="why", at=clock.stamp()), 400)
    assert (await journal.get_exchange(held.exchange.id)).status == "held"
    assert await journal.audit_entries() == []


async def test_release_held_by_ids_by_code_or_all(journal: Any, clock: Any) -> None:
    a, _ = await store(journal, clock, status="held")
    b, _ = await store(journal, clock, status="held", reason_code="INS_CONFLICT")
    c, _ = await store(journal, clock, status="held")
    q, _ = await store(journal, clock)
    out = await journal.release_held(at=clock.stamp(), ids=[a.exchange.id, q.exchange.id, "missing"], **OP)
    assert out.done == (a.exchange.id,)
    assert [r["id"] for r in out.refused] == [q.exchange.id, "missing"]
    out = await journal.release_held(at=clock.stamp(), hold_code="INS_CONFLICT", **OP)
    assert out.done == (b.exchange.id,) and out.refused == ()
    assert (await journal.release_held(at=clock.stamp(), **OP)).done == (c.exchange.id,)
    assert [r.action for r in await journal.audit_entries()] == ["release"] * 3
    await refused(journal.release_held(operator="alice", reason="", at=clock.stamp()), 400)


async def dead_delivery(journal: Any, clock: Any, **kw: Any) -> tuple[str, str]:
    record, _ = await store(journal, clock, deliveries=[delivery(**kw)])
    d = next(x for x in await journal.claim_due("w1", 10, 60) if x.id == record.deliveries[0].id)
    await attempt(journal, clock, d, "dead")
    return record.exchange.id, d.id


async def test_retry_delivery_makes_a_dead_delivery_due_and_audits_it(journal: Any, clock: Any) -> None:
    ex_id, d_id = await dead_delivery(journal, clock)
    assert (await journal.get_exchange(ex_id)).status == "dead"
    at = clock.stamp()
    got = await journal.retry_delivery(d_id, at=at, **OP)
    assert (got.id, got.status, got.next_attempt_at) == (d_id, "failed", at)
    assert (await journal.get_exchange(ex_id)).status == "queued"
    assert "retry" in [e.stage for e in await journal.events(ex_id)]
    [row] = await journal.audit_entries()
    assert (row.actor, row.action, row.target) == ("alice", "retry", ex_id)
    assert (await claim_one(journal)).id == d_id


async def test_retry_delivery_refusals(journal: Any, clock: Any) -> None:
    record, _ = await store(journal, clock, deliveries=[delivery()])
    await refused(journal.retry_delivery("missing", at=clock.stamp(), **OP), 404)
    await refused(journal.retry_delivery(record.deliveries[0].id, at=clock.stamp(), **OP), 409)
    d = await claim_one(journal)
    await attempt(journal, clock, d)
    await refused(journal.retry_delivery(d.id, at=clock.stamp(), **OP), 409)  # never sent twice
    assert await journal.audit_entries() == []


async def test_retry_dead_by_destination_or_ids(journal: Any, clock: Any) -> None:
    _, a = await dead_delivery(journal, clock)
    _, b = await dead_delivery(journal, clock, destination="mhd", patient_key="P2")
    _, live = await store(journal, clock, deliveries=[delivery(patient_key="P3")])
    out = await journal.retry_dead(at=clock.stamp(), destination="mhd", **OP)
    assert out.done == (b,)
    [queued] = [d for d in await journal.deliveries_for(live.exchange_id)]
    out = await journal.retry_dead(at=clock.stamp(), ids=[a, queued.id], **OP)
    assert out.done == (a,) and [r["id"] for r in out.refused] == [queued.id]
    assert (await journal.retry_dead(at=clock.stamp(), **OP)).done == ()
    assert [r.action for r in await journal.audit_entries()] == ["retry", "retry"]
    await refused(journal.retry_dead(operator="alice", reason="", at=clock.stamp()), 400)


async def test_reroute_moves_open_and_dead_work_and_keeps_identity_holds(journal: Any, clock: Any) -> None:
    dead_ex, dead = await dead_delivery(journal, clock, destination="old")
    held, _ = await store(journal, clock, status="held", deliveries=[delivery(destination="old", status="waiting",
                                                                               patient_key="P2")])
    queued, _ = await store(journal, clock, deliveries=[delivery(destination="old", patient_key="P3"),
                                                        delivery(destination="old", kind="zam", patient_key="P3")])
    moved = await journal.reroute("old", "new", at=clock.stamp(), **OP)
    assert sorted(m.id for m in moved) == sorted([dead, held.deliveries[0].id, queued.deliveries[0].id])
    got = await journal.get_delivery(dead)
    assert (got.destination, got.status, got.attempts, got.last_error) == ("new", "queued", 0, None)
    assert (await journal.get_exchange(dead_ex)).status == "queued"
    still = await journal.get_delivery(held.deliveries[0].id)
    assert (still.destination, still.status) == ("new", "waiting")
    assert (await journal.get_exchange(held.exchange.id)).status == "held"
    assert (await journal.get_delivery(queued.deliveries[1].id)).destination == "old"  # a ZAM stays
    assert [r.action for r in await journal.audit_entries()] == ["reroute"] * 3
    assert "rerouted" in [e.stage for e in await journal.events(dead_ex)]
    assert await journal.reroute("old", "new", at=clock.stamp(), **OP) == []


async def test_reroute_refusals(journal: Any, clock: Any) -> None:
    await refused(journal.reroute("a", "a", at=clock.stamp(), **OP), 400)
    await refused(journal.reroute("a", "b", operator="alice", reason="", at=clock.stamp()), 400)


async def test_the_audit_chain_verifies_and_a_changed_row_breaks_it(journal: Any, clock: Any) -> None:
    hashes = [await journal.append_audit(at=clock.stamp(), actor="alice", action="config", target=f"t{i}",
                                         detail={"n": i, "texte": "é"}) for i in range(4)]
    await journal.append_audit(at=clock.stamp(), actor="bob", action="note", target=None, detail={})
    rows = await journal.audit_entries()
    assert [r.hash for r in rows[:4]] == hashes
    assert [r.seq for r in rows] == sorted(r.seq for r in rows)
    assert rows[0].prev_hash == "0" * 64 and rows[1].prev_hash == rows[0].hash
    assert verify_audit(rows) == (True, None, 5)
    forged = list(rows)
    forged[2] = dataclasses.replace(rows[2], detail='{"n": 99}')
    assert verify_audit(forged) == (False, rows[2].seq, 5)


async def test_an_illegal_status_move_is_refused_and_writes_nothing(journal: Any, clock: Any) -> None:
    # an exchange that ended (accepted) must never be reopened by a retry of one of its deliveries
    record, _ = await store(journal, clock, status="accepted", deliveries=[delivery(status="dead")])
    d_id = record.deliveries[0].id
    with pytest.raises(JournalError) as caught:
        await journal.retry_delivery(d_id, at=clock.stamp(), **OP)
    assert caught.value.code == "JOURNAL_ILLEGAL_MOVE"
    assert (await journal.get_delivery(d_id)).status == "dead"
    assert (await journal.get_exchange(record.exchange.id)).status == "accepted"
    assert await journal.audit_entries() == []
    assert "retry" not in [e.stage for e in await journal.events(record.exchange.id)]


def test_the_state_tables_refuse_what_they_do_not_list() -> None:
    for old, new in (("rejected", "queued"), ("duplicate", "queued"), ("accepted", "held"), ("recorded", "dead")):
        with pytest.raises(JournalError):
            check_exchange_move(old, new, "x")
    check_exchange_move("rejected", "rejected", "x")  # a change of reason, not a move
    for old, new in (("delivered", "queued"), ("delivered", "failed"), ("queued", "delivered"), ("waiting", "failed")):
        with pytest.raises(JournalError):
            check_delivery_move(old, new, "d")
    check_delivery_move("in_flight", "waiting", "d")
