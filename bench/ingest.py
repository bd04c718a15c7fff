"""Ingest benchmark: ``relais serve`` against the floor and the durable minimum, in one run.

    python bench/ingest.py              # full run, a few minutes; writes bench/results.md
    python bench/ingest.py --quick      # smoke run: short windows, no million-exchange rows
    python bench/ingest.py --no-pin     # let the kernel place server and client (both cores)
    python bench/ingest.py --postgres   # also (d): relais on a PostgreSQL journal (throwaway cluster)

Three servers, each a subprocess started fresh for every row:

* (a) ``echo``  — ``bench/servers.py echo``: MLLP frame → ACK, no other work;
* (b) ``store`` — ``bench/servers.py store``: split the segments, two SQLite rows per message,
  WAL + ``synchronous=FULL``, one writer with group commit, ACK after COMMIT;
* (c) ``relais`` — ``python -m gateway serve`` on its embedded defaults in a fresh data dir
  (only ``--allow-test-ins``: the fixtures carry test INS; ports 0; its JSON logs go to a
  temporary file, so their cost is counted).

The server is pinned to one core and this process (the load client) to the other.
The client keeps K connections busy back to back (send, wait for the ACK, send again),
every message with a fresh MSH-10, and checks each ACK's MSA-2 against what it sent.
Per row: warm-up, then a timed window; throughput counts the ACKs received inside the
window, latencies are those ACKs' round trips; server CPU from ``/proc/<pid>/stat``
(all threads), peak RSS from ``VmHWM``; the rest of the machine's CPU use during the
window is shown too, so a disturbed row can be seen and rerun.

The (b) and (c) rows run twice: on an empty journal and on one of a million exchanges
(``bench/fill_journal.py``, built once and cached under ``bench/.cache/``, copied for the
run); a pinned run ends with (c) on the document loads unpinned. See ``bench/README.md``
for every column.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import math
import os
import platform
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``python bench/ingest.py`` puts bench/, not the repo root, on the path
    sys.path.insert(0, str(ROOT))

__all__ = [
    "ECHO",
    "STORE",
    "RELAIS",
    "Message",
    "Load",
    "LoadStats",
    "Window",
    "Row",
    "Settings",
    "load_messages",
    "large_mdm",
    "LARGE_BYTES",
    "LARGE_MAX_MESSAGE",
    "drive",
    "ServerProcess",
    "run_row",
    "run_rows",
    "render",
    "main",
]

FIXTURES = ROOT / "fixtures" / "hl7v2"
CORPUS = ROOT.parent / "shared" / "corpus"
SEGUR_MDM = (CORPUS / "hl7v2" / "ansforge" / "hl7V2-exemples" / "trans-doc-cda" / "v2.1-segur" / "mdm" / "initial"
             / "message_MDM_CR_Radio_INIT_N1_Base64.er7")
START, END = b"\x0b", b"\x1c\x0d"
TICK = os.sysconf("SC_CLK_TCK")
ECHO, STORE, RELAIS = "(a) echo", "(b) store", "(c) relais"
RELAIS_UNPINNED = "(c) relais, unpinned"
RELAIS_PG = "(d) relais, PostgreSQL"  # `--journal postgresql://…`: a fresh database per row
RELAIS_REF = "(r) relais, reference"  # `--reference REV`: serve of an older commit, same machine, same run
#: the reference build (``--reference``): path of its git worktree and its short commit id
_REF: dict[str, str] = {}
#: the PostgreSQL server the (d) rows use (``--postgres``); each row creates its own database in it
_PG: dict[str, str] = {}
MIXED = "ADT + 2 Ségur"
LARGE = "ADT + one 20 MB MDM"


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Message:
    """A benchmark message, cut around MSH-10 so a fresh control id costs one concatenation."""

    label: str
    raw: bytes
    kind: str = ""  # ADT, MDM or Ségur: which of the targets applies

    @property
    def parts(self) -> tuple[bytes, bytes]:
        head, sep, rest = self.raw.partition(b"\r")
        fields = head.split(b"|")
        return b"|".join(fields[:9]) + b"|", b"|" + b"|".join(fields[10:]) + sep + rest

    def framer(self) -> Callable[[bytes], bytes]:
        """``control_id → framed message`` for this message."""
        prefix, suffix = self.parts
        prefix, suffix = START + prefix, suffix + END
        return lambda control_id: prefix + control_id + suffix


def _as_cr(data: bytes) -> bytes:
    """The corpus files are stored with LF line ends; HL7 v2 separates segments with CR."""
    lines = [line for line in re.split(rb"\r\n|\n|\r", data) if line.strip()]
    return b"\r".join(lines) + b"\r"


LARGE_BYTES = 20_000_000  # issue 16: "a 20 MB message never stalls the loop more than 20 ms"
LARGE_MAX_MESSAGE = 32 << 20  # serve refuses frames over mllp.max_message_bytes (16 MiB by default)


def large_mdm(mdm: bytes, size: int = LARGE_BYTES) -> bytes:
    """The MDM fixture grown to ``size`` bytes and still accepted: a PDF of 7 MB in its nonXMLBody
    (one text node must stay under libxml2's 10 MB limit) and XML comments after the body."""
    segments = mdm.split(b"\r")
    at = next(i for i, seg in enumerate(segments) if seg.startswith(b"OBX|1|"))
    fields = segments[at].split(b"|")
    comps = fields[5].split(b"^")
    cda = base64.b64decode(comps[4]).decode()
    pdf = b"%PDF-1.4\n" + random.Random(16).randbytes(7_000_000)
    start = cda.index('representation="B64">') + len('representation="B64">')
    cda = cda[:start] + base64.b64encode(pdf).decode() + cda[cda.index("</text>", start):]
    room = size * 3 // 4 - len(cda) - 2_000  # what base64 of the CDA leaves for the comments
    pad = "<!--" + "padding " * 12_500 + "-->\n"
    cda = cda.replace("</ClinicalDocument>", pad * max(room // len(pad), 0) + "</ClinicalDocument>")
    comps[4] = base64.b64encode(cda.encode())
    fields[5] = b"^".join(comps)
    segments[at] = b"|".join(fields)
    return b"\r".join(segments)


def load_messages() -> tuple[list[Message], list[str]]:
    """ADT fixture, MDM fixture and the ANS Ségur MDM (when ../shared/corpus is there)."""
    adt = (FIXTURES / "adt_a01_vali.hl7").read_bytes()
    mdm = (FIXTURES / "mdm_t02_initial.hl7").read_bytes()
    messages = [Message(f"ADT fixture, {len(adt):,} B", adt, "ADT"),
                Message(f"MDM fixture, {len(mdm) / 1024:.1f} KiB", mdm, "MDM")]
    notes = []
    if SEGUR_MDM.exists():
        segur = _as_cr(SEGUR_MDM.read_bytes())
        messages.append(Message(f"ANS Ségur MDM, {len(segur) / 1024:.0f} KiB", segur, "Ségur"))
    else:
        notes.append(f"ANS Ségur MDM rows skipped: {SEGUR_MDM.relative_to(ROOT.parent)} is absent")
    return messages, notes


# --------------------------------------------------------------------------- load client


@dataclass(frozen=True)
class Load:
    """K connections sending one message back to back."""

    name: str
    message: Message
    connections: int


@dataclass
class LoadStats:
    """What the client counted for one :class:`Load`: everything sent, and the timed window."""

    sent: int = 0
    acked: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    mismatched: int = 0  # ACKs whose MSA-2 is not the MSH-10 just sent
    errors: list[str] = field(default_factory=list)
    window_ns: list[int] = field(default_factory=list)  # round trips of the ACKs received inside the window

    def per_s(self, window_s: float) -> float:
        return len(self.window_ns) / window_s if window_s > 0 else math.nan

    def percentile_ms(self, p: float) -> float:
        """Nearest rank: with fewer than 100 samples p99 is the maximum."""
        if not self.window_ns:
            return math.nan
        ordered = sorted(self.window_ns)
        return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] / 1e6

    @property
    def balanced(self) -> bool:
        """Every message sent got exactly its ACK."""
        return self.sent == self.acked and not self.mismatched and not self.errors


@dataclass
class Window:
    """Start and end of the timed window (perf_counter ns) and the readings taken at both ends."""

    start_ns: int = 0
    end_ns: int = 0
    at_start: dict[str, float] = field(default_factory=dict)
    at_end: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def _msa(ack: bytes) -> tuple[str, bytes]:
    at = ack.find(b"MSA|")
    if at < 0:
        return "none", b""
    fields = ack[at:].split(b"\r", 1)[0].split(b"|")
    return fields[1].decode("ascii", "replace"), fields[2] if len(fields) > 2 else b""


class _Sender(asyncio.Protocol):
    """One connection of the load client, driven from its callbacks.

    No coroutine, future or timer per message: when an ACK arrives, ``data_received``
    records it and writes the next message at once, so the client spends as little as
    it can per message and the servers, not the client, set the pace.
    """

    def __init__(self, make: Callable[[bytes], bytes], prefix: bytes, st: LoadStats, window: Window,
                 clock: Callable[[], int]) -> None:
        self._make, self._prefix, self._st, self._window, self._clock = make, prefix, st, window, clock
        self._buf = bytearray()
        self._n = 0
        self._control = b""
        self._t0 = 0
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_activity = clock()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send_next(self) -> None:
        assert self.transport is not None
        if self._clock() >= self._window.end_ns:
            self._finish()
            return
        self._control = self._prefix + b"%07d" % self._n
        self._n += 1
        frame = self._make(self._control)  # built before the clock starts
        self._st.sent += 1
        self._t0 = self._clock()
        self.transport.write(frame)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        end = self._buf.find(END)
        if end < 0:
            return
        t1 = self._clock()
        self.last_activity = t1
        ack = bytes(self._buf[:end])
        del self._buf[: end + 2]
        st = self._st
        st.acked += 1
        code, echoed = _msa(ack)
        st.codes[code] += 1
        if echoed != self._control:
            st.mismatched += 1
        if self._window.start_ns <= t1 <= self._window.end_ns:
            st.window_ns.append(t1 - self._t0)
        self.send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self._st.errors.append(f"connection lost: {exc}"[:80])
            self.done.set_result(None)

    def fail(self, reason: str) -> None:
        if not self.done.done():
            self._st.errors.append(reason)
            self._finish()

    def _finish(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)


async def drive(
    host: str,
    port: int,
    loads: Sequence[Load],
    *,
    warmup_s: float,
    window_s: float,
    settle_s: float = 0.0,
    read: Callable[[], dict[str, float]] = dict,
    after_warmup: Callable[[], object] | None = None,
    tag: str = "B",
    timeout_s: float = 60.0,
    stats_out: dict[str, LoadStats] | None = None,
) -> tuple[dict[str, LoadStats], Window]:
    """Run ``loads`` against ``host:port``: warm-up, (hook, settle), timed window, then drain.

    ``read()`` is called at both ends of the window (server CPU, machine CPU); ``after_warmup``
    (e.g. a scrape of the server's metrics) runs between warm-up and the window, which opens
    ``settle_s`` later so the hook's own cost stays outside it. A connection silent for
    ``timeout_s`` is given up and counted as an error. ``stats_out``, when given, is filled
    with the live counters (a soak reads them while the load runs).
    """
    loop = asyncio.get_running_loop()
    clock = time.perf_counter_ns
    stats = stats_out if stats_out is not None else {}
    stats.update({load.name: LoadStats() for load in loads})
    window = Window()
    senders: list[_Sender] = []
    index = 0
    for load in loads:
        make = load.message.framer()
        for _c in range(load.connections):
            prefix = f"{tag}{index:02d}".encode()
            index += 1
            factory = functools.partial(_Sender, make, prefix, stats[load.name], window, clock)
            _t, sender = await loop.create_connection(factory, host, port)
            senders.append(sender)
    begun = clock()
    window.start_ns = begun + int((warmup_s + settle_s) * 1e9)
    window.end_ns = window.start_ns + int(window_s * 1e9)

    async def mark(at_ns: int, into: dict[str, float]) -> None:
        await asyncio.sleep(max(at_ns - clock(), 0) / 1e9)
        into.update(read(), at=clock() / 1e9)

    async def hook() -> None:
        if after_warmup is None:
            return
        await asyncio.sleep(warmup_s)
        result = after_warmup()
        if asyncio.iscoroutine(result):
            await result

    async def watchdog() -> None:
        while not all(s.done.done() for s in senders):
            await asyncio.sleep(0.5)
            for s in senders:
                if not s.done.done() and clock() - s.last_activity > timeout_s * 1e9:
                    s.fail(f"no ACK within {timeout_s:g} s")

    for sender in senders:
        sender.send_next()
    await asyncio.gather(hook(), mark(window.start_ns, window.at_start), mark(window.end_ns, window.at_end),
                         watchdog(), *(s.done for s in senders))
    return stats, window


# --------------------------------------------------------------------------- servers


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (serve's pipeline worker processes, when it has some)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", encoding="ascii") as fh:
                    todo.extend(int(c) for c in fh.read().split())
    return found


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of every thread of ``pid`` and its descendants, seconds (``/proc/<pid>/stat``
    fields 14-15): worker processes' CPU is the server's too."""
    total = 0.0
    for p in _tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def _written_bytes(pid: int) -> float:
    """Bytes ``pid`` (all threads) caused to be written to storage (``/proc/<pid>/io``)."""
    try:
        with open(f"/proc/{pid}/io", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("write_bytes:"):
                    return float(line.split()[1])
    except OSError:  # not readable (another user, hardened /proc): the column stays empty
        pass
    return math.nan


def tree_status_mib(pid: int, field: str) -> float:
    """A ``/proc/<pid>/status`` memory line (``VmHWM``, ``VmRSS``) summed over ``pid`` and its
    descendants, MiB; NaN when none could be read."""
    total = math.nan
    for p in _tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(f"{field}:"):
                    total = (0.0 if math.isnan(total) else total) + int(line.split()[1]) / 1024
    return total


def _hwm_mib(pid: int) -> float:
    """Peak RSS of ``pid`` plus its descendants' (a sum of peaks: at most the true peak of the whole)."""
    return tree_status_mib(pid, "VmHWM")


def _machine_busy_s() -> float:
    """CPU seconds of user, nice, system and steal time, all cores, since boot (``/proc/stat``).

    irq and softirq are left out: most of it is the kernel moving our own loopback
    traffic, which the kernel charges to no process.
    """
    with open("/proc/stat", encoding="ascii") as fh:
        user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(x) for x in fh.readline().split()[1:9])
    return (user + nice + system + steal) / TICK


def _self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class ServerProcess:
    """A benchmark server as a subprocess, pinned (or not) to one core, read through /proc."""

    def __init__(self, kind: str, argv: list[str], *, cpu: int | None, cwd: Path, env: dict[str, str]) -> None:
        self.kind = kind
        self.argv = argv
        self.cpu = cpu
        self.cwd = cwd
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 - closed in stop()

    def start(self, timeout_s: float = 60.0) -> str:
        """Start and wait for the readiness line; return it."""
        # taskset pins before the interpreter starts, so every thread the server makes inherits the core
        # (preexec_fn would be unsafe here: this process runs threads)
        pin = ["taskset", "-c", str(self.cpu)] if self.cpu is not None else []
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and scripts
            [*pin, *self.argv], cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
        )
        assert self.proc.stdout is not None
        stdout = self.proc.stdout

        def pump() -> None:
            for line in stdout:
                self._lines.put(line.rstrip("\n"))
            self._lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            if "ready" in line:
                return line
        raise RuntimeError(f"{self.kind} did not start: {self.stderr_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-1500:]

    def lag_s(self, timeout_s: float = 10.0) -> float:
        """Ask a ``bench/servers.py`` server for its longest loop stall so far (SIGUSR1)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                line = self._lines.get(timeout=0.5)
                if line is None:
                    break
                if line.startswith("lag "):
                    return float(line.split()[1])
        return math.nan

    def stop(self, timeout_s: float = 30.0) -> list[str]:
        """SIGTERM, wait, return what it printed after the readiness line."""
        out: list[str] = []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(queue.Empty):
            while (line := self._lines.get(timeout=2.0)) is not None:
                out.append(line)
        self._stderr.close()
        return out


async def _http_get(url: str) -> str:
    """A tiny HTTP/1.0 GET (no client library in the load process)."""
    host, port_path = url.removeprefix("http://").split(":", 1)
    port, _, path = port_path.partition("/")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    body = await reader.read()
    writer.close()
    return body.decode("utf-8", "replace").split("\r\n\r\n", 1)[-1]


def _gauge(metrics: str, name: str) -> float:
    total, seen = 0.0, False
    for line in metrics.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else math.nan


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Settings:
    """How long and how hard to run; ``quick`` is the smoke-run setting."""

    connections: int = 16
    warmup_s: float = 2.0
    window_s: float = 6.0
    pin: bool = True
    server_cpu: int = 0
    client_cpu: int = 1
    big_journal: int = 1_000_000  # exchanges in the pre-filled journal rows; 0: no such rows
    servers: tuple[str, ...] = (ECHO, STORE, RELAIS)
    kinds: tuple[str, ...] = ("ADT", "MDM", "Ségur", "large", "mixed")  # which loads (a subset reruns disturbed rows)
    journals: tuple[str, ...] = ("empty", "big")
    unpinned_documents: bool = True  # also (c) on documents with nothing pinned: does it use both cores?
    postgres: bool = False  # also (d): relais on a PostgreSQL journal (ADT, MDM)
    reference: bool = False  # also (r): an older commit's serve on every load, empty journal (``--reference``)
    isolation: str = ""  # serve's pipeline.isolation (thread / process); empty: its embedded default

    @classmethod
    def quick(cls) -> Settings:
        return cls(connections=4, warmup_s=0.3, window_s=1.0, big_journal=0, unpinned_documents=False)


@dataclass
class Row:
    """One measured row: a server, a journal, one load or a mixed load."""

    server: str
    journal: str
    message: str
    connections: int
    stats: dict[str, LoadStats]
    window_s: float
    server_cpu_pct: float
    client_cpu_pct: float
    other_cpu_pct: float
    rss_mib: float
    lag_ms: float | None
    lag_note: str = ""
    loads: tuple[str, ...] = ()
    kind: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def main(self) -> LoadStats:
        return self.stats[self.loads[0]]


def _server_argv(kind: str, data: Path) -> list[str]:
    if kind == ECHO:
        return [sys.executable, str(ROOT / "bench" / "servers.py"), "echo", "--port", "0"]
    if kind == STORE:
        return [sys.executable, str(ROOT / "bench" / "servers.py"), "store", "--port", "0", "--db", str(data / "store.db")]
    argv = [sys.executable, "-m", "gateway", "serve", "--data-dir", str(data), "--mllp-port", "0",
            "--http-port", "0", "--allow-test-ins"]
    if kind == RELAIS_PG:
        argv += ["--journal", _pg_database(data.name)]
    return argv


def _reference_worktree(rev: str) -> dict[str, str]:
    """A detached git worktree of ``rev`` under bench/.cache (made once, reused)."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, check=True,  # noqa: S603, S607
                            capture_output=True, text=True).stdout.strip()
    path = ROOT / "bench" / ".cache" / f"ref-{commit[:12]}"
    if not (path / "gateway").is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", "--force", str(path), commit], cwd=ROOT,  # noqa: S603, S607
                       check=True, capture_output=True)
    return {"path": str(path), "commit": commit[:7]}


