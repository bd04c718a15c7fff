"""``relais release ID --operator NAME --reason TEXT``: operator override of the identity gate.

Writes through the journal while ``serve`` may run: SQLite lets this second process
write between the service's commits (WAL, busy timeout); the running dispatcher picks
the queued deliveries up at its next poll.
"""

from __future__ import annotations

import argparse

from gateway.commands._common import add_config_args, open_writable

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("release", help="release an exchange held by the identity gate (audited)")
    p.add_argument("id", help="exchange id (or a unique prefix)")
    p.add_argument("--operator", required=True, help="who takes the decision (recorded in the audit trail)")
    p.add_argument("--reason", required=True, help="why the identity may be trusted")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.operations import OperationError, iso, release_exchange
    from gateway.ports import SystemClock

    _settings, journal = open_writable(args)
    at = iso(SystemClock().now())
    try:
        out = journal.write_sync(
            lambda tx: release_exchange(tx, args.id, operator=f"cli:{args.operator}", reason=args.reason, at=at)
        )
    except OperationError as exc:
        print(f"release refused: {exc}")
        return 1
    finally:
        journal.close_sync()
    print(f"released {out['id']}: deliveries queued")
    return 0
