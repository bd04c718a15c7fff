"""ebRS 3.0 / IHE XDS.b schema validation with lxml.

The schemas are the OASIS ebRS 3.0 (``rim``, ``rs``, ``lcm``, ``query``) and IHE
``XDS.b_DocumentRepository.xsd`` files of ``../shared/corpus/xds/xsd`` (see its SOURCES.md).
Validation runs on a copy of the request element with each ``xop:Include`` replaced by the
base64 content it stands for (XOP 1.0 §3.4: the XML Infoset is the reconstituted one), so an
MTOM request validates as its inline equivalent would.
"""

from __future__ import annotations

import base64
import copy
from functools import cache
from pathlib import Path

from lxml import etree

from adapters.dmp.conformance.names import NS
from adapters.dmp.conformance.violation import Rule, Violation

__all__ = ["DEFAULT_XSD_DIR", "Schemas", "load_schemas", "SCHEMA"]

DEFAULT_XSD_DIR = Path(__file__).resolve().parents[4] / "shared" / "corpus" / "xds" / "xsd"

SCHEMA = Rule(
    "XDS-SCHEMA-01",
    "the ebRS/XDS.b part of the request is valid against the schemas",
    "OASIS ebRS 3.0 rim.xsd/lcm.xsd/query.xsd/rs.xsd; IHE XDS.b_DocumentRepository.xsd (ITI TF-2b §3.41.4.1.2)",
)


# rim.xsd imports http://www.w3.org/2001/xml.xsd; the simulator has no network, so that one
# schema is served locally, declaring the xml: attributes as the W3C XML namespace document does.
_XML_XSD = b"""<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="http://www.w3.org/XML/1998/namespace"
           xml:lang="en">
  <xs:attribute name="lang"><xs:simpleType><xs:union memberTypes="xs:language">
    <xs:simpleType><xs:restriction base="xs:string"><xs:enumeration value=""/></xs:restriction></xs:simpleType>
  </xs:union></xs:simpleType></xs:attribute>
  <xs:attribute name="space"><xs:simpleType><xs:restriction base="xs:NCName">
    <xs:enumeration value="default"/><xs:enumeration value="preserve"/></xs:restriction></xs:simpleType></xs:attribute>
  <xs:attribute name="base" type="xs:anyURI"/>
  <xs:attribute name="id" type="xs:ID"/>
  <xs:attributeGroup name="specialAttrs">
    <xs:attribute ref="xml:base"/><xs:attribute ref="xml:lang"/><xs:attribute ref="xml:space"/>
    <xs:attribute ref="xml:id"/>
  </xs:attributeGroup>
</xs:schema>"""


class _LocalXmlNamespace(etree.Resolver):
    def resolve(self, url, pubid, context):  # type: ignore[no-untyped-def]
        """Serve xml.xsd locally; leave every other URL to the default resolution."""
        if url == "http://www.w3.org/2001/xml.xsd":
            return self.resolve_string(_XML_XSD, context)
        return None


def _parse(source: Path | bytes, base_url: str | None = None) -> etree._ElementTree:
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    parser.resolvers.add(_LocalXmlNamespace())
    if isinstance(source, Path):
        return etree.parse(str(source), parser)
    return etree.ElementTree(etree.fromstring(source, parser, base_url=base_url))


class Schemas:
    """The two entry points: XDS.b (ITI-41) and ebRS (ITI-18 query, ITI-57 lcm)."""

    def __init__(self, xsd_dir: Path) -> None:
        self.xdsb = etree.XMLSchema(_parse(xsd_dir / "IHE" / "XDS.b_DocumentRepository.xsd"))
        wrapper = (
            '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
            f'<xs:import namespace="{NS["lcm"]}" schemaLocation="{(xsd_dir / "ebRS" / "lcm.xsd").as_uri()}"/>'
            f'<xs:import namespace="{NS["query"]}" schemaLocation="{(xsd_dir / "ebRS" / "query.xsd").as_uri()}"/>'
            "</xs:schema>"
        )
        self.ebrs = etree.XMLSchema(_parse(wrapper.encode(), base_url=xsd_dir.as_uri() + "/"))

    def validate(self, element: etree._Element, parts: dict[str, bytes]) -> list[Violation]:
        """Schema violations of ``element`` with its XOP parts inlined (at most five reported)."""
        schema = (
            self.xdsb if element.tag == f"{{{NS['xdsb']}}}ProvideAndRegisterDocumentSetRequest" else self.ebrs
        )
        infoset = copy.deepcopy(element)
        for include in list(infoset.iter(f"{{{NS['xop']}}}Include")):
            parent = include.getparent()
            if parent is None:
                continue
            cid = (include.get("href") or "").removeprefix("cid:")
            parent.remove(include)
            parent.text = base64.b64encode(parts.get(cid, b"")).decode()
        if schema.validate(infoset):
            return []
        return [SCHEMA(f"line {e.line}: {e.message}") for e in list(schema.error_log)[:5]]


@cache
def load_schemas(xsd_dir: Path) -> Schemas:
    """Compile once per directory (compilation costs a few hundred milliseconds)."""
    return Schemas(xsd_dir)
