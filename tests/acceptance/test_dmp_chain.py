"""The DMP chain with real processes: `relais serve` + `relais simulate dmp` (strict checker).

Initial submission → replacement → deletion, once with our own fixtures (so it runs without
the corpus) and once with the ANS Ségur MDM samples of ../shared/corpus. Each run uses fresh
document ids. Judged through the simulator's HTTP API only:

* ``GET /_sim/documents``: the initial entry ends Deprecated, the replacement replaces it
  (RPLC to its entryUUID) and ends ``urn:asip:ci-sis:2010:StatusType:Deleted``;
* ``GET /_sim/submissions``: two accepted ITI-41 with a valid XAdES signature, one accepted
  ITI-57; the VIHF of every request carries what the volet mapping table takes from the
  message (PRT-8 → Identifiant_Structure, PRT-5.1 → NameID, PRT-5.2/5.3 → subject-id,
  PID-3 → resource-id, CONNEXION_SECRETE → confidentiality-code);
* ``GET /_sim/violations``: none.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from adapters.mllp_client import MllpClient
from tests.acceptance.test_crash import free_port
from tests.support import FIXTURES, SOURCES, field, mdm_sample, rewrite_document_message

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KEY = FIXTURES / "pki" / "test-vihf-key.pem"
CERT = FIXTURES / "pki" / "test-vihf-cert.pem"
DELETED = "urn:asip:ci-sis:2010:StatusType:Deleted"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
CONFIDENTIALITY = "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"
INS_NH = "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - loopback simulator
        return json.loads(r.read())


def values(vihf: dict[str, Any], name: str) -> list[str]:
    value = vihf.get(name)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def run_chain(tmp_path: Path, messages: list[bytes]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
    """Send the messages over MLLP to a real `relais serve` feeding a real simulator; return
    (submissions, documents, violations) once the last one (a deletion) reached the DMP."""
    sim_port, mllp_port = free_port(), free_port()
    config = tmp_path / "relais.toml"
    config.write_text(
        "[identity]\nallow_test_ins = true\n"
        "[dispatcher]\nbackoff_base = 0.05\nbackoff_cap = 0.2\npoll_interval = 0.05\nattempt_timeout = 5.0\n\n"
        f'[[destination]]\nname = "dmp"\nkind = "dmp-xds"\nurl = "http://127.0.0.1:{sim_port}/"\n'
        f'vihf_key = "{KEY}"\nvihf_cert = "{CERT}"\n'
        'vihf_roles = { "RIS-Y" = ["10^1.2.250.1.71.1.2.7", "SM44^1.2.250.1.71.4.2.5"], '
        '"DPI-RELAIS" = ["10^1.2.250.1.71.1.2.7", "SM26^1.2.250.1.71.4.2.5"] }\n',
        encoding="utf-8",
    )
    sim = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "simulate", "dmp", "--port", str(sim_port), "--trust-cert", str(CERT)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
    )
    serve = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--data-dir", str(tmp_path / "d"),
         "--mllp-port", str(mllp_port), "--http-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
    )
    base = f"http://127.0.0.1:{sim_port}/_sim"
    try:
        assert sim.stdout is not None and serve.stdout is not None
        assert sim.stdout.readline()  # readiness line
        assert serve.stdout.readline().startswith(b"relais ready")

        async def push() -> None:
            async with MllpClient("127.0.0.1", mllp_port, timeout=10) as client:
                for raw in messages:
                    assert field(await client.send(raw), "MSA", 1) == "AA"

        asyncio.run(push())
        deadline = time.monotonic() + 60
        subs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            subs = get_json(f"{base}/submissions")
            if any(s.get("transaction") == "ITI-57" for s in subs) or sum(
                1 for s in subs if s.get("transaction") == "ITI-41" and not s.get("accepted")
            ) >= 3:
                break
            time.sleep(0.2)
        time.sleep(0.5)  # let the last answer land before reading the registry
        return get_json(f"{base}/submissions"), get_json(f"{base}/documents"), get_json(f"{base}/violations")
    finally:
        serve.terminate()
        sim.terminate()
        serve.wait(20)
        sim.wait(20)


def check_chain(
    subs: list[dict[str, Any]],
    docs: list[dict[str, Any]],
    violations: Any,
    *,
    initial_uid: str,
    replacement_uid: str,
    vihf_expected: dict[str, list[str]],
    secret: bool,
) -> None:
    found = violations.get("violations") if isinstance(violations, dict) else violations
    assert found == [], found
    for sub in subs:
        assert sub["violations"] == [], (sub["transaction"], sub["violations"])
    itis41 = [s for s in subs if s["transaction"] == "ITI-41"]
    iti57 = [s for s in subs if s["transaction"] == "ITI-57"]
    assert len(itis41) == 2 and all(s["accepted"] for s in itis41)
    assert all(s["xades_valid"] is True for s in itis41)
    assert len(iti57) == 1 and iti57[0]["accepted"]

    by_uid = {d["uniqueId"]: d for d in docs}
    initial, replacement = by_uid[initial_uid], by_uid[replacement_uid]
    assert initial["availabilityStatus"] == DEPRECATED
    assert replacement["replaces"] == initial["entryUUID"]
    assert replacement["availabilityStatus"] == DELETED

    for sub in [*itis41, *iti57]:
        vihf = sub["vihf"]
        for name, expected in vihf_expected.items():
            assert values(vihf, name) == expected, (sub["transaction"], name, vihf.get(name))
        assert values(vihf, RESOURCE_ID) == [INS_NH]
        assert bool(values(vihf, CONFIDENTIALITY)) is secret


# What the SB PRT of each source puts in the VIHF, and whether CONNEXION_SECRETE = Y.
VIHF_EXPECTED = {
    # PRT-8 IDNST 1999000001, PRT-5 801234567890^MEDECIN^JEAN; CONNEXION_SECRETE = N
    "fixtures": ({"Identifiant_Structure": ["1999000001"], "NameID": ["801234567890"],
                  SUBJECT_ID: ["MEDECIN, JEAN"]}, False),
    # PRT-8 FINEG 300017985 (Struct_IdNat 1 + FINESS), PRT-5 801234564895^Eric^Thomas; secret in all three
    "corpus": ({"Identifiant_Structure": ["1300017985"], "NameID": ["801234564895"],
                SUBJECT_ID: ["Eric, Thomas"]}, True),
}


@pytest.mark.parametrize("source", SOURCES)
def test_mdm_chain(tmp_path: Path, source: str) -> None:
    sample = mdm_sample(source)
    run = uuid.uuid4().int % 10**9
    original, replacement = sample.initial_key, sample.replace_key
    mapping = {original: f"{original}.{run}", replacement: f"{replacement}.{run}"}
    raws = (sample.initial, sample.replace, sample.delete)
    messages = [rewrite_document_message(raw, n, mapping) for n, raw in enumerate(raws, 1)]
    subs, docs, violations = run_chain(tmp_path, messages)
    vihf_expected, secret = VIHF_EXPECTED[source]
    check_chain(
        subs, docs, violations,
        initial_uid=sample.uid(mapping[original]),
        replacement_uid=sample.uid(mapping[replacement]),
        vihf_expected=vihf_expected,
        secret=secret,
    )
