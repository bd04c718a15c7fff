"""The operations API (``/v1``): exchanges, deliveries, identities, operator actions.

JSON in and out; errors are RFC 9457 problem documents. Viewers see the whole trace of
an exchange except what identifies or carries the patient: raw bytes, INS/IPP, the
Patient resources of the FHIR bundle, the XDS patient fields and the bodies exchanged
with destinations. Every operator action appends a hash-chained audit row (the journal's
operator operations and ``Intake.replay`` do it in the same transaction).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from gateway.errors import OperationError
from gateway.httpkit import problem
from gateway.journal.base import Journal
from gateway.journal.rows import BulkResult, iso
from gateway.model import EXCHANGE_STATUSES
from gateway.operations.health import destination_health
from gateway.operations.search import search_filters
from gateway.operations.views import exchange_detail, exchange_json, identities_view, require_configured
from gateway.web.context import WEB_KEY, WebContext

if TYPE_CHECKING:
    from gateway.web.auth import Principal

__all__ = [
    "register",
    "PRINCIPAL_KEY",
    "EXCHANGE_STATUSES",
    "ApiError",
    "exchange_trace",
    "identities_view",
    "list_filters",
    "reroute_work",
    "redact_fhir",
    "redact_xds",
    "replay_exchange",
    "retry",
    "release",
]

log = structlog.get_logger(__name__)

PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("relais_principal")
MAX_LIMIT = 500
COUNT_CAP = 10_000  # "10 000+" is as useful to a person as the exact number, and stays cheap
REDACTED = "[redacted]"
_XDS_PATIENT_KEYS = frozenset({"patientId", "sourcePatientId", "sourcePatientInfo"})


class ApiError(Exception):
    """A request the API refuses; becomes a problem document (or a flash message on the dashboard)."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra

    def response(self) -> web.Response:
        return problem(self.status, _TITLES.get(self.status, "Error"), self.detail, **self.extra)


_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}


# -- redaction for viewers ---------------------------------------------------------------------
def redact_fhir(value: Any) -> Any:
    """A copy of a FHIR resource tree without patient data (Patient resources, subjects, bodies)."""
    if isinstance(value, list):
        return [redact_fhir(v) for v in value]
    if not isinstance(value, dict):
        return value
    if value.get("resourceType") == "Patient":
        return {k: value[k] for k in ("resourceType", "id", "meta") if k in value} | {"_redacted": True}
    out: dict[str, Any] = {}
    for key, v in value.items():
        if key in ("subject", "patient", "sourcePatientInfo") and isinstance(v, dict):
            kept = {k: v[k] for k in ("reference", "type") if k in v}
            if "identifier=" in str(kept.get("reference", "")):  # PDSM4DMP's Patient?identifier=<INS>
                kept["reference"] = str(kept["reference"]).split("?", 1)[0] + "?[redacted]"
            out[key] = kept or {"_redacted": True}
        elif key == "data" and isinstance(v, str):  # Binary.data / Attachment.data: the document itself
            out[key] = REDACTED
        elif key == "ifNoneExist" or (key == "url" and isinstance(v, str) and "identifier=" in v):
            # conditional create / search: the query names the patient's INS or IPP
            out[key] = v.split("?", 1)[0] + "?[redacted]" if key == "url" else REDACTED
        else:
            out[key] = redact_fhir(v)
    return out


