"""ITI-65 wire knowledge without I/O: read a transaction-response, classify failures.

The client (``adapters.mhd.client``) only moves bytes; everything that decides what an
HTTP answer *means* lives here so it can be tested without a socket:

* ``parse_transaction_response`` — a 2xx body → ``SendResult`` fields, or why it is not a success;
* ``classify_failure``           — a non-2xx answer → ``DestinationUnavailable`` / ``DestinationRejected``;
* ``parse_retry_after``          — ``Retry-After`` as delta-seconds or HTTP-date, against an injected ``now``;
* ``summarise_outcome``          — an OperationOutcome as one log-safe line.

Retryable: HTTP 408, 429, 5xx, and any status whose OperationOutcome carries a transient
issue code (``transient``, ``throttled``, ``timeout``, ``lock-error``, ``no-store``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from gateway.errors import DestinationError, DestinationRejected, DestinationUnavailable

__all__ = [
    "document_references",
    "master_identifier",
    "RETRYABLE_STATUS",
    "TRANSIENT_ISSUES",
    "TransactionResult",
    "parse_transaction_response",
    "classify_failure",
    "parse_retry_after",
    "summarise_outcome",
    "outcome_issues",
    "searchset_count",
]

RETRYABLE_STATUS = frozenset({408, 429})
TRANSIENT_ISSUES = frozenset({"transient", "throttled", "timeout", "lock-error", "no-store"})


@dataclass(frozen=True)
class TransactionResult:
    """What a successful transaction-response told us."""

    remote_id: str | None  # the (first) DocumentReference, ``DocumentReference/<id>``
    locations: tuple[str | None, ...] = ()  # one per request entry, same order
    documents: tuple[str, ...] = ()  # every DocumentReference location
    detail: dict[str, Any] = field(default_factory=dict)


def _load(body: str | bytes | None) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _status_code(status: Any) -> int | None:
    # FHIR says "201 Created" but the PDSm example answers "201": read the leading digits.
    text = str(status or "").strip()
    digits = text.split(" ", 1)[0]
    return int(digits) if digits.isdigit() else None


def _strip_history(location: str) -> str:
    # Absolute or relative, "DocumentReference/123/_history/1" → "DocumentReference/123".
    return location.split("/_history/", 1)[0]


def parse_transaction_response(request_bundle: dict[str, Any], body: str | bytes | None) -> TransactionResult:
    """Read an ITI-65 ``transaction-response`` for ``request_bundle``.

    Raises ``DestinationUnavailable`` (code ``MHD_BAD_RESPONSE``) when the body is not a
    usable transaction-response: the server said 2xx so the documents may be stored,
    and only ``already_delivered`` can tell — a retry must not be ruled out.
    Raises ``DestinationRejected`` when an entry carries a non-2xx status.
    """
    doc = _load(body)
    if (
        not isinstance(doc, dict)
        or doc.get("resourceType") != "Bundle"
        or doc.get("type") != "transaction-response"
    ):
        raise DestinationUnavailable("2xx without a transaction-response Bundle", code="MHD_BAD_RESPONSE")
    entries = doc.get("entry") or []
    expected = len(request_bundle.get("entry") or [])
    if len(entries) != expected:
        raise DestinationUnavailable(
            f"transaction-response has {len(entries)} entries for {expected} request entries",
            code="MHD_BAD_RESPONSE",
        )
    locations: list[str | None] = []
    for index, entry in enumerate(entries):
        response = (entry or {}).get("response") or {}
        code = _status_code(response.get("status"))
        if code not in (200, 201):
            outcome = response.get("outcome")
            summary = summarise_outcome(outcome) if isinstance(outcome, dict) else ""
            raise DestinationRejected(
                f"entry {index} answered {response.get('status')!r}" + (f": {summary}" if summary else ""),
                code="MHD_ENTRY_FAILED",
                location=f"Bundle.entry[{index}]",
            )
        location = response.get("location")
        locations.append(_strip_history(location) if isinstance(location, str) and location else None)
    documents = tuple(
        loc for index, _r in document_references(request_bundle) if (loc := locations[index]) is not None
    )
    return TransactionResult(
        remote_id=documents[0] if documents else None,
        locations=tuple(locations),
        documents=documents,
        detail={"locations": locations, "documents": list(documents)},
    )


def outcome_issues(outcome: Any) -> list[dict[str, str]]:
    """``[{"severity", "code", "diagnostics", "expression"}]`` from an OperationOutcome dict."""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return []
    issues = []
    for issue in outcome.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        expression = issue.get("expression") or issue.get("location") or []
        diagnostics = issue.get("diagnostics") or ((issue.get("details") or {}).get("text")) or ""
        issues.append(
            {
                "severity": str(issue.get("severity") or ""),
                "code": str(issue.get("code") or ""),
                "diagnostics": str(diagnostics),
                "expression": ", ".join(str(e) for e in expression),
            }
        )
    return issues


def summarise_outcome(outcome: Any, *, limit: int = 5) -> str:
    """One line per issue, ``code: diagnostics (expression)``, joined with ``; ``."""
    parts = []
    for issue in outcome_issues(outcome)[:limit]:
        text = issue["code"] or "issue"
        if issue["diagnostics"]:
            text += f": {issue['diagnostics']}"
        if issue["expression"]:
            text += f" ({issue['expression']})"
        parts.append(text)
    return "; ".join(parts)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), never negative."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT by definition
        when = when.replace(tzinfo=now.tzinfo)
    return max(0.0, (when - now).total_seconds())


def classify_failure(
    status: int, body: str | bytes | None, retry_after: str | None, now: datetime
) -> DestinationError:
    """The error to raise for a non-2xx answer (returned, not raised, so callers can chain)."""
    outcome = _load(body)
    issues = outcome_issues(outcome)
    summary = summarise_outcome(outcome)
    message = f"HTTP {status}" + (f": {summary}" if summary else "")
    codes = {i["code"] for i in issues}
    if status in RETRYABLE_STATUS or status >= 500 or codes & TRANSIENT_ISSUES:
        return DestinationUnavailable(
            message, code=f"MHD_HTTP_{status}", retry_after=parse_retry_after(retry_after, now)
        )
    code = "MHD_DUPLICATE" if "duplicate" in codes else f"MHD_HTTP_{status}"
    location = next((i["expression"] for i in issues if i["expression"]), None)
    return DestinationRejected(message, code=code, location=location)


def searchset_count(body: str | bytes | None) -> int:
    """How many matching resources a searchset Bundle holds (``include`` entries ignored)."""
    doc = _load(body)
    if not isinstance(doc, dict) or doc.get("resourceType") != "Bundle":
        raise ValueError("not a Bundle")
    matches = [
        e
        for e in doc.get("entry") or []
        if isinstance(e, dict) and (e.get("search") or {}).get("mode", "match") == "match"
    ]
    if matches:
        return len(matches)
    total = doc.get("total")
    return total if isinstance(total, int) else 0


def document_references(bundle: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """``(entry index, resource)`` of every DocumentReference in a Bundle we built, in order.

    The client's own reading: the simulator's ``rules`` module checks Bundles from the
    specification and must not share code with the side it judges.
    """
    out: list[tuple[int, dict[str, Any]]] = []
    for index, entry in enumerate(bundle.get("entry") or []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "DocumentReference":
            out.append((index, resource))
    return out


def master_identifier(bundle: dict[str, Any]) -> tuple[str | None, str] | None:
    """``(system, value)`` of the first DocumentReference's masterIdentifier, if any."""
    for _i, resource in document_references(bundle):
        ident = resource.get("masterIdentifier") or {}
        if isinstance(ident, dict) and ident.get("value"):
            return ident.get("system"), str(ident["value"])
    return None
