"""IHE XDM (ITI-32, Distribute Document Set on Media) packages for MSSanté attachments.

Layout, from IHE ITI TF-2b §3.32.4.1.3 (ZIP over e-mail uses the same file structure as
media) and TF-3 §4.2.3.2 (metadata attributes):

    INDEX.HTM                       human entry point, links to every document
    README.TXT                      who made the package and how
    IHE_XDM/SUBSET01/METADATA.XML   lcm:SubmitObjectsRequest (ebRS 3.0) describing the subset
    IHE_XDM/SUBSET01/DOC00001.XML   the CDA, byte for byte as received

File names are ISO 9660 style 8.3 upper case (TF-2b §3.32.4.1.2). ``METADATA.XML`` is the
same ebRIM the DMP gets (``adapters.dmp.ebrim``, built from ``gateway.core.xds``), with the
``URI`` slot XDM requires on the DocumentEntry (TF-3 Table 4.2.3.2-1: URI is R for XDM) and
the ``hash`` (SHA-1, hex) and ``size`` of the file actually in the package.

:func:`read_xdm` is the reading side for mail arriving in the application mailbox: it checks
the structure and that each document's bytes match the hash and size declared for it.
"""

from __future__ import annotations

import hashlib
import html
import io
import zipfile
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lxml import etree

from adapters.dmp.ebrim import LCM_NS, RIM_NS, build_provide_and_register
from gateway.errors import MappingError, ValidationError

__all__ = ["XDM_DOCUMENT_PATH", "XDM_METADATA_PATH", "XdmDocument", "build_xdm", "metadata_xml", "read_xdm"]

XDM_SUBSET = "IHE_XDM/SUBSET01/"
XDM_DOCUMENT_NAME = "DOC00001.XML"
XDM_DOCUMENT_PATH = XDM_SUBSET + XDM_DOCUMENT_NAME
XDM_METADATA_PATH = XDM_SUBSET + "METADATA.XML"


@dataclass(frozen=True)
class XdmDocument:
    """One document read back from an XDM package."""

    path: str
    data: bytes
    mime_type: str
    unique_id: str | None


def _slot(eo: etree._Element, name: str, value: str) -> None:
    """Replace (or add) a slot, keeping slots before Name/Description as rim.xsd orders them."""
    for old in eo.findall(f"{{{RIM_NS}}}Slot"):
        if old.get("name") == name:
            eo.remove(old)
    slot = etree.Element(f"{{{RIM_NS}}}Slot", name=name)
    values = etree.SubElement(slot, f"{{{RIM_NS}}}ValueList")
    etree.SubElement(values, f"{{{RIM_NS}}}Value").text = value
    slots = eo.findall(f"{{{RIM_NS}}}Slot")
    index = (list(eo).index(slots[-1]) + 1) if slots else 0
    eo.insert(index, slot)


def metadata_xml(xds: dict[str, Any], document: bytes) -> bytes:
    """``METADATA.XML``: the DMP's SubmitObjectsRequest with URI, hash and size of the packaged file."""
    request = build_provide_and_register(xds, document_id_ref="unused")  # type: ignore[arg-type]
    submit = request.find(f"{{{LCM_NS}}}SubmitObjectsRequest")
    if submit is None:  # pragma: no cover - the builder always makes one
        raise MappingError("no SubmitObjectsRequest in the XDS metadata", code="XDM_METADATA")
    submit = etree.fromstring(etree.tostring(submit))  # detach with its namespaces
    eo = submit.find(f".//{{{RIM_NS}}}ExtrinsicObject")
    if eo is None:  # pragma: no cover
        raise MappingError("no DocumentEntry in the XDS metadata", code="XDM_METADATA")
    _slot(eo, "hash", hashlib.sha1(document).hexdigest())  # noqa: S324 - XDS hash is SHA-1 by definition
    _slot(eo, "size", str(len(document)))
    _slot(eo, "URI", XDM_DOCUMENT_NAME)
    return etree.tostring(submit, xml_declaration=True, encoding="UTF-8")


def _readme(now: datetime, source: str) -> bytes:
    return (
        "Package IHE XDM (ITI-32) produced by Relais, plateforme d'intermediation\r\n"
        f"Source (XDS sourceId): {source}\r\n"
        f"Created: {now.strftime('%Y-%m-%dT%H:%M:%SZ')}\r\n"
        "Contents: INDEX.HTM, IHE_XDM/SUBSET01/METADATA.XML, IHE_XDM/SUBSET01/DOC00001.XML (CDA R2)\r\n"
        "Open INDEX.HTM to reach the document.\r\n"
    ).encode("ascii")


def _index(title: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html lang=\"fr\"><head><meta charset=\"utf-8\"><title>IHE XDM</title></head>\n"
        "<body><h1>Document transmis par MSSanté</h1>\n<ul>\n"
        f"<li><a href=\"{XDM_DOCUMENT_PATH}\">{html.escape(title)}</a> (CDA R2)</li>\n"
        f"<li><a href=\"{XDM_METADATA_PATH}\">Métadonnées XDS</a></li>\n"
        "</ul></body></html>\n"
    ).encode()


