"""When a retryable delivery failure is tried again, or given up (pure).

Exponential backoff with "equal jitter" and a cap, ``Retry-After`` honoured up to that
cap, bounded by a number of attempts and an age. No clock and no randomness of its own:
the age and the jitter source are arguments, so the schedule is tested without waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

__all__ = ["RetryDecision", "RetryLimits", "next_attempt"]


class RetryLimits(Protocol):
    """The bounds of the schedule (``[dispatcher]`` settings carry them)."""

    @property
    def backoff_base(self) -> float: ...
    @property
    def backoff_cap(self) -> float: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def max_age_hours(self) -> float: ...


@dataclass(frozen=True)
class RetryDecision:
    """Give up (``dead``), or try again after ``delay`` seconds."""

    dead: bool
    delay: float = 0.0


def next_attempt(
    attempts: int,
    age: timedelta,
    limits: RetryLimits,
    *,
    retry_after: float | None,
    rand: Callable[[], float],
) -> RetryDecision:
    """When to try again after a retryable failure (``rand`` gives the jitter, in [0, 1))."""
    if attempts >= limits.max_attempts or age >= timedelta(hours=limits.max_age_hours):
        return RetryDecision(dead=True)
    delay = min(limits.backoff_cap, limits.backoff_base * (2 ** max(attempts - 1, 0)))
    delay = delay * (0.5 + rand() / 2)  # "equal jitter": never less than half the backoff
    if retry_after is not None:
        delay = max(delay, min(retry_after, limits.backoff_cap))
    return RetryDecision(dead=False, delay=delay)
