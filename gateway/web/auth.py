"""Who may call the API and see the dashboard: bearer tokens with two roles, and sessions.

Tokens come from ``settings.api.tokens`` (``RELAIS_API_TOKENS``): a comma-separated list
of ``role:TOKEN`` or ``role:name:TOKEN`` entries, role ``viewer``, ``operator`` or
``sender``. The name (default ``operator1``, ``viewer1`` … by position) is what the audit
trail records.

* API (``/v1/*``): ``Authorization: Bearer TOKEN``. Reads need ``viewer`` or ``operator``;
  mutating calls need ``operator``. The two ingest routes (``POST /v1/documents``,
  ``POST /v1/hl7v2``) need ``sender`` or ``operator``: submitting is a mutation, and a
  system that only pushes gets a ``sender`` token, which can do nothing else.
* Dashboard: ``/login`` trades a viewer or operator token for a random session id kept
  server-side (the cookie never carries the token); every form carries a CSRF token tied
  to that session, and the login form one tied to a pre-session cookie. Failed logins
  are throttled per client and overall (:class:`LoginThrottle`).

With no token configured the HTTP listener must stay on loopback, and an operator token
is generated once into ``<data_dir>/api-token`` (mode 0600) and printed on stderr — not
through structlog, because it is a secret and logs are shipped elsewhere.
"""

from __future__ import annotations

import hmac
import os
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.settings import Settings, is_loopback

__all__ = [
    "Principal",
    "Session",
    "Authenticator",
    "parse_tokens",
    "prepare_tokens",
    "is_loopback",
    "TOKEN_FILE",
    "SESSION_COOKIE",
    "ROLES",
    "LOGIN_CSRF_COOKIE",
    "LoginThrottle",
]

