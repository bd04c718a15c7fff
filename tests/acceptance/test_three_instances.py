"""Three `relais serve` on one PostgreSQL journal, a faulty DMP, and one instance SIGKILLed mid-run.

2,000 messages spread over the three instances: 1,700 ADT and 300 DMP-bound documents
(150 initial submissions and their 150 replacements, each replacement sent once its
original was acknowledged, to whichever instance is next). `relais simulate dmp --fail-rate
0.3` injects every fault kind. While the instance to be killed has deliveries in flight, it
is SIGKILLed; its senders reconnect to another instance and resend what was not
acknowledged, as a sender behind a TCP load balancer does.

Checked: every acknowledged message is in the journal with its SHA-256; every document is
accepted by the DMP exactly once, each replacement after (and linked to) its original; the
deliveries the killed instance had in flight were finished by the others once its lease ran out.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.mllp_client import MllpClient
from gateway.errors import DestinationUnavailable
from tests.acceptance.test_crash import free_port
from tests.support import as_cr, field, fixture_bytes, rewrite_document_message

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

DOCUMENT_PAIRS = 150
ADT_MESSAGES = 1700
INSTANCES = 3
ORIGINAL, REPLACEMENT = "1.2.250.1.999.1.1.20250101.1", "1.2.250.1.999.1.1.20250101.2"  # our fixtures' ids


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - loopback simulator
        return json.loads(r.read())


def adt(n: int) -> bytes:
    """A01 number ``n``: its own control id and patient (IPP), so none is a duplicate of another."""
    raw = as_cr(fixture_bytes("adt_a01_vali.hl7"))
    segments = raw.split(b"\r")
    msh = segments[0].split(b"|")
    msh[9] = f"ADT3I{n:06d}".encode()
    segments[0] = b"|".join(msh)
    for i, seg in enumerate(segments):
        if seg.startswith(b"PID|"):
            pid = seg.split(b"|")
            first = pid[3].split(b"~")[0].split(b"^")
            first[0] = f"9{n:07d}".encode()
            pid[3] = b"^".join(first)
            segments[i] = b"|".join(pid)
    return b"\r".join(segments)


def uids(n: int) -> tuple[str, str]:
    return f"1.2.250.1.999.1.1.3{n:05d}.1", f"1.2.250.1.999.1.1.3{n:05d}.2"


def documents(n: int) -> tuple[bytes, bytes]:
    """Pair ``n``: an initial MDM^T02 and the MDM^T10 that replaces it, with their own ids and
    their own patient record (IPP), so that pairs are delivered in parallel and each pair in order."""
    first, second = uids(n)
    mapping = {ORIGINAL: first, REPLACEMENT: second}

    def own_patient(raw: bytes) -> bytes:
        segments = raw.split(b"\r")
        segments = [s.replace(b"P000123^", f"P3{n:05d}^".encode()) if s.startswith(b"PID|") else s for s in segments]
        return b"\r".join(segments)

    initial = own_patient(rewrite_document_message(as_cr(fixture_bytes("mdm_t02_initial.hl7")), n, mapping))
    replace = own_patient(rewrite_document_message(as_cr(fixture_bytes("mdm_t10_replace.hl7")), n, mapping))
    return initial, replace


def serve(config: Path, data: Path, journal: str, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--data-dir", str(data),
         "--journal", journal, "--mllp-port", str(port), "--http-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "RELAIS_GATEWAY_LOG_LEVEL": "warning"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.startswith("relais ready"), line
    return proc


class Fleet:
    """The three instances' MLLP ports; a sender whose instance died moves on to the next one."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.dead: set[int] = set()
        self.acked: dict[str, bytes] = {}  # control id → the bytes an AA answered

    async def send(self, start: int, raw: bytes) -> None:
        for port in itertools.islice(itertools.cycle(self.ports), start, start + 3 * len(self.ports)):
            if port in self.dead:
                continue
            try:
                async with MllpClient("127.0.0.1", port, timeout=15) as client:
                    ack = await client.send(raw)
            except (OSError, TimeoutError, DestinationUnavailable):
                continue  # not acknowledged: the message is sent again, elsewhere
            assert field(ack, "MSA", 1) == "AA", ack
            self.acked[field(ack, "MSA", 2)] = raw
            return
        raise AssertionError("no instance acknowledged a message")


def in_flight_of(dsn: str, pid: int) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT id FROM deliveries WHERE status = 'in_flight' AND claimed_by LIKE %s",
                            (f"%:{pid}:%",)).fetchall()
    return [r[0] for r in rows]


