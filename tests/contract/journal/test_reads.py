"""Every read of the journal, retention (prune, vacuum) and the readiness probe."""

from __future__ import annotations

from typing import Any

from gateway.journal.rows import NewEvent
from tests.contract.journal.builders import attempt, claim_one, delivery, store

INS = "180017512345629"


async def test_get_exchange_by_id_and_by_unique_prefix(journal: Any, clock: Any) -> None:
    a, _ = await store(journal, clock, id="abc12345-0000-0000-0000-000000000001")
    await store(journal, clock, id="abc12399-0000-0000-0000-000000000002")
    assert (await journal.get_exchange(a.exchange.id)).id == a.exchange.id
    assert (await journal.get_exchange("abc123")) is None  # ambiguous
    assert (await journal.get_exchange("abc1234")).id == a.exchange.id
    assert (await journal.get_exchange("abc1234", bodies=True)).raw == a.exchange.raw
    assert await journal.get_exchange("zzz") is None
    assert await journal.get_exchange("abc1_") is None  # LIKE wildcards are taken literally


async def corpus(journal: Any, clock: Any) -> list[Any]:
    """Six exchanges with distinct senders, types, patients and documents, oldest first."""
    specs: list[dict[str, Any]] = [
        dict(message_type="ORU^R01", sender_app="LAB", sender_facility="H1", patient_ins=INS, documents=1),
        dict(message_type="MDM^T02", sender_app="RIS", sender_facility="H1", patient_ipp="HOSP|123", status="held"),
        dict(message_type="MDM^T04", sender_app="RIS", sender_facility="H2", control_id="CTL-X", document_id="DOC9"),
        dict(message_type="ADT^A28", sender_app="PAS", sender_facility="H1", status="accepted",
             patient_ipp="CLIN|123"),
        dict(message_type="ADT^A31", sender_app="PAS", sender_facility="H2", status="rejected"),
        dict(message_type="ORU^R01", sender_app="LAB", sender_facility="H2", status="accepted"),
    ]
    out = []
    for spec in specs:
        record, _ = await store(journal, clock, **spec)
        out.append(record)
    return out


def ids(rows: list[Any]) -> list[str]:
    return [r.id for r in rows]


async def test_list_exchanges_newest_first_with_each_filter(journal: Any, clock: Any) -> None:
    rs = await corpus(journal, clock)
    x = [r.exchange.id for r in rs]

    async def listed(**f: Any) -> list[str]:
        return ids(await journal.list_exchanges(**f))

    assert await listed() == x[::-1]
    assert await listed(status="accepted") == [x[5], x[3]]
    assert await listed(message_type="ORU^R01") == [x[5], x[0]]
    assert await listed(message_type="MDM") == [x[2], x[1]]
    assert await listed(message_type="ADT*") == [x[4], x[3]]
    assert await listed(sender="RIS|H1") == [x[1]]
    assert await listed(sender="PAS") == [x[4], x[3]]
    assert await listed(sender="H2") == [x[5], x[4], x[2]]
    assert await listed(sender="NOBODY") == []
    assert await listed(control_id="CTL-X") == [x[2]]
    assert await listed(q="CTL-X") == [x[2]]
    assert await listed(q="DOC9") == [x[2]]
    assert await listed(q=x[4][:12]) == [x[4]]
    assert await listed(q="%") == []
    assert await listed(since=rs[2].exchange.received_at) == [x[5], x[4], x[3], x[2]]
    assert await listed(until=rs[2].exchange.received_at) == [x[1], x[0]]
    assert await listed(since=rs[1].exchange.received_at, until=rs[3].exchange.received_at) == [x[2], x[1]]
    assert await listed(patient=INS) == [x[0]]
    assert await listed(patient="HOSP|123") == [x[1]]
    assert await listed(patient="123") == [x[3], x[1]]
    assert await listed(document=rs[0].documents[0].unique_id) == [x[0]]
    assert await listed(control_or_id="CTL-X") == [x[2]]
    assert await listed(control_or_id=x[3][:12]) == [x[3]]
    assert await listed(status="accepted", sender="LAB") == [x[5]]
    assert await listed(limit=2) == [x[5], x[4]]
    assert await listed(limit=2, offset=2) == [x[3], x[2]]
    assert await listed(sender="H2", limit=1, offset=1) == [x[4]]


async def test_list_exchanges_pages_with_the_keyset_cursor(journal: Any, clock: Any) -> None:
    rs = await corpus(journal, clock)
    seen: list[str] = []
    cursor = None
    while True:
        page = await journal.list_exchanges(limit=4, before_seq=cursor)
        if not page:
            break
        seen += ids(page)
        cursor = page[-1].seq
    assert seen == [r.exchange.id for r in rs][::-1]
    first = await journal.list_exchanges(limit=1, status="accepted")
    assert ids(await journal.list_exchanges(status="accepted", before_seq=first[0].seq)) == [rs[3].exchange.id]


