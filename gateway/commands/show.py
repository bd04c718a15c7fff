"""``relais show ID``: one exchange with its events, findings, documents and deliveries."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from gateway.commands._common import add_config_args, dump_json, open_readonly
from gateway.operations.views import exchange_detail

__all__ = ["register"]

def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("show", help="show one exchange (id or unique id prefix)")
    p.add_argument("id")
    add_config_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


async def _read(args: argparse.Namespace) -> dict[str, Any] | None:
    journal = open_readonly(args)
    try:
        return await exchange_detail(journal, args.id)
    finally:
        await journal.close()


def run(args: argparse.Namespace) -> int:
    detail = asyncio.run(_read(args))
    if detail is None:
        print(f"no exchange {args.id}")
        return 1
    if args.json:
        dump_json(detail)
        return 0
    for key in ("id", "received_at", "status", "message_type", "control_id", "sender", "sha256", "ack_code",
                "reason_code", "reason", "document_id"):
        print(f"{key:>13}: {detail.get(key) if detail.get(key) is not None else '-'}")
    for f in detail["findings"].get("errors", []):
        print(f"        error: {f['code']} at {f.get('location') or '-'}: {f['message']}")
    for f in detail["findings"].get("warnings", []):
        print(f"      warning: {f['code']} at {f.get('location') or '-'}: {f['message']}")
    print("       events:")
    for ev in detail["events"]:
        print(f"   {ev['at'][:23]}  {ev['stage']:<18} {json.dumps(ev['detail'], ensure_ascii=False)}")
    for d in detail["deliveries"]:
        print(f"     delivery: {d['destination']} {d['kind']} {d['status']} attempts={d['attempts']} "
              f"{d['last_error'] or ''}")
    return 0
