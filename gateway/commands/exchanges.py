"""``relais exchanges``: list exchanges from the journal (works while ``serve`` runs)."""

from __future__ import annotations

import argparse

from gateway.commands._common import add_config_args, dump_json, exchange_json, open_readonly

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("exchanges", help="list exchanges in the journal")
    add_config_args(p)
    p.add_argument("--status", help="received|accepted|rejected|held|queued|delivered|dead|duplicate|recorded")
    p.add_argument("--type", dest="message_type", help="message type, e.g. MDM^T02")
    p.add_argument("--control-id")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    journal = open_readonly(args)
    rows = journal.read_sync(
        lambda tx: tx.list_exchanges(
            status=args.status, message_type=args.message_type, control_id=args.control_id, limit=args.limit
        )
    )
    items = [exchange_json(r) for r in rows]
    if args.json:
        dump_json(items)
        return 0
    for e in items:
        print(f"{e['id']}  {e['received_at'][:19]}  {e['status']:<9}  {e['message_type'] or '-':<8}  "
              f"{e['control_id'] or '-':<12}  {e['sender'] or '-'}  {e['reason_code'] or ''}")
    if not items:
        print("no exchanges")
    return 0