def redact_xds(value: Any) -> Any:
    """A copy of XDS metadata with the patient identifiers and traits masked."""
    if isinstance(value, list):
        return [redact_xds(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {k: (REDACTED if k in _XDS_PATIENT_KEYS else redact_xds(v)) for k, v in value.items()}


def _b64(data: bytes | str | None) -> str | None:
    if data is None:
        return None
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return base64.b64encode(raw).decode("ascii")


# -- reads (shared with the dashboard and the command line) -------------------------------------
async def exchange_trace(journal: Journal, exchange_id: str, *, operator: bool) -> dict[str, Any] | None:
    """The whole trace of one exchange (``relais show`` shape), trimmed to what the role may see."""
    out = await exchange_detail(journal, exchange_id)
    if out is None:
        return None
    if operator:
        row = await journal.get_exchange(out["id"])
        bodies = await journal.exchange_bodies(out["id"])
        out["patient_ins"] = row.patient_ins if row is not None else None
        out["patient_ipp"] = row.patient_ipp if row is not None else None
        out["raw_base64"] = _b64(bodies.raw if bodies is not None else None)
        if bodies is not None and bodies.document is not None:
            out["document_base64"] = _b64(bodies.document)
        for d in out["deliveries"]:
            d["attempts_detail"] = [a.as_dict() for a in await journal.attempts_for(d["id"], bodies=True)]
    else:
        out["fhir"] = redact_fhir(out.get("fhir"))
        out["xds"] = redact_xds(out.get("xds"))
        out["redacted"] = ["raw", "patient_ins", "patient_ipp", "fhir.Patient", "xds.patient", "attempt bodies"]
    return out


def _instant(value: str, name: str) -> str:
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name} must be an ISO 8601 date-time", invalid_param=name) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    # stored instants are UTC with microseconds: normalise so string comparison is time comparison
    return iso(dt.astimezone(UTC))


def list_filters(query: Any, *, operator: bool = False) -> tuple[dict[str, Any], int, int]:
    """Validate the list query (status, type, sender, since, until, control_id, patient, document, q,
    cursor, limit, offset). ``patient`` and ``document`` are operator-only; ``q`` is read by
    ``gateway.operations.search`` (an INS, IPP or uniqueId only for operators); ``cursor`` is the keyset
    position that ``next`` links carry (``offset`` stays for old links)."""
    filters: dict[str, Any] = {}
    _status_filter(query, filters)
    for param, key in (("type", "message_type"), ("sender", "sender"), ("control_id", "control_id")):
        if value := _text(query, param):
            filters[key] = value
    _patient_data_filters(query, filters, operator=operator)
    if term := _text(query, "q"):
        _kind, found = search_filters(term, operator=operator)
        filters |= found
    for param in ("since", "until"):
        if query.get(param):
            filters[param] = _instant(query[param], param)
    limit, offset = _page(query, filters)
    return filters, limit, offset


def _text(query: Any, param: str) -> str:
    return (query.get(param) or "").strip()


def _status_filter(query: Any, filters: dict[str, Any]) -> None:
    status = _text(query, "status")
    if status and status not in EXCHANGE_STATUSES:
        raise ApiError(400, f"status must be one of {', '.join(EXCHANGE_STATUSES)}", invalid_param="status")
    if status:
        filters["status"] = status


def _patient_data_filters(query: Any, filters: dict[str, Any], *, operator: bool) -> None:
    for param in ("patient", "document"):
        value = _text(query, param)
        if value and not operator:
            raise ApiError(403, f"searching by {param} needs the operator role (patient data)", invalid_param=param)
        if value:
            filters[param] = value


def _page(query: Any, filters: dict[str, Any]) -> tuple[int, int]:
    """``limit`` and ``offset``; a ``cursor`` becomes the keyset filter ``before_seq``."""
    try:
        limit = int(query.get("limit", 50))
        offset = int(query.get("offset", 0))
        cursor = query.get("cursor")
        if cursor:
            filters["before_seq"] = int(cursor)
    except ValueError:
        raise ApiError(400, "limit, offset and cursor must be integers", invalid_param="limit") from None
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise ApiError(400, f"limit must be 1..{MAX_LIMIT} and offset >= 0", invalid_param="limit")
    return limit, offset


# -- actions (shared with the dashboard) -------------------------------------------------------
async def replay_exchange(ctx: WebContext, exchange_id: str, principal: Principal) -> dict[str, Any]:
    """Run the pipeline again on a stored exchange; returns the new exchange's id and status."""
    ex = await ctx.journal.get_exchange(exchange_id)
    if ex is None:
        raise ApiError(404, f"no exchange {exchange_id}")
    try:
        result = await ctx.replay(ex.id, principal.actor)
    except KeyError:
        raise ApiError(409, f"exchange {ex.id} has no stored bytes (pruned); it cannot be replayed") from None
    if result.status == "queued" or result.released:
        ctx.wake()
    log.info("api.replay", exchange_id=ex.id, new_exchange=result.exchange_id, actor=principal.actor)
    return {"exchange_id": result.exchange_id, "status": result.status, "replay_of": ex.id}


async def retry(ctx: WebContext, delivery_id: str, principal: Principal) -> dict[str, Any]:
    """Make a failed or dead delivery due now."""
    at = iso(ctx.clock.now())
    try:
        d = await ctx.journal.retry_delivery(delivery_id, operator=principal.actor, reason="", at=at)
    except OperationError as exc:
        raise ApiError(exc.status, str(exc)) from None
    ctx.wake()
    log.info("api.retry", delivery_id=delivery_id, actor=principal.actor)
    return {"id": d.id, "status": d.status, "next_attempt_at": d.next_attempt_at}


async def release(ctx: WebContext, exchange_id: str, reason: str, principal: Principal) -> dict[str, Any]:
    """Operator override of the identity gate for one held exchange."""
    at = iso(ctx.clock.now())
    try:
        ex = await ctx.journal.release_exchange(exchange_id, operator=principal.actor, reason=reason, at=at)
    except OperationError as exc:
        raise ApiError(exc.status, str(exc)) from None
    ctx.wake()
    log.info("api.release", exchange_id=ex.id, actor=principal.actor)
    return {"id": ex.id, "status": ex.status}


async def bulk(ctx: WebContext, action: str, body: dict[str, Any], principal: Principal) -> dict[str, Any]:
    """Release held exchanges or retry dead deliveries in one audited transaction.

    ``{"reason": ..., "ids": [...]}`` names them; ``{"reason": ..., "all_held": true, "hold_code": ...}``
    or ``{"reason": ..., "all_dead": true, "destination": ...}`` selects them.
    """
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ApiError(400, "a non-empty 'reason' is required", invalid_param="reason")
    ids = body.get("ids")
    select = "all_held" if action == "release" else "all_dead"
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not ids):
        raise ApiError(400, "'ids' must be a non-empty list of strings", invalid_param="ids")
    if (ids is None) == (body.get(select) is not True):
        raise ApiError(400, f"give 'ids' or '{select}': true, not both", invalid_param="ids")
    at = iso(ctx.clock.now())
    try:
        result: BulkResult
        if action == "release":
            code = body.get("hold_code")
            result = await ctx.journal.release_held(
                operator=principal.actor, reason=reason.strip(), at=at, ids=ids,
                hold_code=code if isinstance(code, str) else None)
        else:
            dest = body.get("destination")
            result = await ctx.journal.retry_dead(
                operator=principal.actor, reason=reason.strip(), at=at, ids=ids,
                destination=dest if isinstance(dest, str) else None)
    except OperationError as exc:
        raise ApiError(exc.status, str(exc)) from None
    ctx.wake()
    log.info(f"api.bulk_{action}", count=len(result.done), refused=len(result.refused), actor=principal.actor)
    done_key = "released" if action == "release" else "retried"
    return {done_key: list(result.done), "refused": [dict(r) for r in result.refused]}


