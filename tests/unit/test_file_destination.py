"""The file destination: layout, atomic writes, idempotent lookup."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from adapters.dmp import ebrim
from adapters.dmp import testing as dmp_testing
from adapters.file import DONE_MARKER, FileDestination, atomic_write
from adapters.mhd.testing import SAMPLE_CDA, make_iti65_bundle
from gateway.errors import DestinationRejected, DestinationUnavailable
from gateway.ports import Destination, Payload

XDS = {"documentEntry": {"uniqueId": "1.2.250.1.999999.1.2.3", "mimeType": "text/xml"}, "submissionSet": {}}
ZAM = b"MSH|^~\\&|RELAIS|PFI|DPI|HOP|20240502100000||ZAM^Z01|1|P|2.5\r"


def document_payload(**changes) -> Payload:
    values = {
        "exchange_id": "ex-1",
        "delivery_id": "dl-1",
        "document": SAMPLE_CDA,
        "xds": XDS,
        "fhir": make_iti65_bundle(),
    }
    return Payload(**(values | changes))


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    atomic_write(tmp_path, "a.txt", b"first")
    atomic_write(tmp_path, "a.txt", b"second")
    assert (tmp_path / "a.txt").read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_write_failure_keeps_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    atomic_write(tmp_path, "a.txt", b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write(tmp_path, "a.txt", b"new")
    assert (tmp_path / "a.txt").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


async def test_document_layout(tmp_path: Path) -> None:
    dest = FileDestination("archive", tmp_path, render_iti41=lambda p: b"<soap/>")
    assert isinstance(dest, Destination)
    result = await dest.send(document_payload())
    target = tmp_path / "ex-1" / "dl-1"
    assert result.remote_id == str(target)
    assert sorted(p.name for p in target.iterdir()) == [
        "document.xml",
        DONE_MARKER,
        "iti41-envelope.xml",
        "iti65-bundle.json",
        "xds-metadata.json",
    ]
    assert (target / "document.xml").read_bytes() == SAMPLE_CDA
    assert json.loads((target / "iti65-bundle.json").read_text("utf-8")) == make_iti65_bundle()
    assert json.loads((target / "xds-metadata.json").read_text("utf-8")) == XDS
    assert (target / "iti41-envelope.xml").read_bytes() == b"<soap/>"
    done = json.loads((target / DONE_MARKER).read_text("utf-8"))
    assert [f["name"] for f in done["files"]] == [
        "iti65-bundle.json",
        "xds-metadata.json",
        "iti41-envelope.xml",
        "document.xml",
    ]
    assert done["skipped"] == {}


async def test_without_renderer_the_envelope_is_skipped(tmp_path: Path) -> None:
    dest = FileDestination("archive", tmp_path, render_iti41=None)
    result = await dest.send(document_payload(fhir=None))
    assert result.detail["files"] == ["xds-metadata.json", "document.xml"]
    assert "iti41-envelope.xml" in result.detail["skipped"]


async def test_renderer_failure_does_not_fail_the_delivery(tmp_path: Path) -> None:
    def broken(payload: Payload) -> bytes:
        raise DestinationRejected("patient Dupont has no INS", code="XDS_MISSING")

    dest = FileDestination("archive", tmp_path, render_iti41=broken)
    result = await dest.send(document_payload())
    assert result.detail["skipped"] == {"iti41-envelope.xml": "DestinationRejected XDS_MISSING"}


async def test_zam_payload(tmp_path: Path) -> None:
    dest = FileDestination("archive", tmp_path, render_iti41=None)
    await dest.send(Payload(exchange_id="ex-2", delivery_id="dl-9", kind="zam", hl7=ZAM))
    target = tmp_path / "ex-2" / "dl-9"
    assert (target / "zam.hl7").read_bytes() == ZAM
    assert sorted(p.name for p in target.iterdir()) == [DONE_MARKER, "zam.hl7"]


async def test_lookup_is_true_only_after_done_marker(tmp_path: Path) -> None:
    dest = FileDestination("archive", tmp_path, render_iti41=None)
    payload = document_payload()
    assert await dest.already_delivered(payload) is False
    # A crash after the content files but before the marker: not delivered yet.
    target = tmp_path / "ex-1" / "dl-1"
    target.mkdir(parents=True)
    (target / "document.xml").write_bytes(b"partial")
    (target / ".document.xml.abc.tmp").write_bytes(b"half")
    assert await dest.already_delivered(payload) is False
    await dest.send(payload)
    assert await dest.already_delivered(payload) is True
    assert (target / "document.xml").read_bytes() == SAMPLE_CDA
    assert not list(target.glob(".*.tmp"))
    # Re-delivery is idempotent: same files, same marker.
    before = (target / DONE_MARKER).read_bytes()
    await dest.send(payload)
    assert (target / DONE_MARKER).read_bytes() == before


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "", "../etc", ".hidden"])
async def test_unsafe_ids_are_rejected(tmp_path: Path, bad: str) -> None:
    dest = FileDestination("archive", tmp_path, render_iti41=None)
    with pytest.raises(DestinationRejected) as info:
        await dest.send(document_payload(delivery_id=bad))
    assert info.value.code == "FILE_BAD_ID"


async def test_empty_payloads_are_rejected(tmp_path: Path) -> None:
    dest = FileDestination("archive", tmp_path, render_iti41=None)
    with pytest.raises(DestinationRejected):
        await dest.send(Payload(exchange_id="ex-1", delivery_id="dl-1"))
    with pytest.raises(DestinationRejected):
        await dest.send(Payload(exchange_id="ex-1", delivery_id="dl-1", kind="zam"))


async def test_io_error_is_retryable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")

    async def no_sleep(_: float) -> None:
        return None

    dest = FileDestination("archive", blocker, render_iti41=None, sleep=no_sleep)
    with pytest.raises(DestinationUnavailable) as info:
        await dest.send(document_payload())
    assert info.value.code == "FILE_IO"


async def test_default_renderer_writes_the_iti41_envelope(tmp_path: Path) -> None:
    from lxml import etree

    document = dmp_testing.sample_document()
    payload = Payload(
        exchange_id="ex-3", delivery_id="dl-3", document=document, xds=dmp_testing.sample_metadata(document)
    )
    dest = FileDestination("archive", tmp_path)
    result = await dest.send(payload)
    assert result.detail["skipped"] == {}
    envelope = (tmp_path / "ex-3" / "dl-3" / "iti41-envelope.xml").read_bytes()
    root = etree.fromstring(envelope)
    [doc] = root.iter("{urn:ihe:iti:xds-b:2007}Document")
    assert base64.b64decode(doc.text or "") == document
    # Deterministic: a re-delivery writes the same bytes.
    await dest.send(payload)
    assert (tmp_path / "ex-3" / "dl-3" / "iti41-envelope.xml").read_bytes() == envelope


async def test_default_renderer_skips_incomplete_metadata(tmp_path: Path) -> None:
    assert ebrim  # the renderer the file destination falls back on
    dest = FileDestination("archive", tmp_path)
    result = await dest.send(document_payload())
    assert result.detail["skipped"] == {"iti41-envelope.xml": "MappingError XDS_METADATA_MISSING"}


async def test_deletion_writes_an_iti57_envelope_not_an_iti41(tmp_path: Path) -> None:
    from lxml import etree

    document = dmp_testing.sample_document()
    xds = dmp_testing.sample_metadata(document, action="delete")
    payload = Payload(exchange_id="ex-4", delivery_id="dl-4", document=document, xds=xds)
    result = await FileDestination("archive", tmp_path).send(payload)
    assert result.detail["skipped"] == {}
    target = tmp_path / "ex-4" / "dl-4"
    assert not (target / "iti41-envelope.xml").exists()
    root = etree.fromstring((target / "iti57-envelope.xml").read_bytes())
    ns = {"s": "http://www.w3.org/2003/05/soap-envelope", "a": "http://www.w3.org/2005/08/addressing",
          "rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"}
    assert root.xpath("s:Header/a:Action/text()", namespaces=ns) == ["urn:ihe:iti:2010:UpdateDocumentSet"]
    assert not list(root.iter("{urn:ihe:iti:xds-b:2007}Document"))
    (association,) = root.xpath("//rim:Association", namespaces=ns)
    assert association.get("associationType") == "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"
    assert association.xpath("rim:Slot[@name='NewStatus']/rim:ValueList/rim:Value/text()", namespaces=ns) == [
        "urn:asip:ci-sis:2010:StatusType:Deleted"
    ]
