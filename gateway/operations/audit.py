"""What operators' tools share beside the journal's own actions: audit chain checks, durations.

The actions themselves — release, retry, re-route — are journal operations
(``Journal.release_exchange`` …): each one transaction that also appends a hash-chained
audit row, so the journal can prove afterwards who did what.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from gateway.errors import OperationError
from gateway.journal.audit_chain import GENESIS_HASH, audit_hash
from gateway.journal.rows import AuditEntry, iso

__all__ = ["verify_audit", "OperationError", "iso", "parse_duration", "audit_detail_json"]


def verify_audit(rows: list[AuditEntry]) -> tuple[bool, int | None, int]:
    """Walk the hash chain. Returns (intact, first broken seq or None, rows checked)."""
    prev = GENESIS_HASH
    for row in rows:
        expected = audit_hash(prev, row.at, row.actor, row.action, row.target, row.detail or "")
        if row.prev_hash != prev or row.hash != expected:
            return False, int(row.seq), len(rows)
        prev = row.hash
    return True, None, len(rows)


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s`` → timedelta."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    text = text.strip().lower()
    if not text or text[-1] not in units or not text[:-1].replace(".", "", 1).isdigit():
        raise ValueError(f"duration must look like 90d, 12h, 30m or 45s, got {text!r}")
    return timedelta(seconds=float(text[:-1]) * units[text[-1]])


def audit_detail_json(row: AuditEntry) -> dict[str, Any]:
    return {**row.as_dict(), "detail": json.loads(row.detail or "{}")}
