"""`relais serve` + `relais simulate dmp --fail-rate 0.3` as real processes, every fault kind,
200 document messages (100 initial submissions and their 100 replacements): every document
is accepted exactly once, and every replacement is linked to its original by an RPLC association."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from adapters.mllp_client import MllpClient
from tests.acceptance.test_crash import free_port
from tests.support import SOURCES, MdmSample, field, mdm_sample, rewrite_document_message

pytestmark = pytest.mark.slow

PAIRS = 100


def renumber(sample: MdmSample, raw: bytes, n: int) -> bytes:
    """Pair number ``n``: its own ids, consistent in TXA-12/13 and in the CDA (id, parentDocument)."""
    original, replacement = sample.initial_key, sample.replace_key
    return rewrite_document_message(raw, n, {original: f"{original}.{n}", replacement: f"{replacement}.{n}"})


def get_json(url: str) -> list[dict]:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - loopback simulator
        return json.loads(r.read())


@pytest.mark.parametrize("source", SOURCES)
def test_200_documents_with_replacements_against_a_faulty_dmp(tmp_path: Path, source: str) -> None:
    sample = mdm_sample(source)
    sim_port, mllp_port = free_port(), free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "simulate", "dmp", "--port", str(sim_port), "--fail-rate", "0.3",
         "--faults", "503,reset,timeout,soap", "--seed", "11"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    config = tmp_path / "relais.toml"
    config.write_text(
        f'[identity]\nallow_test_ins = true\n[dispatcher]\nbackoff_base = 0.05\nbackoff_cap = 0.2\n'
        f'poll_interval = 0.05\nattempt_timeout = 1.0\n\n[[destination]]\nname = "dmp"\nkind = "dmp-xds"\n'
        f'url = "http://127.0.0.1:{sim_port}/"\n',
        encoding="utf-8",
    )
    serve = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--data-dir", str(tmp_path / "d"),
         "--mllp-port", str(mllp_port), "--http-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        assert sim.stdout is not None and serve.stdout is not None
        assert sim.stdout.readline()  # readiness line
        assert serve.stdout.readline().startswith(b"relais ready")

        async def push() -> None:
            async with MllpClient("127.0.0.1", mllp_port, timeout=10) as client:
                for n in range(1, PAIRS + 1):
                    for raw in (renumber(sample, sample.initial, n), renumber(sample, sample.replace, n)):
                        assert field(await client.send(raw), "MSA", 1) == "AA"

        asyncio.run(push())
        base = f"http://127.0.0.1:{sim_port}/_sim"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            docs = get_json(f"{base}/documents")
            if len(docs) >= 2 * PAIRS:
                break
            time.sleep(0.5)
        subs = get_json(f"{base}/submissions")
    finally:
        serve.terminate()
        sim.terminate()
        serve.wait(20)
        sim.wait(20)

    accepted = Counter(s["uniqueId"] for s in subs if s["status"] == "accepted")
    assert len(accepted) == 2 * PAIRS and set(accepted.values()) == {1}
    faults = Counter((s.get("fault") or {}).get("kind") for s in subs if s.get("fault"))
    assert set(faults) == {"503", "reset", "timeout", "soap"}, faults  # every fault kind happened
    by_uid = {d["uniqueId"]: d for d in docs}
    for n in range(1, PAIRS + 1):
        original = by_uid[sample.uid(f"{sample.initial_key}.{n}")]
        replacement = by_uid[sample.uid(f"{sample.replace_key}.{n}")]
        assert replacement["replaces"] == original["entryUUID"]  # RPLC to the original's entryUUID
        assert original["status"] == "Deprecated" and replacement["status"] == "Approved"
