"""The SQLite writer commits a queued group at once, and a write that raises fails alone.

The writer first runs a group without savepoints; when one write raises it rolls the group
back and runs it again with a savepoint around each write. These tests queue a group behind a
write that blocks the writer thread, so the group is exactly what they queued.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.journal.sqlite import SqliteJournal
from gateway.journal.tx import Tx


class Refused(Exception):
    pass


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[SqliteJournal]:
    j = SqliteJournal(tmp_path / "journal.db", group_commit_ms=0).open()
    yield j
    j.close_sync()


def _event(exchange_id: str, *, fail: bool = False):  # type: ignore[no-untyped-def]
    def write(tx: Tx) -> str:
        tx.add_events([(exchange_id, "2026-12-02T10:00:00.000000+00:00", "received", {"n": 1}),
                       (exchange_id, "2026-12-02T10:00:00.000001+00:00", "checked", None)])
        if fail:
            raise Refused(exchange_id)
        return exchange_id
    return write


def _queue_behind_blocker(journal: SqliteJournal, writes: list) -> list:  # type: ignore[type-arg]
    started, go = threading.Event(), threading.Event()

    def blocker(tx: Tx) -> None:
        started.set()
        go.wait(10)

    first = journal.submit(blocker)
    assert started.wait(10)
    futures = [journal.submit(w) for w in writes]
    go.set()
    first.result(10)
    return futures


def _stages(journal: SqliteJournal, exchange_id: str) -> list[str]:
    return [e["stage"] for e in journal.read_sync(lambda tx: tx.events(exchange_id))]


def test_a_group_of_good_writes_is_one_commit(journal: SqliteJournal) -> None:
    before = journal.commits
    futures = _queue_behind_blocker(journal, [_event(f"x{n}") for n in range(5)])
    assert [f.result(10) for f in futures] == [f"x{n}" for n in range(5)]
    assert journal.commits - before == 2  # the blocker's, then the five together
    assert all(_stages(journal, f"x{n}") == ["received", "checked"] for n in range(5))


def test_a_write_that_raises_fails_alone_and_leaves_nothing(journal: SqliteJournal) -> None:
    futures = _queue_behind_blocker(journal, [_event("a"), _event("bad", fail=True), _event("c")])
    assert futures[0].result(10) == "a"
    with pytest.raises(Refused):
        futures[1].result(10)
    assert futures[2].result(10) == "c"
    assert _stages(journal, "a") == ["received", "checked"]
    assert _stages(journal, "c") == ["received", "checked"]
    assert _stages(journal, "bad") == []  # its events were rolled back with it
    assert journal.commit_errors == 0


def test_a_lone_write_that_raises_leaves_nothing(journal: SqliteJournal) -> None:
    with pytest.raises(Refused):
        journal.write_sync(_event("solo", fail=True))
    assert _stages(journal, "solo") == []
    assert journal.write_sync(_event("next")) == "next"
