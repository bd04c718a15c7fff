"""What the HTTP listener and the web layer share, and nothing else: a leaf module.

* :func:`problem` — an RFC 9457 problem document (``application/problem+json``);
* :func:`problem_middleware` — every error leaves as a problem document, never a stack trace;
* :data:`CLIENT_KEY` — the authenticated caller's name, set by the web layer's
  authentication; the ingest routes refuse a request that does not carry it.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web

__all__ = ["CLIENT_KEY", "problem", "problem_middleware"]

log = structlog.get_logger(__name__)

#: the authenticated caller's name ([[route]] tables may match on it)
CLIENT_KEY: web.RequestKey[str] = web.RequestKey("relais_client")


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
