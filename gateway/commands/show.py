"""``relais show ID``: one exchange with its events, findings, documents and deliveries."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from gateway.commands._common import add_config_args, dump_json, exchange_json, open_readonly
from gateway.journal.base import Journal
from gateway.journal.rows import Row

__all__ = ["register", "exchange_detail", "DELIVERY_KEYS", "ATTEMPT_KEYS", "DOCUMENT_KEYS"]

# the JSON shape of each part of the trace (``relais show --json``, the API): what the journal
# selected for it before rows were typed; the other fields of a row are not part of the trace
DELIVERY_KEYS = ("id", "exchange_id", "destination", "kind", "status", "attempts", "next_attempt_at", "last_error",
                 "unique_id", "created_at", "updated_at")
ATTEMPT_KEYS = ("id", "delivery_id", "number", "started_at", "finished_at", "outcome", "error", "duration")
DOCUMENT_KEYS = ("exchange_id", "idx", "unique_id", "action")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("show", help="show one exchange (id or unique id prefix)")
    p.add_argument("id")
    add_config_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _pick(row: Row, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: row[k] for k in keys}


async def exchange_detail(journal: Journal, exchange_id: str) -> dict[str, Any] | None:
    """One exchange (id or unique prefix) with its findings, events, documents and deliveries."""
    row = await journal.get_exchange(exchange_id)
    if row is None:
        return None
    out = exchange_json(row)
    out["findings"] = row.findings or {"errors": [], "warnings": []}
    out["events"] = [ev.as_dict() for ev in await journal.events(row.id)]
    out["documents"] = [_pick(doc, DOCUMENT_KEYS) for doc in await journal.documents_for(row.id)]
    deliveries = [_pick(d, DELIVERY_KEYS) for d in await journal.deliveries_for(row.id)]
    for d in deliveries:
        d["attempts_detail"] = [_pick(a, ATTEMPT_KEYS) for a in await journal.attempts_for(d["id"])]
    out["deliveries"] = deliveries
    first = await journal.document(row.id, 1)
    out["fhir"] = first.fhir if first is not None else None
    out["xds"] = first.xds if first is not None else None
    return out


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
