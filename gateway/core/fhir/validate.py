"""Validation of an ITI-65 Bundle: FHIR R4 structure, then the PDSm rules we rely on.

Two layers, both reported as ``Finding``s with a FHIRPath-like ``location``
(``Bundle.entry[1].resource.custodian``):

1. **Structure** (``FHIR_INVALID``): the whole Bundle is parsed with
   ``fhir.resources.R4B`` (R4B has the same Bundle, List, DocumentReference, Binary,
   Patient, Practitioner, PractitionerRole and Organization as R4; fhir.resources 8
   ships no R4 package). The Bundle model parses each ``entry.resource`` and each
   ``contained`` resource with its own class, so types, unknown elements and
   required elements are all checked in one pass.
2. **PDSm** (``PDSM_*``), on the raw dict so it runs even when parsing failed: the
   cardinalities PDSm adds on top of R4 (one SubmissionSet with designationType and
   sourceId, DocumentReference masterIdentifier / date / custodian / author /
   attachment size-hash-title-contentType / context.period.start), plus reference
   integrity inside the transaction (``urn:uuid:`` and ``#contained`` targets exist).

Not checked: terminology bindings, slicing discriminators, FHIRPath invariants other
than the references above. Cost: about a millisecond or two for a one-document
Bundle once the models are imported (the import itself takes ~0.2 s), so it is
cheap enough for ``relais check`` and the MHD simulator; it is not on the hot path.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterator, Mapping
from typing import Any

import structlog

from gateway.core.fhir.pdsm import DESIGNATION_TYPE_URL, MHD_LIST_TYPES, SOURCE_ID_URL
from gateway.core.fhir.structure import validate_structure
from gateway.model import Finding

__all__ = ["validate_bundle", "validate_structure", "validate_pdsm"]

log = structlog.get_logger(__name__)


def _entries(bundle: Mapping[str, Any]) -> Iterator[tuple[int, Mapping[str, Any], Mapping[str, Any]]]:
    for index, entry in enumerate(bundle.get("entry") or []):
        if isinstance(entry, Mapping):
            resource = entry.get("resource")
            yield index, entry, resource if isinstance(resource, Mapping) else {}


def _has_extension(resource: Mapping[str, Any], url: str) -> bool:
    return any(isinstance(e, Mapping) and e.get("url") == url for e in resource.get("extension") or [])


def _is_submission_set(resource: Mapping[str, Any]) -> bool:
    codings = (resource.get("code") or {}).get("coding") or []
    return any(c.get("system") == MHD_LIST_TYPES and c.get("code") == "submissionset" for c in codings)


def _local_refs(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every ``reference`` value under ``node`` with its path (contained resources excluded)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value, f"{path}.reference"
            elif key != "contained":
                yield from _local_refs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _local_refs(value, f"{path}[{index}]")


def _check_references(
    resource: Mapping[str, Any], base: str, full_urls: set[str], findings: list[Finding]
) -> None:
    contained = resource.get("contained") or []
    contained_ids = {c.get("id") for c in contained if isinstance(c, Mapping)}
    nodes: list[tuple[Any, str]] = [(resource, base)]
    nodes += [(c, f"{base}.contained[{i}]") for i, c in enumerate(contained)]
    for node, node_path in nodes:
        for ref, where in _local_refs(node, node_path):
            if ref.startswith("#") and ref[1:] not in contained_ids:
                findings.append(Finding("PDSM_REFERENCE", f"no contained resource {ref}", where))
            elif ref.startswith("urn:uuid:") and ref not in full_urls:
                findings.append(Finding("PDSM_REFERENCE", "no entry with this fullUrl", where))


def _require(
    findings: list[Finding],
    resource: Mapping[str, Any],
    base: str,
    *paths: str,
    code: str = "PDSM_CARDINALITY",
) -> None:
    for dotted in paths:
        node: Any = resource
        for key in dotted.split("."):
            node = node.get(key) if isinstance(node, Mapping) else None
        if node in (None, "", [], {}):
            findings.append(
                Finding(code, f"{dotted.rsplit('.', 1)[-1]} is required (1..1)", f"{base}.{dotted}")
            )


def _check_document_reference(
    resource: Mapping[str, Any], base: str, full_urls: set[str], findings: list[Finding]
) -> None:
    _require(findings, resource, base, "masterIdentifier", "status", "type", "subject", "date", "custodian")
    if not resource.get("author"):
        findings.append(Finding("PDSM_CARDINALITY", "author is required (1..*)", f"{base}.author"))
    contents = resource.get("content") or []
    if not contents:
        findings.append(Finding("PDSM_CARDINALITY", "content is required (1..*)", f"{base}.content"))
    for index, content in enumerate(contents):
        where = f"{base}.content[{index}]"
        _require(
            findings,
            content,
            where,
            "attachment.contentType",
            "attachment.size",
            "attachment.hash",
            "attachment.title",
            "format",
        )
        attachment = content.get("attachment") or {}
        url = attachment.get("url")
        if isinstance(url, str) and url.startswith("urn:uuid:") and url not in full_urls:
            findings.append(
                Finding("PDSM_REFERENCE", "attachment.url matches no entry", f"{where}.attachment.url")
            )
        digest = attachment.get("hash")
        if isinstance(digest, str) and digest:
            try:
                ok = len(base64.b64decode(digest, validate=True)) == 20
            except (binascii.Error, ValueError):
                ok = False
            if not ok:
                findings.append(
                    Finding("PDSM_HASH", "hash is not a base64 SHA-1", f"{where}.attachment.hash")
                )
    _require(findings, resource, base, "context.period.start")


def _check_submission_set(resource: Mapping[str, Any], base: str, findings: list[Finding]) -> None:
    for url, name in ((DESIGNATION_TYPE_URL, "designationType"), (SOURCE_ID_URL, "sourceId")):
        if not _has_extension(resource, url):
            findings.append(Finding("PDSM_CARDINALITY", f"extension {name} is required", f"{base}.extension"))
    # MHD: identifier:uniqueId (use usual) is 1..1; the entryUUID slice (official) is optional.
    uses = {i.get("use") for i in resource.get("identifier") or [] if isinstance(i, Mapping)}
    if "usual" not in uses:
        findings.append(
            Finding("PDSM_CARDINALITY", "identifier uniqueId (use usual) is required", f"{base}.identifier")
        )
    _require(findings, resource, base, "subject", "date")
    if resource.get("status") != "current" or resource.get("mode") != "working":
        findings.append(Finding("PDSM_VALUE", "status must be current and mode working", f"{base}.status"))


def validate_pdsm(bundle: Mapping[str, Any]) -> list[Finding]:
    """PDSm ITI-65 rules on the raw Bundle dict (see the module docstring)."""
    findings: list[Finding] = []
    if bundle.get("type") != "transaction":
        findings.append(Finding("PDSM_VALUE", "Bundle.type must be transaction", "Bundle.type"))
    full_urls: set[str] = {e["fullUrl"] for _, e, _ in _entries(bundle) if isinstance(e.get("fullUrl"), str)}
    submission_sets: list[int] = []
    documents = 0
    for index, entry, resource in _entries(bundle):
        base = f"Bundle.entry[{index}]"
        if not entry.get("fullUrl"):
            findings.append(Finding("PDSM_CARDINALITY", "fullUrl is required", f"{base}.fullUrl"))
        request = entry.get("request") or {}
        if not request.get("method") or not request.get("url"):
            findings.append(
                Finding("PDSM_CARDINALITY", "request.method and request.url are required", f"{base}.request")
            )
        kind = resource.get("resourceType")
        where = f"{base}.resource"
        if kind == "List" and _is_submission_set(resource):
            submission_sets.append(index)
            _check_submission_set(resource, where, findings)
        elif kind == "DocumentReference":
            documents += 1
            _check_document_reference(resource, where, full_urls, findings)
        _check_references(resource, where, full_urls, findings)
    if len(submission_sets) != 1:
        findings.append(
            Finding(
                "PDSM_CARDINALITY",
                f"exactly one SubmissionSet List expected, found {len(submission_sets)}",
                "Bundle.entry",
            )
        )
    if not documents:
        findings.append(
            Finding("PDSM_CARDINALITY", "at least one DocumentReference expected", "Bundle.entry")
        )
    return findings


def validate_bundle(bundle: Mapping[str, Any]) -> list[Finding]:
    """All findings for an ITI-65 Bundle: R4 structure first, then PDSm rules."""
    started = time.perf_counter()
    findings = validate_structure(bundle) + validate_pdsm(bundle)
    log.debug(
        "fhir.bundle.validated",
        findings=len(findings),
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return findings
