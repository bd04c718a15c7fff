"""PostgreSQL drivers on the journal's workload: asyncpg vs psycopg 3 async vs psycopg 3 sync in threads.

Usage, from the repository root (needs ``pip install -e '.[bench]'`` for asyncpg)::

    python bench/pg_drivers.py                      # throwaway cluster (tests/pg_support.py), about 90 s
    python bench/pg_drivers.py --seconds 2          # shorter windows
    python bench/pg_drivers.py --url postgresql://postgres@127.0.0.1:5432/postgres --out /tmp/pg.md

[--url URL] [--seconds N] [--out PATH]. Without ``--url`` the script starts its own cluster
(initdb + pg_ctl, fsync on, as the ``postgres`` user when run as root) and stops and deletes it
at the end. With ``--url`` it creates a database ``relais_bench_*`` there (the role needs
CREATEDB) and drops it at the end. Either way every commit runs with ``synchronous_commit=on``.

Workloads (the gateway's two hot paths in a shared PostgreSQL journal):

* ``ingest`` — one transaction = INSERT one exchange (text columns + a ``bytea`` body of 2 KiB,
  then 250 KiB) RETURNING id, 3 event rows (executemany), 1 delivery row, COMMIT; at
  concurrency 1 and 8 (one pooled connection per worker); tables truncated and a CHECKPOINT
  before each row so that no row pays for the previous one's WAL.
* ``claim`` — ``UPDATE deliveries SET status='in_flight', claimed_by=$1, lease_until=now()+60 s
  WHERE id IN (SELECT id ... WHERE status='queued' ORDER BY seq LIMIT 8 FOR UPDATE SKIP LOCKED)
  RETURNING *`` in autocommit, at concurrency 4 over 20,000 queued rows (after a warm-up on rows
  queued ahead of them); the row stops when the queue is empty or the window ends. ``check``
  verifies that no delivery was claimed twice.

Modes: ``asyncpg`` (its pool, defaults), ``asyncpg, no pool reset`` (``create_pool(reset=...)`` a no-op:
the default sends ``RESET ALL; UNLISTEN *; ...`` on every release, one more round trip per
transaction), ``psycopg async`` (``AsyncConnectionPool``), ``psycopg sync+threads``
(``ConnectionPool`` + a ``ThreadPoolExecutor`` of as many threads as workers, called from the
event loop with ``run_in_executor``, as the gateway would). Latency = ``perf_counter_ns`` around
one transaction seen from the event loop, pool acquire and thread hop included. ``client CPU``
is this process's CPU time (all threads) per transaction: the driver's own cost, which fsync
latency hides from tx/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``python bench/pg_drivers.py`` puts bench/, not the repo root, on the path
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg_pool import AsyncConnectionPool, ConnectionPool  # noqa: E402

from tests.pg_support import fresh_database, start_cluster  # noqa: E402

SCHEMA = """
DROP TABLE IF EXISTS events, deliveries, exchanges;
CREATE TABLE exchanges (
    id bigserial PRIMARY KEY,
    message_id text NOT NULL,
    message_type text NOT NULL,
    sender text NOT NULL,
    receiver text NOT NULL,
    patient_ins text,
    status text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    body bytea NOT NULL
);
CREATE TABLE events (
    id bigserial PRIMARY KEY,
    exchange_id bigint NOT NULL REFERENCES exchanges (id),
    kind text NOT NULL,
    detail text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE deliveries (
    id bigserial PRIMARY KEY,
    seq bigserial NOT NULL,
    exchange_id bigint REFERENCES exchanges (id),
    destination text NOT NULL,
    status text NOT NULL,
    claimed_by text,
    lease_until timestamptz,
    attempts int NOT NULL DEFAULT 0
);
CREATE INDEX deliveries_queued ON deliveries (seq) WHERE status = 'queued';
CREATE INDEX events_exchange ON events (exchange_id);
"""

INSERT_EXCHANGE = (
    "INSERT INTO exchanges (message_id, message_type, sender, receiver, patient_ins, status, body)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"
)
INSERT_EVENT = "INSERT INTO events (exchange_id, kind, detail) VALUES ($1, $2, $3)"
INSERT_DELIVERY = "INSERT INTO deliveries (exchange_id, destination, status) VALUES ($1, $2, 'queued')"
CLAIM = (
    "UPDATE deliveries SET status = 'in_flight', claimed_by = $1, lease_until = now() + interval '60 s'"
    " WHERE id IN (SELECT id FROM deliveries WHERE status = 'queued' ORDER BY seq LIMIT 8"
    " FOR UPDATE SKIP LOCKED) RETURNING *"
)
EVENTS = [("received", "MLLP 127.0.0.1:49152"), ("validated", "ADT^A01 v2.5 ok"), ("queued", "fhir")]
CLAIM_ROWS = 20_000
CLAIM_WARMUP_PER_WORKER = 10


def pg(sql: str, binary_last: bool = False) -> str:
    """asyncpg's $n placeholders as psycopg's %s (every $n used once, in order); %b for a bytea last one."""
    import re

    out = re.sub(r"\$\d+", "%s", sql)
    if binary_last:
        head, _, tail = out.rpartition("%s")
        out = head + "%b" + tail
    return out


PG_INSERT_EXCHANGE = pg(INSERT_EXCHANGE, binary_last=True)
PG_INSERT_EVENT, PG_INSERT_DELIVERY, PG_CLAIM = pg(INSERT_EVENT), pg(INSERT_DELIVERY), pg(CLAIM)


def exchange_params(body: bytes, n: int) -> tuple[Any, ...]:
    return (f"MSG{n:012d}", "ADT^A01^ADT_A01", "SIL^HOPITAL", "RELAIS", "1234567890123", "queued", body)


# --- the three drivers: open(url, n) / ingest(body, n) / claim(worker) -> rows / close() --------------


class AsyncpgDriver:
    name = "asyncpg"
    reset: Any = None  # asyncpg's default: Connection.reset() (RESET ALL, UNLISTEN *, ...) on every release

    async def open(self, url: str, n: int) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(
            url, min_size=n, max_size=n, server_settings={"synchronous_commit": "on"}, reset=self.reset
        )

    async def ingest(self, body: bytes, n: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            xid = await conn.fetchval(INSERT_EXCHANGE, *exchange_params(body, n))
            await conn.executemany(INSERT_EVENT, [(xid, kind, detail) for kind, detail in EVENTS])
            await conn.execute(INSERT_DELIVERY, xid, "fhir")

    async def claim(self, worker: str) -> list[int]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(CLAIM, worker)
        return [r["id"] for r in rows]

    async def close(self) -> None:
        await self.pool.close()


async def _keep_session(_conn: Any) -> None:
    """No reset on release: one round trip less per acquire (the journal owns its sessions' state)."""


class AsyncpgNoResetDriver(AsyncpgDriver):
    name = "asyncpg, no pool reset"
    reset = staticmethod(_keep_session)


def _psycopg_kwargs() -> dict[str, Any]:
    return {"autocommit": True, "options": "-c synchronous_commit=on"}


class PsycopgAsyncDriver:
    name = "psycopg async"

    async def open(self, url: str, n: int) -> None:
        self.pool = AsyncConnectionPool(url, min_size=n, max_size=n, kwargs=_psycopg_kwargs(), open=False)
        await self.pool.open(wait=True)

    async def ingest(self, body: bytes, n: int) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(PG_INSERT_EXCHANGE, exchange_params(body, n))
            row = await cur.fetchone()
            assert row is not None
            xid = row[0]
            async with conn.cursor() as c:
                await c.executemany(PG_INSERT_EVENT, [(xid, kind, detail) for kind, detail in EVENTS])
            await conn.execute(PG_INSERT_DELIVERY, (xid, "fhir"))

    async def claim(self, worker: str) -> list[int]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(PG_CLAIM, (worker,))
            return [r[0] for r in await cur.fetchall()]

    async def close(self) -> None:
        await self.pool.close()


class PsycopgThreadsDriver:
    name = "psycopg sync+threads"

    async def open(self, url: str, n: int) -> None:
        self.pool = ConnectionPool(url, min_size=n, max_size=n, kwargs=_psycopg_kwargs(), open=False)
        self.executor = ThreadPoolExecutor(max_workers=n, thread_name_prefix="pg")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, lambda: self.pool.open(wait=True))

    def _ingest(self, body: bytes, n: int) -> None:
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(PG_INSERT_EXCHANGE, exchange_params(body, n)).fetchone()
            assert row is not None
            xid = row[0]
            with conn.cursor() as c:
                c.executemany(PG_INSERT_EVENT, [(xid, kind, detail) for kind, detail in EVENTS])
            conn.execute(PG_INSERT_DELIVERY, (xid, "fhir"))

    def _claim(self, worker: str) -> list[int]:
        with self.pool.connection() as conn:
            return [r[0] for r in conn.execute(PG_CLAIM, (worker,)).fetchall()]

    async def ingest(self, body: bytes, n: int) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self._ingest, body, n)

    async def claim(self, worker: str) -> list[int]:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._claim, worker)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self.pool.close)
        self.executor.shutdown()


