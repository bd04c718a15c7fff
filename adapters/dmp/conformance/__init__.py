"""A DMP conformance checker written from the ANS and IHE texts, not from our DMP client.

It reads requests with lxml and the standard library's MIME parser, verifies XML
signatures with its own lxml + cryptography set-up, and imports nothing from
``adapters.dmp.{client,soap,ebrim,mtom,vihf}`` nor from ``gateway.core`` (a shared mistake
would be invisible). Every rule has a stable code and a reference (``RULES``); a
request gets a ``Verdict`` listing the violations.

Modules: ``mime`` (MTOM/XOP package), ``envelope`` (SOAP 1.2, WS-Addressing, WS-Security),
``xmldsig`` (signature verification), ``assertion`` (VIHF), ``registry_objects`` (ebRIM
reading), ``identifiers`` (CX/XON/XCN/DTM, INS, Struct_IdNat), ``metadata`` (XDS rules),
``xades`` (submission-set signature), ``update`` (ITI-57), ``schema`` (ebRS XSD),
``valuesets`` (JDV_J57…J66 data), ``checker`` (the order in which layers are judged).
"""

from __future__ import annotations

from adapters.dmp.conformance import assertion, envelope, metadata, update, xades  # noqa: F401  (register rules)
from adapters.dmp.conformance.checker import TRANSACTIONS, ConformanceChecker, Verdict
from adapters.dmp.conformance.metadata import KnownEntry, RegistryView
from adapters.dmp.conformance.schema import DEFAULT_XSD_DIR
from adapters.dmp.conformance.violation import RULES, Rule, Violation

__all__ = [
    "RULES",
    "TRANSACTIONS",
    "ConformanceChecker",
    "DEFAULT_XSD_DIR",
    "KnownEntry",
    "RegistryView",
    "Rule",
    "Verdict",
    "Violation",
]