Role = Literal["viewer", "operator", "sender"]
ROLES: tuple[str, ...] = ("viewer", "operator", "sender")
TOKEN_FILE = "api-token"
SESSION_COOKIE = "relais_session"
LOGIN_CSRF_COOKIE = "relais_login"
SESSION_TTL = 12 * 3600.0  # an operator shift; then log in again


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its role and the name the audit trail records."""

    role: str
    name: str

    @property
    def actor(self) -> str:
        """``role:name``, the actor string of audit rows and events."""
        return f"{self.role}:{self.name}"

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    @property
    def can_ingest(self) -> bool:
        """May submit messages and documents (``sender`` systems and operators)."""
        return self.role in ("sender", "operator")

    @property
    def can_read(self) -> bool:
        """May read the journal and open the dashboard (a ``sender`` may not)."""
        return self.role in ("viewer", "operator")


@dataclass
class Session:
    """A dashboard session: who logged in, the CSRF token of its forms, when it ends."""

    principal: Principal
    csrf: str
    expires: float
    data: dict[str, Any] = field(default_factory=dict)


def parse_tokens(text: str) -> list[tuple[str, Principal]]:
    """``operator:TOKEN,viewer:name:TOKEN`` → [(token, principal)]; raises ValueError when malformed."""
    out: list[tuple[str, Principal]] = []
    counts: dict[str, int] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        parts = entry.split(":")
        role = parts[0].strip().lower()
        if role not in ROLES or len(parts) not in (2, 3):
            raise ValueError(
                "api tokens must look like 'operator:TOKEN', 'viewer:NAME:TOKEN' or 'sender:NAME:TOKEN'"
            )
        token = parts[-1].strip()
        counts[role] = counts.get(role, 0) + 1
        name = parts[1].strip() if len(parts) == 3 else f"{role}{counts[role]}"
        if len(token) < 8:
            raise ValueError(f"api token for {role}:{name} is too short (8 characters at least)")
        out.append((token, Principal(role, name or f"{role}{counts[role]}")))
    return out


def prepare_tokens(settings: Settings, *, stderr: Any = None) -> str:
    """The token specification to use; generates the first-start operator token when none is set.

    Raises ``RuntimeError`` (refusing to start) when no token is configured and HTTP is not
    bound to loopback: an unauthenticated or auto-keyed API must never face the network.
    """
    if settings.api.tokens.strip():
        parse_tokens(settings.api.tokens)  # fail at start, not at the first request
        return settings.api.tokens
    if not is_loopback(settings.http.host):
        raise RuntimeError(
            f"refusing to start: HTTP is bound to {settings.http.host} but no API token is configured; "
            "set RELAIS_API_TOKENS='operator:TOKEN,viewer:TOKEN' or bind HTTP to 127.0.0.1"
        )
    path = settings.data_dir / TOKEN_FILE
    token = _read_or_create(path, stderr or sys.stderr)
    return f"operator:admin:{token}"


def _read_or_create(path: Path, stderr: Any) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # created with mode 0600: the file is never readable by others, not even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    print(
        f"relais: no API token configured; generated an operator token (stored in {path}):\n  {token}",
        file=stderr,
        flush=True,
    )
    return token


class Authenticator:
    """Checks bearer tokens in constant time and keeps dashboard sessions in memory."""

    def __init__(self, spec: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._tokens = parse_tokens(spec)
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def principal_for(self, token: str | None) -> Principal | None:
        """The principal holding ``token``, or None. Every entry is compared (no early exit)."""
        if not token:
            return None
        found: Principal | None = None
        given = token.encode("utf-8")
        for known, principal in self._tokens:
            if hmac.compare_digest(known.encode("utf-8"), given):
                found = principal
        return found

    def from_header(self, header: str | None) -> Principal | None:
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.principal_for(value.strip())

    # -- sessions -----------------------------------------------------------------
    def open_session(self, principal: Principal) -> str:
        self._expire()
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = Session(principal, secrets.token_urlsafe(24), self._clock() + SESSION_TTL)
        return sid

    def session(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        s = self._sessions.get(sid)
        if s is None or s.expires < self._clock():
            self._sessions.pop(sid, None)
            return None
        return s

    def close_session(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    @staticmethod
    def csrf_ok(session: Session, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(session.csrf.encode(), (value or "").encode())

    def _expire(self) -> None:
        now = self._clock()
        for sid in [k for k, s in self._sessions.items() if s.expires < now]:
            del self._sessions[sid]


class LoginThrottle:
    """Failed dashboard logins, counted per client and overall over a sliding window.

    A client with ``per_client`` failures within ``window`` seconds is answered 429 on
    every further attempt — the right token included, or guessing would still pay —
    until its oldest failure leaves the window. ``overall`` failures from all clients
    together throttle everyone the same way: a spread-out guessing campaign is slowed
    down too, at the price of locking operators out for at most ``window`` seconds.
    A successful login clears its client's failures.
    """

    def __init__(
        self, *, per_client: int = 10, overall: int = 100, window: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_client = per_client
        self.overall = overall
        self.window = window
        self._clock = clock
        self._clients: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def _trim(self, q: deque[float], now: float) -> None:
        while q and q[0] <= now - self.window:
            q.popleft()

    def retry_after(self, client: str) -> float | None:
        """Seconds before ``client`` may try again, or None when it may try now."""
        now = self._clock()
        self._trim(self._all, now)
        mine = self._clients.get(client)
        if mine is not None:
            self._trim(mine, now)
            if not mine:
                del self._clients[client]
        waits = []
        if mine and len(mine) >= self.per_client:
            waits.append(mine[-self.per_client] + self.window - now)
        if len(self._all) >= self.overall:
            waits.append(self._all[-self.overall] + self.window - now)
        return max(max(waits), 1.0) if waits else None

    def failed(self, client: str) -> None:
        now = self._clock()
        self._clients.setdefault(client, deque()).append(now)
        self._all.append(now)
        if len(self._clients) > 10_000:  # bounded memory under a spray of addresses
            oldest = min(self._clients, key=lambda k: self._clients[k][-1])
            del self._clients[oldest]

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)
