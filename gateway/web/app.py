"""Mount the operations API, the dashboard and their authentication on the HTTP app.

The service calls :func:`setup` on the app ``gateway.listeners.http.build_app`` made; it is
not optional (a missing web layer is a start-up error). The auth middleware runs inside the
problem middleware, so its refusals are problem JSON:

* open: ``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``, ``/login``, ``/static/*``;
* ``/v1/*``: bearer token; 401 without a valid one; 403 for a viewer on a mutating call
  (ingest included: it needs ``sender`` or ``operator``) and for a ``sender`` anywhere but
  the ingest routes (see ``auth.py``);
* everything else is the dashboard: a session cookie, else a redirect to ``/login``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from yarl import URL

from gateway.httpkit import CLIENT_KEY, problem
from gateway.web import api, dashboard
from gateway.web.auth import SESSION_COOKIE, Authenticator, LoginThrottle
from gateway.web.context import WEB_KEY, WebContext
from gateway.web.openapi import handle_openapi

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["setup", "OPEN_PATHS", "INGEST_PATHS"]

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/login"})
INGEST_PATHS = frozenset({"/v1/documents", "/v1/hl7v2"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _unauthorized(detail: str) -> web.Response:
    resp = problem(401, "Unauthorized", detail)
    resp.headers["WWW-Authenticate"] = 'Bearer realm="relais"'
    return resp


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    path = request.path
    if path in OPEN_PATHS or path.startswith("/static/"):
        return await handler(request)
    auth = request.app[dashboard.AUTH_KEY]
    if path.startswith("/v1/"):
        principal = auth.from_header(request.headers.get("Authorization"))
        if principal is None:
            detail = "a valid bearer token is required" if request.headers.get("Authorization") else (
                "this route needs 'Authorization: Bearer TOKEN'")
            return _unauthorized(detail)
        if path in INGEST_PATHS:
            if not principal.can_ingest:
                return problem(403, "Forbidden", f"{request.method} {path} needs the sender or operator role")
        elif not principal.can_read:
            return problem(403, "Forbidden", f"a {principal.role} token may only submit to {', '.join(sorted(INGEST_PATHS))}")
        elif request.method not in _SAFE_METHODS and not principal.is_operator:
            return problem(403, "Forbidden", f"{request.method} {path} needs the operator role")
        request[api.PRINCIPAL_KEY] = principal
        request[CLIENT_KEY] = principal.name  # who posted it: [[route]] tables may match on it
        return await handler(request)
    session = auth.session(request.cookies.get(SESSION_COOKIE))
    if session is None:
        target = "/login"
        if request.method == "GET" and path != "/":
            target = str(URL("/login").with_query(next=str(request.rel_url)))
        return web.Response(status=303, headers={"Location": target})
    request[dashboard.SESSION_KEY] = session
    request[api.PRINCIPAL_KEY] = session.principal
    return await handler(request)


def setup(app: web.Application, context: WebContext, settings: Settings, tokens: str) -> None:
    """Add authentication, the ``/v1`` API, ``/openapi.json`` and the dashboard to ``app``.

    ``tokens`` is the specification ``auth.prepare_tokens`` returned when the service started.
    """
    auth = Authenticator(tokens)
    api_settings = settings.api
    app[WEB_KEY] = context
    app[dashboard.THROTTLE_KEY] = LoginThrottle(
        per_client=api_settings.login_max_failures, overall=api_settings.login_max_failures_overall,
        window=api_settings.login_window_seconds,
    )
    app.middlewares.append(auth_middleware)
    api.register(app)
    dashboard.register(app, auth)
    app.router.add_get("/openapi.json", handle_openapi)
