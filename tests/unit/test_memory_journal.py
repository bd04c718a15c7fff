"""The memory journal: atomic writes, reads that are copies, and the trickier queries as Tx means them."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.journal.memory import MemoryJournal, MemorySession
from gateway.journal.open import backend_of, open_journal
from gateway.journal.session import Session
from gateway.journal.tx import GENESIS_HASH, Tx


def t(minute: int, second: int = 0) -> str:
    return f"2026-01-01T10:{minute:02d}:{second:02d}.000000+00:00"


def exchange(ex_id: str, *, at: str = t(0), status: str = "accepted", **extra: Any) -> dict[str, Any]:
    return dict(id=ex_id, received_at=at, listener="mllp", raw=b"MSH|", sha256="0" * 64, size=4, status=status,
                **extra)


def delivery(d_id: str, ex_id: str, *, patient: str | None = "p1", destination: str = "dmp", status: str = "queued",
             due: str = t(0), **extra: Any) -> dict[str, Any]:
    return dict(id=d_id, exchange_id=ex_id, destination=destination, kind="document", status=status,
                next_attempt_at=due, created_at=t(0), patient_key=patient, **extra)


@pytest.fixture
def journal() -> MemoryJournal:
    return MemoryJournal()


# -- transactions ----------------------------------------------------------------------------------
def test_a_failing_write_leaves_the_store_exactly_as_before(journal: MemoryJournal) -> None:
    def seed(s: Session) -> None:
        for i in range(3):
            s.insert_exchange(exchange(f"ex{i}", at=t(i)))
        s.insert_delivery(delivery("d1", "ex1"))
        s.add_event("ex1", t(1), "received")
        s.append_audit(at=t(1), actor="op", action="seed", target=None, detail={})
        s.upsert_identity(dict(ipp_key="A|1", traits={"n": 1}, updated_at=t(1)))

    journal.write_sync(seed)
    before = journal.read_sync(_everything)
    tables_before = {name: list(tbl.rows.items()) for name, tbl in journal.store.tables.items()}
    sequences_before = dict(journal.store.autoincrement)
    commits = journal.stats().commits

    def fails(s: Session) -> None:
        s.update_exchange("ex0", t(9), status="held", reason="r")
        s.insert_exchange(exchange("ex9", at=t(9)))
        s.insert_delivery(delivery("d2", "ex9"))
        s.claim_due(now=t(9), worker="w", lease_until=t(10), limit=10)
        s.add_event("ex1", t(9), "moved")
        s.append_audit(at=t(9), actor="op", action="x", target=None, detail={})
        s.upsert_identity(dict(ipp_key="A|1", ins="1234567890123", updated_at=t(9)))
        s.link_identities("A|1", "A|2", t(9), "ex1")
        s.hold_lease("retention", "me", t(9), t(10))
        s.probe(t(9))
        s.prune_batch(before=t(59), at=t(9), limit=10, errors_only=True)  # deletes ex1, its delivery and event
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        journal.write_sync(fails)
    assert journal.read_sync(_everything) == before
    # every table, row for row and in the same order, and the AUTOINCREMENT sequences
    assert {name: list(tbl.rows.items()) for name, tbl in journal.store.tables.items()} == tables_before
    assert journal.store.autoincrement == sequences_before
    assert journal.store.probe_at is None
    assert journal.stats().commits == commits
    # the sequences rolled back with the rows: the next ids are the ones the failed write had taken
    journal.write_sync(lambda s: s.add_event("ex1", t(10), "again"))
    assert max(journal.store.tables["events"].rows) == 2


async def test_a_failing_async_write_is_rolled_back_and_the_next_one_commits(journal: MemoryJournal) -> None:
    def half(s: Session) -> None:
        s.insert_exchange(exchange("ex1"))
        s.insert_exchange(exchange("ex1"))  # the primary key refuses the second

    with pytest.raises(Exception, match="UNIQUE constraint failed: exchanges.id"):
        await journal._write(half)
    assert await journal.get_exchange("ex1") is None
    await journal._write(lambda s: s.insert_exchange(exchange("ex1")))
    assert (await journal.get_exchange("ex1")) is not None


def test_reads_are_copies(journal: MemoryJournal) -> None:
    journal.write_sync(lambda s: (
        s.insert_exchange(exchange("ex1", findings={"errors": ["x"]})),
        s.insert_delivery(delivery("d1", "ex1")),
        s.upsert_identity(dict(ipp_key="A|1", traits={"name": "DUPONT"}, updated_at=t(0))),
        s.insert_document("ex1", 1, "1.2.3", "submit", b"<cda/>", {"k": ["v"]}, None),
    ))

    def mutate(s: Session) -> None:
        s.get_exchange("ex1", bodies=True)["status"] = "dead"  # type: ignore[index]
        s.get_exchange("ex1")["findings"]["errors"].append("y")  # type: ignore[index]
        s.list_exchanges()[0]["status"] = "dead"
        s.get_delivery("d1")["status"] = "dead"  # type: ignore[index]
        s.deliveries_for("ex1")[0]["status"] = "dead"
        s.get_identity("A|1")["traits"]["name"] = "X"  # type: ignore[index]
        s.list_identities()[0]["traits"]["name"] = "X"
        s.get_document("ex1", 1)["xds"]["k"].append("w")  # type: ignore[index]

    journal.read_sync(mutate)
    ex = journal.read_sync(lambda s: s.get_exchange("ex1"))
    assert ex is not None and ex["status"] == "accepted" and ex["findings"] == {"errors": ["x"]}
    assert journal.read_sync(lambda s: s.get_delivery("d1"))["status"] == "queued"  # type: ignore[index]
    assert journal.read_sync(lambda s: s.get_identity("A|1"))["traits"] == {"name": "DUPONT"}  # type: ignore[index]
    assert journal.read_sync(lambda s: s.get_document("ex1", 1))["xds"] == {"k": ["v"]}  # type: ignore[index]


def test_a_read_cannot_write(journal: MemoryJournal) -> None:
    with pytest.raises(Exception, match="readonly"):
        journal.read_sync(lambda s: s.insert_exchange(exchange("ex1")))
    assert journal.read_sync(lambda s: s.count_exchanges()) == (0, False)


def test_a_journal_call_inside_a_write_is_refused_not_shown_uncommitted_data(journal: MemoryJournal) -> None:
    def nested(s: Session) -> Any:
        s.insert_exchange(exchange("ex1"))
        return journal.read_sync(lambda r: r.get_exchange("ex1"))

    with pytest.raises(Exception, match="inside a write"):
        journal.write_sync(nested)
    assert journal.read_sync(lambda s: s.get_exchange("ex1")) is None


def test_values_are_stored_as_sqlite_would(journal: MemoryJournal) -> None:
    journal.write_sync(lambda s: s.insert_exchange(exchange("ex1", dmp_bound=True, control_id=42)))
    ex = journal.read_sync(lambda s: s.get_exchange("ex1"))
    assert ex is not None and ex["dmp_bound"] == 1 and type(ex["dmp_bound"]) is int and ex["control_id"] == "42"
    with pytest.raises(Exception, match="no column named bogus"):
        journal.write_sync(lambda s: s.update_exchange("ex1", t(1), bogus=1))


# -- the trickier queries ---------------------------------------------------------------------------
def test_claim_due_keeps_each_patients_order_per_destination(journal: MemoryJournal) -> None:
    journal.write_sync(lambda s: (
        s.insert_exchange(exchange("ex1")),
        s.insert_delivery(delivery("p1-first", "ex1", status="waiting", due=t(0))),  # open: blocks p1 on dmp
        s.insert_delivery(delivery("p1-second", "ex1", due=t(0))),
        s.insert_delivery(delivery("p1-mss", "ex1", destination="mss", due=t(2))),  # another destination
        s.insert_delivery(delivery("p2-late", "ex1", patient="p2", due=t(3))),
        s.insert_delivery(delivery("p2-later", "ex1", patient="p2", due=t(1))),  # blocked by p2-late (lower seq)
        s.insert_delivery(delivery("nobody-a", "ex1", patient=None, due=t(1))),  # no patient: never blocked
        s.insert_delivery(delivery("nobody-b", "ex1", patient=None, due=t(1))),
        s.insert_delivery(delivery("not-yet", "ex1", patient="p3", due=t(30))),
    ))
    claimed = journal.write_sync(lambda s: s.claim_due(now=t(10), worker="w1", lease_until=t(11), limit=10))
    assert [d["id"] for d in claimed] == ["nobody-a", "nobody-b", "p1-mss", "p2-late"]  # by due time, then seq
    assert all(d["status"] == "in_flight" and d["claimed_by"] == "w1" and d["attempts"] == 1 for d in claimed)
    # p2-late is in flight now: p2-later still waits behind it
    assert journal.write_sync(lambda s: s.claim_due(now=t(10), worker="w2", lease_until=t(11), limit=10)) == []


def _search_fixture(s: Session) -> None:
    s.insert_exchange(exchange("aaa-111", at=t(1), message_type="ADT^A01", sender_app="APP", sender_facility="FAC",
                               control_id="c1", patient_ipp="AUTH|123", patient_ins="1234567890123"))
    s.insert_exchange(exchange("AAB-222", at=t(2), message_type="ADT^A08", sender_app="APP", sender_facility="OTHER",
                               control_id="c2", patient_ipp="ELSE|123", status="held"))
    s.insert_exchange(exchange("bbb-333", at=t(3), message_type="ORU^R01", sender_app="LAB", sender_facility=None,
                               control_id="aab", patient_ipp="AUTH|9", document_id="1.2.3"))
    s.insert_document("bbb-333", 1, "1.2.3", "submit", b"<cda/>", {}, None)


@pytest.mark.parametrize(("filters", "ids"), [
    ({}, ["bbb-333", "AAB-222", "aaa-111"]),
    ({"message_type": "ADT"}, ["AAB-222", "aaa-111"]),  # a prefix: every ADT event type
    ({"message_type": "ADT^A01"}, ["aaa-111"]),
    ({"message_type": "adt*"}, ["AAB-222", "aaa-111"]),  # a wildcard is LIKE: ASCII case folded
    ({"message_type": "*R01"}, ["bbb-333"]),
    ({"message_type": "adt"}, []),  # a prefix is exact about case
    ({"sender": "APP|FAC"}, ["aaa-111"]),
    ({"sender": "APP"}, ["AAB-222", "aaa-111"]),
    ({"sender": "OTHER"}, ["AAB-222"]),
    ({"sender": "LAB"}, []),  # a bare sender names (application, facility) pairs with both present
    ({"status": "held"}, ["AAB-222"]),
    ({"control_id": "c1"}, ["aaa-111"]),
    ({"q": "aa"}, ["AAB-222", "aaa-111"]),  # an id prefix, LIKE: case-insensitive
    ({"q": "aab"}, ["bbb-333", "AAB-222"]),  # bbb-333 by its control id
    ({"q": "1.2.3"}, ["bbb-333"]),  # a document uniqueId
    ({"q": "%"}, []),  # wildcards are taken literally
    ({"control_or_id": "AA"}, ["aaa-111"]),  # an id prefix, lowered: AAB-222 is not >= "aa"
    ({"control_or_id": "c2"}, ["AAB-222"]),
    ({"since": t(2)}, ["bbb-333", "AAB-222"]),
    ({"until": t(2)}, ["aaa-111"]),
    ({"since": t(2), "until": t(3)}, ["AAB-222"]),
    ({"patient": "AUTH|123"}, ["aaa-111"]),
    ({"patient": "123"}, ["AAB-222", "aaa-111"]),  # a bare IPP, on any authority
    ({"patient": "1234567890123"}, ["aaa-111"]),  # an INS
    ({"document": "1.2.3"}, ["bbb-333"]),
    ({"before_seq": 3}, ["AAB-222", "aaa-111"]),
    ({"limit": 1, "offset": 1}, ["AAB-222"]),
])
def test_exchange_search_filters(journal: MemoryJournal, filters: dict[str, Any], ids: list[str]) -> None:
    journal.write_sync(_search_fixture)
    assert [r["id"] for r in journal.read_sync(lambda s: s.list_exchanges(**filters))] == ids
    counting = {k: v for k, v in filters.items() if k not in ("before_seq", "limit", "offset")}
    if counting == filters:
        assert journal.read_sync(lambda s: s.count_exchanges(**counting)) == (len(ids), False)


def test_count_exchanges_stops_at_its_cap(journal: MemoryJournal) -> None:
    journal.write_sync(_search_fixture)
    assert journal.read_sync(lambda s: s.count_exchanges(cap=2)) == (2, True)
    assert journal.read_sync(lambda s: s.count_exchanges(cap=3)) == (3, False)


def test_get_exchange_by_unique_prefix(journal: MemoryJournal) -> None:
    journal.write_sync(_search_fixture)
    got = journal.read_sync(lambda s: s.get_exchange("bb"))
    assert got is not None and got["id"] == "bbb-333" and "raw" not in got and got["patient_ipp"] == "AUTH|9"
    assert journal.read_sync(lambda s: s.get_exchange("aa")) is None  # aaa-111 and AAB-222: ambiguous
    assert journal.read_sync(lambda s: s.get_exchange("AAA"))["id"] == "aaa-111"  # type: ignore[index]
    assert journal.read_sync(lambda s: s.get_exchange("b_b")) is None  # "_" is not a wildcard
    assert journal.read_sync(lambda s: s.get_exchange("bbb-333", bodies=True))["raw"] == b"MSH|"  # type: ignore[index]


def test_prune_takes_bodies_of_finished_work_and_errors_only_deletes_what_ended_well(journal: MemoryJournal) -> None:
    def seed(s: Session) -> None:
        for ex_id, status in (("done", "delivered"), ("bad", "rejected"), ("held", "held"), ("fresh", "delivered")):
            s.insert_exchange(exchange(ex_id, at=t(50) if ex_id == "fresh" else t(1), status=status))
            s.insert_delivery(delivery(f"d-{ex_id}", ex_id, status="delivered", payload=b"zam"))
            s.insert_attempt(dict(delivery_id=f"d-{ex_id}", number=1, started_at=t(1), finished_at=t(1),
                                  outcome="delivered", request="<rq/>", response="<rs/>"))
            s.insert_document(ex_id, 1, f"u-{ex_id}", "submit", b"<cda/>", {"x": 1}, {"f": 1})
            s.add_event(ex_id, t(1), "received")

    journal.write_sync(seed)
    assert journal.write_sync(lambda s: s.prune_batch(before=t(10), at=t(20), limit=1)) == 1  # oldest first, a batch
    assert journal.write_sync(lambda s: s.prune_batch(before=t(10), at=t(20), limit=10, errors_only=True)) == 1
    assert journal.write_sync(lambda s: s.prune_batch(before=t(10), at=t(20), limit=10)) == 0  # all done

    def look(s: Session) -> dict[str, Any]:
        return {i: (s.get_exchange(i, bodies=True), s.get_document(i, 1), s.attempts_for(f"d-{i}", bodies=True),
                    s.events(i)) for i in ("done", "bad", "held", "fresh")}

    seen = journal.read_sync(look)
    ex, doc, attempts, events = seen["done"]  # pruned by the first pass: bodies gone, summary kept
    assert ex["raw"] is None and ex["pruned_at"] == t(20) and doc["cda"] is None and doc["xds"] is None
    assert attempts[0]["request"] is None and events
    assert journal.read_sync(lambda s: s.get_delivery("d-done"))["payload"] is None  # type: ignore[index]
    ex, doc, attempts, events = seen["bad"]  # an error: pruned, its summary kept
    assert ex["raw"] is None and ex["status"] == "rejected" and events
    for kept in ("held", "fresh"):  # may still be sent / not old enough
        ex, doc, attempts, events = seen[kept]
        assert ex["raw"] == b"MSH|" and doc["cda"] == b"<cda/>" and attempts[0]["request"] == "<rq/>"


def test_errors_only_prune_deletes_exchanges_that_ended_well(journal: MemoryJournal) -> None:
    journal.write_sync(lambda s: (
        s.insert_exchange(exchange("ok", status="accepted")), s.add_event("ok", t(0), "received"),
        s.insert_delivery(delivery("d-ok", "ok", status="delivered")),
        s.insert_exchange(exchange("ko", status="rejected")),
    ))
    assert journal.write_sync(lambda s: s.prune_batch(before=t(10), at=t(20), limit=10, errors_only=True)) == 2
    assert journal.read_sync(lambda s: (s.get_exchange("ok"), s.events("ok"), s.get_delivery("d-ok"))) == (
        None, [], None)
    assert journal.read_sync(lambda s: s.get_exchange("ko"))["pruned_at"] == t(20)  # type: ignore[index]


def test_audit_chain_and_leases(journal: MemoryJournal) -> None:
    first = journal.write_sync(lambda s: s.append_audit(at=t(1), actor="op", action="a", target="x", detail={"b": 1}))
    journal.write_sync(lambda s: s.append_audit(at=t(2), actor="op", action="b", target=None, detail={}))
    rows = journal.read_sync(lambda s: s.audit_rows())
    assert [r["seq"] for r in rows] == [1, 2] and rows[0]["prev_hash"] == GENESIS_HASH
    assert rows[0]["hash"] == first == Tx.audit_hash(GENESIS_HASH, t(1), "op", "a", "x", '{"b": 1}')
    assert rows[1]["prev_hash"] == first
    assert journal.write_sync(lambda s: s.hold_lease("retention", "a", t(0), t(5)))
    assert not journal.write_sync(lambda s: s.hold_lease("retention", "b", t(1), t(6)))  # a holds it
    assert journal.write_sync(lambda s: s.hold_lease("retention", "a", t(1), t(6)))  # renewed
    assert journal.write_sync(lambda s: s.hold_lease("retention", "b", t(7), t(9)))  # ran out: b takes it
    assert journal.store.get("leases", "retention") == {"name": "retention", "holder": "b", "token": 2,
                                                        "expires_at": t(9)}


async def test_memory_url_opens_a_fresh_journal() -> None:
    assert backend_of("memory://") == "memory"
    a, b = open_journal("memory://"), open_journal("memory://")
    assert isinstance(a, MemoryJournal) and a is not b and a.backend == "memory" and not a.shared
    assert a.schema is not None and a.schema.up_to_date and a.schema.dialect == "sqlite"
    await a.probe(t(0))
    assert a.store.probe_at == t(0) and a.stats().commits == 1 and b.stats().commits == 0
    await a.close()


def _everything(s: Session) -> dict[str, Any]:
    assert isinstance(s, MemorySession)
    return {
        "exchanges": s.list_exchanges(limit=-1), "bodies": [s.get_exchange(e["id"], bodies=True)
                                                            for e in s.list_exchanges(limit=-1)],
        "deliveries": [s.get_delivery(d) for d in ("d1", "d2")], "events": s.events("ex1"),
        "audit": s.audit_rows(), "identities": s.list_identities(), "links": s.linked_identities("A|1"),
    }