async def reroute_work(ctx: WebContext, body: dict[str, Any], principal: Principal) -> dict[str, Any]:
    """``{"from": OLD, "to": NEW, "reason": ...}``: the work of a renamed or removed destination goes to NEW."""
    source, target, reason = body.get("from"), body.get("to"), body.get("reason")
    for name, value in (("from", source), ("to", target), ("reason", reason)):
        if not isinstance(value, str) or not value.strip():
            raise ApiError(400, f"a non-empty '{name}' is required", invalid_param=name)
    at = iso(ctx.clock.now())
    try:
        require_configured(str(target).strip(), list(ctx.destination_kinds))
        moved = await ctx.journal.reroute(
            str(source).strip(), str(target).strip(), operator=principal.actor, reason=str(reason).strip(), at=at)
    except OperationError as exc:
        raise ApiError(exc.status, str(exc), invalid_param="to") from None
    ctx.wake()
    log.info("api.bulk_reroute", count=len(moved), source=source, target=target, actor=principal.actor)
    return {"rerouted": [d.id for d in moved], "refused": []}


# -- handlers -----------------------------------------------------------------------------------
def _context(request: web.Request) -> WebContext:
    return request.app[WEB_KEY]


def _errors(handler: Any) -> Any:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


@_errors
async def list_exchanges(request: web.Request) -> web.Response:
    """Newest first, keyset-paged; ``total`` counts at most ``COUNT_CAP`` rows (``total_capped``)."""
    filters, limit, offset = list_filters(request.query, operator=request[PRINCIPAL_KEY].is_operator)
    counting = (request.query.get("count") or "true").lower() not in ("0", "false", "no")

    journal = _context(request).journal
    rows = await journal.list_exchanges(**filters, limit=limit + 1, offset=offset)
    where = {k: v for k, v in filters.items() if k != "before_seq"}
    total = await journal.count_exchanges(cap=COUNT_CAP, **where) if counting else None
    more = len(rows) > limit
    page = rows[:limit]
    nxt = None
    if more:
        query = {k: v for k, v in request.query.items() if k != "offset"}
        nxt = str(request.rel_url.with_query({**query, "limit": str(limit), "cursor": str(page[-1]["seq"])}))
    body: dict[str, Any] = {"items": [exchange_json(r) for r in page], "limit": limit, "offset": offset, "next": nxt}
    if total is not None:
        body["total"], body["total_capped"] = total
    return web.json_response(body)


