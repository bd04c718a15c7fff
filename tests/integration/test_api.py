"""Operations API and dashboard over real sockets: a whole ``Service`` on 127.0.0.1:0.

Every route with both roles, the no-token start-up rules, the dashboard's session and
CSRF rules (the browser scenario lives in ``test_dashboard_browser.py``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import testing
from gateway.operations.audit import iso
from gateway.service import Service
from gateway.testing import TestGateway, stop_gateway, with_control_id
from gateway.web.auth import Authenticator, Principal, is_loopback, parse_tokens, prepare_tokens
from gateway.web.openapi import openapi_document

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
OP = "op-token-0123456789"
VIEW = "view-token-0123456789"
SEND = "send-token-0123456789"
TOKENS = f"operator:alice:{OP},viewer:{VIEW},sender:ris:{SEND}"
INS = "279035121518989"


def settings_for(tmp_path: Path, tokens: str | None = TOKENS, **sections: dict[str, Any]) -> Any:
    return testing.settings_for(tmp_path / "data", tokens, **sections)


def fixture_message(name: str, control_id: str | None = None) -> bytes:
    raw = (FIXTURES / name).read_bytes()
    return raw if control_id is None else with_control_id(raw, control_id)


class Gateway(TestGateway):
    __test__ = False

    async def send(self, name: str, control_id: str | None = None) -> bytes:
        return await self.mllp.send(fixture_message(name, control_id))


async def start_gateway(settings: Any) -> Gateway:
    g = await testing.start_gateway(settings, token=OP)
    return Gateway(g.service, g.http, g.mllp, g.token)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    g = await start_gateway(settings_for(tmp_path))
    yield g
    await stop_gateway(g)


# -- authentication ---------------------------------------------------------------------------
async def test_v1_routes_need_a_valid_bearer_token(gw: Gateway) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-123"}, {"Authorization": f"Basic {OP}"}):
        async with gw.http.get("/v1/exchanges", headers=headers) as r:
            assert r.status == 401
            assert r.content_type == "application/problem+json"
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            body = await r.json(content_type=None)
            assert body["status"] == 401 and body["title"] == "Unauthorized"
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        async with gw.http.get(path) as r:
            assert r.status == 200, path


async def test_ingest_needs_the_sender_or_operator_role(gw: Gateway) -> None:
    msg = fixture_message("adt_a01_vali.hl7", "ING1")
    async with gw.http.post("/v1/hl7v2", data=msg) as r:
        assert r.status == 401
    for path, data in (("/v1/hl7v2", msg), ("/v1/documents", b"<x/>")):
        async with gw.http.post(path, data=data, headers=gw.auth(VIEW)) as r:
            assert r.status == 403, path  # a viewer reads; it does not submit
            assert "sender" in (await r.json(content_type=None))["detail"]
    async with gw.http.post("/v1/hl7v2", data=msg, headers=gw.auth(SEND)) as r:
        assert r.status == 200
        assert b"MSA|AA|ING1" in await r.read()
    async with gw.http.post("/v1/hl7v2", data=fixture_message("adt_a01_vali.hl7", "ING2"),
                            headers=gw.auth(OP)) as r:
        assert r.status == 200
    async with gw.http.post("/v1/documents", data=b"<x/>") as r:
        assert r.status == 401


async def test_sender_may_only_submit(gw: Gateway) -> None:
    status, body = await gw.get("/v1/exchanges", token=SEND)
    assert status == 403 and "only submit" in body["detail"]
    status, _ = await gw.get("/v1/identities", token=SEND)
    assert status == 403
    r = await login(gw, SEND)
    assert r.status == 403  # and no dashboard session
    assert "relais_session" not in r.headers.get("Set-Cookie", "")


async def test_an_inbound_ack_over_http_gets_no_acknowledgement(gw: Gateway) -> None:
    msg = (FIXTURES / "ack_inbound.hl7").read_bytes()
    async with gw.http.post("/v1/hl7v2", data=msg, headers=gw.auth(SEND)) as r:
        assert r.status == 204 and await r.read() == b""  # HL7 v2.5 ch. 2: an ACK is not acknowledged
    ex = await gw.latest()
    assert ex["status"] == "recorded" and ex["message_type"] == "ACK^Z01"


async def test_viewer_cannot_mutate(gw: Gateway) -> None:
    await gw.send("mdm_t02_initial.hl7", "V1")
    ex = await gw.latest()
    for path, kw in (
        (f"/v1/exchanges/{ex['id']}/replay", {}),
        (f"/v1/exchanges/{ex['id']}/release", {"json": {"reason": "checked"}}),
        ("/v1/deliveries/whatever/retry", {}),
    ):
        status, body = await gw.post(path, token=VIEW, **kw)
        assert status == 403, path
        assert "operator" in body["detail"]


# -- reads ----------------------------------------------------------------------------------
async def test_list_filters_and_pagination(gw: Gateway) -> None:
    for cid in ("L1", "L2", "L3"):
        await gw.send("mdm_t02_initial.hl7", cid)
    await gw.send("adt_a01_vali.hl7", "L4")

    status, page = await gw.get("/v1/exchanges", params={"limit": "2"})
    assert status == 200 and [e["control_id"] for e in page["items"]] == ["L4", "L3"]
    assert page["next"] and "cursor=" in page["next"]  # keyset: a page stays right while rows arrive
    assert page["total"] == 4 and page["total_capped"] is False
    _, page2 = await gw.get(page["next"])
    assert [e["control_id"] for e in page2["items"]] == ["L2", "L1"] and page2["next"] is None

    _, held = await gw.get("/v1/exchanges", params={"status": "held"})
    assert {e["control_id"] for e in held["items"]} == {"L1", "L2", "L3"}
    _, adt = await gw.get("/v1/exchanges", params={"type": "ADT^A01"})
    assert [e["control_id"] for e in adt["items"]] == ["L4"]
    _, by_cid = await gw.get("/v1/exchanges", params={"control_id": "L2"})
    _, by_q = await gw.get("/v1/exchanges", params={"q": "L2"})
    assert by_cid["items"] == by_q["items"] and len(by_q["items"]) == 1
    _, by_prefix = await gw.get("/v1/exchanges", params={"q": by_q["items"][0]["id"][:8]})
    assert by_prefix["items"][0]["control_id"] == "L2"
    _, by_sender = await gw.get("/v1/exchanges", params={"sender": "DPI-RELAIS"})
    assert len(by_sender["items"]) == 3
    _, future = await gw.get("/v1/exchanges", params={"since": "2999-01-01T00:00:00Z"})
    assert future["items"] == []
    _, past = await gw.get("/v1/exchanges", params={"until": "2000-01-01T00:00:00+01:00"})
    assert past["items"] == []
    _, window = await gw.get("/v1/exchanges", params={"since": "2000-01-01", "until": "2999-01-01"})
    assert len(window["items"]) == 4

    for bad in ({"status": "lost"}, {"since": "yesterday"}, {"limit": "0"}, {"limit": "x"}, {"offset": "-1"}):
        status, problem = await gw.get("/v1/exchanges", params=bad)
        assert status == 400 and problem["status"] == 400, bad


async def test_detail_is_whole_for_operators_and_redacted_for_viewers(gw: Gateway) -> None:
    sent = fixture_message("mdm_t02_initial.hl7", "D1")
    await gw.mllp.send(sent)
    ex = await gw.latest()

    status, full = await gw.get(f"/v1/exchanges/{ex['id']}")
    assert status == 200
    assert base64.b64decode(full["raw_base64"]) == sent
    assert full["patient_ins"] == INS and full["patient_ipp"]
    assert [e["stage"] for e in full["events"]][:2] == ["received", "parsed"]
    assert full["findings"] == {"errors": [], "warnings": []}
    assert full["fhir"]["resourceType"] == "Bundle" and full["xds"]["documentEntry"]["uniqueId"]
    assert full["deliveries"] and full["documents"]
    assert INS in json.dumps(full["fhir"])

    status, seen = await gw.get(f"/v1/exchanges/{ex['id'][:13]}", token=VIEW)  # a unique prefix works too
    assert status == 200 and seen["id"] == ex["id"]
    for key in ("raw_base64", "patient_ins", "patient_ipp"):
        assert key not in seen
    text = json.dumps(seen, ensure_ascii=False)
    assert INS not in text and "PAT-TROIS" not in text and "P000123" not in text
    assert seen["xds"]["documentEntry"]["patientId"] == "[redacted]"
    patients = [e["resource"] for e in seen["fhir"]["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert all(p.get("_redacted") for p in patients)
    assert seen["events"] == full["events"]

    status, problem = await gw.get("/v1/exchanges/no-such-exchange")
    assert status == 404 and problem["title"] == "Not Found"


async def test_identities_roles_and_held_filter(gw: Gateway) -> None:
    await gw.send("adt_a28_prov.hl7", "I1")  # another patient, nothing held
    await gw.send("mdm_t02_initial.hl7", "I2")  # held (test INS OID refused)

    status, all_rows = await gw.get("/v1/identities")
    assert status == 200 and len(all_rows["items"]) == 2
    _, held = await gw.get("/v1/identities", params={"held": "true"})
    assert len(held["items"]) == 1
    row = held["items"][0]
    assert row["ins"] == INS and row["traits"]["birth_family"] == "PAT-TROIS"
    assert row["held_exchanges"][0]["reason_code"] == "INS_OID_TEST"

    _, seen = await gw.get("/v1/identities", params={"held": "1"}, token=VIEW)
    vrow = seen["items"][0]
    assert vrow["ref"] == row["ref"] and vrow["held_exchanges"] == row["held_exchanges"]
    assert "ins" not in vrow and "traits" not in vrow and "ipp_key" not in vrow
    assert INS not in json.dumps(seen) and "PAT-TROIS" not in json.dumps(seen)


# -- actions ------------------------------------------------------------------------------------
async def audit(gw: Gateway) -> list[dict[str, Any]]:
    return [r.as_dict() for r in await gw.service.journal.audit_entries()]


async def test_release_a_held_exchange_then_it_is_delivered(gw: Gateway) -> None:
    await gw.send("mdm_t02_initial.hl7", "R1")
    ex = await gw.latest()
    assert ex["status"] == "held"

    status, problem = await gw.post(f"/v1/exchanges/{ex['id']}/release", json={})
    assert status == 400 and "reason" in problem["detail"]
    status, problem = await gw.post(f"/v1/exchanges/{ex['id']}/release", data=b"not json")
    assert status == 400
    status, out = await gw.post(f"/v1/exchanges/{ex['id']}/release", json={"reason": "ID card checked"})
    assert status == 200 and out == {"id": ex["id"], "status": "queued"}

    detail = await gw.wait_status(ex["id"], "delivered")
    attempt = detail["deliveries"][0]["attempts_detail"][0]
    assert attempt["outcome"] in ("delivered", "found-existing") and "request" in attempt
    stages = [e["stage"] for e in detail["events"]]
    assert stages.index("held") < stages.index("released") < stages.index("delivered")
    _, seen = await gw.get(f"/v1/exchanges/{ex['id']}", token=VIEW)
    assert "request" not in seen["deliveries"][0]["attempts_detail"][0]

    rows = [r for r in await audit(gw) if r["action"] == "release"]
    assert len(rows) == 1 and rows[0]["actor"] == "operator:alice" and rows[0]["target"] == ex["id"]
    assert json.loads(rows[0]["detail"])["reason"] == "ID card checked"

    status, problem = await gw.post(f"/v1/exchanges/{ex['id']}/release", json={"reason": "again"})
    assert status == 409 and "not held" in problem["detail"]
    status, _ = await gw.post("/v1/exchanges/nope/release", json={"reason": "x"})
    assert status == 404


async def test_replay_creates_a_new_exchange_and_an_audit_row(gw: Gateway) -> None:
    await gw.send("mdm_t02_initial.hl7", "P1")
    ex = await gw.latest()
    status, out = await gw.post(f"/v1/exchanges/{ex['id']}/replay")
    assert status == 201 and out["replay_of"] == ex["id"] and out["exchange_id"] != ex["id"]
    assert out["links"]["exchange"] == f"/v1/exchanges/{out['exchange_id']}"
    _, new = await gw.get(out["links"]["exchange"])
    assert new["control_id"] == "P1" and new["listener"] == "replay"
    assert any(e["stage"] == "replay-of" and e["detail"]["exchange"] == ex["id"] for e in new["events"])
    _, old = await gw.get(f"/v1/exchanges/{ex['id']}")
    assert any(e["stage"] == "replayed" for e in old["events"])
    rows = [r for r in await audit(gw) if r["action"] == "replay"]
    assert rows and rows[-1]["actor"] == "operator:alice" and rows[-1]["target"] == ex["id"]
    status, _ = await gw.post("/v1/exchanges/nope/replay")
    assert status == 404


async def test_retry_a_dead_delivery(gw: Gateway) -> None:
    await gw.send("mdm_t02_initial.hl7", "T1")
    ex = await gw.latest()
    _, detail = await gw.get(f"/v1/exchanges/{ex['id']}")
    delivery = detail["deliveries"][0]
    status, problem = await gw.post(f"/v1/deliveries/{delivery['id']}/retry")
    assert status == 409 and "waiting" in problem["detail"]

    # dead as a hold past its bound leaves it: the exchange and its waiting delivery give up
    at = iso(gw.service.clock.now())
    assert await gw.service.journal.expire_hold(ex["id"], reason="TEST: refused", code=None, at=at, zam=None)
    _, dead = await gw.get(f"/v1/exchanges/{ex['id']}")
    assert dead["status"] == "dead" and dead["deliveries"][0]["status"] == "dead"
    status, out = await gw.post(f"/v1/deliveries/{delivery['id']}/retry")
    assert status == 200 and out["id"] == delivery["id"]
    await gw.wait_status(ex["id"], "delivered")
    rows = [r for r in await audit(gw) if r["action"] == "retry"]
    assert rows and rows[0]["actor"] == "operator:alice"
    status, _ = await gw.post("/v1/deliveries/nope/retry")
    assert status == 404


async def test_openapi_describes_every_route(gw: Gateway) -> None:
    async with gw.http.get("/openapi.json") as r:
        doc = await r.json()
    assert doc["openapi"].startswith("3.") and doc == openapi_document()
    app = gw.service.http_app
    assert app is not None
    dashboard = {"/", "/login", "/logout", "/exchanges", "/exchanges/{id}", "/identities",
                 "/exchanges/{id}/replay", "/exchanges/{id}/release", "/deliveries/{id}/retry", "/bulk/{action}"}
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method == "HEAD" or path in dashboard or path.startswith("/static"):
            continue
        assert route.method.lower() in doc["paths"].get(path, {}), f"{route.method} {path} not in OpenAPI"


# -- start-up without a configured token -------------------------------------------------------
async def test_first_start_without_token_creates_a_private_operator_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = await start_gateway(settings_for(tmp_path, tokens=None))
    try:
        path = tmp_path / "data" / "api-token"
        token = path.read_text().strip()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert capsys.readouterr().err.count(token) == 1  # printed once, on stderr
        status, _ = await gw.get("/v1/exchanges", token=token)
        assert status == 200
    finally:
        await stop_gateway(gw)
    again = prepare_tokens(settings_for(tmp_path, tokens=None))
    assert again.endswith(token) and token not in capsys.readouterr().err


async def test_without_token_a_public_bind_is_refused(tmp_path: Path) -> None:
    service = Service(settings_for(tmp_path, tokens=None, http={"host": "0.0.0.0"}))
    with pytest.raises(RuntimeError, match="refusing to start.*RELAIS_API_TOKENS"):
        await service.start()
    assert service.journal is None  # refused before anything started
    assert not (tmp_path / "data" / "api-token").exists()


def test_token_parsing_and_lookup() -> None:
    parsed = parse_tokens(f" operator:{OP} , viewer:bob:{VIEW},operator:{OP}x")
    assert [(t, p.actor) for t, p in parsed] == [
        (OP, "operator:operator1"), (VIEW, "viewer:bob"), (OP + "x", "operator:operator2")
    ]
    for bad in ("admin:abcdefghij", "operator", "viewer:short", "operator:a:b:cdefghijkl"):
        with pytest.raises(ValueError):
            parse_tokens(bad)
    auth = Authenticator(TOKENS)
    assert auth.from_header(f"Bearer {OP}") == Principal("operator", "alice")
    assert auth.from_header(f"bearer {VIEW}") == Principal("viewer", "viewer1")
    assert auth.from_header(f"Bearer {OP}x") is None and auth.from_header(None) is None
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("gw.example")


def test_sessions_expire() -> None:
    now = [0.0]
    auth = Authenticator(TOKENS, clock=lambda: now[0])
    sid = auth.open_session(Principal("viewer", "v"))
    session = auth.session(sid)
    assert session is not None and Authenticator.csrf_ok(session, session.csrf)
    assert not Authenticator.csrf_ok(session, "forged") and not Authenticator.csrf_ok(session, None)
    now[0] = 13 * 3600
    assert auth.session(sid) is None


# -- dashboard over plain HTTP (rules; the browser scenario is in test_dashboard_browser.py) ----
async def login(gw: Gateway, token: str, nxt: str = "/exchanges") -> aiohttp.ClientResponse:
    async with gw.http.get("/login") as page:
        csrf = login_csrf_of(await page.text())
    data = {"token": token, "next": nxt, "csrf": csrf}
    async with gw.http.post("/login", data=data, allow_redirects=False) as r:
        return r


def login_csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]*)"', html)
    assert m
    return m.group(1)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m
    return m.group(1)


async def test_dashboard_login_session_cookie_and_csrf(gw: Gateway) -> None:
    async with gw.http.get("/exchanges?status=held", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"].startswith("/login?next=")
    async with gw.http.get("/static/style.css") as r:
        assert r.status == 200
    r = await login(gw, "not-a-token")
    assert r.status == 401
    r = await login(gw, OP)
    assert r.status == 303 and r.headers["Location"] == "/exchanges"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert OP not in cookie

    await gw.send("mdm_t02_initial.hl7", "S1")
    ex = await gw.latest()
    async with gw.http.get(f"/exchanges/{ex['id']}") as r:
        html = await r.text()
        assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    assert 'id="replay"' in html and 'id="release"' in html and INS in html
    async with gw.http.post(f"/exchanges/{ex['id']}/replay", data={"csrf": "forged"}, allow_redirects=False) as r:
        assert r.status == 403
    async with gw.http.post(f"/exchanges/{ex['id']}/release", data={"csrf": csrf_of(html), "reason": "checked"},
                            allow_redirects=False) as r:
        assert r.status == 303
    async with gw.http.get(r.headers["Location"]) as page:
        assert "Released" in await page.text()
    assert (await gw.latest(control_id="S1"))["status"] in ("queued", "delivered")
    for path in ("/", "/exchanges?q=S1&refresh=15", "/identities", "/identities?held=1", "/exchanges/nope"):
        async with gw.http.get(path) as r:
            assert r.status in (200, 404) and "Relais" in await r.text(), path

    async with gw.http.post("/logout", data={"csrf": csrf_of(html)}, allow_redirects=False) as r:
        assert r.status == 303
    async with gw.http.get("/", allow_redirects=False) as r:
        assert r.status == 303


async def test_dashboard_viewer_sees_no_actions_nor_identifiers(gw: Gateway) -> None:
    await gw.send("mdm_t02_initial.hl7", "W1")
    ex = await gw.latest()
    r = await login(gw, VIEW)
    assert r.status == 303
    async with gw.http.get(f"/exchanges/{ex['id']}") as r:
        html = await r.text()
    assert "received" in html and 'id="replay"' not in html
    assert INS not in html and "PAT-TROIS" not in html
    async with gw.http.get("/identities") as r:
        html2 = await r.text()
    assert INS not in html2 and "PAT-TROIS" not in html2
    async with gw.http.post(f"/exchanges/{ex['id']}/replay", data={"csrf": csrf_of(html)},
                            allow_redirects=False) as r:
        assert r.status == 403