DRIVERS: list[type[AsyncpgDriver] | type[PsycopgAsyncDriver] | type[PsycopgThreadsDriver]] = [
    AsyncpgDriver,
    AsyncpgNoResetDriver,
    PsycopgAsyncDriver,
    PsycopgThreadsDriver,
]


# --- measurement ----------------------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    body: str
    conc: int
    driver: str
    txs: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    check: str

    @property
    def tps(self) -> float:
        return self.txs / self.seconds if self.seconds else 0.0


def percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return float("nan")
    k = min(len(sorted_ns) - 1, max(0, round(q * (len(sorted_ns) - 1))))
    return sorted_ns[k] / 1e6


async def timed_workers(
    conc: int, seconds: float, op: Callable[[int], Awaitable[bool]]
) -> tuple[list[int], float, float]:
    """``conc`` workers call ``op(worker)`` until the window ends or op returns False: latencies, wall, cpu."""
    latencies: list[int] = []
    deadline = time.monotonic() + seconds

    async def worker(w: int) -> None:
        while time.monotonic() < deadline:
            t0 = time.perf_counter_ns()
            more = await op(w)
            latencies.append(time.perf_counter_ns() - t0)
            if not more:
                return

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(conc)))
    return sorted(latencies), time.perf_counter() - wall0, time.process_time() - cpu0


