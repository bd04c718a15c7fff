"""``relais identities``: the identity registry (INS, IPP, identité qualifiée) and held documents."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from gateway.commands._common import add_config_args, dump_json, open_readonly

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("identities", help="list the identity registry (INS, IPP, qualification)")
    add_config_args(p)
    p.add_argument("--held", action="store_true", help="only patients with documents held by the identity gate")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


async def _view(args: argparse.Namespace) -> list[dict[str, Any]]:
    from gateway.operations.views import identities_view

    journal = open_readonly(args)
    try:
        # the command line runs with the journal file's permissions: it shows what an operator sees
        return await identities_view(journal, held_only=args.held, operator=True)
    finally:
        await journal.close()


def run(args: argparse.Namespace) -> int:
    rows = asyncio.run(_view(args))
    if args.json:
        dump_json(rows)
        return 0
    for r in rows:
        held = ",".join(h["id"][:8] for h in r["held_exchanges"]) or "-"
        print(f"{r['ipp_key']:<40}  {r['ins'] or '-':<15}  {'qualified' if r['qualified'] else 'not-qualified':<13}  "
              f"{r['status'] or '-':<10}  held={held}{'  merged->' + r['merged_into'] if r['merged_into'] else ''}")
    if not rows:
        print("no identities" + (" with held documents" if args.held else ""))
    return 0
