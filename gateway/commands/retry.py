"""``relais retry DELIVERY… | --all-dead [--destination NAME] --operator NAME --reason TEXT``.

Makes failed or dead deliveries due now; the dispatcher of a running ``serve`` picks them up
at its next poll and, as for any re-send, asks the destination first whether the document
is already there. Every retry is one audit row.
"""

from __future__ import annotations

import argparse

from gateway.commands._common import add_config_args, bulk_operation
from gateway.commands.failures import EX_USAGE, CommandFailed

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("retry", help="retry failed or dead deliveries now (audited)")
    p.add_argument("ids", nargs="*", metavar="DELIVERY", help="delivery id (see `relais show`)")
    p.add_argument("--all-dead", action="store_true", help="every dead delivery (or those of --destination)")
    p.add_argument("--destination", help="with --all-dead: only this destination")
    p.add_argument("--operator", required=True, help="recorded in the audit trail")
    p.add_argument("--reason", required=True, help="why a retry should now succeed")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if bool(args.ids) == args.all_dead:
        raise CommandFailed("give delivery ids or --all-dead, not both and not neither", EX_USAGE)
    if args.destination and not args.all_dead:
        raise CommandFailed("--destination goes with --all-dead", EX_USAGE)
    destination, ids = args.destination, args.ids or None
    return bulk_operation(
        args,
        lambda journal, operator, reason, at: journal.retry_dead(
            operator=operator, reason=reason, at=at, destination=destination, ids=ids),
        done="retrying {id}", refused="not retried {id}: {reason}",
        nothing="no dead deliveries" + (f" for {args.destination}" if args.destination else ""),
    )
