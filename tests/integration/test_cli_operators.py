"""Operator commands (identities, release, replay, audit, prune) against a journal that ``serve`` is using.

The service runs in this event loop; each command runs in a worker thread through
``gateway.cli.main``, as a second process would (its own SQLite connections).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.testing import TestGateway, settings_for, start_gateway, stop_gateway, with_control_id

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
OP = "op-token-0123456789"
INS = "279035121518989"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[TestGateway]:
    g = await start_gateway(settings_for(tmp_path / "data", f"operator:{OP}"), token=OP)
    yield g
    await stop_gateway(g)


async def relais(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    return code, capsys.readouterr().out


async def held_mdm(gw: TestGateway, control_id: str) -> str:
    await gw.mllp.send(with_control_id((FIXTURES / "mdm_t02_initial.hl7").read_bytes(), control_id))
    ex = await gw.latest(control_id=control_id)
    assert ex["status"] == "held"
    return str(ex["id"])


async def test_identities_then_release_while_serving(gw: TestGateway, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(gw.service.settings.data_dir)
    ex_id = await held_mdm(gw, "C1")

    code, out = await relais(capsys, "identities", "--held", "--json", "--data-dir", data)
    rows = json.loads(out)
    assert code == 0 and len(rows) == 1 and rows[0]["ins"] == INS and rows[0]["held_exchanges"][0]["id"] == ex_id
    code, out = await relais(capsys, "identities", "--data-dir", data)
    assert code == 0 and INS in out and ex_id[:8] in out

    code, out = await relais(capsys, "release", ex_id[:12], "--operator", "bob", "--reason", "ID card checked",
                             "--data-dir", data)
    assert code == 0 and f"released {ex_id}" in out
    await gw.wait_status(ex_id, "delivered")  # the running dispatcher found the queued delivery
    audit = [a.as_dict() for a in await gw.service.journal.audit_entries()]
    assert [(r["actor"], r["action"]) for r in audit if r["action"] == "release"] == [("cli:bob", "release")]

    code, out = await relais(capsys, "release", ex_id, "--operator", "bob", "--reason", "again", "--data-dir", data)
    assert code == 1 and "not held" in out
    code, out = await relais(capsys, "identities", "--held", "--data-dir", data)
    assert code == 0 and "no identities with held documents" in out


async def test_audit_verify_names_the_altered_row(gw: TestGateway, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(gw.service.settings.data_dir)
    for cid in ("A1", "A2"):
        await gw.post(f"/v1/exchanges/{await held_mdm(gw, cid)}/release", json={"reason": "checked"})
    code, out = await relais(capsys, "audit", "verify", "--data-dir", data)
    assert code == 0 and "intact" in out
    code, out = await relais(capsys, "audit", "list", "--json", "--data-dir", data)
    rows = json.loads(out)
    assert code == 0 and [r["action"] for r in rows][:1] == ["release"]

    target = rows[1]["seq"]
    with sqlite3.connect(Path(data) / "journal.db") as conn:
        conn.execute("UPDATE audit SET detail = ? WHERE seq = ?", (json.dumps({"reason": "forged"}), target))
    code, out = await relais(capsys, "audit", "verify", "--data-dir", data)
    assert code == 1 and f"seq={target}" in out


async def test_replay_offline_and_through_http(gw: TestGateway, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(gw.service.settings.data_dir)
    ex_id = await held_mdm(gw, "P1")

    code, out = await relais(capsys, "replay", ex_id, "--operator", "carol", "--data-dir", data)
    assert code == 0 and f"replayed {ex_id} as " in out
    new_id = out.split(" as ")[1].split()[0]
    _, new = await gw.get(f"/v1/exchanges/{new_id}")
    assert new["control_id"] == "P1" and new["status"] == "held" and new["listener"] == "replay"

    url = gw.service.addresses["http"]
    code, out = await relais(capsys, "replay", ex_id, "--to-http", url, "--token", OP, "--data-dir", data)
    assert code == 0 and f"replayed {ex_id} as " in out
    code, out = await relais(capsys, "replay", ex_id, "--to-http", url, "--token", "wrong-token-1", "--data-dir", data)
    assert code == 1 and "401" in out
    code, out = await relais(capsys, "replay", "no-such-id", "--data-dir", data)
    assert code == 1

    audit = [a.as_dict() for a in await gw.service.journal.audit_entries()]
    assert [r["actor"] for r in audit if r["action"] == "replay"] == ["cli:carol", "operator:operator1"]


async def test_prune(gw: TestGateway, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(gw.service.settings.data_dir)
    ex_id = await held_mdm(gw, "R1")
    await gw.post(f"/v1/exchanges/{ex_id}/release", json={"reason": "checked"})
    await gw.wait_status(ex_id, "delivered")

    code, out = await relais(capsys, "prune", "--data-dir", data)
    assert code == 78 and out == ""  # EX_CONFIG: one line on stderr names retention.days
    code, out = await relais(capsys, "prune", "--older-than", "soon", "--data-dir", data)
    assert code == 64
    code, out = await relais(capsys, "prune", "--older-than", "90d", "--data-dir", data)
    assert code == 0 and "pruned the bodies of 0 exchanges" in out
    code, out = await relais(capsys, "prune", "--older-than", "0s", "--operator", "dave", "--data-dir", data)
    assert code == 0 and "pruned the bodies of 1 exchanges" in out
    _, detail = await gw.get(f"/v1/exchanges/{ex_id}")
    assert detail["raw_base64"] is None and detail["status"] == "delivered"
    audit = [a.as_dict() for a in await gw.service.journal.audit_entries()]
    actors = [r["actor"] for r in audit if r["action"] == "prune"]
    assert len(actors) == 2 and actors[0].startswith("cli:") and actors[1] == "cli:dave"
    status, problem = await gw.post(f"/v1/exchanges/{ex_id}/replay")
    assert status == 409 and "pruned" in problem["detail"]
