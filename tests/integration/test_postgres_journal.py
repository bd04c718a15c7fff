"""The PostgreSQL journal as several instances see it: two ``PostgresJournal`` objects on one
database are two Relais instances (each its own pool, threads and LISTEN connection).

What only PostgreSQL has to prove is here: migrations under concurrent starts, duplicate
detection and claims across instances, fencing of stale attempts, leases on the database
clock, LISTEN/NOTIFY, and retention by monthly partitions. The backend-neutral behaviour
is the contract suite's (tests/contract/).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from gateway.errors import JournalError
from gateway.journal import migrate
from gateway.journal.open import inspect_schema, migrate_journal, open_journal
from gateway.journal.postgres import PostgresJournal
from gateway.journal.rows import (
    AttemptRecord,
    InboundRecord,
    NewDelivery,
    NewDocument,
    NewExchange,
    iso,
)

pytestmark = pytest.mark.postgres


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def new_id(self) -> str:  # pragma: no cover - not used by the journal
        return "id"


def _now() -> str:
    return iso(datetime.now(UTC))


def _exchange(i: int | str, *, received_at: str | None = None, control_id: str | None = None,
              status: str = "queued", raw: bytes = b"MSH|^~\\&|APP|FAC\r") -> NewExchange:
    return NewExchange(
        id=f"ex-{i}", received_at=received_at or _now(), listener="mllp", sha256=f"sha-{control_id or i}",
        size=len(raw), status=status, raw=raw, sender_app="APP", sender_facility="FAC",
        control_id=control_id or f"C{i}", message_type="ORU^R01",
    )


def _delivery(ex: NewExchange, n: int, patient: str, *, at: str) -> NewDelivery:
    return NewDelivery(id=f"{ex.id}-d{n}", exchange_id=ex.id, destination="dmp", kind="document",
                       status="queued", next_attempt_at=at, created_at=at, patient_key=patient, doc_index=1,
                       action="submit", unique_id=f"{ex.id}-doc")


@pytest.fixture
def journals(pg_url: str) -> Iterator[tuple[PostgresJournal, PostgresJournal]]:
    a = PostgresJournal(pg_url, pool_size=4).open()
    b = PostgresJournal(pg_url, pool_size=4).open()
    try:
        yield a, b
    finally:
        a.close_sync()
        b.close_sync()


@pytest.fixture
async def pair(journals: tuple[PostgresJournal, PostgresJournal]) -> AsyncIterator[tuple[PostgresJournal, PostgresJournal]]:
    yield journals


def _sql(url: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return list(cur.fetchall()) if cur.description else []


# -- schema and migrations ---------------------------------------------------------------------------------
def test_migrates_an_empty_database_and_reopens_idempotently(pg_url: str) -> None:
    assert inspect_schema(pg_url).current == 0
    first = open_journal(pg_url)
    assert first.schema.up_to_date and first.schema.current == len(migrate.available("postgres"))
    first.close_sync()
    again = open_journal(pg_url, auto_migrate=False)  # nothing pending: accepted as is
    assert again.schema.up_to_date
    again.close_sync()
    rows = _sql(pg_url, "SELECT version, name FROM schema_migrations ORDER BY version")
    assert rows == [(1, "initial"), (2, "leases"), (3, "claim_indexes"), (4, "open_exchanges_by_patient")]
    assert migrate_journal(pg_url).up_to_date


def test_instances_starting_together_migrate_once(pg_url: str) -> None:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        opened = list(pool.map(lambda _: PostgresJournal(pg_url, pool_size=2).open(), range(4)))
    for j in opened:
        assert j.schema is not None and j.schema.up_to_date
        j.close_sync()
    assert _sql(pg_url, "SELECT count(*) FROM schema_migrations") == [(4,)]


def test_an_instance_without_auto_migrate_refuses_an_old_schema(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = migrate.available("postgres")
    # the database as the previous release left it (0001 only)...
    monkeypatch.setattr(migrate, "available", lambda dialect: shipped[:1])
    PostgresJournal(pg_url).open().close_sync()
    monkeypatch.undo()
    assert inspect_schema(pg_url).current == 1
    # ... a new instance that may not migrate refuses it, one that may upgrades it
    with pytest.raises(JournalError) as refused:
        PostgresJournal(pg_url, auto_migrate=False).open()
    assert refused.value.code == "JOURNAL_SCHEMA_OLD"
    upgraded = PostgresJournal(pg_url).open()
    assert upgraded.schema is not None and upgraded.schema.current == 4
    upgraded.close_sync()


async def test_a_read_only_journal_reads_and_refuses_writes(pg_url: str) -> None:
    writer = open_journal(pg_url)
    ex = _exchange("ro")
    await writer.record_inbound(InboundRecord(exchange=ex))
    reader = open_journal(pg_url, readonly=True)
    try:
        got = await reader.get_exchange(ex.id)
        assert got is not None and got.id == ex.id
        with pytest.raises(JournalError):
            await reader.probe(_now())
    finally:
        await reader.close()
        await writer.close()


def test_errors_name_the_database_without_its_password() -> None:
    with pytest.raises(JournalError) as failed:
        open_journal("postgresql://relais:s3cret@127.0.0.1:1/relais")
    assert "s3cret" not in str(failed.value) and "***" in str(failed.value)


# -- intake across instances -----------------------------------------------------------------------------
async def test_one_message_received_by_two_instances_at_once_is_new_once(pair: tuple[PostgresJournal, ...]) -> None:
    a, b = pair
    for round_ in range(10):
        records = [InboundRecord(exchange=_exchange(f"{round_}-{who}", control_id=f"SAME{round_}"), dedup=True)
                   for who in ("a", "b")]
        for r in records:
            r.exchange.sha256 = f"sha-same-{round_}"
        outcomes = await asyncio.gather(a.record_inbound(records[0]), b.record_inbound(records[1]))
        statuses = sorted(o.status for o in outcomes)
        assert statuses == ["duplicate", "queued"], (round_, outcomes)
        dup = next(o for o in outcomes if o.status == "duplicate")
        new = next(o for o in outcomes if o.status == "queued")
        assert dup.duplicate_of == new.exchange_id


async def test_bodies_round_trip(pair: tuple[PostgresJournal, ...]) -> None:
    a, b = pair
    ex = _exchange("body", raw=b"\x00\x0bMSH|binary\xff")
    ex.findings = {"errors": [], "warnings": ["w"]}
    doc = NewDocument(idx=1, unique_id="1.2.3", action="submit", cda=b"<ClinicalDocument/>",
                      xds={"title": "CR"}, fhir={"resourceType": "Bundle"})
    await a.record_inbound(InboundRecord(exchange=ex, documents=[doc], deliveries=[_delivery(ex, 1, "P", at=_now())]))
    got = await b.get_exchange(ex.id, bodies=True)
    assert got is not None and got.raw == ex.raw and got.findings == ex.findings
    assert got.received_at == ex.received_at  # timestamptz comes back as the ISO string that went in
    bodies = await b.exchange_bodies(ex.id)
    assert bodies is not None and bodies.raw == ex.raw and bodies.document == doc.cda
    assert bodies.xds == {"title": "CR"} and bodies.fhir == {"resourceType": "Bundle"}
    listed = await b.list_exchanges(q="Cbody")
    assert [e.id for e in listed] == [ex.id]
    assert (await b.count_exchanges(sender="APP|FAC")) == (1, False)


# -- claims across instances ------------------------------------------------------------------------------
async def test_two_instances_claim_200_deliveries_of_20_patients_once_each_in_patient_order(
    pair: tuple[PostgresJournal, ...],
) -> None:
    a, b = pair
    at = iso(datetime.now(UTC) - timedelta(seconds=5))
    order: dict[str, list[str]] = {}
    for i in range(200):
        patient = f"P{i % 20}"
        ex = _exchange(f"c{i}")
        d = _delivery(ex, 1, patient, at=at)
        order.setdefault(patient, []).append(d.id)
        await a.record_inbound(InboundRecord(exchange=ex, deliveries=[d]))
    claimed: list[tuple[str, str]] = []  # (worker, delivery id), in claim order per worker
    done_order: dict[str, list[str]] = {}

    async def worker(journal: PostgresJournal, name: str) -> None:
        idle = 0
        while idle < 5:
            batch = await journal.claim_due(name, 7, 60)
            if not batch:
                idle += 1
                await asyncio.sleep(0.01)
                continue
            idle = 0
            for d in batch:
                claimed.append((name, d.id))
                # whoever claims the next one of this patient, this one is finished first
                done_order.setdefault(str(d.patient_key), []).append(d.id)
                now = _now()
                await journal.record_attempt(AttemptRecord(
                    delivery_id=d.id, worker=name, attempt=d.attempts, status="delivered", outcome="delivered",
                    started_at=now, finished_at=now))

    await asyncio.gather(worker(a, "a1"), worker(a, "a2"), worker(b, "b1"), worker(b, "b2"))
    ids = [d for _, d in claimed]
    assert len(ids) == 200 and len(set(ids)) == 200  # every delivery claimed, none twice
    assert done_order == order  # per patient, in the order they were recorded
    assert {w for w, _ in claimed} >= {"a1", "b1"}  # both instances took part


async def test_only_the_oldest_open_delivery_of_a_patient_is_due_whoever_holds_it(
    pair: tuple[PostgresJournal, ...],
) -> None:
    a, b = pair
    at = iso(datetime.now(UTC) - timedelta(seconds=5))
    exs = [_exchange(f"o{i}") for i in range(3)]
    for ex in exs:
        await a.record_inbound(InboundRecord(exchange=ex, deliveries=[_delivery(ex, 1, "SAME", at=at)]))
    first = await a.claim_due("a", 10, 60)
    assert [d.id for d in first] == [f"{exs[0].id}-d1"]
    assert await b.claim_due("b", 10, 60) == []  # the first is in flight at a: the rest waits


# -- fencing, leases, recovery ------------------------------------------------------------------------------
async def test_a_stale_attempt_is_fenced_and_does_not_overwrite(pair: tuple[PostgresJournal, ...]) -> None:
    a, b = pair
    at = iso(datetime.now(UTC) - timedelta(seconds=5))
    ex = _exchange("stale")
    await a.record_inbound(InboundRecord(exchange=ex, deliveries=[_delivery(ex, 1, "P", at=at)]))
    [mine] = await a.claim_due("a", 1, 0.05)  # a short lease that runs out
    await asyncio.sleep(0.2)
    assert await b.recover_in_flight(expired_only=True) == 1  # judged on the database's clock
    [theirs] = await b.claim_due("b", 1, 60)
    assert theirs.id == mine.id and theirs.attempts == mine.attempts + 1
    now = _now()
    with pytest.raises(JournalError) as stale:
        await a.record_attempt(AttemptRecord(delivery_id=mine.id, worker="a", attempt=mine.attempts,
                                             status="delivered", outcome="delivered", started_at=now, finished_at=now))
    assert stale.value.code == "JOURNAL_STALE_CLAIM"
    current = await b.get_delivery(mine.id)
    assert current is not None and current.status == "in_flight" and current.claimed_by == "b"
    assert await b.attempts_for(mine.id) == []
    await b.record_attempt(AttemptRecord(delivery_id=mine.id, worker="b", attempt=theirs.attempts,
                                         status="delivered", outcome="delivered", started_at=now, finished_at=now,
                                         request="req", response="resp"))
    [attempt] = await a.attempts_for(mine.id, bodies=True)
    assert (attempt.number, attempt.request, attempt.response) == (theirs.attempts, "req", "resp")


async def test_an_unexpired_lease_is_not_recovered(pair: tuple[PostgresJournal, ...]) -> None:
    a, b = pair
    ex = _exchange("live")
    await a.record_inbound(InboundRecord(exchange=ex, deliveries=[_delivery(ex, 1, "P", at=_now())]))
    assert len(await a.claim_due("a", 1, 60)) == 1
    assert await b.recover_in_flight(expired_only=True) == 0
    assert await a.extend_leases("a", [f"{ex.id}-d1"], 120) == 1
    assert await b.extend_leases("b", [f"{ex.id}-d1"], 120) == 0


async def test_hold_lease_is_exclusive_across_instances_and_taken_over_after_expiry(
    pair: tuple[PostgresJournal, ...],
) -> None:
    a, b = pair
    results = await asyncio.gather(*(j.hold_lease("retention", name, 0.3) for j, name in [(a, "a"), (b, "b")] * 5))
    holders = {name for ok, (_, name) in zip(results, [(a, "a"), (b, "b")] * 5, strict=True) if ok}
    assert len(holders) == 1
    holder = holders.pop()
    other, other_name = (b, "b") if holder == "a" else (a, "a")
    assert await other.hold_lease("retention", other_name, 0.3) is False
    assert await (a if holder == "a" else b).hold_lease("retention", holder, 0.3) is True  # renewed
    await asyncio.sleep(0.5)
    assert await other.hold_lease("retention", other_name, 10) is True  # run out: taken over
    assert await (a if holder == "a" else b).hold_lease("retention", holder, 10) is False


async def test_audit_appends_from_two_instances_make_one_chain(pair: tuple[PostgresJournal, ...]) -> None:
    from gateway.journal.audit_chain import GENESIS_HASH

    a, b = pair
    await asyncio.gather(*(j.append_audit(at=_now(), actor=f"op{i}", action="release", target=None, detail={"i": i})
                           for i in range(40) for j in (a, b)))
    entries = await a.audit_entries()
    assert len(entries) == 80
    prev = GENESIS_HASH
    for e in entries:  # no fork: each row chains onto the one before it
        assert e.prev_hash == prev
        prev = e.hash


# -- LISTEN / NOTIFY ----------------------------------------------------------------------------------------------
async def test_work_made_due_by_one_instance_wakes_the_other(pair: tuple[PostgresJournal, ...]) -> None:
    a, b = pair
    woken = asyncio.Event()
    b.on_work(woken.set)
    await asyncio.sleep(0.3)  # listening (the first wake-up is the one after connecting)
    woken.clear()
    ex = _exchange("wake")
    started = time.monotonic()
    await a.record_inbound(InboundRecord(exchange=ex, deliveries=[_delivery(ex, 1, "P", at=_now())]))
    await asyncio.wait_for(woken.wait(), timeout=5)
    latency = time.monotonic() - started
    woken.clear()
    await asyncio.sleep(0.2)
    assert not woken.is_set()  # nothing else committed: no wake-up
    assert latency < 5


async def test_the_listener_reconnects_when_its_connection_drops(pg_url: str,
                                                                 pair: tuple[PostgresJournal, ...]) -> None:
    a, b = pair
    woken = asyncio.Event()
    b.on_work(woken.set)
    await asyncio.wait_for(woken.wait(), timeout=5)  # connected (one wake-up on connecting)
    killed = _sql(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND query = 'LISTEN relais_work'")
    assert killed == [(True,)]
    woken.clear()
    await asyncio.wait_for(woken.wait(), timeout=10)  # back: the wake-up after reconnecting
    woken.clear()
    ex = _exchange("after-drop")
    await a.record_inbound(InboundRecord(exchange=ex, deliveries=[_delivery(ex, 1, "P", at=_now())]))
    await asyncio.wait_for(woken.wait(), timeout=5)


# -- retention by partitions ----------------------------------------------------------------------------------------
def _partitions(url: str) -> dict[str, str]:
    """partition name → the body table it belongs to."""
    rows = _sql(url, "SELECT c.relname, p.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                     "JOIN pg_class p ON p.oid = i.inhparent "
                     "WHERE p.relname IN ('exchange_raw', 'document_bodies', 'attempt_bodies')")
    return {str(r[0]): str(r[1]) for r in rows}


def _body_bytes(url: str) -> int:
    rows = _sql(url, "SELECT COALESCE(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i "
                     "JOIN pg_class p ON p.oid = i.inhparent "
                     "WHERE p.relname IN ('exchange_raw', 'document_bodies', 'attempt_bodies')")
    return int(rows[0][0])  # type: ignore[call-overload]


async def test_bodies_land_in_their_month_and_retention_drops_old_months(pg_url: str) -> None:
    old = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
    # an instance that opened back then made that month's partitions
    journal = PostgresJournal(pg_url, clock=FixedClock(old)).open()
    try:
        parts = _partitions(pg_url)
        assert {"exchange_raw_p202403", "document_bodies_p202403", "attempt_bodies_p202403"} <= set(parts)
        big = os.urandom(200_000)  # incompressible: TOAST would shrink repeated bytes to nothing
        for i in range(30):
            ex = _exchange(f"old{i}", received_at=iso(old + timedelta(minutes=i)), status="accepted",
                           raw=big + str(i).encode())
            doc = NewDocument(idx=1, unique_id=f"u{i}", action="submit", cda=big, xds={}, fhir=None)
            await journal.record_inbound(InboundRecord(exchange=ex, documents=[doc]))
        # one exchange of that month still has work to do: it keeps the month
        held = _exchange("old-held", received_at=iso(old), status="held", raw=big)
        await journal.record_inbound(InboundRecord(exchange=held))
        assert _sql(pg_url, "SELECT count(*) FROM exchange_raw_p202403") == [(31,)]
        assert _sql(pg_url, "SELECT count(*) FROM exchange_raw_default") == [(0,)]
        now = _now()
        journal.ensure_partitions_sync(datetime.now(UTC))  # as an instance opening today does
        recent = _exchange("recent", received_at=now, status="accepted")
        await journal.record_inbound(InboundRecord(exchange=recent))
        month = datetime.now(UTC).strftime("%Y%m")
        assert _sql(pg_url, f"SELECT count(*) FROM exchange_raw_p{month}") == [(1,)]

        before = _body_bytes(pg_url)
        cutoff = iso(datetime.now(UTC) - timedelta(days=1))
        assert await journal.prune(before=cutoff, at=now, limit=1000) == 30
        assert "exchange_raw_p202403" in _partitions(pg_url)  # the held exchange's body is there
        still = await journal.get_exchange("ex-old-held", bodies=True)
        assert still is not None and still.raw == big

        _sql(pg_url, "UPDATE exchanges SET status = 'rejected' WHERE id = 'ex-old-held'")
        assert await journal.prune(before=cutoff, at=now, limit=1000) == 1
        parts = _partitions(pg_url)
        assert not {"exchange_raw_p202403", "document_bodies_p202403", "attempt_bodies_p202403"} & set(parts)
        assert f"exchange_raw_p{month}" in parts  # recent months stay
        after = _body_bytes(pg_url)
        # the disk space came back (not just dead rows): what is left is the empty partitions' pages
        assert after < before / 10, (before, after)
        print(f"body tables: {before} bytes before retention, {after} after")
        summary = await journal.get_exchange("ex-old1")
        assert summary is not None and summary.pruned_at is not None  # summaries stay
        recent_back = await journal.get_exchange(recent.id, bodies=True)
        assert recent_back is not None and recent_back.raw == recent.raw
    finally:
        journal.close_sync()


async def test_partitions_ahead_are_renewed_by_the_first_write_of_a_new_month(pg_url: str) -> None:
    clock = FixedClock(datetime(2031, 1, 31, 23, 59, tzinfo=UTC))
    journal = PostgresJournal(pg_url, clock=clock).open()
    try:
        assert "exchange_raw_p203104" in _partitions(pg_url) and "exchange_raw_p203105" not in _partitions(pg_url)
        await journal.probe(_now())
        assert "exchange_raw_p203105" not in _partitions(pg_url)  # same month: nothing to do
        clock._now = datetime(2031, 2, 1, 0, 1, tzinfo=UTC)
        await journal.probe(_now())
        assert "exchange_raw_p203105" in _partitions(pg_url)  # still three months ahead
    finally:
        journal.close_sync()


async def test_a_month_without_a_partition_falls_back_to_default(pg_url: str) -> None:
    journal = PostgresJournal(pg_url).open()
    try:
        ex = _exchange("ancient", received_at="2001-01-01T00:00:00.000000+00:00", status="accepted")
        await journal.record_inbound(InboundRecord(exchange=ex))
        assert _sql(pg_url, "SELECT count(*) FROM exchange_raw_default") == [(1,)]
        got = await journal.get_exchange(ex.id, bodies=True)
        assert got is not None and got.raw == ex.raw
    finally:
        journal.close_sync()


def test_a_write_that_meets_a_serialization_failure_or_a_deadlock_runs_again(
    journals: tuple[PostgresJournal, PostgresJournal],
) -> None:
    a, _ = journals
    calls: list[int] = []

    def fn(s: object) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise psycopg.errors.SerializationFailure("could not serialize access")
        if len(calls) == 2:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return "done"

    before = a.stats().commits
    assert a.write_sync(fn) == "done"
    assert len(calls) == 3 and a.retries == 2 and a.stats().commits == before + 1

    def broken(s: object) -> None:
        raise psycopg.errors.UniqueViolation("duplicate key")

    with pytest.raises(psycopg.errors.UniqueViolation):  # not retried: the caller's error
        a.write_sync(broken)
    assert a.retries == 2


async def test_connections_that_died_in_the_pool_are_replaced_without_an_error(pg_url: str) -> None:
    journal = PostgresJournal(pg_url, pool_size=2).open()
    try:
        await journal.probe(_now())
        # a server restart or an idle timeout: every connection of the pool is gone
        _sql(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        await journal.probe(_now())  # a write
        assert journal.retries >= 1  # it met a dead connection and ran again
        assert await journal.count_by_status() == {}  # a read
    finally:
        journal.close_sync()


def test_stats_and_properties(journals: tuple[PostgresJournal, PostgresJournal]) -> None:
    a, _ = journals
    assert a.shared and a.backend == "postgres" and a.location is None and not a.can_vacuum
    assert a.stats().commits >= 1  # the partitions made at open


# -- every named query is valid PostgreSQL ----------------------------------------------------------------------------
def _prepare_all(url: str) -> list[str]:
    """Each statement (and search composition) PREPAREd on the migrated schema: parsed, typed, planned."""
    import re

    from gateway.journal.queries import Queries

    q = Queries.load("postgres")
    pieces = {"page_head", "page_tail", "count_head", "count_tail"}
    fragments = [n for n in q if n.startswith("where_")]
    statements = {n: q[n] for n in q if n not in pieces and not n.startswith("where_")}
    for head, tail in (("page_head", "page_tail"), ("count_head", "count_tail")):
        statements[f"{head}+all"] = "\n".join([q[head], "WHERE " + " AND ".join(q[f] for f in fragments), q[tail]])
        statements[f"{head}+none"] = q[head] + "\n" + q[tail]
    failures = []
    with psycopg.connect(url, autocommit=True) as conn:
        for i, (name, sql) in enumerate(sorted(statements.items())):
            numbers: dict[str, int] = {}

            def number(m: re.Match[str], numbers: dict[str, int] = numbers) -> str:
                return f"${numbers.setdefault(m.group(1), len(numbers) + 1)}"

            text = re.sub(r"%\((\w+)\)s", number, sql).replace("%%", "%")
            result = conn.pgconn.prepare(f"q{i}".encode(), text.encode())
            if result.error_message:
                failures.append(f"{name}: {result.error_message.decode().strip()}")
    return failures


def test_every_named_query_prepares_on_postgres(pg_url: str) -> None:
    PostgresJournal(pg_url).open().close_sync()
    assert _prepare_all(pg_url) == []


# -- a database whose collation is not byte order ---------------------------------------------------------
async def test_prefix_searches_hold_in_a_french_glibc_locale(pg_server: str) -> None:
    """A hospital's database is often created in fr_FR.UTF-8, where glibc weighs "-" and "^" as
    nothing at first and a range bounded by "\\uffff" misses the very values it should hold:
    the prefix searches compare bytes instead. (.ci/run generates the locale.)"""
    from tests.pg_support import database_url

    name = f"relais_fr_{os.getpid()}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        try:
            conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE 'fr_FR.UTF-8'")
        except psycopg.Error as exc:
            if os.environ.get("CI") == "true":
                raise
            pytest.skip(f"no fr_FR.UTF-8 locale on this machine ({type(exc).__name__}); locale-gen fr_FR.UTF-8")
    url = database_url(pg_server, name)
    journal = PostgresJournal(url, pool_size=2).open()
    try:
        ex = _exchange("x")
        ex.id, ex.message_type = "3f2a1b9c-1d2e-4f00-8a00-000000000001", "ADT^A01^ADT_A01"
        await journal.record_inbound(InboundRecord(ex))
        assert [e.id for e in await journal.list_exchanges(control_or_id="3F2A1B9C-1")] == [ex.id]
        assert [e.id for e in await journal.list_exchanges(message_type="ADT")] == [ex.id]  # every ADT event
        got = await journal.get_exchange("3f2a1b9c-1d")
        assert got is not None and got.id == ex.id
    finally:
        journal.close_sync()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
