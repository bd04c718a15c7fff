"""ZAM^Z01: exactly one per message and DMP outcome, decided in the outcome's transaction.

Real journal, real intake, real dispatcher. The destinations are recording fakes that
implement the Destination protocol (their protocol is not under test); two of them
release their answers at the same instant through a barrier, so the two outcomes are
recorded concurrently.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gateway.delivery.dispatcher import Dispatcher
from gateway.errors import DestinationRejected
from gateway.intake.handler import Intake, Router
from gateway.journal.sqlite import SqliteJournal
from gateway.ports import Payload, SendResult, SystemClock
from tests import builders
from tests.support import fixture_bytes

CREATOR = """
[[creator]]
application = "DPI-RELAIS"
facility = "CLINIQUE-RELAIS"
address = "127.0.0.1:9"
"""


class TogetherDestination:
    """Answers only when every destination sharing ``barrier`` has been called."""

    def __init__(self, name: str, kind: str, barrier: asyncio.Barrier | None, error: Exception | None = None) -> None:
        self.name, self.kind, self.barrier, self.error = name, kind, barrier, error
        self.sent: list[Payload] = []

    async def send(self, payload: Payload) -> SendResult:
        self.sent.append(payload)
        if self.barrier is not None:
            await self.barrier.wait()
        if self.error is not None:
            raise self.error
        return SendResult(remote_id=payload.delivery_id)

    async def already_delivered(self, payload: Payload) -> bool:
        return False

    async def close(self) -> None:
        return None


class Sender:
    """Stands for the sender's MLLP return address: records the ZAMs handed to it."""

    name, kind = "zam:DPI-RELAIS|CLINIQUE-RELAIS", "mllp"

    def __init__(self) -> None:
        self.sent: list[Payload] = []

    async def send(self, payload: Payload) -> SendResult:
        self.sent.append(payload)
        return SendResult()

    async def already_delivered(self, payload: Payload) -> bool:
        return False

    async def close(self) -> None:
        return None


async def _run(tmp_path: Path, destinations: dict[str, Any]) -> tuple[list[dict[str, Any]], Sender]:
    settings = builders.settings(tmp_path, text=CREATOR, dispatcher={"workers": 4, "max_attempts": 1})
    journal = SqliteJournal(tmp_path / "journal.db").open()
    clock = SystemClock()
    sender = Sender()
    try:
        intake = Intake(journal, settings, clock, Router(tuple(destinations)))
        result = await intake.handle_hl7(fixture_bytes("mdm_t02_initial.hl7"), peer="t", listener="mllp")
        assert result.status == "queued"
        exchange_id = result.exchange_id

        def race(tx: Any) -> None:
            # Per-patient order would run the two deliveries one after the other; give each
            # its own key so they really are in flight together.
            for d in tx.deliveries_for(exchange_id):
                tx.update_delivery(d["id"], d["created_at"], patient_key=f"race:{d['destination']}")

        await journal.write(race)
        dispatcher = Dispatcher(journal, destinations, settings, clock, zam_destination=lambda a, f: sender)
        dispatcher.start()
        try:
            for _ in range(200):
                rows = await journal.read(lambda tx: tx.deliveries_for(exchange_id))
                docs = [r for r in rows if r["kind"] == "document"]
                if all(r["status"] in ("delivered", "dead") for r in docs) and (
                    not [r for r in rows if r["kind"] == "zam"] or sender.sent
                ):
                    await asyncio.sleep(0.1)  # a second ZAM, if any were queued, would show now
                    break
                await asyncio.sleep(0.05)
            rows = await journal.read(lambda tx: tx.deliveries_for(exchange_id))
        finally:
            await dispatcher.stop()
    finally:
        await journal.close()
    return [r for r in rows if r["kind"] == "zam"], sender


def _obx5(zam: Payload) -> str:
    obx = next(s for s in (zam.hl7 or b"").decode().split("\r") if s.startswith("OBX"))
    return obx.split("|")[5].split("^")[0]


async def test_two_dmp_destinations_finishing_together_give_one_positive_zam(tmp_path: Path) -> None:
    barrier = asyncio.Barrier(2)
    dests = {n: TogetherDestination(n, "dmp-xds", barrier) for n in ("dmp-a", "dmp-b")}
    zams, sender = await _run(tmp_path, dests)
    assert all(len(d.sent) == 1 for d in dests.values())
    assert len(zams) == 1 and len(sender.sent) == 1
    assert _obx5(sender.sent[0]) == "Y"


async def test_two_dmp_refusals_together_give_one_negative_zam(tmp_path: Path) -> None:
    barrier = asyncio.Barrier(2)
    error = DestinationRejected("registry refused", code="XDSRegistryError")
    dests = {n: TogetherDestination(n, "dmp-xds", barrier, error) for n in ("dmp-a", "dmp-b")}
    zams, sender = await _run(tmp_path, dests)
    assert len(zams) == 1
    (zam,) = sender.sent
    assert _obx5(zam) == "N"
    err = next(s for s in (zam.hl7 or b"").decode().split("\r") if s.startswith("ERR"))
    assert "XDSRegistryError" in err and "DMP_ERROR_CODE" in err  # a code the DMP gave


async def test_an_mhd_failure_is_not_a_dmp_receipt(tmp_path: Path) -> None:
    dests = {
        "dmp": TogetherDestination("dmp", "dmp-xds", None),
        "mhd": TogetherDestination("mhd", "mhd", None, DestinationRejected("no", code="MHD_NO_BUNDLE")),
    }
    zams, sender = await _run(tmp_path, dests)
    assert len(zams) == 1 and _obx5(sender.sent[0]) == "Y"  # the DMP took it: that is what Z01 says


async def test_our_own_refusal_is_not_sent_as_a_dmp_error_code(tmp_path: Path) -> None:
    message = ("DMP deletion uses TD3.3c (a DMP-specific web service, not ITI-41); Relais does not implement it "
               "yet: delete the document in the DMP web interface or in the DMP module of the hospital information "
               "system, then send the replacement again if one is needed")
    error = DestinationRejected(message, code="DMP_DELETE_UNSUPPORTED")
    zams, sender = await _run(tmp_path, {"dmp": TogetherDestination("dmp", "dmp-xds", None, error)})
    assert len(zams) == 1
    err = next(s for s in (sender.sent[0].hl7 or b"").decode().split("\r") if s.startswith("ERR"))
    fields = err.split("|")
    code, label, system = fields[5].split("^")[:3]
    assert "DMP_ERROR_CODE" not in err and (code, system) == ("DMP_DELETE_UNSUPPORTED", "L")
    # cut at a word boundary, never inside a word, and said to be cut
    full = f"DMP_DELETE_UNSUPPORTED: {message}"
    assert label.endswith("…") and len(label) <= 200
    kept = label[:-1]
    assert full.startswith(kept) and full[len(kept)] in " ,;:"
