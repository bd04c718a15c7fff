"""The webhook notifier: a failing destination and a readiness loss are POSTed as they fire and resolve."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from adapters.mllp_client import MllpClient
from tests import builders
from tests.support import as_cr, fixture_bytes, mllp_port, running

DMP_DOWN = """
[[destination]]
name = "dmp"
kind = "mhd"
url = "http://127.0.0.1:9/fhir"
"""


async def receiver(fail_first: int) -> tuple[web.AppRunner, str, list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []
    calls = {"n": 0}

    async def hook(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] <= fail_first:  # the webhook is down at first: the events must come later
            return web.Response(status=503)
        got.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/hook", got


async def until(got: list[dict[str, Any]], key: str, state: str) -> dict[str, Any]:
    for _ in range(300):
        for event in got:
            if event["key"] == key and event["state"] == state:
                return event
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {state} {key} in {[(e['key'], e['state']) for e in got]}")


async def test_conditions_are_posted_when_they_fire_and_resolve(tmp_path: Path) -> None:
    runner, url, got = await receiver(fail_first=2)
    settings = builders.settings(tmp_path, text=DMP_DOWN, notify={"webhook_url": url, "interval_seconds": 0.1})
    mdm = as_cr(fixture_bytes("mdm_t02_initial.hl7"))
    try:
        async with running(settings) as service:
            async with MllpClient("127.0.0.1", mllp_port(service), timeout=10) as client:
                await client.send(mdm)
            failing = await until(got, "destination_failing:dmp", "firing")
            assert failing["condition"] == "destination_failing" and failing["labels"]["destination"] == "dmp"
            service.ready = False  # e.g. the journal stopped committing
            await until(got, "not_ready", "firing")
            service.ready = True
            await until(got, "not_ready", "resolved")
    finally:
        await runner.cleanup()
    posted = json.dumps(got)
    assert "279035121518989" not in posted and "PAT-TROIS" not in posted  # no patient data leaves
    keys = [(e["key"], e["state"]) for e in got]
    assert keys.count(("destination_failing:dmp", "firing")) == 1  # a state change is sent once
