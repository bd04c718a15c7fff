"""CDA R2 documents: a quick sniff, hardened parsing, header extraction, optional XSD validation.

``sniff_cda`` says whether bytes *start like* a CDA R2 document, without parsing them: the
HL7 v2 reader uses it to reject an OBX-5 that is no CDA at all before any XML work is done.

``parse_cda`` turns untrusted bytes into an lxml root without ever expanding entities,
loading a DTD or touching the network:

* a DOCTYPE that declares an entity or names an external DTD is refused (``CDA_DTD_FORBIDDEN``)
  *before* libxml2 sees it, and checked again on the parsed tree (for encodings the byte
  scan cannot read);
* the parser itself has ``resolve_entities=False, no_network=True, load_dtd=False`` and
  ``huge_tree=False`` (libxml2 limits, including a 10 MB cap on one text node: a level-1
  document whose base64 body exceeds it is reported as ``CDA_TOO_LARGE``);
* a UTF-8 BOM, CRLF line ends and a missing XML declaration are all fine.

``parse_header`` reads the header into ``gateway.model.CdaHeader`` (the hand-off to the FHIR
and XDS mappers). ``validate_xsd`` checks the CDA schema (``CDA_extended.xsd`` of the ANS test
kit). It is optional and comparatively slow: compiling the schema takes a fraction of a second
(cached per directory) and validation walks the whole body, so run it in ``relais check`` or
behind a setting, not on every message by default.
"""

from __future__ import annotations

import functools
import re
import threading
from pathlib import Path

from lxml import etree

from gateway.errors import ParseError, ValidationError
from gateway.model import (
    INS_OIDS,
    Author,
    CdaHeader,
    Finding,
    Identifier,
    Organization,
    PatientIdentity,
    Person,
)

__all__ = [
    "NS",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MAX_ELEMENTS",
    "DEFAULT_MAX_DEPTH",
    "sniff_cda",
    "parse_cda",
    "parse_header",
    "validate_xsd",
    "find_cda_xsd",
]

NS = "urn:hl7-org:v3"
_N = {"h": NS}
_ROOT_TAG = f"{{{NS}}}ClinicalDocument"
DEFAULT_MAX_SIZE = 20 * 1024 * 1024
DEFAULT_MAX_ELEMENTS = 200_000  # a rich structured CDA has tens of thousands
DEFAULT_MAX_DEPTH = 128  # CDA bodies rarely go past 30 levels
_XSD_ENTRY = "CDA_extended.xsd"
_MAX_XSD_FINDINGS = 50

# Skips the prolog items that may precede a DOCTYPE: BOM, whitespace, XML declaration / PIs, comments.
_PROLOG_ITEM = re.compile(r"\A(?:\ufeff|\s+|<\?.*?\?>|<!--.*?-->)", re.DOTALL)
_DOCTYPE_FORBIDDEN = re.compile(r"<!ENTITY|\bSYSTEM\b|\bPUBLIC\b")


# ---------------------------------------------------------------------------------------------
# Sniffing: does it look like a CDA at all?

# Prolog items allowed before the root element: blanks, XML declaration and other
# processing instructions (the ANS samples carry xml-stylesheet and oxygen PIs),
# comments, and a DOCTYPE (let the hardened parser reject it with a precise error).
_SNIFF_PROLOG_ITEM = re.compile(r"\s+|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^\[>]*(?:\[.*?\])?\s*>", re.S)
_SNIFF_ROOT_TAG = re.compile(r"<(?:([A-Za-z_][\w.-]*):)?ClinicalDocument(?=[\s/>])([^>]*)>")
_XMLNS = re.compile(r"""xmlns(?::([A-Za-z_][\w.-]*))?\s*=\s*(["'])(.*?)\2""", re.S)
_SNIFF_BYTES = 64 * 1024


def sniff_cda(data: bytes) -> bool:
    """Quick check that ``data`` starts like a CDA R2 document; no XML parse.

    After an optional BOM, blanks, XML declaration, processing instructions and
    comments, the root element must be ``ClinicalDocument`` bound to ``urn:hl7-org:v3``
    (default namespace or a declared prefix). Only the first 64 KiB are looked at.
    """
    head = data[:_SNIFF_BYTES]
    if head.startswith(b"\xef\xbb\xbf"):
        text = head[3:].decode("utf-8", "replace")
    elif head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head.decode("utf-16", "replace")
    else:
        # Latin-1 never fails and keeps ASCII markup intact for UTF-8 and ISO 8859 alike.
        text = head.decode("latin-1")
    pos = 0
    while (m := _SNIFF_PROLOG_ITEM.match(text, pos)) is not None and m.end() > pos:
        pos = m.end()
    root = _SNIFF_ROOT_TAG.match(text, pos)
    if root is None:
        return False
    prefix = root.group(1)
    namespaces = {ns_prefix or None: uri for ns_prefix, _, uri in _XMLNS.findall(root.group(2))}
    return namespaces.get(prefix) == NS


