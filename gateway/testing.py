"""Test helpers: a whole gateway on 127.0.0.1:0 with an HTTP session and an MLLP client.

Shipped with the package (like ``adapters/dmp/testing.py``) so the API, dashboard, metrics
and CLI tests drive the real ``Service`` the same way, without mocks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from adapters.mllp_client import MllpClient
from gateway.service import Service
from gateway.settings import Settings, load_settings

__all__ = ["TestGateway", "settings_for", "with_control_id", "start_gateway", "stop_gateway"]


def settings_for(data_dir: Path, tokens: str | None, **sections: dict[str, Any]) -> Settings:
    """Settings for a test service: loopback, ephemeral ports, a fast dispatcher, ``tokens`` from env."""
    overrides: dict[str, dict[str, Any]] = {
        "gateway": {"data_dir": str(data_dir)},
        "mllp": {"host": "127.0.0.1", "port": 0},
        "http": {"host": "127.0.0.1", "port": 0},
        "dispatcher": {"poll_interval": 0.05, "backoff_base": 0.05, "attempt_timeout": 5},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_settings(env={"RELAIS_API_TOKENS": tokens} if tokens else {}, overrides=overrides)


def with_control_id(raw: bytes, control_id: str) -> bytes:
    """The same HL7 v2 message with another MSH-10 (the journal de-duplicates on it)."""
    msh, sep, rest = raw.partition(b"\r")
    fields = msh.split(b"|")
    fields[9] = control_id.encode()
    return b"|".join(fields) + sep + rest


@dataclass
class TestGateway:
    """A started service with an aiohttp session on its HTTP address and an MLLP client."""

    __test__ = False  # not a pytest test class

    service: Service
    http: aiohttp.ClientSession
    mllp: MllpClient
    token: str = ""  # default bearer token of get/post

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, token: str | None = None, **kw: Any) -> tuple[int, Any]:
        async with self.http.get(path, headers=self.auth(token or self.token), **kw) as r:
            return r.status, await r.json(content_type=None)

    async def post(self, path: str, token: str | None = None, **kw: Any) -> tuple[int, Any]:
        async with self.http.post(path, headers=self.auth(token or self.token), **kw) as r:
            return r.status, await r.json(content_type=None)

    async def latest(self, **query: str) -> dict[str, Any]:
        _, page = await self.get("/v1/exchanges", params={"limit": "1", **query})
        return dict(page["items"][0])

    async def wait_status(self, exchange_id: str, status: str, within: float = 5.0) -> dict[str, Any]:
        """Poll the API until the exchange reaches ``status``; AssertionError after ``within`` seconds."""
        detail: dict[str, Any] = {}
        try:
            async with asyncio.timeout(within):
                while True:
                    _, detail = await self.get(f"/v1/exchanges/{exchange_id}")
                    if detail["status"] == status:
                        return dict(detail)
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"exchange stayed {detail.get('status')}: {detail.get('events')}") from None


async def start_gateway(settings: Settings, token: str = "") -> TestGateway:
    service = Service(settings)
    addresses = await service.start()
    host, port = addresses["mllp"].split("//")[1].rsplit(":", 1)
    # unsafe=True: accept cookies from an IP address host (127.0.0.1)
    http = aiohttp.ClientSession(base_url=addresses["http"], cookie_jar=aiohttp.CookieJar(unsafe=True))
    return TestGateway(service, http, MllpClient(host, int(port), timeout=10), token)


async def stop_gateway(gw: TestGateway) -> None:
    await gw.mllp.close()
    await gw.http.close()
    await gw.service.stop()
