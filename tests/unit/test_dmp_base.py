"""BaseDestination: quick retries, timeout, error mapping, lookup before retry (no sockets)."""

from __future__ import annotations

import asyncio

import pytest

from adapters.base import BaseDestination, RetrySettings
from gateway.errors import DestinationRejected, DestinationUnavailable, MappingError
from gateway.ports import Destination, Payload, SendResult

PAYLOAD = Payload(exchange_id="e1", delivery_id="d1")


class Scripted(BaseDestination):
    kind = "test"

    def __init__(self, outcomes, *, lookup=False, lookup_result=False, **kwargs) -> None:
        super().__init__("t", **kwargs)
        self.outcomes = list(outcomes)
        self.lookup_before_retry = lookup
        self.lookup_result = lookup_result
        self.sent = 0
        self.lookups = 0

    async def _send(self, payload: Payload) -> SendResult:
        self.sent += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "hang":
            await asyncio.sleep(10)
        return SendResult(remote_id="r1")

    async def _lookup(self, payload: Payload) -> bool:
        self.lookups += 1
        return self.lookup_result


def make(outcomes, **kwargs):
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    kwargs.setdefault("retry", RetrySettings(quick_attempts=3, timeout=0.05))
    return Scripted(outcomes, sleep=sleep, **kwargs), sleeps


async def test_is_a_destination() -> None:
    dest, _ = make(["ok"])
    assert isinstance(dest, Destination)


async def test_transient_errors_are_retried() -> None:
    dest, sleeps = make([ConnectionResetError(), DestinationUnavailable("503", code="HTTP_503"), "ok"])
    result = await dest.send(PAYLOAD)
    assert result.remote_id == "r1" and result.detail["attempts"] == 3
    assert sleeps == [0.5, 1.0]


async def test_retry_after_is_honoured_within_budget() -> None:
    dest, sleeps = make([DestinationUnavailable("busy", retry_after=3), "ok"])
    await dest.send(PAYLOAD)
    assert sleeps == [3]


async def test_gives_up_after_quick_attempts() -> None:
    dest, sleeps = make([DestinationUnavailable("a")] * 3)
    with pytest.raises(DestinationUnavailable):
        await dest.send(PAYLOAD)
    assert dest.sent == 3 and len(sleeps) == 2


async def test_rejected_is_not_retried() -> None:
    dest, sleeps = make([DestinationRejected("no", code="X")])
    with pytest.raises(DestinationRejected):
        await dest.send(PAYLOAD)
    assert dest.sent == 1 and sleeps == []


async def test_mapping_error_becomes_rejected() -> None:
    dest, _ = make([MappingError("bad", code="XDS_METADATA_MISSING")])
    with pytest.raises(DestinationRejected) as info:
        await dest.send(PAYLOAD)
    assert info.value.code == "XDS_METADATA_MISSING"


async def test_timeout_is_unavailable() -> None:
    dest, _ = make(["hang"], retry=RetrySettings(quick_attempts=1, timeout=0.01))
    with pytest.raises(DestinationUnavailable) as info:
        await dest.send(PAYLOAD)
    assert info.value.code == "TIMEOUT"


async def test_lookup_before_retry_avoids_double_submission() -> None:
    dest, _ = make([ConnectionResetError(), "ok"], lookup=True, lookup_result=True)
    result = await dest.send(PAYLOAD)
    assert result.detail["already_delivered"] is True
    assert dest.sent == 1 and dest.lookups == 1


async def test_no_lookup_after_refused_connection() -> None:
    dest, _ = make([ConnectionRefusedError(), "ok"], lookup=True)
    await dest.send(PAYLOAD)
    assert dest.lookups == 0 and dest.sent == 2


async def test_already_delivered_uses_lookup() -> None:
    dest, _ = make([], lookup_result=True)
    assert await dest.already_delivered(PAYLOAD) is True
