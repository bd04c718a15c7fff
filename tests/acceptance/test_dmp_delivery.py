"""Delivery to the DMP end to end: MLLP in → journal → ITI-41 (signed VIHF) → simulator with faults → ZAM back.

The sender side is a python-hl7 MLLP server (a peer we did not write) collecting the
ZAM^Z01 business acknowledgements.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import hl7
import pytest
from hl7.mllp import start_hl7_server
from lxml import etree

from adapters.dmp.simulator import DmpSimulator
from adapters.dmp.vihf import verify_vihf
from adapters.mllp_client import MllpClient
from tests import builders
from tests.support import (
    CORPUS,
    SOURCES,
    MdmSample,
    field,
    fixture_bytes,
    mdm_sample,
    mllp_port,
    rewrite_document_message,
    running,
)

pytestmark = pytest.mark.slow

XSD_DIR = CORPUS / "xds" / "xsd"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"


def with_document_id(sample: MdmSample, n: int) -> bytes:
    """A copy of the initial MDM^T02 with its own CDA id, TXA-12 and MSH-10, asking for a ZAM."""
    key = sample.initial_key
    return rewrite_document_message(sample.initial, n, {key: f"{key}.{n}"}, ack_reception=True)


class ZamCollector:
    """Sender-side MLLP server (python-hl7) that acknowledges every ZAM with ACK^Z01 AA."""

    def __init__(self) -> None:
        self.received: list[hl7.Message] = []

    async def handle(self, reader, writer) -> None:  # type: ignore[no-untyped-def]
        try:
            while not writer.is_closing():
                msg = await reader.readmessage()
                self.received.append(msg)
                writer.writemessage(msg.create_ack("AA"))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


def dmp_config(sim_port: int, zam_port: int, creator: tuple[str, str] = ("RIS-Y", "Organisation-Y")) -> str:
    return f"""
[[destination]]
name = "dmp"
kind = "dmp-xds"
url = "http://127.0.0.1:{sim_port}/"

