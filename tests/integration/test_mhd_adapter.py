"""MhdDestination against MhdSimulator over real sockets on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from adapters.base import RetrySettings
from adapters.mhd.client import MhdConfig, MhdDestination
from adapters.mhd.simulator import MhdSimulator
from adapters.mhd.testing import TEST_INS, make_iti65_bundle
from gateway.errors import DestinationRejected, DestinationUnavailable
from gateway.ports import Destination, Payload


class RecordingSleep:
    """Records the waits tenacity asks for, without waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
async def sim():
    simulator = MhdSimulator(seed=7, hang_seconds=5)
    await simulator.start("127.0.0.1", 0)
    yield simulator
    await simulator.stop()


def make_dest(url: str, sleep: RecordingSleep | None = None, **retry: float) -> MhdDestination:
    settings = RetrySettings(**{"quick_attempts": 3, "timeout": 2.0, "backoff_initial": 0.01, **retry})
    return MhdDestination(
        "mhd-test", MhdConfig(base_url=url), retry=settings, sleep=sleep or RecordingSleep()
    )


def payload(unique_id: str = "1.2.250.1.999999.1.2.3", delivery: str = "d1", **changes) -> Payload:
    return Payload(exchange_id="x1", delivery_id=delivery, fhir=make_iti65_bundle(unique_id, **changes))


async def test_success_returns_document_reference_location(sim: MhdSimulator) -> None:
    dest = make_dest(sim.url)
    assert isinstance(dest, Destination)
    try:
        result = await dest.send(payload())
    finally:
        await dest.close()
    assert result.status == 200
    assert result.remote_id is not None and result.remote_id.startswith("DocumentReference/")
    assert "_history" not in result.remote_id
    assert json.loads(result.request or "") == make_iti65_bundle()
    assert json.loads(result.response or "")["type"] == "transaction-response"
    assert len(result.detail["locations"]) == 3
    [record] = sim.submissions
    assert record["status"] == "accepted"
    assert record["uniqueId"] == "urn:oid:1.2.250.1.999999.1.2.3"
    assert record["patientId"] == TEST_INS


async def test_fhir_prefix_and_lookup(sim: MhdSimulator) -> None:
    dest = make_dest(f"{sim.url}/fhir/")
    try:
        assert await dest.already_delivered(payload()) is False
        await dest.send(payload())
        assert await dest.already_delivered(payload()) is True
        assert await dest.already_delivered(payload("1.2.250.1.999999.1.9")) is False
    finally:
        await dest.close()


async def test_duplicate_is_rejected(sim: MhdSimulator) -> None:
    dest = make_dest(sim.url)
    try:
        await dest.send(payload(delivery="d1"))
        with pytest.raises(DestinationRejected) as info:
            await dest.send(payload(delivery="d2"))
    finally:
        await dest.close()
    assert info.value.code == "MHD_DUPLICATE"
    assert "duplicate" in info.value.message
    assert [s["status"] for s in sim.submissions] == ["accepted", "rejected"]


async def test_503_is_retried_honouring_retry_after(sim: MhdSimulator) -> None:
    sleep = RecordingSleep()
    dest = make_dest(sim.url, sleep)
    sim.inject("503")
    try:
        result = await dest.send(payload())
    finally:
        await dest.close()
    assert result.remote_id is not None
    assert result.detail["attempts"] == 2
    assert sleep.calls == [1.0]  # the simulator's Retry-After: 1
    assert [s["status"] for s in sim.submissions] == ["rejected", "accepted"]


@pytest.mark.parametrize("fault", ["503", "fhir", "reset"])
async def test_fault_after_store_then_already_delivered(sim: MhdSimulator, fault: str) -> None:
    sim.inject(fault, after_store=True)
    dest = make_dest(sim.url, quick_attempts=1)
    try:
        with pytest.raises(DestinationUnavailable):
            await dest.send(payload())
        assert await dest.already_delivered(payload()) is True
    finally:
        await dest.close()
    assert len(sim.accepted) == 1


async def test_quick_retry_after_stored_fault_does_not_resend(sim: MhdSimulator) -> None:
    sim.inject("reset", after_store=True)
    dest = make_dest(sim.url)
    try:
        result = await dest.send(payload())
    finally:
        await dest.close()
    assert result.detail.get("already_delivered") is True
    assert len(sim.submissions) == 1


async def test_timeout_fault_is_unavailable(sim: MhdSimulator) -> None:
    sim.inject("timeout")
    dest = make_dest(sim.url, quick_attempts=1, timeout=0.3)
    try:
        with pytest.raises(DestinationUnavailable) as info:
            await dest.send(payload())
    finally:
        await dest.close()
    assert info.value.code == "TIMEOUT"


async def test_missing_custodian_is_rejected_with_precise_reason(sim: MhdSimulator) -> None:
    bundle = make_iti65_bundle()
    del bundle["entry"][1]["resource"]["custodian"]
    sleep = RecordingSleep()
    dest = make_dest(sim.url, sleep)
    try:
        with pytest.raises(DestinationRejected) as info:
            await dest.send(Payload(exchange_id="x1", delivery_id="d1", fhir=bundle))
    finally:
        await dest.close()
    assert info.value.code == "MHD_HTTP_422"
    assert info.value.location == "Bundle.entry[1].resource.custodian"
    assert "DocumentReference.custodian is required" in info.value.message
    assert sleep.calls == []  # permanent: no retry
    [record] = sim.submissions
    assert record["status"] == "rejected"
    assert record["errors"][0]["location"] == "Bundle.entry[1].resource.custodian"


