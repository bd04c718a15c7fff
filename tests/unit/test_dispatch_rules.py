"""Retry decisions (pure) and the journal's claim of due deliveries (per-patient order, recovery)."""

from __future__ import annotations

from datetime import timedelta

from gateway.core.retry import next_attempt
from gateway.journal.sqlite import SqliteJournal
from gateway.settings import DispatcherSettings

CFG = DispatcherSettings(backoff_base=1.0, backoff_cap=60.0, max_attempts=5, max_age_hours=1.0)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    delays = [next_attempt(n, timedelta(0), CFG, retry_after=None, rand=lambda: 1.0).delay for n in (1, 2, 3, 4)]
    assert delays == [1.0, 2.0, 4.0, 8.0]
    low = next_attempt(3, timedelta(0), CFG, retry_after=None, rand=lambda: 0.0).delay
    assert low == 2.0  # never less than half the backoff
    capped = DispatcherSettings(backoff_base=1.0, backoff_cap=5.0, max_attempts=50)
    assert next_attempt(20, timedelta(0), capped, retry_after=None, rand=lambda: 1.0).delay == 5.0


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    assert next_attempt(1, timedelta(0), CFG, retry_after=30.0, rand=lambda: 1.0).delay == 30.0
    assert next_attempt(1, timedelta(0), CFG, retry_after=9999.0, rand=lambda: 1.0).delay == 60.0


def test_attempts_and_age_bound_the_retries() -> None:
    assert next_attempt(5, timedelta(0), CFG, retry_after=None, rand=lambda: 0.5).dead
    assert next_attempt(1, timedelta(hours=2), CFG, retry_after=None, rand=lambda: 0.5).dead
    assert not next_attempt(4, timedelta(minutes=59), CFG, retry_after=None, rand=lambda: 0.5).dead


def _delivery(tx, id_: str, patient: str, at: str = "2025-01-01T00:00:00") -> None:  # type: ignore[no-untyped-def]
    tx.insert_delivery(dict(id=id_, exchange_id="x" + id_, destination="dmp", kind="document", status="queued",
                            next_attempt_at=at, patient_key=patient, created_at=at))


def test_claim_keeps_per_patient_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    j = SqliteJournal(tmp_path / "j.db").open()
    try:
        j.write_sync(lambda tx: [_delivery(tx, i, p) for i, p in (("a1", "A"), ("a2", "A"), ("b1", "B"))])
        now, lease = "2025-01-01T00:00:01", "2025-01-01T00:02:00"
        first = j.write_sync(lambda tx: tx.claim_due(now=now, worker="w", lease_until=lease, limit=10))
        assert {d["id"] for d in first} == {"a1", "b1"}  # a2 waits for a1
        again = j.write_sync(lambda tx: tx.claim_due(now=now, worker="w", lease_until=lease, limit=10))
        assert again == []
        j.write_sync(lambda tx: tx.update_delivery("a1", now, status="delivered"))
        third = j.write_sync(lambda tx: tx.claim_due(now=now, worker="w", lease_until=lease, limit=10))
        assert [d["id"] for d in third] == ["a2"]
        assert third[0]["attempts"] == 1 and third[0]["status"] == "in_flight"
    finally:
        j.close_sync()


def test_in_flight_work_is_recovered_with_unknown_outcome(tmp_path) -> None:  # type: ignore[no-untyped-def]
    j = SqliteJournal(tmp_path / "j.db").open()
    try:
        j.write_sync(lambda tx: _delivery(tx, "a1", "A"))
        j.write_sync(lambda tx: tx.claim_due(now="2025-01-01T00:00:01", worker="w", lease_until="2025-01-01T00:00:02",
                                             limit=1))
        assert j.write_sync(lambda tx: tx.recover_in_flight(now="2025-01-01T00:00:01", expired_only=True)) == 0
        assert j.write_sync(lambda tx: tx.recover_in_flight(now="2025-01-01T00:00:03", expired_only=True)) == 1
        d = j.read_sync(lambda tx: tx.get_delivery("a1"))
        assert d["status"] == "failed" and "unknown" in d["last_error"]
    finally:
        j.close_sync()


