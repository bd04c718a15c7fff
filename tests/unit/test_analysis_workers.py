"""Analyses in worker processes: same verdict as inline, ids of their own, a dead worker replaced."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import uuid
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.core.pipeline import Analysis, Ids, PipelineOptions, analyse_hl7v2
from gateway.intake.workers import AnalysisWorkers

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _never() -> str:
    raise AssertionError("a worker process must not mint ids from the parent's clock")


def die(_ids: Ids) -> Analysis:  # runs in the worker: imported there by name
    os._exit(3)


def _counter() -> object:
    n = iter(range(1, 1_000_000))
    return lambda: f"00000000-0000-4000-8000-{next(n):012d}"


def _mdm() -> bytes:
    return (FIXTURES / "mdm_t02_initial.hl7").read_bytes().replace(b"\n", b"\r")


def test_a_process_analysis_matches_the_inline_one_with_ids_of_its_own() -> None:
    raw = _mdm()
    inline = analyse_hl7v2(raw, PipelineOptions(), Ids(NOW, _counter()))  # type: ignore[arg-type]
    workers = AnalysisWorkers("process", 1)
    try:
        remote = asyncio.run(workers.run(analyse_hl7v2, (raw, PipelineOptions()), Ids(NOW, _never), "ex-1"))
    finally:
        workers.close()
    assert (remote.ack_code, remote.outcome, remote.summary) == (inline.ack_code, inline.outcome, inline.summary)
    assert [d.unique_id for d in remote.documents] == [d.unique_id for d in inline.documents]
    assert [d.cda for d in remote.documents] == [d.cda for d in inline.documents]
    bundle = remote.documents[0].fhir
    assert bundle is not None
    ids = [e["fullUrl"].removeprefix("urn:uuid:") for e in bundle["entry"]]
    assert all(uuid.UUID(i).version == 4 for i in ids) and len(set(ids)) == len(ids)


def test_a_thread_analysis_takes_the_ids_it_is_given() -> None:
    workers = AnalysisWorkers("thread", 1)
    try:
        an = asyncio.run(workers.run(analyse_hl7v2, (_mdm(), PipelineOptions()), Ids(NOW, _counter()), "ex-1"))  # type: ignore[arg-type]
    finally:
        workers.close()
    bundle = an.documents[0].fhir
    assert bundle is not None
    assert bundle["entry"][0]["fullUrl"].startswith("urn:uuid:00000000-0000-4000-8000-")


def test_a_killed_worker_is_replaced_and_the_message_tried_again() -> None:
    workers = AnalysisWorkers("process", 1)
    raw = _mdm()

    async def scenario() -> Analysis:
        first = await workers.run(analyse_hl7v2, (raw, PipelineOptions()), Ids(NOW, _never), "ex-1")
        assert first.ack_code == "AA"
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        await asyncio.sleep(0.5)  # the pool notices its dead worker
        return await workers.run(analyse_hl7v2, (raw, PipelineOptions()), Ids(NOW, _never), "ex-2")

    try:
        assert asyncio.run(scenario()).ack_code == "AA"
    finally:
        workers.close()


def test_a_message_that_kills_its_worker_twice_fails_and_the_next_one_runs() -> None:
    workers = AnalysisWorkers("process", 1)

    async def scenario() -> Analysis:
        with pytest.raises(BrokenProcessPool):
            await workers.run(die, (), Ids(NOW, _never), "ex-1")
        return await workers.run(analyse_hl7v2, (_mdm(), PipelineOptions()), Ids(NOW, _never), "ex-2")

    try:
        assert asyncio.run(scenario()).ack_code == "AA"
    finally:
        workers.close()
