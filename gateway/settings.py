"""Typed settings, built once at the edge: defaults ← TOML file ← ``RELAIS_*`` environment ← flags.

Every setting lives in a frozen dataclass section; ``config/default.toml`` documents
each one with its default (a test keeps the two in step). Environment variables are
``RELAIS_<SECTION>_<KEY>`` (``RELAIS_MLLP_PORT=2576``); ``RELAIS_API_TOKENS`` is the
one shorthand (``operator:TOKEN,viewer:TOKEN``). Secrets come from the environment.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from gateway.core.routing import Route

__all__ = [
    "EFFECTIVE_CONFIG",
    "effective_raw",
    "settings_from_raw",
    "Settings",
    "GatewaySettings",
    "JournalSettings",
    "MllpSettings",
    "HttpSettings",
    "PipelineSettings",
    "IdentitySettings",
    "DispatcherSettings",
    "ApiSettings",
    "RetentionSettings",
    "DestinationSettings",
    "CreatorSettings",
    "load_settings",
]


@dataclass(frozen=True)
class GatewaySettings:
    application: str = "RELAIS"  # MSH-3 of our ACKs and ZAMs
    facility: str = "RELAIS"  # MSH-4 of our ACKs and ZAMs
    source_id: str = "1.2.250.1.999999.1"  # XDS sourceId: the OID of this PFI
    data_dir: str = "relais-data"
    log_level: str = "info"


@dataclass(frozen=True)
class JournalSettings:
    url: str = ""  # empty: sqlite:///<data_dir>/journal.db
    group_commit_ms: float = 2.0  # how long the writer waits to gather concurrent commits
    min_free_bytes: int = 64 * 1024 * 1024  # less free space beside the journal: /readyz answers 503
    ready_probe_seconds: float = 5.0  # /readyz commits a probe row at most this often
    auto_migrate: bool = True  # serve applies pending schema migrations; false: it refuses an old schema
    pool_size: int = 10  # PostgreSQL: connections (and journal threads) per instance; SQLite ignores it


@dataclass(frozen=True)
class MllpSettings:
    host: str = "127.0.0.1"
    port: int = 2575
    max_message_bytes: int = 16 * 1024 * 1024
    idle_timeout: float = 300.0
    oversize_drain_bytes: int = 64 * 1024 * 1024  # rest of an oversized frame read before closing
    oversize_drain_timeout: float = 30.0
    frame_timeout: float = 120.0  # a frame not complete this long after it started: AR, connection closed
    max_connections: int = 256  # beyond: new connections are closed at once (the sender retries)
    max_buffered_bytes: int = 256 * 1024 * 1024  # unfinished frames across connections; beyond: AR MLLP_BUSY
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""  # set to require and verify client certificates (mutual TLS)
    enabled: bool = True


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 32 * 1024 * 1024
    max_buffered_bytes: int = 256 * 1024 * 1024  # ingest bodies being received at once; beyond: 503
    max_connections: int = 256  # beyond: a new connection gets a 503 and is closed
    tls_cert: str = ""  # PEM certificate: HTTPS, and the session cookie gets Secure
    tls_key: str = ""
    tls_ca: str = ""  # CA bundle: client certificates are asked for and verified when given
    tls_require_client_cert: bool = False  # with tls_ca: refuse clients without a certificate
    enabled: bool = True


@dataclass(frozen=True)
class PipelineSettings:
    default_charset: str = "utf-8"  # used when MSH-18 is empty; must be ASCII-compatible
    cda_xsd: str = ""  # directory holding CDA_extended.xsd; empty: no XSD validation
    max_cda_bytes: int = 20 * 1024 * 1024
    max_cda_elements: int = 200_000  # counted while parsing, before a tree is built: CDA_TOO_MANY_ELEMENTS
    max_cda_depth: int = 128  # deeper: CDA_TOO_DEEP (libxml2 stops at 256 whatever this says)
    max_segments: int = 10_000  # more segments in one message: AE MESSAGE_TOO_MANY_SEGMENTS
    max_repetitions: int = 1_000  # per field (components and subcomponents too): AE naming the field
    max_field_chars: int = 65_536  # per field, OBX-5 excepted: AE FIELD_TOO_LONG naming the field
    offload_bytes: int = 32_768  # larger inputs are analysed by a worker, off the event loop
    workers: int = 2  # workers for those analyses
    isolation: str = "thread"  # the workers are threads, or processes ("process": the GIL is not shared)


@dataclass(frozen=True)
class IdentitySettings:
    allow_test_ins: bool = False
    convention: str = "pam-2.11"  # or "frcore-rniv" (QUAL = qualified)
    hold_max_hours: float = 72.0


@dataclass(frozen=True)
class DispatcherSettings:
    workers: int = 4
    poll_interval: float = 0.2
    lease_seconds: float = 120.0
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    max_attempts: int = 20
    max_age_hours: float = 72.0
    attempt_timeout: float = 30.0
    quick_retries: int = 3


@dataclass(frozen=True)
class ApiSettings:
    tokens: str = ""  # "operator:TOKEN,viewer:TOKEN,sender:TOKEN"; secrets belong in RELAIS_API_TOKENS
    login_max_failures: int = 10  # failed dashboard logins per client within the window: then 429
    login_max_failures_overall: int = 100  # failed logins from all clients within the window: then 429
    login_window_seconds: float = 300.0


@dataclass(frozen=True)
class RetentionSettings:
    days: float = 0.0  # 0: keep bodies forever; else serve drops bodies older than this in the background
    errors_only: bool = False  # past `days`, delete exchanges that ended well entirely (errors keep a summary)
    interval_minutes: float = 10.0  # how often serve applies retention
    batch_size: int = 500  # exchanges per retention transaction (small: ACKs interleave)


@dataclass(frozen=True)
class NotifySettings:
    webhook_url: str = ""  # empty: no webhook; else conditions firing and resolving are POSTed here (JSON)
    interval_seconds: float = 30.0  # how often the conditions are judged
    queued_max_seconds: float = 3600.0  # oldest queued delivery older than this: "oldest_queued" fires
    held_max_seconds: float = 86400.0  # oldest held document older than this: "held_too_long" fires
    disk_min_free_ratio: float = 0.10  # less free space beside the journal: "disk_almost_full" fires
    timeout_seconds: float = 5.0  # per webhook call


@dataclass(frozen=True)
class DestinationSettings:
    name: str
    kind: str  # dmp-xds | mhd | file | mllp | mssante
    url: str = ""
    directory: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CreatorSettings:
    application: str
    facility: str
    address: str  # host:port of the sender's MLLP listener for business acknowledgements


@dataclass(frozen=True)
class Settings:
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    journal: JournalSettings = field(default_factory=JournalSettings)
    mllp: MllpSettings = field(default_factory=MllpSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    dispatcher: DispatcherSettings = field(default_factory=DispatcherSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    destinations: tuple[DestinationSettings, ...] = ()
    creators: tuple[CreatorSettings, ...] = ()
    routes: tuple[Route, ...] = ()  # [[route]]: first match names the destinations (gateway.core.routing)

    @property
    def data_dir(self) -> Path:
        return Path(self.gateway.data_dir)

    @property
    def journal_url(self) -> str:
        return self.journal.url or f"sqlite:///{self.data_dir / 'journal.db'}"


_SECTIONS = (
    "gateway",
    "journal",
    "mllp",
    "http",
    "pipeline",
    "identity",
    "dispatcher",
    "api",
    "retention",
    "notify",
)


def _coerce(value: Any, typ: Any, where: str) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{where}: expected a boolean, got {value!r}")
    if typ in (int, float):
        try:
            return typ(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected {'an integer' if typ is int else 'a number'}, got {value!r}") from None
    return str(value)


def _section(cls: type, values: Mapping[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown setting(s) in [{where}]: {', '.join(sorted(unknown))}")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()})


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build the settings: defaults, then the TOML file, then environment, then ``overrides`` (flags)."""
    raw: dict[str, Any] = {}
    if path:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    return settings_from_raw(raw, env=os.environ if env is None else env, overrides=overrides)


