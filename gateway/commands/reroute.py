"""``relais reroute --from OLD --to NEW --operator NAME --reason TEXT``: the work of a renamed or
removed destination goes to a configured one (audited per delivery).

After a configuration change, deliveries for a destination that is no longer configured are
kept and their exchanges held with ``DESTINATION_UNKNOWN``; they leave by themselves if the
destination comes back, or here. Works while ``serve`` runs (its dispatcher picks the moved
deliveries up at its next poll); without ``--config`` the configuration ``serve`` recorded in
the data directory names the destinations.
"""

from __future__ import annotations

import argparse

from gateway.commands._common import add_config_args, bulk_operation, settings_from
from gateway.journal.base import Journal
from gateway.journal.rows import BulkResult
from gateway.operations.views import require_configured

__all__ = ["register", "configured_destinations"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("reroute", help="move a removed destination's work to a configured one (audited)")
    p.add_argument("--from", dest="source", required=True, metavar="OLD", help="the destination name the work has")
    p.add_argument("--to", dest="target", required=True, metavar="NEW", help="a destination of the configuration")
    p.add_argument("--operator", required=True, help="recorded in the audit trail")
    p.add_argument("--reason", required=True, help="why, e.g. 'outbox replaced by the DMP'")
    add_config_args(p)
    p.set_defaults(func=run, ids=[])


def configured_destinations(args: argparse.Namespace) -> list[str]:
    """The destination names ``serve`` has with this configuration (``outbox`` when none takes documents)."""
    from gateway.destinations import destination_kinds

    return list(destination_kinds(settings_from(args, prefer_effective=True)))


def run(args: argparse.Namespace) -> int:
    source, target = args.source, args.target
    known = configured_destinations(args)
    if args.reason.strip():  # an empty reason: the journal's refusal comes first, as it always did
        require_configured(target, known)

    async def operation(journal: Journal, operator: str, reason: str, at: str) -> BulkResult:
        moved = await journal.reroute(source, target, operator=operator, reason=reason, at=at)
        return BulkResult(tuple(d.id for d in moved))

    return bulk_operation(
        args, operation, done=f"rerouted {{id}} to {args.target}", refused="not moved {id}: {reason}",
        nothing=f"nothing to move from {args.source}",
    )