def reset(url: str, claim_rows: int = 0) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE events, deliveries, exchanges RESTART IDENTITY")
        if claim_rows:
            conn.execute(
                "INSERT INTO deliveries (destination, status) SELECT 'fhir', 'queued' FROM generate_series(1, %s)",
                (claim_rows,),
            )
            conn.execute("VACUUM ANALYZE deliveries")
        conn.execute("CHECKPOINT")


async def bench_ingest(url: str, cls: Any, body_size: int, conc: int, seconds: float) -> Row:
    reset(url)
    driver = cls()
    await driver.open(url, conc)
    body = os.urandom(body_size)
    counter = iter(range(10**12))

    async def op(_w: int) -> bool:
        await driver.ingest(body, next(counter))
        return True

    try:
        await timed_workers(conc, min(0.5, seconds / 4), op)  # warm-up: connections, prepared statements
        lat, wall, cpu = await timed_workers(conc, seconds, op)
    finally:
        await driver.close()
    with psycopg.connect(url) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM exchanges), (SELECT count(*) FROM events), (SELECT count(*) FROM deliveries)"
        ).fetchone()
    assert counts is not None
    ok = counts[1] == 3 * counts[0] and counts[2] == counts[0]
    label = f"{body_size // 1024} KiB"
    return Row("ingest", label, conc, cls.name, len(lat), wall, percentile(lat, 0.5), percentile(lat, 0.99),
               cpu / max(1, len(lat)) * 1e6, "ok" if ok else f"MISMATCH {counts}")


async def bench_claim(url: str, cls: Any, conc: int, seconds: float) -> Row:
    warm = CLAIM_WARMUP_PER_WORKER * conc
    reset(url, claim_rows=CLAIM_ROWS + warm * 8)
    driver = cls()
    await driver.open(url, conc)
    claimed: list[int] = []
    for w in range(warm):
        await driver.claim(f"warm-{w % conc}")

    async def op(w: int) -> bool:
        ids = await driver.claim(f"instance-{w}")
        claimed.extend(ids)
        return bool(ids)

    try:
        lat, wall, cpu = await timed_workers(conc, seconds, op)
    finally:
        await driver.close()
    with psycopg.connect(url) as conn:
        in_flight = conn.execute("SELECT count(*) FROM deliveries WHERE claimed_by LIKE 'instance-%'").fetchone()
    distinct = len(set(claimed))
    ok = distinct == len(claimed) and in_flight == (distinct,)
    check = f"ok, {len(claimed):,} rows" if ok else f"DOUBLE CLAIM {len(claimed)} vs {distinct} vs {in_flight}"
    return Row("claim", "—", conc, cls.name, len(lat), wall, percentile(lat, 0.5), percentile(lat, 0.99),
               cpu / max(1, len(lat)) * 1e6, check)