def test_three_instances_one_killed(tmp_path: Path, pg_url: str) -> None:
    sim_port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "simulate", "dmp", "--port", str(sim_port), "--fail-rate", "0.3",
         "--faults", "503,reset,timeout,soap", "--seed", "23", "--latency-ms", "40"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    config = tmp_path / "relais.toml"
    config.write_text(
        "[identity]\nallow_test_ins = true\n"
        # short leases: the killed instance's claims come back within seconds
        "[dispatcher]\nbackoff_base = 0.05\nbackoff_cap = 0.3\npoll_interval = 0.1\nattempt_timeout = 1.0\n"
        "lease_seconds = 3.0\n\n"
        f'[[destination]]\nname = "dmp"\nkind = "dmp-xds"\nurl = "http://127.0.0.1:{sim_port}/"\n',
        encoding="utf-8",
    )
    ports = [free_port() for _ in range(INSTANCES)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        assert sim.stdout is not None and sim.stdout.readline()
        procs = [serve(config, tmp_path / f"d{i}", pg_url, port) for i, port in enumerate(ports)]
        fleet = Fleet(ports)
        victim = procs[1]
        taken_over: list[str] = []

        async def pairs(lane: int) -> None:
            for n in range(lane, DOCUMENT_PAIRS + 1, 3):
                initial, replace = documents(n)
                await fleet.send(n, initial)
                await fleet.send(n + 1, replace)  # after its original's AA, on another instance

        async def adts(lane: int) -> None:
            for n in range(lane, ADT_MESSAGES + 1, 4):
                await fleet.send(n, adt(n))

        async def killer() -> None:
            # mid-run, at a moment the victim holds deliveries in flight
            while len(fleet.acked) < 600:
                await asyncio.sleep(0.05)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                held = await asyncio.to_thread(in_flight_of, pg_url, victim.pid)
                if held:
                    victim.send_signal(signal.SIGKILL)
                    fleet.dead.add(ports[1])
                    taken_over.extend(held)
                    return
                await asyncio.sleep(0.01)
            raise AssertionError("the victim never had a delivery in flight")

        async def run() -> None:
            await asyncio.gather(*(pairs(i) for i in range(1, 4)), *(adts(i) for i in range(1, 5)), killer())

        asyncio.run(run())
        victim.wait(10)
        assert taken_over, "the kill happened with nothing in flight"

        base = f"http://127.0.0.1:{sim_port}/_sim"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            docs = get_json(f"{base}/documents")
            if len(docs) >= 2 * DOCUMENT_PAIRS:
                break
            time.sleep(0.5)
        subs = get_json(f"{base}/submissions")
        with psycopg.connect(pg_url) as conn:
            stored = {(c, s) for c, s in conn.execute(
                "SELECT control_id, sha256 FROM exchanges WHERE status <> 'duplicate'").fetchall()}
            finished = dict(conn.execute(
                "SELECT id, status FROM deliveries WHERE id = ANY(%s)", (taken_over,)).fetchall())
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        sim.terminate()
        for p in procs:
            p.wait(30)
        sim.wait(20)

    assert len(fleet.acked) == ADT_MESSAGES + 2 * DOCUMENT_PAIRS
    missing = [c for c, raw in fleet.acked.items() if (c, hashlib.sha256(raw).hexdigest()) not in stored]
    assert not missing, f"acknowledged but not journaled: {missing[:5]}"
    accepted = Counter(s["uniqueId"] for s in subs if s["status"] == "accepted")
    assert len(accepted) == 2 * DOCUMENT_PAIRS and set(accepted.values()) == {1}, accepted.most_common(3)
    faults = Counter((s.get("fault") or {}).get("kind") for s in subs if s.get("fault"))
    assert set(faults) == {"503", "reset", "timeout", "soap"}, faults
    by_uid = {d["uniqueId"]: d for d in docs}
    order = {s["uniqueId"]: i for i, s in enumerate(subs) if s["status"] == "accepted"}
    for n in range(1, DOCUMENT_PAIRS + 1):
        first, second = uids(n)
        original, replacement = by_uid[first], by_uid[second]
        assert replacement["replaces"] == original["entryUUID"]
        assert original["status"] == "Deprecated" and replacement["status"] == "Approved"
        assert order[original["uniqueId"]] < order[replacement["uniqueId"]]
    assert set(finished.values()) == {"delivered"}, finished  # the victim's claims, finished by the others
