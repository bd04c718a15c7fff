"""[[route]] in serve and in `relais check --config`: documents go where the first matching route says."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from adapters.mllp_client import MllpClient
from gateway.cli import main
from tests import builders
from tests.support import as_cr, fixture_bytes, mllp_port, running

CONFIG = """
[[destination]]
name = "dmp"
kind = "file"
directory = "{root}/dmp"

[[destination]]
name = "archive"
kind = "file"
directory = "{root}/archive"

[[route]]
name = "dpi-mdm-to-archive"
sender_application = "DPI-RELAIS"
message_type = "MDM"
destinations = ["archive"]
"""


async def _destinations_of(service: object, exchange_id: str) -> list[str]:
    for _ in range(100):
        rows = await service.journal.deliveries_for(exchange_id)  # type: ignore[attr-defined]
        if rows:
            return sorted(str(d.destination) for d in rows if d.kind == "document")
        await asyncio.sleep(0.02)
    return []


async def test_the_first_matching_route_names_the_destinations(tmp_path: Path) -> None:
    settings = builders.settings(tmp_path, text=CONFIG.format(root=tmp_path))
    mdm = as_cr(fixture_bytes("mdm_t02_initial.hl7"))
    oru = as_cr(fixture_bytes("oru_doc_r01_initial.hl7"))
    async with running(settings) as service:
        async with MllpClient("127.0.0.1", mllp_port(service), timeout=10) as client:
            await client.send(mdm)
            await client.send(oru)
        exchanges = await service.journal.list_exchanges()
        routed = next(e for e in exchanges if str(e.message_type).startswith("MDM"))
        default = next(e for e in exchanges if str(e.message_type).startswith("ORU"))  # same sender, no route
        assert await _destinations_of(service, routed.id) == ["archive"]  # the route's only
        assert await _destinations_of(service, default.id) == ["archive", "dmp"]  # no route: every one
        events = [e.stage for e in await service.journal.events(routed.id)]
        assert "routed" in events and "routed" not in [e.stage for e in await service.journal.events(default.id)]


def test_check_with_the_config_shows_the_route_taken(tmp_path: Path, capsys: object) -> None:
    config = tmp_path / "relais.toml"
    config.write_text(CONFIG.format(root=tmp_path), encoding="utf-8")
    message = tmp_path / "mdm.hl7"
    message.write_bytes(as_cr(fixture_bytes("mdm_t02_initial.hl7")))
    main(["check", "--config", str(config), "--allow-test-ins", "--format", "json", str(message)])
    out = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    assert [(r["destination"], r["route"]) for r in out["routes"]] == [("archive", "dpi-mdm-to-archive")]
    main(["check", "--config", str(config), "--allow-test-ins", str(message)])
    text = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "route   archive (file) " in text and "via [[route]] 'dpi-mdm-to-archive'" in text