EFFECTIVE_CONFIG = "effective-config.json"


def effective_raw(settings: Settings) -> dict[str, Any]:
    """The settings as a configuration document (``load_settings``'s raw shape), secrets left out.

    ``serve`` writes it to ``<data_dir>/effective-config.json`` so that offline commands
    (``replay``, ``reroute``) act with the configuration the server runs, not the CLI's defaults.
    """
    raw: dict[str, Any] = {name: dataclasses.asdict(getattr(settings, name)) for name in _SECTIONS}
    raw["api"]["tokens"] = ""  # secrets stay in the environment
    if raw["journal"]["url"]:  # a PostgreSQL password too (RELAIS_JOURNAL_URL)
        from gateway.journal.url import redact_url

        raw["journal"]["url"] = redact_url(raw["journal"]["url"])
    raw["destination"] = [
        {"name": d.name, "kind": d.kind, "url": d.url, "directory": d.directory, **d.options}
        for d in settings.destinations
    ]
    raw["creator"] = [dataclasses.asdict(c) for c in settings.creators]
    raw["route"] = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(r).items()
                     if v is not None and v != ()} for r in settings.routes]
    return raw


def settings_from_raw(
    raw: Mapping[str, Any],
    *,
    env: Mapping[str, str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """:func:`load_settings` from an already-read configuration document."""
    sections: dict[str, dict[str, Any]] = {name: dict(raw.get(name, {})) for name in _SECTIONS}
    unknown_top = set(raw) - set(_SECTIONS) - {"destination", "creator", "route"}
    if unknown_top:
        raise ValueError(f"unknown section(s): {', '.join(sorted(unknown_top))}")
    for key, value in env.items():
        if not key.startswith("RELAIS_"):
            continue
        if key == "RELAIS_API_TOKENS":
            sections["api"]["tokens"] = value
            continue
        rest = key[len("RELAIS_") :].lower()
        for name in _SECTIONS:
            if rest.startswith(name + "_"):
                sections[name][rest[len(name) + 1 :]] = value
                break
    for name, values in (overrides or {}).items():
        sections[name].update({k: v for k, v in values.items() if v is not None})
    classes = {f.name: get_type_hints(Settings)[f.name] for f in dataclasses.fields(Settings)}
    built = {name: _section(classes[name], sections[name], name) for name in _SECTIONS}
    if built["pipeline"].isolation not in ("thread", "process"):
        raise ValueError(f"pipeline.isolation must be thread or process, not {built['pipeline'].isolation!r}")
    destinations = tuple(_destination(d) for d in raw.get("destination", []))
    names = [d.name for d in destinations]
    if len(set(names)) != len(names):
        raise ValueError("destination names must be unique")
    creators = tuple(
        CreatorSettings(application=c["application"], facility=c.get("facility", ""), address=c["address"])
        for c in raw.get("creator", [])
    )
    routes = tuple(_route(r, names) for r in raw.get("route", []))
    return Settings(**built, destinations=destinations, creators=creators, routes=routes)


_ROUTE_KEYS = {"name", "destinations", "sender_application", "sender_facility", "http_client", "message_type", "flags"}


def _route(r: Mapping[str, Any], destinations: list[str]) -> Route:
    name = str(r.get("name") or "")
    where = f"route {name!r}" if name else "a [[route]]"
    unknown = set(r) - _ROUTE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if not name:
        raise ValueError("every [[route]] needs a name (it is recorded with each exchange it routes)")
    targets = r.get("destinations")
    if not isinstance(targets, list):
        raise ValueError(f"{where}: destinations must be a list of destination names ([] sends nowhere)")
    known = destinations or ["outbox"]  # no destination configured: serve writes to the file outbox
    missing = [t for t in targets if t not in known]
    if missing:
        raise ValueError(f"{where}: no destination named {', '.join(map(repr, missing))} "
                         f"(configured: {', '.join(known)})")
    flags = r.get("flags", [])
    if not isinstance(flags, list):
        raise ValueError(f"{where}: flags must be a list of volet flags (DESTDMP, DESTMSSANTEPS …)")
    text = {k: (str(r[k]) if r.get(k) is not None else None)
            for k in ("sender_application", "sender_facility", "http_client", "message_type")}
    return Route(name=name, destinations=tuple(map(str, targets)), flags=tuple(map(str, flags)), **text)


_DEST_KINDS = ("dmp-xds", "mhd", "file", "mllp", "mssante")


def _destination(d: Mapping[str, Any]) -> DestinationSettings:
    kind = d.get("kind", "")
    if kind not in _DEST_KINDS:
        raise ValueError(f"destination {d.get('name')!r}: kind must be one of {', '.join(_DEST_KINDS)}")
    options = {k: v for k, v in d.items() if k not in ("name", "kind", "url", "directory")}
    return DestinationSettings(
        name=d["name"], kind=kind, url=d.get("url", ""), directory=d.get("directory", ""), options=options
    )


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; ``0.0.0.0`` and names are not loopback."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
