"""The DMP simulator over real sockets: HTTP/SOAP answers, registry state, /_sim inspection API.

Requests are hand-built (tests/dmp_request_builder.py), not produced by our client.
"""

from __future__ import annotations

import re

import aiohttp
import pytest
from lxml import etree

from adapters.dmp.simulator import DmpSimulator
from adapters.dmp.testing import TEST_CERT
from tests.dmp_request_builder import GoodQuery, GoodRequest, GoodUpdate, Vihf

RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
S = "http://www.w3.org/2003/05/soap-envelope"
DELETED = "urn:asip:ci-sis:2010:StatusType:Deleted"


@pytest.fixture
async def sim():
    simulator = DmpSimulator(seed=5, trust_cert=TEST_CERT.read_bytes())
    await simulator.start("127.0.0.1", 0)
    yield simulator
    await simulator.stop()


async def post(sim: DmpSimulator, path: str, built: tuple[str, bytes]) -> tuple[int, str, etree._Element]:
    content_type, body = built
    async with aiohttp.ClientSession() as http, http.post(
        f"{sim.url}{path}", data=body, headers={"Content-Type": content_type}
    ) as resp:
        raw = await resp.read()
        ctype = resp.headers.get("Content-Type", "")
    match = re.search(rb"<\?xml.*?</(?:\w+:)?Envelope>", raw, re.S)
    assert match, raw[:200]
    return resp.status, ctype, etree.fromstring(match.group(0))


async def get(sim: DmpSimulator, path: str):  # noqa: ANN201
    async with aiohttp.ClientSession() as http, http.get(f"{sim.url}_sim/{path}") as resp:
        assert resp.status == 200
        return await resp.json()


def registry_status(envelope: etree._Element) -> tuple[str, list[dict[str, str]]]:
    response = next(envelope.iter(f"{{{RS}}}RegistryResponse", "{urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0}AdhocQueryResponse"))
    errors = [dict(e.attrib) for e in response.iter(f"{{{RS}}}RegistryError")]
    return response.get("status", "").rsplit(":", 1)[-1], errors


async def test_good_submission_is_stored_and_reported(sim: DmpSimulator) -> None:
    status, ctype, envelope = await post(sim, "repository", GoodRequest().build())
    assert status == 200 and ctype.startswith("multipart/related")
    assert registry_status(envelope) == ("Success", [])
    (sub,) = await get(sim, "submissions")
    assert sub["transaction"] == "ITI-41" and sub["accepted"] is True and sub["status"] == "accepted"
    assert sub["violations"] == [] and sub["xades_valid"] is True
    assert sub["vihf"]["NameID"] == "801234564895"
    assert sub["vihf"]["Identifiant_Structure"] == ["1120456789"]
    assert sub["uniqueId"] == "1.2.250.1.999999.1.7.1"
    (doc,) = await get(sim, "documents")
    assert doc["availabilityStatus"] == "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
    assert doc["replaces"] is None and doc["entryUUID"].startswith("urn:uuid:")
    assert await get(sim, "violations") == {"violations": []}


async def test_rule_violation_is_a_registry_error_naming_the_rule(sim: DmpSimulator) -> None:
    status, _, envelope = await post(sim, "", GoodRequest(entry={"hash": "0" * 40}).build())
    assert status == 200
    outcome, errors = registry_status(envelope)
    assert outcome == "Failure"
    (error,) = errors
    assert error["errorCode"] == "XDSNonIdenticalHash" and error["location"] == "XDS-HASH-01"
    assert error["codeContext"].startswith("[XDS-HASH-01]") and "ITI TF-3" in error["codeContext"]
    assert error["severity"] == "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
    assert sim.documents == {}
    (sub,) = await get(sim, "submissions")
    assert sub["accepted"] is False and sub["violations"][0]["rule"] == "XDS-HASH-01"
    assert sub["errors"][0][0] == "XDSNonIdenticalHash"
    assert [v["rule"] for v in (await get(sim, "violations"))["violations"]] == ["XDS-HASH-01"]


async def test_security_refusal_is_a_soap_sender_fault(sim: DmpSimulator) -> None:
    status, _, envelope = await post(sim, "repository", GoodRequest(vihf=Vihf(sign=False)).build())
    assert status == 400
    values = [v.text for v in envelope.iter(f"{{{S}}}Value")]
    assert values == ["s:Sender", "wsse:FailedCheck"]
    assert "[VIHF-SIG-01]" in "".join(t.text or "" for t in envelope.iter(f"{{{S}}}Text"))
    (sub,) = await get(sim, "submissions")
    assert sub["accepted"] is False and sub["xades_valid"] is None


