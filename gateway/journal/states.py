"""Exchange and delivery states, and the moves between them: the one place that says which are allowed.

An exchange is what arrived (one message, mail or document); a delivery is one piece of
work it caused (a document to the DMP, a mail, a ZAM back to the sender). The journal
checks every status change against these tables, so a bug that would, say, resurrect a
rejected message or send a delivered document again fails loudly instead of acting.
"""

from __future__ import annotations

from enum import StrEnum

from gateway.errors import JournalError

__all__ = [
    "ExchangeStatus",
    "DeliveryStatus",
    "EXCHANGE_MOVES",
    "DELIVERY_MOVES",
    "OPEN_DELIVERY",
    "check_exchange_move",
    "check_delivery_move",
]


class ExchangeStatus(StrEnum):
    RECEIVED = "received"  # stored, being judged (never seen after the commit of a well-formed exchange)
    ACCEPTED = "accepted"  # valid, nothing to deliver (ADT, or no destination)
    REJECTED = "rejected"  # not valid: answered AE/AR, kept with its reason
    HELD = "held"  # valid, waiting for a qualified identity or a destination
    QUEUED = "queued"  # deliveries under way
    DELIVERED = "delivered"  # every delivery done
    DEAD = "dead"  # a delivery gave up, or a hold outlived its bound
    DUPLICATE = "duplicate"  # the same message again: answered like the first one, not processed
    RECORDED = "recorded"  # an inbound ACK: journaled and matched, never answered


class DeliveryStatus(StrEnum):
    WAITING = "waiting"  # not to be sent yet (identity hold, destination gone)
    QUEUED = "queued"  # due from next_attempt_at
    IN_FLIGHT = "in_flight"  # claimed by one instance under a lease
    FAILED = "failed"  # an attempt failed: due again from next_attempt_at
    DELIVERED = "delivered"
    DEAD = "dead"  # given up: an operator may retry or re-route it


E, D = ExchangeStatus, DeliveryStatus

#: status → the statuses it may become. Insertion sets the first status directly.
EXCHANGE_MOVES: dict[ExchangeStatus, frozenset[ExchangeStatus]] = {
    E.RECEIVED: frozenset({E.ACCEPTED, E.REJECTED, E.HELD, E.QUEUED}),
    E.HELD: frozenset({E.HELD, E.QUEUED, E.DEAD}),  # held again: a new reason
    E.QUEUED: frozenset({E.HELD, E.DELIVERED, E.DEAD}),  # held: re-held by A47, or its destination left
    # dead → queued: an operator retried or re-routed the dead delivery; → held: parked work
    E.DEAD: frozenset({E.QUEUED, E.HELD, E.DELIVERED}),
    E.DELIVERED: frozenset({E.QUEUED, E.DEAD}),  # a later delivery of the exchange (retry, mail) reopened it
    E.ACCEPTED: frozenset(),
    E.REJECTED: frozenset(),
    E.DUPLICATE: frozenset(),
    E.RECORDED: frozenset(),
}

DELIVERY_MOVES: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    D.WAITING: frozenset({D.WAITING, D.QUEUED, D.DEAD}),
    D.QUEUED: frozenset({D.QUEUED, D.IN_FLIGHT, D.WAITING}),
    D.FAILED: frozenset({D.FAILED, D.IN_FLIGHT, D.WAITING, D.QUEUED}),
    # in flight → waiting: its exchange was held while the attempt ran, or its destination left
    D.IN_FLIGHT: frozenset({D.DELIVERED, D.FAILED, D.DEAD, D.WAITING}),
    D.DEAD: frozenset({D.FAILED, D.QUEUED, D.WAITING}),  # retried or re-routed by an operator
    D.DELIVERED: frozenset(),  # never sent twice
}

#: deliveries that still have work to do (per-patient ordering waits for these)
OPEN_DELIVERY = frozenset({D.WAITING, D.QUEUED, D.IN_FLIGHT, D.FAILED})


def check_exchange_move(old: str, new: str, exchange_id: str) -> None:
    if new == old:  # a change of reason or of other fields, not a move
        return
    if ExchangeStatus(new) not in EXCHANGE_MOVES[ExchangeStatus(old)]:
        raise JournalError(f"exchange {exchange_id}: {old} cannot become {new}", code="JOURNAL_ILLEGAL_MOVE")


def check_delivery_move(old: str, new: str, delivery_id: str) -> None:
    if DeliveryStatus(new) not in DELIVERY_MOVES[DeliveryStatus(old)]:
        raise JournalError(f"delivery {delivery_id}: {old} cannot become {new}", code="JOURNAL_ILLEGAL_MOVE")
