"""Fault injection shared by the protocol simulators (DMP, MHD recipient).

The same three questions arise in every simulator: *does this request fail* (a scripted
entry first, then a seeded random draw), *before or after the simulator stored what it
received* (the after-store case is the one that tests a client's no-double-submission
logic), and *how* — the transport-level faults (connection reset, an answer that never
comes) are the same whatever the protocol; only the protocol's own error body (a SOAP
fault, a FHIR OperationOutcome) stays with each simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiohttp import web

__all__ = ["Fault", "FaultPlan", "abort", "hang"]


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    after_store: bool


class FaultPlan:
    """Which fault, if any, the next request gets.

    ``script`` entries (``"503"``, ``"reset:after"``, ``"ok"`` for a normal answer) are
    consumed first, for deterministic tests; then, with probability ``fail_rate``, one of
    ``faults`` is drawn, ``after_store_ratio`` of them after storing. Seeded: the same seed
    gives the same faults in the same order.
    """

    def __init__(self, known: Sequence[str], faults: Sequence[str], *, fail_rate: float = 0.0,
                 seed: int | None = None, after_store_ratio: float = 0.5, script: Iterable[str] = ()) -> None:
        unknown = set(faults) - set(known)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}; choose from {tuple(known)}")
        self.known = tuple(known)
        self.faults = tuple(faults)
        self.fail_rate = fail_rate
        self.after_store_ratio = after_store_ratio
        self._seed = seed
        self._rng = random.Random(seed)
        self.script: list[str] = list(script)

    def inject(self, kind: str, *, after_store: bool = False, count: int = 1) -> None:
        """Force ``kind`` on the next ``count`` requests, before or after storing."""
        if kind not in self.known:
            raise ValueError(f"unknown fault {kind!r}")
        self.script.extend([f"{kind}:after" if after_store else kind] * count)

    def draw(self) -> Fault | None:
        if self.script:
            kind, _, when = self.script.pop(0).partition(":")
            return Fault(kind, when == "after") if kind in self.known else None  # "ok": a normal answer
        if not self.faults or self.fail_rate <= 0 or self._rng.random() >= self.fail_rate:
            return None
        return Fault(self._rng.choice(self.faults), self._rng.random() < self.after_store_ratio)

    def reset(self, *, reseed: bool = True) -> None:
        """Forget the script (in place: callers may hold the list); start the draws again."""
        self.script.clear()
        if reseed:
            self._rng = random.Random(self._seed)


def abort(request: web.Request) -> web.Response:
    """Drop the TCP connection without an answer (the returned response is never written)."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


async def hang(stopping: asyncio.Event, seconds: float) -> None:
    """Hold the request unanswered for ``seconds``, or until the simulator stops."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