async def test_count_exchanges_with_a_cap_and_count_by_status(journal: Any, clock: Any) -> None:
    await corpus(journal, clock)
    assert await journal.count_exchanges() == (6, False)
    assert await journal.count_exchanges(cap=3) == (3, True)
    assert await journal.count_exchanges(cap=6) == (6, False)
    assert await journal.count_exchanges(status="accepted") == (2, False)
    assert await journal.count_exchanges(sender="H2", cap=2) == (2, True)
    assert await journal.count_exchanges(message_type="ADT") == (2, False)
    assert await journal.count_by_status() == {"queued": 2, "held": 1, "accepted": 2, "rejected": 1}


async def test_events_come_back_in_the_order_they_were_recorded(journal: Any, clock: Any) -> None:
    record, _ = await store(journal, clock, events=[NewEvent("received", {"a": 1}), NewEvent("parsed"),
                                                    NewEvent("validated", {"nested": {"é": [1, 2]}})])
    await journal.record_follow_up(record.exchange.id, at=clock.stamp(), events=[NewEvent("later")])
    events = await journal.events(record.exchange.id)
    assert [e.stage for e in events] == ["received", "parsed", "validated", "later"]
    assert events[0].detail == {"a": 1} and events[2].detail == {"nested": {"é": [1, 2]}}
    assert events[1].at == record.exchange.received_at
    assert await journal.events("missing") == []


async def test_deliveries_and_the_outbound_messages_they_sent(journal: Any, clock: Any) -> None:
    record, _ = await store(journal, clock, deliveries=[
        delivery(), delivery(kind="zam", destination="his", unique_id="MSG1", payload=b"MSH|zam\r"),
        delivery(kind="ack", destination="his", unique_id="MSG2")])
    ds = await journal.deliveries_for(record.exchange.id)
    assert [d.id for d in ds] == [d.id for d in record.deliveries]
    zam = await journal.get_delivery(record.deliveries[1].id)
    assert (zam.kind, zam.unique_id, zam.payload, zam.patient_key) == ("zam", "MSG1", b"MSH|zam\r", "P1")
    assert await journal.get_delivery("missing") is None
    assert (await journal.outbound_by_control_id("MSG1")).id == record.deliveries[1].id
    assert (await journal.outbound_by_control_id("MSG2")).id == record.deliveries[2].id
    assert await journal.outbound_by_control_id("NOPE") is None
    later, _ = await store(journal, clock, deliveries=[delivery(kind="zam", destination="his", unique_id="MSG1")])
    assert (await journal.outbound_by_control_id("MSG1")).id == later.deliveries[0].id  # the latest


async def test_worklists_open_work_and_health_reads(journal: Any, clock: Any) -> None:
    h1, _ = await store(journal, clock, status="held")
    h2, _ = await store(journal, clock, status="held")
    q, _ = await store(journal, clock, deliveries=[delivery(patient_key="A"), delivery(destination="mhd",
                                                                                        patient_key="B")])
    zq, _ = await store(journal, clock, control_id="ZC", deliveries=[delivery(kind="zam", destination="his",
                                                                              patient_key="C"),
                                                                     delivery(kind="zam", destination="his",
                                                                              patient_key="D")])
    held, total = await journal.held_worklist(limit=1)
    assert (ids(held), total) == ([h1.exchange.id], 2)
    assert await journal.oldest_held_since() == h1.exchange.received_at
    since = clock.stamp()
    claimed = {d.patient_key: d for d in await journal.claim_due("w1", 10, 60)}
    await attempt(journal, clock, claimed["A"], outcome="found-existing")
    await attempt(journal, clock, claimed["B"], "failed", next_attempt_at=clock.stamp())
    await attempt(journal, clock, claimed["C"], "dead")
    await attempt(journal, clock, claimed["D"], "failed", next_attempt_at=clock.stamp())
    dead, n = await journal.dead_worklist()
    assert n == 1 and [(d.id, d.destination, d.kind, d.attempts, d.control_id, d.message_type) for d in dead] == [
        (claimed["C"].id, "his", "zam", 1, "ZC", "MDM^T02")]
    assert await journal.zam_trouble() == {"dead": 1, "failed": 1}
    work = {w.destination: (w.count, w.oldest) for w in await journal.open_work()}
    assert work == {"mhd": (1, q.deliveries[1].created_at), "his": (1, zq.deliveries[1].created_at)}
    tallies = {(t.destination, t.outcome): t.n for t in await journal.attempt_tallies_since(since)}
    assert tallies == {("dmp", "found-existing"): 1, ("mhd", "failed"): 1, ("his", "dead"): 1, ("his", "failed"): 1}
    assert all(len(t.minute) == 16 for t in await journal.attempt_tallies_since(since))
    assert await journal.attempt_tallies_since(clock.stamp()) == []
    success = await journal.last_success_since(since)
    assert list(success) == ["dmp"]
    assert await journal.last_success_since(clock.stamp()) == {}
    await journal.release_held(operator="op", reason="r", at=clock.stamp())
    assert await journal.oldest_held_since() is None
    assert await journal.held_worklist() == ([], 0)


