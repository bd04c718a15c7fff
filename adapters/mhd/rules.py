"""PDSm ITI-65 structural rules: what a receiver checks before storing a transaction Bundle.

Pure functions over the Bundle as R4 JSON (a plain dict): no I/O, no clock. The MHD
simulator uses them to accept or reject a submission the way the DMP PDSm endpoint
would, and they are small enough to run on every request.

Only the rules that decide whether the documents can be stored are checked here
(PDSm cardinalities, attachment ↔ Binary consistency, request methods). The generic
R4 schema check (``check_r4b``) is separate because it costs ~100 ms on a cold import
and a few ms per Bundle; terminology bindings are out of scope.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator
from typing import Any

from gateway.model import Finding

__all__ = [
    "SUBMISSIONSET_SYSTEM",
    "check_iti65",
    "check_r4b",
    "document_references",
    "master_identifier",
    "patient_id",
    "issue_code",
]

SUBMISSIONSET_SYSTEM = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"

# Finding code → OperationOutcome issue code (http://hl7.org/fhir/issue-type).
_ISSUE_CODES = {
    "MHD_NOT_BUNDLE": "structure",
    "MHD_MEDIA_TYPE": "not-supported",
    "MHD_BUNDLE_TYPE": "value",
    "MHD_FHIR_INVALID": "structure",
    "FHIR_INVALID": "structure",  # gateway.core.fhir.validate
    "MHD_ENTRY": "structure",
    "MHD_METHOD": "not-supported",
    "MHD_SUBMISSIONSET": "invariant",
    "MHD_NO_DOCUMENT": "required",
    "MHD_REQUIRED": "required",
    "MHD_VALUE": "value",
    "MHD_ATTACHMENT_URL": "invalid",
    "MHD_BINARY_DATA": "required",
    "MHD_HASH_MISMATCH": "value",
    "MHD_SIZE_MISMATCH": "value",
    "MHD_DUPLICATE": "duplicate",
    "MHD_NOT_REFERENCED": "invariant",
}


def issue_code(finding_code: str) -> str:
    """The OperationOutcome ``issue.code`` for one of our finding codes."""
    return _ISSUE_CODES.get(finding_code, "processing")


def _entries(bundle: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any], dict[str, Any]]]:
    for index, entry in enumerate(bundle.get("entry") or []):
        if isinstance(entry, dict):
            resource = entry.get("resource")
            yield index, entry, resource if isinstance(resource, dict) else {}


def document_references(bundle: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """``(entry index, resource)`` of every DocumentReference in the Bundle, in order."""
    return [(i, r) for i, _e, r in _entries(bundle) if r.get("resourceType") == "DocumentReference"]


def master_identifier(bundle: dict[str, Any]) -> tuple[str | None, str] | None:
    """``(system, value)`` of the first DocumentReference's masterIdentifier, if any."""
    for _i, resource in document_references(bundle):
        ident = resource.get("masterIdentifier") or {}
        if isinstance(ident, dict) and ident.get("value"):
            return ident.get("system"), str(ident["value"])
    return None


def patient_id(bundle: dict[str, Any]) -> str | None:
    """The patient a submission is about: the INS of a conditional reference, else the reference."""
    for _i, resource in document_references(bundle):
        ref = (resource.get("subject") or {}).get("reference")
        if not isinstance(ref, str):
            continue
        # P4D references the patient conditionally: Patient?identifier=<system>|<INS>
        if "?identifier=" in ref:
            return ref.split("?identifier=", 1)[1].rsplit("|", 1)[-1]
        return ref
    return None


def _is_submissionset(resource: dict[str, Any]) -> bool:
    if resource.get("resourceType") != "List":
        return False
    codings = (resource.get("code") or {}).get("coding") or []
    return any(c.get("code") == "submissionset" for c in codings if isinstance(c, dict))