def _pg_database(name: str) -> str:
    """A new empty database on the ``--postgres`` server for one row."""
    import psycopg

    from tests.pg_support import database_url

    dbname = "relais_bench_" + re.sub(r"[^a-z0-9]", "_", name.lower())
    with psycopg.connect(_PG["server"], autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')
    return database_url(_PG["server"], dbname)


def _clean_env() -> dict[str, str]:
    # embedded defaults: no RELAIS_* override leaks in from the caller's shell
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAIS_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _ports(ready: str) -> tuple[int, str | None]:
    if ready.startswith("ready port="):
        return int(ready.split("=", 1)[1]), None
    mllp = re.search(r"mllp=mllps?://[^ ]+:(\d+)", ready)
    http = re.search(r"http=(http://[^ ]+:\d+)", ready)
    assert mllp is not None, ready
    return int(mllp.group(1)), http.group(1) if http else None


async def _wait_queue_empty(http: str, wait_s: float) -> float | None:
    """Seconds until serve's delivery queue is empty (so the next row does not inherit it)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < wait_s:
        if _gauge(await _http_get(f"{http}/metrics"), "relais_queue_depth") == 0:
            return time.monotonic() - t0
        await asyncio.sleep(0.5)
    return None


async def run_row(
    kind: str, journal: str, data: Path, loads: Sequence[Load], cfg: Settings, tag: str, *, drain: bool = False
) -> Row:
    """Start ``kind`` on ``data``, drive ``loads``, read the server, stop it."""
    env = _clean_env()
    large = any(load.message.kind == "large" for load in loads)
    if large:
        env["RELAIS_MLLP_MAX_MESSAGE_BYTES"] = str(LARGE_MAX_MESSAGE)  # accepted, not refused as oversize
    if cfg.isolation and kind not in (ECHO, STORE, RELAIS_REF):
        env["RELAIS_PIPELINE_ISOLATION"] = cfg.isolation
    if kind == RELAIS_REF:
        env["PYTHONPATH"] = _REF["path"]  # the same interpreter and packages, the older commit's code
    server = ServerProcess(kind, _server_argv(kind, data), cpu=cfg.server_cpu if cfg.pin else None,
                           cwd=data, env=env)
    ready = await asyncio.to_thread(server.start)
    port, http = _ports(ready)
    lag_before: list[float] = []

    async def lag_now() -> float:
        """The server's longest loop stall so far: serve's gauge, or a bench server's SIGUSR1 answer."""
        if http is not None:
            return _gauge(await _http_get(f"{http}/metrics"), "relais_event_loop_lag_max_seconds")
        return await asyncio.to_thread(server.lag_s)

    async def scrape_before() -> None:
        lag_before.append(await lag_now())

    def read() -> dict[str, float]:
        return {"server": _proc_cpu_s(server.pid), "machine": _machine_busy_s(), "client": _self_cpu_s(),
                "written": _written_bytes(server.pid)}

    extra: dict[str, float] = {}
    try:
        stats, window = await drive(
            "127.0.0.1", port, loads, warmup_s=cfg.warmup_s, window_s=cfg.window_s,
            settle_s=0.5, read=read, after_warmup=scrape_before, tag=tag,
        )
        rss = _hwm_mib(server.pid)
        after = await lag_now()
        lag_ms = after * 1000
        # a new maximum after the window is the window's own; otherwise the window stayed at or below it
        note = "" if lag_before and after > lag_before[0] else "≤"
        if drain and http is not None:
            drained = await _wait_queue_empty(http, 120.0)
            extra["drain_s"] = drained if drained is not None else math.nan
    finally:
        tail = await asyncio.to_thread(server.stop)
    if http is None:
        counted = json.loads(tail[-1]) if tail else {}
        extra.update({k: v for k, v in counted.items() if k != "loop_lag_max_s"})
    span = window.at_end["at"] - window.at_start["at"]
    server_s = window.at_end["server"] - window.at_start["server"]
    client_s = window.at_end["client"] - window.at_start["client"]
    machine_s = window.at_end["machine"] - window.at_start["machine"]
    acked = sum(len(st.window_ns) for st in stats.values())
    written = window.at_end["written"] - window.at_start["written"]
    extra["written_kib_per_msg"] = written / 1024 / acked if acked else math.nan
    return Row(
        server=kind, journal=journal,
        message=loads[0].message.label if len(loads) == 1 else f"{loads[0].name} + {loads[1].connections} {loads[1].name}",
        connections=sum(load.connections for load in loads), stats=stats, window_s=window.seconds,
        server_cpu_pct=100 * server_s / span, client_cpu_pct=100 * client_s / span,
        other_cpu_pct=max(100 * (machine_s - server_s - client_s) / span, 0.0),
        rss_mib=rss, lag_ms=lag_ms, lag_note=note, loads=tuple(load.name for load in loads), extra=extra,
        kind="large" if large else loads[0].message.kind if len(loads) == 1 else "mixed",
    )


def _prepare(kind: str, journal_rows: int, into: Path, say: Callable[[str], None]) -> None:
    """A data dir for ``kind``: empty, or a fresh copy of the cached filled journal."""
    into.mkdir(parents=True, exist_ok=True)
    if not journal_rows or kind == ECHO:
        return
    from bench.fill_journal import cached

    source = cached("relais" if kind == RELAIS else "store", journal_rows, say)
    target = into / ("journal.db" if kind == RELAIS else "store.db")
    say(f"  copying {source.name} ({source.stat().st_size / 2**30:.1f} GiB)")
    shutil.copyfile(source, target)
    os.sync()  # the copy's dirty pages must not be written back during the timed window


async def run_rows(cfg: Settings, say: Callable[[str], None] = print) -> tuple[list[Row], list[str]]:
    """Every row: each message on each server, the mixed load, then the million-exchange rows."""
    messages, notes = load_messages()
    adt, mdm = messages[0], messages[1]
    segur = next((m for m in messages if m.kind == "Ségur"), None)
    large_raw = large_mdm(mdm.raw)
    large = Message(f"{len(large_raw) / 1e6:.0f} MB MDM", large_raw, "large")
    plans: list[tuple[str, list[Load]]] = [(m.label, [Load(m.label, m, cfg.connections)]) for m in messages]
    plans.append((LARGE, [Load("ADT", adt, cfg.connections), Load(large.label, large, 1)]))
    if segur is not None:
        plans.append((MIXED, [Load("ADT", adt, cfg.connections), Load("Ségur", segur, 2)]))
    else:
        notes.append("mixed row (ADT while two connections push Ségur MDMs) skipped: no Ségur MDM")
    kinds = [m.kind for m in messages] + ["large"] + (["mixed"] if segur is not None else [])
    rows: list[Row] = []
    run_tag = format(int(time.time()) % 36**5, "x")[-5:]  # MSH-10 unique across runs on a cached journal
    with tempfile.TemporaryDirectory(prefix="relais-ingest-") as tmp:
        journals = [("empty", 0)] + ([(f"{cfg.big_journal:,}", cfg.big_journal)] if cfg.big_journal else [])
        journals = [(j, n) for j, n in journals if ("big" if n else "empty") in cfg.journals]
        for journal, size in journals:
            for kind in cfg.servers:
                if size and kind == ECHO:
                    continue  # the echo server has no journal
                shared = Path(tmp) / f"{kind[1]}-{size}"
                if size:
                    _prepare(kind, size, shared, say)
                for p_index, (label, loads) in enumerate(plans):
                    if kinds[p_index] not in cfg.kinds:
                        continue
                    data = shared if size else Path(tmp) / f"{kind[1]}-{p_index}"
                    data.mkdir(parents=True, exist_ok=True)
                    say(f"{kind} · {journal} journal · {label} …")
                    tag = f"{run_tag}{kind[1]}{p_index}{'L' if size else 'E'}"
                    row = await run_row(kind, journal, data, loads, cfg, tag, drain=bool(size))
                    rows.append(row)
                    say(f"  {_brief(row)}")
                if size:
                    shutil.rmtree(shared, ignore_errors=True)
        if cfg.postgres and "empty" in cfg.journals:
            # single instance on PostgreSQL beside SQLite: ADT and MDM on an empty journal. The
            # database server's own CPU is not in "server CPU %" (it is in "other load").
            for p_index, (label, loads) in enumerate(plans):
                if kinds[p_index] not in ("ADT", "MDM") or kinds[p_index] not in cfg.kinds:
                    continue
                say(f"{RELAIS_PG} · empty journal · {label} …")
                data = Path(tmp) / f"pg-{p_index}"
                data.mkdir()
                row = await run_row(RELAIS_PG, "empty", data, loads, cfg, f"{run_tag}p{p_index}E")
                rows.append(row)
                say(f"  {_brief(row)}")
        if cfg.reference and "empty" in cfg.journals:
            # the older build on an empty journal only: a filled journal has this build's schema
            for p_index, (label, loads) in enumerate(plans):
                if kinds[p_index] not in cfg.kinds:
                    continue
                say(f"{RELAIS_REF} @{_REF['commit']} · empty journal · {label} …")
                data = Path(tmp) / f"r-{p_index}"
                data.mkdir()
                row = await run_row(RELAIS_REF, "empty", data, loads, cfg, f"{run_tag}r{p_index}E")
                rows.append(row)
                say(f"  {_brief(row)}")
        if cfg.pin and cfg.unpinned_documents and RELAIS in cfg.servers and "empty" in cfg.journals:
            pinned_client = os.sched_getaffinity(0)
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
            try:
                for p_index, (label, loads) in enumerate(plans):
                    if kinds[p_index] not in ("MDM", "Ségur") or kinds[p_index] not in cfg.kinds:
                        continue
                    say(f"{RELAIS_UNPINNED} · empty journal · {label} …")
                    data = Path(tmp) / f"u-{p_index}"
                    data.mkdir()
                    row = await run_row(RELAIS, "empty", data, loads, replace(cfg, pin=False), f"{run_tag}u{p_index}E")
                    row.server = RELAIS_UNPINNED
                    rows.append(row)
                    say(f"  {_brief(row)}")
            finally:
                os.sched_setaffinity(0, pinned_client)
    return rows, notes


def _brief(row: Row) -> str:
    m = row.main
    return (f"{m.per_s(row.window_s):,.0f} msg/s, p50 {m.percentile_ms(50):.2f} ms, p99 {m.percentile_ms(99):.2f} ms, "
            f"server CPU {row.server_cpu_pct:.0f} %, other load {row.other_cpu_pct:.0f} %, "
            f"ACKs {_codes(row)}{'' if all(s.balanced for s in row.stats.values()) else ' UNBALANCED'}")


# --------------------------------------------------------------------------- report


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _codes(row: Row) -> str:
    total: Counter[str] = Counter()
    for s in row.stats.values():
        total.update(s.codes)
    return " ".join(f"{code} {n}" for code, n in sorted(total.items()))


def _check(row: Row) -> str:
    bad = [f"{name}: sent {s.sent}, acked {s.acked}, wrong MSA-2 {s.mismatched}, {'; '.join(s.errors[:1])}"
           for name, s in row.stats.items() if not s.balanced]
    return "ok" if not bad else " / ".join(bad)


def machine_info(cfg: Settings) -> dict[str, str]:
    """CPU, Python, load: what a reader needs to weigh the numbers."""
    cpu = platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import sqlite3

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": f"{platform.python_implementation()} {platform.python_version()}, SQLite {sqlite3.sqlite_version}",
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "pinning": (f"server on core {cfg.server_cpu}, load client on core {cfg.client_cpu}" if cfg.pin
                    else "none (--no-pin): the kernel places server and client"),
        "load average at start": " ".join(Path("/proc/loadavg").read_text(encoding="ascii").split()[:3]),
    }