async def test_prune_takes_bodies_of_finished_work_and_keeps_summaries(journal: Any, clock: Any) -> None:
    delivered, _ = await store(journal, clock, documents=1, deliveries=[delivery()])
    d = await claim_one(journal)
    await attempt(journal, clock, d, request="<req/>", response="<resp/>")
    rejected, _ = await store(journal, clock, status="rejected")
    kept = [(await store(journal, clock, status=s, documents=1, deliveries=[delivery(status=ds, patient_key=s)]))[0]
            for s, ds in (("held", "waiting"), ("queued", "queued"))]
    dead, _ = await store(journal, clock, status="dead", deliveries=[delivery(status="dead", patient_key="X")])
    cut = clock.stamp()
    young, _ = await store(journal, clock, status="accepted")
    assert await journal.prune(before=cut, at=clock.stamp(), limit=1) == 1
    assert await journal.prune(before=cut, at=clock.stamp(), limit=100) == 1
    assert await journal.prune(before=cut, at=clock.stamp(), limit=100) == 0
    for r, status in ((delivered, "delivered"), (rejected, "rejected")):
        ex = await journal.get_exchange(r.exchange.id)
        assert ex is not None and ex.pruned_at is not None and ex.status == status
        assert not (await journal.exchange_bodies(r.exchange.id)).raw
        assert await journal.events(r.exchange.id) != []
    assert (await journal.document(delivered.exchange.id, 1)).cda is None
    [a] = await journal.attempts_for(d.id, bodies=True)
    assert (a.request, a.response, a.outcome) == (None, None, "delivered")
    for r in (*kept, dead, young):
        assert (await journal.exchange_bodies(r.exchange.id)).raw == r.exchange.raw
        assert (await journal.get_exchange(r.exchange.id)).pruned_at is None
    assert (await journal.document(kept[0].exchange.id, 1)).cda == kept[0].documents[0].cda
    assert await journal.vacuum(1000) >= 0


async def test_prune_errors_only_deletes_what_ended_well(journal: Any, clock: Any) -> None:
    delivered, _ = await store(journal, clock, deliveries=[delivery()])
    d = await claim_one(journal)
    await attempt(journal, clock, d)
    accepted, _ = await store(journal, clock, status="accepted")
    rejected, _ = await store(journal, clock, status="rejected")
    held, _ = await store(journal, clock, status="held")
    cut = clock.stamp()
    assert await journal.prune(before=cut, at=clock.stamp(), limit=100, errors_only=True) == 3
    for r in (delivered, accepted):
        assert await journal.get_exchange(r.exchange.id) is None
        assert await journal.events(r.exchange.id) == []
    assert await journal.deliveries_for(delivered.exchange.id) == []
    assert await journal.attempts_for(d.id) == []
    assert (await journal.get_exchange(rejected.exchange.id)).pruned_at is not None
    assert (await journal.get_exchange(held.exchange.id)).status == "held"
    assert await journal.count_exchanges() == (2, False)


async def test_probe_commits_and_the_journal_says_what_it_is(journal: Any, backend: str, clock: Any) -> None:
    await journal.probe(clock.stamp())
    await journal.probe(clock.stamp())
    assert journal.backend == backend
    assert journal.shared is (backend == "postgres")
    assert isinstance(journal.can_vacuum, bool)
    assert (journal.location is None) is (backend != "sqlite")
    assert journal.stats().commit_errors == 0
    journal.on_work(lambda: None)  # a hint hook: registering one never fails


async def test_an_id_prefix_is_matched_whatever_its_case(journal: Any, clock: Any) -> None:
    record, _ = await store(journal, clock, id="abcdef12-0000-0000-0000-000000000001")
    assert (await journal.get_exchange("ABCDEF12")).id == record.exchange.id
    assert ids(await journal.list_exchanges(control_or_id="ABCDEF12")) == [record.exchange.id]
    assert ids(await journal.list_exchanges(q="ABCDEF12")) == [record.exchange.id]
