"""MhdDestination deletion / archiving: the PDSM4DMP TD3.3c / TD3.3d JSON Patch, against a
FHIR server double on 127.0.0.1."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from adapters.mhd.client import MhdConfig, MhdDestination
from gateway.errors import DestinationRejected
from gateway.ports import Payload

UID = "1.2.250.1.999999.1.7.1"
TOKEN = f"urn:ietf:rfc:3986|urn:oid:{UID}"


class Server:
    def __init__(self) -> None:
        self.resource = {"resourceType": "DocumentReference", "id": "dr1", "status": "current"}
        self.patches: list[tuple[str, str, list]] = []  # type: ignore[type-arg]
        self.known = True

    async def patch(self, request: web.Request) -> web.Response:
        self.patches.append((request.query.get("identifier", ""), request.content_type, await request.json()))
        if not self.known or request.query.get("identifier") != TOKEN:
            return web.json_response({"resourceType": "OperationOutcome"}, status=404)
        for op in self.patches[-1][2]:
            if op["path"] == "/status":
                self.resource["status"] = op["value"]
        return web.json_response(self.resource)

    async def search(self, request: web.Request) -> web.Response:
        entries = [{"resource": self.resource}] if self.known and request.query.get("identifier") == TOKEN else []
        return web.json_response({"resourceType": "Bundle", "type": "searchset", "total": len(entries),
                                  "entry": entries})


@pytest.fixture
async def server():
    srv = Server()
    app = web.Application()
    app.router.add_patch("/fhir/DocumentReference", srv.patch)
    app.router.add_get("/fhir/DocumentReference", srv.search)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/fhir"  # type: ignore[attr-defined,union-attr]
    yield srv
    await runner.cleanup()


def deletion(action: str = "delete") -> Payload:
    xds = {"documentEntry": {"uniqueId": UID, "action": action}, "submissionSet": {}}
    return Payload(exchange_id="ex-1", delivery_id="dl-1", xds=xds)  # type: ignore[arg-type]


async def test_deletion_is_a_json_patch_of_the_status(server) -> None:
    dest = MhdDestination("mhd", MhdConfig(base_url=server.url))
    try:
        assert not await dest.already_delivered(deletion())
        await dest.send(deletion())
        assert await dest.already_delivered(deletion())
    finally:
        await dest.close()
    ((identifier, content_type, body),) = server.patches
    assert identifier == TOKEN
    assert content_type == "application/json-patch+json"
    assert body == [{"op": "replace", "path": "/status", "value": "entered-in-error"}]


async def test_archiving_patches_the_is_archived_extension(server) -> None:
    dest = MhdDestination("mhd", MhdConfig(base_url=server.url))
    try:
        await dest.send(deletion("archive"))
    finally:
        await dest.close()
    (_, _, body), = server.patches
    assert body[0]["path"].endswith("pdsm-ext-is-archived']/valueBoolean") and body[0]["value"] is True
    assert json.dumps(body)


async def test_unknown_document_is_a_precise_refusal(server) -> None:
    server.known = False
    dest = MhdDestination("mhd", MhdConfig(base_url=server.url))
    try:
        with pytest.raises(DestinationRejected) as info:
            await dest.send(deletion())
    finally:
        await dest.close()
    assert info.value.code == "MHD_ENTRY_UNKNOWN"
