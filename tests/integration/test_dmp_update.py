"""DmpDestination deletion / archiving (DMP TD3.3c / TD3.3d) over ITI-57, against a registry
double on 127.0.0.1 that answers from hand-written XML (not from the client's builders)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiohttp import web
from lxml import etree

from adapters.dmp.client import DmpDestination, DmpSettings
from adapters.dmp.testing import TEST_CERT, TEST_KEY, sample_document, sample_metadata
from adapters.dmp.vihf import VihfSettings
from gateway.errors import DestinationRejected, DestinationUnavailable
from gateway.ports import Payload

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
UNIQUE_ID_SCHEME = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DELETED = "urn:asip:ci-sis:2010:StatusType:Deleted"
ARCHIVED = "urn:asip:ci-sis:2010:StatusType:Archived"
UID = "1.2.250.1.999999.1.7.1"
ENTRY = "urn:uuid:11111111-2222-4333-8444-555555555555"


class Registry:
    """The registry side, just enough: GetDocuments by uniqueId and UpdateAvailabilityStatus."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, str]] = {UID: (ENTRY, APPROVED)}  # uniqueId -> (entryUUID, status)
        self.requests: list[tuple[str, etree._Element]] = []
        self.fail_with: str | None = None
        self.url = ""

    def envelope(self, action: str, body: str) -> web.Response:
        text = (
            f'<s:Envelope xmlns:s="{SOAP}" xmlns:a="{WSA}"><s:Header><a:Action>{action}</a:Action>'
            f"</s:Header><s:Body>{body}</s:Body></s:Envelope>"
        )
        return web.Response(text=text, content_type="application/soap+xml")

    async def handle(self, request: web.Request) -> web.Response:
        root = etree.fromstring(await request.read())
        action = root.findtext(f"{{{SOAP}}}Header/{{{WSA}}}Action")
        body = root.find(f"{{{SOAP}}}Body")[0]
        self.requests.append((action or "", body))
        if action == "urn:ihe:iti:2007:RegistryStoredQuery":
            wanted = body.findtext(f".//{{{RIM}}}Slot[@name='$XDSDocumentEntryUniqueId']/{{{RIM}}}ValueList/{{{RIM}}}Value")
            objects = ""
            for uid, (entry, status) in self.entries.items():
                if f"'{uid}'" in (wanted or ""):
                    objects += (
                        f'<rim:ExtrinsicObject id="{entry}" status="{status}" mimeType="text/xml" '
                        'objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">'
                        f'<rim:ExternalIdentifier id="ei1" registryObject="{entry}" '
                        f'identificationScheme="{UNIQUE_ID_SCHEME}" value="{uid}"/></rim:ExtrinsicObject>'
                    )
            return self.envelope(
                "urn:ihe:iti:2007:RegistryStoredQueryResponse",
                '<query:AdhocQueryResponse xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" '
                f'xmlns:rim="{RIM}" status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success">'
                f"<rim:RegistryObjectList>{objects}</rim:RegistryObjectList></query:AdhocQueryResponse>",
            )
        assert action == "urn:ihe:iti:2010:UpdateDocumentSet", action
        if self.fail_with:
            errors = (
                '<rs:RegistryErrorList><rs:RegistryError severity="urn:oasis:names:tc:ebxml-regrep:'
                f'ErrorSeverityType:Error" errorCode="{self.fail_with}" codeContext="x"/></rs:RegistryErrorList>'
            )
            status = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
        else:
            association = body.find(f".//{{{RIM}}}Association")
            new = association.findtext(f"{{{RIM}}}Slot[@name='NewStatus']/{{{RIM}}}ValueList/{{{RIM}}}Value")
            for uid, (entry, _) in list(self.entries.items()):
                if entry == association.get("targetObject"):
                    self.entries[uid] = (entry, new)
            errors, status = "", "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
        return self.envelope(
            "urn:ihe:iti:2010:UpdateDocumentSetResponse",
            f'<rs:RegistryResponse xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0" status="{status}">'
            f"{errors}</rs:RegistryResponse>",
        )


