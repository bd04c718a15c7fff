"""Recording what arrives: an exchange with its documents, deliveries and identity effects."""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway.core.identity.gate import registry_qualified
from gateway.journal.rows import (
    AdtEffects,
    Identity,
    IdentityContext,
    InboundOutcome,
    InboundRecord,
    NewDelivery,
    NewEvent,
    Row,
)
from gateway.journal.session import Session
from gateway.journal.states import ExchangeStatus, check_exchange_move

__all__ = ["identity_context", "lift_hold", "record_inbound", "record_replay", "rejudge_hold", "insert_delivery", "add_events"]

_REHOLD_REASON = "INS removed or downgraded by ADT^A47"


def identity_context(s: Session, ipp_key: str | None, ins: str | None) -> IdentityContext:
    by_ipp = s.get_identity(ipp_key) if ipp_key else None
    with_ins = tuple(Identity.of(r) for r in s.identities_with_ins(ins)) if ins else ()
    encounter = s.current_encounter(ipp_key) if ipp_key else None
    from gateway.journal.rows import Encounter

    return IdentityContext(
        by_ipp=Identity.of(by_ipp) if by_ipp else None, with_ins=with_ins,
        encounter=Encounter.of(encounter) if encounter else None,
    )


def lift_hold(s: Session, ex: Row | dict[str, Any], at: str, detail: dict[str, Any]) -> None:
    """A held exchange (locked, read under the lock) goes on: its waiting deliveries are queued,
    the hold reason leaves the summary, and a ``released`` event says why (``detail``)."""
    check_exchange_move(ex["status"], ExchangeStatus.QUEUED, ex["id"])
    s.queue_waiting_deliveries(ex["id"], at)
    s.update_exchange(ex["id"], at, status="queued", reason_code=None, reason=None, held_since=None)
    s.add_event(ex["id"], at, "released", detail)


def insert_delivery(s: Session, d: NewDelivery) -> None:
    s.insert_delivery(dataclasses.asdict(d))


def add_events(s: Session, exchange_id: str, at: str, events: list[NewEvent] | tuple[NewEvent, ...]) -> None:
    # one statement for them all: each statement is a GIL hand-off in the SQLite writer thread
    s.add_events([(e.exchange_id or exchange_id, at, e.stage, e.detail) for e in events])


def record_inbound(s: Session, r: InboundRecord) -> InboundOutcome:
    ex = r.exchange
    at = ex.received_at
    row = {k: v for k, v in dataclasses.asdict(ex).items() if k != "raw"}
    if r.dedup and ex.control_id:
        # two instances receiving the same message at once must not both take it for new
        s.lock_key(f"dedup|{ex.sender_app}|{ex.sender_facility}|{ex.control_id}")
        original = s.find_duplicate(ex.sender_app or "", ex.sender_facility or "", ex.control_id, ex.sha256)
        if original is not None:
            prev = s.get_exchange(original)
            ack_code = (prev or {}).get("ack_code") or "AA"
            s.insert_exchange({**row, "raw": ex.raw or b"", "status": ExchangeStatus.DUPLICATE,
                               "duplicate_of": original, "ack_code": ack_code, "reason_code": None, "reason": None,
                               "held_since": None})
            add_events(s, ex.id, at, [*r.duplicate_events, NewEvent("duplicate", {"of": original})])
            return InboundOutcome(ex.id, ExchangeStatus.DUPLICATE, ack_code, duplicate_of=original)
    if r.ack:
        return _record_ack(s, r, row)

    status = ex.status
    events = list(r.events)
    lifted = _hold_lifted(s, r)
    if lifted:
        status = ExchangeStatus.QUEUED
        row.update(status=status, reason_code=None, reason=None, held_since=None)
        events.append(NewEvent("released", {"cause": "identity qualified while the document was judged"}))
    # inserted with its bytes in one statement: nothing below updates this exchange's row (an
    # UPDATE would make SQLite rewrite the whole row, blob included)
    s.insert_exchange({**row, "raw": ex.raw or b""})
    for doc in r.documents:
        s.insert_document(ex.id, doc.idx, doc.unique_id, doc.action, doc.cda, doc.xds, doc.fhir)
    for d in r.deliveries:
        waiting_for_hold = lifted and d.status == "waiting"
        insert_delivery(s, dataclasses.replace(d, status="queued") if waiting_for_hold else d)
    add_events(s, ex.id, at, events)
    released: list[str] = []
    if r.adt is not None:
        released = apply_adt(s, ex.id, r.adt, at)
    if r.remember_identity is not None and s.get_identity(r.remember_identity.ipp_key) is None:
        # documents feed the registry too, but never downgrade what an ADT established
        s.upsert_identity(_identity_row(r.remember_identity))
    if r.deliveries or released:
        s.notify_work()
    return InboundOutcome(ex.id, status, ex.ack_code, released=tuple(released))


