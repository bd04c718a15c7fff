"""The overview tells what is wrong: a failing destination with its failure rate and oldest item's age,
the held and dead worklists with bulk actions (API ``/v1/destinations`` and the dashboard page)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from gateway.testing import TestGateway, with_control_id
from tests import builders

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
OP = "op-token-0123456789"
VIEW = "view-token-0123456789"

# the DMP is down: every attempt is refused at once, the delivery stays queued and retried
DMP_DOWN = """
[[destination]]
name = "dmp"
kind = "mhd"
url = "http://127.0.0.1:9/fhir"
"""


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[TestGateway]:
    from gateway import testing

    settings = builders.settings(tmp_path, text=DMP_DOWN, api={"tokens": f"operator:{OP},viewer:{VIEW}"})
    g = await testing.start_gateway(settings, token=OP)
    yield g
    await testing.stop_gateway(g)


async def failing_attempts(gw: TestGateway, at_least: int) -> None:
    for _ in range(200):
        n = gw.service.metrics.sample("relais_delivery_attempts_total", {"destination": "dmp", "outcome": "failed"})
        if (n or 0) >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the dispatcher made no attempt")


async def login(gw: TestGateway, token: str) -> None:
    async with gw.http.get("/login") as r:
        form = await r.text()
    data = {"token": token, "next": "/"}
    m = re.search(r'name="csrf" value="([^"]+)"', form)
    if m:  # the login form carries a CSRF token
        data["csrf"] = m.group(1)
    async with gw.http.post("/login", data=data, allow_redirects=False) as r:
        assert r.status == 303


async def test_a_failing_destination_is_flagged_with_its_rate_and_oldest_age(gw: TestGateway) -> None:
    await gw.mllp.send(with_control_id((FIXTURES / "mdm_t02_initial.hl7").read_bytes(), "F1"))
    await failing_attempts(gw, 1)
    status, body = await gw.get("/v1/destinations", token=VIEW)
    assert status == 200
    [dmp] = body["items"]
    assert dmp["name"] == "dmp" and dmp["kind"] == "mhd" and dmp["state"] == "failing"
    assert dmp["failure_rate_5m"] == 1.0 and dmp["attempts_5m"] >= 1 and dmp["failure_rate_60m"] == 1.0
    assert dmp["queue_depth"] == 1 and dmp["oldest_queued_seconds"] >= 0 and dmp["last_success"] is None

    await login(gw, VIEW)
    async with gw.http.get("/") as r:
        html = await r.text()
    row = re.search(r'<tr class="dest-failing" id="dest-dmp">(.*?)</tr>', html, re.S)
    assert row, html
    assert "failing" in row.group(1) and "100 % of" in row.group(1)
    assert 'id="bulk-release"' not in html  # a viewer gets no action


async def test_held_and_dead_worklists_with_bulk_actions_on_the_dashboard(gw: TestGateway) -> None:
    # held: a provisional identity is not qualified (the test INS OID is allowed by builders.settings)
    raw = (FIXTURES / "mdm_t02_initial.hl7").read_bytes().replace(b"|N|VALI", b"|N|PROV")
    for n in range(2):
        await gw.mllp.send(with_control_id(raw, f"H{n}"))
    await login(gw, OP)
    async with gw.http.get("/") as r:
        html = await r.text()
    assert "Held (2)" in html and html.count('href="/exchanges/') >= 2
    csrf = re.search(r'id="bulk-release">\s*<input type="hidden" name="csrf" value="([^"]+)"', html)
    assert csrf
    async with gw.http.post("/bulk/release", data={"csrf": csrf.group(1), "reason": "identities checked"},
                            allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/"
    async with gw.http.get("/") as r:
        html = await r.text()
    assert "Released 2; refused 0." in html and "Held (0)" in html
    audit = await gw.service.journal.audit_entries()
    assert sum(1 for a in audit if a.action == "release") == 2

    async with gw.http.post("/bulk/retry", data={"csrf": "forged", "reason": "x"}, allow_redirects=False) as r:
        assert r.status == 403

    # dead: as the dispatcher leaves a delivery it gave up on
    ex = await gw.latest(control_id="H0")
    [delivery] = await gw.service.journal.deliveries_for(ex["id"])
    # no journal operation gives up on a delivery outside an attempt: set it on the journal file,
    # beside the running gateway, as a second SQLite writer would
    with closing(sqlite3.connect(gw.service.settings.journal_url.removeprefix("sqlite:///"), timeout=30)) as conn, conn:
        conn.execute("UPDATE deliveries SET status = 'dead', last_error = ?, updated_at = ? WHERE id = ?",
                     ("HTTP_503: unavailable", "2026-01-01T00:00:00.000000+00:00", delivery.id))
    async with gw.http.get("/") as r:
        html = await r.text()
    assert "Dead deliveries (1)" in html and "HTTP_503: unavailable" in html
    csrf = re.search(r'id="bulk-retry">\s*<input type="hidden" name="csrf" value="([^"]+)"', html)
    assert csrf
    async with gw.http.post("/bulk/retry", data={"csrf": csrf.group(1), "reason": "the DMP is back"},
                            allow_redirects=False) as r:
        assert r.status == 303
    async with gw.http.get("/") as r:
        assert "Retrying 1; refused 0." in await r.text()


async def test_the_overview_charts_failed_attempts_per_minute(gw: TestGateway) -> None:
    await gw.mllp.send(with_control_id((FIXTURES / "mdm_t02_initial.hl7").read_bytes(), "C1"))
    await failing_attempts(gw, 2)
    await login(gw, VIEW)
    async with gw.http.get("/") as r:
        html = await r.text()
    chart = re.search(r'<figure class="chart outcomes">(.*?)</figure>', html, re.S)
    assert chart, html
    failed = [int(n) for n in re.findall(r"UTC: (\d+) failed</title>", chart.group(1))]
    delivered = [int(n) for n in re.findall(r"UTC: (\d+) delivered</title>", chart.group(1))]
    assert len(failed) == len(delivered) == 60  # one bar per minute of the last hour
    assert sum(failed) >= 2 and sum(delivered) == 0  # the DMP refused every attempt


async def test_a_delivered_exchange_whose_zam_fails_says_so(gw: TestGateway) -> None:
    from gateway.journal.rows import InboundRecord, NewDelivery, NewExchange

    at, later = "2026-01-01T10:00:00.000000+00:00", "2099-01-01T00:00:00.000000+00:00"
    ex = NewExchange(id="zamfail-0001", received_at=at, listener="mllp", sha256="ab", size=2, status="delivered",
                     control_id="ZF1", message_type="MDM^T02", sender_app="APP", sender_facility="FAC")
    zam = NewDelivery(id="zamfail-0001-z", exchange_id=ex.id, destination="zam:APP|FAC", kind="zam",
                      status="queued", next_attempt_at=later, created_at=at, unique_id="ZAM1")
    await gw.service.journal.record_inbound(InboundRecord(ex, deliveries=[zam]))
    with closing(sqlite3.connect(gw.service.settings.data_dir / "journal.db")) as conn, conn:
        # eight refused attempts, as the issue saw: nothing but the dispatcher's own retries makes this state
        conn.execute("UPDATE deliveries SET status = 'failed', attempts = 8, last_error = 'MLLP_NO_REPLY: x' "
                     "WHERE id = 'zamfail-0001-z'")
    await login(gw, VIEW)
    async with gw.http.get("/exchanges") as r:
        listing = await r.text()
    row = re.search(r"<tr>(?:(?!</tr>).)*zamfail-0001(?:(?!</tr>).)*</tr>", listing, re.S)
    assert row and "ZAM failed" in row.group(0), listing
    async with gw.http.get("/exchanges/zamfail-0001") as r:
        page = await r.text()
    assert re.search(r'id="zam-failing"[^>]*>ZAM failed after 8 attempts<', page), page
