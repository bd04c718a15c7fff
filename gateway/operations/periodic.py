"""A duty the service runs in the background every few seconds or minutes (retention, the notifier)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

__all__ = ["PeriodicTask"]

log = structlog.get_logger(__name__)


class PeriodicTask:
    """Runs :meth:`run_once` every ``interval`` seconds until stopped.

    A run that fails is logged as ``failure_event`` and tried again at the next interval:
    a background duty is never fatal to the service.
    """

    failure_event = "periodic.failed"

    def __init__(self, name: str, interval: float) -> None:
        self._name = name
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> Any:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error(self.failure_event, error=type(exc).__name__)
            await asyncio.sleep(self._interval)
