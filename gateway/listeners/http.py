"""HTTP listener: health, metrics and the two ingest routes (CDA and raw HL7 v2).

Errors are RFC 9457 problem documents (``application/problem+json``), never a stack
trace. This module knows nothing of the web layer: the service mounts the operations API
and the dashboard on the same app (``gateway.web.app.setup``), whose authentication sets
``CLIENT_KEY`` on each request it lets through. The ingest routes check that mark
themselves, so an app assembled without the authentication refuses to ingest instead of
accepting anonymous documents.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiohttp import BodyPartReader, web

from gateway.core.hl7v2.documents import META_FLAG_CODES
from gateway.httpkit import CLIENT_KEY, problem, problem_middleware

__all__ = ["BodyBudget", "Ingest", "IngestLimits", "Probes", "build_app", "serve", "tls_subject"]

log = structlog.get_logger(__name__)


class Ingest(Protocol):
    """Where the ingest routes hand what they received (the service: intake, then metrics)."""

    async def handle_document(self, data: bytes, flags: dict[str, bool], *, peer: str | None,
                              tls_subject: str | None, client: str) -> Any: ...

    async def handle_hl7(self, raw: bytes, *, peer: str | None, listener: str,
                         tls_subject: str | None = None) -> bytes: ...


class Probes(Protocol):
    """What ``/readyz`` and ``/metrics`` report."""

    async def ready_report(self) -> tuple[bool, dict[str, Any]] | None:
        """``None`` while starting; else whether ready, and the checks."""
        ...

    async def metrics_text(self) -> bytes: ...


@dataclass(frozen=True)
class IngestLimits:
    max_body_bytes: int  # one CDA document (http.max_body_bytes)
    max_message_bytes: int  # one HL7 v2 message (mllp.max_message_bytes)
    max_buffered_bytes: int  # every ingest body held at once (http.max_buffered_bytes)


INGEST_KEY: web.AppKey[Ingest] = web.AppKey("relais_ingest")
PROBES_KEY: web.AppKey[Probes] = web.AppKey("relais_probes")
LIMITS_KEY: web.AppKey[IngestLimits] = web.AppKey("relais_limits", IngestLimits)
BUDGET_KEY: web.AppKey[BodyBudget] = web.AppKey("body_budget")

# The MetaDMPMSS Y/N flags an HTTP client may set, as the HL7 v2 volet names them.
_FLAG_NAMES = META_FLAG_CODES


def _flags(request: web.Request) -> tuple[dict[str, bool], str | None]:
    flags: dict[str, bool] = {}
    for name in _FLAG_NAMES:
        value = request.query.get(name) or request.query.get(name.lower())
        if value is None:
            continue
        v = value.strip().upper()
        if v not in ("Y", "N", "TRUE", "FALSE", "1", "0"):
            return flags, name
        flags[name] = v in ("Y", "TRUE", "1")
    flags.setdefault("DESTDMP", True)
    return flags, None


class BodyBudget:
    """Bytes of ingest bodies held at once, across every request: beyond the cap, 503.

    Ten clients posting 30 MiB each would otherwise hold 300 MiB before any of them is
    analysed; past ``limit`` a request is refused with ``Retry-After`` instead (the
    sender retries, as after any 503).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held -= n


def _busy() -> web.Response:
    resp = problem(503, "Service Unavailable", "the gateway is receiving too much at once; retry later")
    resp.headers["Retry-After"] = "5"
    return resp


async def _read_body(request: web.Request, limit: int) -> bytes | web.Response:
    if request.content_length is not None and request.content_length > limit:
        return problem(413, "Payload Too Large", f"the body exceeds {limit} bytes")
    budget = request.app[BUDGET_KEY]
    taken = 0
    try:
        data = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            if not budget.take(len(chunk)):
                return _busy()
            taken += len(chunk)
            data += chunk
            if len(data) > limit:
                return problem(413, "Payload Too Large", f"the body exceeds {limit} bytes")
    finally:
        budget.give(taken)  # the body now belongs to the pipeline, bounded by its own workers
    if not data:
        return problem(400, "Bad Request", "empty body")
    return bytes(data)


def tls_subject(request: web.Request) -> str | None:
    """The subject of the client certificate of this request, when TLS carried one."""
    transport = request.transport
    sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
    cert = sslobj.getpeercert() if sslobj is not None else None
    if not cert or "subject" not in cert:
        return None
    return ",".join(f"{key}={value}" for rdn in cert["subject"] for key, value in rdn) or None


async def _document_from_request(request: web.Request, limit: int) -> tuple[bytes, dict[str, bool]] | web.Response:
    flags, bad = _flags(request)
    if bad:
        return problem(400, "Bad Request", f"query parameter {bad} must be Y or N", invalid_param=bad)
    if request.content_type.startswith("multipart/"):
        budget = request.app[BUDGET_KEY]
        reserved = request.content_length if request.content_length is not None else limit
        if reserved > limit + 64 * 1024:
            return problem(413, "Payload Too Large", f"the body exceeds {limit} bytes")
        if not budget.take(reserved):  # parts are read whole: reserve the body up front
            return _busy()
        try:
            return await _multipart_document(request, limit, flags)
        finally:
            budget.give(reserved)
    body = await _read_body(request, limit)
    if isinstance(body, web.Response):
        return body
    return body, flags