async def test_initial_replacement_deletion_chain(sim: DmpSimulator) -> None:
    await post(sim, "repository", GoodRequest().build())
    status, _, envelope = await post(sim, "registry", GoodQuery("1.2.250.1.999999.1.7.1").build())
    assert status == 200 and registry_status(envelope) == ("Success", [])
    (found,) = envelope.iter(f"{{{RIM}}}ExtrinsicObject")
    original_uuid = found.get("id")
    assert original_uuid == sim.documents["1.2.250.1.999999.1.7.1"].entry_uuid

    replacement = GoodRequest(unique_id="1.2.250.1.999999.1.7.2", replaces=original_uuid,
                              ss={"uniqueId": "1.2.250.1.999999.2.7.2"})
    _, _, envelope = await post(sim, "repository", replacement.build())
    assert registry_status(envelope) == ("Success", [])
    replacement_uuid = sim.documents["1.2.250.1.999999.1.7.2"].entry_uuid

    status, ctype, envelope = await post(sim, "registry", GoodUpdate(replacement_uuid).build())
    assert status == 200 and ctype.startswith("application/soap+xml")
    assert registry_status(envelope) == ("Success", [])

    docs = {d["uniqueId"]: d for d in await get(sim, "documents")}
    assert docs["1.2.250.1.999999.1.7.1"]["status"] == "Deprecated"
    assert docs["1.2.250.1.999999.1.7.2"]["replaces"] == original_uuid
    assert docs["1.2.250.1.999999.1.7.2"]["availabilityStatus"] == DELETED
    subs = await get(sim, "submissions")
    assert [s["transaction"] for s in subs] == ["ITI-41", "ITI-18", "ITI-41", "ITI-57"]
    assert all(s["accepted"] for s in subs)
    assert subs[-1]["targets"] == [{"entryUUID": replacement_uuid, "uniqueId": "1.2.250.1.999999.1.7.2",
                                    "newStatus": DELETED}]
    assert await get(sim, "violations") == {"violations": []}

    again = GoodUpdate(replacement_uuid, ss_unique_id="1.2.250.1.999999.2.9.2")  # deleted already
    _, _, envelope = await post(sim, "registry", again.build())
    outcome, errors = registry_status(envelope)
    assert outcome == "Failure" and errors[0]["location"] == "U57-TARGET-01"


async def test_fault_after_store_keeps_the_document(sim: DmpSimulator) -> None:
    sim.script.append("503:after")
    content_type, body = GoodRequest().build()
    async with aiohttp.ClientSession() as http, http.post(
        f"{sim.url}repository", data=body, headers={"Content-Type": content_type}
    ) as resp:
        assert resp.status == 503
    assert "1.2.250.1.999999.1.7.1" in sim.documents
    (sub,) = await get(sim, "submissions")
    assert sub["fault"] == {"kind": "503", "afterStore": True} and sub["accepted"] is True


async def test_reset_forgets_everything(sim: DmpSimulator) -> None:
    await post(sim, "repository", GoodRequest().build())
    async with aiohttp.ClientSession() as http, http.post(f"{sim.url}_sim/reset") as resp:
        assert (await resp.json()) == {"reset": True}
    assert await get(sim, "submissions") == [] and await get(sim, "documents") == []


async def test_reused_submission_set_unique_id_is_a_duplicate(sim: DmpSimulator) -> None:
    await post(sim, "repository", GoodRequest().build())
    _, _, envelope = await post(sim, "repository", GoodRequest(unique_id="1.2.250.1.999999.1.7.3").build())
    outcome, errors = registry_status(envelope)
    assert outcome == "Failure" and [e["location"] for e in errors] == ["XDS-DUP-01"]
    assert errors[0]["errorCode"] == "XDSDuplicateUniqueIdInRegistry"


async def test_soap11_envelope_is_a_version_mismatch_500(sim: DmpSimulator) -> None:
    built = GoodRequest(soap_ns="http://schemas.xmlsoap.org/soap/envelope/").build()
    status, _, envelope = await post(sim, "repository", built)
    assert status == 500
    assert [v.text for v in envelope.iter(f"{{{S}}}Value")] == ["s:VersionMismatch"]
