"""The INS identity gate end to end: hold, automatic release by ADT, A40 re-key, A47 re-hold, expiry."""

from __future__ import annotations

import asyncio

from adapters.mllp_client import MllpClient
from tests import builders
from tests.support import field, fixture_bytes, mllp_port, running

# A destination that never answers keeps deliveries open (failed, retrying), so that
# an A47 has something not yet delivered to put back on hold.
UNREACHABLE = """
[[destination]]
name = "dmp"
kind = "mhd"
url = "http://127.0.0.1:9/fhir"
"""


def mdm(status: bytes = b"PROV", control: bytes = b"MDM0001", ipp: bytes = b"P000123") -> bytes:
    raw = fixture_bytes("mdm_t02_initial.hl7")
    raw = raw.replace(b"|N|VALI", b"|N|" + status).replace(b"|MDM0001|", b"|" + control + b"|")
    return raw.replace(b"P000123^^^", ipp + b"^^^")


async def send(service, raw: bytes) -> bytes:  # type: ignore[no-untyped-def]
    async with MllpClient("127.0.0.1", mllp_port(service), timeout=10) as client:
        return await client.send(raw)


def status_of(service, exchange_id: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return service.journal.read_sync(lambda tx: tx.get_exchange(exchange_id))


def only(service, control_id: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    rows = service.journal.read_sync(lambda tx: tx.list_exchanges(control_id=control_id))
    assert len(rows) == 1, rows
    return rows[0]


async def wait_status(service, exchange_id: str, wanted: set[str], timeout: float = 10.0) -> str:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = status_of(service, exchange_id)["status"]
        if status in wanted or asyncio.get_running_loop().time() > deadline:
            return status
        await asyncio.sleep(0.05)


async def test_prov_document_is_held_then_released_by_vali_adt(tmp_path):
    async with running(builders.settings(tmp_path)) as service:
        ack = await send(service, mdm(b"PROV"))
        assert field(ack, "MSA", 1) == "AA"  # we keep it
        held = only(service, "MDM0001")
        assert held["status"] == "held" and held["reason_code"] == "INS_NOT_QUALIFIED"
        deliveries = service.journal.read_sync(lambda tx: tx.deliveries_for(held["id"]))
        assert {d["status"] for d in deliveries} == {"waiting"}

        assert field(await send(service, fixture_bytes("adt_a01_vali.hl7")), "MSA", 1) == "AA"
        assert await wait_status(service, held["id"], {"delivered"}) == "delivered"
        stages = [e["stage"] for e in service.journal.read_sync(lambda tx: tx.events(held["id"]))]
        assert "held" in stages and "released" in stages
        assert stages.index("held") < stages.index("released") < stages.index("delivered")


async def test_prov_adt_does_not_release(tmp_path):
    async with running(builders.settings(tmp_path)) as service:
        await send(service, mdm(b"PROV"))
        adt = fixture_bytes("adt_a01_vali.hl7").replace(b"|N|VALI", b"|N|PROV")
        await send(service, adt)
        await asyncio.sleep(0.2)
        assert only(service, "MDM0001")["status"] == "held"


async def test_fictitious_attribute_keeps_identity_unqualified(tmp_path):
    async with running(builders.settings(tmp_path)) as service:
        await send(service, mdm(b"VALI~FICT"))
        assert only(service, "MDM0001")["status"] == "held"


async def test_test_ins_refused_unless_allowed(tmp_path):
    async with running(builders.settings(tmp_path, identity={"allow_test_ins": False})) as service:
        await send(service, mdm(b"VALI"))
        row = only(service, "MDM0001")
        assert row["status"] == "held" and row["reason_code"] == "INS_OID_TEST"


async def test_a40_rekeys_held_documents_to_the_survivor(tmp_path):
    async with running(builders.settings(tmp_path)) as service:
        await send(service, mdm(b"PROV", ipp=b"P000456"))
        held = only(service, "MDM0001")
        assert held["status"] == "held"
        await send(service, fixture_bytes("adt_a40_merge.hl7"))
        row = service.journal.read_sync(lambda tx: tx.get_exchange(held["id"]))
        assert row["patient_ipp"].endswith("|P000123")
        stages = [e["stage"] for e in service.journal.read_sync(lambda tx: tx.events(held["id"]))]
        assert "re-keyed" in stages


async def test_a47_puts_undelivered_documents_back_on_hold(tmp_path):
    async with running(builders.settings(tmp_path, text=UNREACHABLE)) as service:
        await send(service, mdm(b"VALI"))
        row = only(service, "MDM0001")
        assert row["status"] == "queued"
        await send(service, fixture_bytes("adt_a47_remove_ins.hl7"))
        row = status_of(service, row["id"])
        assert row["status"] == "held" and row["reason_code"] == "INS_NOT_QUALIFIED"
        deliveries = service.journal.read_sync(lambda tx: tx.deliveries_for(row["id"]))
        assert {d["status"] for d in deliveries} <= {"waiting", "in_flight"}
        await asyncio.sleep(0.5)  # an attempt that was in flight ends waiting, not retrying
        deliveries = service.journal.read_sync(lambda tx: tx.deliveries_for(row["id"]))
        assert {d["status"] for d in deliveries} <= {"waiting", "in_flight"}
        assert status_of(service, row["id"])["status"] == "held"


async def test_identity_conflict_holds_for_review(tmp_path):
    async with running(builders.settings(tmp_path)) as service:
        # the registry knows this IPP with another INS; then a document comes with the first one
        other = fixture_bytes("adt_a01_vali.hl7").replace(b"279035121518989", b"185057800608491")
        await send(service, other)
        await send(service, mdm(b"VALI"))
        row = only(service, "MDM0001")
        assert row["status"] == "held" and row["reason_code"] == "INS_CONFLICT"


async def test_traits_mismatch_holds_for_review(tmp_path):
    async with running(builders.settings(tmp_path)) as service:
        await send(service, fixture_bytes("adt_a01_vali.hl7"))
        renamed = mdm(b"VALI", ipp=b"P000999").replace(b"PAT-TROIS^", b"PAT-QUATRE^")
        await send(service, renamed)
        row = only(service, "MDM0001")
        assert row["status"] == "held" and row["reason_code"] == "INS_TRAITS_MISMATCH"


async def test_held_past_the_bound_becomes_dead(tmp_path):
    settings = builders.settings(tmp_path, identity={"hold_max_hours": 0.00001})
    async with running(settings) as service:
        await send(service, mdm(b"PROV"))
        held = only(service, "MDM0001")
        await asyncio.sleep(0.1)
        assert service.dispatcher is not None
        expired = await service.dispatcher.expire_holds()
        assert held["id"] in expired
        row = status_of(service, held["id"])
        assert row["status"] == "dead" and "INS_NOT_QUALIFIED" in row["reason"]