async def _multipart_document(
    request: web.Request, limit: int, flags: dict[str, bool]
) -> tuple[bytes, dict[str, bool]] | web.Response:
    reader = await request.multipart()
    doc: bytes | None = None
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue  # nested multipart: not ours
        if part.name in ("document", "file", "cda"):
            doc = bytes(await part.read(decode=False))
            if len(doc) > limit:
                return problem(413, "Payload Too Large", f"the document exceeds {limit} bytes")
        elif part.name and part.name.upper() in _FLAG_NAMES:
            value = (await part.text()).strip().upper()
            flags[part.name.upper()] = value in ("Y", "TRUE", "1")
    if doc is None:
        return problem(400, "Bad Request", "multipart body has no 'document' part")
    return doc, flags


def _anonymous(request: web.Request) -> web.Response | None:
    """401 unless the web layer's authentication let this request through (fail closed)."""
    if request.get(CLIENT_KEY):
        return None
    resp = problem(401, "Unauthorized", f"{request.path} needs 'Authorization: Bearer TOKEN' of a sender or operator")
    resp.headers["WWW-Authenticate"] = 'Bearer realm="relais"'
    return resp


async def post_document(request: web.Request) -> web.Response:
    if (refused := _anonymous(request)) is not None:
        return refused
    got = await _document_from_request(request, request.app[LIMITS_KEY].max_body_bytes)
    if isinstance(got, web.Response):
        return got
    data, flags = got
    result = await request.app[INGEST_KEY].handle_document(
        data, flags, peer=request.remote, tls_subject=tls_subject(request), client=request[CLIENT_KEY])
    if result.status == "rejected":
        errors = [f.as_dict() for f in result.analysis.errors]
        return problem(
            422 if result.analysis.documents or errors and errors[0]["code"] not in ("CDA_NOT_XML",) else 400,
            "Document rejected",
            (errors[0]["message"] or "rejected") if errors else "rejected",
            type_="https://relais.example/problems/document-rejected",
            exchange_id=result.exchange_id,
            errors=errors,
        )
    return web.json_response(
        {"exchange_id": result.exchange_id, "status": result.status,
         "warnings": [f.as_dict() for f in result.analysis.warnings]},
        status=202,
    )


async def post_hl7v2(request: web.Request) -> web.Response:
    if (refused := _anonymous(request)) is not None:
        return refused
    body = await _read_body(request, request.app[LIMITS_KEY].max_message_bytes)
    if isinstance(body, web.Response):
        return body
    raw = body.replace(b"\r\n", b"\r").replace(b"\n", b"\r") if b"\r" not in body else body
    ack = await request.app[INGEST_KEY].handle_hl7(
        raw, peer=request.remote, listener="http-hl7v2", tls_subject=tls_subject(request))
    if not ack:  # an inbound ACK (or enhanced mode with MSH-15 NE): stored, nothing to answer
        return web.Response(status=204)
    return web.Response(body=ack, content_type="x-application/hl7-v2+er7")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    report = await request.app[PROBES_KEY].ready_report()
    if report is None:
        return web.json_response({"status": "starting"}, status=503)
    ready, checks = report
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    text = await request.app[PROBES_KEY].metrics_text()
    return web.Response(body=text, content_type="text/plain", charset="utf-8")


_BUSY_BODY = json.dumps(
    {"type": "about:blank", "title": "Service Unavailable", "status": 503, "detail": "too many connections"}
).encode()
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\nRetry-After: 5\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class _Refused(asyncio.Protocol):
    """A connection beyond ``http.max_connections``: a 503 and the door closed, at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY_RESPONSE)
        transport.close()


async def serve(
    runner: web.AppRunner, host: str, port: int, *, ssl: Any = None, max_connections: int = 256
) -> asyncio.Server:
    """Listen for ``runner``'s app, refusing connections beyond ``max_connections``.

    In place of ``web.TCPSite``, which has no such cap: the protocol factory asks the
    aiohttp server how many connections it holds before handing it a new one. Close the
    returned server before ``runner.cleanup()``.
    """
    server = runner.server
    assert server is not None, "runner.setup() first"
    refused = 0

    def factory() -> asyncio.BaseProtocol:
        nonlocal refused
        if len(server.connections) >= max_connections:
            refused += 1
            log.warning("http.refused", reason="max_connections", refused=refused)
            return _Refused()
        return server()

    return await asyncio.get_running_loop().create_server(factory, host, port, ssl=ssl)


def build_app(ingest: Ingest, probes: Probes, limits: IngestLimits) -> web.Application:
    """The probes and the two ingest routes; the caller mounts authentication on it."""
    app = web.Application(middlewares=[problem_middleware], client_max_size=limits.max_body_bytes + 1024)
    app[INGEST_KEY] = ingest
    app[PROBES_KEY] = probes
    app[LIMITS_KEY] = limits
    app[BUDGET_KEY] = BodyBudget(limits.max_buffered_bytes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/documents", post_document)
    app.router.add_post("/v1/hl7v2", post_hl7v2)
    return app