# ---------------------------------------------------------------------------------------------
# Hardened parsing


def _parser() -> etree.XMLParser:
    # One parser per call: lxml parsers are not safe to share between threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
    )


def _scan_text(data: bytes) -> str:
    """The beginning of the document as text, good enough to find a DOCTYPE."""
    head = data[:65536]
    for bom, codec in ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be")):
        if head.startswith(bom):
            return head.decode(codec, errors="ignore")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head.decode("utf-16", errors="ignore")
    # Every ASCII-compatible encoding keeps "<!DOCTYPE" / "<!ENTITY" readable through latin-1.
    return head.decode("latin-1")


def _doctype_of(text: str) -> str | None:
    pos = 0
    while True:
        match = _PROLOG_ITEM.match(text, pos)
        if match is None or match.end() == pos:
            break
        pos = match.end()
    if not text.startswith("<!DOCTYPE", pos):
        return None
    bracket, close = text.find("[", pos), text.find(">", pos)
    if bracket != -1 and (close == -1 or bracket < close):
        # Internal subset: an unterminated one is still a DOCTYPE we refuse to look inside.
        end = text.find("]", bracket)
        return text[pos : end + 1] if end != -1 else text[pos:]
    return text[pos : close + 1] if close != -1 else text[pos:]


def _check_doctype(data: bytes) -> None:
    doctype = _doctype_of(_scan_text(data))
    if doctype is not None and _DOCTYPE_FORBIDDEN.search(doctype):
        raise ParseError(
            "DOCTYPE with entity declarations or an external DTD is not accepted",
            code="CDA_DTD_FORBIDDEN",
        )


class _TooMany(Exception):
    pass


class _TooDeep(Exception):
    pass


class _Shape:
    """A parser target that builds nothing: it counts elements and depth, and stops at a limit."""

    def __init__(self, max_elements: int, max_depth: int) -> None:
        self.max_elements = max_elements
        self.max_depth = max_depth
        self.elements = 0
        self.depth = 0

    def start(self, tag: str, attrib: dict[str, str], nsmap: dict[str, str] | None = None) -> None:
        self.elements += 1
        self.depth += 1
        if self.elements > self.max_elements:
            raise _TooMany
        if self.depth > self.max_depth:
            raise _TooDeep

    def end(self, tag: str) -> None:
        self.depth -= 1

    def data(self, data: str) -> None:
        pass

    def close(self) -> None:
        return None


def _xml_error(exc: etree.XMLSyntaxError, max_depth: int) -> ParseError:
    message = str(exc)
    if "Excessive depth" in message:  # libxml2's own bound (256 without huge_tree)
        return ParseError(f"CDA is nested deeper than {min(max_depth, 256)} levels", code="CDA_TOO_DEEP")
    if "Resource limit exceeded" in message or "huge" in message.lower():
        return ParseError(f"CDA exceeds parser limits: {message}", code="CDA_TOO_LARGE")
    if "amplification" in message or "Detected an entity reference loop" in message:
        return ParseError("entity expansion refused", code="CDA_DTD_FORBIDDEN")
    return ParseError(f"not well-formed XML: {message}", code="CDA_NOT_XML")


def _check_shape(data: bytes, max_elements: int, max_depth: int) -> bool:
    """Refuse a document with too many elements or too deep *before* a tree is built.

    A 19 MiB document of 5 million empty elements fits the size limit but takes
    close to a gigabyte as an lxml tree; counting them with a target parser keeps
    memory flat and stops at the first element beyond the limit. That count calls
    Python for every element (it cost as much as the parse itself), so it runs only
    when it can matter: each element opens with ``<``, and a document with no more
    ``<`` than ``max_elements`` cannot exceed it. Returns whether the depth was
    checked here; when not, :func:`_check_depth` does it on the (bounded) tree.
    """
    if data.count(b"<") <= max_elements:
        return False
    parser = etree.XMLParser(
        target=_Shape(max_elements, max_depth), resolve_entities=False, no_network=True, load_dtd=False,
        huge_tree=False,
    )
    try:
        etree.fromstring(data, parser)
    except _TooMany:
        raise ParseError(
            f"CDA has more than {max_elements} elements", code="CDA_TOO_MANY_ELEMENTS"
        ) from None
    except _TooDeep:
        raise ParseError(f"CDA is nested deeper than {max_depth} levels", code="CDA_TOO_DEEP") from None
    except etree.XMLSyntaxError as exc:
        raise _xml_error(exc, max_depth) from exc
    except ValueError as exc:
        raise ParseError(f"not XML: {exc}", code="CDA_NOT_XML") from exc
    return True