[[creator]]
application = "{creator[0]}"
facility = "{creator[1]}"
address = "127.0.0.1:{zam_port}"
"""


async def submissions(sim_url: str) -> list[dict]:  # type: ignore[type-arg]
    """The ITI-41 entries of /_sim/submissions (it lists the ITI-18 lookups too)."""
    async with aiohttp.ClientSession() as http, http.get(f"{sim_url.rstrip('/')}/_sim/submissions") as r:
        return [s for s in await r.json() if s["transaction"] == "ITI-41"]


@pytest.mark.parametrize("source", SOURCES)
async def test_thirty_mdm_reach_the_dmp_exactly_once_despite_faults(tmp_path: Path, source: str) -> None:
    sample = mdm_sample(source)
    messages = [with_document_id(sample, n) for n in range(1, 31)]
    sim = DmpSimulator(fail_rate=0.3, faults=("503", "reset", "timeout", "soap"), seed=7,
                       xsd_dir=XSD_DIR if XSD_DIR.exists() else None, timeout_seconds=3.0)
    sim_url = await sim.start("127.0.0.1", 0)
    sim_port = int(sim_url.rstrip("/").rsplit(":", 1)[1])
    collector = ZamCollector()
    zam_server = await start_hl7_server(collector.handle, host="127.0.0.1", port=0, encoding="utf-8")
    zam_port = zam_server.sockets[0].getsockname()[1]
    settings = builders.settings(
        tmp_path, text=dmp_config(sim_port, zam_port, sample.creator),
        dispatcher={"attempt_timeout": 1.0, "backoff_base": 0.05, "backoff_cap": 0.3, "workers": 4},
    )
    try:
        async with running(settings) as service:
            async with MllpClient("127.0.0.1", mllp_port(service), timeout=10) as client:
                for raw in messages:
                    assert field(await client.send(raw), "MSA", 1) == "AA"
            for _ in range(600):
                rows = service.journal.read_sync(lambda tx: tx.list_exchanges(limit=100))
                if all(r["status"] == "delivered" for r in rows) and len(collector.received) >= 30:
                    break
                await asyncio.sleep(0.1)
            assert Counter(r["status"] for r in rows) == {"delivered": 30}
            subs = await submissions(sim_url)
    finally:
        await sim.stop()
        zam_server.close()

    accepted = Counter(s["uniqueId"] for s in subs if s["status"] == "accepted")
    assert len(accepted) == 30 and set(accepted.values()) == {1}, accepted
    # the only refusals are the injected faults: no metadata, VIHF or XSD error ever
    refused = [e for s in subs if s["status"] == "rejected" for e in s["errors"]]
    assert all(e[0].startswith("SIM_FAULT_") for e in refused), refused
    assert refused, "the simulator injected no fault: the test proves nothing"
    for s in subs:
        envelope = etree.fromstring(s["envelope"].encode("utf-8"))
        (assertion,) = envelope.iter(f"{{{SAML}}}Assertion")
        verify_vihf(assertion)  # signed, and the signature verifies
    zams = [m for m in collector.received if str(m.segment("MSH")[9]).startswith("ZAM^Z01")]
    assert len(zams) == 30
    assert {str(z.segment("OBX")[5]).split("^")[0] for z in zams} == {"Y"}
    assert {str(z.segment("OBX")[4]) for z in zams} == {f"{sample.control_id}-{n:03d}" for n in range(1, 31)}


async def test_permanent_error_is_dead_with_reason_and_negative_zam(tmp_path: Path) -> None:
    """A deletion (T04) of a document the DMP does not have: ITI-18 finds no entry to update
    (TD3.3c), so the delivery is dead for good and the sender gets a negative ZAM."""
    sim = DmpSimulator()
    sim_url = await sim.start("127.0.0.1", 0)
    sim_port = int(sim_url.rstrip("/").rsplit(":", 1)[1])
    collector = ZamCollector()
    zam_server = await start_hl7_server(collector.handle, host="127.0.0.1", port=0, encoding="utf-8")
    zam_port = zam_server.sockets[0].getsockname()[1]
    raw = fixture_bytes("mdm_t04_delete.hl7")
    raw = raw.replace(b"DPI-RELAIS|CLINIQUE-RELAIS", b"RIS-Y|Organisation-Y")
    raw = re.sub(rb"(ACK_RECEPTION\^[^|]*\|\|)N", rb"\1Y", raw)
    try:
        async with running(builders.settings(tmp_path, text=dmp_config(sim_port, zam_port))) as service:
            async with MllpClient("127.0.0.1", mllp_port(service), timeout=10) as client:
                assert field(await client.send(raw), "MSA", 1) == "AA"
            for _ in range(100):
                (row,) = service.journal.read_sync(lambda tx: tx.list_exchanges())
                if row["status"] == "dead":
                    break
                await asyncio.sleep(0.05)
            assert row["status"] == "dead"
            assert row["reason_code"] == "DMP_ENTRY_UNKNOWN"
            for _ in range(100):
                if collector.received:
                    break
                await asyncio.sleep(0.05)
    finally:
        await sim.stop()
        zam_server.close()
    if b"ACK_RECEPTION" in raw:
        (zam,) = collector.received
        assert str(zam.segment("OBX")[5]).split("^")[0] == "N"
        assert "DMP_ENTRY_UNKNOWN" in str(zam.segment("ERR"))


@pytest.mark.parametrize("source", SOURCES)
def test_sigkill_during_delivery_never_submits_twice(tmp_path: Path, source: str) -> None:
    """SIGKILL `relais serve` while it delivers; after restart every document is in the DMP once."""
    sample = mdm_sample(source)
    messages = [with_document_id(sample, n) for n in range(1, 21)]

    async def scenario() -> list[dict]:  # type: ignore[type-arg]
        # slow simulator with faults after storing: a kill lands between "stored" and "answered"
        sim = DmpSimulator(fail_rate=0.3, faults=("503", "reset", "soap"), latency_ms=80, seed=3)
        sim_url = await sim.start("127.0.0.1", 0)
        sim_port = int(sim_url.rstrip("/").rsplit(":", 1)[1])
        cfg = tmp_path / "relais.toml"
        cfg.write_text(dmp_config(sim_port, 9, sample.creator) + "\n[dispatcher]\nbackoff_base = 0.05\nbackoff_cap = 0.3\n"
                       "poll_interval = 0.05\n[identity]\nallow_test_ins = true\n", encoding="utf-8")
        data = tmp_path / "data"

        async def serve() -> asyncio.subprocess.Process:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg), "--data-dir", str(data),
                "--mllp-port", "0", "--http-port", "0", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )
            assert proc.stdout is not None
            line = (await proc.stdout.readline()).decode()
            assert line.startswith("relais ready"), line
            port = int(re.search(r"mllp=mllp://[^:]+:(\d+)", line).group(1))  # type: ignore[union-attr]
            proc.port = port  # type: ignore[attr-defined]
            return proc

        try:
            proc = await serve()
            async with MllpClient("127.0.0.1", proc.port, timeout=10) as client:  # type: ignore[attr-defined]
                for raw in messages:
                    assert field(await client.send(raw), "MSA", 1) == "AA"
            for _ in range(200):  # kill once some, not all, documents reached the DMP
                if len(await submissions(sim_url)) >= 5:
                    break
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            proc = await serve()
            for _ in range(600):
                subs = await submissions(sim_url)
                if len({s["uniqueId"] for s in subs if s["status"] == "accepted"}) >= 20:
                    break
                await asyncio.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
            return await submissions(sim_url)
        finally:
            await sim.stop()

    subs = asyncio.run(scenario())
    accepted = Counter(s["uniqueId"] for s in subs if s["status"] == "accepted")
    assert len(accepted) == 20 and set(accepted.values()) == {1}, accepted
