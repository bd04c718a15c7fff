"""Pre-populate a journal with N exchanges, fast: "a journal of a million exchanges" (day 60).

    python bench/fill_journal.py relais /tmp/journal.db --exchanges 1000000
    python bench/fill_journal.py store  /tmp/store.db   --exchanges 1000000

``relais`` creates the file with the gateway's own schema (``gateway/journal/sql/migrations/sqlite/``,
through :func:`gateway.journal.sqlite.open_journal`), then bulk-inserts rows shaped like
the ones ``relais serve`` writes, bypassing the pipeline: indexes are dropped, rows go in
with ``synchronous=OFF`` in large transactions, and the schema script is run again to
rebuild the indexes, which is several times faster than maintaining them row by row.
The file is left in WAL mode like a journal the gateway made.

What is in it (seeded, so two fills are identical): 60 days of traffic from the two
fixtures' senders, 85 % ``ADT^A01`` accepted (the fixture's bytes with a unique MSH-10,
three events each, as serve writes them) and 15 % ``MDM^T02`` delivered (the MDM
fixture's bytes, seven events, one document row — without the CDA, XDS and FHIR bodies,
which keeps a million exchanges at 3.3 GiB —, one delivery and one attempt), over
200 000 patients, one identity row each. ``store`` fills the minimal server's two tables (``bench/servers.py``) with the
same messages: one message row and one event row each.

A column the schema makes NOT NULL without a default, and that this tool does not know,
stops the fill with its name: the schema changed, teach the tool the new column.

:func:`cached` keeps built files under ``bench/.cache/`` (named after the row count and a
hash of the schema, so a schema change rebuilds) and is what ``bench/ingest.py`` calls.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.servers import STORE_SCHEMA  # noqa: E402

__all__ = ["fill_relais", "fill_store", "cached", "CACHE", "main"]

CACHE = ROOT / "bench" / ".cache"
FIXTURES = ROOT / "fixtures" / "hl7v2"
START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 60
PATIENTS = 200_000
MDM_SHARE = 0.15
BATCH = 20_000
_SEED = 20260101
FILL_VERSION = "1"  # bump when the rows this tool writes change: cached files are then rebuilt


def _relais_schema() -> str:
    """All the SQLite migrations' text: a new migration makes a new cached file."""
    from gateway.journal.migrate import available

    return "".join(m.sql for m in available("sqlite"))


def _with_control_id(raw: bytes, control_id: bytes) -> bytes:
    head, sep, rest = raw.partition(b"\r")
    fields = head.split(b"|")
    fields[9] = control_id
    return b"|".join(fields) + sep + rest


def _iso(at: datetime) -> str:
    return at.isoformat()