def build_xdm(xds: dict[str, Any], document: bytes, *, now: datetime) -> bytes:
    """The zip bytes of an XDM package holding ``document`` (deterministic for the same input)."""
    title = xds.get("documentEntry", {}).get("title") or "Document"
    source = xds.get("submissionSet", {}).get("sourceId") or ""
    stamp = (now.year, now.month, now.day, now.hour, now.minute, now.second)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in (
            ("INDEX.HTM", _index(title)),
            ("README.TXT", _readme(now, source)),
            (XDM_METADATA_PATH, metadata_xml(xds, document)),
            (XDM_DOCUMENT_PATH, document),
        ):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def read_xdm(data: bytes, *, max_bytes: int = 64 * 1024 * 1024) -> list[XdmDocument]:
    """The documents of an XDM zip; raises ``ValidationError`` naming what is wrong.

    ``max_bytes`` bounds what the package may expand to (declared sizes, checked before
    anything is inflated), so a zip bomb in a mail cannot exhaust memory.
    """
    zf, names = _open_package(data, max_bytes)
    documents: list[XdmDocument] = []
    for meta in _metadata_files(names):
        root = _read_metadata(zf, names[meta], meta)
        subset = meta[: -len("METADATA.XML")]
        for eo in root.iter(f"{{{RIM_NS}}}ExtrinsicObject"):
            documents.append(_read_document(zf, names, subset, meta, eo))
    if not documents:
        raise ValidationError("METADATA.XML lists no document", code="XDM_EMPTY")
    return documents


def _open_package(data: bytes, max_bytes: int) -> tuple[zipfile.ZipFile, dict[str, str]]:
    """The zip and its entry names (upper-cased name → name), refused when unsafe to inflate."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ValidationError("attachment is not a zip file", code="XDM_NOT_ZIP") from exc
    if sum(i.file_size for i in zf.infolist()) > max_bytes:
        raise ValidationError(f"the package expands beyond {max_bytes} bytes", code="XDM_TOO_LARGE")
    names = {n.upper(): n for n in zf.namelist()}
    if any(n.startswith("/") or ".." in n.split("/") for n in names.values()):
        raise ValidationError("zip entry with an absolute or parent path", code="XDM_UNSAFE_PATH")
    return zf, names


def _metadata_files(names: dict[str, str]) -> list[str]:
    """``IHE_XDM/<subset>/METADATA.XML`` of each subset (TF-2b §3.32.4.1.3), in name order."""
    metas = sorted(n for n in names if n.startswith("IHE_XDM/") and n.endswith("/METADATA.XML"))
    if not metas:
        raise ValidationError("no IHE_XDM/<subset>/METADATA.XML in the package", code="XDM_NO_METADATA")
    return metas


def _read_metadata(zf: zipfile.ZipFile, name: str, meta: str) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        return etree.fromstring(zf.read(name), parser)
    except etree.XMLSyntaxError as exc:
        raise ValidationError(f"{meta} is not well-formed XML", code="XDM_METADATA_XML") from exc


def _read_document(
    zf: zipfile.ZipFile, names: dict[str, str], subset: str, meta: str, eo: etree._Element
) -> XdmDocument:
    """The file a DocumentEntry's ``URI`` slot names, checked against its declared size and hash."""
    slots = {
        s.get("name"): [v.text or "" for v in s.iter(f"{{{RIM_NS}}}Value")]
        for s in eo.findall(f"{{{RIM_NS}}}Slot")
    }
    uri = (slots.get("URI") or [""])[0]
    path = (subset + uri).upper()
    if not uri or path not in names:
        raise ValidationError(f"document {uri or '(no URI)'} listed in {meta} is missing",
                              code="XDM_DOCUMENT_MISSING")
    try:
        content = zf.read(names[path])
    except (zipfile.BadZipFile, OSError) as exc:  # CRC error, truncated entry
        raise ValidationError(f"{uri}: unreadable zip entry", code="XDM_CORRUPT") from exc
    size = (slots.get("size") or [""])[0]
    digest = (slots.get("hash") or [""])[0].lower()
    if size and size != str(len(content)):
        raise ValidationError(f"{uri}: size {len(content)} differs from METADATA.XML {size}",
                              code="XDM_SIZE_MISMATCH")
    if digest and digest != hashlib.sha1(content).hexdigest():  # noqa: S324
        raise ValidationError(f"{uri}: SHA-1 differs from METADATA.XML", code="XDM_HASH_MISMATCH")
    return XdmDocument(names[path], content, eo.get("mimeType") or "text/xml", _unique_id(eo))


def _unique_id(eo: etree._Element) -> str | None:
    """The DocumentEntry.uniqueId ExternalIdentifier (the last one, should there be several)."""
    uid = None
    for ei in eo.findall(f"{{{RIM_NS}}}ExternalIdentifier"):
        if ei.get("identificationScheme") == "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab":
            uid = ei.get("value")
    return uid
