"""The sweeper: held exchanges that waited too long, and leases nobody renews.

An exchange the identity gate holds waits for an ADT to qualify its patient, or for an
operator. Past ``identity.hold_max_hours`` it is dead with the reason, and the sender gets
a negative ZAM^Z01 when it asked for one (:class:`gateway.delivery.zam.ZamPolicy`).

The same periodic duty takes back in-flight deliveries whose lease ran out (an instance
died mid-send). With several instances sharing the journal, one at a time does it: the
``sweeper`` lease outlives two sweeps, so a live holder keeps it and a dead one loses it
within 15 s.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import structlog

from gateway.delivery.zam import ZamPolicy
from gateway.journal.base import Journal
from gateway.journal.rows import iso
from gateway.ports import Clock
from gateway.settings import Settings

__all__ = ["Sweeper"]

log = structlog.get_logger(__name__)

SWEEP_EVERY = 5.0
LEASE_SECONDS = 15.0


class Sweeper:
    """Expires holds and recovers lapsed leases, under the journal's ``sweeper`` lease."""

    def __init__(self, journal: Journal, settings: Settings, clock: Clock, zams: ZamPolicy) -> None:
        self.journal = journal
        self.settings = settings
        self.clock = clock
        self.zams = zams

    async def run(self, stopping: asyncio.Event, holder: str) -> None:
        """Sweep every few seconds until ``stopping`` is set; journal trouble is logged, never raised."""
        while not stopping.is_set():
            try:
                if await self.journal.hold_lease("sweeper", holder, LEASE_SECONDS):
                    await self.expire_holds()
                    await self.journal.recover_in_flight(expired_only=True)
            except Exception as exc:
                log.error("dispatcher.sweep_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SWEEP_EVERY):
                    await stopping.wait()

    async def expire_holds(self) -> list[str]:
        """Held past ``identity.hold_max_hours``: dead with the reason, and a negative ZAM."""
        now = self.clock.now()
        max_hours = self.settings.identity.hold_max_hours
        limit = iso(now - timedelta(hours=max_hours))
        held = [h for h in await self.journal.held_exchanges() if (h.held_since or "") < limit]
        expired: list[str] = []
        for h in held:
            zam = await self.zams.for_expired_hold(h)
            reason = f"held longer than {max_hours:g} h: {h.reason_code}"
            if await self.journal.expire_hold(h.id, reason=reason, code=h.reason_code, at=iso(now), zam=zam):
                expired.append(h.id)
        if expired:
            log.warning("dispatcher.holds_expired", count=len(expired))
        return expired
