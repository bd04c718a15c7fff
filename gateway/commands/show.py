"""``relais show ID``: one exchange with its events, findings, documents and deliveries."""

from __future__ import annotations

import argparse
import json

from gateway.commands._common import add_config_args, dump_json, exchange_json, open_readonly

__all__ = ["register", "exchange_detail"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("show", help="show one exchange (id or unique id prefix)")
    p.add_argument("id")
    add_config_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def exchange_detail(tx, exchange_id: str) -> dict | None:  # type: ignore[no-untyped-def]
    row = tx.get_exchange(exchange_id)
    if row is None:
        return None
    out = exchange_json(row)
    out["findings"] = row.get("findings") or {"errors": [], "warnings": []}
    out["events"] = tx.events(row["id"])
    out["documents"] = tx.documents_for(row["id"])
    deliveries = tx.deliveries_for(row["id"])
    for d in deliveries:
        d["attempts_detail"] = tx.attempts_for(d["id"])
    out["deliveries"] = deliveries
    first = tx.get_document(row["id"], 1) or {}
    out["fhir"] = first.get("fhir")
    out["xds"] = first.get("xds")
    return out


def run(args: argparse.Namespace) -> int:
    journal = open_readonly(args)
    detail = journal.read_sync(lambda tx: exchange_detail(tx, args.id))
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