@_errors
async def get_exchange(request: web.Request) -> web.Response:
    operator = request[PRINCIPAL_KEY].is_operator
    exchange_id = request.match_info["id"]
    detail = await exchange_trace(_context(request).journal, exchange_id, operator=operator)
    if detail is None:
        raise ApiError(404, f"no exchange {exchange_id}")
    return web.json_response(detail, dumps=lambda v: json.dumps(v, ensure_ascii=False, default=str))


@_errors
async def post_replay(request: web.Request) -> web.Response:
    out = await replay_exchange(_context(request), request.match_info["id"], request[PRINCIPAL_KEY])
    out["links"] = {"exchange": f"/v1/exchanges/{out['exchange_id']}"}
    return web.json_response(out, status=201)


@_errors
async def post_retry(request: web.Request) -> web.Response:
    return web.json_response(await retry(_context(request), request.match_info["id"], request[PRINCIPAL_KEY]))


@_errors
async def post_release(request: web.Request) -> web.Response:
    try:
        body = await request.json() if request.can_read_body else {}
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body must be JSON: {\"reason\": \"...\"}") from None
    reason = body.get("reason") if isinstance(body, dict) else None
    if not isinstance(reason, str) or not reason.strip():
        raise ApiError(400, "a non-empty 'reason' is required", invalid_param="reason")
    out = await release(_context(request), request.match_info["id"], reason.strip(), request[PRINCIPAL_KEY])
    return web.json_response(out)


def _bulk_handler(action: str) -> Any:
    @_errors
    async def handler(request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else None
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object with a 'reason'")
        return web.json_response(await bulk(_context(request), action, body, request[PRINCIPAL_KEY]))

    handler.__name__ = f"post_bulk_{action}"
    return handler


@_errors
async def post_reroute(request: web.Request) -> web.Response:
    try:
        body = await request.json() if request.can_read_body else None
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object: {\"from\": ..., \"to\": ..., \"reason\": ...}")
    return web.json_response(await reroute_work(_context(request), body, request[PRINCIPAL_KEY]))


@_errors
async def get_destinations(request: web.Request) -> web.Response:
    """Health of each destination: state, failure rates (5/60 min), last success, queue depth, oldest age."""
    ctx = _context(request)
    rows = await destination_health(ctx.journal, now=ctx.clock.now(), kinds=dict(ctx.destination_kinds))
    return web.json_response({"items": [r.as_json() for r in rows]})


@_errors
async def get_identities(request: web.Request) -> web.Response:
    held_only = (request.query.get("held") or "").lower() in ("1", "true", "yes")
    operator = request[PRINCIPAL_KEY].is_operator
    rows = await identities_view(_context(request).journal, held_only=held_only, operator=operator)
    return web.json_response({"items": rows}, dumps=lambda v: json.dumps(v, ensure_ascii=False, default=str))


def register(app: web.Application) -> None:
    """Add the ``/v1`` operations routes to ``app``."""
    app.router.add_get("/v1/exchanges", list_exchanges)
    app.router.add_get("/v1/exchanges/{id}", get_exchange)
    app.router.add_post("/v1/exchanges/{id}/replay", post_replay)
    app.router.add_post("/v1/exchanges/{id}/release", post_release)
    app.router.add_post("/v1/deliveries/{id}/retry", post_retry)
    app.router.add_post("/v1/bulk/release", _bulk_handler("release"))
    app.router.add_post("/v1/bulk/retry", _bulk_handler("retry"))
    app.router.add_post("/v1/bulk/reroute", post_reroute)
    app.router.add_get("/v1/identities", get_identities)
    app.router.add_get("/v1/destinations", get_destinations)
