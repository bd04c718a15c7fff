"""Read models: the public JSON shapes of exchanges, traces and identities.

One definition serves the CLI (``relais exchanges``, ``show``, ``identities``), the ``/v1``
API and the dashboard, so the three always show the same thing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from typing import Any

from gateway.errors import OperationError
from gateway.journal.base import Journal
from gateway.journal.rows import Row

__all__ = ["ATTEMPT_KEYS", "DELIVERY_KEYS", "DOCUMENT_KEYS", "exchange_detail", "exchange_json",
           "identities_view", "require_configured"]

# the JSON shape of each part of the trace (``relais show --json``, the API): what the journal
# selected for it before rows were typed; the other fields of a row are not part of the trace
DELIVERY_KEYS = ("id", "exchange_id", "destination", "kind", "status", "attempts", "next_attempt_at", "last_error",
                 "unique_id", "created_at", "updated_at")
ATTEMPT_KEYS = ("id", "delivery_id", "number", "started_at", "finished_at", "outcome", "error", "duration")
DOCUMENT_KEYS = ("exchange_id", "idx", "unique_id", "action")



def exchange_json(row: Row | Mapping[str, Any]) -> dict[str, Any]:
    """The public JSON shape of an exchange summary (CLI and API)."""
    sender = "|".join(x for x in (row.get("sender_app"), row.get("sender_facility")) if x) or None
    out = {
        "id": row["id"],
        "received_at": row["received_at"],
        "status": row["status"],
        "control_id": row.get("control_id"),
        "message_type": row.get("message_type"),
        "sender": sender,
        "sha256": row.get("sha256"),
        "size": row.get("size"),
        "listener": row.get("listener"),
        "ack_code": row.get("ack_code"),
        "reason_code": row.get("reason_code"),
        "reason": row.get("reason"),
        "document_id": row.get("document_id"),
    }
    if row.get("duplicate_of"):
        out["duplicate_of"] = row["duplicate_of"]
    return out


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


def require_configured(target: str, known: Collection[str]) -> None:
    """Refuse a target that is not a configured destination (the journal cannot know the configuration)."""
    if target not in known:
        raise OperationError(f"{target!r} is not a configured destination ({', '.join(sorted(known)) or 'none'})", 400)


def _pseudonym(key: str | None) -> str | None:
    # a stable handle so viewers can tell rows apart without seeing the IPP or INS
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12] if key else None


async def identities_view(journal: Journal, *, held_only: bool, operator: bool) -> list[dict[str, Any]]:
    """Identity registry rows with their held exchanges; identifiers and traits for operators only."""
    held = await journal.held_exchanges()
    out: list[dict[str, Any]] = []
    for row in await journal.identities():
        ins = row.get("ins")
        mine = [h for h in held if h.get("patient_ipp") == row["ipp_key"] or (ins and h.get("patient_ins") == ins)]
        if held_only and not mine:
            continue
        held_list = [
            {"id": h["id"], "reason_code": h["reason_code"], "held_since": h["held_since"],
             "control_id": h["control_id"], "message_type": h["message_type"]}
            for h in mine
        ]
        item: dict[str, Any] = {
            "ref": _pseudonym(row["ipp_key"]),
            "status": row.get("status"),
            "qualified": bool(row.get("qualified")),
            "merged": row.get("merged_into") is not None,
            "updated_at": row.get("updated_at"),
            "held_exchanges": held_list,
        }
        if operator:
            item |= {
                "ipp_key": row["ipp_key"], "ins": ins, "ins_oid": row.get("ins_oid"),
                "traits": row.get("traits") or {}, "merged_into": row.get("merged_into"),
            }
        out.append(item)
    return out
