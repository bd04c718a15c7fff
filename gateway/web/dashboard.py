"""Server-rendered dashboard: overview, exchanges, one exchange's timeline, identities.

Plain HTML from Jinja2 templates (autoescaped), one CSS file, no JavaScript and no
external resource, so it works on an isolated hospital network. Sessions come from
``/login`` (see ``auth.py``); every POST form carries the session's CSRF token, and
the actions (replay, retry, release) are offered to — and accepted from — operators only.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jinja2
from aiohttp import web

from gateway.journal.rows import iso
from gateway.operations.health import FAILED_OUTCOMES, destination_health
from gateway.operations.views import exchange_json
from gateway.web.api import (
    EXCHANGE_STATUSES,
    PRINCIPAL_KEY,
    ApiError,
    bulk,
    exchange_trace,
    identities_view,
    list_filters,
    release,
    replay_exchange,
    retry,
)
from gateway.web.auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, Authenticator, LoginThrottle, Session
from gateway.web.context import WEB_KEY, WebContext

__all__ = ["register", "timeline", "per_minute_series", "safe_next", "AUTH_KEY", "SESSION_KEY", "THROTTLE_KEY"]

AUTH_KEY: web.AppKey[Authenticator] = web.AppKey("relais_auth")
THROTTLE_KEY: web.AppKey[LoginThrottle] = web.AppKey("relais_login_throttle")
SESSION_KEY: web.RequestKey[Session] = web.RequestKey("relais_session")

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["pretty"] = lambda v: json.dumps(v, ensure_ascii=False, indent=2, default=str)

STAGE_LABELS = {
    "received": "Received",
    "parsed": "Parsed",
    "identity": "Identity check (INS)",
    "normalised": "Normalised (FHIR, XDS)",
    "queued": "Queued for delivery",
    "held": "Held by the identity gate",
    "released": "Released",
    "rejected": "Rejected",
    "duplicate": "Duplicate",
    "recorded": "Recorded (an inbound ACK: never answered)",
    "delivered": "Delivered",
    "dead": "Dead (delivery abandoned)",
    "attempt:document": "Delivery attempt",
    "attempt:zam": "ZAM attempt",
    "zam:queued": "ZAM queued",
    "zam:sent": "ZAM sent",
    "ack:queued": "Application ACK queued",
    "ack:sent": "Application ACK sent",
    "attempt:ack": "Application ACK attempt",
    "ack:matched": "Acknowledgement of one of our messages",
    "ack:unmatched": "Acknowledgement of nothing we sent",
    "ack:no-return-address": "Application ACK not sent: no return address",
    "zam:acknowledged": "ZAM acknowledged by the sender",
    "ack:acknowledged": "Application ACK acknowledged by the sender",
    "encounter": "Encounter (PV1) recorded",
    "replayed": "Replayed",
    "replay-of": "Replay of",
    "retry": "Retry requested",
    "re-keyed": "Patient merged (re-keyed)",
    "attempt:mail": "MSSanté mail attempt",
    "attempt:hl7": "DPI delivery attempt (LPS MDM)",
    "mss:orders": "MSSanté mails requested",
    "mss:skipped": "MSSanté not sent",
    "mss:dsn": "MSSanté delivery report (DSN)",
    "mss:mdn": "MSSanté read report (MDN)",
}
REFRESH_CHOICES = (5, 15, 60)


# -- pure view helpers -------------------------------------------------------------------------
def _summary(detail: dict[str, Any]) -> str:
    parts = []
    for key, value in detail.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        parts.append(f"{key}={text}")
    out = ", ".join(parts)
    return out if len(out) <= 240 else out[:237] + "..."


def timeline(detail: dict[str, Any]) -> list[dict[str, Any]]:
    """Timeline rows from an exchange's events (which already include attempts, delivery, ZAM)."""
    rows = []
    for ev in detail.get("events", []):
        stage, d = ev["stage"], ev.get("detail") or {}
        label = STAGE_LABELS.get(stage, stage)
        if stage.startswith("attempt:"):
            label = f"{label} {d.get('attempt', '')} → {d.get('destination', '?')}: {d.get('outcome', '?')}"
        link = None
        if stage == "replayed" and d.get("new_exchange"):
            link = d["new_exchange"]
        elif stage == "replay-of" and d.get("exchange"):
            link = d["exchange"]
        rows.append({"at": ev["at"], "stage": stage, "label": label, "text": _summary(d), "link": link})
    return rows


