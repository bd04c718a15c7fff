"""Access rules hardened by the reliability campaign (issue 10, break 6), over real sockets."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.testing import start_gateway, stop_gateway
from gateway.web.auth import LoginThrottle
from gateway.web.dashboard import safe_next
from tests.integration.test_api import OP, TOKENS, Gateway, login, settings_for
from tests.integration.test_mllp_listener import _self_signed


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    g = await start_gateway(settings_for(tmp_path), token=OP)
    yield Gateway(g.service, g.http, g.mllp, g.token)
    await stop_gateway(g)


async def test_30_wrong_logins_in_a_row_are_answered_429(gw: Gateway) -> None:
    statuses = [(await login(gw, f"wrong-token-{n:04d}")).status for n in range(30)]
    assert statuses[:10] == [401] * 10
    assert set(statuses[10:]) == {429}
    r = await login(gw, OP)  # the right token too, or guessing would still pay
    assert r.status == 429 and int(r.headers["Retry-After"]) > 0


async def test_login_form_needs_its_csrf_token(gw: Gateway) -> None:
    async with gw.http.post("/login", data={"token": OP, "next": "/"}, allow_redirects=False) as r:
        assert r.status == 403
        assert "relais_session" not in r.headers.get("Set-Cookie", "")
    assert (await login(gw, OP)).status == 303


@pytest.mark.parametrize(
    "target",
    ["/\\evil.example/", "/%09/evil.example", "/%5Cevil.example", "/%2F/evil.example", "/\t/evil.example",
     "//evil.example", "https://evil.example/", "/%252F/evil.example", " /evil", "/ /evil.example"],
)
async def test_login_never_redirects_off_site(gw: Gateway, target: str) -> None:
    assert safe_next(target) == "/"
    r = await login(gw, OP, nxt=target)
    assert r.status == 303 and r.headers["Location"] == "/"


def test_safe_next_keeps_local_paths() -> None:
    for path in ("/exchanges?status=held&q=S1", "/exchanges/0a1b", "/identities?held=1", "/"):
        assert safe_next(path) == path


def test_login_throttle_per_client_and_overall() -> None:
    now = [0.0]
    throttle = LoginThrottle(per_client=3, overall=5, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("a") is None
        throttle.failed("a")
    assert throttle.retry_after("a") == 60 and throttle.retry_after("b") is None
    throttle.failed("b")
    throttle.failed("c")  # five failures overall: everyone waits
    assert throttle.retry_after("d") is not None
    now[0] = 61.0
    assert throttle.retry_after("a") is None and throttle.retry_after("d") is None
    throttle.failed("a")
    throttle.succeeded("a")
    assert throttle.retry_after("a") is None


async def test_like_wildcards_in_q_match_nothing_but_themselves(gw: Gateway) -> None:
    for cid in ("Q1", "Q2"):
        await gw.send("adt_a01_vali.hl7", cid)
    for q in ("%", "_", "%%", "\\"):
        status, page = await gw.get("/v1/exchanges", params={"q": q})
        assert status == 200 and page["items"] == [], q
    first = (await gw.latest())["id"]
    status, page = await gw.get("/v1/exchanges", params={"q": first[:8]})
    assert [e["id"] for e in page["items"]] == [first]  # a real id prefix still works


async def test_https_listener_with_optional_client_certificate_and_secure_cookie(tmp_path: Path) -> None:
    ca_path, _, ca_cert, ca_key = _self_signed(tmp_path, "Test CA")
    srv_cert, srv_key, _, _ = _self_signed(tmp_path, "localhost", (ca_cert, ca_key))
    cli_cert, cli_key, _, _ = _self_signed(tmp_path, "operator-desk", (ca_cert, ca_key))
    http = {"tls_cert": str(srv_cert), "tls_key": str(srv_key), "tls_ca": str(ca_path)}
    settings = settings_for(tmp_path, TOKENS, http=http)
    g = await start_gateway(settings, token=OP)
    try:
        base = g.service.addresses["http"]
        assert base.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(ca_path))
        ctx.check_hostname = False
        for with_cert in (False, True):  # a client certificate is optional, verified when given
            if with_cert:
                ctx.load_cert_chain(str(cli_cert), str(cli_key))
            async with aiohttp.ClientSession(
                base_url=base, connector=aiohttp.TCPConnector(ssl=ctx), cookie_jar=aiohttp.CookieJar(unsafe=True)
            ) as session:
                gw = Gateway(g.service, session, g.mllp, OP)
                r = await login(gw, OP)
                assert r.status == 303
                assert "Secure" in r.headers["Set-Cookie"]
                if with_cert:  # who sent it is journaled with the exchange
                    from tests.integration.test_api import fixture_message

                    msg = fixture_message("adt_a01_vali.hl7", "TLS1")
                    async with session.post("/v1/hl7v2", data=msg, headers=gw.auth(OP)) as resp:
                        assert resp.status == 200
                    row_id = (await gw.latest())["id"]
                    events = await g.service.journal.events(row_id)
                    received = next(e for e in events if e.stage == "received")
                    assert received.detail["tls_subject"] == "commonName=operator-desk"
        async with aiohttp.ClientSession() as plain:  # no TLS, no answer
            with pytest.raises(aiohttp.ClientError):
                await plain.get(base.replace("https://", "http://") + "/healthz")
    finally:
        await stop_gateway(g)


async def test_ingest_bodies_beyond_the_buffer_budget_get_503(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, TOKENS, http={"max_buffered_bytes": 1024 * 1024})
    g = await start_gateway(settings, token=OP)
    try:
        gw = Gateway(g.service, g.http, g.mllp, OP)
        async with g.http.post("/v1/documents", data=b"<x/>" * 600_000, headers=gw.auth(OP)) as r:
            assert r.status == 503 and int(r.headers["Retry-After"]) > 0
        form = aiohttp.FormData()
        form.add_field("document", b"<x/>" * 600_000, filename="cda.xml", content_type="application/xml")
        async with g.http.post("/v1/documents", data=form, headers=gw.auth(OP)) as r:
            assert r.status == 503  # multipart parts are read whole: reserved up front
        async with g.http.post("/v1/documents", data=b"<x/>", headers=gw.auth(OP)) as r:
            assert r.status in (400, 422)  # read and analysed: the budget was given back
    finally:
        await stop_gateway(g)


async def test_http_connections_beyond_the_cap_get_503_and_the_others_keep_working(tmp_path: Path) -> None:
    import asyncio

    settings = settings_for(tmp_path, TOKENS, http={"max_connections": 2})
    g = await start_gateway(settings, token=OP)
    try:
        host, port = g.service.addresses["http"].removeprefix("http://").rsplit(":", 1)
        held = [await asyncio.open_connection(host, int(port)) for _ in range(2)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection(host, int(port))
        answer = await asyncio.wait_for(reader.read(), 5)  # 503, then closed
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 5" in answer and b"too many" in answer
        writer.close()
        r, w = held[0]
        w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(r.read(), 5)).startswith(b"HTTP/1.1 200")  # a held one is served
        for _, w in held:
            w.close()
        await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as session, session.get(f"{g.service.addresses['http']}/healthz") as resp:
            assert resp.status == 200  # slots are free again
    finally:
        await stop_gateway(g)
