"""Which acknowledgements a message gets: HL7 v2 original or enhanced mode.

HL7 v2.5 ch. 2 §2.9.2 (original mode) and §2.9.3 (enhanced mode):

* MSH-15 (accept acknowledgement type) and MSH-16 (application acknowledgement type)
  both empty → **original mode**: one ACK on the connection, MSA-1 AA / AE / AR.
* either valued → **enhanced mode**. The *accept* acknowledgement (MSA-1 CA / CE / CR)
  goes back on the connection and only says whether the message was taken into safe
  storage; the *application* acknowledgement (MSA-1 AA / AE / AR, with the ERR
  segments) is a separate message the receiver sends later to the sender.
  Each field takes a value of HL7 table 0155: ``AL`` always, ``NE`` never, ``ER`` only
  on error / reject, ``SU`` only on success. Values are compared trimmed and in upper
  case (``"al "`` is ``AL``).
* A field left empty while the other is valued is read as ``AL`` (table 0155 gives no
  default; always answering is the choice that never leaves a sender without an
  answer it may be waiting for). An unknown value is read as ``AL`` for the same reason.

The accept acknowledgement is CA whenever the bytes are stored, except that an
unsupported message type, event, version or processing id is a commit *reject*
(§2.9.3.1: CR "one of MSH-9, MSH-11 or MSH-12 is not acceptable"). A storage failure
sends nothing at all (the sender resends), so CE never leaves this gateway.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AckPlan", "plan_acks"]

_TABLE_0155 = frozenset({"AL", "NE", "ER", "SU"})


@dataclass(frozen=True, slots=True)
class AckPlan:
    """What to send: ``immediate`` on the connection (None = nothing) and whether an application ACK follows."""

    enhanced: bool
    immediate: str | None  # AA/AE/AR (original mode) or CA/CR (accept ACK), None for nothing
    application: bool  # enhanced mode: an application ACK (AA/AE/AR) is sent to the return address
    accept_type: str = ""  # MSH-15 as read
    application_type: str = ""  # MSH-16 as read


def _wanted(kind: str, success: bool) -> bool:
    if kind == "NE":
        return False
    if kind == "ER":
        return not success
    if kind == "SU":
        return success
    return True  # AL, and anything table 0155 does not know


def _norm(value: str) -> str:
    value = value.strip().upper()
    return value if value in _TABLE_0155 else ("AL" if value else "")


def plan_acks(msh15: str, msh16: str, ack_code: str, *, commit_reject: bool) -> AckPlan:
    """Decide the acknowledgements for a stored message whose application verdict is ``ack_code``.

    ``commit_reject`` is true when the refusal is about MSH-9 / MSH-11 / MSH-12 (or the
    MSH could not be read at all): enhanced mode then answers CR instead of CA.
    """
    accept, application = _norm(msh15), _norm(msh16)
    if not accept and not application:
        return AckPlan(enhanced=False, immediate=ack_code, application=False)
    accept = accept or "AL"
    application = application or "AL"
    commit = "CR" if ack_code == "AR" and commit_reject else "CA"
    immediate = commit if _wanted(accept, commit == "CA") else None
    # After a commit reject there is nothing to process: no application ACK follows.
    app = commit == "CA" and _wanted(application, ack_code == "AA")
    return AckPlan(True, immediate, app, accept, application)