def per_minute_series(counts: dict[str, int], now: datetime, minutes: int = 60) -> list[tuple[str, int]]:
    """(``HH:MM``, n) for each of the last ``minutes`` minutes, oldest first, zeros included."""
    end = now.replace(second=0, microsecond=0)
    series = []
    for i in range(minutes - 1, -1, -1):
        minute = iso(end - timedelta(minutes=i))[:16]
        series.append((minute[11:16], counts.get(minute, 0)))
    return series


# -- rendering ----------------------------------------------------------------------------------
def _render(request: web.Request, name: str, status: int = 200, **ctx: Any) -> web.Response:
    session = request.get(SESSION_KEY)
    flash = session.data.pop("flash", None) if session else None
    refresh = request.query.get("refresh", "")
    html = _env.get_template(name).render(
        principal=request.get(PRINCIPAL_KEY), csrf=session.csrf if session else "", flash=flash,
        refresh=int(refresh) if refresh.isdigit() and 2 <= int(refresh) <= 3600 else None,
        refresh_choices=REFRESH_CHOICES, path=request.path, query=dict(request.query), **ctx,
    )
    resp = web.Response(text=html, content_type="text/html", status=status)
    resp.headers["Cache-Control"] = "no-store"  # pages can carry patient data for operators
    resp.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'"
    )
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


def _context(request: web.Request) -> WebContext:
    return request.app[WEB_KEY]


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def safe_next(value: str | None) -> str:
    """``value`` when it is a path on this site, else ``/``: no open redirect.

    Browsers read ``/\\host``, ``/%09/host`` (a tab they drop) and ``//host`` as
    another site, so a target is refused when, raw or percent-decoded, it holds a
    backslash, a control character or a space, starts with ``//``, or parses with a
    scheme or a host.
    """
    if not value or not value.startswith("/"):
        return "/"
    decoded = value
    for _ in range(3):  # %2509 is %09 once decoded: decode until stable
        step = unquote(decoded)
        if step == decoded:
            break
        decoded = step
    for candidate in (value, decoded):
        if "\\" in candidate or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in candidate):
            return "/"
        if candidate.startswith("//") or not candidate.startswith("/"):
            return "/"
        parts = urlsplit(candidate)
        if parts.scheme or parts.netloc:
            return "/"
    return value


_safe_next = safe_next
_LOGIN_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")


def _secure(request: web.Request) -> bool:
    """Cookies get ``Secure`` on TLS (direct, or the HTTP listener's TLS setting)."""
    return request.secure or _context(request).secure_cookies


def _login_form(request: web.Request, *, status: int = 200, nxt: str, error: str | None) -> web.Response:
    """The login page with its form token, also set in a pre-session cookie (double submit).

    The token of an existing cookie is kept: a page loaded twice, or in two tabs, must
    not invalidate the form already shown.
    """
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    if not _LOGIN_TOKEN.fullmatch(token):
        token = secrets.token_urlsafe(24)
    resp = _render(request, "login.html", status=status, next=nxt, error=error, login_csrf=token)
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/login",
                    secure=_secure(request), max_age=3600)
    return resp


# -- login --------------------------------------------------------------------------------------
async def login_page(request: web.Request) -> web.Response:
    auth = request.app[AUTH_KEY]
    if auth.session(request.cookies.get(SESSION_COOKIE)) is not None:
        return _redirect("/")
    return _login_form(request, nxt=_safe_next(request.query.get("next")), error=None)


async def login_submit(request: web.Request) -> web.Response:
    auth = request.app[AUTH_KEY]
    throttle = request.app[THROTTLE_KEY]
    client = request.remote or "?"
    wait = throttle.retry_after(client)
    if wait is not None:
        resp = _render(request, "login.html", status=429, next="/", login_csrf="",
                       error="Too many failed logins; try again later.")
        resp.headers["Retry-After"] = str(int(wait + 0.999))
        return resp
    form = await request.post()
    nxt = _safe_next(str(form.get("next") or "/"))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    given = str(form.get("csrf") or "")
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        return _login_form(request, status=403, nxt=nxt, error="The form has expired; please log in again.")
    principal = auth.principal_for(str(form.get("token") or "").strip())
    if principal is None:
        throttle.failed(client)
        return _login_form(request, status=401, nxt=nxt, error="This token is not valid.")
    throttle.succeeded(client)
    if not principal.can_read:
        return _login_form(request, status=403, nxt=nxt, error="This token can only submit messages.")
    sid = auth.open_session(principal)
    resp = _redirect(nxt)
    resp.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="Strict", path="/", secure=_secure(request))
    resp.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return resp