class _Messages:
    """The seeded stream of (index, kind, raw, received_at, patient) the fills share."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.adt = (FIXTURES / "adt_a01_vali.hl7").read_bytes()
        self.mdm = (FIXTURES / "mdm_t02_initial.hl7").read_bytes()
        self.step = timedelta(days=DAYS) / max(n, 1)

    def __iter__(self) -> Iterator[tuple[int, str, bytes, datetime, int]]:
        rnd = random.Random(_SEED)
        for i in range(self.n):
            is_mdm = rnd.random() < MDM_SHARE
            template = self.mdm if is_mdm else self.adt
            raw = _with_control_id(template, b"F%09d" % i)  # never collides with a benchmark MSH-10
            yield i, "MDM^T02" if is_mdm else "ADT^A01", raw, START + self.step * i, rnd.randrange(PATIENTS)


def _columns(conn: sqlite3.Connection, table: str) -> dict[str, tuple[bool, bool]]:
    """name → (NOT NULL, has a default) for each column of ``table``."""
    return {r[1]: (bool(r[3]), r[4] is not None or bool(r[5])) for r in conn.execute(f"PRAGMA table_info({table})")}


class _Inserter:
    """Batched ``executemany`` for one table, checked against the live schema."""

    def __init__(self, conn: sqlite3.Connection, table: str, keys: list[str]) -> None:
        cols = _columns(conn, table)
        missing = [c for c, (notnull, default) in cols.items() if notnull and not default and c not in keys]
        if missing:
            raise SystemExit(f"fill_journal: {table}.{', '.join(missing)} is NOT NULL and unknown to this tool")
        self.keep = [i for i, k in enumerate(keys) if k in cols]
        names = [keys[i] for i in self.keep]
        self.sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"  # noqa: S608
        self.conn = conn
        self.rows: list[tuple[Any, ...]] = []

    def add(self, row: tuple[Any, ...]) -> None:
        self.rows.append(tuple(row[i] for i in self.keep) if len(self.keep) != len(row) else row)
        if len(self.rows) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.conn.executemany(self.sql, self.rows)
            self.rows = []


def _bulk_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")  # a throw-away build: no WAL, no fsync
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")  # 1 GB: the primary-key B-trees stay in memory
    return conn


def _drop_indexes(conn: sqlite3.Connection) -> None:
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").fetchall():
        conn.execute(f'DROP INDEX "{name}"')


def _finish(conn: sqlite3.Connection, schema: str) -> None:
    conn.executescript(schema)  # CREATE INDEX IF NOT EXISTS …: the indexes come back, built in one pass
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()


def fill_relais(path: Path, n: int, progress: Callable[[str], None] = lambda _s: None) -> None:
    """Create ``path`` with the gateway's schema and ``n`` exchanges (see the module docstring)."""
    from gateway.journal.sqlite import SqliteJournal

    SqliteJournal(path).open().close_sync()  # the schema exactly as the gateway creates it
    conn = _bulk_connection(path)
    _drop_indexes(conn)
    rnd = random.Random(_SEED + 1)
    ex = _Inserter(conn, "exchanges", [
        "id", "seq", "received_at", "listener", "peer", "raw", "sha256", "size", "sender_app", "sender_facility",
        "control_id", "message_type", "version", "charset", "status", "ack_code", "patient_ins", "patient_ipp",
        "document_id", "dmp_bound", "ack_reception", "findings", "updated_at",
    ])
    ev = _Inserter(conn, "events", ["exchange_id", "at", "stage", "detail"])
    dl = _Inserter(conn, "deliveries", [
        "id", "seq", "exchange_id", "destination", "kind", "status", "attempts", "next_attempt_at", "patient_key",
        "unique_id", "doc_index", "action", "created_at", "updated_at",
    ])
    doc = _Inserter(conn, "documents", ["exchange_id", "idx", "unique_id", "action"])
    att = _Inserter(conn, "attempts", [
        "delivery_id", "number", "started_at", "finished_at", "outcome", "duration",
    ])
    findings = json.dumps({"errors": [], "warnings": []})
    deliveries = 0
    conn.execute("BEGIN")
    for i, kind, raw, at, patient in _Messages(n):
        xid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        t, later = _iso(at), _iso(at + timedelta(milliseconds=30))
        ins, ipp = f"2{patient:014d}", f"1.2.250.1.999.1.2|P{patient:07d}"
        sha = hashlib.sha256(raw).hexdigest()
        mdm = kind == "MDM^T02"
        doc_id = f"1.2.250.1.999.1.1.{i}" if mdm else None
        ex.add((
            xid, i + 1, t, "mllp", "10.0.0.1:40000", raw, sha, len(raw), "DPI-RELAIS" if mdm else "GAM",
            "CLINIQUE-RELAIS" if mdm else "RELAIS-TEST", f"F{i:09d}", kind, "2.6" if mdm else "2.5", "UNICODE UTF-8",
            "delivered" if mdm else "accepted", "AA", ins, ipp, doc_id, int(mdm), int(mdm), findings,
            later if mdm else t,
        ))
        ev.add((xid, t, "received", json.dumps({"listener": "mllp", "size": len(raw), "sha256": sha})))
        ev.add((xid, t, "parsed", '{"kind": "document", "warnings": 0}' if mdm else '{"kind": "adt", "warnings": 0}'))
        if (i + 1) % 100_000 == 0:
            progress(f"  {i + 1:,} exchanges")
        if not mdm:
            ev.add((xid, t, "identity", '{"registry": "updated", "qualified": true, "trigger": "A01"}'))
            continue
        deliveries += 1
        did = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        ev.add((xid, t, "normalised", json.dumps({"documents": [doc_id]})))
        ev.add((xid, t, "identity", '{"qualified": true, "hold": null}'))
        ev.add((xid, t, "queued", '{"destinations": ["outbox"]}'))
        ev.add((xid, later, "attempt:document",
                json.dumps({"delivery": did, "destination": "outbox", "attempt": 1, "outcome": "delivered"})))
        ev.add((xid, later, "delivered", "{}"))
        dl.add((did, deliveries, xid, "outbox", "document", "delivered", 1, later, ipp, doc_id, 1, "submit", t, later))
        doc.add((xid, 1, doc_id, "submit"))
        att.add((did, 1, t, later, "delivered", 0.03))
    for ins_ in (ex, ev, dl, doc, att):
        ins_.flush()
    ident = _Inserter(conn, "identities", ["ipp_key", "ins", "ins_oid", "traits", "status", "qualified", "updated_at"])
    for p in range(PATIENTS):
        ident.add((f"1.2.250.1.999.1.2|P{p:07d}", f"2{p:014d}", "1.2.250.1.213.1.4.10", "{}", "VALI", 1, _iso(START)))
    ident.flush()
    conn.execute("COMMIT")
    progress("  rebuilding indexes")
    _finish(conn, _relais_schema())


