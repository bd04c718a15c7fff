"""PAM-FR events through the real intake: what each one does to the journal's registry."""

from __future__ import annotations

from pathlib import Path

from gateway.intake.handler import Intake, Router
from gateway.journal.sqlite import SqliteJournal
from gateway.ports import SystemClock
from tests import builders
from tests.support import field, fixture_bytes

IPP_KEY = "1.2.250.1.999.1.2|P000123"


async def _intake(tmp_path: Path) -> tuple[Intake, SqliteJournal]:
    journal = SqliteJournal(tmp_path / "journal.db").open()
    return Intake(journal, builders.settings(tmp_path), SystemClock(), Router(("outbox",))), journal


async def test_a02_z99_a24_are_acknowledged_aa_and_applied(tmp_path: Path) -> None:
    intake, journal = await _intake(tmp_path)
    try:
        for name in ("adt_a02_transfer.hl7", "adt_z99_update.hl7", "adt_a24_link.hl7"):
            result = await intake.handle_hl7(fixture_bytes(name), peer="t", listener="mllp")
            assert (result.status, field(result.ack, "MSA", 1)) == ("accepted", "AA"), name
        links = await journal.read(lambda tx: tx.linked_identities(IPP_KEY))
        assert links == ["1.2.250.1.999.1.2|P000999"]
        encounter = await journal.read(lambda tx: tx.get_encounter("V000789"))
        assert encounter["patient_class"] == "I" and encounter["trigger"] == "Z99"
        # A37 is the cancellation of A24: the link goes
        unlink = fixture_bytes("adt_a24_link.hl7").replace(b"ADT^A24^ADT_A24|ADT0012", b"ADT^A37^ADT_A37|ADT0016")
        result = await intake.handle_hl7(unlink, peer="t", listener="mllp")
        assert field(result.ack, "MSA", 1) == "AA"
        assert await journal.read(lambda tx: tx.linked_identities(IPP_KEY)) == []
        # A11 cancels the admission: the encounter no longer counts as current
        await intake.handle_hl7(fixture_bytes("adt_a11_cancel_admit.hl7"), peer="t", listener="mllp")
        assert await journal.read(lambda tx: tx.current_encounter(IPP_KEY)) is None
    finally:
        await journal.close()


async def test_a_document_without_pv1_takes_the_content_type_of_the_current_encounter(tmp_path: Path) -> None:
    intake, journal = await _intake(tmp_path)
    outpatient = fixture_bytes("adt_a02_transfer.hl7").replace(b"PV1|1|I|", b"PV1|1|O|")
    oru = b"\r".join(s for s in fixture_bytes("oru_doc_r01_initial.hl7").split(b"\r") if not s.startswith(b"PV1"))
    try:
        before = await intake.handle_hl7(oru, peer="t", listener="mllp")
        assert before.analysis.documents[0].xds["submissionSet"]["contentTypeCode"]["code"] == "97"  # unknown
        await intake.handle_hl7(outpatient, peer="t", listener="mllp")
        again = oru.replace(b"|ORU0001|", b"|ORU0002|")
        result = await intake.handle_hl7(again, peer="t", listener="mllp")
        stored = await journal.read(lambda tx: tx.get_document(result.exchange_id, 1))
        assert stored["xds"]["submissionSet"]["contentTypeCode"]["code"] == "07"  # O → 07 (volet mapping page)
    finally:
        await journal.close()