def test_group_commit_shares_fsyncs_and_isolates_failures(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    async def main() -> tuple[int, int, list[object]]:
        j = SqliteJournal(tmp_path / "j.db", group_commit_ms=5).open()

        def ok(i: int):  # type: ignore[no-untyped-def]
            return lambda tx: tx.insert_exchange(dict(id=f"e{i}", received_at="t", listener="mllp", raw=b"x",
                                                      sha256="s", size=1, status="received"))

        def boom(tx):  # type: ignore[no-untyped-def]
            tx.insert_exchange(dict(id="bad", received_at="t", listener="mllp", raw=b"x", sha256="s", size=1,
                                    status="received"))
            raise RuntimeError("bug in one transaction")

        results = await asyncio.gather(*[j.write(ok(i)) for i in range(200)], j.write(boom), return_exceptions=True)
        count = j.read_sync(lambda tx: tx.count_exchanges_by_status())["received"]
        await j.close()
        return j.commits, count, results

    commits, count, results = asyncio.run(main())
    assert count == 200  # the failing transaction was rolled back alone
    assert isinstance(results[-1], RuntimeError)
    assert commits < 50  # 201 transactions shared far fewer fsyncs


def test_deletion_waits_behind_the_submission_it_deletes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A T04 queued while its T02 is retrying is not claimed first, even when it is due
    earlier: the DMP would refuse the deletion of an entry it does not have yet."""
    j = SqliteJournal(tmp_path / "j.db").open()
    try:
        j.write_sync(lambda tx: _delivery(tx, "submit", "A"))
        now, lease = "2025-01-01T00:00:01", "2025-01-01T00:02:00"
        assert [d["id"] for d in j.write_sync(lambda tx: tx.claim_due(now=now, worker="w", lease_until=lease,
                                                                      limit=10))] == ["submit"]
        # the submission failed and will be retried in ten minutes; the deletion arrives now
        j.write_sync(lambda tx: tx.update_delivery("submit", now, status="failed",
                                                   next_attempt_at="2025-01-01T00:10:00"))
        j.write_sync(lambda tx: _delivery(tx, "delete", "A", at="2025-01-01T00:00:02"))
        later = "2025-01-01T00:05:00"
        assert j.write_sync(lambda tx: tx.claim_due(now=later, worker="w", lease_until=lease, limit=10)) == []
        retry_time = "2025-01-01T00:10:01"
        claimed = j.write_sync(lambda tx: tx.claim_due(now=retry_time, worker="w", lease_until=lease, limit=10))
        assert [d["id"] for d in claimed] == ["submit"]
        j.write_sync(lambda tx: tx.update_delivery("submit", retry_time, status="delivered"))
        claimed = j.write_sync(lambda tx: tx.claim_due(now=retry_time, worker="w", lease_until=lease, limit=10))
        assert [d["id"] for d in claimed] == ["delete"]
    finally:
        j.close_sync()
def test_large_write_commits_alone_after_the_small_ones_queued_with_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    order: list[str] = []

    async def main() -> int:
        j = SqliteJournal(tmp_path / "j.db", group_commit_ms=20).open()

        def op(name: str, raw: bytes):  # type: ignore[no-untyped-def]
            def fn(tx):  # type: ignore[no-untyped-def]
                tx.insert_exchange(dict(id=name, received_at="t", listener="mllp", raw=raw, sha256="s",
                                        size=len(raw), status="received"))
                order.append(name)
            return fn

        big = j.write(op("big", b"x" * 4_000_000), large=True)
        smalls = [j.write(op(f"s{i}", b"x")) for i in range(5)]
        await asyncio.gather(big, *smalls)
        commits = j.commits
        await j.close()
        return commits

    commits = asyncio.run(main())
    assert order[-1] == "big" and sorted(order[:-1]) == [f"s{i}" for i in range(5)]
    assert commits == 2  # the small ones shared one commit, the large one had its own
