"""Shared behaviour of outbound destinations: timeout, quick retries, error mapping, logging.

``BaseDestination.send()`` is the only entry point the dispatcher uses. It runs
``_send()`` under a per-attempt timeout and retries *quickly* (seconds, not minutes) on
transient failures; the dispatcher's own backoff handles anything longer. Subclasses only
write ``_send()`` (one attempt, raise ``DestinationUnavailable`` / ``DestinationRejected``)
and ``_lookup()`` (is this payload already at the destination?).

Error mapping at this boundary:

    asyncio timeout                         → DestinationUnavailable(code="TIMEOUT")
    refused / reset / disconnected (OSError,
      aiohttp.ClientConnectionError)        → DestinationUnavailable(code="CONNECTION")
    DestinationUnavailable from _send       → retried quickly, then re-raised
    DestinationRejected from _send          → re-raised at once
    other GatewayError (MappingError …)     → DestinationRejected with the same code

A retry after an *ambiguous* failure (the request may have reached the destination: a
timeout, a reset, a 5xx) first asks ``_lookup()`` when ``lookup_before_retry`` is set, so a
non-idempotent protocol such as ITI-41 never submits the same document twice.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
)

from gateway.errors import DestinationRejected, DestinationUnavailable, GatewayError
from gateway.ports import Payload, SendResult
from gateway.settings import Settings

__all__ = ["RetrySettings", "BaseDestination", "Sleep"]

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]

# Codes for which the request certainly never reached the peer's application: a retry
# cannot create a duplicate, so no lookup is needed before it.
_UNAMBIGUOUS_CODES = frozenset({"CONNECTION_REFUSED"})


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """Quick in-``send`` retries; long backoff belongs to the dispatcher.

    ``quick_attempts`` counts the first try; ``quick_max_seconds`` bounds the total time
    spent in one ``send()`` (a retry is not started past it); ``timeout`` is per attempt.
    """

    quick_attempts: int = 3
    quick_max_seconds: float = 10
    timeout: float = 30
    backoff_initial: float = 0.5
    backoff_max: float = 4.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetrySettings:
        """The ``[dispatcher]`` section's quick retries and per-attempt timeout."""
        return cls(quick_attempts=settings.dispatcher.quick_retries, timeout=settings.dispatcher.attempt_timeout)