# --- report ---------------------------------------------------------------------------------------


def fs_type(path: str) -> str:
    best, kind = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _dev, mnt, typ, *_ = line.split()
            if path.startswith(mnt) and len(mnt) > len(best):
                best, kind = mnt, typ
    except OSError:
        pass
    return f"{kind} ({best})"


def machine_info(url: str, data_dir: str | None) -> dict[str, str]:
    import asyncpg

    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        settings: dict[str, str] = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method',"
            " 'shared_buffers', 'max_connections')").fetchall())
    info = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores (client and server on the same machine)",
        "postgresql": f"{version[0] if version else '?'}; " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())),
        "server": f"throwaway cluster, data dir on {fs_type(data_dir)}" if data_dir else "--url given",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "drivers": f"asyncpg {asyncpg.__version__}, psycopg {psycopg.__version__} "
        f"(libpq {psycopg.pq.version() // 10000}, {psycopg.pq.__impl__}), "
        f"psycopg-pool {__import__('psycopg_pool').__version__}",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    return info


def render(rows: list[Row], info: dict[str, str], seconds: float, total: float) -> str:
    lines = [
        "# PostgreSQL drivers on the journal's workload",
        "",
        f"Generated by `python bench/pg_drivers.py --seconds {seconds:g}`; the script's docstring says what each row does.",
        "",
        *(f"- **{k}**: {v}" for k, v in info.items()),
        f"- **settings**: window {seconds:g} s per row (claim rows end early when the queue is empty), "
        f"whole run {total:.0f} s",
        "",
        "| workload | body | conc | driver | tx/s | p50 ms | p99 ms | client CPU µs/tx | tx | check |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.workload} | {r.body} | {r.conc} | {r.driver} | {r.tps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.cpu_us:,.0f} | {r.txs:,} | {r.check} |"
        )
    return "\n".join(lines) + "\n"


async def run_all(url: str, seconds: float) -> list[Row]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
    rows: list[Row] = []
    await bench_ingest(url, AsyncpgDriver, 2 * 1024, 8, min(1.0, seconds))  # untimed: a cold cluster and page cache
    turn = 0
    for body in (2 * 1024, 250 * 1024):
        for conc in (1, 8):
            turn += 1  # each driver goes first in turn: no driver always pays for the row before it
            for cls in DRIVERS[turn % len(DRIVERS) :] + DRIVERS[: turn % len(DRIVERS)]:
                row = await bench_ingest(url, cls, body, conc, seconds)
                print(f"{row.workload} {row.body} x{row.conc} {row.driver}: {row.tps:,.0f} tx/s "
                      f"p50 {row.p50_ms:.2f} p99 {row.p99_ms:.2f} ms {row.check}", flush=True)
                rows.append(row)
    for cls in DRIVERS[1:] + DRIVERS[:1]:
        row = await bench_claim(url, cls, 4, seconds)
        print(f"claim x4 {row.driver}: {row.tps:,.0f} tx/s p50 {row.p50_ms:.2f} p99 {row.p99_ms:.2f} ms "
              f"{row.check}", flush=True)
        rows.append(row)
    order = {cls.name: i for i, cls in enumerate(DRIVERS)}
    groups = {(r.workload, r.body, r.conc): i for i, r in reversed(list(enumerate(rows)))}
    return sorted(rows, key=lambda r: (groups[(r.workload, r.body, r.conc)], order[r.driver]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="admin URL of a PostgreSQL server (default: start a throwaway cluster)")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured window per row (default 3)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results-pg-drivers.md")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    cluster = None if args.url else start_cluster()
    try:
        server = args.url or cluster.url  # type: ignore[union-attr]
        with fresh_database(server, prefix="relais_bench") as url:
            info = machine_info(url, str(cluster.datadir) if cluster else None)
            rows = asyncio.run(run_all(url, args.seconds))
    finally:
        if cluster:
            cluster.stop()
    text = render(rows, info, args.seconds, time.perf_counter() - started)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
