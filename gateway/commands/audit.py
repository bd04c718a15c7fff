"""``relais audit verify`` / ``relais audit list``: the hash-chained audit trail."""

from __future__ import annotations

import argparse
import asyncio

from gateway.commands._common import add_config_args, dump_json, open_readonly
from gateway.journal.rows import AuditEntry

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("audit", help="verify or list the audit trail")
    actions = p.add_subparsers(dest="audit_action", metavar="ACTION", required=True)
    v = actions.add_parser("verify", help="check the hash chain; exit 1 at the first altered row")
    add_config_args(v)
    v.set_defaults(func=run_verify)
    ls = actions.add_parser("list", help="print the audit rows")
    add_config_args(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)


async def _entries(args: argparse.Namespace) -> list[AuditEntry]:
    journal = open_readonly(args)
    try:
        return await journal.audit_entries()
    finally:
        await journal.close()


def run_verify(args: argparse.Namespace) -> int:
    from gateway.operations.audit import verify_audit

    intact, broken, checked = verify_audit(asyncio.run(_entries(args)))
    if intact:
        print(f"audit trail intact: {checked} rows")
        return 0
    print(f"audit trail broken at row seq={broken} (rows checked: {checked})")
    return 1


def run_list(args: argparse.Namespace) -> int:
    from gateway.operations.audit import audit_detail_json

    rows = [audit_detail_json(r) for r in asyncio.run(_entries(args))]
    if args.json:
        dump_json(rows)
        return 0
    for r in rows:
        print(f"{r['seq']:>6}  {r['at'][:23]}  {r['actor']:<20}  {r['action']:<10}  {r['target'] or '-'}  "
              f"{r['hash'][:12]}")
    if not rows:
        print("no audit rows")
    return 0