class Clock:
    n = 0

    def now(self) -> datetime:
        return datetime.now(UTC)

    def new_id(self) -> str:
        self.n += 1
        return f"00000000-0000-4000-a000-{self.n:012d}"


@pytest.fixture
async def registry():
    reg = Registry()
    app = web.Application()
    app.router.add_post("/registry", reg.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    reg.url = f"http://127.0.0.1:{port}/"
    yield reg
    await runner.cleanup()


def destination(registry: Registry) -> DmpDestination:
    vihf = VihfSettings(key_path=TEST_KEY, cert_path=TEST_CERT, structure_id="1012345678")
    return DmpDestination("dmp", DmpSettings(url=registry.url + "repository", vihf=vihf), clock=Clock())


def deletion(action: str = "delete") -> Payload:
    document = sample_document(UID)
    return Payload(exchange_id="ex-9", delivery_id="dl-9", document=document,
                   xds=sample_metadata(document, unique_id=UID, action=action, n=9))


async def test_deletion_is_an_iti57_status_update(registry) -> None:
    dest = destination(registry)
    try:
        result = await dest.send(deletion())
    finally:
        await dest.close()
    assert registry.entries[UID] == (ENTRY, DELETED)
    assert [a for a, _ in registry.requests] == [
        "urn:ihe:iti:2007:RegistryStoredQuery",
        "urn:ihe:iti:2010:UpdateDocumentSet",
    ]
    body = registry.requests[1][1]
    assert body.tag == f"{{{LCM}}}SubmitObjectsRequest"
    (association,) = body.findall(f".//{{{RIM}}}Association")
    assert association.get("associationType") == "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"
    assert association.get("targetObject") == ENTRY
    package = body.find(f".//{{{RIM}}}RegistryPackage")
    assert association.get("sourceObject") == package.get("id")
    slots = {s.get("name"): s.findtext(f"{{{RIM}}}ValueList/{{{RIM}}}Value") for s in association}
    assert slots == {"OriginalStatus": APPROVED, "NewStatus": DELETED}
    # no document entry and no document travel with a status update
    assert body.find(f".//{{{RIM}}}ExtrinsicObject") is None
    assert result.detail["newStatus"] == DELETED


async def test_archiving_uses_the_archived_status(registry) -> None:
    dest = destination(registry)
    try:
        await dest.send(deletion("archive"))
    finally:
        await dest.close()
    assert registry.entries[UID] == (ENTRY, ARCHIVED)


async def test_retried_deletion_of_a_deleted_entry_is_done(registry) -> None:
    registry.entries[UID] = (ENTRY, DELETED)
    dest = destination(registry)
    try:
        assert await dest.already_delivered(deletion())
        result = await dest.send(deletion())
    finally:
        await dest.close()
    assert result.detail["already"] == DELETED
    assert "urn:ihe:iti:2010:UpdateDocumentSet" not in [a for a, _ in registry.requests]


async def test_lookup_of_a_pending_deletion_is_false(registry) -> None:
    dest = destination(registry)
    try:
        assert not await dest.already_delivered(deletion())
    finally:
        await dest.close()


async def test_unknown_entry_is_rejected(registry) -> None:
    registry.entries.clear()
    dest = destination(registry)
    try:
        with pytest.raises(DestinationRejected) as info:
            await dest.send(deletion())
    finally:
        await dest.close()
    assert info.value.code == "DMP_ENTRY_UNKNOWN"


@pytest.mark.parametrize(
    ("code", "error"), [("XDSRegistryBusy", DestinationUnavailable), ("XDSUnknownPatientId", DestinationRejected)]
)
async def test_registry_errors_are_classified_as_for_iti41(registry, code: str, error: type) -> None:
    registry.fail_with = code
    dest = destination(registry)
    dest.retry = type(dest.retry)(quick_attempts=1, timeout=dest.retry.timeout)
    try:
        with pytest.raises(error) as info:
            await dest.send(deletion())
    finally:
        await dest.close()
    assert info.value.code == code
    assert registry.entries[UID] == (ENTRY, APPROVED)
