"""The two ingest routes never take a document from an unauthenticated caller, in any configuration.

They used to rely on the web layer alone: the HTTP listener mounted it only when its import
succeeded, so a missing ``gateway.web.app`` served ``/v1/documents`` and ``/v1/hl7v2`` to
anyone. Now the routes check the authentication's mark themselves, the service mounts the
web layer unconditionally, and a missing web layer stops start-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.listeners.http import IngestLimits, build_app
from gateway.service import Service
from tests.integration.test_api import OP, SEND, TOKENS, VIEW, fixture_message, settings_for
from tests.integration.test_mllp_listener import _self_signed

ROOT = Path(__file__).resolve().parents[2]
CDA = (ROOT / "fixtures" / "cda" / "cr_bio_n3.xml").read_bytes()
INGEST = ("/v1/documents", "/v1/hl7v2")


class _RecordingIngest:
    """Counts what reaches the intake: an anonymous call must never get this far."""

    def __init__(self) -> None:
        self.calls = 0

    async def handle_document(self, data: bytes, flags: dict[str, bool], **_: Any) -> Any:
        self.calls += 1
        raise AssertionError("an unauthenticated document reached the intake")

    async def handle_hl7(self, raw: bytes, **_: Any) -> bytes:
        self.calls += 1
        raise AssertionError("an unauthenticated message reached the intake")


class _Probes:
    async def ready_report(self) -> tuple[bool, dict[str, Any]] | None:
        return True, {}

    async def metrics_text(self) -> bytes:
        return b""


def _body(path: str) -> bytes:
    return CDA if path == "/v1/documents" else fixture_message("adt_a01_vali.hl7", "ANON1")


@pytest.mark.parametrize("path", INGEST)
async def test_the_listener_app_alone_refuses_anonymous_ingest(path: str) -> None:
    ingest = _RecordingIngest()
    app = build_app(ingest, _Probes(), IngestLimits(1 << 20, 1 << 20, 8 << 20))
    async with TestClient(TestServer(app)) as client:
        for headers in ({}, {"Authorization": f"Bearer {OP}"}):  # no authentication mounted: no token is known
            resp = await client.post(path, data=_body(path), headers=headers)
            assert resp.status == 401
            assert resp.content_type == "application/problem+json"
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await client.get("/healthz")).status == 200  # the probes stay open
    assert ingest.calls == 0


def _tls_sections(tmp_path: Path) -> dict[str, Any]:
    ca_path, _, ca_cert, ca_key = _self_signed(tmp_path, "Test CA")
    srv_cert, srv_key, _, _ = _self_signed(tmp_path, "localhost", (ca_cert, ca_key))
    return {"http": {"tls_cert": str(srv_cert), "tls_key": str(srv_key), "tls_ca": str(ca_path)}}


CONFIGURATIONS = {
    "configured tokens": lambda tmp: settings_for(tmp, TOKENS),
    "no token (first-start operator token on loopback)": lambda tmp: settings_for(tmp, None),
    "MLLP listener off": lambda tmp: settings_for(tmp, TOKENS, mllp={"enabled": False}),
    "HTTPS": lambda tmp: settings_for(tmp, TOKENS, **_tls_sections(tmp)),
}


@pytest.mark.parametrize("config", sorted(CONFIGURATIONS))
async def test_a_running_gateway_refuses_anonymous_ingest(tmp_path: Path, config: str) -> None:
    settings = CONFIGURATIONS[config](tmp_path)
    service = Service(settings)
    addresses = await service.start()
    try:
        base = addresses["http"]
        connector = aiohttp.TCPConnector(ssl=False) if base.startswith("https://") else None
        async with aiohttp.ClientSession(base_url=base, connector=connector) as session:
            for path in INGEST:
                refusals = [({}, 401), ({"Authorization": "Bearer not-a-token"}, 401),
                            ({"Authorization": f"Basic {OP}"}, 401)]
                if "no token" not in config:
                    refusals.append(({"Authorization": f"Bearer {VIEW}"}, 403))
                for headers, status in refusals:
                    async with session.post(path, data=_body(path), headers=headers) as resp:
                        assert resp.status == status, (path, headers)
                        assert resp.content_type == "application/problem+json"
            if "no token" not in config:  # and a sender's token is let in
                async with session.post("/v1/hl7v2", data=_body("/v1/hl7v2"),
                                        headers={"Authorization": f"Bearer {SEND}"}) as resp:
                    assert resp.status == 200
        rows = await service.journal.list_exchanges(limit=10)
        assert len(rows) == (0 if "no token" in config else 1)  # nothing anonymous was even journaled
    finally:
        await service.stop()


_BLOCK_WEB = """
import sys
class _NoWeb:
    def find_spec(self, name, path=None, target=None):
        if name == "gateway.web.app":
            raise ModuleNotFoundError("No module named 'gateway.web.app'", name=name)
        return None
sys.meta_path.insert(0, _NoWeb())
from gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_missing_web_layer_stops_serve_at_start_up(tmp_path: Path) -> None:
    env = {**os.environ, "RELAIS_API_TOKENS": TOKENS}
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCK_WEB, "serve", "--data-dir", str(tmp_path), "--mllp-port", "0", "--http-port", "0"],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
    )
    assert proc.returncode != 0
    assert "relais ready" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "gateway.web.app" in lines[0], proc.stderr  # one line, naming what is missing
    assert not (tmp_path / "journal.db").exists()  # it stopped before opening anything