TARGETS = {  # issue 16, for reference beside the measured ratios
    "ADT": "≥ 0.8 × (b), p99 ≤ 15 ms",
    "MDM": "≥ 0.8 × (b)",
    "Ségur": "≥ 0.9 × (b)",
    "mixed": "ADT p99 ≤ 30 ms, no loop stall > 20 ms",
    "large": "no loop stall > 20 ms, peak RSS ≤ 150 MB",
}


def render(rows: Sequence[Row], notes: Sequence[str], cfg: Settings, machine: dict[str, str], elapsed_s: float,
           command: str) -> str:
    """The results page: settings, one table of every row, the ratios with the issue's targets."""
    lines = ["# Relais ingest benchmark", "", f"Generated by `{command}`; `bench/README.md` explains every column.", ""]
    lines += [f"- **{k}**: {v}" for k, v in machine.items()]
    lines.append(f"- **settings**: {cfg.connections} connections per load, warm-up {cfg.warmup_s:g} s, "
                 f"window {cfg.window_s:g} s, whole run {elapsed_s / 60:.1f} min, serve's pipeline.isolation "
                 f"{cfg.isolation or 'as embedded'}")
    lines += [f"- **note**: {n}" for n in notes]
    lines += ["", "| server | journal | message | conns | msg/s | ACK p50 ms | ACK p99 ms | server CPU % | peak RSS MiB "
              "| loop lag max ms | disk KiB/msg | other load % | ACKs | check |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        m = r.main
        msg = r.message
        if len(r.loads) > 1:
            side = r.stats[r.loads[1]]
            msg = (f"{r.message}: {r.loads[0]} ({r.loads[1]} {side.per_s(r.window_s):,.1f} msg/s, "
                   f"p99 {_num(side.percentile_ms(99))} ms)")
        lag = f"{r.lag_note} {_num(r.lag_ms)}".strip() if r.lag_ms is not None else "—"
        lines.append(
            f"| {r.server} | {r.journal} | {msg} | {r.connections} | {_num(m.per_s(r.window_s))} "
            f"| {_num(m.percentile_ms(50), 2)} | {_num(m.percentile_ms(99), 2)} | {_num(r.server_cpu_pct, 0)} "
            f"| {_num(r.rss_mib)} | {lag} | {_num(r.extra.get('written_kib_per_msg'))} "
            f"| {_num(r.other_cpu_pct, 0)} | {_codes(r)} | {_check(r)} |"
        )
    lines += ["", "## Ratios (same run)", "",
              "| journal | message | (a) msg/s | (b) msg/s | (c) msg/s | (c)/(b) | (c)/(a) | (c) ACK p99 ms "
              "| (c) loop lag max ms | issue 16 target |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    by_key = {(r.server, r.journal, r.message): r for r in rows}
    echo_of = {r.message: r for r in rows if r.server == ECHO}

    def rate(row: Row | None) -> float:
        return row.main.per_s(row.window_s) if row is not None and row.main.window_ns else math.nan

    for r in rows:
        if r.server != RELAIS:
            continue
        a, b, c = rate(echo_of.get(r.message)), rate(by_key.get((STORE, r.journal, r.message))), rate(r)
        lag = f"{r.lag_note} {_num(r.lag_ms)}".strip() if r.lag_ms is not None else "—"
        lines.append(f"| {r.journal} | {r.message} | {_num(a)} | {_num(b)} | {_num(c)} | {_num(c / b, 2)} "
                     f"| {_num(c / a, 3)} | {_num(r.main.percentile_ms(99), 1)} | {lag} | {TARGETS.get(r.kind, '')} |")
    reference = [r for r in rows if r.server == RELAIS_REF]
    if reference:
        lines += ["", f"## (r) the reference build @{_REF.get('commit', '?')} against (c), same run, empty journal", "",
                  "| message | (r) msg/s | (r) ACK p50 / p99 ms | (r)/(b) | (c) msg/s | (c) ACK p50 / p99 ms | (c)/(b) "
                  "| (c)/(r) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in reference:
            c_row = by_key.get((RELAIS, "empty", r.message))
            b = rate(by_key.get((STORE, "empty", r.message)))

            def p50_99(row: Row | None) -> str:
                if row is None:
                    return "—"
                return f"{_num(row.main.percentile_ms(50), 2)} / {_num(row.main.percentile_ms(99), 1)}"

            lines.append(f"| {r.message} | {_num(rate(r))} | {p50_99(r)} | {_num(rate(r) / b, 2)} | {_num(rate(c_row))} "
                         f"| {p50_99(c_row)} | {_num(rate(c_row) / b, 2)} | {_num(rate(c_row) / rate(r), 2)} |")
    unpinned = [r for r in rows if r.server == RELAIS_UNPINNED]
    if unpinned:
        lines += ["", "## (c) unpinned: both cores shared by server and client", "",
                  "| message | pinned msg/s | unpinned msg/s | unpinned / pinned | server CPU % unpinned "
                  "| issue 16 target |", "|---|---:|---:|---:|---:|---|"]
        for r in unpinned:
            pinned = rate(by_key.get((RELAIS, "empty", r.message)))
            lines.append(f"| {r.message} | {_num(pinned)} | {_num(rate(r))} | {_num(rate(r) / pinned, 2)} "
                         f"| {_num(r.server_cpu_pct, 0)} | ≥ 1.6 |")
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run every row, print the tables, write them to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 connections, 1 s windows, empty journals")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client to cores")
    parser.add_argument("--connections", type=int, help="connections per load (default 16)")
    parser.add_argument("--window", type=float, help="timed seconds per row (default 6)")
    parser.add_argument("--warmup", type=float, help="untimed seconds before each window (default 2)")
    parser.add_argument("--journal-size", type=int, help="exchanges in the pre-filled journal (default 1000000; 0: none)")
    parser.add_argument("--servers", help="comma-separated subset of echo,store,relais")
    parser.add_argument("--loads", help="comma-separated subset of ADT,MDM,Ségur,large,mixed")
    parser.add_argument("--journals", help="comma-separated subset of empty,big")
    parser.add_argument("--postgres", nargs="?", const="", metavar="URL",
                        help="add (d) rows on PostgreSQL: this server, or a throwaway cluster when no URL is given")
    parser.add_argument("--reference", metavar="REV",
                        help="also run this commit's serve (a git worktree of it) on every load, empty journal")
    parser.add_argument("--isolation", choices=("thread", "process"),
                        help="serve's pipeline.isolation for the (c) and (d) rows (default: serve's own)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.md", help="Markdown output file")
    args = parser.parse_args(argv)

    cfg = Settings.quick() if args.quick else Settings()
    changes: dict[str, object] = {"pin": not args.no_pin}
    for key, value in (("connections", args.connections), ("window_s", args.window), ("warmup_s", args.warmup),
                       ("big_journal", args.journal_size), ("isolation", args.isolation)):
        if value is not None:
            changes[key] = value
    if args.servers:
        names = {"echo": ECHO, "store": STORE, "relais": RELAIS}
        changes["servers"] = tuple(names[s.strip()] for s in args.servers.split(","))
    if args.loads:
        changes["kinds"] = tuple(k.strip() for k in args.loads.split(","))
    if args.journals:
        changes["journals"] = tuple(j.strip() for j in args.journals.split(","))
    cluster = None
    if args.postgres is not None:
        changes["postgres"] = True
        if args.postgres:
            _PG["server"] = args.postgres
        else:
            from tests.pg_support import start_cluster

            cluster = start_cluster()
            _PG["server"] = cluster.url
    if args.reference:
        changes["reference"] = True
        _REF.update(_reference_worktree(args.reference))
    cfg = replace(cfg, **changes)  # type: ignore[arg-type]
    if cfg.pin:
        os.sched_setaffinity(0, {cfg.client_cpu})  # the load client keeps to its own core
    started = time.monotonic()
    machine = machine_info(cfg)
    try:
        rows, notes = asyncio.run(run_rows(cfg, say=lambda line: print(line, file=sys.stderr, flush=True)))
    finally:
        if cluster is not None:
            cluster.stop()
    command = " ".join(["python bench/ingest.py", *(argv if argv is not None else sys.argv[1:])])
    text = render(rows, notes, cfg, machine, time.monotonic() - started, command)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return 0 if all(s.balanced for r in rows for s in r.stats.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
