"""``relais prune [--older-than 90d] [--errors-only] [--vacuum]``: apply retention once (audited).

Summaries, events and audit rows stay; raw bytes, documents and exchanged bodies go (with
``--errors-only``, exchanges that ended well go entirely). Without ``--older-than`` the
``retention.days`` setting applies. ``serve`` applies the same retention by itself when
``retention.days`` is set; this command is for a one-off or for ``--vacuum``, which
rewrites the file (``VACUUM``) so that a journal created before auto_vacuum can shrink:
run it with ``serve`` stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sqlite3

from gateway.commands._common import add_config_args, settings_from
from gateway.commands.failures import EX_CONFIG, EX_USAGE, CommandFailed
from gateway.journal.base import Journal
from gateway.journal.open import open_journal, redact_url
from gateway.operations.retention import RetentionPolicy

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("prune", help="apply retention once: drop bodies of finished exchanges (audited)")
    p.add_argument("--older-than", metavar="DURATION", help="90d, 12h, 30m, 45s (default: retention.days)")
    p.add_argument("--errors-only", action="store_true", default=None,
                   help="delete exchanges that ended well entirely (default: retention.errors_only)")
    p.add_argument("--vacuum", action="store_true", help="rewrite the file to give space back (serve stopped)")
    p.add_argument("--operator", help="recorded in the audit trail (default: the system user)")
    add_config_args(p)
    p.set_defaults(func=run)


_SQLITE = "sqlite:///"


def run(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from gateway.operations.audit import parse_duration
    from gateway.operations.retention import retention_policy

    settings = settings_from(args)
    url = settings.journal_url
    if args.vacuum and not url.startswith(_SQLITE):
        # VACUUM rewrites a SQLite file; a server database reclaims space by its own means
        raise CommandFailed(f"--vacuum only applies to a SQLite journal, not {redact_url(url)}", EX_USAGE)
    if args.older_than:
        try:
            older_than = parse_duration(args.older_than)
        except ValueError as exc:
            raise CommandFailed(str(exc), EX_USAGE) from None
    elif settings.retention.days > 0:
        older_than = timedelta(days=settings.retention.days)
    else:
        raise CommandFailed("nothing to do; give --older-than or set retention.days", EX_CONFIG)
    policy = retention_policy(settings, older_than)
    if args.errors_only is not None:
        policy = type(policy)(older_than=policy.older_than, errors_only=True, batch_size=policy.batch_size)
    actor = f"cli:{args.operator or getpass.getuser()}"
    n = asyncio.run(_prune(open_journal(url), policy, actor))
    print(f"pruned the bodies of {n} exchanges older than {older_than}"
          + (" (those that ended well deleted)" if policy.errors_only else ""))
    if args.vacuum:
        # offline, on the file itself: VACUUM needs no other connection, so serve must be stopped
        conn = sqlite3.connect(url[len(_SQLITE):], isolation_level=None)
        try:
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("VACUUM")
        finally:
            conn.close()
        print("journal rewritten (VACUUM): it now gives pruned space back by itself")
    return 0


async def _prune(journal: Journal, policy: RetentionPolicy, actor: str) -> int:
    from gateway.operations.retention import prune_once
    from gateway.ports import SystemClock

    try:
        return await prune_once(journal, policy, now=SystemClock().now(), actor=actor, vacuum=journal.can_vacuum,
                                audit_empty=True)
    finally:
        await journal.close()
