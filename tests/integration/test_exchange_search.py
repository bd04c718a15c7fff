"""Search the journal by patient, document, exchange or control id; keyset pages; capped totals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.testing import TestGateway, settings_for, start_gateway, stop_gateway, with_control_id

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
OP = "op-token-0123456789"
VIEW = "view-token-0123456789"
INS = "279035121518989"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[TestGateway]:
    g = await start_gateway(settings_for(tmp_path / "data", f"operator:{OP},viewer:{VIEW}"), token=OP)
    yield g
    await stop_gateway(g)


async def send(gw: TestGateway, fixture: str, control_id: str) -> None:
    await gw.mllp.send(with_control_id((FIXTURES / fixture).read_bytes(), control_id))


async def controls(gw: TestGateway, token: str = OP, **params: str) -> list[str]:
    status, page = await gw.get("/v1/exchanges", token=token, params=params)
    assert status == 200, page
    return [e["control_id"] for e in page["items"]]


async def test_search_box_finds_a_patient_a_document_and_an_exchange(gw: TestGateway) -> None:
    await send(gw, "adt_a01_vali.hl7", "A1")
    await send(gw, "mdm_t02_initial.hl7", "M1")
    await send(gw, "adt_a01_latin9.hl7", "OTHER")
    mdm = await gw.latest(control_id="M1")
    row = await gw.service.journal.get_exchange(mdm["id"])
    docs = await gw.service.journal.documents_for(mdm["id"])
    assert row is not None

    assert await controls(gw, q=INS) == ["M1", "A1"]
    assert await controls(gw, q=row["patient_ipp"]) == ["M1", "A1"]  # AUTHORITY|IPP
    assert await controls(gw, patient=INS) == ["M1", "A1"]
    assert await controls(gw, q=docs[0]["unique_id"]) == ["M1"]
    assert await controls(gw, document=docs[0]["unique_id"]) == ["M1"]
    assert await controls(gw, q=mdm["id"][:8]) == ["M1"]
    assert await controls(gw, q=mdm["id"][:8].upper()) == ["M1"]
    assert await controls(gw, q="M1") == ["M1"]
    assert await controls(gw, q="M%") == []  # no wildcard: a control id is matched as typed


async def test_a_viewer_cannot_find_exchanges_by_patient_or_document(gw: TestGateway) -> None:
    await send(gw, "mdm_t02_initial.hl7", "M1")
    assert await controls(gw, token=VIEW, q=INS) == []
    assert await controls(gw, token=VIEW, q="M1") == ["M1"]
    for param in ("patient", "document"):
        status, problem = await gw.get("/v1/exchanges", token=VIEW, params={param: INS})
        assert status == 403 and problem["invalid_param"] == param


async def test_keyset_pages_do_not_shift_when_new_exchanges_arrive(gw: TestGateway) -> None:
    for n in range(5):
        await send(gw, "adt_a01_vali.hl7", f"K{n}")
    _, page = await gw.get("/v1/exchanges", params={"limit": "2"})
    assert [e["control_id"] for e in page["items"]] == ["K4", "K3"] and page["total"] == 5
    await send(gw, "adt_a01_vali.hl7", "NEW")  # an offset page 2 would now repeat K3
    seen = [e["control_id"] for e in page["items"]]
    while page["next"]:
        _, page = await gw.get(page["next"])
        seen += [e["control_id"] for e in page["items"]]
    assert seen == ["K4", "K3", "K2", "K1", "K0"]


async def test_totals_are_capped_so_counting_stays_cheap(gw: TestGateway) -> None:
    for n in range(4):
        await send(gw, "adt_a01_vali.hl7", f"C{n}")
    count = await gw.service.journal.count_exchanges(cap=3)
    assert count == (3, True)
    assert await gw.service.journal.count_exchanges(cap=3, control_id="C1") == (1, False)
    status, problem = await gw.get("/v1/exchanges", params={"cursor": "abc"})
    assert status == 400 and problem["invalid_param"] == "limit"


async def test_sender_and_type_prefix_filters_merge_exact_cases_in_order(gw: TestGateway) -> None:
    # DPI-RELAIS|CLINIQUE-RELAIS sends MDM and ORU; GAM|RELAIS-TEST an A28; DPI-TEST|HOPITAL-TEST an A01
    sends = [("mdm_t02_initial.hl7", "S1"), ("adt_a28_prov.hl7", "S2"), ("adt_a01_latin9.hl7", "S3"),
             ("oru_doc_r01_initial.hl7", "S4"), ("adt_a28_prov.hl7", "S5"), ("adt_a01_latin9.hl7", "S6")]
    for fixture, cid in sends:
        await send(gw, fixture, cid)
    assert await controls(gw, sender="DPI-RELAIS") == ["S4", "S1"]  # an application
    assert await controls(gw, sender="RELAIS-TEST") == ["S5", "S2"]  # a facility
    assert await controls(gw, sender="GAM|RELAIS-TEST") == ["S5", "S2"]
    assert await controls(gw, sender="GAM|OTHER") == [] and await controls(gw, sender="NOBODY") == []
    assert await controls(gw, type="ADT") == ["S6", "S5", "S3", "S2"]  # A01 and A28 merged newest first
    assert await controls(gw, type="ADT^A28") == ["S5", "S2"]
    assert await controls(gw, type="ADT*A01*") == ["S6", "S3"]
    assert await controls(gw, type="ORU") == ["S4"] and await controls(gw, type="SIU") == []

    # a merged filter pages with the cursor like any other
    _, page = await gw.get("/v1/exchanges", params={"type": "ADT", "limit": "3"})
    seen = [e["control_id"] for e in page["items"]]
    assert page["total"] == 4
    _, page = await gw.get(page["next"])
    assert seen + [e["control_id"] for e in page["items"]] == ["S6", "S5", "S3", "S2"] and page["next"] is None
