"""The two reference servers of the ingest benchmark: the floor and the durable minimum.

Run one per process (``bench/ingest.py`` starts them)::

    python bench/servers.py echo  --port 0
    python bench/servers.py store --port 0 --db /tmp/store.db

* ``echo`` — MLLP frame in, ACK out, no other work: what asyncio and the kernel cost,
  the ceiling no gateway written this way can pass.
* ``store`` — the least a *durable* gateway can do before it acknowledges: find the
  frame, split the segments, read MSH, then two SQLite rows per message (the message with
  its raw bytes and one ``received`` event) in WAL mode with ``synchronous=FULL``. One
  writer thread takes whatever is queued into one transaction (group commit, no waiting
  for company), and the ACKs of that batch leave only after its COMMIT returned.
  Primary keys only: no secondary index, no dedup, no identity, no document.

Both print ``ready port=N`` on stdout once listening, ``lag <seconds>`` (the longest
event-loop stall so far) on SIGUSR1 and, on SIGTERM, one JSON line with what they
counted (messages, commits, the longest stall) before exiting.
The stall is measured as in ``relais serve`` (:class:`gateway.operations.metrics.LoopLagMonitor`),
so the three servers are read with the same instrument.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``python bench/servers.py`` puts bench/, not the repo root, on the path
    sys.path.insert(0, str(ROOT))

from gateway.operations.metrics import LoopLagMonitor  # noqa: E402

__all__ = ["MllpFramer", "build_ack", "StoreWriter", "STORE_SCHEMA", "serve", "main"]

START, END = b"\x0b", b"\x1c\x0d"

STORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id          INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    sender      TEXT,
    control_id  TEXT,
    type        TEXT,
    segments    INTEGER NOT NULL,
    raw         BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    message_id  INTEGER NOT NULL,
    at          TEXT NOT NULL,
    stage       TEXT NOT NULL
);
"""


class MllpFramer:
    """Cuts a byte stream into MLLP payloads (``VT payload FS CR``); remembers where it looked."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scanned = 0  # bytes already known to hold no FS CR: large frames are not rescanned

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        while True:
            end = self._buf.find(END, max(self._scanned - 1, 0))
            if end < 0:
                self._scanned = len(self._buf)
                return frames
            start = self._buf.find(START, 0, end)
            frames.append(bytes(self._buf[start + 1 : end]))
            del self._buf[: end + 2]
            self._scanned = 0


def _stamp() -> str:
    return time.strftime("%Y%m%d%H%M%S")


def build_ack(msh: bytes, code: bytes = b"AA") -> bytes:
    """A framed original-mode ACK for the MSH segment ``msh`` (HL7 v2.5 §2.9.2: MSA-2 = MSH-10)."""
    f = msh.split(b"|")
    f += [b""] * (12 - len(f))
    ack = b"|".join((b"MSH", f[1], f[4], f[5], f[2], f[3], _stamp().encode(), b"", b"ACK", f[9], b"P", f[11]))
    return START + ack + b"\rMSA|" + code + b"|" + f[9] + b"\r" + END


class _Conn(asyncio.Protocol):
    def __init__(self, on_frame: Callable[[bytes, asyncio.Transport], None]) -> None:
        self._on_frame = on_frame
        self._framer = MllpFramer()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        for payload in self._framer.feed(data):
            self._on_frame(payload, self._transport)


class StoreWriter:
    """One SQLite writer thread; each batch = whatever was queued, one transaction, then the ACKs."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.path = path
        self._loop = loop
        self._queue: queue.SimpleQueue[tuple[bytes, bytes, bytes, int, bytes, asyncio.Transport] | None] = (
            queue.SimpleQueue()
        )
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(STORE_SCHEMA)
        self._next_id = int(conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM messages").fetchone()[0])
        conn.close()
        self.messages = 0
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def submit(self, payload: bytes, transport: asyncio.Transport) -> None:
        segments = payload.split(b"\r")
        msh = segments[0]
        f = msh.split(b"|")
        sender = f[2] + b"|" + f[3] if len(f) > 3 else b""
        control = f[9] if len(f) > 9 else b""
        mtype = f[8] if len(f) > 8 else b""
        nseg = sum(1 for s in segments if s)
        self._queue.put((payload, sender, control, nseg, mtype, transport))

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # the commit is on disk when COMMIT returns
        while True:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            stop = False
            while True:  # group commit: take what is already queued, never wait for more
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(conn, batch)
            if stop:
                break
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[tuple[bytes, bytes, bytes, int, bytes, asyncio.Transport]]) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        first = self._next_id
        self._next_id += len(batch)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO messages (id, received_at, sender, control_id, type, segments, raw) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(first + i, now, s.decode("latin-1"), c.decode("latin-1"), t.decode("latin-1"), n, p)
             for i, (p, s, c, n, t, _tr) in enumerate(batch)],
        )
        conn.executemany(
            "INSERT INTO events (message_id, at, stage) VALUES (?, ?, 'received')",
            [(first + i, now) for i in range(len(batch))],
        )
        conn.execute("COMMIT")
        self.commits += 1
        self.messages += len(batch)
        acks = [(tr, build_ack(p.split(b"\r", 1)[0])) for p, _s, _c, _n, _t, tr in batch]
        self._loop.call_soon_threadsafe(_send_acks, acks)


def _send_acks(acks: list[tuple[asyncio.Transport, bytes]]) -> None:
    for transport, ack in acks:
        if not transport.is_closing():
            transport.write(ack)


async def serve(kind: str, host: str, port: int, db: str | None, announce: Callable[[str], None]) -> dict[str, float]:
    """Run ``echo`` or ``store`` until SIGTERM/SIGINT; return what was counted."""
    loop = asyncio.get_running_loop()
    monitor = LoopLagMonitor(lambda _lag: None)
    lag_task = asyncio.create_task(monitor.run())
    counted = {"messages": 0}
    writer: StoreWriter | None = None
    if kind == "echo":
        def on_frame(payload: bytes, transport: asyncio.Transport) -> None:
            counted["messages"] += 1
            transport.write(build_ack(payload.split(b"\r", 1)[0]))
    else:
        if not db:
            raise SystemExit("store needs --db PATH")
        writer = StoreWriter(db, loop)
        on_frame = writer.submit
    server = await loop.create_server(lambda: _Conn(on_frame), host, port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGUSR1: print the longest stall so far, so the client can read it after its warm-up
    loop.add_signal_handler(signal.SIGUSR1, lambda: announce(f"lag {monitor.max_lag!r}"))
    announce(f"ready port={server.sockets[0].getsockname()[1]}")
    await stop.wait()
    server.close()
    lag_task.cancel()
    if writer is not None:
        writer.stop()
        counted = {"messages": writer.messages, "commits": writer.commits}
    return {**counted, "loop_lag_max_s": monitor.max_lag}


def main(argv: list[str] | None = None) -> int:
    """Command line: ``echo`` or ``store``, then one JSON line of counts on exit."""
    parser = argparse.ArgumentParser(description="Reference MLLP servers for bench/ingest.py")
    parser.add_argument("kind", choices=("echo", "store"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--db", help="SQLite file (store)")
    args = parser.parse_args(argv)

    def announce(line: str) -> None:
        print(line, flush=True)

    stats = asyncio.run(serve(args.kind, args.host, args.port, args.db, announce))
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
