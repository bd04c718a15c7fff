"""``relais exchanges``: list exchanges from the journal (works while ``serve`` runs)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta

from gateway.commands._common import add_config_args, dump_json, open_readonly
from gateway.journal.rows import Exchange
from gateway.model import EXCHANGE_STATUSES
from gateway.operations.views import exchange_json

__all__ = ["register", "parse_since"]

_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_HEADER = ("ID", "RECEIVED (UTC)", "STATUS", "TYPE", "CONTROL ID", "SENDER", "REASON")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("exchanges", help="list exchanges in the journal, newest first")
    add_config_args(p)
    p.add_argument("--status", choices=EXCHANGE_STATUSES)
    p.add_argument("--type", dest="message_type", help="message type, e.g. MDM^T02 or ADT")
    p.add_argument("--control-id", help="MSH-10 as sent")
    p.add_argument("--sender", help="MSH-3, MSH-4 or MSH-3|MSH-4")
    p.add_argument("--patient", help="INS, or IPP as AUTHORITY|IPP (a bare IPP matches any authority)")
    p.add_argument("--document", help="document uniqueId")
    p.add_argument("--since", type=parse_since, help="ISO date/time (UTC) or a duration ago: 30m, 12h, 7d")
    p.add_argument("--until", type=parse_since, help="same forms as --since")
    p.add_argument("--limit", type=_positive, default=50, help="page size (default 50)")
    p.add_argument("--page", type=_positive, default=1, help="page number, 1 = newest")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_since(text: str, *, now: datetime | None = None) -> str:
    """A journal timestamp (ISO, UTC) from ``2026-11-30``, ``2026-11-30T08:00`` or ``12h`` / ``7d`` / ``30m`` ago."""
    text = text.strip()
    if text[:-1].isdigit() and text[-1:] in _UNITS:
        start = (now or datetime.now(UTC)) - timedelta(**{_UNITS[text[-1]]: int(text[:-1])})
        return start.isoformat(timespec="milliseconds")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date/time or a duration like 12h, got {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat(timespec="milliseconds")


async def _page(args: argparse.Namespace, offset: int) -> list[Exchange]:
    journal = open_readonly(args)
    try:
        return await journal.list_exchanges(
            status=args.status, message_type=args.message_type, control_id=args.control_id, sender=args.sender,
            patient=args.patient, document=args.document, since=args.since, until=args.until,
            limit=args.limit + 1, offset=offset,
        )
    finally:
        await journal.close()


def run(args: argparse.Namespace) -> int:
    offset = (args.page - 1) * args.limit
    rows = asyncio.run(_page(args, offset))
    more = len(rows) > args.limit
    items = [exchange_json(r) for r in rows[: args.limit]]
    if args.json:
        dump_json(items)
    elif items:
        lines = [_HEADER] + [
            (e["id"], e["received_at"][:19], e["status"], e["message_type"] or "-", e["control_id"] or "-",
             e["sender"] or "-", e["reason_code"] or "")
            for e in items
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(_HEADER) - 1)]
        for line in lines:
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)) + "  " + line[-1])
    else:
        print("no exchanges match" if args.page == 1 else f"no exchanges on page {args.page}")
    if more:
        # stderr, so that --json output stays one parseable document
        print(f"more exchanges: add --page {args.page + 1} (page size {args.limit})", file=sys.stderr)
    return 0