class BaseDestination(ABC):
    """Implements the ``gateway.ports.Destination`` protocol around ``_send`` / ``_lookup``."""

    kind: str = "base"
    #: ask ``_lookup`` before re-sending after an ambiguous failure (non-idempotent protocols)
    lookup_before_retry: bool = False

    def __init__(
        self,
        name: str,
        *,
        retry: RetrySettings | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.name = name
        self.retry = retry or RetrySettings()
        self._sleep: Sleep = sleep or asyncio.sleep

    # -- protocol -------------------------------------------------------------------------

    async def send(self, payload: Payload) -> SendResult:
        """Deliver once, with quick transient retries; raise Unavailable / Rejected on failure."""
        settings = self.retry
        last_error: DestinationUnavailable | None = None
        retrying = AsyncRetrying(
            stop=stop_after_attempt(max(1, settings.quick_attempts))
            | stop_after_delay(settings.quick_max_seconds),
            wait=self._wait,
            retry=retry_if_exception_type(DestinationUnavailable),
            sleep=self._sleep,
            reraise=True,
            before_sleep=self._log_retry(payload),
        )
        async for attempt in retrying:
            with attempt:
                number = attempt.retry_state.attempt_number
                if number > 1 and self._needs_lookup(last_error) and await self._safe_lookup(payload):
                    log.info(
                        "destination.already_there",
                        destination=self.name,
                        exchange_id=payload.exchange_id,
                        delivery_id=payload.delivery_id,
                        attempt=number,
                    )
                    return SendResult(detail={"already_delivered": True, "attempts": number})
                try:
                    result = await self._attempt(payload)
                except DestinationUnavailable as exc:
                    last_error = exc
                    raise
                result.detail.setdefault("attempts", number)
                log.info(
                    "destination.sent",
                    destination=self.name,
                    kind=self.kind,
                    exchange_id=payload.exchange_id,
                    delivery_id=payload.delivery_id,
                    attempt=number,
                    remote_id=result.remote_id,
                    status=result.status,
                )
                return result
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    async def already_delivered(self, payload: Payload) -> bool:
        """Ask the destination whether the payload is already there (``_lookup``), with the timeout."""
        try:
            async with asyncio.timeout(self.retry.timeout):
                return await self._lookup(payload)
        except TimeoutError as exc:
            raise DestinationUnavailable("lookup timed out", code="TIMEOUT") from exc
        except (OSError, aiohttp.ClientConnectionError) as exc:
            raise DestinationUnavailable(f"lookup failed: {type(exc).__name__}", code="CONNECTION") from exc

    async def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections; the default has nothing to release."""

    # -- subclass hooks -------------------------------------------------------------------

    @abstractmethod
    async def _send(self, payload: Payload) -> SendResult:
        """One attempt. Raise DestinationUnavailable (retryable) or DestinationRejected (permanent)."""

    async def _lookup(self, payload: Payload) -> bool:
        """Whether ``payload`` is already at the destination; the default cannot tell."""
        return False

    # -- internals ------------------------------------------------------------------------

    async def _attempt(self, payload: Payload) -> SendResult:
        started = time.monotonic()
        log.debug(
            "destination.attempt",
            destination=self.name,
            exchange_id=payload.exchange_id,
            delivery_id=payload.delivery_id,
        )
        try:
            async with asyncio.timeout(self.retry.timeout):
                return await self._send(payload)
        except (DestinationUnavailable, DestinationRejected):
            raise
        except GatewayError as exc:
            # MappingError & co: the payload cannot be expressed for this destination.
            raise DestinationRejected(exc.message, code=exc.code, location=exc.location) from exc
        except TimeoutError as exc:
            raise DestinationUnavailable(f"no answer within {self.retry.timeout:g}s", code="TIMEOUT") from exc
        except aiohttp.ClientConnectorError as exc:
            # The TCP/TLS connection was never established: nothing was sent.
            code = "CONNECTION_REFUSED" if isinstance(exc.os_error, ConnectionRefusedError) else "CONNECTION"
            raise DestinationUnavailable(f"cannot connect: {type(exc).__name__}", code=code) from exc
        except ConnectionRefusedError as exc:
            raise DestinationUnavailable("connection refused", code="CONNECTION_REFUSED") from exc
        except (OSError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise DestinationUnavailable(
                f"connection lost after {time.monotonic() - started:.1f}s: {type(exc).__name__}",
                code="CONNECTION",
            ) from exc

    def _needs_lookup(self, error: DestinationUnavailable | None) -> bool:
        return self.lookup_before_retry and (error is None or error.code not in _UNAMBIGUOUS_CODES)

    async def _safe_lookup(self, payload: Payload) -> bool:
        """Lookup before a retry; if the lookup itself fails we cannot tell, so do not resend."""
        try:
            return await self.already_delivered(payload)
        except DestinationRejected as exc:
            raise DestinationUnavailable(
                f"cannot check for a previous delivery: {exc.code}", code="LOOKUP_FAILED"
            ) from exc

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff, but honour a server's Retry-After when it fits the budget."""
        settings = self.retry
        delay = min(settings.backoff_max, settings.backoff_initial * 2 ** (state.attempt_number - 1))
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, DestinationUnavailable) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, settings.quick_max_seconds))
        return delay

    def _log_retry(self, payload: Payload) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            log.warning(
                "destination.retry",
                destination=self.name,
                exchange_id=payload.exchange_id,
                delivery_id=payload.delivery_id,
                attempt=state.attempt_number,
                code=getattr(exc, "code", None),
                wait=state.upcoming_sleep,
            )

        return before_sleep