def _missing(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def check_iti65(bundle: Any) -> list[Finding]:
    """Check a PDSm ITI-65 transaction Bundle; return errors (empty list: acceptable).

    Locations are FHIRPath-like (``Bundle.entry[1].resource.custodian``) so they can go
    straight into ``OperationOutcome.issue.expression``.
    """
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return [Finding("MHD_NOT_BUNDLE", "the body is not a FHIR Bundle", "Bundle")]
    if bundle.get("type") != "transaction":
        return [Finding("MHD_BUNDLE_TYPE", "Bundle.type must be 'transaction'", "Bundle.type")]

    findings: list[Finding] = []
    for index, entry, resource in _entries(bundle):
        findings += _check_entry(index, entry, resource)
    submission_sets = [(i, r) for i, _e, r in _entries(bundle) if _is_submissionset(r)]
    if len(submission_sets) != 1:
        findings.append(
            Finding(
                "MHD_SUBMISSIONSET",
                f"exactly one SubmissionSet List (code submissionset) is required, found {len(submission_sets)}",
                "Bundle.entry",
            )
        )
    docs = document_references(bundle)
    if not docs:
        findings.append(
            Finding("MHD_NO_DOCUMENT", "at least one DocumentReference is required", "Bundle.entry")
        )
    return findings + _check_documents(docs, _full_urls(bundle), submission_sets)


def _check_entry(index: int, entry: dict[str, Any], resource: dict[str, Any]) -> list[Finding]:
    """One Bundle entry: a resource, a fullUrl, and a POST (or the P4D replacement PATCH) request."""
    where = f"Bundle.entry[{index}]"
    if not resource:
        return [Finding("MHD_ENTRY", "entry without a resource", f"{where}.resource")]
    findings: list[Finding] = []
    full_url = entry.get("fullUrl")
    if not (isinstance(full_url, str) and full_url):
        findings.append(Finding("MHD_REQUIRED", "entry.fullUrl is required", f"{where}.fullUrl"))
    method = (entry.get("request") or {}).get("method")
    # P4D replacement draft: a Parameters PATCH supersedes the old DocumentReference.
    patch_ok = method == "PATCH" and resource.get("resourceType") == "Parameters"
    if method != "POST" and not patch_ok:
        findings.append(
            Finding(
                "MHD_METHOD",
                f"entry.request.method must be POST, got {method!r}",
                f"{where}.request.method",
            )
        )
    return findings


def _full_urls(bundle: dict[str, Any]) -> dict[str, tuple[int, dict[str, Any]]]:
    """fullUrl → (entry index, resource) of the entries that have both (the last one wins)."""
    return {
        entry["fullUrl"]: (index, resource)
        for index, entry, resource in _entries(bundle)
        if resource and isinstance(entry.get("fullUrl"), str) and entry["fullUrl"]
    }


def _listed(submission_sets: list[tuple[int, dict[str, Any]]]) -> set[str]:
    """The references of the SubmissionSet Lists' entry.item."""
    listed: set[str] = set()
    for _i, ss in submission_sets:
        for item in ss.get("entry") or []:
            ref = (item.get("item") or {}).get("reference") if isinstance(item, dict) else None
            if isinstance(ref, str):
                listed.add(ref)
    return listed


def _check_documents(
    docs: list[tuple[int, dict[str, Any]]],
    full_urls: dict[str, tuple[int, dict[str, Any]]],
    submission_sets: list[tuple[int, dict[str, Any]]],
) -> list[Finding]:
    """Each DocumentReference: its own rules, a masterIdentifier of its own, listed in the SubmissionSet."""
    listed = _listed(submission_sets)
    full_url_of = {index: url for url, (index, _r) in full_urls.items()}
    seen_ids: set[tuple[Any, Any]] = set()
    findings: list[Finding] = []
    for index, doc in docs:
        findings.extend(_check_document(index, doc, full_urls))
        ident = doc.get("masterIdentifier") or {}
        key = (ident.get("system"), ident.get("value"))
        if ident.get("value") and key in seen_ids:
            findings.append(
                Finding(
                    "MHD_DUPLICATE",
                    "two DocumentReferences share a masterIdentifier",
                    f"Bundle.entry[{index}].resource.masterIdentifier",
                )
            )
        seen_ids.add(key)
        url = full_url_of.get(index)
        if submission_sets and url and url not in listed:
            findings.append(
                Finding(
                    "MHD_NOT_REFERENCED",
                    "DocumentReference is not listed in the SubmissionSet entries",
                    f"Bundle.entry[{index}].fullUrl",
                )
            )
    return findings


def _check_document(
    index: int, doc: dict[str, Any], full_urls: dict[str, tuple[int, dict[str, Any]]]
) -> list[Finding]:
    where = f"Bundle.entry[{index}].resource"
    findings: list[Finding] = []
    master = doc.get("masterIdentifier")
    if not isinstance(master, dict) or _missing(master.get("value")):
        findings.append(
            Finding(
                "MHD_REQUIRED", "DocumentReference.masterIdentifier is required", f"{where}.masterIdentifier"
            )
        )
    if doc.get("status") != "current":
        findings.append(
            Finding(
                "MHD_VALUE",
                f"DocumentReference.status must be 'current', got {doc.get('status')!r}",
                f"{where}.status",
            )
        )
    for name in ("subject", "custodian", "date"):
        if _missing(doc.get(name)):
            findings.append(
                Finding("MHD_REQUIRED", f"DocumentReference.{name} is required", f"{where}.{name}")
            )
    contents = doc.get("content") or []
    if not contents:
        findings.append(Finding("MHD_REQUIRED", "DocumentReference.content is required", f"{where}.content"))
    for c_index, content in enumerate(contents):
        attachment = content.get("attachment") if isinstance(content, dict) else None
        at = f"{where}.content[{c_index}].attachment"
        if not isinstance(attachment, dict):
            findings.append(Finding("MHD_REQUIRED", "content.attachment is required", at))
            continue
        absent = [n for n in ("contentType", "size", "hash", "title", "url") if _missing(attachment.get(n))]
        findings.extend(
            Finding("MHD_REQUIRED", f"DocumentReference.content.attachment.{n} is required", f"{at}.{n}")
            for n in absent
        )
        if "url" in absent:
            continue
        target = full_urls.get(attachment["url"])
        if target is None or target[1].get("resourceType") != "Binary":
            findings.append(
                Finding(
                    "MHD_ATTACHMENT_URL",
                    "attachment.url does not point at a Binary entry of the Bundle",
                    f"{at}.url",
                )
            )
            continue
        findings.extend(_check_binary(target[0], target[1], attachment, at))
    return findings


def _check_binary(index: int, binary: dict[str, Any], attachment: dict[str, Any], at: str) -> list[Finding]:
    data = binary.get("data")
    where = f"Bundle.entry[{index}].resource.data"
    if not isinstance(data, str) or not data:
        return [Finding("MHD_BINARY_DATA", "Binary.data is required", where)]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return [Finding("MHD_BINARY_DATA", "Binary.data is not valid base64", where)]
    findings: list[Finding] = []
    size = attachment.get("size")
    if size is not None and size != len(raw):
        findings.append(
            Finding(
                "MHD_SIZE_MISMATCH",
                f"attachment.size is {size}, the Binary holds {len(raw)} bytes",
                f"{at}.size",
            )
        )
    digest = base64.b64encode(hashlib.sha1(raw).digest()).decode("ascii")
    if attachment.get("hash") is not None and attachment.get("hash") != digest:
        findings.append(
            Finding(
                "MHD_HASH_MISMATCH",
                "attachment.hash is not the base64 SHA-1 of the Binary data",
                f"{at}.hash",
            )
        )
    return findings


def check_r4b(bundle: dict[str, Any]) -> list[Finding]:
    """Parse the Bundle (and so every entry resource) with ``fhir.resources.R4B``.

    Each pydantic error becomes one ``MHD_FHIR_INVALID`` finding located at the
    offending element. Imported lazily: the models take a while to load.
    """
    import pydantic
    from fhir.resources.R4B.bundle import Bundle

    try:
        Bundle.model_validate(bundle)
    except pydantic.ValidationError as exc:
        return [
            Finding("MHD_FHIR_INVALID", f"{err['msg']} ({err['type']})", _fhirpath(err["loc"]))
            for err in exc.errors()
        ]
    except KeyError as exc:  # fhir_core looks resourceType up in a dict
        return [Finding("MHD_FHIR_INVALID", f"unknown resourceType {exc.args[0]!r}", "Bundle.entry")]
    except (TypeError, ValueError) as exc:
        return [Finding("MHD_FHIR_INVALID", str(exc)[:300], "Bundle")]
    return []


def _fhirpath(loc: tuple[Any, ...]) -> str:
    path = "Bundle"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path
