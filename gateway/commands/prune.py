"""``relais prune --older-than 90d``: drop the bodies of finished exchanges past retention.

Summaries, events and audit rows stay; only raw bytes, documents and exchanged bodies go.
Without ``--older-than`` the ``retention.days`` setting applies (0: nothing is pruned).
"""

from __future__ import annotations

import argparse
import getpass
from datetime import timedelta

from gateway.commands._common import add_config_args, open_writable

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("prune", help="drop bodies of finished exchanges older than a duration (audited)")
    p.add_argument("--older-than", metavar="DURATION", help="90d, 12h, 30m, 45s (default: retention.days)")
    p.add_argument("--operator", help="recorded in the audit trail (default: the system user)")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.operations import parse_duration, prune
    from gateway.ports import SystemClock

    settings, journal = open_writable(args)
    if args.older_than:
        try:
            older_than = parse_duration(args.older_than)
        except ValueError as exc:
            print(f"prune: {exc}")
            return 2
    elif settings.retention.days > 0:
        older_than = timedelta(days=settings.retention.days)
    else:
        print("prune: nothing to do; give --older-than or set retention.days")
        return 2
    actor = f"cli:{args.operator or getpass.getuser()}"
    try:
        n = journal.write_sync(lambda tx: prune(tx, older_than=older_than, now=SystemClock().now(), actor=actor))
    finally:
        journal.close_sync()
    print(f"pruned the bodies of {n} exchanges older than {older_than}")
    return 0
