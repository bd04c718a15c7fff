"""``relais release ID… | --all-held [--hold-code CODE] --operator NAME --reason TEXT``: operator override
of the identity gate.

Writes through the journal while ``serve`` may run: SQLite lets this second process
write between the service's commits (WAL, busy timeout); the running dispatcher picks
the queued deliveries up at its next poll. Every release is one audit row.
"""

from __future__ import annotations

import argparse

from gateway.commands._common import add_config_args, bulk_operation
from gateway.commands.failures import EX_USAGE, CommandFailed

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("release", help="release exchanges held by the identity gate (audited)")
    p.add_argument("ids", nargs="*", metavar="ID", help="exchange id (or a unique prefix)")
    p.add_argument("--all-held", action="store_true", help="every held exchange (or those of --hold-code)")
    p.add_argument("--hold-code", help="with --all-held: only exchanges held for this reason, e.g. INS_NOT_QUALIFIED")
    p.add_argument("--operator", required=True, help="who takes the decision (recorded in the audit trail)")
    p.add_argument("--reason", required=True, help="why the identity may be trusted")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if bool(args.ids) == args.all_held:
        raise CommandFailed("give exchange ids or --all-held, not both and not neither", EX_USAGE)
    if args.hold_code and not args.all_held:
        raise CommandFailed("--hold-code goes with --all-held", EX_USAGE)
    hold_code, ids = args.hold_code, args.ids or None
    return bulk_operation(
        args,
        lambda journal, operator, reason, at: journal.release_held(
            operator=operator, reason=reason, at=at, hold_code=hold_code, ids=ids),
        done="released {id}: deliveries queued", refused="not released {id}: {reason}",
        nothing="nothing held" + (f" for {args.hold_code}" if args.hold_code else ""),
    )
