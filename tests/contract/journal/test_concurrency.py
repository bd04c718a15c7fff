"""Concurrent writers on one journal (every backend), and several instances on one database (PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import OperationError
from gateway.journal.rows import ZamFollowUp, iso
from gateway.operations.audit import verify_audit
from tests.contract.journal.builders import attempt, delivery, exchange, store
from tests.contract.journal.conftest import SERVER, open_backend


async def test_many_concurrent_inbound_exchanges_are_all_stored(journal: Any, clock: Any) -> None:
    records = [exchange(clock, deliveries=[delivery(patient_key=f"P{i}")], documents=1, dedup=True)
               for i in range(60)]
    outcomes = await asyncio.gather(*(journal.record_inbound(r) for r in records))
    assert [o.status for o in outcomes] == ["queued"] * 60
    assert await journal.count_exchanges() == (60, False)
    stored = await journal.list_exchanges(limit=100)
    assert {e.id for e in stored} == {r.exchange.id for r in records}
    assert len({e.seq for e in stored}) == 60
    for r in records[::15]:
        assert (await journal.exchange_bodies(r.exchange.id)).raw == r.exchange.raw
        assert len(await journal.deliveries_for(r.exchange.id)) == 1


async def _claim_all(journals: list[tuple[Any, str]], rounds: int = 12) -> list[str]:
    async def worker(journal: Any, name: str) -> list[str]:
        got: list[str] = []
        for _ in range(rounds):
            got += [d.id for d in await journal.claim_due(name, 3, 60)]
            await asyncio.sleep(0)
        return got

    results = await asyncio.gather(*(worker(j, n) for j, n in journals for _ in range(2)))
    return [i for r in results for i in r]


async def test_two_workers_claiming_at_once_never_share_a_delivery(journal: Any, clock: Any) -> None:
    expected = set()
    for i in range(40):
        record, _ = await store(journal, clock, deliveries=[delivery(patient_key=f"P{i}")])
        expected.add(record.deliveries[0].id)
    claimed = await _claim_all([(journal, "w1"), (journal, "w2")])
    assert len(claimed) == len(set(claimed)), "a delivery was handed out twice"
    assert set(claimed) == expected
    owners = {(await journal.get_delivery(i)).claimed_by for i in claimed}
    assert owners <= {"w1", "w2"}


@pytest.fixture
async def second(backend: str, request: pytest.FixtureRequest, clock: Any, tmp_path: Path, journal: Any) -> Any:
    """Another journal object on the same database: a second gateway instance."""
    other = await open_backend(backend, request, clock, tmp_path, url=request.getfixturevalue("pg_contract_url"))
    try:
        yield other
    finally:
        await other.close()


@pytest.mark.parametrize("backend", SERVER)
async def test_two_instances_claiming_at_once_never_share_a_delivery(journal: Any, second: Any, clock: Any) -> None:
    expected = set()
    for i in range(40):
        record, _ = await store(journal, clock, deliveries=[delivery(patient_key=f"P{i}")])
        expected.add(record.deliveries[0].id)
    claimed = await _claim_all([(journal, "a"), (second, "b")])
    assert len(claimed) == len(set(claimed)), "a delivery was handed out twice"
    assert set(claimed) == expected


@pytest.mark.parametrize("backend", SERVER)
async def test_two_instances_receiving_one_message_at_once_take_it_once(journal: Any, second: Any,
                                                                         clock: Any) -> None:
    for n in range(5):
        raw = f"MSH|^~\\&|APP|FAC|||1||MDM^T02|RACE{n}|P|2.5\r".encode()
        a = exchange(clock, raw=raw, control_id=f"RACE{n}", dedup=True, deliveries=[delivery(patient_key=f"R{n}")])
        b = exchange(clock, raw=raw, control_id=f"RACE{n}", dedup=True, deliveries=[delivery(patient_key=f"R{n}")])
        out = await asyncio.gather(journal.record_inbound(a), second.record_inbound(b))
        assert sorted(o.status for o in out) == ["duplicate", "queued"], out
        original = next(o for o in out if o.status == "queued")
        dup = next(o for o in out if o.status == "duplicate")
        assert dup.duplicate_of == original.exchange_id
        assert await journal.deliveries_for(dup.exchange_id) == []


@pytest.mark.parametrize("backend", SERVER)
async def test_two_instances_ending_the_last_dmp_deliveries_at_once_queue_one_z01(
        journal: Any, second: Any, clock: Any) -> None:
    for n in range(4):
        record, _ = await store(journal, clock, ack_reception=1,
                                deliveries=[delivery(patient_key=f"Z{n}"), delivery(destination="dmp2",
                                                                                    patient_key=f"Z{n}")])
        ex_id = record.exchange.id
        [a] = await journal.claim_due("a", 1, 60)
        [b] = await second.claim_due("b", 1, 60)
        soon = iso(clock.now() + timedelta(hours=1))

        def z01(ex_id: str = ex_id, soon: str = soon) -> ZamFollowUp:
            # not due for an hour: the next round's claims must get its documents, not this ZAM
            return ZamFollowUp(delivery=delivery(clock, kind="zam", destination="his", exchange_id=ex_id,
                                                 unique_id=f"Z01-{clock.new_id()[:8]}", next_attempt_at=soon),
                               rule="z01", positive=True, dmp_destinations=frozenset({"dmp", "dmp2"}))

        out = await asyncio.gather(attempt(journal, clock, a, follow_ups=(z01(),)),
                                   attempt(second, clock, b, follow_ups=(z01(),)))
        assert sum(len(o.zams) for o in out) == 1, out
        assert [d.kind for d in await journal.deliveries_for(ex_id)].count("zam") == 1
        assert (await journal.get_exchange(ex_id)).status == "delivered"


@pytest.mark.parametrize("backend", SERVER)
async def test_two_instances_reporting_one_mail_at_once_queue_its_z02_once(
        journal: Any, second: Any, clock: Any) -> None:
    for n in range(4):
        record, _ = await store(journal, clock, deliveries=[delivery(kind="mail", destination="mss")])
        ex_id = record.exchange.id

        def once(ex_id: str = ex_id, n: int = n) -> ZamFollowUp:
            return ZamFollowUp(delivery=delivery(clock, kind="zam", destination="his", exchange_id=ex_id,
                                                 unique_id=f"Z02:mail-{n}"), rule="once", positive=True)

        out = await asyncio.gather(*(j.record_follow_up(ex_id, at=clock.stamp(), events=[], zams=[once()])
                                     for j in (journal, second)))
        assert sum(len(o) for o in out) == 1, out


async def test_concurrent_audit_rows_keep_one_intact_chain(journal: Any, clock: Any) -> None:
    await asyncio.gather(*(journal.append_audit(at=clock.stamp(), actor=f"op{i}", action="note", target=None,
                                                detail={"i": i}) for i in range(30)))
    rows = await journal.audit_entries()
    assert len(rows) == 30
    assert verify_audit(rows) == (True, None, 30)


@pytest.mark.parametrize("backend", SERVER)
async def test_two_instances_auditing_at_once_keep_one_intact_chain(journal: Any, second: Any, clock: Any) -> None:
    await asyncio.gather(*(j.append_audit(at=clock.stamp(), actor="op", action="note", target=None, detail={"i": i})
                           for i in range(15) for j in (journal, second)))
    rows = await journal.audit_entries()
    assert len(rows) == 30
    assert verify_audit(rows) == (True, None, 30)


@pytest.mark.parametrize("backend", SERVER)
async def test_two_instances_taking_one_lease_at_once_give_it_to_one(journal: Any, second: Any) -> None:
    for n in range(5):
        got = await asyncio.gather(journal.hold_lease(f"duty{n}", "a", 60), second.hold_lease(f"duty{n}", "b", 60))
        assert sorted(got) == [False, True]


@pytest.mark.parametrize("backend", SERVER)
async def test_a_release_and_a_hold_expiry_racing_on_two_instances_one_wins(
        journal: Any, second: Any, clock: Any) -> None:
    for _ in range(5):
        record, _ = await store(journal, clock, status="held", deliveries=[delivery(status="waiting")])
        ex_id = record.exchange.id

        async def release(ex_id: str = ex_id) -> bool:
            try:
                await journal.release_exchange(ex_id, operator="op", reason="ok", at=clock.stamp())
            except OperationError:
                return False
            return True

        released, expired = await asyncio.gather(
            release(), second.expire_hold(ex_id, reason="too long", code="HOLD_EXPIRED", at=clock.stamp(), zam=None))
        ex = await journal.get_exchange(ex_id)
        [d] = await journal.deliveries_for(ex_id)
        assert released != expired, (released, expired, ex.status, d.status)
        assert (ex.status, d.status) == (("queued", "queued") if released else ("dead", "dead"))