def fill_store(path: Path, n: int, progress: Callable[[str], None] = lambda _s: None) -> None:
    """Create ``path`` with the minimal server's tables and ``n`` messages, one event each."""
    conn = _bulk_connection(path)
    conn.executescript(STORE_SCHEMA)
    msg = _Inserter(conn, "messages", ["id", "received_at", "sender", "control_id", "type", "segments", "raw"])
    ev = _Inserter(conn, "events", ["message_id", "at", "stage"])
    conn.execute("BEGIN")
    for i, kind, raw, at, _patient in _Messages(n):
        t = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        sender = "DPI-RELAIS|CLINIQUE-RELAIS" if kind == "MDM^T02" else "GAM|RELAIS-TEST"
        mtype = raw.split(b"|", 9)[8].decode()  # MSH-9 as sent, as the server stores it
        msg.add((i + 1, t, sender, f"F{i:09d}", mtype, raw.count(b"\r") + 1, raw))
        ev.add((i + 1, t, "received"))
        if (i + 1) % 250_000 == 0:
            progress(f"  {i + 1:,} messages")
    msg.flush()
    ev.flush()
    conn.execute("COMMIT")
    _finish(conn, STORE_SCHEMA)


FILLERS: dict[str, Callable[[Path, int, Callable[[str], None]], None]] = {"relais": fill_relais, "store": fill_store}


def cached(kind: str, n: int, progress: Callable[[str], None] = lambda _s: None) -> Path:
    """The path of a filled journal of ``kind`` with ``n`` exchanges, built on first use."""
    schema = _relais_schema() if kind == "relais" else STORE_SCHEMA
    key = hashlib.sha256(f"{schema}{FILL_VERSION}".encode()).hexdigest()[:12]  # new schema or fill: new file
    path = CACHE / f"{kind}-{n}-{key}.db"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob(f"{kind}-{n}-*.db"):  # stale builds of an older schema
        old.unlink()
    tmp = path.with_suffix(".building")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
        leftover.unlink(missing_ok=True)
    t0 = time.monotonic()
    progress(f"filling a {kind} journal with {n:,} exchanges into {path} (once; cached)")
    FILLERS[kind](tmp, n, progress)
    os.replace(tmp, path)
    progress(f"  done in {time.monotonic() - t0:.0f} s, {path.stat().st_size / 2**20:,.0f} MiB")
    return path


def main(argv: list[str] | None = None) -> int:
    """Command line: fill one file (``PATH``) or the benchmark cache (no ``PATH``)."""
    parser = argparse.ArgumentParser(description="Pre-populate a Relais or minimal-server journal")
    parser.add_argument("kind", choices=sorted(FILLERS))
    parser.add_argument("path", nargs="?", type=Path, help="file to create (default: the bench/.cache entry)")
    parser.add_argument("--exchanges", type=int, default=1_000_000)
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, flush=True)

    if args.path is None:
        print(cached(args.kind, args.exchanges, say))
        return 0
    if args.path.exists():
        raise SystemExit(f"fill_journal: {args.path} exists; refusing to add to it")
    t0 = time.monotonic()
    FILLERS[args.kind](args.path, args.exchanges, say)
    say(f"{args.path}: {args.exchanges:,} exchanges in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