def _hold_lifted(s: Session, r: InboundRecord) -> bool:
    """Judged held for want of a qualified INS, but the registry has it qualified now."""
    ex = r.exchange
    ins = r.hold_unless_qualified
    if ins is None or ex.status != ExchangeStatus.HELD or ex.reason_code != "INS_NOT_QUALIFIED":
        return False
    s.lock_key(f"patient|{ex.patient_ipp or ins}")
    return registry_qualified(identity_context(s, ex.patient_ipp, ins), ins)


def _record_ack(s: Session, r: InboundRecord, row: dict[str, Any]) -> InboundOutcome:
    """An inbound ACK: journaled and matched to what it answers, never answered (HL7 v2.5 §2.9.2)."""
    ex = r.exchange
    at = ex.received_at
    s.insert_exchange({**row, "raw": ex.raw or b"", "status": ExchangeStatus.RECORDED, "ack_code": None})
    add_events(s, ex.id, at, r.events)
    matched = s.outbound_by_control_id(r.acknowledges) if r.acknowledges else None
    if matched is not None:
        s.add_event(ex.id, at, "ack:matched", {"delivery": matched["id"], "exchange": matched["exchange_id"]})
        s.add_event(matched["exchange_id"], at, f"{matched['kind']}:acknowledged",
                    {"by": ex.id, "code": r.acknowledgement_code})
    else:
        s.add_event(ex.id, at, "ack:unmatched", {"acknowledges_known": False})
    return InboundOutcome(ex.id, ExchangeStatus.RECORDED, "")


def _identity_row(rec: Any, **extra: Any) -> dict[str, Any]:
    row = dataclasses.asdict(rec)
    row["qualified"] = int(bool(row["qualified"]))
    return {**row, **extra}


# -- PAM-FR effects -------------------------------------------------------------------------------
def apply_adt(s: Session, exchange_id: str, fx: AdtEffects, at: str) -> list[str]:
    key = fx.key
    s.lock_key(f"patient|{key}")
    for old_key in fx.merged_keys:  # A40: the old records point at the survivor, their work follows
        s.merge_identity(old_key, key, at)
        for moved in s.exchanges_for_patient(ins=None, ipp=old_key, statuses=("held", "queued", "received")):
            s.update_exchange(moved["id"], at, patient_ipp=key)
            s.add_event(moved["id"], at, "re-keyed", {"from": old_key, "to": key, "by": exchange_id})
        s.rekey_open_deliveries(old_key, key, at)
    s.upsert_identity(_identity_row(fx.identity, merged_into=None))
    s.add_event(exchange_id, at, "identity",
                {"registry": "updated", "qualified": fx.identity.qualified, "trigger": fx.trigger})
    if fx.rehold:
        _rehold(s, exchange_id, fx.rehold_ins, key, at)
    if fx.link_to:
        s.link_identities(key, fx.link_to, at, exchange_id)
        s.add_event(exchange_id, at, "identity", {"registry": "linked", "to": fx.link_to})
    if fx.unlink_from:
        removed = s.unlink_identities(key, fx.unlink_from)
        s.add_event(exchange_id, at, "identity",
                    {"registry": "unlinked", "from": fx.unlink_from, "found": bool(removed)})
    if fx.encounter is not None:
        e = fx.encounter
        s.upsert_encounter(dict(visit_key=e.visit_key, ipp_key=e.ipp_key, patient_class=e.patient_class,
                                trigger=e.trigger, cancelled=int(e.cancelled), updated_at=at, exchange_id=exchange_id))
        s.add_event(exchange_id, at, "encounter", fx.encounter_detail or {})
    return _release(s, exchange_id, fx.release_ins, key, at) if fx.release else []


