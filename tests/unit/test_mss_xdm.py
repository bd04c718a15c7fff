"""IHE XDM package (ITI-32) for MSSanté: structure, METADATA.XML against the XDS schema, hash/size."""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from adapters.dmp.ebrim import NS, load_xds_schema
from adapters.dmp.testing import sample_document, sample_metadata
from adapters.mssante.xdm import XDM_DOCUMENT_PATH, XDM_METADATA_PATH, build_xdm, metadata_xml, read_xdm
from gateway.errors import ValidationError

XSD_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "xds" / "xsd"
NOW = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)


def _package() -> tuple[bytes, bytes, dict]:
    document = sample_document()
    xds = sample_metadata(document)
    return document, build_xdm(xds, document, now=NOW), xds


def _slots(meta: bytes) -> dict[str, list[str]]:
    eo = etree.fromstring(meta).find(".//rim:ExtrinsicObject", NS)
    return {s.get("name"): [v.text for v in s.iter(f"{{{NS['rim']}}}Value")] for s in eo.findall("rim:Slot", NS)}


def test_zip_layout_and_byte_identical_document() -> None:
    document, package, _ = _package()
    zf = zipfile.ZipFile(io.BytesIO(package))
    assert sorted(zf.namelist()) == sorted(["INDEX.HTM", "README.TXT", XDM_METADATA_PATH, XDM_DOCUMENT_PATH])
    assert zf.read(XDM_DOCUMENT_PATH) == document
    assert XDM_DOCUMENT_PATH.encode() in zf.read("INDEX.HTM")


def test_metadata_declares_hash_size_and_uri_of_the_packaged_file() -> None:
    document, package, _ = _package()
    zf = zipfile.ZipFile(io.BytesIO(package))
    slots = _slots(zf.read(XDM_METADATA_PATH))
    assert slots["hash"] == [hashlib.sha1(zf.read(XDM_DOCUMENT_PATH)).hexdigest()]  # noqa: S324
    assert slots["size"] == [str(len(document))]
    assert slots["URI"] == ["DOC00001.XML"]
    assert list(slots).count("hash") == 1


@pytest.mark.corpus
def test_metadata_is_valid_against_the_xds_schema() -> None:
    if not (XSD_DIR / "IHE" / "XDS.b_DocumentRepository.xsd").exists():
        pytest.skip(reason="corpus XSD (../shared/corpus/xds/xsd) not available")
    schema = load_xds_schema(XSD_DIR)
    document = sample_document()
    root = etree.fromstring(metadata_xml(sample_metadata(document), document))
    assert root.tag == f"{{{NS['lcm']}}}SubmitObjectsRequest"
    assert schema.validate(root), schema.error_log


def test_read_back_finds_the_document_and_its_unique_id() -> None:
    document, package, xds = _package()
    [doc] = read_xdm(package)
    assert doc.data == document
    assert doc.unique_id == xds["documentEntry"]["uniqueId"]


def _rewrite(package: bytes, name: str, data: bytes | None) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(package))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for item in src.namelist():
            if item == name:
                if data is not None:
                    out.writestr(item, data)
            else:
                out.writestr(item, src.read(item))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        (XDM_DOCUMENT_PATH, b"<ClinicalDocument/>", "XDM_SIZE_MISMATCH"),
        (XDM_DOCUMENT_PATH, None, "XDM_DOCUMENT_MISSING"),
        (XDM_METADATA_PATH, None, "XDM_NO_METADATA"),
        (XDM_METADATA_PATH, b"<not-xml", "XDM_METADATA_XML"),
    ],
)
def test_damaged_packages_are_refused_with_a_precise_code(name: str, data: bytes | None, code: str) -> None:
    _, package, _ = _package()
    with pytest.raises(ValidationError) as err:
        read_xdm(_rewrite(package, name, data))
    assert err.value.code == code


def test_same_size_other_bytes_fail_on_the_hash() -> None:
    document, package, _ = _package()
    tampered = document[:-2] + (b"!!" if document[-2:] != b"!!" else b"??")
    with pytest.raises(ValidationError) as err:
        read_xdm(_rewrite(package, XDM_DOCUMENT_PATH, tampered))
    assert err.value.code == "XDM_HASH_MISMATCH"


def test_not_a_zip() -> None:
    with pytest.raises(ValidationError) as err:
        read_xdm(b"plain text")
    assert err.value.code == "XDM_NOT_ZIP"


def test_a_package_expanding_beyond_the_bound_is_refused_before_inflating() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("IHE_XDM/SUBSET01/DOC00001.XML", b"\0" * (2 * 1024 * 1024))
    with pytest.raises(ValidationError) as err:
        read_xdm(buf.getvalue(), max_bytes=1024 * 1024)
    assert err.value.code == "XDM_TOO_LARGE"
