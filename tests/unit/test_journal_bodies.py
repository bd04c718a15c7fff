"""The CDA inside a stored ITI-65 Bundle is left out and put back on read."""

from __future__ import annotations

import base64
import copy
import json
import sqlite3
from pathlib import Path

from gateway.journal.bodies import full_bundle, stored_bundle

CDA = b"<ClinicalDocument>" + b"x" * 3000 + b"</ClinicalDocument>"
BUNDLE = {"resourceType": "Bundle", "entry": [
    {"resource": {"resourceType": "DocumentReference"}},
    {"resource": {"resourceType": "Binary", "contentType": "application/xml", "data": base64.b64encode(CDA).decode()}},
]}


def test_the_stored_bundle_leaves_the_cda_out_and_the_read_puts_it_back() -> None:
    original = copy.deepcopy(BUNDLE)
    stored = stored_bundle(BUNDLE, CDA)
    assert original == BUNDLE  # the built bundle is not touched
    assert base64.b64encode(CDA).decode() not in json.dumps(stored)
    assert full_bundle(json.loads(json.dumps(stored)), CDA) == original


def test_a_binary_of_other_bytes_is_stored_as_it_is() -> None:
    assert stored_bundle(BUNDLE, b"<other/>") is BUNDLE
    assert stored_bundle({"resourceType": "Bundle"}, CDA) == {"resourceType": "Bundle"}


def test_the_sqlite_journal_writes_the_document_bytes_once(tmp_path: Path) -> None:
    import asyncio
    import dataclasses

    from gateway.journal.sqlite import SqliteJournal
    from tests.contract.journal.builders import exchange
    from tests.contract.journal.conftest import FakeClock

    async def run() -> str:
        journal = SqliteJournal(str(tmp_path / "j.db")).open()
        try:
            record = exchange(FakeClock(), documents=1)
            record = dataclasses.replace(record, documents=[dataclasses.replace(record.documents[0], cda=CDA,
                                                                                fhir=BUNDLE)])
            await journal.record_inbound(record)
            doc = await journal.document(record.exchange.id, 1)
            assert doc is not None and doc.fhir == BUNDLE
            return record.exchange.id
        finally:
            await journal.close()

    exchange_id = asyncio.run(run())
    with sqlite3.connect(tmp_path / "j.db") as conn:
        (column,) = conn.execute("SELECT fhir FROM documents WHERE exchange_id = ?", (exchange_id,)).fetchone()
    assert len(column) < 200, column  # the 4 KB of base64 are not in the column