def _release(s: Session, by_exchange: str, ins: str | None, key: str, at: str) -> list[str]:
    released: list[str] = []
    # only documents held for want of this very INS can go: an index holds just those (the
    # patient's other held documents, conflicts for an operator, are not read at every ADT)
    candidates = s.waiting_for_ins(ins) if ins else s.exchanges_for_patient(ins=None, ipp=key, statuses=("held",))
    for found in candidates:
        if found["reason_code"] != "INS_NOT_QUALIFIED" or found["patient_ins"] != ins:
            continue  # conflicts and broken INS need an operator (and need not be read again)
        s.lock_exchange(found["id"])  # against a hold expiring or an operator releasing it meanwhile
        ex = s.get_exchange(found["id"])
        if ex is None or ex["status"] != "held":
            continue
        if ex["reason_code"] != "INS_NOT_QUALIFIED" or ex["patient_ins"] != ins:
            continue  # conflicts and broken INS need an operator
        lift_hold(s, ex, at, {"by": by_exchange, "cause": "identity qualified by ADT"})
        released.append(ex["id"])
    return released


def _rehold(s: Session, by_exchange: str, ins: str | None, key: str, at: str) -> None:
    """A47: documents not yet delivered for this patient go back on hold.

    Queued and failed deliveries wait again at once; an attempt already in flight cannot
    be recalled, but if it fails it waits instead of retrying (``record_attempt``).
    """
    for found in s.exchanges_for_patient(ins=ins, ipp=key, statuses=("queued",)):
        s.lock_exchange(found["id"])
        ex = s.get_exchange(found["id"])
        if ex is None or ex["status"] != "queued":
            continue
        s.hold_open_document_deliveries(ex["id"], at)
        check_exchange_move(ex["status"], ExchangeStatus.HELD, ex["id"])
        s.update_exchange(ex["id"], at, status="held", reason_code="INS_NOT_QUALIFIED", reason=_REHOLD_REASON,
                          held_since=at)
        s.add_event(ex["id"], at, "held", {"code": "INS_NOT_QUALIFIED", "message": _REHOLD_REASON, "by": by_exchange})


# -- replays and second judgements -----------------------------------------------------------------
def record_replay(s: Session, original_id: str, new_id: str, actor: str, at: str) -> None:
    s.add_event(original_id, at, "replayed", {"new_exchange": new_id, "by": actor})
    s.add_event(new_id, at, "replay-of", {"exchange": original_id, "by": actor})
    s.append_audit(at=at, actor=actor, action="replay", target=original_id, detail={"new_exchange": new_id})


def rejudge_hold(s: Session, exchange_id: str, release: bool, code: str | None, message: str | None,
                 cause: str, at: str) -> str | None:
    """``released``, ``changed`` (held for another reason now) or None (no longer held, or no change)."""
    s.lock_exchange(exchange_id)
    ex = s.get_exchange(exchange_id)
    if ex is None or ex["status"] != "held":
        return None  # released meanwhile
    if release:
        lift_hold(s, ex, at, {"cause": cause, "override": ex["reason_code"]})
        s.notify_work()
        return "released"
    if code != ex["reason_code"]:
        s.update_exchange(ex["id"], at, reason_code=code, reason=message)
        s.add_event(ex["id"], at, "held", {"code": code, "message": message, "was": ex["reason_code"]})
        return "changed"
    return None
