"""Helpers shared by the sub-commands: settings from --config / --data-dir, journal access, JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.journal.base import Journal
from gateway.journal.open import open_journal
from gateway.journal.rows import BulkResult
from gateway.settings import EFFECTIVE_CONFIG, Settings, load_settings, settings_from_raw

__all__ = ["bulk_operation", "add_config_args", "settings_from", "open_readonly", "open_writable", "dump_json"]


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (journal, outbox); default ./relais-data")
    p.add_argument("--journal", metavar="URL",
                   help="journal URL: sqlite:///PATH or postgresql://… (default: journal.url, then <data-dir>/journal.db)")


def settings_from(args: argparse.Namespace, *, prefer_effective: bool = False, **overrides: dict[str, Any]) -> Settings:
    """Settings from --config, the environment and flags; a bad configuration is a ``ConfigError``.

    With ``prefer_effective`` and no ``--config``, the configuration ``serve`` recorded in the
    data directory (``effective-config.json``) is used when it is there: an offline replay or
    re-route then routes as the server does.
    """
    overrides = _with_flags(args, overrides)
    path = getattr(args, "config", None)
    if prefer_effective and not path:
        recorded = _recorded_config(args)
        if recorded is not None:
            try:
                return settings_from_raw(recorded, env={}, overrides=overrides)
            except (KeyError, ValueError, TypeError) as exc:
                raise ConfigError(f"recorded configuration: {exc}") from exc
    return _load(path, overrides)


def _with_flags(args: argparse.Namespace, overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``overrides`` with --data-dir and --journal, which win over the configuration."""
    rest = {section: values for section, values in overrides.items() if section != "gateway"}
    gateway = dict(overrides.get("gateway", {}))
    if getattr(args, "data_dir", None):
        gateway["data_dir"] = args.data_dir
    if getattr(args, "journal", None):
        rest["journal"] = {**rest.get("journal", {}), "url": args.journal}
    return {"gateway": gateway, **rest}


def _load(path: str | None, overrides: dict[str, dict[str, Any]]) -> Settings:
    """``load_settings``, each way a configuration can be unusable as one ``ConfigError`` naming it."""
    where = f"configuration {path}" if path else "configuration"
    try:
        return load_settings(path, overrides=overrides)
    except FileNotFoundError as exc:
        raise ConfigError(f"{where}: no such file") from exc
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    except KeyError as exc:
        raise ConfigError(f"{where}: missing key {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _recorded_config(args: argparse.Namespace) -> dict[str, Any] | None:
    data_dir = Path(getattr(args, "data_dir", None) or load_settings(env={}).gateway.data_dir)
    path = data_dir / EFFECTIVE_CONFIG
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable recorded configuration: {exc}") from exc
    print(f"using the configuration serve recorded in {path}", file=sys.stderr)
    return raw if isinstance(raw, dict) else None


def open_readonly(args: argparse.Namespace) -> Journal:
    """The journal for reading; the caller closes it (``await journal.close()``)."""
    settings = settings_from(args)
    journal: Journal = open_journal(settings.journal_url, readonly=True)
    return journal


def open_writable(args: argparse.Namespace, *, prefer_effective: bool = False) -> tuple[Settings, Journal]:
    """The settings and the journal for writing; the caller closes it (``await journal.close()``)."""
    settings = settings_from(args, prefer_effective=prefer_effective)
    journal: Journal = open_journal(settings.journal_url)
    return settings, journal


def dump_json(value: Any) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")


#: an audited bulk journal operation, given ``operator``, ``reason`` and ``at`` (``journal.release_held`` …)
BulkCall = Callable[[Journal, str, str, str], Awaitable[BulkResult]]


def bulk_operation(
    args: argparse.Namespace, operation: BulkCall, *, done: str, refused: str, nothing: str
) -> int:
    """Run an audited bulk ``operation(journal, operator, reason, at)`` and print one line per item.

    ``done`` / ``refused`` are formats with ``{id}`` (and ``{reason}``); ``nothing`` is printed
    when a selection (not ids) found nothing. Exit 1 when anything was refused.
    """
    return asyncio.run(_bulk(args, operation, done=done, refused=refused, nothing=nothing))


async def _bulk(args: argparse.Namespace, operation: BulkCall, *, done: str, refused: str, nothing: str) -> int:
    from gateway.journal.rows import iso
    from gateway.ports import SystemClock

    _settings, journal = open_writable(args)
    at = iso(SystemClock().now())
    try:
        out = await operation(journal, f"cli:{args.operator}", args.reason, at)
    finally:
        await journal.close()
    for item in out.done:
        print(done.format(id=item))
    for refusal in out.refused:
        print(refused.format(id=refusal["id"], reason=refusal["reason"]))
    if not args.ids and not out.done:
        print(nothing)
    return 1 if out.refused else 0