@functools.cache
def _deeper_than(depth: int) -> str:
    """XPath true when an element lies below ``depth`` levels (the root is level 1)."""
    return "boolean(/*" + "/*" * depth + ")"


def _check_depth(root: etree._Element, max_depth: int) -> None:
    # libxml2 refuses 256 levels by itself; below that, a walk in C, level by level
    if max_depth < 256 and root.xpath(_deeper_than(max_depth)):
        raise ParseError(f"CDA is nested deeper than {max_depth} levels", code="CDA_TOO_DEEP")


def parse_cda(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> etree._Element:
    """Parse untrusted CDA bytes; return the ``ClinicalDocument`` element.

    Raises ``ParseError`` with code ``CDA_TOO_LARGE``, ``CDA_TOO_MANY_ELEMENTS``,
    ``CDA_TOO_DEEP``, ``CDA_DTD_FORBIDDEN``, ``CDA_NOT_XML`` or ``CDA_NOT_CDA``.
    ``max_depth`` above 256 is libxml2's own limit (without ``huge_tree``), still
    reported as ``CDA_TOO_DEEP``.
    """
    data = bytes(data)
    if len(data) > max_size:
        raise ParseError(f"CDA document is {len(data)} bytes, limit is {max_size}", code="CDA_TOO_LARGE")
    if not data.strip():
        raise ParseError("empty CDA document", code="CDA_NOT_XML")
    _check_doctype(data)
    depth_checked = _check_shape(data, max_elements, max_depth)
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise _xml_error(exc, max_depth) from exc
    except ValueError as exc:  # e.g. bytes that lxml refuses before parsing
        raise ParseError(f"not XML: {exc}", code="CDA_NOT_XML") from exc
    if root is None:
        raise ParseError("no root element", code="CDA_NOT_XML")
    if not depth_checked:
        _check_depth(root, max_depth)
    docinfo = root.getroottree().docinfo
    dtd = docinfo.internalDTD
    if docinfo.system_url or docinfo.public_id or (dtd is not None and any(True for _ in dtd.entities())):
        raise ParseError(
            "DOCTYPE with entity declarations or an external DTD is not accepted",
            code="CDA_DTD_FORBIDDEN",
        )
    if root.tag != _ROOT_TAG:
        raise ParseError(
            f"root element is {root.tag!r}, expected {_ROOT_TAG!r}", code="CDA_NOT_CDA", location="/"
        )
    return root


# ---------------------------------------------------------------------------------------------
# Header


def _find(el: etree._Element | None, path: str) -> etree._Element | None:
    if el is None:
        return None
    return el.find(path, _N)


def _findall(el: etree._Element | None, path: str) -> list[etree._Element]:
    if el is None:
        return []
    return el.findall(path, _N)


def _attr(el: etree._Element | None, name: str) -> str | None:
    if el is None:
        return None
    value = el.get(name)
    return value.strip() if value and value.strip() else None


def _text(el: etree._Element | None) -> str | None:
    """Text content with only the surrounding XML indentation removed."""
    if el is None or el.get("nullFlavor"):
        return None
    value = "".join(el.itertext()).strip()
    return value or None


def _coded(el: etree._Element | None) -> dict[str, str] | None:
    code = _attr(el, "code")
    if code is None:
        return None
    return {
        "code": code,
        "codeSystem": _attr(el, "codeSystem") or "",
        "displayName": _attr(el, "displayName") or "",
    }


def _ii(el: etree._Element | None) -> str | None:
    """An II as ``root`` or ``root^extension``."""
    root = _attr(el, "root")
    if root is None:
        return None
    ext = _attr(el, "extension")
    return f"{root}^{ext}" if ext else root


def _person(entity: etree._Element | None, person_path: str) -> Person | None:
    if entity is None:
        return None
    ident = next((i for i in _findall(entity, "h:id") if _attr(i, "root")), None)
    device = _find(entity, "h:assignedAuthoringDevice")
    if device is not None and _find(entity, person_path) is None:
        # An author that is software, not a person (CDA R2 AssignedAuthor choice):
        # the XDS author becomes an ActorSystem and the FHIR author a Device.
        return Person(
            id=_attr(ident, "extension"),
            id_root=_attr(ident, "root"),
            profession=_coded(_find(entity, "h:code")),
            device=True,
            software=_text(_find(device, "h:softwareName")),
            model=_text(_find(device, "h:manufacturerModelName")),
        )
    name = _find(entity, f"{person_path}/h:name")
    person = Person(
        id=_attr(ident, "extension"),
        id_root=_attr(ident, "root"),
        family=_text(_find(name, "h:family")),
        given=_text(_find(name, "h:given")),
        prefix=_text(_find(name, "h:prefix")),
        profession=_coded(_find(entity, "h:code")),
    )
    return person if any((person.id, person.id_root, person.family, person.given)) else None


def _organization(org: etree._Element | None) -> Organization | None:
    if org is None:
        return None
    ident = next((i for i in _findall(org, "h:id") if _attr(i, "root")), None)
    result = Organization(
        id=_attr(ident, "extension"),
        id_root=_attr(ident, "root"),
        name=_text(_find(org, "h:name")),
        industry=_coded(_find(org, "h:standardIndustryClassCode")),
    )
    return result if any((result.id, result.id_root, result.name, result.industry)) else None


def _author(el: etree._Element) -> Author:
    assigned = _find(el, "h:assignedAuthor")
    return Author(
        person=_person(assigned, "h:assignedPerson"),
        organization=_organization(_find(assigned, "h:representedOrganization")),
        time=_attr(_find(el, "h:time"), "value"),
        function=_coded(_find(el, "h:functionCode")),
    )


def _first(values: list[str] | None) -> str | None:
    return values[0] if values else None


def _patient(role: etree._Element | None) -> PatientIdentity:
    identifiers = []
    for ident in _findall(role, "h:id"):
        value, oid = _attr(ident, "extension"), _attr(ident, "root")
        if value is None:
            continue  # nullFlavor or root-only: not a patient identifier we can use
        identifiers.append(
            Identifier(
                value=value,
                oid=oid,
                namespace=_attr(ident, "assigningAuthorityName"),
                type_code="INS" if oid in INS_OIDS else "PI",
            )
        )
    patient = _find(role, "h:patient")
    families: dict[str | None, str] = {}
    givens: dict[str | None, list[str]] = {}
    for name in _findall(patient, "h:name"):
        for part in _findall(name, "h:family"):
            if (text := _text(part)) is not None:
                families.setdefault(_attr(part, "qualifier"), text)
        for part in _findall(name, "h:given"):
            if (text := _text(part)) is not None:
                givens.setdefault(_attr(part, "qualifier"), []).append(text)
    qualified = any(q is not None for q in (*families, *givens))
    plain_given = givens.get(None, [])
    birthplace = _find(patient, "h:birthplace/h:place/h:addr")
    return PatientIdentity(
        identifiers=tuple(identifiers),
        birth_family=families.get("BR") if qualified else families.get(None),
        birth_given_list=" ".join(plain_given) or None,
        first_given=_first(givens.get("BR")) if qualified else _first(plain_given),
        used_family=families.get("CL"),
        used_given=_first(givens.get("CL")),
        gender=_attr(_find(patient, "h:administrativeGenderCode"), "code"),
        birth_date=(_attr(_find(patient, "h:birthTime"), "value") or "")[:8] or None,
        birthplace_cog=_text(_find(birthplace, "h:county")) or _text(_find(birthplace, "h:country")),
    )


def parse_header(root: etree._Element) -> CdaHeader:
    """Read the CDA header into ``CdaHeader``; a missing ``id`` raises ``CDA_ID_MISSING``."""
    doc_id = _find(root, "h:id")
    id_root = _attr(doc_id, "root")
    if id_root is None:
        raise ValidationError("ClinicalDocument/id@root is missing", code="CDA_ID_MISSING", location="/id")

    legal = _find(root, "h:legalAuthenticator")
    legal_author = None
    if legal is not None:
        entity = _find(legal, "h:assignedEntity")
        legal_author = Author(
            person=_person(entity, "h:assignedPerson"),
            organization=_organization(_find(entity, "h:representedOrganization")),
            time=_attr(_find(legal, "h:time"), "value"),
        )

    service = _find(root, "h:documentationOf/h:serviceEvent")
    practice = None
    for org in root.iterfind(
        "h:documentationOf/h:serviceEvent/h:performer/h:assignedEntity/h:representedOrganization"
        "/h:standardIndustryClassCode",
        _N,
    ):
        if (practice := _coded(org)) is not None:
            break

    related = _find(root, "h:relatedDocument")
    body = _find(root, "h:component")
    nonxml = _find(body, "h:nonXMLBody")
    level = 1 if nonxml is not None else 3
    media_type = None
    if nonxml is not None:
        # CDA ED default media type is text/plain when the attribute is absent.
        media_type = _attr(_find(nonxml, "h:text"), "mediaType") or "text/plain"

    return CdaHeader(
        id_root=id_root,
        id_extension=_attr(doc_id, "extension"),
        set_id=_ii(_find(root, "h:setId")),
        version_number=_attr(_find(root, "h:versionNumber"), "value"),
        code=_coded(_find(root, "h:code")),
        title=_text(_find(root, "h:title")),
        effective_time=_attr(_find(root, "h:effectiveTime"), "value"),
        confidentiality=_coded(_find(root, "h:confidentialityCode")),
        language=_attr(_find(root, "h:languageCode"), "code"),
        template_ids=tuple(t for t in (_attr(el, "root") for el in _findall(root, "h:templateId")) if t),
        patient=_patient(_find(root, "h:recordTarget/h:patientRole")),
        authors=tuple(_author(el) for el in _findall(root, "h:author")),
        custodian=_organization(
            _find(root, "h:custodian/h:assignedCustodian/h:representedCustodianOrganization")
        ),
        legal_authenticator=legal_author,
        service_event_code=_coded(_find(service, "h:code")),
        service_start=_attr(_find(service, "h:effectiveTime/h:low"), "value"),
        service_stop=_attr(_find(service, "h:effectiveTime/h:high"), "value"),
        practice_setting=practice,
        facility_type=_coded(
            _find(root, "h:componentOf/h:encompassingEncounter/h:location/h:healthCareFacility/h:code")
        ),
        parent_document_id=_ii(_find(related, "h:parentDocument/h:id")),
        related_type=_attr(related, "typeCode"),
        level=level,
        nonxml_media_type=media_type,
    )


# ---------------------------------------------------------------------------------------------
# XSD validation (optional, slow)

_schemas: dict[Path, etree.XMLSchema] = {}
_schemas_lock = threading.Lock()


def find_cda_xsd(xsd_dir: Path) -> Path:
    """The ``CDA_extended.xsd`` entry point under ``xsd_dir`` (searched recursively)."""
    xsd_dir = Path(xsd_dir)
    if xsd_dir.is_file() and xsd_dir.name == _XSD_ENTRY:
        return xsd_dir
    found = sorted(xsd_dir.rglob(_XSD_ENTRY), key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise FileNotFoundError(f"{_XSD_ENTRY} not found under {xsd_dir}")
    return found[0]


def _schema(xsd_dir: Path) -> etree.XMLSchema:
    key = Path(xsd_dir).resolve()
    with _schemas_lock:
        schema = _schemas.get(key)
        if schema is None:
            entry = find_cda_xsd(key)
            # The schema files are ours (configured), but still never fetched from the network.
            doc = etree.parse(str(entry), _parser())
            schema = _schemas[key] = etree.XMLSchema(doc)
    return schema


def validate_xsd(root: etree._Element, xsd_dir: Path) -> list[Finding]:
    """Validate against the CDA schema found under ``xsd_dir``; one Finding per XSD error.

    Optional and slow compared with the rest of the pipeline (see the module docstring); the
    compiled schema is cached per directory. At most 50 findings are returned.
    """
    schema = _schema(Path(xsd_dir))
    # One compiled schema is shared; its error log is per object, so validate one at a time.
    with _schemas_lock:
        if schema.validate(root.getroottree()):
            return []
        errors = list(schema.error_log)[:_MAX_XSD_FINDINGS]
    findings = []
    for error in errors:
        findings.append(
            Finding(
                code="CDA_XSD_INVALID",
                message=error.message,
                location=error.path or f"line {error.line}",
                severity="error",
            )
        )
    return findings
