"""``relais migrate [--status]``: bring the journal's schema to this version of Relais.

``serve`` applies pending migrations itself unless ``journal.auto_migrate`` is false (an
operator who upgrades the binary on several instances may prefer to migrate once, by hand,
with every instance stopped or still on a compatible schema). ``--status`` only reports;
its exit code is 1 when migrations are pending, so a deployment script can test it.
"""

from __future__ import annotations

import argparse
import json

from gateway.commands._common import add_config_args, settings_from

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("migrate", help="apply pending journal schema migrations")
    p.add_argument("--status", action="store_true", help="only report the schema version (exit 1 if behind)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.journal.open import inspect_schema, migrate_journal

    settings = settings_from(args)
    url = settings.journal_url
    before = inspect_schema(url)
    after = before if args.status else migrate_journal(url)
    applied = [m.label for m in before.pending] if not args.status else []
    if args.json:
        print(json.dumps({
            "journal": _redacted(url), "dialect": after.dialect, "version": after.current, "latest": after.latest,
            "applied": applied, "pending": [m.label for m in after.pending],
        }))
    elif args.status:
        print(f"journal {_redacted(url)}: {after.describe()}")
    elif applied:
        print(f"journal {_redacted(url)}: schema {before.current} -> {after.current} (applied {', '.join(applied)})")
    else:
        print(f"journal {_redacted(url)}: {after.describe()}")
    return 1 if args.status and not after.up_to_date else 0


def _redacted(url: str) -> str:
    """The URL without its password (it may be echoed into a deployment log)."""
    from gateway.journal.url import redact_url

    return redact_url(url)
