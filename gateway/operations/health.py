"""Per-destination health for the overview and ``GET /v1/destinations``: is it working, and since when not.

Read from the journal in one transaction with indexed queries (attempts by finish time,
open deliveries by status), so it stays cheap on a journal of millions of exchanges:

* failure rate over the last 5 and 60 minutes (attempts that did not reach the destination);
* last success within the last 24 hours (older is "more than a day ago");
* queue depth and the age of the oldest delivery not yet done;
* a state: ``failing`` when most recent attempts fail, or work waits with no success for
  ``STALL_MINUTES``; ``healthy`` otherwise (``idle`` when there is nothing to do and nothing was tried).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.journal.base import Journal

__all__ = ["DestinationHealth", "destination_health", "FAILED_OUTCOMES", "STALL_MINUTES"]

#: attempt outcomes that did not put the document at the destination
FAILED_OUTCOMES = frozenset({"failed", "dead", "unknown", "crashed"})  # crashed: a bug in our code during the attempt
_SUCCESS = frozenset({"delivered", "found-existing"})
STALL_MINUTES = 15


@dataclass(frozen=True)
class DestinationHealth:
    """What an operator needs to know about one destination right now."""

    name: str
    kind: str
    state: str  # healthy | failing | idle
    attempts_5m: int
    failure_rate_5m: float | None  # None: no attempt in the window
    attempts_60m: int
    failure_rate_60m: float | None
    last_success: str | None  # ISO, within the last 24 h
    queue_depth: int
    oldest_queued_seconds: float | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _rate(failed: int, total: int) -> float | None:
    return round(failed / total, 3) if total else None


async def destination_health(journal: Journal, *, now: datetime, kinds: dict[str, str]) -> list[DestinationHealth]:
    """Health of every configured destination (``kinds``: name → kind) and of any with open work."""
    since_60 = (now - timedelta(minutes=60)).isoformat(timespec="microseconds")
    since_5 = (now - timedelta(minutes=5)).isoformat(timespec="microseconds")
    day = (now - timedelta(hours=24)).isoformat(timespec="microseconds")
    counts: dict[str, dict[str, int]] = {}
    for r in await journal.attempt_tallies_since(since_60):
        c = counts.setdefault(r.destination, {"t60": 0, "f60": 0, "t5": 0, "f5": 0})
        failed = r.outcome in FAILED_OUTCOMES
        c["t60"] += r.n
        c["f60"] += r.n if failed else 0
        if r.finished_at >= since_5:
            c["t5"] += r.n
            c["f5"] += r.n if failed else 0
    last = await journal.last_success_since(day)
    work = await journal.open_work()
    depth = {w.destination: w.count for w in work}
    oldest = {w.destination: w.oldest for w in work}
    out = []
    for name in sorted(set(kinds) | set(depth) | set(counts)):
        c = counts.get(name, {"t60": 0, "f60": 0, "t5": 0, "f5": 0})
        age = (now - datetime.fromisoformat(oldest[name])).total_seconds() if name in oldest else None
        rate5 = _rate(c["f5"], c["t5"])
        stalled = age is not None and age > STALL_MINUTES * 60 and (
            name not in last or last[name] < (now - timedelta(minutes=STALL_MINUTES)).isoformat()
        )
        if (rate5 is not None and rate5 >= 0.5) or stalled:
            state = "failing"
        elif c["t60"] == 0 and not depth.get(name):
            state = "idle"
        else:
            state = "healthy"
        out.append(DestinationHealth(
            name=name, kind=kinds.get(name, "unknown"), state=state, attempts_5m=c["t5"], failure_rate_5m=rate5,
            attempts_60m=c["t60"], failure_rate_60m=_rate(c["f60"], c["t60"]), last_success=last.get(name),
            queue_depth=depth.get(name, 0), oldest_queued_seconds=round(age, 1) if age is not None else None,
        ))
    return out
