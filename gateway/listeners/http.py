"""HTTP listener: health, metrics and the two ingest routes (CDA and raw HL7 v2).

Errors are RFC 9457 problem documents (``application/problem+json``), never a stack
trace. The operations API and the dashboard (``gateway.web``) mount on the same app.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import BodyPartReader, web

from gateway.core.hl7v2.documents import META_FLAG_CODES

if TYPE_CHECKING:
    from gateway.service import Service

__all__ = ["build_app", "problem", "serve", "tls_subject", "BodyBudget", "SERVICE_KEY", "BUDGET_KEY"]

log = structlog.get_logger(__name__)
SERVICE_KEY: web.AppKey[Service] = web.AppKey("service")
BUDGET_KEY: web.AppKey[BodyBudget] = web.AppKey("body_budget")

# The MetaDMPMSS Y/N flags an HTTP client may set, as the HL7 v2 volet names them.
_FLAG_NAMES = META_FLAG_CODES


def problem(status: int, title: str, detail: str, *, type_: str = "about:blank", **extra: Any) -> web.Response:
    body = {"type": type_, "title": title, "status": status, "detail": detail, **extra}
    return web.Response(
        status=status, text=json.dumps(body, ensure_ascii=False), content_type="application/problem+json"
    )


@web.middleware
async def problem_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/problem+json":
            raise
        return problem(exc.status, exc.reason, exc.text or exc.reason)
    except Exception as exc:  # never a stack trace to the client
        log.exception("http.error", path=request.path, error=type(exc).__name__)
        return problem(500, "Internal Server Error", "the gateway could not process this request")


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


#: the authenticated caller's name, set by the web layer's authentication (routes match on it)
CLIENT_KEY: web.RequestKey[str] = web.RequestKey("relais_client")


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


async def post_document(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    got = await _document_from_request(request, service.settings.http.max_body_bytes)
    if isinstance(got, web.Response):
        return got
    data, flags = got
    result = await service.intake.handle_cda(data, flags, peer=request.remote, tls_subject=tls_subject(request),
                                             client=request.get(CLIENT_KEY))
    service.metrics.observe_message(result, "http", sum(result.timings.values()), message_type="CDA")
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
    service.dispatcher_wake()
    return web.json_response(
        {"exchange_id": result.exchange_id, "status": result.status,
         "warnings": [f.as_dict() for f in result.analysis.warnings]},
        status=202,
    )


async def post_hl7v2(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    body = await _read_body(request, service.settings.mllp.max_message_bytes)
    if isinstance(body, web.Response):
        return body
    raw = body.replace(b"\r\n", b"\r").replace(b"\n", b"\r") if b"\r" not in body else body
    ack = await service.handle_hl7(raw, peer=request.remote, listener="http-hl7v2", tls_subject=tls_subject(request))
    if not ack:  # an inbound ACK (or enhanced mode with MSH-15 NE): stored, nothing to answer
        return web.Response(status=204)
    return web.Response(body=ack, content_type="x-application/hl7-v2+er7")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    if not service.ready or service.readiness is None:
        return web.json_response({"status": "starting"}, status=503)
    report = await service.readiness.check()
    body = {"status": "ready" if report.ready else "unavailable", "checks": report.checks}
    return web.json_response(body, status=200 if report.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    await service.refresh_metrics()
    return web.Response(body=service.metrics.render(), content_type="text/plain", charset="utf-8")


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


def build_app(service: Service) -> web.Application:
    app = web.Application(middlewares=[problem_middleware], client_max_size=service.settings.http.max_body_bytes + 1024)
    app[SERVICE_KEY] = service
    app[BUDGET_KEY] = BodyBudget(service.settings.http.max_buffered_bytes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/documents", post_document)
    app.router.add_post("/v1/hl7v2", post_hl7v2)
    try:  # the operations API and dashboard (issue: operate it)
        from gateway.web.app import setup as setup_web
    except ModuleNotFoundError as exc:
        if exc.name not in ("gateway.web.app",):
            raise
    else:
        setup_web(app, service)
    return app
