"""DmpDestination against DmpSimulator over real sockets on 127.0.0.1."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import aiohttp
import pytest
from structlog.testing import capture_logs

from adapters.base import RetrySettings
from adapters.dmp.client import DmpDestination, DmpSettings
from adapters.dmp.simulator import DmpSimulator
from adapters.dmp.testing import TEST_CERT, TEST_KEY, sample_document, sample_metadata
from adapters.dmp.vihf import VihfSettings
from gateway.errors import DestinationRejected, DestinationUnavailable
from gateway.ports import Payload

VIHF = VihfSettings(key_path=TEST_KEY, cert_path=TEST_CERT, structure_id="1012345678")


class FakeClock:
    """Real time (the simulator checks the VIHF window) and counter ids."""

    def __init__(self) -> None:
        self.n = 0

    def now(self) -> datetime:
        return datetime.now(UTC)

    def new_id(self) -> str:
        self.n += 1
        return f"00000000-0000-4000-a000-{self.n:012d}"


def payload(unique_id: str = "1.2.250.1.999999.1.7.1", *, n: int = 1, **kwargs) -> Payload:
    document = sample_document(unique_id)
    return Payload(
        exchange_id=f"ex-{n}",
        delivery_id=f"dl-{n}",
        document=document,
        xds=sample_metadata(document, unique_id=unique_id, n=n, **kwargs),
    )


@pytest.fixture
async def sim():
    simulator = DmpSimulator(seed=7, trust_cert=TEST_CERT.read_bytes(), now=lambda: datetime.now(UTC))
    await simulator.start("127.0.0.1", 0)
    yield simulator
    await simulator.stop()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
async def dest(sim, sleeps):
    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    destination = DmpDestination(
        "dmp",
        DmpSettings(url=sim.url, vihf=VIHF, retry=RetrySettings(quick_attempts=3, timeout=2)),
        clock=FakeClock(),
        sleep=fake_sleep,
    )
    yield destination
    await destination.close()


async def submissions(sim) -> list[dict]:
    """The ITI-41 entries of /_sim/submissions (it lists the ITI-18 lookups too)."""
    async with aiohttp.ClientSession() as session, session.get(sim.url + "_sim/submissions") as resp:
        return [s for s in await resp.json() if s["transaction"] == "ITI-41"]


async def test_submit_accepted_once(sim, dest) -> None:
    p = payload()
    with capture_logs() as logs:
        result = await dest.send(p)
    assert result.remote_id == "1.2.250.1.999999.1.7.1"
    assert result.status == 200
    assert "ProvideAndRegisterDocumentSetRequest" in result.request
    assert "ClinicalDocument" not in result.request  # the document travels as an MTOM part
    assert "RegistryResponse" in result.response
    assert await dest.already_delivered(p) is True
    assert await dest.already_delivered(payload("1.2.250.1.999999.1.7.99", n=9)) is False
    subs = await submissions(sim)
    assert [s["status"] for s in subs] == ["accepted"]
    assert subs[0]["patientId"].endswith("&1.2.250.1.213.1.4.10&ISO^NH")
    assert "saml:Assertion" in subs[0]["envelope"]
    stored = sim.documents["1.2.250.1.999999.1.7.1"]
    assert stored.content == p.document
    # No patient data in logs: ids only.
    dumped = json.dumps(logs, default=str)
    assert "279035121518989" not in dumped and "MEDECIN" not in dumped


async def test_duplicate_is_rejected(sim, dest) -> None:
    await dest.send(payload())
    with pytest.raises(DestinationRejected) as info:
        await dest.send(payload(n=2))
    assert info.value.code == "XDSDuplicateUniqueIdInRegistry"
    assert [s["status"] for s in await submissions(sim)] == ["accepted", "rejected"]


async def test_fault_after_store_then_already_delivered(sim, sleeps) -> None:
    sim.script.append("503:after")
    destination = DmpDestination(
        "dmp",
        DmpSettings(url=sim.url, vihf=VIHF, retry=RetrySettings(quick_attempts=1, timeout=2)),
        clock=FakeClock(),
    )
    try:
        with pytest.raises(DestinationUnavailable) as info:
            await destination.send(payload())
        assert info.value.code == "HTTP_503"
        assert await destination.already_delivered(payload()) is True
    finally:
        await destination.close()


@pytest.mark.parametrize("fault", ["reset:after", "soap:after", "timeout:after", "503:after"])
async def test_quick_retry_after_stored_fault_does_not_resubmit(sim, dest, sleeps, fault) -> None:
    sim.timeout_seconds = 5  # longer than the client's 2 s attempt timeout
    sim.script.append(fault)
    result = await dest.send(payload())
    assert result.detail["already_delivered"] is True
    subs = await submissions(sim)
    assert len(subs) == 1 and subs[0]["status"] == "accepted"  # exactly once, no duplicate
    assert len(sleeps) == 1


async def test_503_before_store_is_retried_by_tenacity(sim, dest, sleeps) -> None:
    sim.script.extend(["503", "reset"])
    result = await dest.send(payload())
    assert result.remote_id == "1.2.250.1.999999.1.7.1"
    assert result.detail["attempts"] == 3
    assert len(sleeps) == 2 and sleeps[0] >= 1  # Retry-After: 1 honoured
    assert [s["status"] for s in await submissions(sim)] == ["rejected", "rejected", "accepted"]


async def test_exhausted_retries_raise_unavailable(sim, dest, sleeps) -> None:
    sim.script.extend(["503", "503", "503"])
    with pytest.raises(DestinationUnavailable):
        await dest.send(payload())
    assert len(sleeps) == 2


async def test_replace_uses_iti18_entry_uuid(sim, dest) -> None:
    await dest.send(payload())
    old_uuid = sim.documents["1.2.250.1.999999.1.7.1"].entry_uuid
    replacement = payload("1.2.250.1.999999.1.7.2", n=2, action="replace", replaces="1.2.250.1.999999.1.7.1")
    result = await dest.send(replacement)
    assert result.detail["replacedEntryUUID"] == old_uuid
    assert "urn:ihe:iti:2007:AssociationType:RPLC" in result.request
    assert sim.documents["1.2.250.1.999999.1.7.2"].replaces == old_uuid
    assert sim.documents["1.2.250.1.999999.1.7.1"].as_json()["status"] == "Deprecated"


async def test_replace_of_unknown_parent_is_rejected(sim, dest) -> None:
    replacement = payload("1.2.250.1.999999.1.7.2", action="replace", replaces="1.2.250.1.999999.1.7.404")
    with pytest.raises(DestinationRejected) as info:
        await dest.send(replacement)
    assert info.value.code == "XDS_PARENT_UNKNOWN"
    assert await submissions(sim) == []


async def test_delete_of_an_entry_the_registry_lacks_is_refused(sim, dest) -> None:
    # TD3.3c finds the entry by uniqueId (ITI-18) before the ITI-57; no entry, no update.
    with pytest.raises(DestinationRejected) as info:
        await dest.send(payload(action="delete"))
    assert info.value.code == "DMP_ENTRY_UNKNOWN"
    assert sim.documents == {}


async def test_metadata_rules_reject_bad_hash_and_patient(sim, dest) -> None:
    bad = payload()
    bad.xds["documentEntry"]["hash"] = "0" * 40
    bad.xds["documentEntry"]["patientId"] = "123^^^&1.2.3&ISO^NH"
    bad.xds["submissionSet"]["patientId"] = "123^^^&1.2.3&ISO^NH"
    with pytest.raises(DestinationRejected):
        await dest.send(bad)
    codes = {e[0] for e in (await submissions(sim))[0]["errors"]}
    assert {"XDSNonIdenticalHash", "XDSUnknownPatientId"} <= codes


async def test_untrusted_vihf_is_a_sender_fault(tmp_path, sim, dest) -> None:
    from tools.make_test_pki import make_test_pki

    key, cert = make_test_pki(tmp_path)
    dest.settings = DmpSettings(
        url=sim.url, vihf=VihfSettings(key_path=key, cert_path=cert, structure_id="1012345678"), retry=dest.retry,
    )
    with pytest.raises(DestinationRejected) as info:
        await dest.send(payload())
    assert info.value.code == "SOAP_FAULT_SENDER"
    assert sim.documents == {}


async def test_connection_refused_is_unavailable(sleeps) -> None:
    simulator = DmpSimulator()
    url = await simulator.start("127.0.0.1", 0)
    await simulator.stop()

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    destination = DmpDestination(
        "dmp",
        DmpSettings(url=url, vihf=VIHF, retry=RetrySettings(quick_attempts=2, timeout=2)),
        sleep=fake_sleep,
    )
    try:
        with pytest.raises(DestinationUnavailable) as info:
            await destination.send(payload())
        assert info.value.code in ("CONNECTION_REFUSED", "CONNECTION")
    finally:
        await destination.close()


async def test_xsd_validation_in_simulator(tmp_path) -> None:
    from pathlib import Path

    xsd_dir = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "xds" / "xsd"
    if not (xsd_dir / "IHE" / "XDS.b_DocumentRepository.xsd").exists():
        pytest.skip(reason="corpus XSD not available")
    simulator = DmpSimulator(xsd_dir=xsd_dir)
    url = await simulator.start("127.0.0.1", 0)
    destination = DmpDestination("dmp", DmpSettings(url=url, vihf=VIHF), clock=FakeClock())
    try:
        result = await destination.send(payload())
        assert result.remote_id
    finally:
        await destination.close()
        await simulator.stop()
