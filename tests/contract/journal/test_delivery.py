"""Claims, leases, attempt outcomes (with their fencing), ZAM follow-ups and hold expiry, on every backend."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from gateway.errors import JournalError
from gateway.journal.rows import AdtEffects, NewEvent, ZamFollowUp, iso
from tests.builders import identity_record
from tests.contract.journal.builders import attempt, claim_one, delivery, exchange, store

INS = "180017512345629"


def later(clock: Any, hours: float = 1) -> str:
    return iso(clock.now() + timedelta(hours=hours))


async def one_delivery(journal: Any, clock: Any, ex: dict[str, Any] | None = None, **kw: Any) -> tuple[str, str]:
    """An exchange (``ex`` for its fields) with one delivery (``kw``); returns (exchange id, delivery id)."""
    record, _ = await store(journal, clock, deliveries=[delivery(**kw)], **(ex or {}))
    return record.exchange.id, record.deliveries[0].id


async def test_claim_due_hands_the_oldest_first_each_in_flight_with_a_lease(journal: Any, clock: Any) -> None:
    ids = [(await one_delivery(journal, clock, patient_key=f"P{i}"))[1] for i in range(3)]
    first = await journal.claim_due("w1", 2, 60)
    assert [d.id for d in first] == ids[:2]
    for d in first:
        assert (d.status, d.attempts, d.claimed_by) == ("in_flight", 1, "w1")
        assert d.lease_until is not None
        stored = await journal.get_delivery(d.id)
        assert (stored.status, stored.attempts, stored.claimed_by) == ("in_flight", 1, "w1")
    assert [d.id for d in await journal.claim_due("w1", 5, 60)] == ids[2:]
    assert await journal.claim_due("w1", 5, 60) == []


async def test_work_not_due_yet_is_not_claimed(journal: Any, clock: Any) -> None:
    await one_delivery(journal, clock, next_attempt_at=later(clock))
    await one_delivery(journal, clock, status="waiting", patient_key="P2")
    assert await journal.claim_due("w1", 10, 60) == []


async def test_per_destination_and_patient_only_the_oldest_open_delivery_is_due(journal: Any, clock: Any) -> None:
    _, submission = await one_delivery(journal, clock)
    _, replacement = await one_delivery(journal, clock, action="replace")
    _, other_dest = await one_delivery(journal, clock, destination="mhd")
    _, other_patient = await one_delivery(journal, clock, patient_key="P2")
    claimed = await journal.claim_due("w1", 10, 60)
    assert [d.id for d in claimed] == [submission, other_dest, other_patient]
    assert await journal.claim_due("w1", 10, 60) == []  # the submission is in flight
    d = claimed[0]
    await attempt(journal, clock, d, "failed", next_attempt_at=iso(clock.now()))
    again = await claim_one(journal)  # failed is still open: the submission comes again, not its replacement
    assert (again.id, again.attempts) == (submission, 2)
    await attempt(journal, clock, again, "dead")
    assert [x.id for x in await journal.claim_due("w1", 10, 60)] == [replacement]


async def test_a_replacement_waits_for_a_held_submission_and_goes_once_it_is_delivered(
        journal: Any, clock: Any) -> None:
    held_id, submission = await one_delivery(journal, clock, {"status": "held"}, status="waiting")
    _, replacement = await one_delivery(journal, clock, action="replace")
    assert await journal.claim_due("w1", 10, 60) == []
    await journal.release_exchange(held_id, operator="op", reason="checked", at=clock.stamp())
    d = await claim_one(journal)
    assert d.id == submission
    await attempt(journal, clock, d)
    assert (await claim_one(journal)).id == replacement


async def test_claim_due_respects_its_limit(journal: Any, clock: Any) -> None:
    for i in range(5):
        await one_delivery(journal, clock, patient_key=f"P{i}")
    assert len(await journal.claim_due("w1", 3, 60)) == 3
    assert len(await journal.claim_due("w1", 3, 60)) == 2


async def test_extend_leases_keeps_only_the_workers_own_claims(journal: Any, clock: Any, lapse: Any) -> None:
    await one_delivery(journal, clock)
    d = await claim_one(journal, lease=0.3)
    assert await journal.extend_leases("w2", [d.id], 60) == 0
    assert await journal.extend_leases("w1", [d.id, "missing"], 60) == 1
    assert await journal.extend_leases("w1", [], 60) == 0
    await lapse(0.6)
    assert await journal.recover_in_flight(expired_only=True) == 0
    assert (await journal.get_delivery(d.id)).status == "in_flight"


async def test_recover_in_flight_all_expired_only_and_per_worker(journal: Any, clock: Any, lapse: Any) -> None:
    _, a = await one_delivery(journal, clock, patient_key="A")
    await claim_one(journal, "w1", lease=60)
    _, b = await one_delivery(journal, clock, patient_key="B")
    await claim_one(journal, "w2", lease=0.3)
    await lapse(0.6)
    assert await journal.recover_in_flight(expired_only=True) == 1
    got = await journal.get_delivery(b)
    assert (got.status, got.claimed_by is None or got.claimed_by == "w2") == ("failed", True)
    assert "outcome unknown" in (got.last_error or "")
    assert (await journal.get_delivery(a)).status == "in_flight"
    assert await journal.recover_in_flight(expired_only=False, worker="w2") == 0
    assert await journal.recover_in_flight(expired_only=False, worker="w1") == 1
    assert (await journal.get_delivery(a)).status == "failed"
    assert len(await journal.claim_due("w3", 10, 60)) == 2
    assert await journal.recover_in_flight(expired_only=False) == 2
    assert {(await journal.get_delivery(x)).status for x in (a, b)} == {"failed"}


async def test_work_for_an_unknown_destination_is_parked_then_requeued(journal: Any, clock: Any) -> None:
    ex_id, d_id = await one_delivery(journal, clock, destination="gone")
    d = await claim_one(journal)
    await journal.park_for_unknown_destination(d, at=clock.stamp())
    parked = await journal.get_delivery(d_id)
    assert (parked.status, parked.claimed_by) == ("waiting", None)
    assert (parked.last_error or "").startswith("DESTINATION_UNKNOWN")
    ex = await journal.get_exchange(ex_id)
    assert (ex.status, ex.reason_code) == ("held", "DESTINATION_UNKNOWN")
    assert await journal.claim_due("w1", 10, 60) == []
    assert await journal.requeue_known_destinations([], at=clock.stamp()) == 0
    assert await journal.requeue_known_destinations(["dmp"], at=clock.stamp()) == 0
    assert await journal.requeue_known_destinations(["dmp", "gone"], at=clock.stamp()) == 1
    back = await journal.get_delivery(d_id)
    assert (back.status, back.last_error) == ("queued", None)
    assert (await journal.get_exchange(ex_id)).status == "queued"
    assert (await claim_one(journal)).id == d_id


async def test_document_reads_one_document_of_an_exchange(journal: Any, clock: Any) -> None:
    record, _ = await store(journal, clock, documents=2)
    doc = await journal.document(record.exchange.id, 2)
    assert (doc.idx, doc.unique_id, doc.cda, doc.xds, doc.fhir) == (
        2, record.documents[1].unique_id, record.documents[1].cda, {"title": "doc 2"}, None)
    assert await journal.document(record.exchange.id, 3) is None


async def test_a_delivered_attempt_is_recorded_with_its_bodies(journal: Any, clock: Any) -> None:
    ex_id, d_id = await one_delivery(journal, clock)
    d = await claim_one(journal)
    out = await attempt(journal, clock, d, request="<req/>", response="<resp/>", duration=0.25)
    assert (out.status, out.exchange_status, out.zams) == ("delivered", "delivered", ())
    got = await journal.get_delivery(d_id)
    assert (got.status, got.claimed_by, got.lease_until, got.attempts) == ("delivered", None, None, 1)
    assert (await journal.get_exchange(ex_id)).status == "delivered"
    [row] = await journal.attempts_for(d_id, bodies=True)
    assert (row.number, row.outcome, row.request, row.response, row.duration) == (1, "delivered", "<req/>",
                                                                                 "<resp/>", 0.25)
    [bare] = await journal.attempts_for(d_id)
    assert (bare.number, bare.request, bare.response) == (1, None, None)
    assert "attempt:document" in [e.stage for e in await journal.events(ex_id)]
    assert await journal.attempts_for("missing") == []


async def test_a_failed_attempt_is_due_again_at_its_next_attempt(journal: Any, clock: Any) -> None:
    ex_id, d_id = await one_delivery(journal, clock)
    d = await claim_one(journal)
    nxt = later(clock)
    out = await attempt(journal, clock, d, "failed", next_attempt_at=nxt)
    assert (out.status, out.exchange_status) == ("failed", None)
    got = await journal.get_delivery(d_id)
    assert (got.status, got.next_attempt_at, got.last_error) == ("failed", nxt, "HTTP_503: unavailable")
    assert (await journal.get_exchange(ex_id)).status == "queued"
    assert await journal.claim_due("w1", 10, 60) == []


async def test_the_exchange_is_delivered_when_every_delivery_is_and_dead_at_the_first_dead(
        journal: Any, clock: Any) -> None:
    record, _ = await store(journal, clock, deliveries=[delivery(), delivery(destination="mhd"),
                                                        delivery(kind="zam", destination="his")])
    ex_id = record.exchange.id
    claimed = {d.destination: d for d in await journal.claim_due("w1", 10, 60)}
    assert (await attempt(journal, clock, claimed["dmp"])).exchange_status is None
    zam = await attempt(journal, clock, claimed["his"], "dead")  # a ZAM does not decide the exchange
    assert zam.exchange_status is None
    assert (await journal.get_exchange(ex_id)).status == "queued"
    assert (await attempt(journal, clock, claimed["mhd"])).exchange_status == "delivered"
    assert (await journal.get_exchange(ex_id)).status == "delivered"

    other, _ = await store(journal, clock, deliveries=[delivery(patient_key="P2"),
                                                       delivery(destination="mhd", patient_key="P2")])
    claimed = {d.destination: d for d in await journal.claim_due("w1", 10, 60)}
    out = await attempt(journal, clock, claimed["dmp"], "dead", error="DMP_REFUSED: bad document")
    assert (out.status, out.exchange_status) == ("dead", "dead")
    ex = await journal.get_exchange(other.exchange.id)
    assert (ex.status, ex.reason_code, ex.reason) == ("dead", "DMP_REFUSED", "DMP_REFUSED: bad document")


async def test_a_failed_attempt_while_its_exchange_is_held_waits(journal: Any, clock: Any) -> None:
    ex_id, d_id = await one_delivery(journal, clock, {"patient_ipp": "IPP1", "patient_ins": INS}, patient_key="IPP1")
    d = await claim_one(journal)
    # an A47 while the attempt is in flight: the exchange is held, the attempt cannot be recalled
    fx = AdtEffects(key="IPP1", identity=identity_record("IPP1", at=clock.stamp()), trigger="A47", rehold=True,
                    rehold_ins=INS)
    await journal.record_inbound(exchange(clock, status="accepted", adt=fx))
    assert (await journal.get_exchange(ex_id)).status == "held"
    assert (await journal.get_delivery(d_id)).status == "in_flight"
    out = await attempt(journal, clock, d, "failed", next_attempt_at=iso(clock.now()))
    assert out.status == "waiting"
    assert (await journal.get_delivery(d_id)).status == "waiting"
    assert await journal.claim_due("w1", 10, 60) == []


async def test_a_document_submission_is_audited(journal: Any, clock: Any) -> None:
    ex_id, d_id = await one_delivery(journal, clock, unique_id="1.2.3")
    await attempt(journal, clock, await claim_one(journal), audit=True)
    [row] = await journal.audit_entries()
    assert (row.actor, row.action, row.target) == ("dispatcher", "submission", ex_id)
    assert d_id in (row.detail or "")


def z01(clock: Any, ex_id: str, positive: bool) -> ZamFollowUp:
    return ZamFollowUp(delivery=delivery(clock, kind="zam", destination="his", exchange_id=ex_id,
                                         unique_id=f"Z01-{clock.new_id()[:8]}"),
                       rule="z01", positive=positive, dmp_destinations=frozenset({"dmp", "dmp2"}))


async def test_a_positive_z01_follows_only_the_last_dmp_delivery(journal: Any, clock: Any) -> None:
    record, _ = await store(journal, clock, ack_reception=1, deliveries=[delivery(), delivery(destination="dmp2")])
    ex_id = record.exchange.id
    claimed = {d.destination: d for d in await journal.claim_due("w1", 10, 60)}
    first = await attempt(journal, clock, claimed["dmp"], follow_ups=(z01(clock, ex_id, True),))
    assert first.zams == ()
    follow = z01(clock, ex_id, True)
    last = await attempt(journal, clock, claimed["dmp2"], follow_ups=(follow,))
    assert last.zams == (follow.delivery.id,)
    zams = [d for d in await journal.deliveries_for(ex_id) if d.kind == "zam"]
    assert [(z.id, z.status) for z in zams] == [(follow.delivery.id, "queued")]
    assert "zam:queued" in [e.stage for e in await journal.events(ex_id)]


async def test_a_negative_z01_goes_at_the_first_dead_and_only_once(journal: Any, clock: Any) -> None:
    record, _ = await store(journal, clock, ack_reception=1, deliveries=[delivery(), delivery(destination="dmp2")])
    ex_id = record.exchange.id
    claimed = {d.destination: d for d in await journal.claim_due("w1", 10, 60)}
    neg = z01(clock, ex_id, False)
    assert (await attempt(journal, clock, claimed["dmp"], "dead", follow_ups=(neg,))).zams == (neg.delivery.id,)
    assert (await attempt(journal, clock, claimed["dmp2"], "dead", follow_ups=(z01(clock, ex_id, False),))).zams \
        == ()
    assert len([d for d in await journal.deliveries_for(ex_id) if d.kind == "zam"]) == 1


async def test_no_z01_for_a_sender_that_did_not_ask_for_one(journal: Any, clock: Any) -> None:
    record, _ = await store(journal, clock, deliveries=[delivery()])
    d = await claim_one(journal)
    assert (await attempt(journal, clock, d, follow_ups=(z01(clock, record.exchange.id, True),))).zams == ()


async def test_once_follow_ups_are_queued_once_per_mail(journal: Any, clock: Any) -> None:
    record, _ = await store(journal, clock, deliveries=[delivery(kind="mail", destination="mss")])
    ex_id = record.exchange.id

    def once() -> ZamFollowUp:
        return ZamFollowUp(delivery=delivery(clock, kind="zam", destination="his", exchange_id=ex_id,
                                             unique_id="Z02:mail-1"), rule="once", positive=True)

    first = once()
    queued = await journal.record_follow_up(ex_id, at=clock.stamp(), events=[NewEvent("mss:report", {"n": 1})],
                                            zams=[first])
    assert queued == [first.delivery.id]
    assert await journal.record_follow_up(ex_id, at=clock.stamp(), events=[NewEvent("mss:report", {"n": 2})],
                                          zams=[once()]) == []
    assert await journal.record_follow_up(ex_id, at=clock.stamp(), events=[NewEvent("mss:read")]) == []
    assert [e.stage for e in await journal.events(ex_id)].count("mss:report") == 2
    d = next(x for x in await journal.claim_due("w1", 10, 60) if x.kind == "mail")
    out = await attempt(journal, clock, d, follow_ups=(once(),))
    assert out.zams == ()


async def _snapshot(journal: Any, ex_id: str, d_id: str) -> Any:
    return (await journal.get_delivery(d_id), await journal.attempts_for(d_id, bodies=True),
            [e.stage for e in await journal.events(ex_id)], await journal.get_exchange(ex_id),
            await journal.audit_entries())


async def _stale(journal: Any, clock: Any, d: Any, **kw: Any) -> None:
    with pytest.raises(JournalError) as caught:
        await attempt(journal, clock, d, audit=True, **kw)
    assert caught.value.code == "JOURNAL_STALE_CLAIM"


async def test_a_second_record_of_one_claim_is_stale_and_writes_nothing(journal: Any, clock: Any) -> None:
    ex_id, d_id = await one_delivery(journal, clock)
    d = await claim_one(journal)
    await attempt(journal, clock, d, "failed", next_attempt_at=later(clock))
    before = await _snapshot(journal, ex_id, d_id)
    await _stale(journal, clock, d)
    assert await _snapshot(journal, ex_id, d_id) == before


async def test_a_record_by_another_worker_is_stale_and_writes_nothing(journal: Any, clock: Any) -> None:
    ex_id, d_id = await one_delivery(journal, clock)
    d = await claim_one(journal, "w1")
    before = await _snapshot(journal, ex_id, d_id)
    await _stale(journal, clock, d, worker="w2")
    assert await _snapshot(journal, ex_id, d_id) == before
    assert (await attempt(journal, clock, d)).status == "delivered"


async def test_a_record_after_a_reclaim_is_stale_and_writes_nothing(journal: Any, clock: Any, lapse: Any) -> None:
    ex_id, d_id = await one_delivery(journal, clock)
    old = await claim_one(journal, "w1", lease=0.3)
    await lapse(0.6)
    assert await journal.recover_in_flight(expired_only=True) == 1
    new = await claim_one(journal, "w2")
    assert new.attempts == 2
    before = await _snapshot(journal, ex_id, d_id)
    await _stale(journal, clock, old)
    await _stale(journal, clock, new, worker="w1")  # even with the current attempt number
    assert await _snapshot(journal, ex_id, d_id) == before
    assert (await attempt(journal, clock, new)).status == "delivered"


async def test_expire_hold_kills_the_waiting_work_and_queues_one_negative_zam(journal: Any, clock: Any) -> None:
    record, _ = await store(journal, clock, status="held", deliveries=[delivery(status="waiting")])
    ex_id = record.exchange.id
    zam = delivery(clock, kind="zam", destination="his", exchange_id=ex_id, unique_id="Z01-neg")
    assert await journal.expire_hold(ex_id, reason="held too long", code="HOLD_EXPIRED", at=clock.stamp(), zam=zam)
    ex = await journal.get_exchange(ex_id)
    assert (ex.status, ex.reason) == ("dead", "held too long")
    kinds = {d.kind: d.status for d in await journal.deliveries_for(ex_id)}
    assert kinds == {"document": "dead", "zam": "queued"}
    again = delivery(clock, kind="zam", destination="his", exchange_id=ex_id, unique_id="Z01-neg2")
    assert not await journal.expire_hold(ex_id, reason="x", code=None, at=clock.stamp(), zam=again)
    assert len(await journal.deliveries_for(ex_id)) == 2
    queued, _ = await store(journal, clock)
    assert not await journal.expire_hold(queued.exchange.id, reason="x", code=None, at=clock.stamp(), zam=None)
    assert not await journal.expire_hold("missing", reason="x", code=None, at=clock.stamp(), zam=None)


async def test_expire_hold_without_zam_and_with_one_already_queued(journal: Any, clock: Any) -> None:
    record, _ = await store(journal, clock, status="held",
                            deliveries=[delivery(status="waiting"), delivery(kind="zam", destination="his")])
    ex_id = record.exchange.id
    zam = delivery(clock, kind="zam", destination="his", exchange_id=ex_id, unique_id="Z01-x")
    assert await journal.expire_hold(ex_id, reason="late", code=None, at=clock.stamp(), zam=zam)
    assert [d.kind for d in await journal.deliveries_for(ex_id)].count("zam") == 1


async def test_hold_lease_is_exclusive_renewable_and_taken_after_expiry(journal: Any, lapse: Any) -> None:
    assert await journal.hold_lease("expiry", "a", 0.3)
    assert not await journal.hold_lease("expiry", "b", 0.3)
    assert await journal.hold_lease("expiry", "a", 0.3)  # renewed
    assert await journal.hold_lease("retention", "b", 0.3)  # another duty, another lease
    await lapse(0.6)
    assert await journal.hold_lease("expiry", "b", 60)
    assert not await journal.hold_lease("expiry", "a", 60)


async def test_deliveries_without_a_patient_are_not_ordered_among_themselves(journal: Any, clock: Any) -> None:
    await one_delivery(journal, clock, kind="zam", destination="his", patient_key=None)
    await one_delivery(journal, clock, kind="zam", destination="his", patient_key=None)
    assert len(await journal.claim_due("w1", 10, 60)) == 2


async def test_an_attempt_for_an_unknown_or_unclaimed_delivery_is_stale(journal: Any, clock: Any) -> None:
    _, d_id = await one_delivery(journal, clock)
    queued = await journal.get_delivery(d_id)
    await _stale(journal, clock, queued, worker="w1", attempt_no=0)
    ghost = dataclasses.replace(queued, id="missing")
    await _stale(journal, clock, ghost, worker="w1", attempt_no=1)
    assert await journal.claim_due("w1", 0, 60) == []
    assert await journal.attempts_for(d_id) == []