async def test_hash_mismatch_is_rejected(sim: MhdSimulator) -> None:
    bundle = make_iti65_bundle()
    bundle["entry"][2]["resource"]["data"] = "SGVsbG8="
    dest = make_dest(sim.url)
    try:
        with pytest.raises(DestinationRejected) as info:
            await dest.send(Payload(exchange_id="x1", delivery_id="d1", fhir=bundle))
    finally:
        await dest.close()
    assert "attachment.hash" in info.value.message
    assert "attachment.size" in info.value.message


async def test_r4b_schema_error_is_rejected(sim: MhdSimulator) -> None:
    bundle = make_iti65_bundle()
    bundle["entry"][1]["resource"]["unexpected"] = True
    dest = make_dest(sim.url)
    try:
        with pytest.raises(DestinationRejected) as info:
            await dest.send(Payload(exchange_id="x1", delivery_id="d1", fhir=bundle))
    finally:
        await dest.close()
    assert info.value.code == "MHD_HTTP_400"
    assert "Bundle.entry[1].resource.unexpected" in info.value.message


async def test_payload_without_bundle_is_rejected(sim: MhdSimulator) -> None:
    dest = make_dest(sim.url)
    try:
        with pytest.raises(DestinationRejected) as info:
            await dest.send(Payload(exchange_id="x1", delivery_id="d1", document=b"<x/>"))
    finally:
        await dest.close()
    assert info.value.code == "MHD_NO_BUNDLE"


async def test_random_faults_are_reproducible_and_documents_stored_once() -> None:
    sim = MhdSimulator(fail_rate=0.5, faults=("503", "fhir", "reset"), seed=3)
    url = await sim.start("127.0.0.1", 0)
    dest = make_dest(url, quick_attempts=6, quick_max_seconds=30)
    try:
        for n in range(8):
            await dest.send(payload(f"1.2.250.1.999999.1.{n}", delivery=f"d{n}"))
    finally:
        await dest.close()
        await sim.stop()
    assert any(s["fault"] for s in sim.submissions)
    assert sorted(s["uniqueId"] for s in sim.accepted) == sorted(
        f"urn:oid:1.2.250.1.999999.1.{n}" for n in range(8)
    )


async def test_sim_http_endpoints(sim: MhdSimulator) -> None:
    dest = make_dest(sim.url)
    try:
        result = await dest.send(payload())
    finally:
        await dest.close()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sim.url}/_sim/submissions") as resp:
            [record] = await resp.json()
        assert record["bundle"]["type"] == "transaction"
        async with http.get(f"{sim.url}/{result.remote_id}") as resp:
            stored = await resp.json(content_type=None)
        assert stored["masterIdentifier"]["value"] == "urn:oid:1.2.250.1.999999.1.2.3"
        async with http.post(f"{sim.url}/_sim/reset") as resp:
            assert resp.status == 200
    assert sim.submissions == []


async def test_sim_refuses_other_media_types_and_non_json(sim: MhdSimulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(sim.url, data=b"<Bundle/>", headers={"Content-Type": "application/xml"}) as resp:
            assert resp.status == 415
        async with http.post(sim.url, data=b"{", headers={"Content-Type": "application/fhir+json"}) as resp:
            assert resp.status == 400
            body = await resp.json(content_type=None)
    assert body["issue"][0]["code"] == "structure"
    assert [s["status"] for s in sim.submissions] == ["rejected", "rejected"]


async def test_a_replacement_supersedes_the_replaced_document_reference(sim: MhdSimulator) -> None:
    """PDSM4DMP TD2.1: the replaced DocumentReference becomes superseded in the same transaction."""
    dest = make_dest(sim.url)
    try:
        await dest.send(payload("1.2.250.1.999999.1.2.3"))
        replacement = make_iti65_bundle("1.2.250.1.999999.1.2.4", uuid_prefix="00000000-0000-4000-8000-00000000001")
        doc_ref = next(e["resource"] for e in replacement["entry"] if e["resource"]["resourceType"] == "DocumentReference")
        old_ident = {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.250.1.999999.1.2.3"}
        doc_ref["relatesTo"] = [{"code": "replaces", "target": {"identifier": old_ident}}]
        result = await dest.send(Payload(exchange_id="x2", delivery_id="d2", fhir=replacement))
        sent = json.loads(result.request or "")
        patch = [e for e in sent["entry"] if e["request"]["method"] == "PATCH"]
        assert len(patch) == 1 and patch[0]["request"]["url"].startswith("DocumentReference/")
        stored = sim.resources[patch[0]["request"]["url"]]
        assert stored["status"] == "superseded"
        # the Bundle kept in the journal is not modified by the send
        assert all(e["request"]["method"] == "POST" for e in replacement["entry"])
        orphan = make_iti65_bundle("1.2.250.1.999999.1.2.5", uuid_prefix="00000000-0000-4000-8000-00000000002")
        doc_ref = next(e["resource"] for e in orphan["entry"] if e["resource"]["resourceType"] == "DocumentReference")
        doc_ref["relatesTo"] = [{"code": "replaces", "target": {"identifier": {**old_ident, "value": "urn:oid:9.9"}}}]
        with pytest.raises(DestinationRejected) as refused:
            await dest.send(Payload(exchange_id="x3", delivery_id="d3", fhir=orphan))
        assert refused.value.code == "MHD_PARENT_UNKNOWN"
    finally:
        await dest.close()
