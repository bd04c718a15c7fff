"""Where the analysis of a large input runs: worker threads, or worker processes.

Small inputs are analysed inline (a hop would cost more than their analysis). Large ones go
to a pool, so the event loop keeps answering other senders meanwhile:

* ``thread`` — a thread pool. The loop still shares the GIL with the analysis: a Ségur
  document holds it for milliseconds at a time (base64, lxml, JSON), and the second core
  stays idle.
* ``process`` — a pool of worker processes started with ``spawn`` (a fork would copy the
  journal writer's thread and locks in whatever state they were in). The analysis is pure
  (bytes and options in, an :class:`~gateway.core.pipeline.Analysis` out), so it pickles;
  the loop only unpickles the result (under a millisecond for a 330 KB Ségur message).
  The ids a worker mints come from its own random generator, never from the parent's
  clock, so two processes cannot mint the same id from copies of one counter.

A worker that dies (killed, out of memory) breaks its pool. The message is tried once more
on a fresh pool; if that worker dies too, the message is the cause and fails like a crashed
analysis (kept, answered AE ``INTERNAL_ERROR``).
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import Any, Literal

import structlog
from structlog.contextvars import bound_contextvars

from gateway.core.pipeline import Analysis, Ids
from gateway.logging import configure_logging
from gateway.ports import SystemClock

__all__ = ["AnalysisWorkers", "Isolation"]

Isolation = Literal["thread", "process"]
log = structlog.get_logger(__name__)


def _init_process(log_level: str) -> None:
    # Ctrl-C reaches the whole process group: the parent stops the pool, the workers must not
    # die first with a traceback each
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(log_level)  # the same JSON lines on the same (inherited) stderr


def _ready() -> bool:
    return True


def _analyse_in_process(fn: Callable[..., Analysis], args: tuple[Any, ...], now: datetime,
                        exchange_id: str) -> Analysis:
    with bound_contextvars(exchange_id=exchange_id):
        return fn(*args, Ids(now=now, new_uuid=SystemClock().new_id))


class AnalysisWorkers:
    """A pool of ``workers`` threads or processes that run pipeline analyses."""

    def __init__(self, isolation: Isolation, workers: int, *, log_level: str = "info") -> None:
        self.isolation = isolation
        self.workers = max(1, workers)
        self._log_level = log_level
        self._lock = threading.Lock()
        self._pool: Executor | None = None

    def start(self) -> None:
        """Start the workers now rather than on the first large message (a spawned process
        takes about a second to import the pipeline). Returns at once."""
        pool = self._current()
        if isinstance(pool, ProcessPoolExecutor):
            for _ in range(self.workers):
                pool.submit(_ready)

    def close(self) -> None:
        """Let running analyses finish and stop the workers."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    async def run(self, fn: Callable[..., Analysis], args: tuple[Any, ...], ids: Ids, exchange_id: str) -> Analysis:
        """``fn(*args, ids)`` in a worker (in a process: with ids of the worker's own)."""
        loop = asyncio.get_running_loop()
        pool = self._current()
        if not isinstance(pool, ProcessPoolExecutor):
            return await loop.run_in_executor(pool, functools.partial(fn, *args, ids))
        for attempt in (1, 2):
            try:
                return await loop.run_in_executor(pool, _analyse_in_process, fn, args, ids.now, exchange_id)
            except BrokenProcessPool:
                # A worker died: perhaps of an earlier message, perhaps of this one. One more try on
                # a fresh pool tells them apart; a message that kills its worker twice is the cause.
                self._discard(pool)
                log.error("pipeline.worker_died", attempt=attempt)
                if attempt == 2:
                    raise
                pool = self._current()
        raise AssertionError("unreachable")

    def _current(self) -> Executor:
        with self._lock:
            if self._pool is None:
                if self.isolation == "process":
                    self._pool = ProcessPoolExecutor(
                        self.workers, mp_context=multiprocessing.get_context("spawn"),
                        initializer=_init_process, initargs=(self._log_level,),
                    )
                else:
                    self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="relais-pipeline")
            return self._pool

    def _discard(self, pool: Executor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)
