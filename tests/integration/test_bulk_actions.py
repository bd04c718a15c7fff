"""Bulk release of held exchanges and bulk retry of dead deliveries, over the API and the CLI.

Each bulk action is one transaction and one audit row per exchange or delivery, with the
operator and the reason; refusals are reported beside what was done.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.operations.audit import verify_audit
from gateway.testing import TestGateway, settings_for, start_gateway, stop_gateway, with_control_id

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
OP = "op-token-0123456789"
VIEW = "view-token-0123456789"
TOKENS = f"operator:alice:{OP},viewer:{VIEW}"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[TestGateway]:
    g = await start_gateway(settings_for(tmp_path / "data", TOKENS), token=OP)
    yield g
    await stop_gateway(g)


async def held(gw: TestGateway, n: int) -> list[str]:
    """``n`` held MDMs (the fixture's ANS test INS OID is refused by default, so they are held)."""
    ids = []
    for i in range(n):
        await gw.mllp.send(with_control_id((FIXTURES / "mdm_t02_initial.hl7").read_bytes(), f"H{i}"))
        ex = await gw.latest(control_id=f"H{i}")
        assert ex["status"] == "held"
        ids.append(ex["id"])
    return ids


def journal_path(gw: TestGateway) -> str:
    return gw.service.settings.journal_url.removeprefix("sqlite:///")


async def audit(gw: TestGateway, action: str) -> list[dict]:  # type: ignore[type-arg]
    rows = await gw.service.journal.audit_entries()
    return [r.as_dict() for r in rows if r.action == action]


async def test_bulk_release_of_every_held_exchange(gw: TestGateway) -> None:
    ids = await held(gw, 3)
    status, out = await gw.post("/v1/bulk/release", json={"reason": "identities checked at the desk", "all_held": True})
    assert status == 200 and sorted(out["released"]) == sorted(ids) and out["refused"] == []
    for exchange_id in ids:
        detail = await gw.wait_status(exchange_id, "delivered")
        assert detail["reason_code"] is None  # the hold reason does not stay on a released exchange
    rows = await audit(gw, "release")
    assert sorted(r["target"] for r in rows) == sorted(ids)
    assert {r["actor"] for r in rows} == {"operator:alice"}
    assert all(json.loads(r["detail"])["reason"] == "identities checked at the desk" for r in rows)
    ok, _, _ = verify_audit(await gw.service.journal.audit_entries())
    assert ok


async def test_bulk_release_by_ids_reports_what_it_could_not_do(gw: TestGateway) -> None:
    ids = await held(gw, 2)
    status, out = await gw.post("/v1/bulk/release", json={"reason": "checked", "ids": [ids[0], "nope"]})
    assert status == 200 and out["released"] == [ids[0]]
    assert out["refused"] == [{"id": "nope", "reason": "no exchange nope"}]
    assert (await gw.latest(control_id="H1"))["status"] == "held"  # not named, not touched


async def test_bulk_actions_need_an_operator_and_a_precise_body(gw: TestGateway) -> None:
    await held(gw, 1)
    assert (await gw.post("/v1/bulk/release", token=VIEW, json={"reason": "x", "all_held": True}))[0] == 403
    for body, param in (({"all_held": True}, "reason"), ({"reason": "x"}, "ids"),
                        ({"reason": "x", "all_held": True, "ids": ["a"]}, "ids"), ({"reason": "x", "ids": []}, "ids")):
        status, problem = await gw.post("/v1/bulk/release", json=body)
        assert status == 400 and problem["invalid_param"] == param, (body, problem)
    status, problem = await gw.post("/v1/bulk/retry", data=b"not json")
    assert status == 400 and "JSON object" in problem["detail"]
    assert (await gw.latest(control_id="H0"))["status"] == "held"


async def test_bulk_retry_of_dead_deliveries(gw: TestGateway) -> None:
    [exchange_id] = await held(gw, 1)
    assert (await gw.post(f"/v1/exchanges/{exchange_id}/release", json={"reason": "checked"}))[0] == 200
    ex = await gw.latest(control_id="H0")
    detail = await gw.wait_status(ex["id"], "delivered")
    delivery = detail["deliveries"][0]["id"]

    # as the dispatcher leaves a delivery it gave up on (no journal operation makes a delivered one dead):
    # on the journal file, beside the running gateway, as a second SQLite writer would
    at = "2026-01-01T00:00:00.000000+00:00"
    with closing(sqlite3.connect(journal_path(gw), timeout=30)) as conn, conn:
        conn.execute("UPDATE deliveries SET status = 'dead', last_error = 'HTTP_503', updated_at = ? WHERE id = ?",
                     (at, delivery))
        conn.execute("UPDATE exchanges SET status = 'dead', updated_at = ? WHERE id = ?", (at, ex["id"]))
    status, out = await gw.post("/v1/bulk/retry", json={"reason": "the DMP is back", "all_dead": True,
                                                        "destination": "other"})
    assert status == 200 and out == {"retried": [], "refused": []}
    status, out = await gw.post("/v1/bulk/retry", json={"reason": "the DMP is back", "all_dead": True})
    assert status == 200 and out["retried"] == [delivery]
    await gw.wait_status(ex["id"], "delivered")
    rows = await audit(gw, "retry")
    assert [(r["target"], json.loads(r["detail"])) for r in rows] == [
        (ex["id"], {"delivery": delivery, "reason": "the DMP is back"})]


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_cli_release_all_held_and_retry_all_dead(gw: TestGateway, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(gw.service.settings.data_dir)
    ids = await held(gw, 2)
    code, out, _ = await cli(capsys, "release", "--all-held", "--hold-code", "SOMETHING_ELSE", "--operator", "bob",
                             "--reason", "r", "--data-dir", data)
    assert code == 0 and out.strip() == "nothing held for SOMETHING_ELSE"
    code, out, _ = await cli(capsys, "release", "--all-held", "--operator", "bob", "--reason", "checked",
                             "--data-dir", data)
    assert code == 0 and sorted(line.split()[1].rstrip(":") for line in out.splitlines()) == sorted(ids)
    assert {r["actor"] for r in await audit(gw, "release")} == {"cli:bob"}

    code, _, err = await cli(capsys, "release", ids[0], "--all-held", "--operator", "b", "--reason", "r",
                             "--data-dir", data)
    assert code == 64 and "not both" in err
    code, out, _ = await cli(capsys, "release", ids[0], "--operator", "b", "--reason", "r", "--data-dir", data)
    assert code == 1 and "not released" in out and "not held" in out

    code, out, _ = await cli(capsys, "retry", "--all-dead", "--operator", "bob", "--reason", "r", "--data-dir", data)
    assert code == 0 and out.strip() == "no dead deliveries"
    code, out, _ = await cli(capsys, "retry", "nope", "--operator", "bob", "--reason", "r", "--data-dir", data)
    assert code == 1 and out.strip() == "not retried nope: no delivery nope"
