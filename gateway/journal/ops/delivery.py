"""Deliveries: claims under a lease, fenced attempt outcomes, the ZAMs they call for, hold expiry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.errors import JournalError
from gateway.journal.ops.ingest import add_events, insert_delivery
from gateway.journal.rows import AttemptRecord, AttemptRecorded, Delivery, NewDelivery, NewEvent, ZamFollowUp
from gateway.journal.session import Session
from gateway.journal.states import DeliveryStatus, check_delivery_move, check_exchange_move

__all__ = ["claim_due", "record_attempt", "expire_hold", "record_follow_up", "exchange_status_after"]

#: deliveries whose outcome decides the exchange's (ZAMs and application ACKs do not)
_DECIDING = ("document", "mail", "hl7")


def claim_due(s: Session, worker: str, limit: int, now: str, lease_until: str) -> list[Delivery]:
    return [Delivery.of(r) for r in s.claim_due(now=now, worker=worker, lease_until=lease_until, limit=limit)]


def record_attempt(s: Session, rec: AttemptRecord) -> AttemptRecorded:
    # the delivery's row first: if another instance is re-claiming it right now, its claim
    # commits before we read, and the fencing below sees the newer attempt
    s.lock_delivery(rec.delivery_id)
    d = s.get_delivery(rec.delivery_id)
    if d is None or d["status"] != DeliveryStatus.IN_FLIGHT or d["claimed_by"] != rec.worker \
            or int(d["attempts"]) != rec.attempt:
        # the lease ran out and another instance took the delivery (or it was re-routed): its
        # attempt is the one that counts now; writing ours would overwrite it
        raise JournalError(f"delivery {rec.delivery_id}: attempt {rec.attempt} of {rec.worker} is no longer current",
                           code="JOURNAL_STALE_CLAIM")
    exchange_id = str(d["exchange_id"])
    s.lock_exchange(exchange_id)  # two outcomes of one exchange decide its status and ZAM one after the other
    at = rec.finished_at
    status: str = rec.status
    if status == "failed" and d["kind"] in ("document", "mail"):
        ex = s.get_exchange(exchange_id)
        if ex is not None and ex["status"] == "held":
            status = DeliveryStatus.WAITING  # put on hold (A47) while this attempt was in flight
    s.insert_attempt(dict(
        delivery_id=rec.delivery_id, number=rec.attempt, started_at=rec.started_at, finished_at=at,
        outcome=rec.outcome, error=rec.error, request=rec.request, response=rec.response, duration=rec.duration,
    ))
    check_delivery_move(d["status"], status, rec.delivery_id)
    s.update_delivery(rec.delivery_id, at, status=status, last_error=rec.error, claimed_by=None, lease_until=None,
                      next_attempt_at=rec.next_attempt_at or at)
    detail: dict[str, Any] = {"delivery": rec.delivery_id, "destination": d["destination"], "attempt": rec.attempt,
                              "outcome": rec.outcome}
    if rec.error:
        detail["error"] = rec.error
    s.add_event(exchange_id, at, f"attempt:{d['kind']}", detail)
    if rec.audit:
        s.append_audit(at=at, actor="dispatcher", action="submission", target=exchange_id,
                       detail={"delivery": rec.delivery_id, "destination": d["destination"],
                               "unique_id": d["unique_id"], "outcome": rec.outcome})
    exchange_status = exchange_status_after(s, exchange_id, at) if d["kind"] in _DECIDING else None
    zams: list[str] = []
    for follow in rec.follow_ups:
        if _zam_due(s, follow, rec.delivery_id):
            insert_delivery(s, follow.delivery)
            s.add_event(exchange_id, at, "zam:queued", {"positive": follow.positive, **follow.event})
            zams.append(follow.delivery.id)
    if d["kind"] not in _DECIDING and status == DeliveryStatus.DELIVERED:
        s.add_event(exchange_id, at, f"{d['kind']}:sent", {"delivery": rec.delivery_id})
    if zams or status == DeliveryStatus.FAILED:
        s.notify_work()  # a ZAM to send, or a retry that any instance may take when it is due
    return AttemptRecorded(status, exchange_status, tuple(zams))


def exchange_status_after(s: Session, exchange_id: str, at: str) -> str | None:
    """Delivered once every deciding delivery is; dead at the first dead one; otherwise unchanged."""
    rows = [d for d in s.deliveries_for(exchange_id) if d["kind"] in _DECIDING]
    statuses = {d["status"] for d in rows}
    if rows and statuses == {"delivered"}:
        new = "delivered"
    elif "dead" in statuses:
        new = "dead"
    else:
        return None
    ex = s.get_exchange(exchange_id)
    if ex and ex["status"] != new:
        check_exchange_move(ex["status"], new, exchange_id)
        dead = next((d for d in rows if d["status"] == "dead"), None)
        s.update_exchange(
            exchange_id, at, status=new,
            reason_code=(dead["last_error"] or "").split(":")[0] if dead else None,
            reason=dead["last_error"] if dead else None,
        )
        s.add_event(exchange_id, at, new, {})
    return new


def _zam_due(s: Session, follow: ZamFollowUp, delivery_id: str) -> bool:
    """Whether the ZAM still applies, judged on the rows as this transaction sees them."""
    if follow.rule == "once":
        return not s.zam_exists(str(follow.delivery.unique_id))
    ex = s.get_exchange(follow.delivery.exchange_id)
    if not ex or not ex.get("ack_reception"):
        return False
    rows = s.deliveries_for(follow.delivery.exchange_id)
    if any(d["kind"] == "zam" and not str(d.get("unique_id") or "").startswith(("Z02:", "Z03:")) for d in rows):
        return False  # one DMP receipt per exchange (the MSSanté Z02/Z03 are apart from it)
    if not follow.positive:
        return True
    siblings = [d for d in rows if d["kind"] == "document" and d["id"] != delivery_id
                and d["destination"] in follow.dmp_destinations]
    return all(d["status"] == "delivered" for d in siblings)  # positive: the last DMP delivery decides


def expire_hold(s: Session, exchange_id: str, reason: str, code: str | None, at: str,
                zam: NewDelivery | None) -> bool:
    s.lock_exchange(exchange_id)  # an operator's release of the same hold goes before or after, not across
    current = s.get_exchange(exchange_id)
    if current is None or current["status"] != "held":
        return False  # released (or re-keyed) since it was read: nothing to expire
    s.kill_waiting_deliveries(exchange_id, reason, at)
    check_exchange_move(current["status"], "dead", exchange_id)
    s.update_exchange(exchange_id, at, status="dead", reason=reason)
    s.add_event(exchange_id, at, "dead", {"code": code, "message": reason})
    if zam is not None and not any(d["kind"] == "zam" for d in s.deliveries_for(exchange_id)):
        insert_delivery(s, zam)
        s.add_event(exchange_id, at, "zam:queued", {"positive": False})
    return True


def record_follow_up(s: Session, exchange_id: str, at: str, events: Sequence[NewEvent],
                     zams: Sequence[ZamFollowUp]) -> list[str]:
    """Events about an exchange (an MSSanté report) and the ZAMs they call for, each one once."""
    s.lock_exchange(exchange_id)  # the same report read by two instances queues one ZAM
    add_events(s, exchange_id, at, tuple(events))
    queued: list[str] = []
    for follow in zams:
        if _zam_due(s, follow, ""):
            insert_delivery(s, follow.delivery)
            s.add_event(exchange_id, at, "zam:queued", {"positive": follow.positive, **follow.event})
            queued.append(follow.delivery.id)
    if queued:
        s.notify_work()
    return queued
