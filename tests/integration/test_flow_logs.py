"""Log events of intake and dispatcher: ids come from the bound context, patient data never.

Intake binds ``exchange_id`` for the handling of one message, the dispatcher
``exchange_id`` and ``delivery_id`` for one delivery; the events themselves do not pass
them. The capture runs ``merge_contextvars`` the way the real configuration does, and no
redaction: what is asserted is what the code logs, not what the safety net would mask.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from gateway.delivery.dispatcher import Dispatcher
from gateway.errors import DestinationUnavailable
from gateway.intake.handler import Intake, Router
from gateway.journal.sqlite import SqliteJournal
from gateway.logging import configure_logging
from gateway.ports import Payload, SendResult, SystemClock
from tests import builders
from tests.integration.test_zam_decision import CREATOR, Sender, TogetherDestination
from tests.support import fixture_bytes

# what mdm_t02_initial.hl7 says about its patient: none of it may reach a log event
PATIENT_DATA = ("279035121518989", "PAT-TROIS", "DOMINIQUE", "MARIE-LOUISE", "19790328", "P000123")


@contextmanager
def captured() -> Iterator[list[dict[str, Any]]]:
    """Every event from debug up, with the context variables merged in as in production."""
    configure_logging("debug")
    try:
        with capture_logs(processors=[merge_contextvars]) as logs:
            yield logs
    finally:
        configure_logging("warning")  # what tests/conftest.py sets for the session


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def assert_no_patient_data(logs: list[dict[str, Any]]) -> None:
    text = repr(logs)
    assert not [p for p in PATIENT_DATA if p in text]


class FlakyDmp(TogetherDestination):
    """A DMP that is unavailable once, then takes the document."""

    def __init__(self) -> None:
        super().__init__("dmp", "dmp-xds", None, DestinationUnavailable("try later", code="HTTP_503"))

    async def send(self, payload: Payload) -> SendResult:
        if self.sent:
            self.error = None
        return await super().send(payload)


async def test_intake_events_carry_the_bound_exchange_id_and_no_patient_data(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "journal.db").open()
    intake = Intake(journal, builders.settings(tmp_path), SystemClock(), Router(("dmp",)))
    try:
        with captured() as logs:
            # not qualified (PID-32 PROV) and unknown to the registry: held
            held = await intake.handle_hl7(
                fixture_bytes("mdm_t02_initial.hl7").replace(b"|N|VALI", b"|N|PROV").replace(b"|MDM0001|", b"|M2|"),
                peer="t", listener="mllp")
            stored = await intake.handle_hl7(fixture_bytes("mdm_t02_initial.hl7"), peer="t", listener="mllp")
            refused = await intake.handle_oversize(10**9, peer="t", listener="mllp")
    finally:
        intake.close()
        await journal.close()
    assert (stored.status, held.status) == ("queued", "held") and refused
    by_id = {e["exchange_id"]: e for e in events(logs, "intake.stored")}
    assert set(by_id) == {stored.exchange_id, held.exchange_id}
    assert (by_id[held.exchange_id]["status"], by_id[held.exchange_id]["ack"]) == ("held", "AA")
    (frame,) = events(logs, "mllp.frame_refused")
    assert frame["exchange_id"] not in by_id and frame["code"] == "MESSAGE_TOO_LARGE"
    assert all("exchange_id" in e for e in logs)
    assert_no_patient_data(logs)


async def test_dispatcher_events_carry_exchange_and_delivery_ids_and_no_patient_data(tmp_path: Path) -> None:
    settings = builders.settings(tmp_path, text=CREATOR, dispatcher={"backoff_base": 0.01, "backoff_cap": 0.05})
    journal = SqliteJournal(tmp_path / "journal.db").open()
    clock = SystemClock()
    dmp, sender = FlakyDmp(), Sender()
    intake = Intake(journal, settings, clock, Router(("dmp",)))
    dispatcher = Dispatcher(journal, {"dmp": dmp}, settings, clock, zam_destination=lambda app, facility: sender)
    try:
        with captured() as logs:
            result = await intake.handle_hl7(fixture_bytes("mdm_t02_initial.hl7"), peer="t", listener="mllp")
            dispatcher.start()
            for _ in range(200):
                if sender.sent:
                    break
                await asyncio.sleep(0.05)
            await dispatcher.stop()
    finally:
        intake.close()
        await journal.close()
    assert len(dmp.sent) == 2 and len(sender.sent) == 1
    attempts = events(logs, "dispatcher.attempt")
    assert [(e["destination"], e["outcome"]) for e in attempts] == [
        ("dmp", "failed"), ("dmp", "delivered"), ("zam:DPI-RELAIS|CLINIQUE-RELAIS", "delivered")]
    assert {e["exchange_id"] for e in attempts} == {result.exchange_id}
    document, zam = dmp.sent[0].delivery_id, sender.sent[0].delivery_id
    assert [e["delivery_id"] for e in attempts] == [document, document, zam]
    assert attempts[0]["error_code"] == "HTTP_503"
    assert_no_patient_data(logs)


async def test_a_crashing_pipeline_keeps_the_message_and_answers_for_it(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A bug in the pipeline must not lose the message: stored, AE (HL7) / rejected (CDA), logged."""
    import gateway.intake.handler as handler

    def boom(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(handler, "analyse_hl7v2", boom)
    monkeypatch.setattr(handler, "analyse_cda", boom)
    journal = SqliteJournal(tmp_path / "journal.db").open()
    intake = Intake(journal, builders.settings(tmp_path), SystemClock(), Router(("dmp",)))
    try:
        with captured() as logs:
            hl7 = await intake.handle_hl7(fixture_bytes("adt_a01_vali.hl7"), peer="t", listener="mllp")
            cda = await intake.handle_cda(b"<ClinicalDocument/>", {}, peer="t")
        rows = {r.id: r for r in await journal.list_exchanges(limit=10)}
    finally:
        intake.close()
        await journal.close()
    assert hl7.ack_code == "AE" and b"INTERNAL_ERROR" in hl7.ack
    assert [f.code for f in cda.analysis.errors] == ["INTERNAL_ERROR"]
    assert {hl7.exchange_id, cda.exchange_id} <= set(rows)
    crashes = events(logs, "pipeline.crashed")
    assert [e["exchange_id"] for e in crashes] == [hl7.exchange_id, cda.exchange_id]