async def logout(request: web.Request) -> web.Response:
    await _checked_form(request, operator=False)
    request.app[AUTH_KEY].close_session(request.cookies.get(SESSION_COOKIE))
    resp = _redirect("/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    return resp


async def _checked_form(request: web.Request, *, operator: bool = True) -> Any:
    """The posted form after the CSRF and role checks."""
    session = request[SESSION_KEY]
    form = await request.post()
    if not Authenticator.csrf_ok(session, str(form.get("csrf") or "")):
        raise web.HTTPForbidden(text="the form has expired; reload the page and try again")
    if operator and not session.principal.is_operator:
        raise web.HTTPForbidden(text="this action needs the operator role")
    return form


# -- pages --------------------------------------------------------------------------------------
async def overview(request: web.Request) -> web.Response:
    ctx = _context(request)
    now = ctx.clock.now()
    since = iso(now - timedelta(hours=1))

    journal = ctx.journal
    held, held_total = await journal.held_worklist()
    dead, dead_total = await journal.dead_worklist()
    view: dict[str, Any] = {
        "by_status": await journal.count_by_status(),
        "destinations": await destination_health(journal, now=now, kinds=dict(ctx.destination_kinds)),
        "held": held, "held_total": held_total, "dead": dead, "dead_total": dead_total,
    }
    series = per_minute_series(await journal.exchanges_per_minute(since), now)
    delivered, failed = _attempts_per_minute(await journal.attempt_tallies_since(since))
    outcomes = list(zip(per_minute_series(delivered, now), per_minute_series(failed, now), strict=True))
    return _render(
        request, "overview.html", statuses=EXCHANGE_STATUSES, series=series, peak=max([n for _, n in series] + [1]),
        outcomes=outcomes, outcome_peak=max([d + f for (_, d), (_, f) in outcomes] + [1]),
        last_hour=sum(n for _, n in series), age=lambda at: _age(now, at),
        age_seconds=lambda sec: _age(now, (now - timedelta(seconds=sec)).isoformat()), **view,
    )


def _attempts_per_minute(tallies: list[Any]) -> tuple[dict[str, int], dict[str, int]]:
    """Delivery attempts per minute that reached their destination, and those that failed."""
    delivered: dict[str, int] = {}
    failed: dict[str, int] = {}
    for t in tallies:
        into = failed if t.outcome in FAILED_OUTCOMES else delivered
        into[t.minute] = into.get(t.minute, 0) + t.n
    return delivered, failed


def zam_failing(deliveries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The business acknowledgement (ZAM) of an exchange that is being retried or was given up."""
    for d in deliveries:
        if d.get("kind") == "zam" and d.get("status") in ("failed", "dead"):
            return d
    return None


def _age(now: datetime, at: str | None) -> str:
    """``3 min``, ``5 h``, ``2 d``: how long ago ``at`` was, for worklists."""
    if not at:
        return "-"
    seconds = max((now - datetime.fromisoformat(at)).total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


async def action_bulk(request: web.Request) -> web.Response:
    """Bulk release of every held exchange or bulk retry of every dead delivery, with a reason."""
    form = await _checked_form(request)
    action = request.match_info["action"]
    reason = str(form.get("reason") or "").strip()
    select = {"release": "all_held", "retry": "all_dead"}[action]
    try:
        out = await bulk(_context(request), action, {"reason": reason, select: True}, request[PRINCIPAL_KEY])
        done = out["released"] if action == "release" else out["retried"]
        verb = "Released" if action == "release" else "Retrying"
        _flash(request, "ok", f"{verb} {len(done)}; refused {len(out['refused'])}.")
    except ApiError as exc:
        _flash(request, "error", exc.detail)
    return _redirect("/")


async def exchanges_page(request: web.Request) -> web.Response:
    ctx = _context(request)
    try:
        filters, limit, offset = list_filters(request.query, operator=request[PRINCIPAL_KEY].is_operator)
        error = None
    except ApiError as exc:
        filters, limit, offset, error = {}, 50, 0, exc.detail
    rows = await ctx.journal.list_exchanges(**filters, limit=limit + 1, offset=offset)
    more = len(rows) > limit
    items = [exchange_json(r) for r in rows[:limit]]
    for item in items:  # a green "delivered" must not hide a ZAM the sender never got
        item["zam_failing"] = None
        if item["status"] == "delivered":
            bad = zam_failing([d.as_dict() for d in await ctx.journal.deliveries_for(item["id"])])
            item["zam_failing"] = bad["status"] if bad else None
    nxt = str(request.rel_url.update_query(offset=offset + limit)) if more else None
    prev = str(request.rel_url.update_query(offset=max(0, offset - limit))) if offset else None
    return _render(
        request, "exchanges.html", items=items, statuses=EXCHANGE_STATUSES, error=error, next_url=nxt,
        prev_url=prev,
    )


async def exchange_page(request: web.Request) -> web.Response:
    ctx = _context(request)
    principal = request[PRINCIPAL_KEY]
    exchange_id = request.match_info["id"]
    detail = await exchange_trace(ctx.journal, exchange_id, operator=principal.is_operator)
    if detail is None:
        return _render(request, "notfound.html", status=404, what=f"exchange {exchange_id}")
    raw_text = None
    if principal.is_operator and detail.get("raw_base64"):
        raw = base64.b64decode(detail["raw_base64"])
        # HL7 v2 segments end with CR: one per line; bytes of another charset show as U+FFFD
        raw_text = raw.decode("utf-8", errors="replace").replace("\r", "\n")
    return _render(request, "exchange.html", ex=detail, timeline=timeline(detail), raw_text=raw_text,
                   zam_failing=zam_failing(detail.get("deliveries") or []))


async def identities_page(request: web.Request) -> web.Response:
    ctx = _context(request)
    held_only = request.query.get("held", "") in ("1", "true", "yes")
    operator = request[PRINCIPAL_KEY].is_operator
    rows = await identities_view(ctx.journal, held_only=held_only, operator=operator)
    return _render(request, "identities.html", rows=rows, held_only=held_only)


# -- actions ------------------------------------------------------------------------------------
def _flash(request: web.Request, kind: str, text: str) -> None:
    request[SESSION_KEY].data["flash"] = {"kind": kind, "text": text}


async def action_replay(request: web.Request) -> web.Response:
    await _checked_form(request)
    exchange_id = request.match_info["id"]
    try:
        out = await replay_exchange(_context(request), exchange_id, request[PRINCIPAL_KEY])
    except ApiError as exc:
        _flash(request, "error", exc.detail)
        return _redirect(f"/exchanges/{exchange_id}")
    _flash(request, "ok", f"Replayed as exchange {out['exchange_id']} ({out['status']}).")
    return _redirect(f"/exchanges/{out['exchange_id']}")


async def action_release(request: web.Request) -> web.Response:
    form = await _checked_form(request)
    exchange_id = request.match_info["id"]
    reason = str(form.get("reason") or "").strip()
    try:
        if not reason:
            raise ApiError(400, "a reason is required to release a held exchange")
        await release(_context(request), exchange_id, reason, request[PRINCIPAL_KEY])
        _flash(request, "ok", "Released: the deliveries are queued.")
    except ApiError as exc:
        _flash(request, "error", exc.detail)
    return _redirect(f"/exchanges/{exchange_id}")


async def action_retry(request: web.Request) -> web.Response:
    form = await _checked_form(request)
    back = _safe_next(str(form.get("back") or "/exchanges"))
    try:
        await retry(_context(request), request.match_info["id"], request[PRINCIPAL_KEY])
        _flash(request, "ok", "The delivery is due now.")
    except ApiError as exc:
        _flash(request, "error", exc.detail)
    return _redirect(back)


def register(app: web.Application, auth: Authenticator) -> None:
    """Add the dashboard pages, its actions, the login routes and ``/static``."""
    app[AUTH_KEY] = auth
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", overview)
    app.router.add_get("/exchanges", exchanges_page)
    app.router.add_get("/exchanges/{id}", exchange_page)
    app.router.add_post("/exchanges/{id}/replay", action_replay)
    app.router.add_post("/exchanges/{id}/release", action_release)
    app.router.add_post("/deliveries/{id}/retry", action_retry)
    app.router.add_post("/bulk/{action:release|retry}", action_bulk)
    app.router.add_get("/identities", identities_page)
    app.router.add_static("/static", Path(__file__).parent / "static", append_version=False)
