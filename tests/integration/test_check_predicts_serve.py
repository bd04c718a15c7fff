"""`relais check` predicts `serve`: same outcome, same acknowledgement, MSA-2 = MSH-10 byte for byte.

Every message of fixtures/ and of ../shared/corpus goes through the service's real intake
(pure pipeline + SQLite journal transaction + ACK builder, the code the MLLP listener
calls) and through ``check_bytes``. Each message gets a fresh journal: ``check`` has no
identity registry, so a registry filled by earlier messages would make the two differ
for reasons that are not a disagreement.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.commands.check import check_bytes, input_kind
from gateway.core.hl7v2.salvage import salvage_control_id
from gateway.intake.handler import Intake, Router
from gateway.journal.sqlite import SqliteJournal
from gateway.ports import SystemClock
from tests import builders
from tests.support import CORPUS, FIXTURES

OWN = sorted((FIXTURES / "hl7v2").glob("*.hl7"))
CORPUS_HL7 = sorted(
    p for p in (CORPUS / "hl7v2").rglob("*") if p.is_file() and p.suffix in (".hl7", ".er7")
) if CORPUS.exists() else []

OWN_CDA = sorted((FIXTURES / "cda").glob("*.xml"))
CORPUS_CDA = sorted(
    [*(CORPUS / "cda" / "examples").rglob("*.xml"), *(CORPUS / "hl7v2").rglob("*.xml")]
) if CORPUS.exists() else []

#: serve's exchange status → the outcome check reports for it
SERVE_OUTCOME = {"accepted": "accepted", "queued": "accepted", "held": "held", "rejected": "rejected",
                 "recorded": "recorded"}


async def _serve(tmp_path: Path, raw: bytes) -> tuple[str, bytes]:
    settings = builders.settings(tmp_path)
    journal = SqliteJournal(tmp_path / "journal.db").open()
    try:
        intake = Intake(journal, settings, SystemClock(), Router(("outbox",)))
        result = await intake.handle_hl7(raw, peer="test", listener="mllp")
        return result.status, result.ack
    finally:
        await journal.close()


def _msa(ack: bytes) -> list[bytes]:
    for seg in re.split(rb"\r\n|\r|\n", ack):
        if seg.startswith(b"MSA"):
            return seg.split(b"|")
    return []


async def _agree(tmp_path: Path, path: Path) -> None:
    data = path.read_bytes()
    kind, payload = input_kind(data)
    assert kind in ("hl7v2", "neither"), path.name  # "neither": serve's MLLP listener still answers AR
    predicted = check_bytes(data, allow_test_ins=True)
    status, ack = await _serve(tmp_path, payload)
    assert SERVE_OUTCOME[status] == predicted["outcome"], (path.name, status, predicted["errors"])
    mode = predicted.get("acknowledgement")
    expected_msa1 = mode["accept"] if mode else predicted["ack_code"]
    msa = _msa(ack)
    if expected_msa1 is None:
        assert ack == b"", f"{path.name}: serve answered although nothing is due"
        return
    assert msa[1].decode() == expected_msa1, path.name
    control_id = salvage_control_id(payload)
    if control_id is not None:
        # HL7 v2.5 ch. 2 §2.9.2: MSA-2 is the MSH-10 of the message, as received
        assert msa[2] == control_id, (path.name, msa[2], control_id)


@pytest.mark.parametrize("path", OWN, ids=lambda p: p.name)
async def test_check_agrees_with_serve_on_our_fixtures(tmp_path: Path, path: Path) -> None:
    await _agree(tmp_path, path)


@pytest.mark.skipif(not CORPUS.exists(), reason="../shared/corpus is not beside the repository")
@pytest.mark.parametrize("path", CORPUS_HL7, ids=lambda p: str(p.relative_to(CORPUS)) if CORPUS.exists() else "")
async def test_check_agrees_with_serve_on_the_corpus(tmp_path: Path, path: Path) -> None:
    await _agree(tmp_path, path)


async def test_msa2_echoes_a_non_ascii_control_id_of_an_invalid_charset_message(tmp_path: Path) -> None:
    raw = (FIXTURES / "hl7v2" / "adt_charset_invalid.hl7").read_bytes()
    status, ack = await _serve(tmp_path, raw)
    assert status == "rejected"
    msa = _msa(ack)
    assert msa[1] == b"AE" and msa[2] == "ADTÉ0042".encode("latin-1")
    msh = ack.split(b"\r")[0].split(b"|")
    assert msh[17] == b"8859/1"  # the ACK says the charset it is written in


async def test_msa2_echoes_msh10_when_msh2_is_malformed(tmp_path: Path) -> None:
    raw = (FIXTURES / "hl7v2" / "msh2_malformed.hl7").read_bytes()
    status, ack = await _serve(tmp_path, raw)
    msa = _msa(ack)
    assert (status, msa[1], msa[2]) == ("rejected", b"AR", b"ADT0015")
    assert b"MSH_ENCODING" in ack


async def _agree_cda(tmp_path: Path, path: Path) -> None:
    """A CDA posted to serve's HTTP ingest (DESTDMP by default) against check on the same file."""
    data = path.read_bytes()
    predicted = check_bytes(data, allow_test_ins=True)
    journal = SqliteJournal(tmp_path / "journal.db").open()
    try:
        intake = Intake(journal, builders.settings(tmp_path), SystemClock(), Router(("outbox",)))
        result = await intake.handle_cda(data, {"DESTDMP": True}, peer="test")
    finally:
        await journal.close()
    assert SERVE_OUTCOME[result.status] == predicted["outcome"], (path.name, result.status, predicted["errors"])


@pytest.mark.parametrize("path", OWN_CDA, ids=lambda p: p.name)
async def test_check_agrees_with_serve_on_our_cda_fixtures(tmp_path: Path, path: Path) -> None:
    await _agree_cda(tmp_path, path)


@pytest.mark.skipif(not CORPUS.exists(), reason="../shared/corpus is not beside the repository")
@pytest.mark.parametrize("path", CORPUS_CDA, ids=lambda p: p.name)
async def test_check_agrees_with_serve_on_the_corpus_cda(tmp_path: Path, path: Path) -> None:
    await _agree_cda(tmp_path, path)
