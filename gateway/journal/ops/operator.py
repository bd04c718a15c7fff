"""Operator actions, each audited in a hash-chained row: release, retry, re-route."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.errors import OperationError
from gateway.journal.ops.ingest import lift_hold
from gateway.journal.rows import BulkResult, Delivery, Exchange
from gateway.journal.session import Session
from gateway.journal.states import check_delivery_move, check_exchange_move

__all__ = ["release_exchange", "release_held", "retry_delivery", "retry_dead", "reroute"]


def _require(operator: str, reason: str) -> None:
    if not reason.strip() or not operator.strip():
        raise OperationError("an operator name and a reason are required", 400)


def release_exchange(s: Session, exchange_id: str, operator: str, reason: str, at: str) -> Exchange:
    """Operator override of the identity gate: queue a held exchange's deliveries now."""
    ex = s.get_exchange(exchange_id)  # by id or unique prefix
    if ex is not None:
        s.lock_exchange(ex["id"])  # a hold expiring at this moment goes before or after, not across
        ex = s.get_exchange(ex["id"])
    if ex is None:
        raise OperationError(f"no exchange {exchange_id}", 404)
    if ex["status"] != "held":
        raise OperationError(f"exchange {ex['id']} is {ex['status']}, not held")
    _require(operator, reason)
    # the hold reason goes from the summary (the exchange is no longer held for it); the
    # event and the audit row keep which hold the operator overrode
    lift_hold(s, ex, at, {"by": operator, "reason": reason, "override": ex["reason_code"]})
    s.append_audit(at=at, actor=operator, action="release", target=ex["id"],
                   detail={"reason": reason, "hold_code": ex["reason_code"]})
    s.notify_work()
    return Exchange.of({**ex, "status": "queued", "held_since": None, "reason_code": None, "reason": None})


def release_held(s: Session, operator: str, reason: str, at: str, hold_code: str | None,
                 ids: Sequence[str] | None) -> BulkResult:
    """Release many held exchanges in one transaction (each one audited like a single release).

    ``ids`` picks exchanges (refusals are reported, not raised, so one stale id does not
    undo the others); without it every held exchange goes, or those held for ``hold_code``.
    """
    _require(operator, reason)
    if ids is None:
        ids = [h["id"] for h in s.held_exchanges() if hold_code is None or h["reason_code"] == hold_code]
    return _each(ids, lambda i: release_exchange(s, i, operator, reason, at).id)


def retry_delivery(s: Session, delivery_id: str, operator: str, reason: str, at: str) -> Delivery:
    """Make a failed or dead delivery due now (delivery stays idempotent: lookup first)."""
    d = s.get_delivery(delivery_id)
    if d is None:
        raise OperationError(f"no delivery {delivery_id}", 404)
    if d["status"] not in ("failed", "dead"):
        raise OperationError(f"delivery {delivery_id} is {d['status']}; only failed or dead deliveries are retried")
    s.lock_exchange(d["exchange_id"])
    s.lock_delivery(delivery_id)
    d = s.get_delivery(delivery_id) or d
    if d["status"] not in ("failed", "dead"):
        raise OperationError(f"delivery {delivery_id} is {d['status']}; only failed or dead deliveries are retried")
    check_delivery_move(d["status"], "failed", delivery_id)
    s.update_delivery(delivery_id, at, status="failed", next_attempt_at=at)
    ex = s.get_exchange(d["exchange_id"])
    if ex is not None and ex["status"] != "held":
        check_exchange_move(ex["status"], "queued", ex["id"])
        s.update_exchange(d["exchange_id"], at, status="queued")
    detail = {"delivery": delivery_id} | ({"reason": reason} if reason else {})
    s.add_event(d["exchange_id"], at, "retry", detail | {"by": operator})
    s.append_audit(at=at, actor=operator, action="retry", target=d["exchange_id"], detail=detail)
    s.notify_work()
    return Delivery.of({**d, "status": "failed", "next_attempt_at": at})


def retry_dead(s: Session, operator: str, reason: str, at: str, destination: str | None,
               ids: Sequence[str] | None) -> BulkResult:
    """Retry many failed or dead deliveries in one transaction, each one audited with ``reason``."""
    _require(operator, reason)
    if ids is None:
        ids = s.dead_delivery_ids(destination=destination)
    return _each(ids, lambda i: retry_delivery(s, i, operator, reason, at).id)


def reroute(s: Session, source: str, target: str, operator: str, reason: str, at: str) -> list[Delivery]:
    """Give the work of destination ``source`` to ``target``, audited per delivery.

    Its unfinished and dead document deliveries move, due now; those still held by the
    identity gate move and stay held. The caller checks that ``target`` is configured.
    """
    _require(operator, reason)
    if source == target:
        raise OperationError("the source and the target are the same destination", 400)
    moved = s.reroute(source, target, at=at)
    for r in moved:
        detail = {"delivery": r["id"], "from": source, "to": target, "reason": reason}
        s.add_event(r["exchange_id"], at, "rerouted", detail | {"by": operator})
        s.append_audit(at=at, actor=operator, action="reroute", target=r["exchange_id"], detail=detail)
    if moved:
        s.notify_work()
    return [Delivery.of(r) for r in moved]


def _each(ids: Sequence[str], action: Callable[[str], str]) -> BulkResult:
    """Apply one audited action per id; a refusal is reported beside the others, never raised."""
    done: list[str] = []
    refused: list[dict[str, str]] = []
    for item in ids:
        try:
            done.append(action(item))
        except OperationError as exc:
            refused.append({"id": item, "reason": str(exc)})
    return BulkResult(tuple(done), tuple(refused))
