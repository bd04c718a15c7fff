"""A configuration change never strands work: deliveries for a destination that left the
configuration are held with DESTINATION_UNKNOWN, leave by themselves when it comes back,
and can be re-routed in bulk (API and CLI), audited."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gateway import testing
from gateway.cli import main
from gateway.testing import TestGateway, with_control_id
from tests import builders
from tests.support import fixture_bytes

OP = "op-token-0123456789"
ARCHIVE = """
[[destination]]
name = "archive"
kind = "file"
directory = "{directory}"
"""


def prov_mdm(control_id: str) -> bytes:
    """The MDM fixture with a provisional identity: held by the identity gate."""
    return with_control_id(fixture_bytes("mdm_t02_initial.hl7").replace(b"|N|VALI", b"|N|PROV"), control_id)


async def start(tmp_path: Path, config: str = "") -> TestGateway:
    settings = builders.settings(tmp_path, text=config, api={"tokens": f"operator:alice:{OP}"})
    return await testing.start_gateway(settings, token=OP)


async def wait_status(gw: TestGateway, exchange_id: str, status: str) -> dict[str, Any]:
    return await gw.wait_status(exchange_id, status, within=10)


async def held_for_old_outbox(tmp_path: Path) -> list[str]:
    """Day 1, no destination configured: documents held for the default outbox."""
    gw = await start(tmp_path)
    try:
        ids = []
        for n in range(3):
            await gw.mllp.send(prov_mdm(f"OLD{n}"))
            ex = await gw.latest(control_id=f"OLD{n}")
            assert ex["status"] == "held"
            ids.append(ex["id"])
        deliveries = await gw.service.journal.deliveries_for(ids[0])
        assert [d.destination for d in deliveries] == ["outbox"]
        return ids
    finally:
        await testing.stop_gateway(gw)


async def test_work_for_a_removed_destination_is_held_then_rerouted_in_bulk_and_delivered(tmp_path: Path) -> None:
    ids = await held_for_old_outbox(tmp_path)
    archive = tmp_path / "archive"
    gw = await start(tmp_path, ARCHIVE.format(directory=archive))  # day 2: the outbox is gone
    try:
        # the identity is qualified: the documents would leave, but for a destination that is gone
        await gw.mllp.send(with_control_id(fixture_bytes("adt_a01_vali.hl7"), "ADT1"))
        # the first one is held with the reason; the others wait behind it (per-patient order)
        for _ in range(200):
            first = (await gw.get(f"/v1/exchanges/{ids[0]}"))[1]
            if first["reason_code"] == "DESTINATION_UNKNOWN":
                break
            await asyncio.sleep(0.05)
        assert (first["status"], first["reason_code"]) == ("held", "DESTINATION_UNKNOWN"), first
        assert first["deliveries"][0]["status"] == "waiting"  # kept, never silently dead
        for exchange_id in ids[1:]:
            ex = (await gw.get(f"/v1/exchanges/{exchange_id}"))[1]
            assert ex["status"] == "queued" and ex["deliveries"][0]["status"] == "queued"
        _, destinations = await gw.get("/v1/destinations")
        assert {d["name"]: d["kind"] for d in destinations["items"]}.get("outbox") == "unknown"

        status, problem = await gw.post("/v1/bulk/reroute", json={"from": "outbox", "to": "nowhere", "reason": "x"})
        assert status == 400 and "not a configured destination" in problem["detail"]
        status, out = await gw.post("/v1/bulk/reroute", json={"from": "outbox", "to": "archive",
                                                               "reason": "the outbox became the archive"})
        assert status == 200 and len(out["rerouted"]) == 3
        for exchange_id in ids:
            ex = await wait_status(gw, exchange_id, "delivered")
            assert ex["reason_code"] is None and ex["deliveries"][0]["destination"] == "archive"
        assert len(list(archive.rglob("*.xml"))) >= 3  # the file destination wrote them
        audit = await gw.service.journal.audit_entries()
        moves = [json.loads(a.detail or "") for a in audit if a.action == "reroute"]
        assert len(moves) == 3 and {m["from"] for m in moves} == {"outbox"} and {m["to"] for m in moves} == {"archive"}
    finally:
        await testing.stop_gateway(gw)


async def test_parked_work_leaves_by_itself_when_its_destination_comes_back(tmp_path: Path) -> None:
    ids = await held_for_old_outbox(tmp_path)
    gw = await start(tmp_path, ARCHIVE.format(directory=tmp_path / "archive"))
    try:
        await gw.mllp.send(with_control_id(fixture_bytes("adt_a01_vali.hl7"), "ADT1"))
        for _ in range(200):
            parked = await gw.service.journal.deliveries_for(ids[0])
            if parked[0].last_error and parked[0].last_error.startswith("DESTINATION_UNKNOWN"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the delivery was not parked")
    finally:
        await testing.stop_gateway(gw)
    gw = await start(tmp_path)  # the configuration is back to the default outbox
    try:
        for exchange_id in ids:
            ex = await wait_status(gw, exchange_id, "delivered")
            assert ex["deliveries"][0]["destination"] == "outbox"
    finally:
        await testing.stop_gateway(gw)


async def test_cli_reroute_checks_the_target_and_moves_the_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await held_for_old_outbox(tmp_path)
    config = tmp_path / "new.toml"
    config.write_text(ARCHIVE.format(directory=tmp_path / "archive"), encoding="utf-8")
    data = str(tmp_path / "data")
    common = ["--operator", "bob", "--reason", "outbox retired", "--data-dir", data, "--config", str(config)]
    code = await asyncio.to_thread(main, ["reroute", "--from", "outbox", "--to", "nowhere", *common])
    assert code == 65 and "not a configured destination" in capsys.readouterr().err
    code = await asyncio.to_thread(main, ["reroute", "--from", "outbox", "--to", "archive", *common])
    out = capsys.readouterr().out
    assert code == 0 and out.count("rerouted ") == 3
    code = await asyncio.to_thread(main, ["reroute", "--from", "outbox", "--to", "archive", *common])
    assert code == 0 and capsys.readouterr().out.strip() == "nothing to move from outbox"
    # still held by the identity gate: the move keeps them waiting for a qualified identity
    gw = await start(tmp_path, ARCHIVE.format(directory=tmp_path / "archive"))
    try:
        ex = (await gw.get(f"/v1/exchanges/{ids[0]}"))[1]
        assert ex["status"] == "held" and ex["deliveries"][0]["destination"] == "archive"
        await gw.mllp.send(with_control_id(fixture_bytes("adt_a01_vali.hl7"), "ADT1"))
        await wait_status(gw, ids[0], "delivered")
    finally:
        await testing.stop_gateway(gw)


async def test_offline_replay_and_reroute_use_the_configuration_serve_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "archive"
    gw = await start(tmp_path, ARCHIVE.format(directory=archive))  # serve runs with the archive only
    try:
        await gw.mllp.send(with_control_id(fixture_bytes("adt_a01_vali.hl7"), "ADT1"))
        await gw.mllp.send(with_control_id(fixture_bytes("mdm_t02_initial.hl7"), "DOC1"))
        original = await gw.latest(control_id="DOC1")
        await wait_status(gw, original["id"], "delivered")
    finally:
        await testing.stop_gateway(gw)
    recorded = json.loads((tmp_path / "data" / "effective-config.json").read_text(encoding="utf-8"))
    assert [d["name"] for d in recorded["destination"]] == ["archive"] and recorded["api"]["tokens"] == ""
    assert oct((tmp_path / "data" / "effective-config.json").stat().st_mode & 0o777) == "0o600"

    # no --config: the CLI alone would route to the default outbox; the recorded one says archive
    code = await asyncio.to_thread(main, ["replay", original["id"], "--operator", "bob", "--data-dir",
                                          str(tmp_path / "data")])
    captured = capsys.readouterr()
    assert code == 0 and "using the configuration serve recorded" in captured.err
    new_id = captured.out.split(" as ")[1].split()[0]
    gw = await start(tmp_path, ARCHIVE.format(directory=archive))
    try:
        replayed = await wait_status(gw, new_id, "delivered")
        assert [d["destination"] for d in replayed["deliveries"]] == ["archive"]
    finally:
        await testing.stop_gateway(gw)
    code = await asyncio.to_thread(main, ["reroute", "--from", "outbox", "--to", "archive", "--operator", "bob",
                                          "--reason", "r", "--data-dir", str(tmp_path / "data")])
    assert code == 0 and capsys.readouterr().out.strip() == "nothing to move from outbox"  # archive is known


async def test_holds_a_configuration_change_resolves_are_released_at_start(tmp_path: Path) -> None:
    """A document held for the ANS test INS OID leaves once identity.allow_test_ins is on."""
    strict = builders.settings(tmp_path, identity={"allow_test_ins": False}, api={"tokens": f"operator:alice:{OP}"})
    gw = await testing.start_gateway(strict, token=OP)
    try:
        await gw.mllp.send(with_control_id(fixture_bytes("mdm_t02_initial.hl7"), "T1"))
        await gw.mllp.send(prov_mdm("T2"))
        t1, t2 = await gw.latest(control_id="T1"), await gw.latest(control_id="T2")
        assert (t1["status"], t1["reason_code"]) == ("held", "INS_OID_TEST")
        assert (t2["status"], t2["reason_code"]) == ("held", "INS_OID_TEST")
    finally:
        await testing.stop_gateway(gw)
    gw = await start(tmp_path)  # builders.settings allows the test OID
    try:
        released = await wait_status(gw, t1["id"], "delivered")
        assert released["reason_code"] is None
        assert any(e["stage"] == "released" and e["detail"]["override"] == "INS_OID_TEST" for e in released["events"])
        # the provisional identity still waits, now for the reason that is left
        still = (await gw.get(f"/v1/exchanges/{t2['id']}"))[1]
        assert (still["status"], still["reason_code"]) == ("held", "INS_NOT_QUALIFIED")
    finally:
        await testing.stop_gateway(gw)
