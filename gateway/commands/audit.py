"""``relais audit verify`` / ``relais audit list``: the hash-chained audit trail."""

from __future__ import annotations

import argparse

from gateway.commands._common import add_config_args, dump_json, open_readonly

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


def run_verify(args: argparse.Namespace) -> int:
    from gateway.operations import verify_audit

    journal = open_readonly(args)
    intact, broken, checked = journal.read_sync(verify_audit)
    if intact:
        print(f"audit trail intact: {checked} rows")
        return 0
    print(f"audit trail broken at row seq={broken} (rows checked: {checked})")
    return 1


def run_list(args: argparse.Namespace) -> int:
    from gateway.operations import audit_detail_json

    journal = open_readonly(args)
    rows = [audit_detail_json(r) for r in journal.read_sync(lambda tx: tx.audit_rows())]
    if args.json:
        dump_json(rows)
        return 0
    for r in rows:
        print(f"{r['seq']:>6}  {r['at'][:23]}  {r['actor']:<20}  {r['action']:<10}  {r['target'] or '-'}  "
              f"{r['hash'][:12]}")
    if not rows:
        print("no audit rows")
    return 0
