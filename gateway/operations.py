"""Operator actions shared by the CLI and the API: release, retry, audit (retention is in ``gateway.retention``).

Every action is one journal transaction that also appends a hash-chained audit row,
so the journal can prove afterwards who did what.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from gateway.journal.tx import GENESIS_HASH, Tx, iso

__all__ = [
    "release_exchange",
    "release_held",
    "retry_delivery",
    "retry_dead",
    "reroute",
    "verify_audit",
    "OperationError",
    "iso",
]


class OperationError(Exception):
    """An operator action that cannot be done (unknown id, wrong state). ``status`` maps to HTTP."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status



def release_exchange(tx: Tx, exchange_id: str, *, operator: str, reason: str, at: str) -> dict[str, Any]:
    """Operator override of the identity gate: queue a held exchange's deliveries now."""
    ex = tx.get_exchange(exchange_id)
    if ex is None:
        raise OperationError(f"no exchange {exchange_id}", 404)
    if ex["status"] != "held":
        raise OperationError(f"exchange {ex['id']} is {ex['status']}, not held")
    if not reason.strip() or not operator.strip():
        raise OperationError("an operator name and a reason are required", 400)
    tx.queue_waiting_deliveries(ex["id"], at)
    # the hold reason goes from the summary (the exchange is no longer held for it); the
    # event and the audit row keep which hold the operator overrode
    tx.update_exchange(ex["id"], at, status="queued", held_since=None, reason_code=None, reason=None)
    tx.add_event(ex["id"], at, "released", {"by": operator, "reason": reason, "override": ex["reason_code"]})
    tx.append_audit(at=at, actor=operator, action="release", target=ex["id"],
                    detail={"reason": reason, "hold_code": ex["reason_code"]})
    return {"id": ex["id"], "status": "queued"}


def release_held(
    tx: Tx, *, operator: str, reason: str, at: str, hold_code: str | None = None, ids: Sequence[str] | None = None
) -> dict[str, Any]:
    """Release many held exchanges in one transaction (each one audited like a single release).

    ``ids`` picks exchanges (refusals are reported, not raised, so one stale id does not
    undo the others); without it every held exchange goes, or those held for ``hold_code``.
    """
    _require(operator, reason)
    if ids is None:
        ids = [h["id"] for h in tx.held_exchanges() if hold_code is None or h["reason_code"] == hold_code]
    done, refused = _each(ids, lambda i: release_exchange(tx, i, operator=operator, reason=reason, at=at))
    return {"released": done, "refused": refused}


def retry_delivery(tx: Tx, delivery_id: str, *, operator: str, at: str, reason: str = "") -> dict[str, Any]:
    """Make a failed or dead delivery due now (delivery stays idempotent: lookup first)."""
    d = tx.get_delivery(delivery_id)
    if d is None:
        raise OperationError(f"no delivery {delivery_id}", 404)
    if d["status"] not in ("failed", "dead"):
        raise OperationError(f"delivery {delivery_id} is {d['status']}; only failed or dead deliveries are retried")
    tx.update_delivery(delivery_id, at, status="failed", next_attempt_at=at)
    tx.update_exchange(d["exchange_id"], at, status="queued")
    detail = {"delivery": delivery_id} | ({"reason": reason} if reason else {})
    tx.add_event(d["exchange_id"], at, "retry", detail | {"by": operator})
    tx.append_audit(at=at, actor=operator, action="retry", target=d["exchange_id"], detail=detail)
    return {"id": delivery_id, "status": "failed", "next_attempt_at": at}


def retry_dead(
    tx: Tx, *, operator: str, reason: str, at: str, destination: str | None = None, ids: Sequence[str] | None = None
) -> dict[str, Any]:
    """Retry many failed or dead deliveries in one transaction, each one audited with ``reason``.

    Without ``ids``: every dead delivery, or those of ``destination``.
    """
    _require(operator, reason)
    if ids is None:
        ids = tx.dead_delivery_ids(destination=destination)
    done, refused = _each(ids, lambda i: retry_delivery(tx, i, operator=operator, at=at, reason=reason))
    return {"retried": done, "refused": refused}


def reroute(
    tx: Tx, *, source: str, target: str, known: Sequence[str], operator: str, reason: str, at: str
) -> dict[str, Any]:
    """Give the work of destination ``source`` to ``target`` (a configured destination), audited per delivery.

    For a destination renamed or removed in the configuration: its unfinished and dead
    document deliveries move, due now; those still held by the identity gate move and stay held.
    """
    _require(operator, reason)
    if target not in known:
        raise OperationError(f"{target!r} is not a configured destination ({', '.join(sorted(known)) or 'none'})", 400)
    if source == target:
        raise OperationError("the source and the target are the same destination", 400)
    moved = tx.reroute(source, target, at=at)
    for r in moved:
        detail = {"delivery": r["id"], "from": source, "to": target, "reason": reason}
        tx.add_event(r["exchange_id"], at, "rerouted", detail | {"by": operator})
        tx.append_audit(at=at, actor=operator, action="reroute", target=r["exchange_id"], detail=detail)
    return {"rerouted": [r["id"] for r in moved], "refused": []}


def _require(operator: str, reason: str) -> None:
    if not reason.strip() or not operator.strip():
        raise OperationError("an operator name and a reason are required", 400)


def _each(ids: Sequence[str], action: Callable[[str], dict[str, Any]]) -> tuple[list[str], list[dict[str, str]]]:
    """Apply one audited action per id; a refusal is reported beside the others, never raised."""
    done: list[str] = []
    refused: list[dict[str, str]] = []
    for item in ids:
        try:
            done.append(action(item)["id"])
        except OperationError as exc:
            refused.append({"id": item, "reason": str(exc)})
    return done, refused


def verify_audit(tx: Tx) -> tuple[bool, int | None, int]:
    """Walk the hash chain. Returns (intact, first broken seq or None, rows checked)."""
    prev = GENESIS_HASH
    rows = tx.audit_rows()
    for row in rows:
        expected = Tx.audit_hash(prev, row["at"], row["actor"], row["action"], row["target"], row["detail"])
        if row["prev_hash"] != prev or row["hash"] != expected:
            return False, int(row["seq"]), len(rows)
        prev = row["hash"]
    return True, None, len(rows)


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s`` → timedelta."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    text = text.strip().lower()
    if not text or text[-1] not in units or not text[:-1].replace(".", "", 1).isdigit():
        raise ValueError(f"duration must look like 90d, 12h, 30m or 45s, got {text!r}")
    return timedelta(seconds=float(text[:-1]) * units[text[-1]])


def audit_detail_json(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "detail": json.loads(row["detail"] or "{}")}
